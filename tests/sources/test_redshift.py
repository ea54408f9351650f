"""Redshift, as Airflow users reach it: a ``postgres`` connection (PostgresHook) to the cluster endpoint.

The amazon provider's ``RedshiftSQLHook`` cannot be run against the local PostgreSQL, because its driver,
redshift_connector, cannot talk to plain PostgreSQL. Tried with apache-airflow-providers-amazon 9.39.0 and
redshift_connector 2.2.0 (they resolve with constraints.txt) against PostgreSQL 15 on 127.0.0.1:5432:

* The driver asks for TLS by default; a server without TLS answers the request with "no", and the hook fails
  with ``redshift_connector.error.InterfaceError: Server refuses SSL`` after its own 5 tries (about 15 s).
* With ``{"ssl": false}`` in the connection extra, the startup packet carries Redshift-only parameters
  (``client_protocol_version``, ``driver_version``, ``os_version``, ``driver_discovery_version``), and
  PostgreSQL refuses the connection: ``redshift_connector.error.ProgrammingError: {'S': 'FATAL', 'C': '42704',
  'M': 'unrecognized configuration parameter "client_protocol_version"', ...}``. The driver has no option
  that leaves them out, so connect, ``get_df`` and ``read_query`` all stop there.
* sqlalchemy-redshift's ``redshift+redshift_connector://`` fails with the same two errors (same driver).
  The hook's own ``get_sqlalchemy_engine()`` uses ``postgresql+psycopg`` and does reach PostgreSQL, but it
  passes the connection extra as connect arguments (``{"ssl": false}`` -> psycopg's ``invalid connection
  option "ssl"``), and ``read_query`` reads through ``get_conn()``, the redshift_connector connection.

So the amazon provider is not an extra of this project, redshift_connector's output is covered at the type
layer (``test_type_layer.py::test_redshift_rows``); the refusal was checked by hand in a scratch venv with
the provider (no test here skips for want of it). Reading its source showed one more thing:
``redshift_connector.Connection.cursor()`` takes no name and its ``execute`` reads the whole result into the
client, so the reader declares the cursor in SQL (``DECLARE``, ``FETCH FORWARD``) for such drivers; that path
runs here on PostgreSQL through a psycopg connection shaped like redshift_connector's.

What also runs here is the ``postgres`` connection Redshift users commonly use, configured as for a cluster,
over the Redshift types that PostgreSQL shares: NUMERIC(38,x), BIGINT, DATE, TIMESTAMP, TIMESTAMPTZ (in a
non-UTC session), BOOLEAN, JSON kept in VARCHAR (``column_types``) and unquoted upper-case identifiers folded
to lower case. SUPER and VARBYTE do not exist in PostgreSQL; the reader knows their type codes (4000, 6551)
for ``postgres`` connections too, which the type layer checks.
"""

from __future__ import annotations

import json
import uuid

import orjson
import pandas as pd
import pytest

from airflow_provider_retl.sources import read_query, source_kind
from airflow_provider_retl.sync import fingerprint
from airflow_provider_retl.testing.emulators import start_emulator

from . import logical_table as lt

TOKEN = "pat-redshift-test-1234"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", **{kwargs!r})
"""


def _redshift_style_postgres_connection(set_connection, pg_schema, conn_id: str = "redshift_pg") -> str:
    """A ``postgres`` connection with the extras a Redshift user sets (``redshift`` only matters with ``iam``)."""
    fields = pg_schema.connection_fields()
    fields["extra"] = {
        "redshift": True,
        "sslmode": "disable",  # a cluster wants "require"; the local server has no TLS
        "keepalives_idle": 30,  # Redshift drops idle connections; the postgres provider advises < 300 s
        "prepare_threshold": None,  # psycopg 3 on Redshift: never prepare, so never DEALLOCATE ALL
        # A session time zone other than UTC: TIMESTAMPTZ must still hash and send as UTC.
        "options": f"-c search_path={pg_schema.name} -c timezone=America/New_York",
    }
    return set_connection(conn_id, "postgres", **fields)


def _create_redshift_logical_table(pg_schema) -> None:
    """The logical table in DDL that Redshift accepts too, except ``blob`` (bytea here, VARBYTE there)."""
    pg_schema.execute(
        "CREATE TABLE Logical (ID INTEGER, Name VARCHAR(256), Amount NUMERIC(38,10), Big NUMERIC(38,0), Small BIGINT,"
        " Born DATE, Seen_At TIMESTAMP, At_Tz TIMESTAMPTZ, Active BOOLEAN, Doc VARCHAR(65535), Blob BYTEA,"
        " Ratio DOUBLE PRECISION)"
    )
    for row in lt.ROWS:
        r = list(row)
        r[9] = None if r[9] is None else json.dumps(r[9])
        pg_schema.execute("INSERT INTO Logical VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", r)


def _hook(conn_id):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook()


def test_postgres_connection_to_redshift_reads_the_logical_table(pg_schema, set_connection):
    _create_redshift_logical_table(pg_schema)
    hook = _hook(_redshift_style_postgres_connection(set_connection, pg_schema))
    assert source_kind(hook) == "postgres"
    sql = "SELECT ID, Name, Amount, Big, Small, Born, Seen_At, At_Tz, Active, Doc, Blob, Ratio FROM Logical ORDER BY ID"
    chunks = list(read_query(hook, sql, chunksize=2, column_types={"Doc": "json"}))
    assert [len(c) for c in chunks] == [2, 1]
    frame = pd.concat(chunks, ignore_index=True)
    assert list(frame.columns) == lt.COLUMNS  # unquoted identifiers come back lower case
    assert str(chunks[0]["at_tz"].dtype) == "datetime64[us, UTC]"  # read in a New York session, held in UTC
    assert orjson.dumps(lt.wire(frame)).decode() == orjson.dumps(lt.EXPECTED_WIRE).decode()
    assert fingerprint.row_hashes(frame[lt.COLUMNS]).tolist() == lt.reference_hashes().tolist()


class _NamelessCursorConnection:
    """A psycopg connection whose ``cursor()`` takes no name, like ``redshift_connector.Connection``."""

    def __init__(self, conn):
        self._conn = conn

    @property
    def autocommit(self):
        return self._conn.autocommit

    @autocommit.setter
    def autocommit(self, value):
        self._conn.autocommit = value

    def cursor(self):
        return self._conn.cursor()

    def rollback(self):
        self._conn.rollback()

    def close(self):
        self._conn.close()


def _waiting_fetches(pg_schema) -> list[str]:
    rows = pg_schema.execute(
        "select query from pg_stat_activity where state = 'idle in transaction' and query like 'FETCH FORWARD %%'"
    )
    return [r[0] for r in rows]


def test_a_driver_without_named_cursors_streams_through_declare_and_fetch(pg_schema):
    # RedshiftSQLHook's connection (redshift_connector) has no named cursor and reads a whole result at execute;
    # the reader declares the cursor in SQL instead. Run here on PostgreSQL through a driver shaped like it.
    import psycopg

    def get_conn(self):
        return _NamelessCursorConnection(psycopg.connect(pg_schema.dsn, options=f"-c search_path={pg_schema.name}"))

    _create_redshift_logical_table(pg_schema)
    pg_schema.execute("CREATE TABLE Big AS SELECT g AS ID FROM generate_series(1, 2500) g")
    hook = type("RedshiftSQLHook", (), {"get_conn": get_conn})()
    assert source_kind(hook) == "redshift"
    chunks = read_query(hook, "SELECT ID FROM Big WHERE ID > %s ORDER BY ID", [0], chunksize=1000)
    try:
        first = next(chunks)
        assert _waiting_fetches(pg_schema)[0].startswith("FETCH FORWARD 1000 FROM retl_")  # the rest waits on the server
        sizes = [len(first), *(len(c) for c in chunks)]
    finally:
        chunks.close()
    assert sizes == [1000, 1000, 500] and first["id"].tolist()[:2] == [1, 2]
    assert _waiting_fetches(pg_schema) == []

    sql = "SELECT ID, Name, Amount, Big, Small, Born, Seen_At, At_Tz, Active, Doc, Blob, Ratio FROM Logical ORDER BY ID"
    frame = pd.concat(list(read_query(hook, sql, chunksize=2, column_types={"doc": "json"})), ignore_index=True)
    assert orjson.dumps(lt.wire(frame)).decode() == orjson.dumps(lt.EXPECTED_WIRE).decode()
    assert fingerprint.row_hashes(frame[lt.COLUMNS]).tolist() == lt.reference_hashes().tolist()
    assert list(read_query(hook, "SELECT ID FROM Big WHERE ID < 0")) == []


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_test", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


def test_dag_syncs_redshift_through_a_postgres_connection_then_sends_nothing(dag_runner, pg_schema, set_connection, hubspot):
    pg_schema.execute(
        "CREATE TABLE Contacts AS SELECT 'user' || g || '@example.com' AS Email, 'Name ' || g AS FirstName,"
        " (9007199254740993 + g)::NUMERIC(38,0) AS Score, TIMESTAMPTZ '2024-05-06 07:08:09.123+02' AS Signed_Up,"
        " (g % 2 = 0) AS Active, '{\"plan\": \"pro\", \"seats\": ' || g || '}' AS Traits"
        " FROM generate_series(1, 120) g"
    )
    conn_id = _redshift_style_postgres_connection(set_connection, pg_schema)
    dag_id = f"redshift_pg_{uuid.uuid4().hex[:10]}"
    kwargs = {
        "conn_id": conn_id,
        "sql": "SELECT Email, FirstName, Score, Signed_Up, Active, Traits FROM Contacts",
        "destination_conn_id": "hubspot_test",
        "object": "contacts",
        "primary_key": "email",
        "mapping": {"email": "email", "firstname": "firstname", "lastname": "signed_up", "company": "score"},
        "column_types": {"traits": "json"},
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
    assert records["user7@example.com"]["lastname"] == "2024-05-06T05:08:09.123000+00:00"  # UTC, not New York
    assert records["user7@example.com"]["company"] in (9007199254741000, "9007199254741000")  # exact, not 2**53-rounded

    requests = hubspot.emulator.request_count()
    result = dag_runner.run_dag(text, dag_id)
    assert result.succeeded and result.return_value("sync")["unchanged"] == 120
    assert hubspot.emulator.request_count() == requests
