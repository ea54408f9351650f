"""Errors a retry cannot fix fail at once, without Airflow retries; transient ones still retry.

Every test runs a real DAG (``dag.test()``) whose sync task has ``retries=3``, against real
warehouses (DuckDB, SQLite, PostgreSQL) and the HubSpot emulator, and reads back from the
metadata DB how many tries ran. A permanent error (bad SQL, a missing connection, a refused
token, an unknown object, a bad parameter only known after rendering) must end the task after
ONE try with a message that says what to fix; a 503 must still be retried.
"""

from __future__ import annotations

import re
import uuid

import pytest

from airflow_provider_retl.testing.emulators import start_emulator
from tests.dags.warehouses import customers, make_warehouse

pytestmark = pytest.mark.dagrun

TOKEN = "pat-failfast-token-5678"

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=3, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""


@pytest.fixture
def hubspot(set_connection):
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=None) as running:
        set_connection("hubspot_ff", "retl_hubspot", host=running.url, password=TOKEN, extra={"max_retries": 1})
        yield running


def run_sync(runner, warehouse, capfd, **overrides):
    """One DagRun of a one-task DAG; returns (the sync task's result, the run's console output)."""
    dag_id = f"failfast_{uuid.uuid4().hex[:10]}"
    kwargs = {
        "conn_id": warehouse.conn_id,
        "sql": warehouse.sql,
        "destination_conn_id": "hubspot_ff",
        "object": "contacts",
        "primary_key": "email",
        "checkpoint": "variable",
        **overrides,
    }
    capfd.readouterr()  # only this run's output
    result = runner.run_dag(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs), dag_id)
    out, err = capfd.readouterr()
    return result.task("sync"), out + err


def assert_failed_once(task, output: str, *message: str) -> None:
    """One try, failed for good (no retry scheduled), and the log says why."""
    assert task.state == "failed", task
    assert task.try_number == 1, f"{task.try_number} tries ran for an error no retry can fix: {task}"
    assert task.tries == ("failed",), task
    for part in message:
        assert re.search(part, output), f"{part!r} not in the task's log"


BAD_QUERIES = {
    "syntax_error": ("selec email, firstname from {table}", r"(?i)syntax|parser"),
    "unknown_table": ("select email, firstname from no_such_table_ff", r"(?i)no_such_table_ff"),
    "unknown_column": ("select email, no_such_column_ff from {table}", r"(?i)no_such_column_ff"),
}


@pytest.mark.parametrize("problem", sorted(BAD_QUERIES))
@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres"])
def test_bad_sql_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd, request, kind, problem):
    pg = request.getfixturevalue("pg_schema") if kind == "postgres" else None
    warehouse = make_warehouse(kind, tmp_path, set_connection, pg)
    warehouse.create(customers(5))
    sql, names = BAD_QUERIES[problem]
    task, output = run_sync(dag_runner, warehouse, capfd, sql=sql.format(table=warehouse.table))
    assert_failed_once(task, output, names, r"a retry cannot fix")
    assert hubspot.emulator.request_count() == 0  # nothing was sent


def test_bad_sql_in_the_warehouse_diff_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(
        dag_runner, warehouse, capfd, checkpoint="warehouse", sql=f"select email, nope_ff from {warehouse.table}"
    )
    assert_failed_once(task, output, r"nope_ff", r"a retry cannot fix")
    assert hubspot.emulator.request_count() == 0


def test_missing_warehouse_connection_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    task, output = run_sync(dag_runner, warehouse, capfd, conn_id="no_such_warehouse_ff")
    assert_failed_once(task, output, r"conn_id 'no_such_warehouse_ff'", r"(?i)not defined|isn't defined")
    assert hubspot.emulator.request_count() == 0


def test_missing_destination_connection_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd, destination_conn_id="no_such_destination_ff")
    assert_failed_once(task, output, r"destination_conn_id 'no_such_destination_ff'", r"(?i)not defined")


def test_refused_token_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    set_connection("hubspot_ff", "retl_hubspot", host=hubspot.url, password="pat-wrong-ff", extra={"max_retries": 1})
    warehouse = make_warehouse("sqlite", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd)
    assert_failed_once(task, output, r"401")
    # One call, refused; neither the hook nor Airflow asked again.
    assert hubspot.emulator.request_count() == 1
    assert hubspot.emulator.request_count(status=401) == 1


def test_unknown_object_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd, object="no_such_object_ff")
    assert_failed_once(task, output, r"no_such_object_ff")
    # Only the custom-object schema list (GET /crm-object-schemas/v3/schemas, no match) answers 200.
    schemas = hubspot.emulator.request_count("GET /crm-object-schemas/v3/schemas", status=200)
    assert hubspot.emulator.request_count(status=200) == schemas <= 1 and hubspot.emulator.request_count() <= 3


def test_unknown_field_fails_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(
        dag_runner, warehouse, capfd, sql=f"select email, firstname as no_such_property_ff from {warehouse.table}"
    )
    assert_failed_once(task, output, r"no_such_property_ff")
    assert hubspot.emulator.records("contacts") == []


def test_bad_destination_extras_fail_after_one_try(dag_runner, hubspot, tmp_path, set_connection, capfd):
    # A ConfigurationError raised while the hook reads its connection, before the sync starts.
    set_connection("hubspot_ff", "retl_hubspot", host=hubspot.url, password=TOKEN, extra={"timeout": "soon"})
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd)
    assert_failed_once(task, output, r"timeout must be")
    assert hubspot.emulator.request_count() == 0


def test_templated_sync_name_that_looks_secret_fails_after_one_try(
    dag_runner, hubspot, tmp_path, set_connection, capfd
):
    # Static names are refused when the DAG is parsed; a templated one can only be checked once rendered.
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd, sync_name="{{ 'crm_api_token_sync' }}")
    assert_failed_once(task, output, r"crm_api_token_sync", r"secret")
    assert hubspot.emulator.request_count() == 0


def test_templated_mapping_that_is_not_a_mapping_fails_after_one_try(
    dag_runner, hubspot, tmp_path, set_connection, capfd
):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    task, output = run_sync(dag_runner, warehouse, capfd, mapping="{{ 'email' }}")
    assert_failed_once(task, output, r"mapping")
    assert hubspot.emulator.request_count() == 0


def test_events_object_in_mirror_mode_fails_after_one_try(dag_runner, tmp_path, set_connection, capfd):
    # Known only from the connection's type (Braze events cannot be deleted): checked at run time, once.
    with start_emulator("braze", api_keys=["braze-key-ff"], rate_limit=None) as braze:
        set_connection("hubspot_ff", "retl_braze", host=braze.url, password="braze-key-ff", extra={"max_retries": 1})
        warehouse = make_warehouse("duckdb", tmp_path, set_connection)
        warehouse.execute("create table {table} (id text, external_id text, name text)")
        warehouse.execute("insert into {table} values ('e1', 'u1', 'signup')")
        task, output = run_sync(
            dag_runner,
            warehouse,
            capfd,
            sql=f"select id, external_id, name from {warehouse.table}",
            object="events",
            primary_key="id",
            mode="mirror",
        )
        assert_failed_once(task, output, r"(?i)event")
        assert braze.emulator.request_count() == 0


def test_transient_503_is_still_retried(dag_runner, hubspot, tmp_path, set_connection, capfd):
    warehouse = make_warehouse("duckdb", tmp_path, set_connection)
    warehouse.create(customers(5))
    # The hook tries twice (max_retries=1); both answers are 503, so the first Airflow try fails.
    hubspot.emulator.faults.update(error_statuses=(503,))
    hubspot.emulator.faults.fail_next(2, "error")
    task, output = run_sync(dag_runner, warehouse, capfd)
    assert task.state == "success", task
    assert task.try_number == 2 and len(task.tries) == 2, task
    assert hubspot.emulator.request_count(status=503) == 2
    assert len(hubspot.emulator.records("contacts")) == 5


def test_postgres_serialization_failure_is_still_retried(
    dag_runner, hubspot, pg_schema, tmp_path, set_connection, capfd
):
    # SQLSTATE 40001 in the first try only: nextval() is not rolled back with the failed query,
    # so the retry sees 2 and the query succeeds.
    warehouse = make_warehouse("postgres", tmp_path, set_connection, pg_schema)
    warehouse.create(customers(3))
    pg_schema.execute("create sequence flaky_seq")
    pg_schema.execute(
        """
        create function flaky_once() returns int language plpgsql volatile as $$
        begin
          if nextval('flaky_seq') = 1 then
            raise exception 'could not serialize access' using errcode = '40001';
          end if;
          return 1;
        end $$
        """
    )
    task, output = run_sync(
        dag_runner, warehouse, capfd, sql=f"select email, firstname from {warehouse.table} where flaky_once() = 1"
    )
    assert task.state == "success", task
    assert task.try_number == 2, task
    assert len(hubspot.emulator.records("contacts")) == 3


class TestSqlErrorClassification:
    """Real driver errors, raised by the drivers themselves: permanent ones found, transient ones not."""

    def test_duckdb(self, tmp_path):
        import duckdb

        from airflow_provider_retl.sql_errors import permanent_sql_error

        con = duckdb.connect()
        con.execute("create table t (a int)")
        for sql in ("selec 1", "select * from nope", "select nope from t", "select nope()"):
            with pytest.raises(duckdb.Error) as info:
                con.sql(sql).fetchall()
            assert permanent_sql_error(info.value) is info.value, sql
        with pytest.raises(duckdb.Error) as info:  # a constraint or conversion problem is about the data
            con.sql("select cast('x' as int)").fetchall()
        assert permanent_sql_error(info.value) is None
        with pytest.raises(duckdb.IOException) as info:  # a file that cannot be opened (now): retry
            duckdb.connect(str(tmp_path / "missing-dir" / "w.duckdb"))
        assert permanent_sql_error(info.value) is None

    def test_sqlite(self, tmp_path):
        import sqlite3

        from airflow_provider_retl.sql_errors import permanent_sql_error

        con = sqlite3.connect(tmp_path / "w.sqlite")
        con.execute("create table t (a int)")
        for sql in ("selec 1", "select * from nope", "select nope from t", "select nope(1)", "select 'a"):
            with pytest.raises(sqlite3.OperationalError) as info:
                con.execute(sql)
            assert permanent_sql_error(info.value) is info.value, sql
        other = sqlite3.connect(tmp_path / "w.sqlite", timeout=0)
        con.execute("begin exclusive")
        with pytest.raises(sqlite3.OperationalError) as info:
            other.execute("select * from t")
        assert "locked" in str(info.value) and permanent_sql_error(info.value) is None

    def test_postgres_psycopg2_and_psycopg3(self, pg_schema):
        import psycopg
        import psycopg2

        from airflow_provider_retl.sql_errors import permanent_sql_error

        pg_schema.execute("create table t (a int)")
        for sql in ("selec 1", "select * from nope", "select nope from t", "select nope()"):
            with pytest.raises(psycopg.Error) as info3:
                pg_schema.execute(sql)
            assert permanent_sql_error(info3.value) is info3.value, sql
            with psycopg2.connect(pg_schema.dsn, options=f"-c search_path={pg_schema.name}") as conn:
                with pytest.raises(psycopg2.Error) as info2, conn.cursor() as cur:
                    cur.execute(sql)
                assert permanent_sql_error(info2.value) is info2.value, sql
        for state in ("40001", "40P01", "55P03", "57014"):  # serialization, deadlock, lock wait, cancelled
            with pytest.raises(psycopg.Error) as info3:
                pg_schema.execute(f"do $$ begin raise exception 'transient' using errcode = '{state}'; end $$")
            assert permanent_sql_error(info3.value) is None, state
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
        assert permanent_sql_error(refused.value) is None

    def test_wrapped_errors_are_found_and_mysql_numbers(self):
        import pymysql

        from airflow_provider_retl.sql_errors import permanent_sql_error

        syntax = pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax")
        try:
            try:
                raise syntax
            except pymysql.err.ProgrammingError as exc:
                raise RuntimeError("reading the query failed") from exc
        except RuntimeError as wrapped:
            assert permanent_sql_error(wrapped) is syntax
        assert permanent_sql_error(pymysql.err.ProgrammingError(1146, "Table 'x.nope' doesn't exist")) is not None
        assert permanent_sql_error(pymysql.err.OperationalError(1213, "Deadlock found")) is None
        assert permanent_sql_error(pymysql.err.OperationalError(2003, "Can't connect")) is None


def test_webhook_url_without_a_receiver_fails_after_one_try(dag_runner, tmp_path, set_connection, capfd):
    # A real HTTP server that answers 404 to everything: the connection's URL is wrong, not the records.
    import http.server
    import threading

    posts = []

    class NotHere(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append(self.path)
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"no such hook")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotHere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/typo"
        set_connection("hubspot_ff", "retl_webhook", host=url, password="whsec-ff-secret", extra={"max_concurrency": 1})
        warehouse = make_warehouse("duckdb", tmp_path, set_connection)
        warehouse.create(customers(500))
        task, output = run_sync(dag_runner, warehouse, capfd, object="customers", batch_size=100)
        assert_failed_once(task, output, r"404", r"webhook URL")
        # 5 batches of 100: the run stops after the batches already in flight (1 sent, 1 queued), no retry.
        assert set(posts) == {"/hooks/typo"} and 1 <= len(posts) <= 2, posts
    finally:
        server.shutdown()
        server.server_close()
