"""Real DAG runs (dag.test()) of ReverseETLOperator: DuckDB -> Zendesk emulator (users).

The emulator runs its bulk jobs in the background, as Zendesk does; the assertions read
its stored users and request log, not only the task's report.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.hooks.zendesk import clear_job_gates
from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import make_warehouse

pytestmark = pytest.mark.dagrun

EMAIL = "agent@example.com"
TOKEN = "zd-dag-token-41c7"
UPSERT = "POST /api/v2/users/create_or_update_many.json"
UPDATE_MANY = "PUT /api/v2/users/update_many.json"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries={retries}, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""

SQL = "select external_id, name, email, phone, plan, tier from people"


@pytest.fixture
def zendesk(set_connection):
    clear_job_gates()
    fields = {"plan": "text", "tier": {"type": "dropdown", "options": ["gold", "silver"]}}
    with start_emulator("zendesk", api_tokens={EMAIL: TOKEN}, user_fields=fields, processing_seconds=0.02,
                        rate_limit=None) as running:
        set_connection("zendesk_test", "retl_zendesk", host=running.url, login=EMAIL, password=TOKEN,
                       extra={"max_retries": 1, "rate_limit": 0, "job_poll_interval": 0.01, "default_region": "US"})
        yield running


@pytest.fixture
def warehouse(tmp_path, set_connection):
    wh = make_warehouse("duckdb", tmp_path, set_connection)
    wh.execute("create table people (external_id text, name text, email text, phone text, plan text, tier text)")
    return wh


def people(wh, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        wh.execute("insert into people values (?, ?, ?, ?, ?, ?)",
                   [f"cust-{i}", f"Person {i}", f"p{i}@example.com", f"(415) 555-{1000 + i:04d}", "basic", "gold"])


class Sync:
    """One DAG with one sync task; ``run(**overrides)`` rewrites the task's arguments."""

    def __init__(self, runner, warehouse, **kwargs):
        self.runner = runner
        self.dag_id = f"zd_{uuid.uuid4().hex[:10]}"
        self.kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": SQL,
            "destination_conn_id": "zendesk_test",
            "object": "users",
            "primary_key": "external_id",
            "checkpoint": "variable",
            **kwargs,
        }

    def run(self, retries: int = 0, **overrides):
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, retries=retries, kwargs={**self.kwargs, **overrides})
        result = self.runner.run_dag(text, self.dag_id)
        return result, result.return_value("sync")


def users_in(zendesk) -> dict[str, dict]:
    return {u["external_id"]: u for u in zendesk.emulator.users()}


def test_first_noop_changed_and_mirror_runs(dag_runner, zendesk, warehouse):
    people(warehouse, 120)
    sync = Sync(dag_runner, warehouse)

    result, report = sync.run()
    assert result.succeeded, result
    assert report["created"] == 120 and report["rejected"] == 0
    assert zendesk.emulator.request_count(UPSERT) == 2  # 100 + 20 per job
    users = users_in(zendesk)
    assert len(users) == 120
    assert users["cust-7"]["phone"] == "+14155551007"  # (415) 555-1007 in E.164 with default_region US
    assert users["cust-7"]["user_fields"] == {"plan": "basic", "tier": "gold"}

    before = zendesk.emulator.request_count()
    result, report = sync.run()
    assert result.succeeded and report["unchanged"] == 120
    assert report["pushed"] == 0 and report["requests"] == 0
    assert zendesk.emulator.request_count() == before

    warehouse.execute("update people set plan = 'pro' where external_id in ('cust-3', 'cust-50', 'cust-119')")
    result, report = sync.run()
    assert result.succeeded and report["planned"]["changed"] == 3 and report["updated"] == 3
    assert zendesk.emulator.request_count(UPDATE_MANY) == 1 and zendesk.emulator.request_count(UPSERT) == 2
    assert {k for k, u in users_in(zendesk).items() if u["user_fields"]["plan"] == "pro"} == {
        "cust-3", "cust-50", "cust-119"}

    # Mirror with mirror_delete=False: the user stays, the synced fields are unset (those the run sent).
    keep = {"mirror_delete": False}
    warehouse.execute("delete from people where external_id = 'cust-9'")
    warehouse.execute("update people set tier = 'silver' where external_id = 'cust-4'")
    result, report = sync.run(mode="mirror", destination_params=keep)
    assert result.succeeded and report["deleted"] == 1 and report["updated"] == 1
    released = users_in(zendesk)["cust-9"]
    assert released["name"] == "Person 9" and released["email"] == "p9@example.com"
    assert released["phone"] is None and released["user_fields"] == {"plan": None, "tier": None}
    assert zendesk.emulator.request_count("DELETE /api/v2/users/destroy_many.json") == 0

    # A run that only removes rows sends nothing, but the engine names the synced fields up front.
    warehouse.execute("delete from people where external_id = 'cust-11'")
    result, report = sync.run(mode="mirror", destination_params=keep)
    assert result.succeeded and report["deleted"] == 1 and report["rejected"] == 0
    assert users_in(zendesk)["cust-11"]["user_fields"] == {"plan": None, "tier": None}
    assert users_in(zendesk)["cust-11"]["phone"] is None

    # Deleting users only when asked for explicitly.
    warehouse.execute("delete from people where external_id = 'cust-10'")
    result, report = sync.run(mode="mirror", destination_params={"mirror_delete": True})
    assert result.succeeded and report["deleted"] == 1
    assert "cust-10" not in users_in(zendesk) and len(users_in(zendesk)) == 119
    assert zendesk.emulator.request_count("DELETE /api/v2/users/destroy_many.json") == 1


def test_rejects_are_reported_with_key_and_reason(dag_runner, zendesk, warehouse):
    people(warehouse, 3)
    for row in [("bad-email", "B", "not-an-email", None, "basic", "gold"),
                ("bad-phone", "P", "p@example.com", "12", "basic", "gold"),
                ("bad-tier", "T", "t@example.com", None, "basic", "platinum"),
                ("cust-1", "Dup", "dup@example.com", None, "basic", "gold")]:
        warehouse.execute("insert into people values (?, ?, ?, ?, ?, ?)", list(row))
    # 5 of 7 rows are rejected on purpose: above the default max_reject_ratio (0.5).
    result, report = Sync(dag_runner, warehouse, max_reject_ratio=1.0).run()
    assert result.succeeded
    reasons = {r["key"]: r for r in report["rejects"]}
    assert "invalid email" in reasons["bad-email"]["reason"] and reasons["bad-email"]["stage"] == "validation"
    assert reasons["bad-phone"]["field"] == "phone" and "invalid phone number '12'" in reasons["bad-phone"]["reason"]
    assert "platinum" in reasons["bad-tier"]["reason"] and reasons["bad-tier"]["field"] == "user_fields.tier"
    assert "duplicate primary key" in reasons["cust-1"]["reason"]
    assert report["created"] == 2 and sorted(users_in(zendesk)) == ["cust-0", "cust-2"]
    assert report["rejected"] == 5  # both rows of the duplicated key


def test_failed_try_then_retry_resumes_without_duplicates(dag_runner, zendesk, warehouse):
    people(warehouse, 450)
    sync = Sync(dag_runner, warehouse, destination_params={"max_concurrency": 1})
    # A few jobs land, then two 500s in a row (max_retries=1) fail try 1 part-way.
    zendesk.faults.fail_next(2, "error", after=8)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert list(result.task("sync").tries) == ["failed", "success"]
    assert zendesk.faults.injected["error"] == 2
    # Try 2 sent only what try 1 had not acknowledged (a job that landed unacknowledged comes back
    # "Updated"): at most the one batch in flight at the failure is sent twice.
    assert report["created"] + report["updated"] + report["unchanged"] == 450
    assert sum(job["total"] for job in zendesk.emulator.jobs()) <= 450 + 100
    ids = [u["external_id"] for u in zendesk.emulator.users()]
    assert len(ids) == len(set(ids)) == 450


def test_lost_create_response_then_reconcile_creates_no_duplicate(dag_runner, zendesk, warehouse):
    people(warehouse, 30)
    sync = Sync(dag_runner, warehouse, mode="insert", destination_params={"max_concurrency": 1})
    # show_many (lookup), user_fields (validation), then the create_many whose answer is lost.
    zendesk.faults.fail_next(1, "lost_response", after=2)
    result, report = sync.run(retries=1)
    assert result.succeeded, result
    assert report["created"] == 30
    assert zendesk.faults.injected["lost_response"] == 1
    ids = [u["external_id"] for u in zendesk.emulator.users()]
    assert len(ids) == len(set(ids)) == 30


def test_secret_token_is_in_no_report_or_xcom(dag_runner, zendesk, warehouse, set_connection):
    people(warehouse, 2)
    set_connection("zendesk_test", "retl_zendesk", host=zendesk.url, login=EMAIL, password="wrong-secret-33ab")
    result, _ = Sync(dag_runner, warehouse).run(retries=1)
    task = result.task("sync")
    assert result.state == "failed" and task.try_number == 1  # 401 is not retried
    assert "wrong-secret-33ab" not in repr(task.xcoms)
