"""Guardrails with an e-mail alert: a sync that stops before sending when its plan looks wrong, and says so.

The sync mirrors the demo's customers into the webhook with explicit guardrails. When one
trips (mirror would delete more than 20% of the synced records or more than 500 of them, the
query returns less than half the keys it used to, or more than 10% of the rows are rejected
before sending), the task fails at once, sends nothing, and ``SyncAlert`` mails the sync
report's summary and the guardrail's message (what it saw, how to override it once) through
the SMTP provider's ``SmtpNotifier``.

The SMTP connection ``retl_alerts_smtp`` points at a mail server on this machine, so the DAG
parses and runs without a real one; ``make airflow`` defines it so (any local SMTP debugging
server on port 1025 receives the mails); elsewhere, e.g.::

    export AIRFLOW_CONN_RETL_ALERTS_SMTP='{"conn_type": "smtp", "host": "127.0.0.1", "port": 1025,
        "extra": {"disable_ssl": true, "disable_tls": true, "from_email": "airflow@localhost"}}'

Point it at your mail relay (and set ``to``) for real alerts. Without a reachable server the
alert fails and is logged; the task's failure is unchanged. To let one run through a guardrail,
trigger the DAG with the conf ``{"retl_override_guardrails": ["retl_guardrail_alerts.customers_to_webhook"]}``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG

from airflow_provider_retl.notifications import SyncAlert
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(
    dag_id="retl_guardrail_alerts",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    template_searchpath=[str(Path(__file__).parent)],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
    tags=["reverse-etl", "demo", "guardrails"],
) as dag:
    ReverseETLOperator(
        task_id="customers_to_webhook",
        conn_id="warehouse",
        sql="sql/customers_webhook.sql",
        destination_conn_id="webhook_default",
        object="customers",
        primary_key="customer_id",
        mode="mirror",
        checkpoint="variable",
        history="conn:retl_history",  # run history and row changelog (the warehouse is opened read-only)
        max_delete_ratio=0.2,
        max_deletes=500,
        min_source_ratio=0.5,
        max_reject_ratio=0.1,
        max_reject_ratio_before_send=0.1,  # this sync sends nothing when >10% of rows fail validation
        # Guardrails are not retried (a retry would see the same data); the alert goes out on the failure.
        on_failure_callback=SyncAlert(
            SmtpNotifier(to="data-team@example.com", from_email="airflow@localhost", smtp_conn_id="retl_alerts_smtp")
        ),
    )
