"""Real DAG runs (dag.test()) of ReverseETLOperator: DuckDB warehouse -> Customer.io emulator.

People (identify upserts, no-op runs, changes, mirror deletes, rejects, a failed try and
its retry) and an event stream whose first try dies after some batches landed: at the
emulator every event is processed exactly once, thanks to the ULID each event carries.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from airflow_provider_retl.testing.emulators import CUSTOMERIO_API_KEY, CUSTOMERIO_SITE_ID, start_emulator
from tests.dags.warehouses import make_warehouse

pytestmark = pytest.mark.dagrun

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""

PEOPLE_SQL = "select id, email, first_name, plan from people order by id"


@pytest.fixture
def cio():
    with start_emulator("customerio", rate_limit=None) as running:
        yield running


@pytest.fixture
def connect(cio, set_connection):
    def connect(**extra):
        set_connection("cio_test", "retl_customerio", host=cio.url, login=CUSTOMERIO_SITE_ID,
                       password=CUSTOMERIO_API_KEY, extra={"max_retries": 1, **extra})

    connect()
    return connect


@pytest.fixture
def warehouse(tmp_path, set_connection):
    return make_warehouse("duckdb", tmp_path, set_connection)


class Sync:
    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"cio_{uuid.uuid4().hex[:10]}"
        self.kwargs = {"conn_id": warehouse.conn_id, "destination_conn_id": "cio_test", "checkpoint": "variable",
                       **kwargs}

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def make_people(warehouse, n: int) -> None:
    warehouse.execute("create table people (id varchar, email varchar, first_name varchar, plan varchar)")
    # One statement: each execute opens the DuckDB file anew.
    warehouse.execute(
        "insert into people select cast(i as varchar), 'p' || cast(i as varchar) || '@acme.io', "
        "'First' || cast(i as varchar), case when i % 3 = 0 then 'pro' else 'free' end from range(?) t(i)",
        [n],
    )


def assert_people_match(cio, warehouse):
    source = {r[0]: {"email": r[1], "first_name": r[2], "plan": r[3]} for r in warehouse.execute(PEOPLE_SQL)}
    dest = {p["id"]: p["attributes"] for p in cio.emulator.people()}
    assert sorted(dest) == sorted(source)
    for key, row in source.items():
        assert dest[key] == {k: v for k, v in row.items() if v is not None}, key


def test_people_first_noop_changed_and_mirror_runs(dag_runner, cio, connect, warehouse):
    make_people(warehouse, 120)
    sync = Sync(dag_runner, warehouse, sql=PEOPLE_SQL, object="people", primary_key="id")

    result, report = sync.run()
    assert result.succeeded, result
    assert report["upserted"] == 120 and report["rejected"] == 0 and report["requests"] == 1
    assert_people_match(cio, warehouse)

    before = cio.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 120 and report["pushed"] == 0 and report["requests"] == 0
    assert cio.emulator.request_count() == before

    warehouse.execute("update people set plan = 'enterprise' where id in ('3', '50')")
    warehouse.execute("update people set plan = null where id = '7'")
    result, report = sync.run()
    assert result.succeeded and report["planned"]["changed"] == 3 and report["upserted"] == 3
    assert report["requests"] == 1 and cio.emulator.request_count() == before + 1
    assert "plan" not in cio.emulator.person("7")["attributes"]  # NULL removed the attribute
    assert_people_match(cio, warehouse)

    warehouse.execute("delete from people where id in ('11', '12')")
    result, report = sync.run(mode="mirror")
    assert result.succeeded and report["deleted"] == 2 and report["requests"] == 1
    assert sorted(d["id"] for d in cio.emulator.deleted) == ["11", "12"]
    assert_people_match(cio, warehouse)


def test_rejects_are_reported_with_keys_and_reasons(dag_runner, cio, connect, warehouse):
    warehouse.execute("create table people (email varchar, id varchar, plan varchar)")
    rows = [("a@acme.io", "1", "pro"), ("b@acme.io", "1", "pro"), ("broken@", "3", "x"), (None, "4", "x"),
            ("dup@acme.io", "5", "x"), ("dup@acme.io", "6", "y"), ("long@acme.io", "7", "z" * 1500),
            ("c@acme.io", "8", "free")]
    values = ", ".join("(" + ", ".join("null" if v is None else f"'{v}'" for v in row) + ")" for row in rows)
    warehouse.execute(f"insert into people values {values}")
    sync = Sync(dag_runner, warehouse, sql="select email, id, plan from people order by email",
                object="people", primary_key="email", match_on="email",
                max_reject_ratio=1.0)  # 6 of 8 rows are rejected on purpose: above the default (0.5)
    result, report = sync.run()
    assert result.succeeded, result
    rejects = {(r["key"], r["stage"]): r["reason"] for r in report["rejects"]}
    assert rejects[("NULL", "source")] and "duplicate primary key" in rejects[("dup@acme.io", "source")]
    assert "broken@" in rejects[("broken@", "validation")]
    assert "1,000 per attribute" in rejects[("long@acme.io", "validation")]
    assert "belongs to another person" in rejects[("b@acme.io", "destination")]  # a 207 item error
    assert report["rejected"] == 6 and report["upserted"] == 2
    assert sorted(p["email"] for p in cio.emulator.people()) == ["a@acme.io", "c@acme.io"]

    warehouse.execute("update people set id = '2' where email = 'b@acme.io'")  # fixed at the source
    result, report = sync.run()
    assert report["upserted"] == 1 and cio.emulator.person(email="b@acme.io")["id"] == "2"


def test_failed_try_then_retry_resumes(dag_runner, cio, connect, warehouse):
    make_people(warehouse, 300)
    sync = Sync(dag_runner, warehouse, sql=PEOPLE_SQL, object="people", primary_key="id", batch_size=50,
                destination_params={"max_concurrency": 1})
    cio.faults.fail_next(2, "error", after=2)  # batch 3 fails twice (max_retries=1): try 1 fails
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    assert report["unchanged"] >= 100 and report["upserted"] + report["unchanged"] == 300
    assert report["requests"] < 6  # try 2 sent only what try 1 had not delivered
    assert_people_match(cio, warehouse)


def test_events_are_processed_exactly_once_across_a_failed_try(dag_runner, cio, connect, warehouse):
    connect(max_retries=0)  # the lost answer fails the try at once
    warehouse.execute("create table orders (order_id varchar, customer_id varchar, amount double, occurred_at timestamp)")
    warehouse.execute(
        "insert into orders select 'o' || lpad(cast(i as varchar), 4, '0'), 'c' || cast(i % 17 as varchar), "
        "i * 1.5, timestamp '2026-01-01 00:00:00' + to_seconds(i) from range(250) t(i)"
    )
    sync = Sync(
        dag_runner, warehouse,
        sql="select order_id as event_key, customer_id as id, amount, occurred_at from orders order by order_id",
        object="events", mode="insert", primary_key="event_key", event_name="repurchase_due",
        event_time_field="occurred_at", batch_size=50, destination_params={"max_concurrency": 1},
    )
    cio.faults.fail_next(1, "lost_response", after=2)  # batch 3 lands, its answer is lost
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    assert report["rejected"] == 0 and not any(r.get("code") == "OUTCOME_UNKNOWN" for r in report["rejects"])

    processed = cio.emulator.events()
    assert len(processed) == 250 and set(Counter(e["id"] for e in processed).values()) == {1}
    assert sorted(e["attributes"]["event_key"] for e in processed) == [f"o{i:04d}" for i in range(250)]
    assert {e["name"] for e in processed} == {"repurchase_due"}
    # Each event happened to its order's customer, never to a person named after the event key.
    customers = dict(warehouse.execute("select order_id, customer_id from orders"))
    assert all(e["identifiers"] == {"id": customers[e["attributes"]["event_key"]]} for e in processed)
    assert sorted(p["id"] for p in cio.emulator.people()) == sorted(set(customers.values()))
    assert min(e["timestamp"] for e in processed) == 1767225600 and "occurred_at" not in processed[0]["attributes"]
    received = cio.emulator.events(include_duplicates=True)
    duplicates = cio.emulator.duplicate_events
    assert duplicates >= 50 and len(received) == 250 + duplicates  # the re-sent batch was ignored by id
    assert 50 <= report["events"] <= 150  # try 2 sent the interrupted batch again, and what try 1 never sent

    before = cio.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["events"] == 0 and report["requests"] == 0
    assert cio.emulator.request_count() == before


def test_events_name_their_person_by_the_person_field_and_reject_rows_without_one(dag_runner, cio, connect, warehouse):
    warehouse.execute("create table orders (order_id varchar, customer_email varchar, amount double)")
    warehouse.execute(
        "insert into orders values ('o1', 'ann@acme.io', 1), ('o2', null, 2), ('o3', 'bob@acme.io', 3), ('o4', '', 4)"
    )
    sync = Sync(
        dag_runner, warehouse, sql="select order_id, customer_email, amount from orders order by order_id",
        object="events", mode="insert", primary_key="order_id", event_name="ordered", max_reject_ratio=1.0,
        destination_params={"person_field": "customer_email", "person_identifier": "email"},
    )
    result, report = sync.run()
    assert result.succeeded, result
    assert report["events"] == 2 and report["rejected"] == 2
    rejects = {r["key"]: r["reason"] for r in report["rejects"]}
    assert sorted(rejects) == ["o2", "o4"] and all("'customer_email' is empty" in r for r in rejects.values())
    sent = {e["attributes"]["order_id"]: e["identifiers"] for e in cio.emulator.events()}
    assert sent == {"o1": {"email": "ann@acme.io"}, "o3": {"email": "bob@acme.io"}}
    assert sorted(p["email"] for p in cio.emulator.people()) == ["ann@acme.io", "bob@acme.io"]


def test_an_events_sync_without_a_person_column_fails_before_sending(dag_runner, cio, connect, warehouse, capfd):
    warehouse.execute("create table orders (order_id varchar, customer_id varchar, amount double)")
    warehouse.execute("insert into orders values ('o1', 'c1', 1), ('o2', 'c2', 2)")
    sync = Sync(
        dag_runner, warehouse, sql="select order_id, customer_id, amount from orders", object="events",
        mode="insert", primary_key="order_id", event_name="ordered",
    )
    capfd.readouterr()  # only this run's output
    result, _ = sync.run(retries=2)
    out, err = capfd.readouterr()
    assert not result.succeeded
    assert "needs a person column, separate from the event's key" in out + err
    assert list(result.task("sync").tries) == ["failed"]  # a configuration error: no retry can fix it
    assert cio.emulator.request_count() == 0 and cio.emulator.events() == [] and cio.emulator.people() == []
