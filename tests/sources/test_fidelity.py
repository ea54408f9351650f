"""The same logical table in every source: identical row fingerprints and identical wire values.

Identical fingerprints mean switching a sync from one warehouse to another with the same data
sends nothing. Sources that cannot carry a type are read with the documented ``column_types``.
"""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from airflow_provider_retl.sources import read_query
from airflow_provider_retl.sync import fingerprint

from . import logical_table as lt


def _hook(conn_id):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook()


def _read(conn_id, sql="select * from logical order by id", chunksize=2, **kwargs) -> pd.DataFrame:
    chunks = list(read_query(_hook(conn_id), sql, chunksize=chunksize, **kwargs))
    assert [len(c) for c in chunks] == [2, 1]  # streamed in chunks, not at once
    return pd.concat(chunks, ignore_index=True)


def _assert_same_as_reference(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == lt.COLUMNS
    # As JSON text, so 1 != true and 1.0 != 1 (Python's == would let both pass).
    assert orjson.dumps(lt.wire(frame)).decode() == orjson.dumps(lt.EXPECTED_WIRE).decode()
    assert fingerprint.row_hashes(frame[lt.COLUMNS]).tolist() == lt.reference_hashes().tolist()


def test_duckdb(tmp_path, set_connection):
    lt.create_duckdb(tmp_path / "w.duckdb")
    set_connection("src", "duckdb", host=str(tmp_path / "w.duckdb"))
    frame = _read("src")
    assert str(frame["small"].dtype) == "Int64"  # 2**53 + 1 next to a NULL is not turned into a float
    _assert_same_as_reference(frame)


def test_sqlite_with_declared_types(tmp_path, set_connection):
    lt.create_sqlite(tmp_path / "w.sqlite")
    set_connection("src", "sqlite", host=str(tmp_path / "w.sqlite"))
    _assert_same_as_reference(_read("src", column_types=lt.SQLITE_TYPES))


def test_sqlite_without_declared_types_sends_text_as_text(tmp_path, set_connection):
    # The documented rule: SQLite stores these as text/0-1, and without column_types they are sent as such.
    lt.create_sqlite(tmp_path / "w.sqlite")
    set_connection("src", "sqlite", host=str(tmp_path / "w.sqlite"))
    first = lt.wire(_read("src"))[0]
    assert first["active"] == 1 and first["doc"] == '{"a": [1, 2.5, "x"], "b": {"c": null}}'
    assert first["seen_at"] == "2024-01-02 03:04:05.123456"
    # Exact decimals and big integers survive as their text (SQLite would round them if stored as numbers).
    assert first["amount"] == "12345678901234567890.1234567890" and first["big"] == "1180591620717411303424"


def test_postgres(pg_schema, set_connection):
    lt.create_postgres(pg_schema)
    set_connection("src", "postgres", **pg_schema.connection_fields())
    _assert_same_as_reference(_read("src"))


@pytest.mark.parametrize("client", ["mysqlclient", "mysql-connector-python"])
def test_mariadb(mariadb_table, set_connection, client):
    lt.create_mariadb(mariadb_table)
    set_connection("src", "mysql", **mariadb_table.connection_fields(client))
    types = dict(lt.MARIADB_TYPES)
    if client == "mysql-connector-python":
        types["active"] = "boolean"  # its description has no display width, so TINYINT(1) cannot be told apart
    frame = _read("src", sql=f"select * from {mariadb_table.name} order by id", column_types=types)
    assert frame["active"].tolist()[:2] == [True, False]  # BOOLEAN is TINYINT(1): read as bool
    _assert_same_as_reference(frame)


def test_snowflake(snowflake):
    lt.create_snowflake(snowflake)
    frame = _read("snowflake_test", sql="select * from logical order by id")
    _assert_same_as_reference(frame)  # UPPERCASE columns folded back, VARIANT parsed, TIMESTAMP_TZ in UTC
