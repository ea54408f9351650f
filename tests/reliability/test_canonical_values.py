"""Change detection depends on values, not on how a database spells them (issue 15, class 2).

The same logical rows live in real DuckDB, SQLite and PostgreSQL tables. Their canonical text is
computed in SQL by the warehouse diff (``checkpoint="warehouse"``) and in Python by the in-memory
diff; both must be the one text each value has, on every warehouse. Then the column types and
session settings change under live syncs (``integer`` -> ``numeric(12,2)``, ``timestamp`` ->
``timestamptz``, another ``TimeZone``): no key may look new or removed, nothing is deleted, no
event is sent again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.checkpoints.warehouse import warehouse_store
from airflow_provider_retl.sources import read_query
from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.records import SyncReport
from tests.unit.fakes import InMemoryDestination

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))
MINUS5 = dt.timezone(dt.timedelta(hours=-5))

COLUMNS = ("id", "amount", "score", "flag", "seen", "seen_tz", "day", "name")
#: One row per interesting value; SQLite gets them as text/numbers and reads them back through column_types.
ROWS: list[tuple[Any, ...]] = [
    (
        1,
        Decimal("1.00"),
        1.0,
        True,
        dt.datetime(2024, 1, 1, 10),
        dt.datetime(2024, 1, 1, 12, tzinfo=PLUS2),
        dt.date(2024, 1, 1),
        "Ana",
    ),
    (
        2,
        Decimal("-0.50"),
        0.1,
        False,
        dt.datetime(1999, 12, 31, 23, 59, 59, 123456),
        dt.datetime(1999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC),
        dt.date(1999, 12, 31),
        "5",
    ),
    (3, Decimal("1234567890.12"), 1e-05, None, None, None, None, ""),
    (
        4,
        Decimal("0.00"),
        0.1 + 0.2,
        True,
        dt.datetime(2020, 2, 29),
        dt.datetime(2020, 2, 29, tzinfo=MINUS5),
        dt.date(2020, 2, 29),
        "x y",
    ),
    (5, Decimal("10.10"), 1e20, False, None, None, None, "ü"),
    (6, None, 1000000000000000.5, None, None, None, None, None),
    (7, Decimal("7"), math.inf, None, None, None, None, "7.0"),
    (8, Decimal("-123.45"), -2.5, None, None, None, None, "  padded "),
    (9, Decimal("0.01"), math.nan, None, None, None, None, "x"),
    (10, Decimal("99.90"), -0.0, None, None, None, None, "y"),
]
#: The canonical text of each value above (None: NULL), the same on every warehouse and in Python.
EXPECTED = {
    "id": [str(i) for i in range(1, 11)],
    "amount": ["1", "-0.5", "1234567890.12", "0", "10.1", None, "7", "-123.45", "0.01", "99.9"],
    "score": ["1", "0.1", "1e-05", "0.30000000000000004", "1e+20", "1000000000000000.5", "inf", "-2.5", None, "0"],
    "flag": ["true", "false", None, "true", "false", None, None, None, None, None],
    "seen": [
        "2024-01-01T10:00:00.000000+00:00",
        "1999-12-31T23:59:59.123456+00:00",
        None,
        "2020-02-29T00:00:00.000000+00:00",
        None,
        None,
        None,
        None,
        None,
        None,
    ],
    "seen_tz": [
        "2024-01-01T10:00:00.000000+00:00",
        "1999-12-31T23:59:59.123456+00:00",
        None,
        "2020-02-29T05:00:00.000000+00:00",
        None,
        None,
        None,
        None,
        None,
        None,
    ],
    "day": ["2024-01-01", "1999-12-31", None, "2020-02-29", None, None, None, None, None, None],
    "name": ["Ana", "5", "", "x y", "ü", None, "7.0", "  padded ", "x", "y"],
}
#: What the syncs send (infinity is a reject: JSON cannot carry it).
SYNC_ROWS = [row for row in ROWS if not (isinstance(row[2], float) and math.isinf(row[2]))]
SQLITE_TYPES = {"amount": "decimal", "flag": "boolean", "seen": "timestamp", "seen_tz": "timestamptz", "day": "date"}


class Warehouse:
    """A ``vals`` table in one real warehouse, read through Airflow's hook for that kind."""

    def __init__(self, kind: str, tmp_path: Path, set_connection, pg=None, timezone: str | None = None):
        self.kind, self.pg, self.tmp_path, self.set_connection = kind, pg, tmp_path, set_connection
        self.conn_id = f"w_{kind}"
        self.column_types = SQLITE_TYPES if kind == "sqlite" else None
        if kind == "postgres":
            self.table, self.ck_table = f"{pg.name}.vals", f"{pg.name}.retl_ck"
        else:
            self.path = tmp_path / f"w.{kind}"
            self.table, self.ck_table = "vals", "retl_ck"
        self.connect_as(timezone)

    def connect_as(self, timezone: str | None) -> None:
        """(Re)register the Connection; for PostgreSQL, with this session TimeZone (a server/user default)."""
        if self.kind == "postgres":
            fields = self.pg.connection_fields()
            if timezone:
                fields["extra"] = {"options": f"{fields['extra']['options']} -c TimeZone={timezone}"}
            self.set_connection(self.conn_id, "postgres", **fields)
        else:
            self.set_connection(self.conn_id, self.kind, host=str(self.path))

    def create(self, key_type: str = "integer") -> None:
        types = {
            "postgres": "numeric(12,2), double precision, boolean, timestamp, timestamptz, date, text",
            "duckdb": "decimal(12,2), double, boolean, timestamp, timestamptz, date, varchar",
            "sqlite": "numeric(12,2), real, boolean, text, text, text, text",
        }[self.kind].split(", ")
        cols = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, [key_type, *types], strict=True))
        self.execute(f"create table {self.table} ({cols})")

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join(["?"] * len(COLUMNS))
        if self.kind == "sqlite":
            rows = [tuple(_sqlite_value(v) for v in row) for row in rows]
        self.execute(f"insert into {self.table} values ({marks})", many=rows)

    def execute(self, sql: str, *, many: list[tuple] | None = None) -> list[tuple]:
        if self.kind == "postgres":
            sql = sql.replace("?", "%s")
            with self.pg.connect() as conn, conn.cursor() as cur:
                if many is not None:
                    cur.executemany(sql, many)
                    return []
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        if self.kind == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.path))
        else:
            con = sqlite3.connect(self.path)
        try:
            if many is not None:
                con.executemany(sql, [list(r) for r in many])
                con.commit()
                return []
            cur = con.execute(sql)
            rows = cur.fetchall() if cur.description else []
            con.commit()
            return rows
        finally:
            con.close()

    def hook(self):
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    def store(self, sql: str | None = None, sync_id: str = "vals"):
        return warehouse_store(
            f"warehouse:{self.ck_table}",
            self.hook(),
            sql or f"select * from {self.table}",
            sync_id=sync_id,
            column_types=self.column_types,
        )

    def frames(self, sql: str | None = None) -> list[pd.DataFrame]:
        return list(read_query(self.hook(), sql or f"select * from {self.table}", column_types=self.column_types))


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, (Decimal, dt.date)):
        return str(value)  # SQLite has neither: text, read back through column_types
    if isinstance(value, bool):
        return int(value)
    return value


@pytest.fixture(params=["duckdb", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request, tmp_path, set_connection) -> Warehouse:
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return Warehouse(request.param, tmp_path, set_connection, pg)


def config(**kw: Any) -> SyncConfig:
    return SyncConfig(**{"sync_id": "vals", "object": "contacts", "primary_key": "id", **kw})


def sql_canonical_texts(w: Warehouse) -> pd.DataFrame:
    """What the warehouse diff hashes: the key text and every column's canonical text, computed in SQL."""
    store = w.store(f"select * from {w.table} order by id")
    diff = store.make_diff(
        InMemoryDestination(match_field="id"),
        config(),
        SyncReport("vals", "contacts", "upsert"),
        Progress(None, 60, lambda: 0.0),
    )
    diff.loaded = None
    diff.describe_query()
    # Read without column_types: these columns are texts already (the runner would read them as declared).
    frame = pd.concat(list(read_query(store.runner.hook, diff.canonical_sql())), ignore_index=True)
    return frame.rename(columns=str.lower)


def _texts(values: Any) -> list[str | None]:
    return [
        None if (v is None or v is fp.NULL or (isinstance(v, float) and math.isnan(v)) or v == fp.NULL) else v
        for v in list(values)
    ]


def test_sql_and_python_write_the_same_canonical_text_on_every_warehouse(warehouse):
    warehouse.create()
    warehouse.insert(ROWS)
    in_sql = sql_canonical_texts(warehouse)
    frame = pd.concat(warehouse.frames(f"select * from {warehouse.table} order by id"), ignore_index=True)
    for column in COLUMNS:
        in_python = _texts(fp.canonical_column(frame[column]))
        assert in_python == EXPECTED[column], f"Python, {column}"
        assert _texts(in_sql[column]) == EXPECTED[column], f"SQL on {warehouse.kind}, {column}"
    # The key's hash in SQL is the first 64 bits of the MD5 of that same text.
    store = warehouse.store(f"select * from {warehouse.table} order by id")
    store.ensure_tables()
    diff = store.make_diff(
        InMemoryDestination(match_field="id"),
        config(),
        SyncReport("vals", "contacts", "upsert"),
        Progress(None, 60, lambda: 0.0),
    )
    diff.loaded = None
    diff.describe_query()
    out = pd.concat(list(store.runner.read(diff.diff_sql(), query_uses=2)), ignore_index=True).rename(columns=str.lower)
    by_id = dict(zip(_texts(fp.canonical_column(out["id"])), out["__retl_key_hash"], strict=True))
    assert by_id == {t: hashlib.md5(t.encode()).hexdigest()[:16] for t in EXPECTED["id"]}


def _alter(w: Warehouse, column: str, new_type: str) -> None:
    if w.kind == "postgres":
        using = f" USING {column} AT TIME ZONE 'UTC'" if new_type == "timestamptz" else ""
        w.execute(f"alter table {w.table} alter column {column} type {new_type}{using}")
    elif w.kind == "duckdb":
        using = f" USING timezone('UTC', {column})" if new_type == "timestamptz" else ""
        w.execute(f"alter table {w.table} alter column {column} type {new_type}{using}")
    else:  # SQLite cannot retype: rebuild the table with the new declared type, values cast to it
        cols = ", ".join(f"cast({c} as {new_type}) as {c}" if c == column else c for c in COLUMNS)
        w.execute(f"create table vals2 as select {cols} from {w.table}")
        w.execute(f"drop table {w.table}")
        w.execute(f"alter table vals2 rename to {w.table}")


@pytest.mark.parametrize("retype", ["key", "timestamp"])
def test_a_retype_under_checkpoint_warehouse_changes_nothing(warehouse, retype):
    """integer key -> numeric(12,2) (SQLite: -> text), timestamp -> timestamptz: same values, same hashes."""
    warehouse.create()
    warehouse.insert(SYNC_ROWS)
    dest = InMemoryDestination(match_field="id")
    first = run_sync(iter(()), dest, warehouse.store(), config(mode="mirror"))
    assert first.created == len(SYNC_ROWS)
    if retype == "key":
        _alter(
            warehouse, "id", {"postgres": "numeric(12,2)", "duckdb": "decimal(12,2)", "sqlite": "text"}[warehouse.kind]
        )
    else:
        if warehouse.kind == "sqlite":
            warehouse.column_types = {**SQLITE_TYPES, "seen": "timestamptz"}  # the same text, now declared aware
        else:
            _alter(warehouse, "seen", "timestamptz")
    records = {k: dict(v) for k, v in dest.records.items()}
    calls = len(dest.calls)
    report = run_sync(iter(()), dest, warehouse.store(), config(mode="mirror"))
    assert report.planned["new"] == 0 and report.planned["removed"] == 0 and report.planned["changed"] == 0
    assert report.pushed == 0 and report.unchanged == len(SYNC_ROWS)
    assert len(dest.calls) == calls and dest.records == records  # nothing deleted, nothing re-created


@pytest.mark.postgres
def test_another_session_timezone_changes_nothing_in_sql(tmp_path, set_connection, pg_schema):
    w = Warehouse("postgres", tmp_path, set_connection, pg_schema, timezone="Asia/Tokyo")
    w.create()
    w.insert(SYNC_ROWS)
    dest = InMemoryDestination(match_field="id")
    assert run_sync(iter(()), dest, w.store(), config(mode="mirror")).created == len(SYNC_ROWS)
    for zone in ("America/New_York", "UTC", None):
        w.connect_as(zone)
        report = run_sync(iter(()), dest, w.store(), config(mode="mirror"))
        assert report.pushed == 0 and report.planned["removed"] == 0 and report.planned["new"] == 0, zone


def test_events_keyed_on_a_retyped_timestamp_are_not_sent_again(warehouse):
    """Braze-style events keyed on (user, time): naive -> aware (and DuckDB/PostgreSQL: int user -> decimal)."""
    warehouse.create()
    warehouse.insert(ROWS[:4])
    sql = f"select id as user_id, seen as event_at, name from {warehouse.table} where seen is not null"
    dest = InMemoryDestination(events=True, upsert=False, batch=50, concurrency=1, match_field=None)
    cfg = config(mode="insert", primary_key=["user_id", "event_at"])
    assert run_sync(iter(()), dest, warehouse.store(sql), cfg).events == 3
    if warehouse.kind == "sqlite":
        warehouse.column_types = {**SQLITE_TYPES, "seen": "timestamptz"}
        _alter(warehouse, "id", "real")
    else:
        _alter(warehouse, "seen", "timestamptz")
        _alter(warehouse, "id", "numeric(12,2)" if warehouse.kind == "postgres" else "decimal(12,2)")
    report = run_sync(iter(()), dest, warehouse.store(sql), cfg)
    assert report.events == 0 and report.planned["new"] == 0
    assert len(dest.events) == 3


# ---------------------------------------------------------------------- the in-memory diff
def _frames(ids: Any, at: Any) -> list[pd.DataFrame]:
    return [pd.DataFrame({"id": ids, "seen": at, "name": ["a", "b", "c"]})]


NAIVE = pd.to_datetime(["2024-01-01 10:00:00", "2024-06-01 00:00:00.5", "1999-12-31 23:59:59"], format="ISO8601")


@pytest.mark.parametrize(
    "ids, at",
    [
        (pd.array([1, 2, 3], dtype="Int64"), NAIVE),  # the first run's types: nothing changes
        (np.array([1.0, 2.0, 3.0]), NAIVE),  # int -> float
        (pd.Series([Decimal("1.00"), Decimal("2.00"), Decimal("3.00")], dtype=object), NAIVE),  # -> numeric(12,2)
        (pd.Series(["1", "2", "3"], dtype=object), NAIVE),  # -> the integer's text
        (pd.array([1, 2, 3], dtype="Int64"), NAIVE.tz_localize("UTC")),  # naive -> aware UTC
        (pd.array([1, 2, 3], dtype="Int64"), NAIVE.tz_localize("UTC").tz_convert("Asia/Tokyo")),  # another zone
        (pd.array([1, 2, 3], dtype="Int64"), pd.Series(NAIVE.to_pydatetime(), dtype=object)),  # Python datetimes
    ],
    ids=["same", "float", "decimal", "text", "aware", "tokyo", "objects"],
)
def test_the_in_memory_diff_sees_the_same_values_after_a_retype(ids, at):
    dest, store = InMemoryDestination(match_field="id"), MemoryCheckpointStore()
    first = run_sync(_frames(pd.array([1, 2, 3], dtype="Int64"), NAIVE), dest, store, config(mode="mirror"))
    assert first.created == 3
    report = run_sync(_frames(ids, at), dest, store, config(mode="mirror"))
    assert report.pushed == 0 and report.planned["new"] == 0 and report.planned["removed"] == 0
    assert report.unchanged == 3 and len(dest.records) == 3


def test_in_memory_events_keyed_on_a_timestamp_that_became_aware_are_not_resent():
    dest, store = (
        InMemoryDestination(events=True, upsert=False, batch=50, concurrency=1, match_field=None),
        MemoryCheckpointStore(),
    )
    cfg = config(mode="insert", primary_key=["id", "seen"])
    assert run_sync(_frames([1, 2, 3], NAIVE), dest, store, cfg).events == 3
    report = run_sync(_frames([1.0, 2.0, 3.0], NAIVE.tz_localize("UTC").tz_convert("Europe/Berlin")), dest, store, cfg)
    assert report.events == 0 and len(dest.events) == 3


def test_canonical_forms_of_single_values_match_the_column_forms():
    values = [1, 1.0, Decimal("1.00"), "1", np.int32(1), np.float64(1.0)]
    assert {fp.canonical_value(v) for v in values} == {"1"}
    stamps = [
        dt.datetime(2024, 1, 1, 10),
        dt.datetime(2024, 1, 1, 12, tzinfo=PLUS2),
        pd.Timestamp("2024-01-01 10:00Z"),
        np.datetime64("2024-01-01T10:00:00"),
    ]
    assert {fp.canonical_value(v) for v in stamps} == {"2024-01-01T10:00:00.000000+00:00"}
    assert fp.canonical_value(True) == "true" and fp.canonical_value(np.bool_(False)) == "false"
    assert fp.canonical_value(float("nan")) == fp.NULL and fp.canonical_value(Decimal("NaN")) == fp.NULL
    assert fp.canonical_value(Decimal("1E+3")) == "1000" and fp.canonical_value(Decimal("-0.00")) == "0"
    assert fp.canonical_value(dt.date(2024, 1, 1)) == "2024-01-01"


# ---------------------------------------------------------------------- pinned session settings
@pytest.mark.postgres
def test_postgres_text_output_settings_are_pinned_for_the_diff(set_connection, pg_schema):
    """A user/server default (here: connection options) for TimeZone, DateStyle, IntervalStyle and
    extra_float_digits cannot change the text of types the canonical SQL leaves to a plain cast."""
    fields = pg_schema.connection_fields()
    odd = "-c TimeZone=Asia/Kolkata -c DateStyle=SQL,DMY -c IntervalStyle=iso_8601 -c extra_float_digits=-3"
    pg_schema.execute(f"create table {pg_schema.name}.spans (id integer, span interval, at_time timetz, arr timestamptz[])")
    pg_schema.execute(
        f"insert into {pg_schema.name}.spans values (1, interval '1 day 02:03:04.5', '10:00+02', "
        "array[timestamptz '2024-01-01 10:00+00']), (2, interval '-3 months', '23:59:59+00', null)"
    )
    sql = f"select * from {pg_schema.name}.spans"

    def store(options: str | None):
        extra = {"options": f"{fields['extra']['options']} {options or ''}".strip()}
        set_connection("w_pg", "postgres", **{**fields, "extra": extra})
        from airflow.sdk import BaseHook

        return warehouse_store(
            f"warehouse:{pg_schema.name}.retl_ck", BaseHook.get_connection("w_pg").get_hook(), sql, sync_id="spans"
        )

    settings = pd.concat(
        list(
            store(odd).runner.read(
                "select current_setting('TimeZone') as tz, current_setting('DateStyle') as ds, "
                "current_setting('IntervalStyle') as iv, current_setting('extra_float_digits') as efd"
            )
        )
    )
    assert settings.iloc[0].tolist() == ["UTC", "ISO, MDY", "postgres", "1"]
    dest = InMemoryDestination(match_field="id")
    assert run_sync(iter(()), dest, store(None), config(mode="mirror")).created == 2
    report = run_sync(iter(()), dest, store(odd), config(mode="mirror"))
    assert report.pushed == 0 and report.unchanged == 2 and report.planned["removed"] == 0


def test_duckdb_timezone_is_pinned_for_the_diff(tmp_path, set_connection):
    path = tmp_path / "tz.duckdb"
    set_connection("w_duck", "duckdb", host=str(path))
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute("create table t (id integer, seen timestamptz)")
        con.execute("insert into t values (1, timestamptz '2024-01-01 10:00:00+00')")
    from airflow.sdk import BaseHook

    store = warehouse_store("warehouse", BaseHook.get_connection("w_duck").get_hook(), "select * from t", sync_id="tz")
    rows = pd.concat(list(store.runner.read("select current_setting('TimeZone') as tz, cast(seen as varchar) as v from t")))
    assert rows.iloc[0].tolist() == ["UTC", "2024-01-01 10:00:00+00"]


@pytest.mark.postgres
def test_braze_events_keyed_on_a_retyped_timestamp_are_delivered_once(tmp_path, set_connection, pg_schema):
    """The past bug: Braze events keyed on (external_id, time); time retyped timestamp -> timestamptz and the
    sync run under another session TimeZone. Braze has no dedupe id: only the checkpoint can stop a resend."""
    from airflow_provider_retl.hooks.braze import BrazeHook
    from airflow_provider_retl.testing.emulators import BRAZE_API_KEY, start_emulator

    t = f"{pg_schema.name}.purchases"
    pg_schema.execute(f"create table {t} (external_id integer, time timestamp, name text, amount numeric(12,2))")
    pg_schema.execute(
        f"insert into {t} select i, timestamp '2024-01-01 00:00' + i * interval '1 hour 0.25 second', 'ordered', "
        "i * 1.5 from generate_series(1, 30) as i"
    )
    w = Warehouse("postgres", tmp_path, set_connection, pg_schema)
    sql = f"select * from {t}"
    cfg = config(object="events", mode="insert", primary_key=["external_id", "time"])
    with start_emulator("braze", rate_limit=None, export_rate_limit=None) as emu:
        set_connection("braze_default", "retl_braze", host=emu.url, password=BRAZE_API_KEY, extra={"rate_limit": 0})
        assert run_sync(iter(()), BrazeHook(), w.store(sql), cfg).events == 30
        pg_schema.execute(f"alter table {t} alter column time type timestamptz using time at time zone 'UTC'")
        pg_schema.execute(f"alter table {t} alter column external_id type numeric(12,2)")
        w.connect_as("America/Los_Angeles")
        report = run_sync(iter(()), BrazeHook(), w.store(sql), cfg)
        assert report.events == 0 and report.planned["new"] == 0
        assert len(emu.emulator.events()) == 30
