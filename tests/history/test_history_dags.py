"""Sync history written by real DAG runs (dag.test()): runs, the row changelog, acknowledgements.

A warehouse (DuckDB, SQLite, PostgreSQL) is synced into the HubSpot emulator; the tests read
the history tables back through ``HistoryStore`` (the API the UI uses) and plain SQL.
"""

from __future__ import annotations

import json
import uuid

import pytest

from airflow_provider_retl.history.store import HistoryStore
from airflow_provider_retl.testing.emulators import start_emulator
from tests.airflow_harness import clear_and_rerun
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun

TOKEN = "pat-history-secret-98765"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""

BAD = "not-an-email"


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_hist", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


class Sync:
    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"hist_{uuid.uuid4().hex[:10]}"
        self.sync_id = f"{self.dag_id}.sync"
        self.kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": warehouse.sql,
            "destination_conn_id": "hubspot_hist",
            "object": "contacts",
            "primary_key": "email",
            "checkpoint": "variable",
            "max_reject_ratio": 1.0,
            **kwargs,
        }

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def store_of(conn_id: str, schema: str | None = None) -> HistoryStore:
    from airflow.sdk import BaseHook

    return HistoryStore(BaseHook.get_connection(conn_id).get_hook(), schema=schema)


def changes(store: HistoryStore, sync_id: str, run_id: str | None = None) -> list[dict]:
    where = "sync_id = {p}" + (" AND run_id = {p}" if run_id else "")
    params = [sync_id] + ([run_id] if run_id else [])
    columns = ["record_key", "operation", "status", "reason", "stage", "field_name", "try_number", "payload",
               "destination_id", "row_hash"]
    rows = store.hook.get_records(
        f"SELECT {', '.join(columns)} FROM {store.changes_table} WHERE {where.format(p=store._p)}", parameters=params
    )
    return [dict(zip(columns, r)) for r in rows]


@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres"])
def test_runs_and_changelog_in_the_warehouse(request, dag_runner, hubspot, tmp_path, set_connection, kind):
    pg = request.getfixturevalue("pg_schema") if kind == "postgres" else None
    warehouse = make_warehouse(kind, tmp_path, set_connection, pg)
    warehouse.create(customers(30))
    warehouse.insert([(BAD, "Bad", "Row", "X")])
    sync = Sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["created"] == 30 and report["rejected"] == 1
    assert report["history"]["conn_id"] == warehouse.conn_id
    assert report["history"]["runs_table"] == "retl_runs" and report["history"]["changes_table"] == "retl_changes"

    store = store_of(warehouse.conn_id)
    runs = store.runs(sync.sync_id)
    assert len(runs) == 1
    run = runs[0]
    assert run["state"] == "success" and run["try_number"] == 1 and run["dag_id"] == sync.dag_id
    assert (run["created"], run["rejected"], run["rows_read"], run["planned_new"]) == (30, 1, 31, 31)
    assert run["error_class"] is None and run["dry_run"] == 0 and run["sync_mode"] == "upsert"
    assert run["destination_conn_id"] == "hubspot_hist" and run["object_name"] == "contacts"
    assert run["started_at"] <= run["ended_at"]
    rows = changes(store, sync.sync_id)
    assert sorted((r["operation"], r["status"]) for r in rows) == [("create", "ok")] * 30 + [("reject", "rejected")]
    rejected = next(r for r in rows if r["status"] == "rejected")
    assert rejected["record_key"] == BAD and rejected["stage"] == "validation" and "email" in rejected["reason"]
    assert rejected["row_hash"] and len(rejected["row_hash"]) == 16
    created = [r for r in rows if r["operation"] == "create"]
    assert all(r["destination_id"] for r in created)
    assert all(r["payload"] is None for r in rows)  # personal data stays out unless asked for
    groups = store.reject_groups(sync.sync_id)
    assert [(g["stage"], g["count"], g["examples"]) for g in groups] == [("validation", 1, [BAD])]
    assert [s["sync_id"] for s in store.syncs()] == [sync.sync_id]

    # An update, then a mirror delete: each has its changelog row.
    warehouse.execute("update {table} set company = 'Changed' where email = ?", ["user3@example.com"])
    warehouse.execute("delete from {table} where email = ?", ["user7@example.com"])
    result, report = sync.run(mode="mirror")
    assert result.succeeded and report["updated"] == 1 and report["deleted"] == 1
    latest = store.runs(sync.sync_id)
    assert len(latest) == 2 and latest[0]["run_id"] != latest[1]["run_id"]
    assert (latest[0]["updated"], latest[0]["deleted"]) == (1, 1)
    second = changes(store, sync.sync_id, latest[0]["run_id"])
    ops = sorted((r["operation"], r["status"]) for r in second)
    assert ops == [("delete", "ok"), ("reject", "rejected"), ("update", "ok")]  # the bad row is retried
    history = store.key_history(sync.sync_id, "user3@example.com")
    assert [h["operation"] for h in history] == ["update", "create"]

    # No connection secret in any table.
    for table in (store.runs_table, store.changes_table, store.acks_table):
        dump = json.dumps(store.hook.get_records(f"SELECT * FROM {table}"), default=str)
        assert TOKEN not in dump


def test_failed_try_records_what_it_pushed_and_the_retry(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(150))
    sync = Sync(dag_runner, warehouse, batch_size=50, destination_params={"max_concurrency": 1})
    # The first batch lands, then the destination fails (beyond the hook's one retry): try 1 fails.
    hubspot.faults.fail_next(2, "error", after=1)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]

    store = store_of(warehouse.conn_id)
    runs = sorted(store.runs(sync.sync_id), key=lambda r: r["try_number"])
    assert [(r["try_number"], r["state"]) for r in runs] == [(1, "failed"), (2, "success")]
    failed, ok = runs
    assert failed["error_class"] and failed["error_message"] and TOKEN not in failed["error_message"]
    assert failed["run_id"] == ok["run_id"]
    first = [r for r in changes(store, sync.sync_id) if r["try_number"] == 1]
    second = [r for r in changes(store, sync.sync_id) if r["try_number"] == 2]
    assert failed["created"] == len(first) > 0 and all(r["operation"] == "create" for r in first)
    assert ok["created"] == len(second) == 150 - len(first)
    assert {r["record_key"] for r in first}.isdisjoint(r["record_key"] for r in second)


def test_reject_ratio_failure_is_recorded(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(3))
    warehouse.insert([(BAD, "Bad", "Row", "X")])
    sync = Sync(dag_runner, warehouse, max_reject_ratio=0.1)
    result, _ = sync.run()
    assert not result.succeeded
    report = result.task("sync").xcoms["sync_report"]
    assert report["history"]["runs_table"] == "retl_runs"
    store = store_of(warehouse.conn_id)
    (run,) = store.runs(sync.sync_id)
    assert (run["state"], run["error_class"], run["created"], run["rejected"]) == ("failed", "RejectRatioExceeded", 3, 1)
    assert sorted(r["status"] for r in changes(store, sync.sync_id)) == ["ok", "ok", "ok", "rejected"]


def test_history_in_a_named_database_with_payload_and_retention(
    dag_runner, hubspot, tmp_path, set_connection, pg_schema
):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    set_connection("hist_pg", "postgres", **pg_schema.connection_fields())
    set_connection("hist_sqlite", "sqlite", host=str(tmp_path / "history.sqlite"))
    sync = Sync(dag_runner, warehouse, history="conn:hist_pg", history_schema=pg_schema.name, history_payload=True)
    result, report = sync.run()
    assert result.succeeded, result
    assert report["history"]["conn_id"] == "hist_pg" and report["history"]["schema"] == pg_schema.name
    pg_store = HistoryStore.from_location(report["history"])  # how the UI finds it from the task's XCom
    assert pg_store.changes_table == f"{pg_schema.name}.retl_changes"
    rows = changes(pg_store, sync.sync_id)
    assert len(rows) == 5
    payloads = [json.loads(r["payload"]) for r in rows]
    assert {p["email"] for p in payloads} == {f"user{i}@example.com" for i in range(5)}
    # Nothing was written into the warehouse.
    assert warehouse.execute("select count(*) from information_schema.tables where table_name like 'retl_%'") == [(0,)]

    # Retention: a run row older than the limit is deleted when the next try writes.
    sqlite_sync = Sync(dag_runner, warehouse, history="conn:hist_sqlite", history_retention_days=30)
    sqlite_sync.run()
    store = store_of("hist_sqlite")
    store.write_run({"sync_id": sqlite_sync.sync_id, "run_id": "old", "try_number": 1,
                     "started_at": "2020-01-01T00:00:00.000000+00:00", "state": "success"})
    store.write_run({"sync_id": "another.sync", "run_id": "old", "try_number": 1,
                     "started_at": "2020-01-01T00:00:00.000000+00:00", "state": "success"})
    assert len(store.runs(sqlite_sync.sync_id)) == 2
    sqlite_sync.run()
    assert [r["run_id"] for r in store.runs(sqlite_sync.sync_id)].count("old") == 0
    assert len(store.runs(sqlite_sync.sync_id)) == 2
    assert len(store.runs("another.sync")) == 1  # another sync's retention is its own business
    assert store.purge(30) == 1 and store.runs("another.sync") == []


def test_history_that_cannot_be_written_does_not_fail_the_sync(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(4))
    set_connection("hist_broken", "sqlite", host=str(tmp_path / "no" / "such" / "dir" / "history.sqlite"))
    result, report = Sync(dag_runner, warehouse, history="conn:hist_broken").run()
    assert result.succeeded, result
    assert report["created"] == 4 and "history" not in report
    assert len(hubspot.emulator.records("contacts")) == 4


@pytest.mark.parametrize("checkpoint", ["variable", "warehouse"])
def test_acknowledged_reject_stops_retrying_until_the_row_changes(
    dag_runner, hubspot, tmp_path, set_connection, checkpoint
):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(3))
    warehouse.insert([(BAD, "Bad", "Row", "X")])
    sync = Sync(dag_runner, warehouse, checkpoint=checkpoint)
    result, report = sync.run()
    assert result.succeeded and report["rejected"] == 1

    # Not acknowledged: retried (and rejected) every run.
    result, report = sync.run()
    assert report["rejected"] == 1 and report["planned"]["new"] == 1

    store = store_of(warehouse.conn_id)
    assert store.acknowledge(sync.sync_id, [BAD, "never-rejected"], by="analyst") == 1
    assert list(store.pending_acknowledgements(sync.sync_id)) == [BAD]
    result, report = sync.run()
    assert result.succeeded
    assert report["rejected"] == 0 and report["planned"]["new"] == 0 and report["unchanged"] == 4
    assert report["requests"] == 0
    assert store.pending_acknowledgements(sync.sync_id) == {}
    assert store.key_history(sync.sync_id, BAD)[0]["operation"] == "acknowledged"

    result, report = sync.run()  # stays synced as it is
    assert report["rejected"] == 0 and report["unchanged"] == 4 and report["requests"] == 0

    # The row changes in the source: it is sent (and refused) again.
    warehouse.execute("update {table} set company = 'Y' where email = ?", [BAD])
    result, report = sync.run()
    assert report["planned"]["changed"] == 1 and report["rejected"] == 1
    assert store.key_history(sync.sync_id, BAD)[0]["status"] == "rejected"

    # Acknowledging every reject of the last run works the same way.
    assert store.acknowledge_rejects(sync.sync_id, by="analyst") == 1
    result, report = sync.run()
    assert report["rejected"] == 0 and report["unchanged"] == 4


def test_replay_clears_the_latest_task_instance(dag_runner, hubspot, tmp_path, set_connection):
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from airflow_provider_retl.history.replay import replay_rejects

    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(2))
    warehouse.insert([(BAD, "Bad", "Row", "X")])
    sync = Sync(dag_runner, warehouse)
    result, report = sync.run()
    assert result.succeeded and report["rejected"] == 1

    replayed = replay_rejects(sync.dag_id, "sync")
    assert replayed == {"dag_id": sync.dag_id, "run_id": result.run_id, "task_id": "sync", "cleared": 1}
    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == sync.dag_id)).one()
        run = session.scalars(select(DagRun).where(DagRun.dag_id == sync.dag_id)).one()
        assert ti.state is None and run.state == "queued"  # the scheduler runs the task again
        run.state = "running"  # what the scheduler does first with a queued run
    # The re-run (here the harness plays the scheduler) sends the row, fixed meanwhile, and nothing else.
    warehouse.execute("update {table} set email = 'fixed@example.com' where email = ?", [BAD])
    rerun = clear_and_rerun(result)
    assert rerun.succeeded, rerun
    again = rerun.return_value("sync")
    assert again["created"] == 1 and again["unchanged"] == 2 and again["rejected"] == 0
    with pytest.raises(LookupError, match="no task 'nope'"):
        replay_rejects(sync.dag_id, "nope")
    with pytest.raises(LookupError, match="no run"):
        replay_rejects("no_such_dag", "sync")
