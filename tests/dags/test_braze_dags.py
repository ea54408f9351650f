"""Real DAG runs (dag.test()) of ReverseETLOperator: DuckDB warehouse -> Braze emulator.

User attributes (first run, no-op, changed rows, rejects, failure + Airflow retry, mirror)
and the case Braze makes hard: events, which Braze cannot deduplicate. A try that fails
after some batches landed is retried by Airflow, and the emulator counts every event it
received: none twice, and the ones whose fate cannot be known are reported, not re-sent.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import requests

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import make_warehouse

pytestmark = pytest.mark.dagrun

KEY = "braze-dag-test-key-7c1e"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""

USERS_SQL = "select external_id, first_name, plan, email from braze_users"
EVENTS_SQL = "select event_key, external_id, event_at, sku from braze_events"


@pytest.fixture
def braze(set_connection):
    with start_emulator("braze", api_keys=[KEY], rate_limit=None) as running:
        # One call at a time and no retries inside the task: a fault fails the try, Airflow retries it.
        extra = {"max_retries": 0, "max_concurrency": 1, "rate_limit": 0}
        set_connection("braze_test", "retl_braze", host=running.url, password=KEY, extra=extra)
        yield running


@pytest.fixture
def warehouse(tmp_path, set_connection):
    wh = make_warehouse("duckdb", tmp_path, set_connection)
    wh.execute("create table braze_users (external_id text, first_name text, plan text, email text)")
    wh.execute("create table braze_events (event_key text, external_id text, event_at timestamp, sku text)")
    return wh


def add_users(warehouse, rows):
    # One statement: DuckDB opens the file per statement, and that costs more than the rows.
    values = ", ".join(["(?, ?, ?, ?)"] * len(rows))
    warehouse.execute(f"insert into braze_users values {values}", [v for row in rows for v in row])


def add_events(warehouse, n):
    """``n`` 'welcome' events, one per user (evt-i for user-i), a minute apart from 2026-01-01."""
    warehouse.execute(
        "insert into braze_events select 'evt-' || i, 'user-' || i, timestamp '2026-01-01' + i * interval 1 minute, "
        f"'sku-' || (i % 3) from range({int(n)}) t(i)"
    )


class Sync:
    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"braze_{uuid.uuid4().hex[:10]}"
        self.kwargs = {"conn_id": warehouse.conn_id, "destination_conn_id": "braze_test", "checkpoint": "variable",
                       **kwargs}

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def users_sync(runner, warehouse, **kwargs):
    return Sync(runner, warehouse, sql=USERS_SQL, object="users", primary_key="external_id", **kwargs)


def events_sync(runner, warehouse, **kwargs):
    return Sync(runner, warehouse, sql=EVENTS_SQL, object="events", primary_key="event_key", mode="insert",
                event_name="welcome", event_time_field="event_at", **kwargs)


def assert_braze_equals_source(braze, warehouse):
    source = {r[0]: {"first_name": r[1], "plan": r[2], "email": r[3]}
              for r in warehouse.execute("select * from braze_users")}
    dest = {u["external_id"]: u["attributes"] for u in braze.emulator.users()}
    assert sorted(dest) == sorted(source)
    for key, row in source.items():
        assert dest[key] == {k: v for k, v in row.items() if v is not None}, key


def delivered(braze) -> Counter:
    return Counter(e["properties"]["event_key"] for e in braze.emulator.events())


def test_user_attributes_first_noop_and_changed_runs(dag_runner, braze, warehouse):
    add_users(warehouse, [(f"u{i}", f"First{i}", "free", f"u{i}@example.com") for i in range(120)])
    sync = users_sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["upserted"] == 120 and report["rejected"] == 0
    assert report["requests"] == 2  # 75 + 45 attributes objects
    assert_braze_equals_source(braze, warehouse)

    before = braze.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 120 and report["pushed"] == 0 and report["requests"] == 0
    assert braze.emulator.request_count() == before

    warehouse.execute("update braze_users set plan = 'pro' where external_id in ('u3', 'u50', 'u119')")
    warehouse.execute("update braze_users set email = null where external_id = 'u4'")
    result, report = sync.run()
    assert result.succeeded
    # Braze needs no lookup: changed rows are upserted by external_id, in one call.
    assert report["planned"]["changed"] == 4 and report["upserted"] == 4 and report["requests"] == 1
    assert_braze_equals_source(braze, warehouse)  # the NULL email removed the attribute


def test_update_mode_never_creates_a_user(dag_runner, braze, warehouse):
    add_users(warehouse, [(f"u{i}", f"First{i}", "free", None) for i in range(10)])
    sync = users_sync(dag_runner, warehouse)
    assert sync.run()[0].succeeded
    braze_delete = requests.post(
        f"{braze.url}/users/delete", json={"external_ids": ["u6"]}, headers={"Authorization": f"Bearer {KEY}"},
        timeout=10)
    assert braze_delete.json()["deleted"] == 1  # someone deleted u6 in Braze meanwhile
    warehouse.execute("update braze_users set plan = 'pro' where external_id in ('u5', 'u6')")
    add_users(warehouse, [("u-new", "N", "pro", None)])
    result, report = sync.run(mode="update")
    assert result.succeeded
    # Rows go out with _update_existing_only: u5 is updated, u6 (deleted in Braze) is not brought
    # back, and u-new (never synced) is sent too but Braze creates nothing for it.
    assert braze.emulator.user("u5")["attributes"]["plan"] == "pro"
    assert braze.emulator.user("u6") is None and braze.emulator.user("u-new") is None
    assert braze.emulator.update_only_skips() == 2
    assert report["updated"] == 3 and report["created"] == 0


def test_rejects_are_reported_with_key_and_reason(dag_runner, braze, warehouse):
    add_users(warehouse, [("u1", "A", "free", "a@example.com"), ("u2", "B", "free", "broken@"),
                          (None, "C", "free", "c@example.com"), ("u3", "D", "free", "d@example.com"),
                          ("u3", "E", "free", "e@example.com")])
    # 4 of 5 rows are rejected on purpose: above the default max_reject_ratio (0.5).
    result, report = users_sync(dag_runner, warehouse, max_reject_ratio=1.0).run()
    assert result.succeeded
    reasons = {(r["key"], r["stage"]) for r in report["rejects"]}
    assert ("u2", "validation") in reasons and ("NULL", "source") in reasons
    assert [r["key"] for r in report["rejects"] if "duplicate" in r["reason"]] == ["u3", "u3"]
    assert "broken@" in next(r["reason"] for r in report["rejects"] if r["key"] == "u2")
    assert report["upserted"] == 1 and [u["external_id"] for u in braze.emulator.users()] == ["u1"]


def test_failed_try_is_retried_by_airflow_and_resumes(dag_runner, braze, warehouse):
    add_users(warehouse, [(f"u{i}", f"F{i}", "free", None) for i in range(300)])
    braze.faults.fail_next(1, "error", after=2)  # two batches land, the third gets a 500
    result, report = users_sync(dag_runner, warehouse).run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    assert report["unchanged"] >= 150 and report["upserted"] + report["unchanged"] == 300
    assert_braze_equals_source(braze, warehouse)


def test_mirror_deletes_users_only_when_allowed(dag_runner, braze, warehouse):
    add_users(warehouse, [(f"u{i}", f"F{i}", "free", None) for i in range(5)])
    sync = users_sync(dag_runner, warehouse, mode="mirror")
    result, _ = sync.run()
    assert result.succeeded
    warehouse.execute("delete from braze_users where external_id = 'u2'")
    result, _ = sync.run(retries=1)
    assert result.state == "failed" and result.task("sync").try_number == 1  # a configuration error: no retry
    assert len(braze.emulator.users()) == 5 and braze.emulator.deleted() == []
    result, report = sync.run(destination_params={"allow_delete": True})
    assert result.succeeded and report["deleted"] == 1 and braze.emulator.deleted() == ["u2"]
    assert_braze_equals_source(braze, warehouse)


def test_events_whose_answer_was_lost_are_reported_in_doubt_never_sent_twice(dag_runner, braze, warehouse):
    add_events(warehouse, 300)  # 4 batches of 75
    sync = events_sync(dag_runner, warehouse)
    # Batches 1 and 2 are acknowledged; batch 3 lands but its answer is lost; the try fails.
    braze.faults.fail_next(1, "lost_response", after=2)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    counts = delivered(braze)
    assert max(counts.values()) == 1, "an event was delivered twice"
    assert len(counts) == 300  # here every event did land (the lost answer's batch too)
    # The retry could not tell whether batch 3 landed (Braze has no event ids): reported, not re-sent.
    assert report["rejected"] == 75 and report["events"] in (0, 75)  # batch 4 may or may not have left in try 1
    assert report["unchanged"] + report["events"] + report["rejected"] == 300
    assert {r["code"] for r in report["rejects"]} == {"OUTCOME_UNKNOWN"}
    assert braze.emulator.request_count("POST /users/export/ids") == 2  # it asked Braze first
    events = braze.emulator.events()
    assert all(e["name"] == "welcome" and e["time"].startswith("2026-01-01T") for e in events)
    assert events[0]["properties"] == {"event_key": "evt-0", "sku": "sku-0"}


def test_events_refused_before_they_landed_are_sent_on_retry_exactly_once(dag_runner, braze, warehouse):
    add_events(warehouse, 300)
    sync = events_sync(dag_runner, warehouse)
    braze.faults.fail_next(1, "error", after=2)  # batch 3 gets a 500 and is not applied
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    counts = delivered(braze)
    assert len(counts) == 300 and set(counts.values()) == {1}  # every event exactly once
    # The export proved batch 3's users have no 'welcome' event yet: re-sent, nothing in doubt.
    assert report["rejected"] == 0 and report["events"] in (75, 150)
    assert report["unchanged"] + report["events"] == 300
    assert braze.emulator.request_count("POST /users/export/ids") == 2  # 75 users: 50 + 25

    requests = braze.emulator.request_count()
    result, report = sync.run()  # nothing new: nothing sent
    assert result.succeeded and report["pushed"] == 0 and braze.emulator.request_count() == requests


def test_a_wrong_key_fails_at_once_and_never_shows(dag_runner, braze, warehouse, set_connection):
    add_users(warehouse, [("u1", "A", "free", None)])
    set_connection("braze_test", "retl_braze", host=braze.url, password="braze-wrong-secret-555")
    result, _ = users_sync(dag_runner, warehouse).run(retries=1)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # auth errors are not retried
    assert "braze-wrong-secret-555" not in repr(task.xcoms)
    assert braze.emulator.users() == []
