"""HistoryStore on real DbApiHooks: bulk writes (round trips counted), the reader API, names."""

from __future__ import annotations

import sqlite3

import pytest

from airflow_provider_retl.history.store import CHUNK, HistoryStore
from airflow_provider_retl.operators.history import parse_history
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.outcomes import RecordOutcomes
from airflow_provider_retl.sync.records import Reject
from airflow_provider_retl.sync.redaction import REDACTOR


class _CountingCursor:
    def __init__(self, cursor, calls):
        self._cursor, self._calls = cursor, calls

    def execute(self, *args, **kwargs):
        self._calls.append("execute")
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args, **kwargs):
        self._calls.append("executemany")
        return self._cursor.executemany(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _CountingConnection:
    def __init__(self, conn, calls):
        self._conn, self._calls = conn, calls

    def cursor(self, *args, **kwargs):
        return _CountingCursor(self._conn.cursor(*args, **kwargs), self._calls)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.fixture
def counting_hook(tmp_path, set_connection):
    """A real SqliteHook whose connections count every statement sent (the database's round trips)."""
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    set_connection("hist_count", "sqlite", host=str(tmp_path / "h.sqlite"))
    calls: list[str] = []

    class CountingSqliteHook(SqliteHook):
        def get_conn(self):
            return _CountingConnection(super().get_conn(), calls)

    hook = CountingSqliteHook(sqlite_conn_id="hist_count")
    hook.calls = calls
    return hook


def test_many_rows_are_written_in_a_few_round_trips(counting_hook):
    store = HistoryStore(counting_hook)
    store.ensure_tables()
    outcomes = RecordOutcomes()
    n = 2 * CHUNK + 17
    outcomes.pushed("create", [f"k{i}" for i in range(n)], [str(i) for i in range(n)], list(range(n)))
    outcomes.rejected(Reject("bad", "invalid email 'x'", "validation", field="email", row_hash=2**64 - 1))
    counting_hook.calls.clear()
    assert store.write_changes("s", "r", 1, outcomes) == n + 1
    assert counting_hook.calls == ["executemany"] * 3  # one per chunk of CHUNK rows, never one per row
    count = sqlite3.connect(counting_hook.get_connection("hist_count").host).execute(
        "select count(*), max(row_hash) from retl_changes"
    ).fetchone()
    assert count == (n + 1, "ffffffffffffffff")


def test_reader_api(tmp_path, set_connection):
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    set_connection("hist_read", "sqlite", host=str(tmp_path / "r.sqlite"))
    store = HistoryStore(SqliteHook(sqlite_conn_id="hist_read"), prefix="h_")
    for sync_id, run_id, started, state in [
        ("a", "r1", "2026-01-01T00:00:00.000000+00:00", "success"),
        ("a", "r2", "2026-01-02T00:00:00.000000+00:00", "failed"),
        ("b", "r1", "2026-01-01T12:00:00.000000+00:00", "success"),
    ]:
        store.write_run({"sync_id": sync_id, "run_id": run_id, "try_number": 1, "started_at": started, "state": state})
    assert [r["run_id"] for r in store.runs("a")] == ["r2", "r1"]
    assert [(s["sync_id"], s["state"]) for s in store.syncs()] == [("a", "failed"), ("b", "success")]
    outcomes = RecordOutcomes()
    for i in range(7):
        # Seven different values, one kind of problem: one group, as the report groups them.
        reason = f"invalid email 'k{i}@': There must be something after the @-sign."
        outcomes.rejected(Reject(f"k{i}", reason, "validation", field="email", row_hash=i))
    outcomes.rejected(Reject("k9", "HTTP 400", "destination", code="400"))
    store.write_changes("a", "r2", 1, outcomes)
    groups = store.reject_groups("a")
    assert [(g["stage"], g["count"]) for g in groups] == [("validation", 7), ("destination", 1)]
    assert groups[0]["examples"] == ["k0", "k1", "k2", "k3", "k4"]
    assert groups[0]["reason"] == "invalid email '…': There must be something after the @-sign."
    assert store.key_history("a", "k9")[0]["http_status"] == 400
    assert store.acknowledge_rejects("a", by="me", reason=groups[0]["reason"]) == 7
    assert store.pending_acknowledgements("a") == {f"k{i}": i for i in range(7)}
    assert store.describe("c")["runs_table"] == "h_runs"


def test_secrets_are_redacted_then_truncated(tmp_path, set_connection):
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    secret = "sk-very-secret-token-42"
    REDACTOR.add(secret)
    set_connection("hist_red", "sqlite", host=str(tmp_path / "s.sqlite"))
    store = HistoryStore(SqliteHook(sqlite_conn_id="hist_red"))
    store.write_run({"sync_id": "s", "run_id": "r", "try_number": 1, "started_at": "x",
                     "error_message": f"boom {secret} " + "y" * 5000})
    outcomes = RecordOutcomes()
    outcomes.rejected(Reject("k", f"refused: token {secret}", "destination"))
    store.write_changes("s", "r", 1, outcomes)
    message = store.runs("s")[0]["error_message"]
    assert secret not in message and len(message) <= 2000
    assert secret not in store.key_history("s", "k")[0]["reason"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"history": "somewhere"}, "history must be"),
        ({"history": "conn:"}, "history must be"),
        ({"history_schema": "a; drop table x"}, "history_schema"),
        ({"history_payload": "yes"}, "history_payload"),
        ({"history_retention_days": 0}, "history_retention_days"),
    ],
)
def test_bad_history_parameters_fail_at_parse_time(kwargs, needle):
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    with pytest.raises(ConfigurationError, match=needle):
        ReverseETLOperator(
            task_id="t", conn_id="c", sql="select 1", destination_conn_id="d", object="contacts", primary_key="id",
            **kwargs,
        )
    spec = parse_history("conn:other", "s", True, 7)
    assert spec is not None and (spec.conn_id, spec.schema, spec.payload, spec.retention_days) == ("other", "s", True, 7)
    assert parse_history(None) is None


def test_duckdb_writes_one_statement_per_chunk(tmp_path, set_connection):
    from airflow.providers.duckdb.hooks.duckdb import DuckDBHook

    set_connection("hist_duck", "duckdb", host=str(tmp_path / "h.duckdb"))
    statements: list[str] = []

    class CountingDuckDBHook(DuckDBHook):
        def get_conn(self):
            conn = super().get_conn()

            class Counting:
                def execute(self, sql, *args):
                    statements.append(sql)
                    return conn.execute(sql, *args)

                def __getattr__(self, name):
                    return getattr(conn, name)

            return Counting()

    store = HistoryStore(CountingDuckDBHook(duckdb_conn_id="hist_duck"))
    store.ensure_tables()
    outcomes = RecordOutcomes()
    n = CHUNK + 3
    outcomes.pushed("update", [f"k{i}" for i in range(n)], [None] * n, [None] * n)
    statements.clear()
    assert store.write_changes("s", "r", 2, outcomes) == n
    assert [s.split()[0] for s in statements] == ["INSERT", "INSERT"]
    assert store.hook.get_records("select count(*), min(try_number), count(destination_id) from retl_changes") == [
        (n, 2, 0)
    ]
