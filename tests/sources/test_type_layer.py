"""Sources with no server here (BigQuery, Redshift, Snowflake beyond fakesnow's range), covered at the
type layer: rows and descriptions shaped like their drivers' output, read by the same reader and
hashed to the same fingerprints as the logical table everywhere else."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import numpy as np
import orjson
import pandas as pd
import pytest

from airflow_provider_retl.sources import read_query, source_kind
from airflow_provider_retl.sync import fingerprint, values

from . import logical_table as lt

UTC = dt.timezone.utc


class _Cursor:
    def __init__(self, description, rows):
        self.description = description
        self._rows = list(rows)
        self.executed = None

    def execute(self, sql, parameters=None):
        self.executed = (sql, parameters)

    def fetchmany(self, size):
        chunk, self._rows = self._rows[:size], self._rows[size:]
        return chunk

    def close(self):
        pass


class _Connection:
    def __init__(self, cursor):
        self._cursor = cursor
        self.autocommit = True
        self.cursor_args = None

    def cursor(self, *args, **kwargs):
        self.cursor_args = (args, kwargs)
        return self._cursor

    def rollback(self):
        pass

    def close(self):
        pass


class _RedshiftConnectorCursor(_Cursor):
    """redshift_connector's cursor answers a statement with ``fetchall``; here, ``FETCH FORWARD n FROM c``."""

    def __init__(self, description, rows):
        super().__init__(description, rows)
        self.statements, self._fetched = [], []

    def execute(self, sql, parameters=None):
        self.statements.append(sql)
        if sql.startswith("FETCH FORWARD "):
            self._fetched = self.fetchmany(int(sql.split()[2]))

    def fetchall(self):
        return self._fetched


class _RedshiftConnectorConnection(_Connection):
    def cursor(self):  # like redshift_connector.Connection.cursor: no name, so no server-side cursor of its own
        return self._cursor


def _hook(class_name: str, description, rows, connection_class=_Connection, cursor_class=_Cursor):
    connection = connection_class(cursor_class(description, rows))
    hook_class = type(class_name, (), {"get_conn": lambda self: connection})
    return hook_class(), connection


def _utc(row):
    r = list(row)
    r[7] = None if r[7] is None else r[7].astimezone(UTC)
    return r


def _assert_logical(frame):
    assert orjson.dumps(lt.wire(frame)).decode() == orjson.dumps(lt.EXPECTED_WIRE).decode()
    assert fingerprint.row_hashes(frame[lt.COLUMNS]).tolist() == lt.reference_hashes().tolist()


def _bq_cast(text, bq_type):
    # What BigQueryHook's cursor (airflow/providers/google/cloud/utils/bigquery.py: bq_cast, provider 22.8.0)
    # makes of the REST API's text: only these four types are converted, the rest stays as the API sent it.
    if text is None:
        return None
    if bq_type == "INTEGER":
        return int(text)
    if bq_type in ("FLOAT", "TIMESTAMP"):
        return float(text)
    if bq_type == "BOOLEAN":
        return text == "true"
    return text


def _bigquery_description(types):
    return [(name, code, None, None, None, None, True) for name, code in zip(lt.COLUMNS, types, strict=True)]


def test_bigquery_hook_cursor_rows():
    # BigQueryHook.get_conn() is the provider's own BigQueryConnection: rows are the REST API's text through
    # bq_cast (TIMESTAMP as float epoch seconds, NUMERIC/DATE/DATETIME as text, BYTES base64, JSON text).
    types = ["INTEGER", "STRING", "BIGNUMERIC", "BIGNUMERIC", "INTEGER", "DATE", "DATETIME", "TIMESTAMP", "BOOLEAN",
             "JSON", "BYTES", "FLOAT"]
    rows = []
    for row in lt.ROWS:
        r = _utc(row)
        rest = [
            None if r[0] is None else str(r[0]), r[1], None if r[2] is None else str(r[2]),
            None if r[3] is None else str(r[3]), None if r[4] is None else str(r[4]),
            None if r[5] is None else r[5].isoformat(), None if r[6] is None else r[6].isoformat(),
            None if r[7] is None else format(r[7].timestamp(), ".15E"),  # e.g. "1.704157445123456E+09"
            None if r[8] is None else str(r[8]).lower(), None if r[9] is None else json.dumps(r[9]),
            None if r[10] is None else base64.b64encode(r[10]).decode(), None if r[11] is None else repr(r[11]),
        ]
        rows.append(tuple(_bq_cast(text, code) for text, code in zip(rest, types, strict=True)))
    assert isinstance(rows[0][7], float) and isinstance(rows[0][2], str)  # the hook's shapes, not Python types
    hook, _ = _hook("BigQueryHook", _bigquery_description(types), rows)
    assert source_kind(hook) == "bigquery"
    _assert_logical(pd.concat(list(read_query(hook, "select ...", chunksize=2)), ignore_index=True))


def test_bigquery_hook_cursor_repeated_and_record():
    # REPEATED values arrive as [{"v": ...}]; RECORD values as {"f": [{"v": ...}]}, without field names.
    description = [("tags", "STRING", None, None, None, None, False), ("prices", "NUMERIC", None, None, None, None, False),
                   ("address", "RECORD", None, None, None, None, True)]
    rows = [([{"v": "a"}, {"v": "b"}], [{"v": "1.10"}], None), ([], [], None)]
    hook, _ = _hook("BigQueryHook", description, rows)
    (frame,) = read_query(hook, "select ...")
    assert frame["tags"].tolist() == [["a", "b"], []] and frame["prices"].tolist() == [[Decimal("1.10")], []]
    record = [([], [], {"f": [{"v": "Zürich"}, {"v": "8001"}]})]
    hook, _ = _hook("BigQueryHook", description, record)
    with pytest.raises(ValueError, match=r"column 'address'.*select TO_JSON\(address\) AS address"):
        list(read_query(hook, "select ..."))


def test_bigquery_dbapi_rows():
    # google-cloud-bigquery's DB-API (a hook whose get_conn() returns google.cloud.bigquery.dbapi's connection):
    # NUMERIC/BIGNUMERIC -> Decimal, DATETIME -> naive, TIMESTAMP -> UTC-aware, BYTES -> bytes; the description's
    # type_code is the BigQuery type name. JSON arrives as text here.
    types = ["INTEGER", "STRING", "BIGNUMERIC", "BIGNUMERIC", "INTEGER", "DATE", "DATETIME", "TIMESTAMP", "BOOLEAN",
             "JSON", "BYTES", "FLOAT"]
    description = [(name, code, None, None, None, None, True) for name, code in zip(lt.COLUMNS, types, strict=True)]
    rows = []
    for row in lt.ROWS:
        r = _utc(row)
        r[3] = None if r[3] is None else Decimal(r[3])
        r[9] = None if r[9] is None else json.dumps(r[9])
        rows.append(tuple(r))
    hook, _ = _hook("BigQueryHook", description, rows)
    assert source_kind(hook) == "bigquery"
    _assert_logical(pd.concat(list(read_query(hook, "select ...", chunksize=2)), ignore_index=True))


def test_bigquery_dataframe_shapes_repeated_and_struct():
    # BigQueryHook.get_df (to_dataframe): INT64 -> Int64, TIMESTAMP -> datetime64[us, UTC], DATETIME -> datetime64[us],
    # REPEATED -> numpy arrays, STRUCT -> dicts, NUMERIC -> Decimal objects.
    frame = pd.DataFrame({
        "id": pd.array([1, None], dtype="Int64"),
        "at": pd.Series([dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC), None], dtype="datetime64[us, UTC]"),
        "local": pd.Series([dt.datetime(2024, 1, 2, 3, 4, 5), None], dtype="datetime64[us]"),
        "tags": pd.Series([np.array(["a", "b"], dtype=object), np.array([], dtype=object)]),
        "scores": pd.Series([np.array([1, 2], dtype=np.int64), None]),
        "address": pd.Series([{"city": "Zürich", "zip": "8001", "geo": {"lat": Decimal("47.37")}}, None]),
        "price": pd.Series([Decimal("12345678901234567890.1234567890"), None], dtype=object),
    })
    rows, failures = values.frame_to_wire(frame)
    assert failures == {}
    assert rows[0] == {
        "id": 1, "at": "2024-01-02T01:04:05.123456+00:00", "local": "2024-01-02T03:04:05", "tags": ["a", "b"],
        "scores": [1, 2], "address": {"city": "Zürich", "zip": "8001", "geo": {"lat": "47.37"}},
        "price": "12345678901234567890.123456789",
    }
    assert rows[1] == {"id": None, "at": None, "local": None, "tags": [], "scores": None, "address": None, "price": None}
    # The same values as DB-API rows (lists instead of arrays, Python ints) hash the same.
    as_rows = [tuple(None if v is pd.NA or v is pd.NaT else (v.tolist() if isinstance(v, np.ndarray) else v)
                     for v in rec) for rec in frame.astype(object).itertuples(index=False)]
    from airflow_provider_retl.sources import frame_from_rows

    assert fingerprint.row_hashes(frame).tolist() == fingerprint.row_hashes(frame_from_rows(as_rows, list(frame.columns))).tolist()


@pytest.mark.parametrize(("hook_class", "kind"), [("RedshiftSQLHook", "redshift"), ("PostgresHook", "postgres")])
def test_redshift_rows(hook_class, kind):
    # Redshift through redshift_connector (the amazon provider's RedshiftSQLHook) or through psycopg (a
    # ``postgres`` connection, test_redshift.py): NUMERIC -> Decimal, TIMESTAMPTZ -> aware, SUPER (type 4000)
    # -> JSON text, VARBYTE (type 6551) -> its hex text (redshift_connector asks for it in text format and
    # returns it as str; psycopg knows no loader for 6551 and does the same).
    oids = [23, 25, 1700, 1700, 20, 1082, 1114, 1184, 16, 4000, 6551, 701]
    description = [(name, oid, None, None, None, None, None) for name, oid in zip(lt.COLUMNS, oids, strict=True)]
    rows = []
    for row in lt.ROWS:
        r = _utc(row)
        r[3] = None if r[3] is None else Decimal(r[3])
        r[9] = None if r[9] is None else json.dumps(r[9])
        r[10] = None if r[10] is None else r[10].hex()
        rows.append(tuple(r))
    if hook_class == "RedshiftSQLHook":
        hook, connection = _hook(hook_class, description, rows, _RedshiftConnectorConnection, _RedshiftConnectorCursor)
    else:
        hook, connection = _hook(hook_class, description, rows)
    assert source_kind(hook) == kind
    _assert_logical(pd.concat(list(read_query(hook, "select ...", chunksize=2)), ignore_index=True))
    # Redshift streams through a server-side cursor too, outside autocommit: psycopg's named cursor, or
    # DECLARE/FETCH in SQL where the driver's cursor() takes no name (test_redshift.py runs that on PostgreSQL).
    assert connection.autocommit is False
    if hook_class == "RedshiftSQLHook":
        statements = connection._cursor.statements
        assert statements[0].startswith("DECLARE retl_") and statements[0].endswith(" CURSOR FOR select ...")
        name = statements[0].split()[1]
        assert statements[1:] == [f"FETCH FORWARD 2 FROM {name}"] * 3 + [f"CLOSE {name}"]
    else:
        assert connection.cursor_args[1]["name"].startswith("retl_")


def test_snowflake_number_38_0_beyond_int64():
    # The Snowflake connector returns NUMBER(38,0) as Python int (fakesnow caps it at BIGINT, so it is covered here).
    description = [("ID", 0, None, None, 38, 0, True), ("BIG", 0, None, None, 38, 0, True)]
    hook, _ = _hook("SnowflakeHook", description, [(1, 2**70), (2, -(2**65)), (3, None)])
    (frame,) = read_query(hook, "select id, big from t")
    assert list(frame.columns) == ["id", "big"]
    wire, _ = values.frame_to_wire(frame)
    assert [r["big"] for r in wire] == ["1180591620717411303424", "-36893488147419103232", None]
    reference = lt.frame_from_rows([(r[0], r[3]) for r in lt.ROWS], ["id", "big"])
    assert fingerprint.row_hashes(frame).tolist() == fingerprint.row_hashes(reference).tolist()


def test_json_with_integers_beyond_64_bits_hashes_and_sends_them_as_text():
    frame = lt.frame_from_rows([({"n": 2**70, "xs": [2**80]},)], ["doc"])
    assert fingerprint.canonical_value(frame["doc"][0]) == '{"n":"1180591620717411303424","xs":["1208925819614629174706176"]}'
    assert values.frame_to_wire(frame)[0] == [{"doc": {"n": "1180591620717411303424", "xs": ["1208925819614629174706176"]}}]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("boolean", "yes", True), ("boolean", 0, False), ("integer", "1180591620717411303424", 2**70),
        ("decimal", "1.10", Decimal("1.10")), ("timestamptz", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("timestamp", "2024-01-02T03:04:05+02:00", dt.datetime(2024, 1, 2, 1, 4, 5)), ("date", "2024-02-29", dt.date(2024, 2, 29)),
        ("json", b'{"a": 1}', {"a": 1}), ("string", 5, "5"),
    ],
)
def test_declared_types(kind, raw, expected):
    from airflow_provider_retl.sources import _convert

    assert _convert(raw, kind, "c") == expected


def test_a_value_that_does_not_fit_its_declared_type_fails_naming_the_column():
    from airflow_provider_retl.sources import _convert

    with pytest.raises(ValueError, match="column 'flag': cannot read 'maybe' as boolean"):
        _convert("maybe", "boolean", "flag")
