"""Real ``dag.test()`` runs of the operator for the identity guarantees.

* Events once in the life of a sync: moving a Customer.io events sync from one partition to
  two and back (Variable checkpoints) sends only the new events, each once.
* A replaced identity stops before sending: a new key scheme in a mirror sync fails
  the task at once (no retries), and ``allow_identity_change=True`` lets it go ahead
  without archiving the companies the new keys are looked up onto.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from airflow_provider_retl.testing.emulators import CUSTOMERIO_API_KEY, CUSTOMERIO_SITE_ID, start_emulator
from tests.dags.warehouses import make_warehouse

pytestmark = pytest.mark.dagrun

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl import ReverseETLOperator, partitions

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    {task}
"""
SINGLE = 'ReverseETLOperator(task_id="sync", retries=2, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})'
SPLIT = 'ReverseETLOperator.partial(task_id="sync", **{kwargs!r}).expand(partition=partitions({n}))'


def dag_text(dag_id: str, kwargs: dict, n: int | None = None) -> str:
    task = SINGLE.format(kwargs=kwargs) if n is None else SPLIT.format(kwargs=kwargs, n=n)
    return DAG_TEMPLATE.format(dag_id=dag_id, task=task)


def test_repartitioning_an_events_sync_sends_no_event_twice(dag_runner, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.execute("create table orders (event_key varchar, id varchar, amount integer)")

    def add_orders(start: int, stop: int) -> None:
        warehouse.execute(
            "insert into orders select 'o' || cast(i as varchar), 'p' || cast(i % 5 as varchar), i from range(?, ?) t(i)",
            [start, stop],
        )

    with start_emulator("customerio", rate_limit=None) as cio:
        set_connection(
            "cio_parts",
            "retl_customerio",
            host=cio.url,
            login=CUSTOMERIO_SITE_ID,
            password=CUSTOMERIO_API_KEY,
            extra={"max_retries": 1},
        )
        dag_id = f"events_parts_{uuid.uuid4().hex[:8]}"
        kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": "select event_key, id, amount from orders",
            "destination_conn_id": "cio_parts",
            "object": "events",
            "primary_key": "event_key",
            "mode": "insert",
            "event_name": "ordered",
            "checkpoint": "variable",
            "sync_name": dag_id,
        }

        def sent() -> Counter:
            return Counter(e["attributes"]["event_key"] for e in cio.emulator.events(include_duplicates=True))

        add_orders(0, 30)
        result = dag_runner.run_dag(dag_text(dag_id, kwargs), dag_id)
        assert result.succeeded, result
        assert len(sent()) == 30 and max(sent().values()) == 1

        add_orders(30, 40)
        result = dag_runner.run_dag(dag_text(dag_id, kwargs, n=2), dag_id)
        assert result.succeeded, result
        assert sum(result.return_value("sync", i)["events"] for i in range(2)) == 10
        assert len(sent()) == 40 and max(sent().values()) == 1  # nothing re-sent, not even a deduplicated copy

        add_orders(40, 45)
        result = dag_runner.run_dag(dag_text(dag_id, kwargs), dag_id)
        assert result.succeeded, result
        assert result.return_value("sync")["events"] == 5
        assert len(sent()) == 45 and max(sent().values()) == 1


def test_a_replaced_key_fails_the_task_before_sending(dag_runner, tmp_path, set_connection):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.execute("create table accounts (id integer, domain varchar, name varchar)")
    warehouse.execute(
        "insert into accounts select i, 'd' || cast(i as varchar) || '.example.com', 'Co ' || cast(i as varchar) "
        "from range(20) t(i)"
    )
    with start_emulator("hubspot", tokens=["pat-identity-1"], rate_limit=None) as hubspot:
        set_connection(
            "hubspot_identity", "retl_hubspot", host=hubspot.url, password="pat-identity-1", extra={"max_retries": 1}
        )
        dag_id = f"identity_{uuid.uuid4().hex[:8]}"
        kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": "select id, domain, name from accounts",
            "destination_conn_id": "hubspot_identity",
            "object": "companies",
            "primary_key": "id",
            "match_on": "domain",
            "mapping": {"domain": "domain", "name": "name"},
            "mode": "mirror",
        }
        result = dag_runner.run_dag(dag_text(dag_id, kwargs), dag_id)
        assert result.succeeded, result
        before = hubspot.emulator.records("companies")
        requests = hubspot.emulator.request_count()

        # The key is now computed differently (a new id scheme): every key "removed", every key "new".
        rekeyed = {**kwargs, "sql": "select 'acct-' || cast(id as varchar) as id, domain, name from accounts"}
        result = dag_runner.run_dag(dag_text(dag_id, rekeyed), dag_id)
        task = result.task("sync")
        assert task.state == "failed" and len(task.tries) == 1  # refused, not retried
        assert hubspot.emulator.records("companies") == before
        assert hubspot.emulator.request_count() == requests  # nothing sent, not even a lookup

        result = dag_runner.run_dag(dag_text(dag_id, {**rekeyed, "allow_identity_change": True}), dag_id)
        assert result.succeeded, result
        assert result.return_value("sync")["deleted"] == 0
        companies = hubspot.emulator.records("companies", include_archived=True)
        assert not any(c["archived"] for c in companies) and len(companies) == 20
