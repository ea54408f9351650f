"""Real DAG runs (dag.test()) of ReverseETLOperator: warehouse -> Salesforce emulator.

Each scenario runs a DAG several times in one Airflow process against DuckDB (and the
machine's PostgreSQL) and checks the emulator's state (what the org would hold) and its
request log, not only the task's own report.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.testing.emulators import (
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    start_emulator,
)
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun

V = "/services/data/v62.0"
UPSERT = f"PATCH {V}/composite/sobjects/Contact/External_Id__c"
WRITES = (UPSERT, f"POST {V}/composite/sobjects", f"PATCH {V}/composite/sobjects", f"DELETE {V}/composite/sobjects")

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""


@pytest.fixture
def salesforce(set_connection):
    with start_emulator("salesforce", bulk_processing_seconds=0.05) as running:
        connect(set_connection, running.url)
        yield running


def connect(set_connection, url: str, password: str = SALESFORCE_PASSWORD, **extra) -> None:
    extras = {"client_id": SALESFORCE_CLIENT_ID, "client_secret": SALESFORCE_CLIENT_SECRET,
              "security_token": SALESFORCE_SECURITY_TOKEN, "max_retries": 1, "bulk_poll_interval": 0.02, **extra}
    set_connection("salesforce_test", "retl_salesforce", host=url, login=SALESFORCE_USERNAME, password=password,
                   extra=extras)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path, set_connection):
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return make_warehouse(request.param, tmp_path, set_connection, pg)


def contacts_sql(table: str) -> str:
    # Aliases name the Salesforce fields; External_Id__c is an External ID field, so records are upserted.
    return (f'select email as "External_Id__c", email as "Email", firstname as "FirstName", '
            f'lastname as "LastName", company as "Department" from {table}')


class Sync:
    """One DAG with one sync task; ``run(**overrides)`` rewrites the task's arguments."""

    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"salesforce_{uuid.uuid4().hex[:10]}"
        self.kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": contacts_sql(warehouse.table),
            "destination_conn_id": "salesforce_test",
            "object": "Contact",
            "primary_key": "External_Id__c",
            "checkpoint": "variable",
            **kwargs,
        }

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def contacts_in(salesforce) -> dict[str, dict]:
    return {r["External_Id__c"]: r for r in salesforce.emulator.records("Contact") if r.get("External_Id__c")}


def assert_org_equals_source(salesforce, warehouse):
    org = contacts_in(salesforce)
    source = warehouse.rows()
    assert sorted(org) == sorted(source)
    for email, row in source.items():
        record = org[email]
        assert (record["Email"], record["FirstName"], record["LastName"], record["Department"]) == (
            row["email"], row["firstname"], row["lastname"], row["company"]), email


def writes(salesforce) -> int:
    return sum(salesforce.emulator.request_count(route) for route in WRITES)


def test_first_noop_changed_and_mirror_runs(dag_runner, salesforce, warehouse):
    warehouse.create(customers(250))
    sync = Sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["created"] == 250 and report["rejected"] == 0 and report["plan"] == {"upsert": 250}
    assert salesforce.emulator.request_count(UPSERT) == 2  # 200 records a call
    assert report["requests"] == 4  # login, describe, 2 upserts
    assert_org_equals_source(salesforce, warehouse)

    writes_before = writes(salesforce)
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 250 and report["pushed"] == 0
    assert writes(salesforce) == writes_before
    assert report["requests"] == 0  # not even a login: nothing to plan, nothing to ask

    warehouse.execute("update {table} set company = 'Changed' where email in (?, ?, ?)",
                      ["user3@example.com", "user50@example.com", "user249@example.com"])
    result, report = sync.run()
    assert result.succeeded
    assert report["planned"]["changed"] == 3 and report["updated"] == 3 and report["created"] == 0
    assert salesforce.emulator.request_count(f"PATCH {V}/composite/sobjects") == 1  # by id, no lookup
    assert writes(salesforce) == writes_before + 1
    assert_org_equals_source(salesforce, warehouse)

    warehouse.execute("delete from {table} where email in (?, ?)", ["user7@example.com", "user8@example.com"])
    result, report = sync.run(mode="mirror")
    assert result.succeeded and report["deleted"] == 2
    deleted = [r for r in salesforce.emulator.records("Contact", include_deleted=True) if r.get("IsDeleted")]
    assert sorted(r["Email"] for r in deleted) == ["user7@example.com", "user8@example.com"]
    assert salesforce.emulator.request_count(f"DELETE {V}/composite/sobjects") == 1
    assert_org_equals_source(salesforce, warehouse)


def test_lookup_then_create_or_update_when_the_key_is_no_external_id(dag_runner, salesforce, tmp_path,
                                                                     set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(30) + [("o'neil@example.com", "Quote", "O'Neil", "Acme")])
    [existing] = salesforce.emulator.seed("Lead", [{"Email": "USER0@example.com", "LastName": "Old", "Company": "x"}])
    sql = (f'select email as "Email", firstname as "FirstName", lastname as "LastName", company as "Company" '
           f"from {warehouse.table}")
    sync = Sync(dag_runner, warehouse, sql=sql, object="Lead", primary_key="Email")
    result, report = sync.run()
    assert result.succeeded, result
    assert report["plan"] == {"lookup": 31} and (report["created"], report["updated"]) == (30, 1)
    assert salesforce.emulator.request_count(f"GET {V}/query") == 1
    leads = {r["Email"].lower(): r for r in salesforce.emulator.records("Lead")}
    assert len(leads) == 31 and leads["user0@example.com"]["Id"] == existing
    assert leads["o'neil@example.com"]["LastName"] == "O'Neil"

    warehouse.execute("update {table} set lastname = 'Changed' where email = ?", ["user5@example.com"])
    result, report = sync.run()
    assert result.succeeded and report["updated"] == 1 and report["requests"] == 3  # login, describe, update
    assert salesforce.emulator.request_count(f"GET {V}/query") == 1  # the id came from the checkpoint


def test_rejects_are_reported_with_key_and_reason(dag_runner, tmp_path, set_connection):
    with start_emulator("salesforce") as salesforce:
        connect(set_connection, salesforce.url, lock_retries=0)
        warehouse = make_warehouse("duckdb", tmp_path, set_connection)
        warehouse.create(customers(5) + [("bad-email", "B", "Bad", "x"), ("long@example.com", "L", "x" * 81, "x"),
                                          ("nolast@example.com", "N", None, "x")])
        salesforce.emulator.lock_next(1)  # the first record written is locked by "another transaction"
        sync = Sync(dag_runner, warehouse, destination_params={"max_concurrency": 1})
        result, report = sync.run()
        assert result.succeeded, result
        by_key = {r["key"]: r for r in report["rejects"]}
        assert set(by_key) == {"bad-email", "long@example.com", "nolast@example.com", "user0@example.com"}
        assert by_key["bad-email"]["stage"] == "validation" and "INVALID_EMAIL_ADDRESS" in by_key["bad-email"]["reason"]
        assert "STRING_TOO_LONG" in by_key["long@example.com"]["reason"]
        assert "REQUIRED_FIELD_MISSING" in by_key["nolast@example.com"]["reason"]
        locked = by_key["user0@example.com"]
        assert (locked["stage"], locked["code"]) == ("destination", "UNABLE_TO_LOCK_ROW")
        assert report["created"] == 4 and len(contacts_in(salesforce)) == 4

        # Rejected rows are not checkpointed: the next run sends the locked one again.
        result, report = sync.run()
        assert result.succeeded and (report["created"], report["unchanged"], report["rejected"]) == (1, 4, 3)
        assert len(contacts_in(salesforce)) == 5


def test_failed_try_then_retry_resumes_without_duplicates(dag_runner, salesforce, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(650))
    sync = Sync(dag_runner, warehouse, destination_params={"max_concurrency": 1})
    # Login, describe and 2 upserts pass; then 2 errors in a row (max_retries=1) fail try 1 part-way.
    salesforce.faults.fail_next(2, "error", after=4)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    assert report["unchanged"] >= 400 and report["created"] > 0
    assert report["created"] + report["unchanged"] == 650
    keys = [r["External_Id__c"] for r in salesforce.emulator.records("Contact")]
    assert len(keys) == len(set(keys)) == 650
    assert_org_equals_source(salesforce, warehouse)


def test_a_large_sync_takes_the_bulk_path(dag_runner, tmp_path, set_connection):
    with start_emulator("salesforce", bulk_processing_seconds=0.05) as salesforce:
        connect(set_connection, salesforce.url, bulk_threshold=100)
        warehouse = make_warehouse("duckdb", tmp_path, set_connection)
        warehouse.create(customers(300))
        salesforce.emulator.seed("Contact", [{"External_Id__c": "user1@example.com", "LastName": "Before"}])
        result, report = Sync(dag_runner, warehouse).run()
        assert result.succeeded, result
        assert report["plan"] == {"upsert": 300}
        assert (report["created"], report["updated"], report["rejected"]) == (299, 1, 0)
        assert [j["state"] for j in salesforce.emulator.jobs()] == ["JobComplete"]
        assert salesforce.emulator.request_count(UPSERT) == 0
        assert_org_equals_source(salesforce, warehouse)


def test_wrong_password_fails_without_retry_or_leak(dag_runner, salesforce, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(3))
    connect(set_connection, salesforce.url, password="wrong-password-secret-987")
    result, _ = Sync(dag_runner, warehouse).run(retries=1)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # auth errors are not retried
    assert "wrong-password-secret-987" not in repr(task.xcoms)
    assert salesforce.emulator.request_count("POST /services/oauth2/token") == 1
