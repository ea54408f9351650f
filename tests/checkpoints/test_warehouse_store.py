"""checkpoint="warehouse": the checkpoint is a table in the source warehouse and the diff runs in SQL.

The engine runs against real DuckDB, SQLite and PostgreSQL through Airflow's own SQL hooks;
the destination is the in-memory one of the engine tests (exact call counts). The same
random history is also synced with the in-memory diff, and both must agree.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from airflow_provider_retl.checkpoints.warehouse import HookSqlRunner, warehouse_store
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import OutcomeUnknownError, RetryableDestinationError
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.records import SyncReport
from airflow_provider_retl.sync.warehouse_diff import WarehouseCheckpointStore
from tests.unit.fakes import InMemoryDestination

SECRET_VALUE = "Zyxwv-unique-surname-4711"


class Source:
    """A ``people`` table in one real warehouse, read by Airflow's hook for that kind."""

    def __init__(self, kind: str, tmp_path: Path, set_connection, pg_schema=None):
        self.kind = kind
        self.conn_id = f"src_{kind}"
        self.pg = pg_schema
        if kind == "duckdb":
            self.path = tmp_path / "w.duckdb"
            set_connection(self.conn_id, "duckdb", host=str(self.path))
            self.table, self.ck_table = "people", "retl_ck"
        elif kind == "sqlite":
            self.path = tmp_path / "w.sqlite"
            set_connection(self.conn_id, "sqlite", host=str(self.path))
            self.table, self.ck_table = "people", "retl_ck"
        else:
            set_connection(self.conn_id, "postgres", **pg_schema.connection_fields())
            self.table, self.ck_table = f"{pg_schema.name}.people", f"{pg_schema.name}.retl_ck"
        self.execute("create table {t} (email varchar(200), name varchar(200), score double precision, note varchar(200))")

    def execute(self, sql: str, params: list[Any] | None = None, *, many: list[tuple] | None = None) -> list[tuple]:
        """One statement (or one statement for each of ``many``) on a connection of its own."""
        sql = sql.replace("{t}", self.table)
        params = params or []
        if self.kind == "postgres":
            sql = sql.replace("?", "%s")
            if many is None:
                return self.pg.execute(sql, tuple(params))
            with self.pg.connect() as conn, conn.cursor() as cur:
                cur.executemany(sql, [tuple(r) for r in many])
            return []
        if self.kind == "duckdb":
            import duckdb

            con = duckdb.connect(str(self.path))
        else:
            con = sqlite3.connect(self.path)
        try:
            if many is not None:
                if many:
                    con.executemany(sql, [list(r) for r in many])
                con.commit()
                return []
            cur = con.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            con.commit()
            return rows
        finally:
            con.close()

    def insert(self, rows: list[tuple]) -> None:
        self.execute("insert into {t} values (?, ?, ?, ?)", many=rows)

    def hook(self):
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    def store(self, sync_id: str = "people", sql: str | None = None, parameters: Any = None) -> WarehouseCheckpointStore:
        return warehouse_store(
            f"warehouse:{self.ck_table}", self.hook(), sql or f"select * from {self.table}", sync_id=sync_id,
            parameters=parameters,
        )

    def valid_rows(self) -> dict[str, tuple]:
        rows = self.execute("select email, name, score, note from {t}")
        keys = [r[0].strip().lower() for r in rows if r[0] is not None and r[0].strip()]
        return {r[0].strip().lower(): r for r in rows if r[0] and r[0].strip() and keys.count(r[0].strip().lower()) == 1}


@pytest.fixture(params=["duckdb", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def source(request, tmp_path, set_connection) -> Source:
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    return Source(request.param, tmp_path, set_connection, pg)


def people(n: int, start: int = 0) -> list[tuple]:
    return [(f"p{i}@example.com", f"Name {i}", i * 1.5, None if i % 3 else f"note {i}") for i in range(start, start + n)]


def config(**kw: Any) -> SyncConfig:
    return SyncConfig(**{"sync_id": "people", "object": "contacts", "primary_key": "email", **kw})


class CountingRunner:
    """Wraps the real runner and counts the rows each statement brought out of the warehouse."""

    def __init__(self, runner: HookSqlRunner):
        self.runner = runner
        self.dialect = runner.dialect
        self.rows_out: list[int] = []

    def read(self, sql, *, query_uses=0):
        for frame in self.runner.read(sql, query_uses=query_uses):
            self.rows_out.append(len(frame))
            yield frame

    def columns(self, sql, *, query_uses=0):  # noqa: D102
        return self.runner.columns(sql, query_uses=query_uses)

    def execute(self, statements, *, query_uses=()):
        return self.runner.execute(statements, query_uses=query_uses)


def test_first_noop_changed_removed_and_bad_rows(source):
    source.insert(people(250))
    source.insert([(None, "no key", 1.0, None), ("   ", "blank key", 2.0, None), ("p5@example.com", "dup", 3.0, None)])
    dest = InMemoryDestination()

    report = run_sync(iter(()), dest, source.store(), config(mode="mirror"))
    assert report.rows_read == 253 and report.created == 249 and report.planned["new"] == 249
    reasons = sorted((r.key, r.reason) for r in report.rejects)
    assert reasons[0] == ("   ", "primary key column 'email' is empty")
    assert ("NULL", "primary key column 'email' is NULL") in reasons
    assert [k for k, why in reasons if why.startswith("duplicate primary key: 2 rows")] == ["p5@example.com"] * 2
    assert dest.request_count == 3  # 249 upserts in batches of 100 (p5's two copies are rejected)

    # No-op: nothing sent, and the only rows that leave the warehouse are the fingerprints row,
    # the 4 rejected rows (reported again: they are retried every run) and one count row.
    store = source.store()
    counting = CountingRunner(store.runner)
    store.runner = counting
    report = run_sync(iter(()), dest, store, config(mode="mirror"))
    assert report.unchanged == 249 and report.pushed == 0 and dest.request_count == 3
    assert counting.rows_out == [1, 4, 1]

    source.execute("update {t} set name = 'Changed' where email in ('p1@example.com', 'p200@example.com')")
    source.execute("delete from {t} where email = 'p7@example.com'")
    source.insert(people(2, start=1000))
    report = run_sync(iter(()), dest, source.store(), config(mode="mirror"))
    assert report.planned == {"new": 2, "changed": 2, "removed": 1}
    assert (report.created, report.updated, report.deleted) == (2, 2, 1)
    assert {r["email"]: r["name"] for r in dest.records.values()}["p1@example.com"] == "Changed"
    assert sorted(r["email"] for r in dest.records.values()) == sorted(source.valid_rows())

    # The checkpoint table holds hashes and ids only, no source value.
    stored = source.execute(f"select * from {source.ck_table}") + source.execute(f"select * from {source.ck_table}_meta")
    text = repr(stored)
    assert "example.com" not in text and "Name " not in text and "Changed" not in text
    assert len(source.execute(f"select * from {source.ck_table}")) == 250  # 249 + 2 new - 1 removed
    assert report.rows_read == 254


def test_a_failed_try_resumes_from_the_batches_it_committed(source):
    source.insert(people(450))
    dest = InMemoryDestination(batch=100, concurrency=1)
    dest.fail_on["upsert"] = 3  # the third call fails; the batches acknowledged around it are committed
    with pytest.raises(RetryableDestinationError):
        run_sync(iter(()), dest, source.store(), config())
    landed = len(dest.records)
    assert 100 <= landed < 450
    assert len(source.execute(f"select * from {source.ck_table}")) == landed  # progress written per batch
    dest.fail_on.clear()
    sent_before = sum(n for kind, n in dest.calls if kind == "upsert")
    report = run_sync(iter(()), dest, source.store(), config())
    assert report.planned["new"] == 450 - landed and report.unchanged == landed
    assert sum(n for kind, n in dest.calls if kind == "upsert") - sent_before == 450 - landed
    assert len(dest.records) == 450  # no duplicates
    assert run_sync(iter(()), dest, source.store(), config()).pushed == 0


def test_mapping_change_resends_with_ids_kept_and_target_change_resets(source):
    source.insert(people(30))
    dest = InMemoryDestination()
    run_sync(iter(()), dest, source.store(), config())
    ids = {r["email"]: rid for rid, r in dest.records.items()}

    mapping = {"email": "email", "full_name": "name"}
    dry = run_sync(iter(()), dest, source.store(), config(mapping=mapping, dry_run=True))
    assert dry.planned["changed"] == 30 and dry.pushed == 0 and "mapping changed" in dry.checkpoint_reset
    report = run_sync(iter(()), dest, source.store(), config(mapping=mapping))
    assert report.planned["changed"] == 30 and report.updated == 30 and report.created == 0
    assert {r["email"]: rid for rid, r in dest.records.items()} == ids
    assert run_sync(iter(()), dest, source.store(), config(mapping=mapping)).pushed == 0

    other = InMemoryDestination()
    report = run_sync(iter(()), other, source.store(), config(mapping=mapping, object="leads"))
    assert "destination, object, primary key" in report.checkpoint_reset and report.planned["new"] == 30


def test_matches_the_in_memory_diff_over_a_random_history(source):
    rng = random.Random(7)
    source.insert(people(300))
    wh_dest, mem_dest, mem_store = InMemoryDestination(), InMemoryDestination(), MemoryCheckpointStore()
    next_id = 300
    for step in range(6):
        wh = run_sync(iter(()), wh_dest, source.store(), config(mode="mirror"))
        frame = source.hook().get_df(f"select * from {source.table}")
        mem = run_sync([frame], mem_dest, mem_store, config(mode="mirror"))
        assert wh.planned == mem.planned, step
        assert (wh.unchanged, wh.rejected, wh.rows_read) == (mem.unchanged, mem.rejected, mem.rows_read), step
        state = lambda d: sorted(tuple(sorted(r.items())) for r in d.records.values())  # noqa: E731
        assert state(wh_dest) == state(mem_dest), step
        for _ in range(rng.randint(1, 15)):
            i = rng.randrange(next_id)
            action = rng.choice(["update", "update", "delete", "insert", "dup", "null", "case"])
            if action == "update":
                source.execute("update {t} set score = ?, note = ? where email = ?", [rng.random(), rng.choice([None, "x"]), f"p{i}@example.com"])
            elif action == "delete":
                source.execute("delete from {t} where email = ?", [f"p{i}@example.com"])
            elif action == "insert":
                source.insert(people(1, start=next_id))
                next_id += 1
            elif action == "dup":
                source.insert([(f"p{i}@example.com", "copy", 0.0, None)])
            elif action == "null":
                source.insert([(None, "no key", 0.0, None)])
            else:  # the same email in other case and with spaces: one key for the destination
                source.execute("update {t} set email = ? where email = ?", [f" P{i}@Example.com ", f"p{i}@example.com"])


def test_events_are_sent_once_across_a_killed_try(source):
    source.insert(people(120))
    dest = InMemoryDestination(events=True, upsert=False, batch=50, concurrency=1)
    dest.lose_response_on["send_events"] = 2  # applied, then the answer is lost
    with pytest.raises(OutcomeUnknownError):
        run_sync(iter(()), dest, source.store(), config(mode="insert"))
    landed = len(dest.events)
    assert landed >= 100  # the lost batch landed too; only its answer is missing
    report = run_sync(iter(()), dest, source.store(), config(mode="insert"))
    assert dest.count("reconcile") >= 1  # the batch whose answer was lost was asked about, not re-sent
    assert report.events == 120 - landed
    keys = [fields["email"] for _, fields in dest.events]
    assert len(keys) == 120 and len(set(keys)) == 120
    assert run_sync(iter(()), dest, source.store(), config(mode="insert")).pushed == 0


def test_rebaseline_marks_everything_synced_in_sql(source):
    source.insert(people(80))
    dest = InMemoryDestination()
    report = run_sync(iter(()), dest, source.store(), config(rebaseline=True))
    assert report.pushed == 0 and dest.request_count == 0
    assert len(source.execute(f"select * from {source.ck_table}")) == 80
    source.execute("update {t} set name = 'x' where email = 'p3@example.com'")
    report = run_sync(iter(()), dest, source.store(), config())
    assert report.planned == {"new": 0, "changed": 1, "removed": 0}


def test_query_parameters_go_with_every_copy_of_the_query(source):
    source.insert(people(40))
    style = {"duckdb": ("$1", [10]), "sqlite": ("?", [10]), "postgres": ("%(n)s", {"n": 10})}[source.kind]
    sql = f"select * from {source.table} where score >= {style[0]}"
    dest = InMemoryDestination()
    report = run_sync(iter(()), dest, source.store(sql=sql, parameters=style[1]), config(mode="mirror"))
    assert report.created == 33 and report.rows_read == 33  # scores 10.5 .. 58.5 (i >= 7)
    report = run_sync(iter(()), dest, source.store(sql=sql, parameters=style[1]), config(mode="mirror"))
    assert report.pushed == 0 and report.planned["removed"] == 0


class _DialectOnly:
    def __init__(self, dialect: str):
        self.dialect = dialect


@pytest.mark.parametrize("dialect", ["snowflake", "bigquery", "postgres", "duckdb", "sqlite", "mysql", "redshift"])
def test_generated_sql_parses_in_each_dialect_and_matches_its_snapshot(dialect):
    """Snowflake and BigQuery have no server here: their SQL is checked against reviewed snapshots."""
    store = WarehouseCheckpointStore(_DialectOnly(dialect), "select * from crm.people", sync_id="s", table="ops.retl_ck")  # type: ignore[arg-type]
    diff = store.make_diff(InMemoryDestination(), config(mapping={"email": "email", "name": "name"}), SyncReport("s", "contacts", "upsert"), Progress(None, 60, lambda: 0.0))  # type: ignore[arg-type]
    diff.loaded = None
    diff.sql_names = {"email": "EMAIL", "name": "NAME", "score": "SCORE"}  # as Snowflake reports unquoted names
    diff._setup_columns(["email", "name", "score"])
    statements = {"diff": diff.diff_sql(), "removed": diff.removed_sql(), "rebaseline": ";\n".join(diff.rebaseline_statements())}
    for name, sql in statements.items():
        for statement in sql.split(";\n"):
            sqlglot.parse_one(statement, read=dialect)  # raises on SQL the dialect cannot read
        assert "select * from crm.people" in sql, name  # the user's query verbatim, never transpiled
    snapshot = Path(__file__).parent / "snapshots" / f"warehouse_diff_{dialect}.sql"
    text = "\n\n".join(f"-- {name}\n{sql}" for name, sql in statements.items()) + "\n"
    if not snapshot.exists():
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text)
        pytest.fail(f"snapshot {snapshot.name} written; review it and run again")
    assert text == snapshot.read_text()
    if dialect == "bigquery":
        assert "TO_HEX(MD5(" in text and "AS STRING)" in text
    if dialect == "snowflake":
        assert "MD5(" in text and "TO_HEX" not in text


def test_partitions_are_refused_with_the_reason(tmp_path, set_connection):
    from airflow_provider_retl.sync.errors import ConfigurationError

    source = Source("sqlite", tmp_path, set_connection)
    source.insert(people(3))
    with pytest.raises(ConfigurationError, match="partitioned syncs use the variable, xcom or file"):
        run_sync(iter(()), InMemoryDestination(), source.store(), config(partition=(0, 2)))
