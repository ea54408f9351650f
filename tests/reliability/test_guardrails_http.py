"""Every guardrail stops a run before its first request, and an override lets exactly one run through.

Real engine, the real HubSpot hook over HTTP against its emulator (whose request log is the
proof that nothing was sent), a real DuckDB warehouse read through Airflow's hook, for both
diffs: the in-memory snapshot diff (the query read in chunks) and the warehouse diff
(``checkpoint="warehouse"``: the diff runs in SQL). The override is the engine's
``override_guardrails`` (what the operator sets from ``override_guardrails=True`` or the DAG
run's conf); the DAG-run side is tested in ``tests/dags/test_sync_dags.py`` and
``tests/dags/test_guardrail_alerts.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_retl.checkpoints.warehouse import warehouse_store
from airflow_provider_retl.sources import read_query
from airflow_provider_retl.sync.checkpoint import CheckpointStore, MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import GuardrailTripped, RejectRatioExceeded
from airflow_provider_retl.sync.records import SyncReport

SQL = "select email, firstname from people"


class Source:
    """A DuckDB ``people`` table and one sync of it, diffed in memory or in the warehouse."""

    def __init__(self, diff: str, tmp_path: Path, set_connection, hook):
        import duckdb
        from airflow.sdk import BaseHook

        self.path = tmp_path / "people.duckdb"
        con = duckdb.connect(str(self.path))
        con.execute("create table people (email varchar, firstname varchar)")
        con.close()
        set_connection("guard_wh", "duckdb", host=str(self.path))
        self.sql_hook = BaseHook.get_connection("guard_wh").get_hook()
        self.diff = diff
        self.hook = hook
        self.memory = MemoryCheckpointStore()

    def set_rows(self, emails: list[str]) -> None:
        import duckdb

        con = duckdb.connect(str(self.path))
        con.execute("delete from people")
        if emails:
            con.executemany("insert into people values (?, ?)", [[e, "F"] for e in emails])
        con.close()

    def store(self) -> CheckpointStore:
        if self.diff == "warehouse":
            # A new store object per run, as the operator makes one per try.
            return warehouse_store("warehouse:retl_guard_ck", self.sql_hook, SQL, sync_id="guard")
        return self.memory

    def run(self, **config) -> SyncReport:
        store = self.store()
        chunks = [] if self.diff == "warehouse" else list(read_query(self.sql_hook, SQL))
        cfg = SyncConfig(**{"sync_id": "guard", "object": "contacts", "primary_key": "email", **config})
        return run_sync(chunks, self.hook, store, cfg)


@pytest.fixture(params=["snapshot", "warehouse"])
def source(request, tmp_path, set_connection, hook):
    return Source(request.param, tmp_path, set_connection, hook)


def emails(n: int, start: int = 0) -> list[str]:
    return [f"user{i}@example.com" for i in range(start, start + n)]


def trips(source: Source, hubspot, match: str, **config) -> GuardrailTripped:
    """The run fails with a guardrail and the emulator saw no request at all."""
    before = hubspot.emulator.request_count()
    with pytest.raises(GuardrailTripped, match=match) as caught:
        source.run(**config)
    assert hubspot.emulator.request_count() == before, "a tripped guardrail must send nothing"
    assert caught.value.report is not None and caught.value.report.pushed == 0
    return caught.value


def test_deleting_a_large_share_trips_and_an_override_lets_one_run_delete(source, hubspot):
    source.set_rows(emails(100))
    assert source.run(mode="mirror").created == 100
    source.set_rows(emails(40))
    error = trips(source, hubspot, r"mirror would delete 60 of 100 synced records", mode="mirror")
    assert "retl_override_guardrails" in str(error) and error.report.planned["removed"] == 60
    assert len(hubspot.emulator.records("contacts")) == 100

    report = source.run(mode="mirror", override_guardrails=True)
    assert report.deleted == 60 and len(hubspot.emulator.records("contacts")) == 40

    # Once: the next run without the override is guarded again (25 of the 40 left would go).
    source.set_rows(emails(15))
    trips(source, hubspot, r"delete 25 of 40", mode="mirror")
    assert len(hubspot.emulator.records("contacts")) == 40


def test_deleting_more_than_max_deletes_trips_whatever_the_share(source, hubspot):
    source.set_rows(emails(60))
    source.run(mode="mirror", max_deletes=5)
    source.set_rows(emails(54))  # 6 of 60: 10%, under the share, over the count
    trips(source, hubspot, r"above max_deletes=5", mode="mirror", max_deletes=5)
    assert source.run(mode="mirror", max_deletes=5, override_guardrails=True).deleted == 6
    source.set_rows(emails(48))
    trips(source, hubspot, r"delete 6 of 54 .*max_deletes=5", mode="mirror", max_deletes=5)


def test_a_shrunken_source_trips_in_upsert_mode_until_it_is_overridden_once(source, hubspot):
    source.set_rows(emails(120))
    source.run()
    source.set_rows(emails(50, start=0) + emails(5, start=500))  # 50 of 120 left, 5 new
    error = trips(source, hubspot, r"the source returned 55 usable keys where 120 were synced")
    assert "min_source_ratio=0.5" in str(error)
    report = source.run(override_guardrails=True)
    assert report.created == 5 and len(hubspot.emulator.records("contacts")) == 125
    trips(source, hubspot, r"returned 55 usable keys where 125 were synced")  # the 70 stay synced (upsert)


def test_a_share_of_rejects_known_before_sending_trips_and_names_the_reasons(source, hubspot):
    source.set_rows(emails(4) + [f"bad{i} at example.com" for i in range(6)])
    error = trips(source, hubspot, r"6 of 10 rows are rejected before sending", max_reject_ratio_before_send=0.5)
    message = str(error)
    assert "max_reject_ratio_before_send=0.5" in message and "6 validation" in message
    assert "invalid email" in message and "'bad0 at example.com'" in message  # reason and example key
    assert error.report.rejected == 6 and hubspot.emulator.records("contacts") == []

    # Let through once: the four valid rows go out and are committed, then the share still fails the run.
    with pytest.raises(RejectRatioExceeded, match="6 of 10 rows rejected") as caught:
        source.run(override_guardrails=True, max_reject_ratio_before_send=0.5)
    assert caught.value.report.created == 4 and caught.value.report.rejected == 6
    assert len(hubspot.emulator.records("contacts")) == 4

    trips(source, hubspot, r"6 of 10 rows are rejected before sending", max_reject_ratio_before_send=0.5)  # retried, and stopped


def test_a_share_below_the_limit_sends_the_valid_rows(source, hubspot):
    source.set_rows(emails(6) + [f"bad{i} at example.com" for i in range(4)])
    report = source.run(max_reject_ratio_before_send=0.5)
    assert report.created == 6 and report.rejected == 4
    assert sorted(r["properties"]["email"] for r in hubspot.emulator.records("contacts")) == sorted(emails(6))


def test_null_and_duplicate_keys_count_as_rejects_before_sending(source, hubspot):
    source.set_rows(emails(3) + [None, None, None] + ["user0@example.com"] * 2)  # type: ignore[list-item]
    error = trips(source, hubspot, r"rejected before sending .*source", max_reject_ratio_before_send=0.5)
    assert error.report.rejected >= 5
