"""Real DAG runs (dag.test()) of ReverseETLOperator: warehouse -> HubSpot emulator.

Each scenario runs a DAG several times in one Airflow process against DuckDB, SQLite
and the machine's PostgreSQL, and checks the emulator's state (what HubSpot would hold)
and its request log, not only the task's own report.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun

TOKEN = "pat-test-token-1234"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_test", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


@pytest.fixture(params=["duckdb", "sqlite", "postgres"])
def warehouse(request, tmp_path, set_connection):
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return make_warehouse(request.param, tmp_path, set_connection, pg)


class Sync:
    """One DAG with one sync task; ``run(**overrides)`` rewrites the task's arguments."""

    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"sync_{uuid.uuid4().hex[:10]}"
        self.kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": warehouse.sql,
            "destination_conn_id": "hubspot_test",
            "object": "contacts",
            "primary_key": "email",
            "checkpoint": "variable",
            **kwargs,
        }

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def contacts_in(hubspot) -> dict[str, dict]:
    return {r["properties"]["email"]: r["properties"] for r in hubspot.emulator.records("contacts")}


def assert_destination_equals_source(hubspot, warehouse):
    dest = contacts_in(hubspot)
    source = warehouse.rows()
    assert sorted(dest) == sorted(source)
    for email, row in source.items():
        assert {k: dest[email][k] for k in row} == row, email


@pytest.mark.parametrize("checkpoint", ["variable", "xcom", "warehouse"])
def test_first_noop_changed_and_mirror_runs(dag_runner, hubspot, warehouse, checkpoint):
    warehouse.create(customers(120))
    if checkpoint == "warehouse" and warehouse.pg is not None:
        checkpoint = f"warehouse:{warehouse.pg.name}.retl_checkpoints"  # the test's own schema
    sync = Sync(dag_runner, warehouse, checkpoint=checkpoint)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["created"] == 120 and report["rejected"] == 0
    assert report["requests"] == 2  # 120 upserts in batches of 100
    assert_destination_equals_source(hubspot, warehouse)

    requests_before = hubspot.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 120
    assert report["pushed"] == 0 and report["requests"] == 0
    assert hubspot.emulator.request_count() == requests_before

    warehouse.execute("update {table} set company = 'Changed' where email in (?, ?, ?)",
                      ["user3@example.com", "user50@example.com", "user119@example.com"])
    result, report = sync.run()
    assert result.succeeded
    assert report["planned"]["changed"] == 3 and report["updated"] == 3 and report["requests"] == 1
    assert hubspot.emulator.request_count() == requests_before + 1
    assert hubspot.emulator.requests[-1].path.endswith("/batch/update")
    assert_destination_equals_source(hubspot, warehouse)

    warehouse.execute("delete from {table} where email = ?", ["user7@example.com"])
    result, report = sync.run(mode="mirror")
    assert result.succeeded and report["deleted"] == 1
    archived = [r for r in hubspot.emulator.records("contacts", include_archived=True) if r["archived"]]
    assert [r["properties"]["email"] for r in archived] == ["user7@example.com"]
    assert_destination_equals_source(hubspot, warehouse)


def test_insert_never_updates_and_update_never_creates(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(10))
    hubspot.emulator.seed("contacts", [{"email": "user0@example.com", "firstname": "Old"}])

    result, report = Sync(dag_runner, warehouse, mode="insert").run()
    assert result.succeeded and report["created"] == 9 and report["updated"] == 0
    assert contacts_in(hubspot)["user0@example.com"]["firstname"] == "Old"

    warehouse.insert([("new@example.com", "N", "N", "N")])
    warehouse.execute("update {table} set firstname = 'Changed'")
    result, report = Sync(dag_runner, warehouse, mode="update").run()
    assert result.succeeded and report["created"] == 0 and report["updated"] == 10
    assert report["skipped"] == {"update mode: record not found in destination": 1}
    assert "new@example.com" not in contacts_in(hubspot)
    assert all(c["firstname"] == "Changed" for c in contacts_in(hubspot).values())


def test_dry_run_sends_nothing(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(5) + [("not-an-email", "x", "y", "z")])
    result, report = Sync(dag_runner, warehouse, dry_run=True).run()
    assert result.succeeded and report["dry_run"]
    assert report["planned"]["new"] == 6 and report["plan"] == {"upsert": 6}
    assert report["rejected"] == 1 and report["rejects"][0]["key"] == "not-an-email"
    assert hubspot.emulator.request_count() == 0
    result, report = Sync(dag_runner, warehouse).run()  # a real run afterwards still sends everything
    assert report["created"] == 5


@pytest.mark.parametrize("checkpoint", ["variable", "xcom"])
def test_failed_try_then_retry_resumes_without_duplicates(dag_runner, hubspot, tmp_path, set_connection, checkpoint):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(450))
    sync = Sync(dag_runner, warehouse, checkpoint=checkpoint, destination_params={"max_concurrency": 1})
    # Let 3 batches land, then fail 2 attempts in a row (max_retries=1): try 1 fails part-way.
    hubspot.faults.fail_next(2, "error", after=3)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    task = result.task("sync")
    assert list(task.tries) == ["failed", "success"], task
    # Try 2 sent only what try 1 had not delivered (batches in flight at the failure may have landed).
    assert report["unchanged"] >= 300 and report["created"] > 0
    assert report["created"] + report["unchanged"] == 450
    assert_destination_equals_source(hubspot, warehouse)
    emails = [r["properties"]["email"] for r in hubspot.emulator.records("contacts")]
    assert len(emails) == len(set(emails)) == 450


def test_lost_create_response_then_retry_creates_no_duplicate(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(30))
    sync = Sync(dag_runner, warehouse, match_on="email", primary_key="email", mode="insert",
                destination_params={"max_concurrency": 1})
    hubspot.faults.fail_next(1, "lost_response", after=1)  # the lookup passes, the create lands unseen
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert report["created"] == 30
    emails = [r["properties"]["email"] for r in hubspot.emulator.records("contacts")]
    assert len(emails) == len(set(emails)) == 30


def test_rejects_are_reported_with_key_and_reason(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(4))
    warehouse.insert([("broken@", "x", "y", "z"), (None, "no", "key", "here"), ("user1@example.com", "d", "u", "p")])
    # 4 of 7 rows are rejected on purpose: above the default max_reject_ratio (0.5).
    result, report = Sync(dag_runner, warehouse, max_reject_ratio=1.0).run()
    assert result.succeeded
    reasons = {(r["key"], r["stage"]) for r in report["rejects"]}
    assert ("broken@", "validation") in reasons and ("NULL", "source") in reasons
    assert [r["key"] for r in report["rejects"] if "duplicate" in r["reason"]] == ["user1@example.com"] * 2
    assert report["created"] == 3 and "user1@example.com" not in contacts_in(hubspot)


def test_reject_ratio_fails_the_task_and_keeps_the_report(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(2) + [(f"bad{i}@", "x", "y", "z") for i in range(3)])
    result, _ = Sync(dag_runner, warehouse, max_reject_ratio=0.1).run(retries=2)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # AirflowFailException: no retries
    report = task.xcoms["sync_report"]
    assert report["rejected"] == 3 and report["created"] == 2
    assert len(contacts_in(hubspot)) == 2


def test_secret_token_is_in_no_report_or_xcom(dag_runner, hubspot, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(3))
    set_connection("hubspot_test", "retl_hubspot", host=hubspot.url, password="wrong-token-secret-987")
    result, _ = Sync(dag_runner, warehouse).run(retries=1)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # auth errors are not retried
    assert "wrong-token-secret-987" not in repr(task.xcoms)


def test_sql_file_mapping_and_match_on_follow_an_email_change(dag_runner, hubspot, tmp_path, set_connection):
    """A .sql file (templated), an explicit mapping, and identity by customer id matched on email."""
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.execute("create table people (customer_id integer, mail text, given text)")
    for i in range(5):
        warehouse.execute("insert into people values (?, ?, ?)", [i, f"p{i}@example.com", f"G{i}"])
    sync = Sync(
        dag_runner,
        warehouse,
        sql="retl_test_people.sql",
        primary_key="customer_id",
        match_on="email",
        mapping={"email": "mail", "firstname": "given"},
    )
    sql = "select customer_id, mail, given from people where customer_id < {{ params.limit }}"
    text = DAG_TEMPLATE.format(dag_id=sync.dag_id, retries=0, kwargs={**sync.kwargs, "params": {"limit": 100}})
    result = dag_runner.run_dag(text, sync.dag_id, extra_files={"people.sql": sql})
    report = result.return_value("sync")
    assert result.succeeded and report["created"] == 5
    assert contacts_in(hubspot)["p2@example.com"]["firstname"] == "G2"

    warehouse.execute("update people set mail = 'renamed@example.com' where customer_id = 2")
    result = dag_runner.run_dag(text, sync.dag_id, extra_files={"people.sql": sql})
    report = result.return_value("sync")
    assert report["updated"] == 1 and report["created"] == 0
    emails = sorted(contacts_in(hubspot))
    assert "renamed@example.com" in emails and "p2@example.com" not in emails and len(emails) == 5


def test_webhook_mirror_with_xcom_checkpoint(dag_runner, tmp_path, set_connection):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(30))
    with start_emulator("webhook", secret="whsec-test-1") as receiver:
        set_connection("hook_test", "retl_webhook", host=f"{receiver.url}/hooks/customers", password="whsec-test-1")
        sync = Sync(dag_runner, warehouse, destination_conn_id="hook_test", object="customers",
                    mode="mirror", checkpoint="xcom")
        result, report = sync.run()
        assert result.succeeded and report["upserted"] == 30 and report["requests"] == 1
        assert len(receiver.emulator.records()) == 30
        warehouse.execute("delete from {table} where email in (?, ?)", ["user1@example.com", "user2@example.com"])
        warehouse.execute("update {table} set company = 'X' where email = ?", ["user3@example.com"])
        result, report = sync.run()
        assert report["deleted"] == 2 and report["upserted"] == 1 and report["requests"] == 2
        assert len(receiver.emulator.deleted_ids) == 2 and "user1@example.com" not in receiver.emulator.records()
        assert receiver.emulator.records()["user3@example.com"]["company"] == "X"
        assert receiver.emulator.signature_failures == 0


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_rejects_table_gets_every_reject_of_every_run(dag_runner, hubspot, tmp_path, set_connection, kind):
    warehouse = make_warehouse(kind, tmp_path, set_connection)
    warehouse.create(customers(3) + [(f"bad{i}@", "x", "y", "z") for i in range(4)] + [(None, "n", "o", "k")])
    sync = Sync(dag_runner, warehouse, rejects_table="retl_rejects")
    first = sync.run()[0]
    second = sync.run()[0]  # the bad rows are retried, and rejected again
    rows = warehouse.execute(
        "select run_id, reject_key, stage, reason from retl_rejects order by run_id, reject_key"
    )
    assert len(rows) == 10 and {r[0] for r in rows} == {first.run_id, second.run_id}
    keys = sorted(r[1] for r in rows if r[0] == first.run_id)
    assert keys == ["NULL", "bad0@", "bad1@", "bad2@", "bad3@"]
    assert all("invalid email" in r[3] for r in rows if r[1].startswith("bad"))
    assert len(contacts_in(hubspot)) == 3


def test_rejects_table_name_is_validated_at_parse_time():
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    with pytest.raises(ValueError, match="rejects_table"):
        ReverseETLOperator(task_id="t", conn_id="w", sql="select 1", destination_conn_id="d", object="contacts",
                           primary_key="email", rejects_table="x; drop table users")


def test_guardrail_stops_a_mass_delete_before_sending_and_a_run_conf_overrides_it_once(
    dag_runner, tmp_path, set_connection
):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(60))
    with start_emulator("webhook", secret="whsec-guard-1") as receiver:
        set_connection("guard_hook", "retl_webhook", host=f"{receiver.url}/hooks/c", password="whsec-guard-1")
        sync = Sync(dag_runner, warehouse, destination_conn_id="guard_hook", object="customers", mode="mirror")
        result, report = sync.run()
        assert result.succeeded and report["upserted"] == 60
        sent = receiver.emulator.request_count()

        warehouse.execute("delete from {table} where email not in (" + ",".join(["?"] * 20) + ")",
                          [f"user{i}@example.com" for i in range(20)])
        result, _ = sync.run(retries=2)
        task = result.task("sync")
        assert result.state == "failed" and task.try_number == 1  # a guardrail is not retried
        assert receiver.emulator.request_count() == sent and len(receiver.emulator.records()) == 60  # nothing sent

        text = DAG_TEMPLATE.format(dag_id=sync.dag_id, retries=0, kwargs=sync.kwargs)
        override = {"retl_override_guardrails": [f"{sync.dag_id}.sync"]}
        result = dag_runner.run_dag(text, sync.dag_id, conf=override)
        assert result.succeeded and result.return_value("sync")["deleted"] == 40
        assert len(receiver.emulator.records()) == 20

        # Once: the next run without the conf is guarded again.
        warehouse.execute("delete from {table} where email <> ?", ["user0@example.com"])
        result, _ = sync.run()
        assert result.state == "failed" and len(receiver.emulator.records()) == 20


@pytest.mark.parametrize(
    "case",
    ["undefined destination connection", "undefined warehouse connection", "unknown table", "unknown object",
     "bad connection extra"],
)
def test_errors_a_retry_cannot_fix_fail_at_once_without_retries(dag_runner, hubspot, tmp_path, set_connection, case):
    # The README's promise: what no retry can fix fails on its first try, although the task has retries.
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(3))
    overrides = {
        "undefined destination connection": {"destination_conn_id": "no_such_destination"},
        "undefined warehouse connection": {"conn_id": "no_such_warehouse"},
        "unknown table": {"sql": "select * from no_such_table"},
        "unknown object": {"object": "no_such_object"},
        "bad connection extra": {},
    }[case]
    if case == "bad connection extra":
        set_connection("hubspot_test", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"rate_limit": "lots"})
    result, _ = Sync(dag_runner, warehouse).run(retries=2, **overrides)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1, (case, task.try_number)
    assert hubspot.emulator.records("contacts") == []
