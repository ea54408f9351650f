"""The demo sync DAG: a warehouse table pushed to HubSpot contacts and to a webhook.

`make demo` runs it three times against local emulators: a first run that creates every
record, a no-op run that sends nothing, and a run after a few rows changed. `make airflow`
creates its table and connections too (``demo/demo_data.py``), so it runs there from the
Trigger button.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(
    dag_id="retl_demo",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    template_searchpath=[str(Path(__file__).parent)],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=1), "retry_exponential_backoff": 2.0},
    tags=["reverse-etl", "demo"],
) as dag:
    contacts_to_hubspot = ReverseETLOperator(
        task_id="contacts_to_hubspot",
        conn_id="demo_warehouse",
        sql="sql/contacts.sql",
        destination_conn_id="hubspot_default",
        object="contacts",
        primary_key="email",
        mode="upsert",
        checkpoint="variable",
        history="conn:retl_history",  # run history and row changelog (the warehouse is opened read-only)
        max_reject_ratio=0.2,
    )
    customers_to_webhook = ReverseETLOperator(
        task_id="customers_to_webhook",
        conn_id="demo_warehouse",
        sql="sql/customers_webhook.sql",
        destination_conn_id="webhook_default",
        object="customers",
        primary_key="customer_id",
        mode="mirror",
        checkpoint="xcom",
        history="conn:retl_history",
    )
