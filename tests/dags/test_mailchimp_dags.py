"""Real DAG runs (dag.test()) of ReverseETLOperator: warehouse -> Mailchimp emulator.

Each scenario runs a DAG several times in one Airflow process against DuckDB (and SQLite)
and checks the emulator's state (what the audience would hold) and its request log.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.testing.emulators import MAILCHIMP_API_KEY, MAILCHIMP_LIST_ID, start_emulator
from tests.dags.warehouses import make_warehouse

pytestmark = pytest.mark.dagrun

LIST = MAILCHIMP_LIST_ID
BATCH = f"POST /3.0/lists/{LIST}"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""


def people(n: int) -> list[tuple[str, str, str, str]]:
    # Not example.com: Mailchimp refuses reserved domains as fake.
    return [(f"user{i}@acme.io", f"First{i}", f"Last{i}", f"Company {i % 7}") for i in range(n)]


def fill(warehouse, rows: list[tuple]) -> None:
    """Create the customers table with ``rows``, 200 rows a statement (one connection per statement)."""
    warehouse.create([])
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
        warehouse.execute(f"insert into {{table}} values {values}", [v for row in chunk for v in row])


@pytest.fixture
def mailchimp(set_connection):
    with start_emulator("mailchimp", merge_fields=[{"tag": "COMPANY", "type": "text"}]) as running:
        set_connection("mailchimp_test", "retl_mailchimp", host=running.url, password=MAILCHIMP_API_KEY,
                       extra={"max_retries": 1})
        yield running


class Sync:
    """One DAG with one sync task; ``run(**overrides)`` rewrites the task's arguments."""

    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"mailchimp_{uuid.uuid4().hex[:10]}"
        self.kwargs = {
            "conn_id": warehouse.conn_id,
            # Aliases name the destination fields: fname/lname/company are merge tags of the audience.
            "sql": f"select email as email_address, firstname as fname, lastname as lname, company from {warehouse.table}",
            "destination_conn_id": "mailchimp_test",
            "object": LIST,
            "primary_key": "email_address",
            "checkpoint": "variable",
            **kwargs,
        }

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def audience(mailchimp) -> dict[str, dict]:
    return {m["email_address"]: m for m in mailchimp.emulator.members(LIST)}


def assert_audience_equals_source(mailchimp, warehouse):
    members = audience(mailchimp)
    source = warehouse.rows()
    assert sorted(members) == sorted(source)
    for email, row in source.items():
        merge = members[email]["merge_fields"]
        assert (merge["FNAME"], merge["LNAME"], merge["COMPANY"]) == (row["firstname"], row["lastname"], row["company"])
        assert members[email]["status"] == "subscribed"


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_first_noop_changed_and_mirror_runs(dag_runner, mailchimp, tmp_path, set_connection, kind):
    warehouse = make_warehouse(kind, tmp_path, set_connection)
    fill(warehouse, people(1200))
    sync = Sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["created"] == 1200 and report["rejected"] == 0
    assert report["requests"] == 1 + 3  # the audience's merge fields, then 1200 members in calls of 500
    assert mailchimp.emulator.request_count(BATCH) == 3
    assert_audience_equals_source(mailchimp, warehouse)

    before = mailchimp.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 1200
    assert report["pushed"] == 0 and report["requests"] == 0
    assert mailchimp.emulator.request_count() == before

    warehouse.execute("update {table} set company = 'Changed' where email in (?, ?, ?)",
                      ["user3@acme.io", "user500@acme.io", "user1199@acme.io"])
    result, report = sync.run()
    assert result.succeeded
    assert report["planned"]["changed"] == 3 and report["updated"] == 3 and report["plan"] == {"update": 3}
    # Merge fields, the 3 members' current status (batch members need ``status`` and it is applied to
    # existing members, so an unsubscribed member must be sent "unsubscribed"), then one batch of 3.
    assert mailchimp.emulator.request_count() == before + 1 + 3 + 1
    assert mailchimp.emulator.request_count(BATCH) == 4
    assert_audience_equals_source(mailchimp, warehouse)

    warehouse.execute("delete from {table} where email = ?", ["user7@acme.io"])
    result, report = sync.run(mode="mirror")
    assert result.succeeded and report["deleted"] == 1 and report["requests"] == 1
    assert mailchimp.emulator.member(LIST, "user7@acme.io")["status"] == "archived"
    assert_audience_equals_source(mailchimp, warehouse)


def test_rejects_are_reported_with_keys_and_reasons_and_retried_next_run(dag_runner, mailchimp, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(people(5))
    warehouse.insert([("not-an-email", "x", "y", "z"), ("someone@example.com", "F", "A", "K"), (None, "no", "key", "")])
    mailchimp.emulator.seed(LIST, [{"email_address": "user4@acme.io", "status": "unsubscribed"}])
    sync = Sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    rejects = {r["key"]: r for r in report["rejects"]}
    assert rejects["not-an-email"]["stage"] == "validation" and "invalid email" in rejects["not-an-email"]["reason"]
    fake = rejects["someone@example.com"]
    assert fake["stage"] == "destination" and fake["code"] == "ERROR_GENERIC"
    assert fake["reason"] == "someone@example.com looks fake or invalid, please enter a real email address."
    assert rejects["NULL"]["stage"] == "source"
    assert report["created"] == 4 and report["updated"] == 1 and report["rejected"] == 3
    # The member who unsubscribed got the new data and kept the status.
    assert mailchimp.emulator.member(LIST, "user4@acme.io")["status"] == "unsubscribed"
    assert mailchimp.emulator.member(LIST, "user4@acme.io")["merge_fields"]["FNAME"] == "First4"

    # Rejected rows were not checkpointed: the next run tries them again.
    result, report = sync.run()
    assert result.succeeded and report["planned"]["new"] == 2 and report["unchanged"] == 5
    assert {r["key"] for r in report["rejects"]} == {"not-an-email", "someone@example.com", "NULL"}


def test_failed_try_then_retry_resumes_without_duplicates(dag_runner, mailchimp, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    fill(warehouse, people(1200))
    sync = Sync(dag_runner, warehouse, destination_params={"max_concurrency": 1})
    # The merge fields and the first batch of 500 pass; the second batch fails twice (max_retries=1).
    mailchimp.faults.fail_next(2, "error", after=2)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    # Try 2 sent only what try 1 had not delivered (the batch queued behind the failing one may have landed).
    assert report["unchanged"] in (500, 700) and report["created"] == 1200 - report["unchanged"]
    assert mailchimp.emulator.request_count(BATCH) == 1 + 2 + 2
    emails = [m["email_address"] for m in mailchimp.emulator.members(LIST)]
    assert len(emails) == len(set(emails)) == 1200
    assert_audience_equals_source(mailchimp, warehouse)


def test_insert_mode_looks_members_up_and_never_updates(dag_runner, mailchimp, tmp_path, set_connection):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(people(6))
    mailchimp.emulator.seed(LIST, [{"email_address": "user0@acme.io", "merge_fields": {"FNAME": "Old"}}])
    result, report = Sync(dag_runner, warehouse, mode="insert").run()
    assert result.succeeded, result
    assert report["created"] == 5 and report["updated"] == 0
    assert report["skipped"] == {"insert mode: record already exists": 1}
    assert mailchimp.emulator.member(LIST, "user0@acme.io")["merge_fields"]["FNAME"] == "Old"
    # No batch lookup in Mailchimp: one GET per address, only because insert mode must not update.
    assert sum(1 for r in mailchimp.emulator.requests if r.method == "GET" and "/members/" in r.path) == 6


def test_the_api_key_is_in_no_report_or_xcom(dag_runner, mailchimp, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(people(3))
    bad_key = "0badc0ffee0badc0ffee0badc0ffee00-us6"
    set_connection("mailchimp_test", "retl_mailchimp", host=mailchimp.url, password=bad_key)
    result, _ = Sync(dag_runner, warehouse).run(retries=1)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # auth errors are not retried
    assert bad_key not in repr(task.xcoms)
    assert audience(mailchimp) == {}
