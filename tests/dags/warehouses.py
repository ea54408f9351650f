"""Real warehouses for DAG tests: a DuckDB file, a SQLite file, a PostgreSQL schema.

Each holds a ``customers`` table the tests change between runs, and knows the
Airflow connection that reads it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("email", "firstname", "lastname", "company")


def customers(n: int) -> list[tuple[str, str, str, str]]:
    return [(f"user{i}@example.com", f"First{i}", f"Last{i}", f"Company {i % 7}") for i in range(n)]


@dataclass
class Warehouse:
    """A warehouse kind with a customers table; ``conn_id`` reads it from Airflow."""

    kind: str
    conn_id: str
    table: str
    path: Path | None = None
    pg: Any = None  # tests.conftest.PostgresSchema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        sql = sql.replace("{table}", self.table)
        if self.kind == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.path))  # one writer at a time: open, write, close
            try:
                cur = con.execute(sql, list(params))
                rows = cur.fetchall() if cur.description else []
            finally:
                con.close()
            return rows
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                cur = con.execute(sql, tuple(params))
                rows = cur.fetchall()
                con.commit()
            finally:
                con.close()
            return rows
        return self.pg.execute(sql.replace("?", "%s"), tuple(params))

    def create(self, rows: list[tuple]) -> None:
        self.execute("drop table if exists {table}")
        self.execute("create table {table} (email text, firstname text, lastname text, company text)")
        self.insert(rows)

    def insert(self, rows: list[tuple]) -> None:
        for row in rows:
            self.execute("insert into {table} values (?, ?, ?, ?)", row)

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r[0]: dict(zip(COLUMNS, r)) for r in self.execute("select * from {table}") if r[0]}

    @property
    def sql(self) -> str:
        return f"select email, firstname, lastname, company from {self.table}"


def make_warehouse(kind: str, tmp_path: Path, set_connection, pg_schema=None) -> Warehouse:
    conn_id = f"wh_{kind}"
    if kind == "duckdb":
        path = tmp_path / "warehouse.duckdb"
        set_connection(conn_id, "duckdb", host=str(path))
        return Warehouse(kind, conn_id, "customers", path=path)
    if kind == "sqlite":
        path = tmp_path / "warehouse.sqlite"
        set_connection(conn_id, "sqlite", host=str(path))
        return Warehouse(kind, conn_id, "customers", path=path)
    fields = pg_schema.connection_fields()
    set_connection(conn_id, "postgres", **fields)
    return Warehouse(kind, conn_id, f'"{pg_schema.name}".customers', pg=pg_schema)
