"""One logical table, written into every source with that source's own types.

The rows hold what breaks naive readers: NULL next to the empty string, a 30-digit decimal,
integers beyond int64 and beyond 2**53 next to a NULL, dates, timestamps with and without a
time zone, booleans, JSON, bytes and non-ASCII text. ``EXPECTED_WIRE`` is what a destination
must receive, whichever source the rows came from.
"""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from airflow_provider_retl.sources import frame_from_rows
from airflow_provider_retl.sync import fingerprint, values

COLUMNS = ["id", "name", "amount", "big", "small", "born", "seen_at", "at_tz", "active", "doc", "blob", "ratio"]
UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))
ROWS = [
    (
        1, "Zoë 東京 🚀", Decimal("12345678901234567890.1234567890"), 2**70, 2**53 + 1, dt.date(2024, 2, 29),
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=PLUS2), True,
        {"a": [1, 2.5, "x"], "b": {"c": None}}, b"\x00\xffab", 0.25,
    ),
    (2, "", Decimal("-0.5"), -(2**65), None, dt.date(1999, 12, 31), dt.datetime(1999, 12, 31, 23, 59, 59),
     dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC), False, [], b"", -1.5),
    (3, None, None, None, 0, None, None, None, None, None, None, None),
]

EXPECTED_WIRE = [
    {
        "id": 1, "name": "Zoë 東京 🚀", "amount": "12345678901234567890.123456789", "big": "1180591620717411303424",
        "small": 9007199254740993, "born": "2024-02-29", "seen_at": "2024-01-02T03:04:05.123456",
        "at_tz": "2024-01-02T01:04:05.123456+00:00", "active": True, "doc": {"a": [1, 2.5, "x"], "b": {"c": None}},
        "blob": base64.b64encode(b"\x00\xffab").decode(), "ratio": 0.25,
    },
    {
        "id": 2, "name": "", "amount": "-0.5", "big": "-36893488147419103232", "small": None, "born": "1999-12-31",
        "seen_at": "1999-12-31T23:59:59", "at_tz": "1999-12-31T23:00:00+00:00", "active": False, "doc": [],
        "blob": "", "ratio": -1.5,
    },
    {"id": 3, **{c: None for c in COLUMNS[1:]}, "small": 0},
]


def reference_hashes() -> np.ndarray:
    return fingerprint.row_hashes(frame_from_rows(ROWS, COLUMNS))


def wire(frame: pd.DataFrame) -> list[dict]:
    rows, failures = values.frame_to_wire(frame[COLUMNS])
    assert failures == {}
    return rows


def _sql_literal(value) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


def _json_text(value) -> str | None:
    import json

    return None if value is None else json.dumps(value)


# ---------------------------------------------------------------- per source
def create_duckdb(path: Path) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute(
        "create table logical (id integer, name varchar, amount decimal(38,10), big hugeint, small bigint, born date,"
        " seen_at timestamp, at_tz timestamptz, active boolean, doc json, blob blob, ratio double)"
    )
    for row in ROWS:
        r = list(row)
        r[9] = _json_text(r[9])
        # Text casts: DuckDB binds a Python Decimal through DOUBLE and would round it.
        r[2] = None if r[2] is None else str(r[2])
        r[3] = None if r[3] is None else str(r[3])
        con.execute("insert into logical values (?, ?, ?::decimal(38,10), ?::hugeint, ?, ?, ?, ?, ?, ?, ?, ?)", r)
    con.close()


def create_sqlite(path: Path) -> None:
    """SQLite has no decimal, big integer, timestamp, boolean or JSON type: text and 0/1 (see column_types)."""
    con = sqlite3.connect(str(path))
    con.execute(
        "create table logical (id integer, name text, amount text, big text, small integer, born text, seen_at text,"
        " at_tz text, active integer, doc text, blob blob, ratio real)"
    )
    for row in ROWS:
        r = list(row)
        r[2] = None if r[2] is None else str(r[2])
        r[3] = None if r[3] is None else str(r[3])
        r[5] = None if r[5] is None else r[5].isoformat()
        r[6] = None if r[6] is None else r[6].isoformat(sep=" ")
        r[7] = None if r[7] is None else r[7].isoformat()
        r[8] = None if r[8] is None else int(r[8])
        r[9] = _json_text(r[9])
        con.execute("insert into logical values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r)
    con.commit()
    con.close()


SQLITE_TYPES = {"amount": "decimal", "big": "integer", "born": "date", "seen_at": "timestamp", "at_tz": "timestamptz",
                "active": "boolean", "doc": "json"}


def create_postgres(pg_schema) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with pg_schema.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "create table logical (id integer, name text, amount numeric(38,10), big numeric(38,0), small bigint,"
            " born date, seen_at timestamp, at_tz timestamptz, active boolean, doc jsonb, blob bytea,"
            " ratio double precision)"
        )
        for row in ROWS:
            r = list(row)
            r[9] = None if r[9] is None else Jsonb(r[9])
            r[3] = None if r[3] is None else Decimal(r[3])
            cur.execute("insert into logical values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", r)
    del psycopg


def create_mariadb(table) -> None:
    """MariaDB has no tz-aware type (UTC wall time in DATETIME) and reports JSON as LONGTEXT."""
    table.execute(
        "create table {table} (id integer, name varchar(50), amount decimal(38,10), big decimal(38,0), small bigint,"
        " born date, seen_at datetime(6), at_tz datetime(6), active boolean, doc json, `blob` longblob,"
        " ratio double) character set utf8mb4"
    )
    conn = table.connect()
    try:
        cur = conn.cursor()
        for row in ROWS:
            r = list(row)
            r[7] = None if r[7] is None else r[7].astimezone(UTC).replace(tzinfo=None)
            r[9] = _json_text(r[9])
            cur.execute(f"insert into {table.name} values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", r)
    finally:
        conn.close()


MARIADB_TYPES = {"at_tz": "timestamptz", "doc": "json"}


def create_snowflake(hook) -> None:
    """Snowflake types; fakesnow stores NUMBER(38,0) as BIGINT, so ``big`` is NUMBER(38,1) here
    (real NUMBER(38,0) beyond int64 is covered in test_type_layer with the connector's Python ints)."""
    conn = hook.get_conn()
    cur = conn.cursor()
    cur.execute(
        "create or replace table logical (id number(38,0), name varchar, amount number(38,10), big number(38,1),"
        " small number(38,0), born date, seen_at timestamp_ntz, at_tz timestamp_tz, active boolean, doc variant,"
        " blob binary, ratio float)"
    )
    for row in ROWS:
        r = list(row)
        literals = [
            str(r[0]), _sql_literal(r[1]), "NULL" if r[2] is None else str(r[2]), "NULL" if r[3] is None else str(r[3]),
            "NULL" if r[4] is None else str(r[4]), "NULL" if r[5] is None else f"'{r[5].isoformat()}'::date",
            "NULL" if r[6] is None else f"'{r[6].isoformat(sep=' ')}'::timestamp_ntz",
            "NULL" if r[7] is None else f"'{r[7].isoformat(sep=' ')}'::timestamp_tz",
            "NULL" if r[8] is None else str(r[8]).upper(),
            "NULL" if r[9] is None else f"parse_json({_sql_literal(_json_text(r[9]))})",
            "NULL" if r[10] is None else f"to_binary('{r[10].hex()}', 'HEX')",
            "NULL" if r[11] is None else str(r[11]),
        ]
        cur.execute(f"insert into logical select {', '.join(literals)}")
    conn.close()
