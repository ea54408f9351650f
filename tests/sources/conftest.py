"""Fixtures for the warehouse-source suites: MariaDB (like PostgreSQL: skip without a server
unless CI is set) and a fakesnow-backed Snowflake connection."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

MARIADB = {"host": os.environ.get("RETL_TEST_MYSQL_HOST", "127.0.0.1"), "port": 3306, "user": "root", "database": "test"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def _mariadb_error() -> str | None:
    try:
        import MySQLdb

        MySQLdb.connect(
            host=MARIADB["host"], port=MARIADB["port"], user=MARIADB["user"], passwd="", db=MARIADB["database"],
            connect_timeout=3,
        ).close()
    except Exception as exc:  # any failure means "no usable server"
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@dataclass(frozen=True)
class MariaDBTable:
    """A table name of its own in the ``test`` database, dropped after the test."""

    name: str

    def connect(self):
        import MySQLdb

        return MySQLdb.connect(
            host=MARIADB["host"], port=MARIADB["port"], user=MARIADB["user"], passwd="", db=MARIADB["database"],
            charset="utf8mb4", autocommit=True,
        )

    def execute(self, *statements: str, params: list[Any] | None = None) -> None:
        conn = self.connect()
        try:
            cur = conn.cursor()
            for sql in statements:
                cur.execute(sql.format(table=self.name), params)
        finally:
            conn.close()

    def connection_fields(self, client: str = "mysqlclient") -> dict[str, Any]:
        return {
            "host": MARIADB["host"],
            "port": MARIADB["port"],
            "login": MARIADB["user"],
            "schema": MARIADB["database"],
            "extra": {"charset": "utf8mb4", "client": client},
        }


@pytest.fixture
def mariadb_table() -> Iterator[MariaDBTable]:
    error = _mariadb_error()
    if error is not None:
        if _in_ci():
            pytest.fail(f"MariaDB at {MARIADB['host']}:3306 does not answer and CI is set: {error}", pytrace=False)
        pytest.skip(f"no MariaDB at {MARIADB['host']}:3306 ({error})")
    table = MariaDBTable(f"retl_t_{uuid.uuid4().hex[:12]}")
    try:
        yield table
    finally:
        table.execute("drop table if exists {table}")


SNOWFLAKE_FIELDS = {
    "login": "retl",
    "password": "fakesnow-password",
    "schema": "PUBLIC",
    "extra": {"account": "retl-test", "database": "RETL", "warehouse": "WH", "role": "SYSADMIN"},
}


@pytest.fixture
def snowflake(set_connection):
    """fakesnow patched in this process and a ``snowflake`` connection ``snowflake_test`` (db RETL, schema PUBLIC)."""
    fakesnow = pytest.importorskip("fakesnow")
    with fakesnow.patch():
        set_connection("snowflake_test", "snowflake", **SNOWFLAKE_FIELDS)
        from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

        hook = SnowflakeHook(snowflake_conn_id="snowflake_test")
        conn = hook.get_conn()
        cur = conn.cursor()
        cur.execute("create database if not exists RETL")
        cur.execute("create schema if not exists RETL.PUBLIC")
        conn.close()
        yield hook
