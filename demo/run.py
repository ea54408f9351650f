"""`make demo`: three runs of the example DAG against local emulators, with their reports.

1. a first run creates every contact in HubSpot and every customer behind the webhook;
2. a second run finds nothing changed and sends nothing (zero requests);
3. after a few rows change (and one is deleted, one added), a third run sends exactly those.

Everything is local: a DuckDB warehouse file, the HubSpot and webhook emulators in this
process, and Airflow 3 running the DAG with ``dag.test()`` on a SQLite metadata DB in
``.demo/``. Airflow's own task logs go to ``.demo/logs/run-N.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

import demo_data  # beside this file

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".demo"
WAREHOUSE = STATE / "warehouse.duckdb"
HUBSPOT_TOKEN = "pat-demo-0000-token"


def prepare_environment() -> None:
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "logs").mkdir(parents=True)
    home = STATE / "airflow"
    home.mkdir(parents=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(STATE / "logs"),
            **demo_data.connection_env(demo_data.WAREHOUSE_CONN_ID, demo_data.warehouse_connection(WAREHOUSE)),
        }
    )


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's stdout/stderr (Airflow's task logs) to a file for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dag(dag, number: int) -> dict[str, dict]:
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session
    from sqlalchemy import select

    logical_date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=number)
    with output_to(STATE / "logs" / f"run-{number}.log"):
        dag_run = dag.test(logical_date=logical_date)
    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
        )
        reports = {x.task_id: deserialize(x.value) for x in rows if x.key == "return_value"}
    print(f"DAG run {number}: {dag_run.state}")
    return reports


def main() -> int:
    prepare_environment()
    demo_data.build_warehouse(WAREHOUSE)
    from airflow_provider_retl.sync.records import SyncReport
    from airflow_provider_retl.testing.emulators import start_emulator

    hubspot = start_emulator("hubspot", tokens=[HUBSPOT_TOKEN], rate_limit=190)
    hubspot.emulator.add_property("contacts", {"name": "lifetime_value", "type": "number"})
    webhook = start_emulator("webhook", secret=demo_data.WEBHOOK_SECRET)
    os.environ.update(
        demo_data.connection_env(
            "hubspot_default", {"conn_type": "retl_hubspot", "host": hubspot.url, "password": HUBSPOT_TOKEN}
        )
    )
    os.environ.update(demo_data.connection_env("webhook_default", demo_data.webhook_connection(webhook.url)))
    # The sync history (dags/retl_demo.py: history="conn:retl_history"), beside the warehouse.
    os.environ.update(
        demo_data.connection_env("retl_history", {"conn_type": "sqlite", "host": str(STATE / "retl_history.sqlite")})
    )
    print(f"Warehouse: {WAREHOUSE} ({demo_data.CUSTOMERS} customers)")
    print(f"HubSpot emulator at {hubspot.url}, webhook receiver at {webhook.url}")

    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.db import upgradedb

    with output_to(STATE / "logs" / "migrate.log"):
        upgradedb()
        bag = DagBag(dag_folder=ROOT / "dags" / "retl_demo.py", safe_mode=False)
    dag = bag.get_dag("retl_demo")
    if dag is None:
        print(f"could not load dags/retl_demo.py: {bag.import_errors}")
        return 1

    failed = False
    steps = [
        ("First run: every row is new", None),
        ("Second run: nothing changed, nothing is sent", None),
        ("Third run: 3 rows changed, 1 deleted, 1 added", lambda: demo_data.change_some_rows(WAREHOUSE)),
    ]
    for number, (title, before) in enumerate(steps, start=1):
        if before:
            before()
        print(f"\n=== {title} ===")
        reports = run_dag(dag, number)
        if set(reports) != {"contacts_to_hubspot", "customers_to_webhook"}:
            print(f"  a task did not return a report (see .demo/logs/run-{number}.log); got {sorted(reports)}")
            failed = True
        for task_id, report in sorted(reports.items()):
            print(f"[{task_id}]")
            print(SyncReport.from_dict(report).summary())

    contacts = hubspot.emulator.records("contacts")
    print("\n=== What the destinations hold now ===")
    print(f"HubSpot contacts: {len(contacts)}; requests received: {hubspot.emulator.request_count()}")
    print(f"Webhook customers: {len(webhook.emulator.records())}; deleted ids: {len(webhook.emulator.deleted_ids)}")
    print(f"\nDone in {time.perf_counter() - started:.1f}s. Airflow task logs: {STATE / 'logs'}")
    hubspot.stop()
    webhook.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
