"""Building blocks of the shop example DAGs: the dbt project and the syncs that follow it.

``shop_dbt_to_apps.py`` chains them in one DAG; ``shop_assets.py`` splits them into a dbt
DAG that updates an Asset and a sync DAG scheduled on that Asset. Both read the
``warehouse`` DuckDB connection (its host is the database file dbt builds) and push to the
``*_default`` destination connections (``make airflow`` points them at local emulators).

Settings (environment): ``RETL_DBT_PROJECT_DIR`` (default ``dags/dbt/shop`` beside this
file) and ``RETL_DBT_EXECUTABLE`` (default ``dbt`` on PATH, else ``.venv-dbt/bin/dbt``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from airflow.sdk import Asset, TaskGroup

from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

HERE = Path(__file__).resolve().parent
WAREHOUSE_CONN_ID = "warehouse"
#: Every sync's run history and row changelog (the Reverse ETL view's key search reads it): a SQLite
#: database of its own, since the DuckDB warehouse is opened read-only while dbt owns its writes.
HISTORY = "conn:retl_history"

#: Updated when dbt has rebuilt the models the syncs read.
CUSTOMER_TRAITS = Asset("duckdb://warehouse/main/customer_traits", group="shop")

#: Each sync task runs in the pool of its destination account, so two DAGs never exceed
#: one account's API limits together. ``make airflow`` creates these pools.
POOLS = {
    "hubspot_default": "retl_hubspot_default",
    "salesforce_default": "retl_salesforce_default",
    "mailchimp_default": "retl_mailchimp_default",
    "customerio_default": "retl_customerio_default",
    "zendesk_default": "retl_zendesk_default",
}

#: Retry a failed sync (429 storms, 5xx, a lost answer) after 10 s, 20 s, 40 s; the retry resumes.
DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=5),
}

#: The Mailchimp audience (list id) of the marketing sync; the emulator's default audience by default.
MAILCHIMP_AUDIENCE = os.environ.get("RETL_MAILCHIMP_AUDIENCE", "a1b2c3d4e5")

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def dbt_project_dir() -> Path:
    return Path(os.environ.get("RETL_DBT_PROJECT_DIR") or HERE / "dbt" / "shop")


def dbt_executable() -> str:
    return (
        os.environ.get("RETL_DBT_EXECUTABLE")
        or shutil.which("dbt")
        or str(HERE.parent / ".venv-dbt" / "bin" / "dbt")
    )


def _profile_config():
    from cosmos import ProfileConfig
    from cosmos.profiles import DuckDBUserPasswordProfileMapping

    return ProfileConfig(
        profile_name="shop",
        target_name="airflow",
        # The duckdb connection's host is the database file: dbt writes what the syncs read.
        profile_mapping=DuckDBUserPasswordProfileMapping(conn_id=WAREHOUSE_CONN_ID, profile_args={"threads": 1}),
    )


def dbt_build(task_id: str = "dbt_build"):
    """One ``dbt build`` of the shop project (seeds, models, tests) as one cosmos task.

    One dbt process for the whole project: the fastest way through a small project, and the
    only writer of the DuckDB file while it runs.
    """
    from cosmos.operators.local import DbtBuildLocalOperator

    return DbtBuildLocalOperator(
        task_id=task_id,
        project_dir=str(dbt_project_dir()),
        profile_config=_profile_config(),
        dbt_executable_path=dbt_executable(),
        install_deps=False,
        emit_datasets=False,
        retries=1,
        retry_delay=dt.timedelta(seconds=5),
    )


def dbt_task_group(group_id: str = "dbt"):
    """The shop project as a cosmos task group: one ``dbt build --select <node>`` task per seed and model.

    Each node is retried and shown on its own; each task starts its own dbt process (seconds
    each), so this suits projects whose nodes take longer than dbt's start-up.
    """
    from cosmos import DbtTaskGroup, ExecutionConfig, ProjectConfig, RenderConfig
    from cosmos.constants import LoadMode, TestBehavior

    return DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_dir(), install_dbt_deps=False),
        profile_config=_profile_config(),
        execution_config=ExecutionConfig(dbt_executable_path=dbt_executable()),
        # Parse the project files at DAG parse time (no dbt call); test each model with its build.
        render_config=RenderConfig(load_method=LoadMode.CUSTOM, test_behavior=TestBehavior.BUILD,
                                   emit_datasets=False),
        operator_args={"install_deps": False},
        default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=5)},
    )


def sync(task_id: str, destination_conn_id: str, **kwargs) -> ReverseETLOperator:
    return ReverseETLOperator(
        task_id=task_id,
        conn_id=WAREHOUSE_CONN_ID,
        destination_conn_id=destination_conn_id,
        pool=POOLS[destination_conn_id],
        history=HISTORY,
        **kwargs,
    )


def sales_syncs() -> TaskGroup:
    """Product usage to the CRMs: HubSpot contacts and companies (one mapped task), Salesforce Contacts."""
    with TaskGroup("sales") as group:
        # One operator, mapped over two HubSpot objects; each map index keeps its own checkpoint.
        ReverseETLOperator.partial(
            task_id="usage_to_hubspot",
            conn_id=WAREHOUSE_CONN_ID,
            destination_conn_id="hubspot_default",
            pool=POOLS["hubspot_default"],
            max_reject_ratio=0.1,
            history=HISTORY,
        ).expand_kwargs(
            [
                {
                    "object": "contacts",
                    "primary_key": "email",
                    "sync_name": "shop.hubspot.contacts",
                    "sql": "select email, first_name as firstname, last_name as lastname, company_name as company, "
                    "phone, plan, lifetime_value, orders_count, logins_count, reports_count from customer_traits",
                },
                {
                    "object": "companies",
                    "primary_key": "domain",
                    "sync_name": "shop.hubspot.companies",
                    "sql": "select domain, name, customers_count, lifetime_value, logins_count, reports_count, "
                    "exports_count from company_usage",
                },
            ]
        )
        sync(
            "contacts_to_salesforce",
            "salesforce_default",
            object="Contact",
            primary_key="External_Id__c",
            sql='select customer_id as "External_Id__c", email as "Email", first_name as "FirstName", '
            'last_name as "LastName", phone as "Phone", company_name as "Department" from customer_traits',
        )
    return group


def marketing_syncs() -> TaskGroup:
    """Language and purchase traits to Mailchimp; "repurchase due" events to Customer.io, once each."""
    with TaskGroup("marketing") as group:
        sync(
            "traits_to_mailchimp",
            "mailchimp_default",
            object=MAILCHIMP_AUDIENCE,
            primary_key="email_address",
            sql="select email as email_address, first_name as fname, last_name as lname, "
            "preferred_language as language, lifetime_value as ltv, orders_count as orders, "
            "strftime(last_order_date, '%Y-%m-%d') as lastorder from customer_traits",
        )
        sync(
            "repurchase_events_to_customerio",
            "customerio_default",
            # insert mode + event keys: a re-run or a retry never sends an event twice. The primary
            # key is the event's own key (its Customer.io dedupe id); the person it happens to is
            # the customer_id column, sent as the Customer.io person's id.
            object="events",
            mode="insert",
            primary_key="event_key",
            destination_params={"person_field": "customer_id", "person_identifier": "id"},
            event_name="repurchase_due",
            event_time_field="due_at",
            sql="select event_key, customer_id, due_at, last_order_date, orders_count, lifetime_value "
            "from repurchase_events",
        )
    return group


def support_syncs() -> TaskGroup:
    """Plan and phone to Zendesk users, so agents see them next to every ticket."""
    with TaskGroup("support") as group:
        sync(
            "users_to_zendesk",
            "zendesk_default",
            object="users",
            primary_key="external_id",
            sql="select customer_id as external_id, first_name || ' ' || last_name as name, email, phone, plan "
            "from customer_traits",
        )
    return group
