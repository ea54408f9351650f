"""A tripped guardrail mails an alert through the SMTP provider's notifier (real dag.test() runs).

The task's ``on_failure_callback`` is ``SyncAlert(SmtpNotifier(...))``; the mail goes over real
SMTP to a server the test runs on 127.0.0.1 (``tests/smtp_sink.py``), and must carry the sync
report's summary and the guardrail's message, and none of the connection's secrets.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.dagrun

SECRET = "whsec-alert-9f3b2c"

DAG_TEMPLATE = """
import datetime as dt
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG
from airflow_provider_retl.notifications import SyncAlert
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(
        task_id="sync",
        retries=2,
        retry_delay=dt.timedelta(seconds=0),
        on_failure_callback=SyncAlert(SmtpNotifier(to="ops@example.com", smtp_conn_id="alerts_smtp")),
        **{kwargs!r},
    )
"""


def test_a_tripped_guardrail_mails_the_summary_and_the_reason_without_secrets(dag_runner, tmp_path, set_connection):
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(60))
    with SmtpSink() as sink, start_emulator("webhook", secret=SECRET) as receiver:
        set_connection(
            "alerts_smtp",
            "smtp",
            host="127.0.0.1",
            port=sink.port,
            extra={"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com", "retry_limit": 0},
        )
        # The webhook's path and password are secrets of the destination connection.
        set_connection("alert_hook", "retl_webhook", host=f"{receiver.url}/hooks/{SECRET}", password=SECRET)
        dag_id = f"alert_{uuid.uuid4().hex[:10]}"
        kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": warehouse.sql,
            "destination_conn_id": "alert_hook",
            "object": "customers",
            "primary_key": "email",
            "mode": "mirror",
            "checkpoint": "variable",
        }
        text = DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs)
        result = dag_runner.run_dag(text, dag_id)
        assert result.succeeded, result
        assert sink.messages == []  # no failure, no mail
        sent = receiver.emulator.request_count()

        warehouse.execute("delete from {table} where email not in (" + ",".join(["?"] * 20) + ")",
                          [f"user{i}@example.com" for i in range(20)])
        result = dag_runner.run_dag(text, dag_id)
        task = result.task("sync")
        assert result.state == "failed" and task.try_number == 1  # a guardrail is not retried
        assert receiver.emulator.request_count() == sent  # nothing sent
        assert task.xcoms["sync_report"]["planned"]["removed"] == 40  # the report is kept for the alert

        assert len(sink.messages) == 1
        message = sink.messages[0]
        assert message["To"] == "ops@example.com" and message["From"] == "airflow@example.com"
        assert "stopped by a guardrail" in message["Subject"] and dag_id in message["Subject"]
        body = sink.bodies()[0]
        # The guardrail's message: what it saw and how to override it once.
        assert "mirror would delete 40 of 60 synced records" in body and "retl_override_guardrails" in body
        # The report's summary.
        assert f"sync {dag_id}.sync -&gt; customers (mirror):" in body
        assert "read 20 rows: 0 new, 0 changed, 40 removed, 20 unchanged" in body
        assert SECRET not in body and SECRET.encode() not in b"".join(sink.raw)
