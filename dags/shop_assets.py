"""The shop example as two DAGs joined by an Asset (data-aware scheduling).

``shop_dbt_build`` rebuilds the dbt models every morning (a cosmos task group: one task
per seed and model, each built and tested on its own) and updates the
``customer_traits`` Asset; ``shop_syncs_on_asset`` is scheduled on that Asset, so the
syncs run whenever (and only when) the models were rebuilt, whoever rebuilt them.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from shop_example import (
    CUSTOMER_TRAITS,
    DEFAULT_ARGS,
    START_DATE,
    dbt_task_group,
    marketing_syncs,
    sales_syncs,
    support_syncs,
)

with DAG(
    dag_id="shop_dbt_build",
    schedule="0 6 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["example", "dbt"],
    doc_md=__doc__,
):

    @task(outlets=[CUSTOMER_TRAITS])
    def models_ready() -> None:
        """Mark the Asset updated once every model and test of the build passed."""

    dbt_task_group() >> models_ready()


with DAG(
    dag_id="shop_syncs_on_asset",
    schedule=[CUSTOMER_TRAITS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["reverse-etl", "example"],
    doc_md=__doc__,
):
    sales_syncs()
    marketing_syncs()
    support_syncs()
