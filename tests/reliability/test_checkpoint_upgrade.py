"""A checkpoint written by the previous release (``canon2-siphash64``) is upgraded, not reset.

Issue 15 changed the canonical text of naive timestamps (now ``+00:00``) and of folded email
keys (``lower()``, not ``casefold()``). The old checkpoints are built here as the old release
wrote them: their key hashes come from a small copy of canon2's key texts kept in this test
(not the product's), over the ids the first run obtained from the real emulators. The next run
with the new engine must send no event again, look nothing up, create nothing it knew, delete
nothing, and leave a canon3 checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import (
    HASH_ALGORITHM,
    Checkpoint,
    CheckpointStore,
    FileCheckpointStore,
    JournalEntry,
    MemoryCheckpointStore,
)
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import (
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    DEFAULT_TOKEN,
    start_emulator,
)

CANON2 = "canon2-siphash64"
UPGRADE_NOTE = "checkpoint of an older version: rows re-planned by key, ids kept"


def canon2_key_text(value: Any, *, fold: bool) -> str:
    """The previous release's canonical key text (fingerprint.py at 4d032a3), for the key types used here."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")  # canon2: no suffix on naive timestamps
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value)
    return text.strip().casefold() if fold else text


def canon3_key_hashes(frame: pd.DataFrame, key: str, *, fold: bool) -> np.ndarray:
    [part] = fp.key_parts(frame, [key])
    return fp.key_hashes(fp.fold_case(part) if fold else part)


def downgrade_to_canon2(store: CheckpointStore, frame: pd.DataFrame, key: str, *, fold: bool = False) -> Checkpoint:
    """Rewrite the store's canon3 checkpoint of ``frame`` as the previous release had written it."""
    current = store.load()
    assert current is not None and current.hash_algorithm == HASH_ALGORITHM
    canon2 = fp.key_hashes(np.array([canon2_key_text(v, fold=fold) for v in frame[key].tolist()], dtype=object))
    to_canon2 = dict(zip(canon3_key_hashes(frame, key, fold=fold).tolist(), canon2.tolist(), strict=True))
    old = Checkpoint(
        current.target_fingerprint,
        current.payload_fingerprint,
        np.array([to_canon2[int(k)] for k in current.key_hashes], dtype=np.uint64),
        current.row_hashes + np.uint64(1),  # the old release's row texts differed too
        current.dest_ids,
        hash_algorithm=CANON2,
    )
    store.finalize(old)
    return old


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path) -> CheckpointStore:
    return FileCheckpointStore(tmp_path / "ck.parquet") if request.param == "file" else MemoryCheckpointStore()


# --- events (Customer.io) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def customerio():
    with start_emulator("customerio", rate_limit=None) as running:
        yield running


@pytest.fixture
def cio_hook(customerio, monkeypatch):
    from airflow_provider_retl.hooks.customerio import CustomerIoHook

    customerio.emulator.reset()
    doc = {
        "conn_type": "retl_customerio",
        "host": customerio.url,
        "login": CUSTOMERIO_SITE_ID,
        "password": CUSTOMERIO_API_KEY,
        "extra": {"rate_limit": 0, "batch_size": 20},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_UPGRADE_CIO", json.dumps(doc))
    return CustomerIoHook("checkpoint_upgrade_cio", sleep=lambda s: None)


def events_frame(keys: list[Any]) -> pd.DataFrame:
    n = len(keys)
    return pd.DataFrame(
        {"event_key": keys, "id": [f"p{i % 3}" for i in range(n)], "name": ["ordered"] * n, "amount": range(n)}
    )


def naive_stamps(n: int) -> list[dt.datetime]:
    return [dt.datetime(2026, 3, 1, 12, 0, 0) + dt.timedelta(minutes=7 * i, microseconds=i) for i in range(n)]


def received(customerio) -> int:
    return len(customerio.emulator.events(include_duplicates=True))


def run_events(hook, store, frame):
    config = SyncConfig(sync_id="events", object="events", primary_key="event_key", mode="insert", commit_interval=0)
    return run_sync([frame], hook, store, config)


@pytest.mark.parametrize("key_kind", ["naive_timestamp", "int"])
def test_an_events_checkpoint_of_the_previous_release_sends_only_new_events(cio_hook, customerio, store, key_kind):
    keys: list[Any] = naive_stamps(15) if key_kind == "naive_timestamp" else list(range(1000, 1015))
    first = events_frame(keys[:12])
    run_events(cio_hook, store, first)
    assert received(customerio) == 12
    old = downgrade_to_canon2(store, first, "event_key")
    # The test exercises the translation where the key text changed, and the plain path where it did not.
    changed_text = not np.array_equal(
        np.sort(old.key_hashes), np.sort(canon3_key_hashes(first, "event_key", fold=False))
    )
    assert changed_text == (key_kind == "naive_timestamp")

    # The upgraded run: three events are new since the old release's last run.
    report = run_events(cio_hook, store, events_frame(keys))
    assert report.checkpoint_reset == UPGRADE_NOTE
    assert report.events == 3 and received(customerio) == 15  # none of the 12 sent again
    assert customerio.emulator.duplicate_events == 0
    upgraded = store.load()
    assert upgraded is not None and upgraded.hash_algorithm == HASH_ALGORITHM
    assert sorted(upgraded.key_hashes.tolist()) == sorted(
        canon3_key_hashes(events_frame(keys), "event_key", fold=False).tolist()
    )
    # From now on it is an ordinary canon3 checkpoint: nothing to do, nothing reset.
    again = run_events(cio_hook, store, events_frame(keys))
    assert again.events == 0 and again.checkpoint_reset is None and received(customerio) == 15


def test_a_failed_upgrading_run_is_retried_without_resending(cio_hook, customerio):
    # The upgrading run sent two of the three new events and died: its journal (canon3) lies on the canon2 base.
    store = MemoryCheckpointStore()
    keys = naive_stamps(15)
    run_events(cio_hook, store, events_frame(keys[:12]))
    before_failure = store.load()
    run_events(cio_hook, store, events_frame(keys[:14]))  # what the failed try sent: events 12 and 13
    sent_by_failed_try = store.load()
    assert before_failure is not None and sent_by_failed_try is not None
    store.finalize(before_failure)
    downgrade_to_canon2(store, events_frame(keys[:12]), "event_key")
    new_hashes = canon3_key_hashes(events_frame(keys), "event_key", fold=False)[12:14]
    positions = pd.Index(sent_by_failed_try.key_hashes).get_indexer(new_hashes)
    store.commit(
        JournalEntry.puts(new_hashes, sent_by_failed_try.row_hashes[positions], sent_by_failed_try.dest_ids[positions]),
        target_fingerprint=sent_by_failed_try.target_fingerprint,
        payload_fingerprint=sent_by_failed_try.payload_fingerprint,
    )
    assert received(customerio) == 14

    report = run_events(cio_hook, store, events_frame(keys))
    assert report.checkpoint_reset == UPGRADE_NOTE
    assert report.events == 1 and received(customerio) == 15 and customerio.emulator.duplicate_events == 0
    upgraded = store.load()
    assert upgraded is not None and upgraded.hash_algorithm == HASH_ALGORITHM and len(upgraded) == 15


# --- mirror (HubSpot contacts by email) ----------------------------------------------------------


@pytest.fixture(scope="module")
def hubspot():
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@pytest.fixture
def hs_hook(hubspot, monkeypatch):
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    hubspot.emulator.reset()
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN, "extra": {"rate_limit": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_UPGRADE_HS", json.dumps(doc))
    with HubSpotHook("checkpoint_upgrade_hs", sleep=lambda s: None) as h:
        yield h


def contacts_frame() -> pd.DataFrame:
    n = 8
    return pd.DataFrame(
        {
            # Upper case: folded to one key; "ß" is where casefold() (canon2) and lower() (canon3) differ.
            "email": [f"User{i}@Example.com" for i in range(n - 1)] + ["Straße@example.com"],
            "firstname": [f"First {i}" for i in range(n)],
            "lastname": [f"Last {i}" for i in range(n)],
        }
    )


def run_mirror(hook, store, frame):
    config = SyncConfig(
        sync_id="contacts",
        object="contacts",
        primary_key="email",
        mode="mirror",
        commit_interval=0,
        max_reject_ratio=0.0,
    )
    return run_sync([frame], hook, store, config)


def calls(hubspot) -> Counter:
    """API calls by kind: searches and reads (lookups), creates, upserts, updates, archives (deletes)."""
    counted: Counter = Counter()
    for request in hubspot.emulator.requests:
        kind = request.path.rsplit("/", 1)[-1]
        if kind in ("search", "read", "create", "upsert", "update", "archive"):
            counted[kind] += 1
        elif request.method in ("PATCH", "DELETE"):
            counted[request.method.lower()] += 1
    return counted


def test_a_mirror_checkpoint_of_the_previous_release_updates_by_id(hs_hook, hubspot, store):
    frame = contacts_frame()
    first = run_mirror(hs_hook, store, frame)
    assert calls(hubspot)["upsert"] + calls(hubspot)["create"] > 0  # the counter sees the first run's writes
    assert first.rejected == 0 and len(hubspot.emulator.records("contacts")) == 8
    ids_before = {r["properties"]["email"]: r["id"] for r in hubspot.emulator.records("contacts")}
    old = downgrade_to_canon2(store, frame, "email", fold=True)
    assert len(set(old.key_hashes.tolist()) - set(canon3_key_hashes(frame, "email", fold=True).tolist())) == 1  # ß

    before = calls(hubspot)
    report = run_mirror(hs_hook, store, frame)
    made = calls(hubspot) - before
    assert report.checkpoint_reset == UPGRADE_NOTE
    assert report.updated == 8 and report.created == 0 and report.deleted == 0 and report.rejected == 0
    assert made["update"] > 0 and made["search"] == made["read"] == made["create"] == made["upsert"] == 0
    assert made["archive"] == made["delete"] == 0
    records = hubspot.emulator.records("contacts", include_archived=True)
    assert len(records) == 8 and not any(r["archived"] for r in records)
    assert {r["properties"]["email"]: r["id"] for r in records} == ids_before
    upgraded = store.load()
    assert upgraded is not None and upgraded.hash_algorithm == HASH_ALGORITHM
    assert sorted(upgraded.key_hashes.tolist()) == sorted(canon3_key_hashes(frame, "email", fold=True).tolist())
    assert sorted(upgraded.dest_ids.tolist()) == sorted(ids_before.values())
    # Re-planned once: the next run is unchanged.
    again = run_mirror(hs_hook, store, frame)
    assert again.unchanged == 8 and again.pushed == 0 and again.checkpoint_reset is None


# --- warehouse store (diffed in SQL): DuckDB and PostgreSQL ------------------------------------------


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request, tmp_path, set_connection):
    from tests.checkpoints.test_warehouse_store import Source

    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    source = Source(request.param, tmp_path, set_connection, pg)
    source.orders = source.table.replace("people", "orders")
    source.execute(f"create table {source.orders} (order_id numeric(12,2), email varchar(200), amount integer)")
    return source


def order_rows(n: int) -> list[tuple]:
    # numeric(12,2): the previous release hashed CAST(... AS TEXT) = "12.50"; canon3 hashes "12.5".
    return [(Decimal(f"{10 + i}.{(i * 10) % 100:02d}"), f"o{i}@example.com", i) for i in range(n)]


def md5_64(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()[:16]


def downgrade_warehouse_to_canon2(source, rows: list[tuple]) -> dict[str, str]:
    """Rewrite the checkpoint table as the previous release wrote it: old key hashes, old algorithm name."""
    ck, meta = source.ck_table, f"{source.ck_table}_meta"
    new_to_old = {md5_64(fp.canonical_value(r[0])): md5_64(f"{r[0]:.2f}") for r in rows}
    assert sorted(h for (h,) in source.execute(f"select key_hash from {ck}")) == sorted(new_to_old)
    for new, old in new_to_old.items():
        source.execute(f"update {ck} set key_hash = ?, row_hash = ? where key_hash = ?", [old, "1" * 16, new])
    source.execute(f"update {meta} set hash_algorithm = ?", [f"sql-md5-64/{source.kind}"])
    return new_to_old


def warehouse_config(**kw: Any) -> SyncConfig:
    return SyncConfig(**{"sync_id": "orders", "object": "contacts", "primary_key": "order_id", **kw})


def checkpoint_table(source) -> dict[str, str | None]:
    return dict(source.execute(f"select key_hash, dest_id from {source.ck_table}"))


@pytest.mark.parametrize("mode", ["events", "mirror"])
def test_a_warehouse_checkpoint_of_the_previous_release_is_migrated_in_sql(warehouse, mode):
    from tests.unit.fakes import InMemoryDestination

    events = mode == "events"
    dest = InMemoryDestination(events=events, upsert=False, lookup=True, batch=50, concurrency=1)
    config = warehouse_config(mode="insert" if events else "mirror", match_on=None if events else "email")
    rows = order_rows(15)
    warehouse.execute(f"insert into {warehouse.orders} values (?, ?, ?)", many=rows[:12])
    sql = f"select * from {warehouse.orders}"
    first = run_sync(iter(()), dest, warehouse.store(sync_id="orders", sql=sql), config)
    assert (first.events if events else first.created) == 12
    ids_before = checkpoint_table(warehouse)
    new_to_old = downgrade_warehouse_to_canon2(warehouse, rows[:12])
    assert all(new != old for new, old in new_to_old.items())  # every key's text changed

    warehouse.execute(f"insert into {warehouse.orders} values (?, ?, ?)", many=rows[12:])
    dest.calls.clear()
    report = run_sync(iter(()), dest, warehouse.store(sync_id="orders", sql=sql), config)
    assert report.checkpoint_reset == UPGRADE_NOTE
    if events:
        assert report.events == 3 and len(dest.events) == 15  # none of the 12 sent again
    else:
        # Known keys: updated by their ids; only the 3 new ones are looked up and created; nothing deleted.
        assert report.updated == 12 and report.created == 3 and report.deleted == 0
        assert dest.count("delete") == 0 and sum(n for k, n in dest.calls if k == "lookup") == 3
        assert len(dest.records) == 15
    after = checkpoint_table(warehouse)
    assert {k: after[k] for k in ids_before} == ids_before  # same ids, under the canon3 key hashes
    assert len(after) == 15
    [(algorithm,)] = warehouse.execute(f"select hash_algorithm from {warehouse.ck_table}_meta")
    assert algorithm == f"sql-canon3-md5-64/{warehouse.kind}"
    again = run_sync(iter(()), dest, warehouse.store(sync_id="orders", sql=sql), config)
    assert again.checkpoint_reset is None and again.pushed == 0 and again.events == 0
    if not events:  # (a sent event's row is skipped, never re-sent, so its zeroed row hash stays)
        assert again.unchanged == 15


def test_a_failed_upgrading_mirror_run_deletes_nothing_on_retry(hs_hook, hubspot):
    # The upgrading run updated three contacts by id (journal, canon3 hashes) and died; the retry folds
    # that journal onto the canon2 base: the ß contact is then both a new entry and a stale old one.
    store = MemoryCheckpointStore()
    frame = contacts_frame()
    run_mirror(hs_hook, store, frame)
    current = store.load()
    assert current is not None
    old = downgrade_to_canon2(store, frame, "email", fold=True)
    canon3 = canon3_key_hashes(frame, "email", fold=True)
    done = canon3[-3:]  # the last three, ß among them
    positions = pd.Index(current.key_hashes).get_indexer(done)
    store.commit(
        JournalEntry.puts(done, current.row_hashes[positions], current.dest_ids[positions]),
        target_fingerprint=current.target_fingerprint,
        payload_fingerprint=current.payload_fingerprint,
    )
    assert len(store.load()) == len(old) + 1  # the stale copy is there

    report = run_mirror(hs_hook, store, frame)
    assert report.checkpoint_reset == UPGRADE_NOTE
    assert report.deleted == 0 and report.created == 0 and report.updated == 8
    # The stale copy is not even a removed key (mirror's live-holder guard would otherwise have to catch it).
    assert report.planned["removed"] == 0 and not report.skipped
    assert not any(r["archived"] for r in hubspot.emulator.records("contacts", include_archived=True))
    upgraded = store.load()
    assert upgraded is not None and upgraded.hash_algorithm == HASH_ALGORITHM
    assert sorted(upgraded.key_hashes.tolist()) == sorted(canon3.tolist())
    assert sorted(upgraded.dest_ids.tolist()) == sorted(current.dest_ids.tolist())
