"""Snowflake through Airflow's SnowflakeHook, backed in-process by fakesnow (Snowflake emulated on DuckDB)."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_retl.sources import read_query, source_kind
from airflow_provider_retl.testing.emulators import start_emulator

TOKEN = "pat-snowflake-test-1234"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", **{kwargs!r})
"""


def _create_contacts(hook, n: int) -> None:
    conn = hook.get_conn()
    cur = conn.cursor()
    # Unquoted identifiers: Snowflake stores and returns them in UPPER CASE.
    cur.execute(
        "create or replace table contacts (email varchar, firstname varchar, score number(38,0),"
        " signed_up timestamp_tz, seen timestamp_ntz, traits variant, tags array)"
    )
    cur.execute(
        f"insert into contacts select 'user' || seq4() || '@example.com', 'Name ' || seq4(), 9007199254740993,"
        f" '2024-05-06 07:08:09.123 +02:00'::timestamp_tz, '2024-05-06 07:08:09'::timestamp_ntz,"
        f" parse_json('{{\"plan\": \"pro\", \"seats\": 3}}'), array_construct('a', 'b')"
        f" from table(generator(rowcount => {n}))"
    )
    conn.close()


def test_snowflake_hook_streams_in_chunks_with_lower_cased_unquoted_identifiers(snowflake):
    _create_contacts(snowflake, 250)
    assert source_kind(snowflake) == "snowflake"
    chunks = list(read_query(snowflake, "select * from contacts order by email", chunksize=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    first = chunks[0]
    assert list(first.columns) == ["email", "firstname", "score", "signed_up", "seen", "traits", "tags"]
    row = first.iloc[0]
    assert row["traits"] == {"plan": "pro", "seats": 3} and row["tags"] == ["a", "b"]
    assert str(first["signed_up"].dtype) == "datetime64[us, UTC]" and str(first["seen"].dtype) == "datetime64[us]"
    assert row["signed_up"].isoformat() == "2024-05-06T05:08:09.123000+00:00"
    assert int(row["score"]) == 9007199254740993


def test_quoted_mixed_case_identifiers_are_kept(snowflake):
    _create_contacts(snowflake, 1)
    (frame,) = read_query(snowflake, 'select email as "Email", firstname as "FIRSTNAME" from contacts')
    # "FIRSTNAME" quoted in upper case cannot be told from an unquoted name: it is folded too.
    assert list(frame.columns) == ["Email", "firstname"]


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_test", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


def test_dag_syncs_snowflake_to_hubspot_then_sends_nothing(dag_runner, snowflake, hubspot):
    _create_contacts(snowflake, 120)
    dag_id = f"snowflake_{uuid.uuid4().hex[:10]}"
    kwargs = {
        "conn_id": "snowflake_test",
        "sql": "select email, firstname, signed_up, traits from contacts",
        "destination_conn_id": "hubspot_test",
        "object": "contacts",
        "primary_key": "email",  # lower case, like every other warehouse
        # Either case resolves; a TIMESTAMP_TZ goes out as ISO 8601 in UTC.
        "mapping": {"email": "email", "firstname": "FIRSTNAME", "lastname": "signed_up"},
        "checkpoint": "variable",
        "chunksize": 50,
    }
    text = DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs)
    result = dag_runner.run_dag(text, dag_id)
    report = result.return_value("sync")
    assert result.succeeded, result
    assert report["rows_read"] == 120 and report["created"] == 120 and report["rejected"] == 0, report.get("rejects", [])[:2]
    records = {r["properties"]["email"]: r["properties"] for r in hubspot.emulator.records("contacts")}
    assert records["user7@example.com"]["firstname"] == "Name 7"
    assert records["user7@example.com"]["lastname"] == "2024-05-06T05:08:09.123000+00:00"

    requests = hubspot.emulator.request_count()
    result = dag_runner.run_dag(text, dag_id)
    assert result.succeeded and result.return_value("sync")["unchanged"] == 120
    assert hubspot.emulator.request_count() == requests


def test_a_missing_column_names_the_columns_that_exist(dag_runner, snowflake, hubspot):
    _create_contacts(snowflake, 3)
    dag_id = f"snowflake_{uuid.uuid4().hex[:10]}"
    kwargs = {
        "conn_id": "snowflake_test", "sql": "select email, firstname from contacts", "destination_conn_id": "hubspot_test",
        "object": "contacts", "primary_key": "customer_id", "checkpoint": "variable",
    }
    result = dag_runner.run_dag(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs), dag_id)
    assert not result.succeeded  # a configuration error: the task fails without sending anything
    assert hubspot.emulator.request_count() == 0
    # The message names the columns that exist (folded to lower case as the reader returns them).
    from airflow_provider_retl.sync.diff import _resolve_column
    from airflow_provider_retl.sync.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"columns are: \['email', 'firstname'\]"):
        _resolve_column("customer_id", ["email", "firstname"], "primary key column")


def test_warehouse_checkpoint_diffs_in_snowflake_sql(snowflake):
    """checkpoint="warehouse" on Snowflake: the transpiled diff runs (through fakesnow) and upper-case
    unquoted columns keep the names the normal reader gives them."""
    from airflow_provider_retl.checkpoints.warehouse import warehouse_store
    from airflow_provider_retl.sync.config import SyncConfig
    from airflow_provider_retl.sync.engine import run_sync
    from tests.unit.fakes import InMemoryDestination

    _create_contacts(snowflake, 120)
    sql = "select email, firstname, score, signed_up, traits from contacts"
    config = SyncConfig(sync_id="sf", object="contacts", primary_key="email", mode="mirror")
    dest = InMemoryDestination()

    def run():
        return run_sync(iter(()), dest, warehouse_store("warehouse:retl_ck", snowflake, sql, sync_id="sf"), config)

    report = run()
    assert report.created == 120 and report.rejected == 0
    record = next(iter(dest.records.values()))
    assert sorted(record) == ["email", "firstname", "score", "signed_up", "traits"]  # lower case, as read
    assert record["traits"] == {"plan": "pro", "seats": 3} and record["score"] == 9007199254740993
    assert run().pushed == 0
    conn = snowflake.get_conn()
    conn.cursor().execute("update contacts set firstname = 'Changed' where email = 'user5@example.com'")
    conn.cursor().execute("delete from contacts where email = 'user6@example.com'")
    conn.close()
    report = run()
    assert report.planned == {"new": 0, "changed": 1, "removed": 1} and report.updated == 1 and report.deleted == 1
