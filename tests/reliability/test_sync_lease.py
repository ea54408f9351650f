"""One run of a sync at a time: the lease every checkpoint store keeps (issue 15, class 4).

* Real concurrency: two processes start the same sync at the same moment (a file barrier after
  their imports) against one emulator and one checkpoint (file, SQLite and PostgreSQL warehouse
  tables): 200 HubSpot companies stay 200 and 200 Braze events are delivered once.
* The lease itself, store by store (file, DuckDB/SQLite/PostgreSQL warehouse): a second taker
  waits and then fails naming the holder; an expired lease is taken over; the try that lost it
  cannot commit (a frozen "zombie" that wakes up); release frees it at once.
* A SIGKILLed try leaves its lease behind: the retry is refused while it lives and goes on
  once it expired, and the destination ends exactly like the source.

The Airflow stores (Variable, XCom) are covered with concurrent ``dag.test()`` processes in
``test_sync_lease_airflow.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_retl.sync.checkpoint import (
    Checkpoint,
    FileCheckpointStore,
    JournalEntry,
    Lease,
    LeaseHeld,
    LeaseLost,
)
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.crash import KillPoint, run_spec
from airflow_provider_retl.testing.emulators import start_emulator

from . import scenarios
from .crash_support import checkpoint_of

ROOT = Path(__file__).resolve().parents[2]
N = 200


def companies() -> list[dict[str, Any]]:
    return [{"domain": f"d{i}.example.com", "name": f"Company {i}", "city": f"C{i}"} for i in range(N)]


def events() -> list[dict[str, Any]]:
    return [{"event_key": f"e{i}", "external_id": f"p{i}", "name": "ordered", "amount": i} for i in range(N)]


SCENARIOS = {"companies": (scenarios.hubspot_lookup, companies), "braze_events": (scenarios.braze_events, events)}


def _warehouse(kind: str, tmp_path: Path, rows: list[dict[str, Any]], pg_schema: Any) -> dict[str, Any]:
    """The source rows as a table in a real warehouse, and how a child process reaches it."""
    columns = list(rows[0])
    typed = ", ".join(f"{c} {'integer' if c == 'amount' else 'varchar(200)'}" for c in columns)
    values = [tuple(r[c] for c in columns) for r in rows]
    if kind == "sqlite":
        path = tmp_path / "warehouse.sqlite"
        with sqlite3.connect(path) as conn:
            conn.execute(f"create table src ({typed})")
            conn.executemany(f"insert into src values ({', '.join('?' * len(columns))})", values)
        connection = {"conn_type": "sqlite", "host": str(path)}
        table = "src"
    else:
        pg_schema.execute(f"create table src ({typed})")
        with pg_schema.connect() as conn, conn.cursor() as cur:
            cur.executemany(f"insert into src values ({', '.join(['%s'] * len(columns))})", values)
        fields = pg_schema.connection_fields()
        connection = {"conn_type": "postgres", **{k: v for k, v in fields.items() if v is not None}}
        table = f"{pg_schema.name}.src"
    return {
        "conn_id": f"lease_src_{kind}",
        "connection": connection,
        "spec": "warehouse",
        "sql": f"select {', '.join(columns)} from {table}",
    }


def _run_together(jobs: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Start one process per job at once; they meet at a barrier, then each runs its sync."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    procs = []
    for i, job in enumerate(jobs):
        job = {
            **job,
            "me": i,
            "parties": len(jobs),
            "barrier": str(tmp_path / "barrier"),
            "result": str(tmp_path / f"r{i}.json"),
        }
        path = tmp_path / f"job{i}.json"
        path.write_text(json.dumps(job))
        procs.append(
            (
                subprocess.Popen([sys.executable, "-m", "tests.reliability.lease_child", str(path)], cwd=ROOT, env=env),
                job,
            )
        )
    outcomes = []
    for proc, job in procs:
        assert proc.wait(timeout=300) == 0
        outcomes.append(json.loads(Path(job["result"]).read_text()))
    return outcomes


@pytest.fixture(params=["file", "sqlite", "postgres"])
def store_kind(request) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres_dsn")
    return request.param


@pytest.mark.parametrize("scenario_name", sorted(SCENARIOS))
def test_two_runs_started_together_send_everything_once(scenario_name, store_kind, tmp_path, request):
    make_scenario, make_rows = SCENARIOS[scenario_name]
    scenario, rows = make_scenario(), make_rows()
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        # Slow enough that the first run is still pushing when the second one plans.
        running.emulator.faults.update(latency=0.05)
        spec = scenario.spec(running.url, tmp_path / "ck.parquet", rows)
        job: dict[str, Any] = {"spec": json.loads(spec.to_json()), "lease_wait": 120}
        if store_kind != "file":
            pg = request.getfixturevalue("pg_schema") if store_kind == "postgres" else None
            job["warehouse"] = _warehouse(store_kind, tmp_path, rows, pg)
        outcomes = _run_together([job, job], tmp_path)

        assert all(o["ok"] for o in outcomes), [o.get("traceback") or o.get("error") for o in outcomes]
        found = scenario.read_back(running.emulator)
        copies = Counter({key: len(v) for key, v in found.items()})
        assert len(found) == N and set(copies.values()) == {1}, f"{sum(copies.values())} records/events for {N} rows"
        sent = [o["report"]["created"] + o["report"]["upserted"] + o["report"]["events"] for o in outcomes]
        assert sorted(sent) == [0, N], f"each run's sends: {sent} (the second must find everything done)"


# ------------------------------------------------------------------ the lease, store by store


class FileStores:
    def __init__(self, tmp_path: Path):
        self.path = tmp_path / "ck.parquet"

    def new(self) -> Any:
        return FileCheckpointStore(self.path)

    def committed(self) -> int:
        store = self.new()
        return len(store._read_journal())


class WarehouseStores:
    def __init__(self, kind: str, tmp_path: Path, set_connection, pg_schema=None):
        self.kind = kind
        if kind == "duckdb":
            set_connection("lease_wh", "duckdb", host=str(tmp_path / "w.duckdb"))
        elif kind == "sqlite":
            set_connection("lease_wh", "sqlite", host=str(tmp_path / "w.sqlite"))
        else:
            set_connection("lease_wh", "postgres", **pg_schema.connection_fields())

    def new(self) -> Any:
        from airflow.sdk import BaseHook

        from airflow_provider_retl.checkpoints.warehouse import warehouse_store

        hook = BaseHook.get_connection("lease_wh").get_hook()
        return warehouse_store("warehouse:lease_ck", hook, "select 1 as k", sync_id="leased")

    def committed(self) -> int:
        store = self.new()
        store.ensure_tables()
        frames = list(store.runner.read("select count(*) as n from lease_ck"))
        return int(frames[0].iloc[0, 0])


@pytest.fixture(params=["file", "duckdb", "sqlite", "postgres"])
def stores(request, tmp_path, set_connection):
    if request.param == "file":
        return FileStores(tmp_path)
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return WarehouseStores(request.param, tmp_path, set_connection, pg)


ENTRY = JournalEntry.puts([11], [12], ["id-11"])


def _commit(store: Any) -> None:
    store.commit(ENTRY, target_fingerprint="t", payload_fingerprint="p")


def test_a_second_run_fails_naming_the_holder(stores):
    first, second = stores.new(), stores.new()
    first.lease_label = "dag.sync run 'manual__1' try 1, pid 1 on worker-a"
    first.acquire_lease()
    second.lease_wait = 0
    with pytest.raises(LeaseHeld) as caught:
        second.acquire_lease()
    message = str(caught.value)
    assert "manual__1" in message and "worker-a" in message and "expires" in message, message
    assert caught.value.holder.label == first.lease_label
    first.release_lease()
    second.acquire_lease()  # free at once after the release
    _commit(second)
    second.release_lease()
    assert stores.committed() == 1


def test_an_expired_lease_is_taken_over_and_its_zombie_cannot_commit(stores):
    zombie, retry = stores.new(), stores.new()
    # The zombie took its lease "long ago": it expired without renewal (a frozen try).
    zombie.lease = Lease(zombie, label="zombie", clock=lambda: time.time() - 3 * zombie.lease_ttl, heartbeat=False)
    zombie.lease.acquire()
    retry.lease_wait = 0
    retry.acquire_lease()  # no wait: the zombie's lease is past its expiry
    _commit(retry)

    # The zombie wakes up: its own (monotonic) clock says it has not confirmed the lease for long.
    zombie.lease.monotonic = lambda: time.monotonic() + 3 * zombie.lease_ttl
    with pytest.raises(LeaseLost):
        _commit(zombie)
    with pytest.raises(LeaseLost):
        zombie.finalize(Checkpoint("t", "p"))
    retry.release_lease()
    zombie.release_lease()
    assert stores.committed() == 1, "only the retry's commit may land"


def test_a_lease_that_expired_is_lost_even_if_nobody_took_it(stores):
    store = stores.new()
    store.lease = Lease(store, label="frozen", clock=lambda: time.time() - 3 * store.lease_ttl, heartbeat=False)
    store.lease.acquire()
    store.lease.clock = time.time  # wakes up: its lease expired while it was frozen
    store.lease.monotonic = lambda: time.monotonic() + 3 * store.lease_ttl
    with pytest.raises(LeaseLost):
        _commit(store)
    assert stores.committed() == 0


def test_renewal_moves_the_expiry_and_keeps_others_out(stores):
    holder, other = stores.new(), stores.new()
    now = [time.time()]
    holder.lease = Lease(holder, label="holder", clock=lambda: now[0], heartbeat=False, ttl=60)
    holder.lease.acquire()
    now[0] += 50  # 50 of 60 s gone: one renewal later it has 60 s again
    holder.check_lease(confirm=True)
    other.lease = Lease(other, label="other", clock=lambda: now[0] + 30, wait=0, heartbeat=False, ttl=60)
    with pytest.raises(LeaseHeld):  # 80 s after the start: alive only thanks to the renewal
        other.lease.acquire()
    holder.release_lease()


def test_a_failing_run_releases_its_lease(tmp_path):
    """run_sync releases the lease on every way out, so the next try need not wait for the expiry."""

    class Broken:
        request_count = retry_count = 0

        def __getattr__(self, name):
            raise RuntimeError("destination exploded")

    store = FileCheckpointStore(tmp_path / "ck.parquet")
    config = SyncConfig(sync_id="s", object="contacts", primary_key="email")
    import pandas as pd

    with pytest.raises(RuntimeError):
        run_sync([pd.DataFrame({"email": ["a@x.com"]})], Broken(), store, config)
    assert not store.lease_path.exists(), "the failed run left its lease behind"


# ------------------------------------------------------------------ a killed try and its retry


def test_a_killed_try_blocks_its_retry_until_the_lease_expires(fork_server, tmp_path):
    scenario = scenarios.hubspot_lookup()
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        store_path = tmp_path / "ck.parquet"
        run_spec(scenario.spec(running.url, store_path, scenario.v1))
        v2 = scenario.spec(running.url, store_path, scenario.v2)
        killed = fork_server.run(v2, KillPoint("after_request", 3), str(tmp_path / "killed.json"))
        assert killed.killed, killed
        lease_file = tmp_path / "ck.parquet.lease"
        left = json.loads(lease_file.read_text())
        assert "pid" in left["label"] and left["expires_at"] > time.time()

        # On this host the dead try's process is gone, so its lease is over at once ...
        probe = FileCheckpointStore(store_path)
        probe.lease_wait = 0
        probe.acquire_lease()
        probe.release_lease()
        # ... but seen from another host (the process cannot be checked) it lives until it expires.
        lease_file.write_text(json.dumps({**left, "host": "another-worker/boot"}))
        early = FileCheckpointStore(store_path)
        early.lease_wait = 0
        with pytest.raises(LeaseHeld, match="pid"):
            early.acquire_lease()

        # A retry after the expiry (its clock says so) goes on and repairs everything.
        retry = FileCheckpointStore(store_path)
        retry.lease = Lease(retry, clock=lambda: time.time() + retry.lease_ttl + 1, wait=0)
        retry.lease.acquire()
        from airflow_provider_retl.testing.crash import build, chunks_of

        hook, _, config = build(v2)
        try:
            run_sync(chunks_of(v2), hook, retry, config)
        finally:
            hook.close()
        assert not retry.lease_path.exists()

        found = scenario.read_back(running.emulator)
        source = {row["domain"] for row in scenario.v2}
        assert set(found) == source, "destination keys differ from the source"
        assert all(len(v) == 1 for v in found.values()), "duplicate companies"
        assert len(checkpoint_of(store_path)) == len(source)


def test_the_heartbeat_and_the_commits_share_the_file_lock(tmp_path):
    """Renewals run in the heartbeat thread while commits hold the file's flock: they must not deadlock."""
    import threading

    store = FileCheckpointStore(tmp_path / "ck.parquet")
    store.lease_ttl = 1.0  # a heartbeat every 0.25 s, during the commits below
    store.acquire_lease()
    done: list[int] = []

    def commit_many() -> None:
        for i in range(400):
            store.commit(JournalEntry.puts([i], [i], [f"id-{i}"]), target_fingerprint="t", payload_fingerprint="p")
            done.append(i)

    worker = threading.Thread(target=commit_many, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), f"commits stuck after {len(done)} of 400 (lock order between heartbeat and commit)"
    assert len(store._read_journal()) == 400
    store.release_lease()
    assert not store.lease_path.exists()
