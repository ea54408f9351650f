"""What the stateful machines (tests/stateful/test_machine.py) found, as plain deterministic tests.

Each test is the minimal history hypothesis shrank a failing example to, replayed step by step
on the same World (real engine, real emulator over HTTP, real checkpoint store). The test names
carry the finding ids of the issue-15 note (F1, F2, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_retl.hooks.zendesk import clear_job_gates
from airflow_provider_retl.testing.emulators import start_emulator
from tests.stateful.machine import AFTER_COMMIT, is_refusal
from tests.stateful.world import DESTINATIONS, World


@pytest.fixture(scope="module")
def emulators() -> Iterator[dict[str, Any]]:
    running: dict[str, Any] = {}
    try:
        for name, dest in DESTINATIONS.items():
            running[name] = start_emulator(dest.emulator, **dest.emulator_options)
        yield running
    finally:
        for r in running.values():
            r.stop()


@pytest.fixture
def world(emulators, tmp_path: Path, request):
    """``world("lookup", "file")``: a fresh World on a reset emulator."""

    def make(dest: str, store: str = "file") -> World:
        running = emulators[dest]
        running.emulator.reset()
        running.faults.clear()
        clear_job_gates()
        pg = request.getfixturevalue("pg_schema") if store == "postgres" else None
        return World(DESTINATIONS[dest], store, tmp_path / f"{dest}-{store}", running, pg)

    return make


def insert(w: World, n: int = 1) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        row = {"k": w.next_id, "m": w.match(w.next_m), "v": f"v{w.next_id}-0"}
        w.next_id += 1
        w.next_m += 1
        w.rows.append(row)
        rows.append(row)
    return rows


def run_ok(w: World) -> list[Any]:
    results = w.run()
    w.check_no_secret(results)
    errors = [r.error for r in results if r.error is not None]
    assert not errors, f"run failed: {errors[0]!r}"
    return results


def run_or_refuse(w: World) -> list[Any]:
    """A run that may refuse on purpose (a guardrail naming what it would do), never fail otherwise."""
    results = w.run()
    w.check_no_secret(results)
    errors = [
        r.error
        for r in results
        if r.error is not None and not is_refusal(r.error) and type(r.error).__name__ not in AFTER_COMMIT
    ]
    assert not errors, f"run failed: {errors[0]!r}"
    return results


def overlapping_runs(w: World, at: str = "") -> tuple[list[Any], list[Any]]:
    """Run B starts and ends while run A is at its first HTTP request whose URL contains ``at``
    (A has planned from the checkpoint and looked up, but not written yet).

    Deterministic version of two overlapping DagRuns: both plan from the same checkpoint. A
    second run that waits for a lease cannot finish inside A: then it is joined after A.
    """
    first = threading.Event()
    out_b: list[Any] = []

    def run_b() -> None:
        out_b.extend(w.run())

    hook_cls = type(w.dest.hook(w.conn_id))
    original = hook_cls._send
    b_thread = threading.Thread(target=run_b)

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        url = args[2] if len(args) > 2 else kwargs.get("url", "")
        if threading.current_thread() is not b_thread and not first.is_set() and at in url:
            first.set()
            b_thread.start()
            b_thread.join(30)  # a hang guard (B waiting on A's lease), not a timing assertion
        return original(self, *args, **kwargs)

    hook_cls._send = send  # type: ignore[method-assign]
    try:
        out_a = w.run()
    finally:
        hook_cls._send = original  # type: ignore[method-assign]
    if b_thread.is_alive() or first.is_set():
        b_thread.join()
    return out_a, out_b


def assert_overlap_is_safe(w: World, out_a: list[Any], out_b: list[Any]) -> None:
    results = out_a + out_b
    w.check_no_secret(results)
    ok = [r for r in results if r.error is None]
    assert ok, f"both overlapping runs failed: {[r.error for r in results]!r}"
    w.check_destination()


# F1 (class 4): two overlapping runs of a lookup-then-create sync both create the new company.
@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_f1_overlapping_runs_create_no_duplicate_company(world, store):
    w = world("lookup", store)
    insert(w, 2)
    out_a, out_b = overlapping_runs(w, at="/batch/create")
    assert_overlap_is_safe(w, out_a, out_b)


# F2 (class 3): moving an events sync from one partition to two sends every past event again.
# Machine: insert, run, change_partitions, run -> events delivered twice.
def test_f2_events_once_across_a_partition_change(world):
    w = world("events")
    insert(w, 4)
    run_ok(w)
    w.partitions = 2
    run_or_refuse(w)
    w.check_destination()


# F3 (new class: a checkpoint reset drops mirror deletes): after 1 -> 2 partitions each slice
# starts from an empty checkpoint, so a row deleted in the warehouse meanwhile is never deleted
# in the destination, silently. Machine: insert, run, delete, change_partitions, run.
def test_f3_mirror_deletes_survive_a_partition_change(world):
    w = world("lookup")
    insert(w, 2)
    run_ok(w)
    gone = w.rows.pop(0)
    w.partitions = 2
    results = run_or_refuse(w)
    if any(r.error is not None for r in results):
        w.orphans_allowed.add(gone["m"])  # refused on purpose: the delete waits for the user
    w.check_destination()


# F4 (class 2, consequence class 3): with checkpoint="warehouse", retyping the key column from
# bigint to numeric(12,2) makes every key look new: every past event is sent again.
# Machine (events, DuckDB): insert 2, run, retype_key(decimal), run -> events delivered twice.
@pytest.mark.parametrize("store", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_f4_events_once_after_key_retyped_to_numeric_in_warehouse(world, store):
    w = world("events", store)
    insert(w, 2)
    run_ok(w)
    w.key_type = "decimal"
    run_or_refuse(w)
    w.check_destination()


# F5 (class 3): the key timestamp going from naive to time-zone aware (same instants, UTC) sends
# every past event again. Machine (events, file): ..., timestamps_aware, run -> delivered twice.
@pytest.mark.parametrize("store", ["file", "duckdb"])
def test_f5_events_once_after_key_timestamp_becomes_aware(world, store):
    w = world("events", store)
    insert(w, 2)
    run_ok(w)
    w.aware = True
    run_or_refuse(w)
    w.check_destination()


# F6 (class 1): a row re-keyed (new primary key, same email/domain) in mirror mode: the new key
# is upserted/looked up onto the existing record, then the old key's id - the same record - is
# deleted. The live row is gone from the destination. Machine (upsert, file): insert, run,
# rekey, run -> LOSS.
@pytest.mark.parametrize("dest", ["upsert", "lookup", "jobs"])
def test_f6_mirror_keeps_the_record_of_a_rekeyed_row(world, dest):
    w = world(dest)
    insert(w, 2)
    run_ok(w)
    w.rows[0]["k"] = w.next_id
    w.next_id += 1
    run_or_refuse(w)
    w.check_destination()


# F8 (class 1 / new: mirror deletes silently skipped on an asynchronous-jobs destination):
# Zendesk users synced with create_or_update_many jobs in mirror mode; a row deleted from the
# source is planned as "removed" but no destroy job is ever sent and the run ends green (the
# checkpoint holds no Zendesk id for the key). The machine first found it behind a lost job
# answer and behind kills after a request; the minimal history needs neither.
# Machine (jobs, DuckDB/SQLite/file): insert, run, delete, insert, run -> ZOMBIE.
@pytest.mark.parametrize("store", ["file", "duckdb"])
def test_f8_mirror_deletes_a_removed_row_on_an_async_jobs_destination(world, store):
    w = world("jobs", store)
    insert(w, 2)
    run_ok(w)
    w.rows.pop(0)
    run_ok(w)
    w.check_destination()


def test_f8b_mirror_deletes_a_record_whose_create_answer_was_lost(world):
    w = world("jobs")
    insert(w, 1)
    w.running.faults.fail_next(1, "lost_response")
    results = w.run()
    w.running.faults.clear()
    w.check_no_secret(results)
    if any(r.error is not None for r in results):
        run_ok(w)  # the Airflow retry
    w.check_destination()
    w.rows.pop(0)
    insert(w, 1)  # a live row, so the empty-source guardrail is not what stops the delete
    run_ok(w)
    w.check_destination()


# F9 (class 1: identity follows the key, not the match value; and class 8): two keys swap their
# rows and one row changes; the update goes to the id remembered for the key, which now holds the
# other email: HubSpot answers EXISTS for both rows, the run ends green, the change never lands
# and every later run repeats the same rejects. Machine (upsert, file): insert, swap_keys,
# update, run -> STALE.
@pytest.mark.parametrize("dest", ["upsert", "jobs", "lookup"])
def test_f9_key_swap_with_a_change_reaches_the_destination(world, dest):
    w = world(dest)
    insert(w, 3)
    run_ok(w)
    w.rows[0]["k"], w.rows[1]["k"] = w.rows[1]["k"], w.rows[0]["k"]
    w.rows[0]["v"] = "changed"
    run_or_refuse(w)
    w.check_destination()


# F10 (class 3, via class 2): an events sync moved from checkpoint="warehouse" to a file store
# sends every past event again: the event identity computed in SQL (warehouse diff) differs from
# the one computed in Python (in-memory diff) for the same key. Machine (events, SQLite):
# ..., run, switch_store, run -> delivered twice. File -> file keeps the ids.
@pytest.mark.parametrize("store", ["duckdb", "sqlite"])
def test_f10_events_once_across_a_warehouse_to_file_store_switch(world, store):
    w = world("events", store)
    insert(w, 2)
    run_ok(w)
    w.current = 1  # the file store
    run_or_refuse(w)
    w.check_destination()
