"""Shapes that would lose data silently are errors: duplicate result columns, keys folded unlike the destination.

The real engine with the HubSpot hook and emulator, the real source reader on DuckDB, and one
real ``dag.test()`` run of the operator.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sources import read_query
from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.testing.emulators import start_emulator


def sync(hook, chunks, **kw):
    config = SyncConfig(
        **{"sync_id": "shapes", "object": "contacts", "primary_key": "email", "commit_interval": 0, **kw}
    )
    return run_sync(chunks, hook, MemoryCheckpointStore(), config)


def test_duplicate_columns_in_a_chunk_are_a_configuration_error_naming_them(hook, hubspot):
    frame = pd.DataFrame([["a@example.com", "Ann", "Smith", "x"]], columns=["email", "firstname", "firstname", "y"])
    with pytest.raises(ConfigurationError, match=r"duplicate column names \['firstname'\]"):
        sync(hook, [frame])
    assert hubspot.emulator.records("contacts") == [] and hook.request_count == 0


def test_the_source_reader_refuses_duplicate_columns_instead_of_keeping_the_last(hook, hubspot, monkeypatch):
    from airflow.providers.duckdb.hooks.duckdb import DuckDBHook

    monkeypatch.setenv("AIRFLOW_CONN_RESULT_SHAPES_DUCK", json.dumps({"conn_type": "duckdb", "host": ":memory:"}))
    sql_hook = DuckDBHook(duckdb_conn_id="result_shapes_duck")
    with pytest.raises(ConfigurationError, match=r"\['x'\]"):
        sync(hook, read_query(sql_hook, "select 'a@example.com' as email, 'A' as x, 'B' as x"))
    assert hubspot.emulator.records("contacts") == []


def test_keys_fold_like_the_destination_lower_case_not_casefold(hook, hubspot):
    # casefold() makes "straße" and "strasse" one key; destinations (HubSpot here) keep them apart.
    assert list(fp.fold_case(np.array(["Straße@Example.com", "STRASSE@example.com"], dtype=object))) == [
        "straße@example.com",
        "strasse@example.com",
    ]
    frame = pd.DataFrame(
        {
            "email": ["straße@example.com", "strasse@example.com", "A@example.com", "a@example.com"],
            "firstname": ["Eszett", "Double s", "Upper", "lower"],
        }
    )
    report = sync(hook, [frame], max_reject_ratio=1.0)
    stored = {r["properties"]["email"]: r["properties"]["firstname"] for r in hubspot.emulator.records("contacts")}
    assert stored == {"straße@example.com": "Eszett", "strasse@example.com": "Double s"}
    # Two spellings the destination folds together are duplicate keys: both rejected, naming the key.
    assert sorted((r.key, "duplicate primary key" in r.reason) for r in report.rejects) == [
        ("a@example.com", True),
        ("a@example.com", True),
    ]


DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=2, **{kwargs!r})
"""


def test_a_dag_with_duplicate_result_columns_fails_at_once_and_sends_nothing(dag_runner, tmp_path, set_connection):
    from tests.dags.warehouses import customers, make_warehouse

    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    with start_emulator("hubspot", tokens=["pat-shapes-1"], rate_limit=None) as running:
        set_connection("hubspot_shapes", "retl_hubspot", host=running.url, password="pat-shapes-1")
        dag_id = f"shapes_{uuid.uuid4().hex[:10]}"
        kwargs = {
            "conn_id": warehouse.conn_id,
            "sql": f"select email, firstname, lastname as firstname from {warehouse.table}",
            "destination_conn_id": "hubspot_shapes",
            "object": "contacts",
            "primary_key": "email",
        }
        result = dag_runner.run_dag(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs), dag_id)
        assert not result.succeeded, result
        assert len(result.task("sync").tries) == 1  # a configuration error: no retries
        assert running.emulator.records("contacts") == [] and running.emulator.request_count() == 0
