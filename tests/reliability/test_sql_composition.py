"""The user's SQL is composed, never spliced as text (issue 15, class 6).

Real DuckDB, SQLite and PostgreSQL run the warehouse diff (``checkpoint="warehouse"``) around
queries that end in comments or semicolons, carry comments and placeholder-looking text in
literals, under sync ids and table names that would break a text splice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_retl.checkpoints.warehouse import warehouse_store
from airflow_provider_retl.sync import sqlcompose
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.sqlnames import table_parts, warehouse_checkpoint_table
from tests.unit.fakes import InMemoryDestination


class Source:
    """A ``people`` table in one real warehouse, read by Airflow's hook for that kind."""

    def __init__(self, kind: str, tmp_path: Path, set_connection, pg=None):
        self.kind, self.pg = kind, pg
        self.conn_id = f"c_{kind}"
        if kind == "postgres":
            set_connection(self.conn_id, "postgres", **pg.connection_fields())
            self.schema = f"{pg.name}."
        else:
            self.path = tmp_path / f"w.{kind}"
            set_connection(self.conn_id, kind, host=str(self.path))
            self.schema = ""
        self.table = f"{self.schema}people"
        self.execute(f"create table {self.table} (email varchar(200), name varchar(200), note varchar(200))")
        rows = ", ".join(
            f"('p{i}@example.com', 'Name {i}', '{'__retl_query__ -- ; /*' if i % 2 else 'plain'}')" for i in range(12)
        )
        self.execute(f"insert into {self.table} values {rows}")

    def execute(self, sql: str) -> list[tuple]:
        if self.kind == "postgres":
            return self.pg.execute(sql)
        if self.kind == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.path))
        else:
            con = sqlite3.connect(self.path)
        try:
            cur = con.execute(sql)
            rows = cur.fetchall() if cur.description else []
            con.commit()
            return rows
        finally:
            con.close()

    def hook(self):
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    def store(self, sql: str, *, table: str = "retl_ck", sync_id: str = "people"):
        return warehouse_store(f"warehouse:{self.schema}{table}", self.hook(), sql, sync_id=sync_id)


@pytest.fixture(params=["duckdb", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def source(request, tmp_path, set_connection) -> Source:
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return Source(request.param, tmp_path, set_connection, pg)


def config(**kw: Any) -> SyncConfig:
    return SyncConfig(**{"sync_id": "people", "object": "contacts", "primary_key": "email", "mode": "mirror", **kw})


QUERIES = {
    "trailing line comment": "select * from {t} where email <> 'p0@example.com' -- all but p0",
    "trailing semicolon": "select * from {t} where email <> 'p0@example.com';",
    "semicolon then comment": "select * from {t}\nwhere email <> 'p0@example.com'; -- done\n",
    "comments everywhere": (
        "/* header */ select email, name, note -- the columns\n"
        "from {t} /* inline */ where email <> 'p0@example.com' -- filter\n-- a last line\n"
    ),
    "placeholder text in literals": (
        "select * from {t} where note <> '__retl_query__' and email <> 'p0@example.com' and name <> '-- ;'"
    ),
}


@pytest.mark.parametrize("shape", list(QUERIES))
def test_queries_with_comments_and_semicolons_run_in_the_warehouse_diff(source, shape):
    sql = QUERIES[shape].format(t=source.table)
    dest = InMemoryDestination()
    first = run_sync(iter(()), dest, source.store(sql), config())
    assert first.created == 11 and first.rows_read == 11
    # The literal that looks like the placeholder reached the destination as it is.
    assert sorted({r["note"] for r in dest.records.values()}) == ["__retl_query__ -- ; /*", "plain"]
    again = run_sync(iter(()), dest, source.store(sql), config())
    assert again.pushed == 0 and again.planned["removed"] == 0 and again.unchanged == 11
    # Rebaseline runs the query inside an INSERT ... SELECT: the same composition.
    assert run_sync(iter(()), dest, source.store(sql), config(rebaseline=True)).pushed == 0
    assert run_sync(iter(()), dest, source.store(sql), config()).unchanged == 11


def test_sync_ids_and_reserved_table_names_are_values_and_quoted_identifiers(source):
    sql = f"select * from {source.table}"
    sync_id = 'it\'s __retl_query__ -- x; "y"'
    dest = InMemoryDestination()
    # "order" is a reserved word: it works only quoted.
    store = source.store(sql, table="order", sync_id=sync_id)
    assert run_sync(iter(()), dest, store, config(sync_id=sync_id)).created == 12
    assert (
        run_sync(iter(()), dest, source.store(sql, table="order", sync_id=sync_id), config(sync_id=sync_id)).pushed == 0
    )
    kept = source.execute(f'select distinct sync_id from {source.schema}"order"')
    assert kept == [(sync_id,)]


@pytest.mark.postgres
def test_table_names_fold_like_unquoted_names_on_postgres(tmp_path, set_connection, pg_schema):
    source = Source("postgres", tmp_path, set_connection, pg_schema)
    dest = InMemoryDestination()
    run_sync(iter(()), dest, source.store(f"select * from {source.table}", table="Retl_CK"), config())
    # Quoted after folding: the same table an unquoted Retl_CK names in PostgreSQL.
    assert pg_schema.execute(f"select count(*) from {pg_schema.name}.retl_ck") == [(12,)]


@pytest.mark.parametrize(
    "query",
    ["select 1; select 2", "select 1; delete from people", "select 1;;"],
)
def test_more_than_one_statement_is_refused(query, tmp_path, set_connection):
    set_connection("c_sqlite", "sqlite", host=str(tmp_path / "x.sqlite"))
    from airflow.sdk import BaseHook

    with pytest.raises(ConfigurationError, match="one statement"):
        warehouse_store("warehouse", BaseHook.get_connection("c_sqlite").get_hook(), query, sync_id="s")


BAD_TABLES = ["t--x", "a.b.c.d", "x;drop", '"q"', "a b", "", "s.", ".t", "1t", "t'", "t/*", "s.t--", "__retl_query__"]


@pytest.mark.parametrize("table", BAD_TABLES)
def test_bad_checkpoint_table_names_fail_when_the_store_is_built(table, tmp_path, set_connection):
    set_connection("c_sqlite", "sqlite", host=str(tmp_path / "x.sqlite"))
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection("c_sqlite").get_hook()
    with pytest.raises(ConfigurationError, match="table name|reserved"):
        if table:
            warehouse_store(f"warehouse:{table}", hook, "select 1 as email", sync_id="s")
        else:
            table_parts(table)


@pytest.mark.parametrize("table", ["t--x", "a.b.c.d", "x;drop", "a b"])
def test_bad_checkpoint_table_names_fail_when_the_dag_is_parsed(table):
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    with pytest.raises(ConfigurationError, match="not a \\[\\[database.\\]schema.\\]table name"):
        ReverseETLOperator(
            task_id="t",
            conn_id="wh",
            sql="select 1",
            destination_conn_id="d",
            object="contacts",
            primary_key="email",
            checkpoint=f"warehouse:{table}",
        )


@pytest.mark.parametrize("table", ["retl_ck", "ops.retl_ck", "db.ops.retl_ck", "t$1", "_x", "Mixed_Case"])
def test_plain_names_pass(table):
    assert warehouse_checkpoint_table(f"warehouse:{table}") == table
    assert warehouse_checkpoint_table("warehouse") == "retl_checkpoints"


def test_placeholders_are_replaced_only_as_identifiers():
    template = "SELECT '__retl_query__' AS a, \"__retl_query__\" AS b, __retl_x0__ AS c FROM __retl_query__ AS q"
    out = sqlcompose.render(template, "postgres", query="select 1 as x -- tail", expressions={"__retl_x0__": "1 + 1"})
    assert out == (
        "SELECT '__retl_query__' AS a, \"__retl_query__\" AS b, 1 + 1 AS c FROM (\nselect 1 as x -- tail\n) AS q"
    )


@pytest.mark.parametrize("dialect", ["postgres", "duckdb", "sqlite", "mysql", "snowflake", "bigquery"])
def test_table_names_are_quoted_through_the_dialect(dialect):
    quoted = sqlcompose.quoted_table(["ops", "Retl_CK"], dialect)
    expected = {
        "postgres": '"ops"."retl_ck"',
        "duckdb": '"ops"."retl_ck"',
        "sqlite": '"ops"."retl_ck"',
        "snowflake": '"OPS"."RETL_CK"',
        "mysql": '"ops"."Retl_CK"',
        "bigquery": '"ops"."Retl_CK"',
    }[dialect]
    assert quoted == expected  # PostgreSQL quoting here; render() transpiles it to the dialect's quotes
    rendered = sqlcompose.render(f"SELECT 1 FROM {quoted}", dialect)
    q = {"mysql": "`", "bigquery": "`"}.get(dialect, '"')
    assert f"{q}{expected.split('.')[1].strip(chr(34))}{q}" in rendered
