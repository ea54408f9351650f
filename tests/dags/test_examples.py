"""The example DAGs in ``dags/``: they import cleanly, and both shop examples run end to end.

``shop_dbt_to_apps`` runs with ``dag.test()``: cosmos runs ``dbt build`` of ``dags/dbt/shop``
(dbt from ``.venv-dbt``, offline) into a DuckDB file, then every sync pushes the models into
the emulators. Each emulator must then hold exactly what the models say, and a second run
must send nothing (no duplicate event, no request at all to the destinations).

``shop_assets.py`` runs the same way in two DAGs: ``shop_dbt_build`` (one cosmos task per
seed and model) must update the ``customer_traits`` Asset and queue ``shop_syncs_on_asset``,
which then fills the emulators just as the one-DAG example does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
DBT = Path(os.environ.get("RETL_DBT_EXECUTABLE") or ROOT / ".venv-dbt" / "bin" / "dbt")
HELPER = "shop_example.py"

SYNC_TASKS = [
    ("sales.usage_to_hubspot", 0),
    ("sales.usage_to_hubspot", 1),
    ("sales.contacts_to_salesforce", -1),
    ("marketing.traits_to_mailchimp", -1),
    ("marketing.repurchase_events_to_customerio", -1),
    ("support.users_to_zendesk", -1),
]


def test_every_dag_file_imports_without_errors(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.syspath_prepend(str(DAGS))  # Airflow puts the dags folder on sys.path; DagBag alone does not
    bag = DagBag(dag_folder=DAGS, safe_mode=False)
    assert bag.import_errors == {}
    assert {"retl_demo", "shop_dbt_to_apps", "shop_dbt_build", "shop_syncs_on_asset"} <= set(bag.dag_ids)
    for dag in bag.dags.values():
        for t in dag.tasks:
            if t.task_type in ("ReverseETLOperator", "_ReverseETLOperator") or "sync" in t.task_id:
                assert t.retries >= 1
    # The asset-scheduled DAG runs when dbt has updated customer_traits.
    consumer = bag.get_dag("shop_syncs_on_asset")
    producer = bag.get_dag("shop_dbt_build")
    outlets = {a.uri for t in producer.tasks for a in t.outlets}
    assert "duckdb://warehouse/main/customer_traits" in outlets
    assert [a.uri for a in consumer.timetable.asset_condition.objects] == ["duckdb://warehouse/main/customer_traits"]


def test_sync_tasks_retry_with_backoff_in_a_pool_per_account(monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))
    import shop_example

    from airflow.sdk import DAG

    with DAG("pools_check", schedule=None, default_args=shop_example.DEFAULT_ARGS) as dag:
        shop_example.sales_syncs()
        shop_example.marketing_syncs()
        shop_example.support_syncs()
    pools = {}
    for t in dag.tasks:
        assert t.retries == 3 and t.retry_exponential_backoff == 2.0, t.task_id
        pools[t.task_id] = t.pool
    assert pools["sales.usage_to_hubspot"] == "retl_hubspot_default"
    assert pools["support.users_to_zendesk"] == "retl_zendesk_default"
    assert len(set(pools.values())) == 5


@pytest.fixture
def example_env(tmp_path, monkeypatch):
    from airflow_provider_retl.testing import example_stack

    if not DBT.exists():
        pytest.fail(f"no dbt at {DBT}; `make .venv-dbt/.retl-installed` installs it", pytrace=False)
    running = example_stack.start_example_emulators()
    warehouse = tmp_path / "shop.duckdb"
    urls = {kind: emulator.url for kind, emulator in running.items()}
    for name, value in example_stack.connection_env(
        urls, warehouse_path=str(warehouse), history_path=str(tmp_path / "retl_history.sqlite")
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETL_DBT_PROJECT_DIR", str(DAGS / "dbt" / "shop"))
    monkeypatch.setenv("RETL_DBT_EXECUTABLE", str(DBT))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    # The DAG imports its sibling module: put it beside the DAG file in the test dags folder.
    from airflow_harness import dags_folder

    helper = dags_folder() / HELPER
    shutil.copy(DAGS / HELPER, helper)
    monkeypatch.syspath_prepend(str(dags_folder()))
    sys.modules.pop("shop_example", None)
    try:
        yield running, warehouse
    finally:
        helper.unlink(missing_ok=True)
        sys.modules.pop("shop_example", None)
        example_stack.stop_all(running)


def query(warehouse: Path, sql: str) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_shop_example_runs_end_to_end_and_reruns_send_nothing(dag_runner, example_env):
    running, warehouse = example_env
    result = dag_runner.run_dag(DAGS / "shop_dbt_to_apps.py", "shop_dbt_to_apps")
    assert result.succeeded, result
    assert all(t.state == "success" for t in result.tasks.values()), result
    events = assert_destinations_hold_the_models(result, running, warehouse)

    # Run again: dbt rebuilds the same models, and no sync sends anything.
    before = {kind: emulator.emulator.request_count() for kind, emulator in running.items()}
    again = dag_runner.run_dag(DAGS / "shop_dbt_to_apps.py", "shop_dbt_to_apps")
    assert again.succeeded, again
    for task_id, map_index in SYNC_TASKS:
        report = again.return_value(task_id, map_index)
        assert report["requests"] == 0, (task_id, report)
    assert {kind: emulator.emulator.request_count() for kind, emulator in running.items()} == before
    cio = running["customerio"].emulator
    assert sorted(e["attributes"]["event_key"] for e in cio.events(include_duplicates=True)) == sorted(events)
    # Every sync try of both runs is in the examples' history database (the warehouse is read-only).
    import sqlite3

    history = sqlite3.connect(warehouse.parent / "retl_history.sqlite")
    try:
        tries = history.execute("select run_id, state from retl_runs").fetchall()
        changelog = history.execute("select count(*) from retl_changes where status = 'ok'").fetchone()[0]
    finally:
        history.close()
    assert sorted({r for r, _ in tries}) == sorted({result.run_id, again.run_id})
    assert len(tries) == 2 * len(SYNC_TASKS) and {s for _, s in tries} == {"success"}
    assert changelog >= sum(result.return_value(t, m)["pushed"] for t, m in SYNC_TASKS) > 0
    assert report.get("history", {}).get("conn_id") == "retl_history"


def test_asset_scheduled_syncs_run_after_the_dbt_dag_updates_the_asset(dag_runner, example_env):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    running, warehouse = example_env
    uri = "duckdb://warehouse/main/customer_traits"
    build = dag_runner.run_dag(DAGS / "shop_assets.py", "shop_dbt_build")
    assert build.succeeded, build
    dbt_tasks = {task_id for task_id, _ in build.tasks if task_id.startswith("dbt.")}
    assert len(dbt_tasks) == 6, sorted(build.tasks)  # one per seed (3) and model (3), each built and tested
    assert all(t.state == "success" for t in build.tasks.values()), build
    assert all(r.emulator.request_count() == 0 for r in running.values())  # nothing synced yet

    with create_session() as session:
        events = session.execute(
            select(AssetEvent.source_dag_id, AssetEvent.source_task_id, AssetEvent.source_run_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri)
        ).all()
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id)
            .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)
            .where(AssetModel.uri == uri)
        ).all()
    assert ("shop_dbt_build", "models_ready", build.run_id) in events, events
    assert "shop_syncs_on_asset" in queued  # the scheduler would start the sync DAG now

    # What the scheduler would start: the sync DAG, on the warehouse dbt just built.
    syncs = dag_runner.run_dag(DAGS / "shop_assets.py", "shop_syncs_on_asset")
    assert syncs.succeeded, syncs
    assert {task_id for task_id, _ in syncs.tasks} == {task_id for task_id, _ in SYNC_TASKS}, sorted(syncs.tasks)
    assert all(t.state == "success" for t in syncs.tasks.values()), syncs
    assert_destinations_hold_the_models(syncs, running, warehouse)


def assert_destinations_hold_the_models(result, running, warehouse: Path) -> set[str]:
    """Every sync of ``result`` sent all its rows, and every emulator holds exactly its dbt model.

    Returns the keys of the Customer.io events the model holds.
    """
    traits = {
        r[0]: r
        for r in query(warehouse, "select email, customer_id, plan, phone, preferred_language from customer_traits")
    }
    assert len(traits) == 40
    event_people = dict(query(warehouse, "select event_key, customer_id from repurchase_events"))
    events = set(event_people)
    assert 5 <= len(events) < 40  # deterministic: the as-of date is fixed in dbt_project.yml

    for task_id, map_index in SYNC_TASKS:
        report = result.return_value(task_id, map_index)
        assert report["rejected"] == 0, (task_id, report["rejects"][:3])
        assert report["rows_read"] > 0 and report["pushed"] == report["rows_read"], (task_id, report)

    hubspot = running["hubspot"].emulator
    contacts = {r["properties"]["email"]: r["properties"] for r in hubspot.records("contacts")}
    assert sorted(contacts) == sorted(traits)
    assert {r["properties"]["domain"] for r in hubspot.records("companies")} == {
        r[0] for r in query(warehouse, "select domain from company_usage")
    }
    sf_contacts = {r["External_Id__c"]: r for r in running["salesforce"].emulator.records("Contact")}
    assert sorted(sf_contacts) == sorted(r[1] for r in traits.values())

    members = {m["email_address"]: m for m in running["mailchimp"].emulator.members()}
    assert sorted(members) == sorted(traits)
    assert all(members[e]["language"] == traits[e][4] for e in members)

    cio = running["customerio"].emulator
    assert sorted(e["attributes"]["event_key"] for e in cio.events()) == sorted(events)
    assert {e["name"] for e in cio.events()} == {"repurchase_due"}
    # Each event happened to its customer (the person column), never to a person named after its key.
    assert {e["attributes"]["event_key"]: e["identifiers"] for e in cio.events()} == {
        k: {"id": c} for k, c in event_people.items()
    }
    people = {p["cio_id"]: p["id"] for p in cio.people()}
    assert all(people[e["person"]] == event_people[e["attributes"]["event_key"]] for e in cio.events())
    assert not set(people.values()) & events  # no person was created under an event key

    users = {u["external_id"]: u for u in running["zendesk"].emulator.users()}
    by_id = {r[1]: r for r in traits.values()}
    assert sorted(users) == sorted(by_id)
    assert all(users[i]["user_fields"]["plan"] == by_id[i][2] for i in users)
    return events
