"""The shop example in one DAG: ``dbt build``, then every sync that reads its models.

    dbt_build (cosmos: one `dbt build` of dags/dbt/shop: seeds, models, tests)
      -> sales:     usage_to_hubspot[contacts, companies], contacts_to_salesforce
      -> marketing: traits_to_mailchimp, repurchase_events_to_customerio (exactly once)
      -> support:   users_to_zendesk

Each sync sends only what changed since its last successful run, retries with exponential
backoff, and runs in the pool of its destination account. ``make airflow`` runs it against
local emulators; ``tests/dags/test_examples.py`` runs it end to end with ``dag.test()``.
"""

from __future__ import annotations

from airflow.sdk import DAG
from shop_example import DEFAULT_ARGS, START_DATE, dbt_build, marketing_syncs, sales_syncs, support_syncs

with DAG(
    dag_id="shop_dbt_to_apps",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["reverse-etl", "example", "dbt"],
    doc_md=__doc__,
) as dag:
    dbt_build() >> [sales_syncs(), marketing_syncs(), support_syncs()]
