"""A read cut off part-way, a lost write response, and checkpoints that are missing, torn,
corrupt, newer or from another sync: real engine + HubSpot hook + emulator + File store.

What the engine does (asserted here, documented in docs/reliability.md):

* read cut off (iterator error, or a real connection drop in SQLite, DuckDB, PostgreSQL):
  the error propagates, nothing is sent, the checkpoint files are byte-identical, nothing is
  mirror-deleted;
* "write applied, response lost": creates are reconciled by lookup, upserts resent (idempotent);
* missing checkpoint: a full re-plan, matched by key (no duplicates);
* torn journal line (kill mid-commit): ignored, and cut off before the next append;
* corrupt base or journal, newer format: ``CheckpointError`` naming full_resync, nothing sent;
  with ``full_resync=True``: the checkpoint is discarded and every row re-sent by key;
* another sync's checkpoint (destination/object/key/match field changed): destination ids
  discarded, every row re-planned (report.checkpoint_reset says so); mapping changed: every
  row re-sent by the ids it has.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import FORMAT_VERSION, FileCheckpointStore, JournalEntry
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import CheckpointError
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

from .crash_support import checkpoint_of

ROWS = [{"email": f"r{i}@example.com", "firstname": f"F{i}"} for i in range(100)]


@pytest.fixture(scope="module")
def hubspot():
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@pytest.fixture
def hook(hubspot, monkeypatch):
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    hubspot.emulator.reset()
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN,
           "extra": {"rate_limit": 0, "batch_size": 20, "max_retries": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_REL_HUBSPOT", json.dumps(doc))
    with HubSpotHook("rel_hubspot", sleep=lambda s: None) as h:
        yield h


def chunks(rows, size=20):
    frame = pd.DataFrame(rows)
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


def config(**kw):
    return SyncConfig(**{"sync_id": "rel", "object": "contacts", "primary_key": "email", "mode": "mirror",
                         "commit_interval": 0, **kw})


def files(store: FileCheckpointStore) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (store.path, store.journal_path) if p.exists()}


def emails(hubspot) -> list[str]:
    return sorted(r["properties"]["email"] for r in hubspot.emulator.records("contacts"))


# ---------------------------------------------------------------- reads cut off part-way


def _sqlite_drop(tmp_path: Path, rows, after: int):
    db = tmp_path / "w.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table c (email text, firstname text)")
        conn.executemany("insert into c values (?, ?)", [(r["email"], r["firstname"]) for r in rows])
    conn = sqlite3.connect(db)
    cur = conn.execute("select email, firstname from c order by email")
    for n in range(10**6):
        if n == after:
            conn.close()  # the connection goes away mid-read: the next fetch fails
        batch = cur.fetchmany(20)
        if not batch:
            return
        yield pd.DataFrame(batch, columns=["email", "firstname"])


def _duckdb_drop(tmp_path: Path, rows, after: int):
    import duckdb

    db = str(tmp_path / "w.duckdb")
    with duckdb.connect(db) as conn:
        conn.execute("create table c (email varchar, firstname varchar)")
        conn.executemany("insert into c values (?, ?)", [(r["email"], r["firstname"]) for r in rows])
    conn = duckdb.connect(db)
    conn.execute("select email, firstname from c order by email")
    for n in range(10**6):
        if n == after:
            conn.close()
        batch = conn.fetchmany(20)
        if not batch:
            return
        yield pd.DataFrame(batch, columns=["email", "firstname"])


def _iterator_error(tmp_path: Path, rows, after: int):
    for n, chunk in enumerate(chunks(rows)):
        if n == after:
            raise ConnectionError("server closed the connection unexpectedly")
        yield chunk


@pytest.mark.parametrize("after", [0, 1, 2])
@pytest.mark.parametrize("reader", [_iterator_error, _sqlite_drop, _duckdb_drop], ids=["iterator", "sqlite", "duckdb"])
def test_read_cut_off_sends_nothing_commits_nothing_deletes_nothing(hubspot, hook, tmp_path, reader, after):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config())
    before, requests = files(store), hubspot.emulator.request_count()
    changed = [{**r, "firstname": "changed"} for r in ROWS[:60]]  # 40 keys "removed", 60 changed
    with pytest.raises(Exception) as err:
        run_sync(reader(tmp_path, changed, after), hook, store, config())
    assert "CheckpointError" not in type(err.value).__name__
    assert hubspot.emulator.request_count() == requests, "a cut-off read sent requests"
    assert files(store) == before, "a cut-off read touched the checkpoint"
    assert len(emails(hubspot)) == 100 and all(
        r["properties"]["firstname"] != "changed" for r in hubspot.emulator.records("contacts")
    )


def test_postgres_backend_terminated_mid_read(pg_schema, hubspot, hook, tmp_path):
    import psycopg

    pg_schema.execute("create table c (email text, firstname text)")
    with pg_schema.connect() as conn, conn.cursor() as cur:
        cur.executemany("insert into c values (%s, %s)", [(r["email"], r["firstname"]) for r in ROWS[:60]])
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config())
    before, requests = files(store), hubspot.emulator.request_count()

    def read():
        conn = psycopg.connect(pg_schema.dsn, options=f"-c search_path={pg_schema.name}")
        pid = conn.info.backend_pid
        with conn.cursor(name="retl_read") as cur:  # server-side cursor: rows arrive per fetch
            cur.execute("select email, firstname from c order by email")
            for n in range(10**6):
                if n == 2:
                    pg_schema.execute("select pg_terminate_backend(%s)", (pid,))
                batch = cur.fetchmany(20)
                if not batch:
                    return
                yield pd.DataFrame(batch, columns=["email", "firstname"])

    with pytest.raises(psycopg.OperationalError):
        run_sync(read(), hook, store, config())
    assert hubspot.emulator.request_count() == requests and files(store) == before and len(emails(hubspot)) == 100


# ---------------------------------------------------------------- write applied, response lost


@pytest.mark.parametrize("after", [0, 2, 4])
def test_lost_create_response_is_reconciled_not_duplicated(hubspot, hook, tmp_path, after):
    """Companies have no upsert: search lookup, then create. The create lands, its answer is lost."""
    rows = [{"domain": f"d{i}.example.com", "name": f"N{i}"} for i in range(100)]
    cfg = config(object="companies", primary_key="domain", match_on="domain", mode="upsert")
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    lost_before = hubspot.faults.injected["lost_response"]
    hubspot.faults.fail_next(1, "lost_response", after=after + 2)  # the properties call, one search, then creates
    report = run_sync(chunks(rows), hook, store, cfg)
    domains = [r["properties"]["domain"] for r in hubspot.emulator.records("companies")]
    assert sorted(domains) == sorted(r["domain"] for r in rows), "duplicate or missing companies"
    assert report.rejected == 0 and hubspot.faults.injected["lost_response"] == lost_before + 1
    lost = [r.path for r in hubspot.emulator.requests if r.fault == "lost_response"]
    assert lost == ["/crm/v3/objects/companies/batch/create"]
    assert {d for _, d in checkpoint_of(store.path).values()} == {
        r["id"] for r in hubspot.emulator.records("companies")
    }


def test_lost_upsert_response_is_resent_idempotently(hubspot, hook, tmp_path):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    hubspot.faults.fail_next(2, "lost_response", after=1)
    report = run_sync(chunks(ROWS), hook, store, config())
    assert emails(hubspot) == sorted(r["email"] for r in ROWS) and report.rejected == 0 and report.retries >= 2


# ---------------------------------------------------------------- checkpoints


def test_missing_checkpoint_replans_everything_without_duplicates(hubspot, hook, tmp_path):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config())
    store.path.unlink()
    report = run_sync(chunks(ROWS), hook, FileCheckpointStore(store.path), config())
    assert report.planned["new"] == 100 and report.upserted + report.created + report.updated == 100
    assert emails(hubspot) == sorted(r["email"] for r in ROWS)


def test_torn_journal_line_then_a_failing_retry_still_loads(tmp_path):
    """Regression: a torn last line used to glue itself to the next try's first commit."""
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    meta = {"target_fingerprint": "t", "payload_fingerprint": "p"}
    store.commit(JournalEntry.puts([1], [11], ["a"]), **meta)
    with open(store.journal_path, "ab") as fh:
        fh.write(b'{"format_version": 1, "entry": {"k": "AAAA')  # killed mid-write
    store.commit(JournalEntry.puts([2], [22], ["b"]), **meta)  # the retry commits, then fails
    loaded = FileCheckpointStore(tmp_path / "ck.parquet").load()
    assert sorted(zip(loaded.key_hashes.tolist(), loaded.dest_ids.tolist())) == [(1, "a"), (2, "b")]


@pytest.mark.parametrize("damage", ["corrupt_base", "corrupt_journal", "newer_format"])
def test_unreadable_checkpoint_is_a_clear_error_then_full_resync_recovers(hubspot, hook, tmp_path, damage):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config())
    if damage == "corrupt_base":
        store.path.write_bytes(b"PAR1 not really parquet")
    elif damage == "corrupt_journal":
        store.journal_path.write_bytes(b"{not json}\n")
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(store.path)
        meta = json.loads(table.schema.metadata[b"retl_checkpoint"])
        meta["format_version"] = FORMAT_VERSION + 1
        pq.write_table(table.replace_schema_metadata({b"retl_checkpoint": json.dumps(meta).encode()}), store.path)
    requests = hubspot.emulator.request_count()
    with pytest.raises(CheckpointError, match="newer" if damage == "newer_format" else "full_resync=True"):
        run_sync(chunks(ROWS), hook, FileCheckpointStore(store.path), config())
    assert hubspot.emulator.request_count() == requests, "an unreadable checkpoint must stop before sending"
    report = run_sync(chunks(ROWS), hook, FileCheckpointStore(store.path), config(full_resync=True))
    assert report.checkpoint_reset and report.rejected == 0
    assert emails(hubspot) == sorted(r["email"] for r in ROWS) and report.deleted == 0


def test_checkpoint_of_another_target_discards_ids_and_replans(hubspot, hook, tmp_path):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config(destination_identity="portal-A"))
    report = run_sync(chunks(ROWS), hook, FileCheckpointStore(store.path), config(destination_identity="portal-B"))
    assert "ids discarded" in report.checkpoint_reset and report.planned["new"] == 100 and report.deleted == 0
    assert emails(hubspot) == sorted(r["email"] for r in ROWS)


def test_changed_mapping_resends_every_row_by_id(hubspot, hook, tmp_path):
    store = FileCheckpointStore(tmp_path / "ck.parquet")
    run_sync(chunks(ROWS), hook, store, config())
    renamed = [{"email": r["email"], "fname": r["firstname"] + "!"} for r in ROWS]
    report = run_sync(chunks(renamed), hook, FileCheckpointStore(store.path),
                      config(mapping={"email": "email", "firstname": "fname"}))
    assert "mapping changed" in report.checkpoint_reset and report.updated == 100 and report.created == 0
    assert {r["properties"]["firstname"] for r in hubspot.emulator.records("contacts")} == {
        r["firstname"] + "!" for r in ROWS
    }
