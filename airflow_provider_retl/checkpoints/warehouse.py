"""``checkpoint="warehouse"``: the checkpoint as a table in the source warehouse, diffed in SQL.

The diff itself (SQL, decisions) is in ``sync.warehouse_diff``; this module only runs its
SQL through the sync's own common.sql hook, reading with the same streaming reader as
the sync (``sources.read_query``) so payload types are exactly what a normal read gives.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any

import pandas as pd
import sqlglot
from sqlglot import exp

from airflow_provider_retl.checkpoints.spec import lease_label
from airflow_provider_retl.sources import column_names, convert_value, read_query, source_kind
from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import Checkpoint, JournalEntry, LeaseHolder, LeasingMixin
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.sqlcompose import SESSION_SETTINGS
from airflow_provider_retl.sync.sqlnames import DEFAULT_TABLE, warehouse_checkpoint_table
from airflow_provider_retl.sync.warehouse_diff import DIALECTS, WarehouseCheckpointStore


class HookSqlRunner:
    """Runs the warehouse diff's SQL with a common.sql hook; the user's parameters go with the user's query."""

    def __init__(
        self,
        hook: Any,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        chunksize: int = 50_000,
        column_types: Mapping[str, str] | None = None,
        repeat_parameters: bool = True,
    ) -> None:
        kind = source_kind(hook)
        if kind not in DIALECTS:
            raise ConfigurationError(
                f"checkpoint='warehouse' needs one of {sorted(DIALECTS)} as the source; {type(hook).__name__} is not"
            )
        self.dialect = DIALECTS[kind]
        # SQLite gets MD5 and Python's canonical values; PostgreSQL and DuckDB sessions get their text-output
        # settings pinned (TimeZone, DateStyle, ...), so a server or user default cannot change a hash.
        self.hook = _SqliteWithMd5(hook) if kind == "sqlite" else _PinnedSession(hook, kind)
        self.kind = kind
        self.parameters = parameters
        self.chunksize = chunksize
        self.column_types = column_types
        self.repeat_parameters = repeat_parameters

    def _params(self, uses: int) -> Any:
        """The user's parameters once per occurrence of the query (positional styles need copies)."""
        if self.parameters is None or uses == 0:
            return None
        if isinstance(self.parameters, Mapping) or not self.repeat_parameters:
            return self.parameters
        return list(self.parameters) * uses

    def read(self, sql: str, *, query_uses: int = 0) -> Iterator[pd.DataFrame]:
        # column_types name the query's columns; statements without them (meta rows, removed keys) ignore them.
        return read_query(
            self.hook,
            sql,
            self._params(query_uses),
            chunksize=self.chunksize,
            column_types=self.column_types,
            strict_column_types=False,
        )

    def columns(self, sql: str, *, query_uses: int = 0) -> list[tuple[str, str, Any]]:
        with closing(self.hook.get_conn()) as conn:
            cursor = conn.cursor()
            params = self._params(query_uses)
            _run(cursor, sql, params)
            description = list(cursor.description or [])
            if self.kind in ("postgres", "redshift"):
                conn.rollback()
        # The reader's names (Snowflake's unquoted upper case folded) beside the names SQL must quote, and the
        # type code that picks each column's canonical SQL.
        shown = column_names(description, self.kind)
        return [(str(d[0]), name, d[1]) for d, name in zip(description, shown, strict=True)]

    def execute(self, statements: Sequence[str], *, query_uses: Sequence[int] = ()) -> None:
        uses = list(query_uses) + [0] * (len(statements) - len(query_uses))
        with closing(self.hook.get_conn()) as conn:
            if self.kind == "duckdb":
                conn.execute("BEGIN TRANSACTION")
            cursor = conn.cursor()
            try:
                for sql, n in zip(statements, uses, strict=True):
                    params = self._params(n)
                    _run(cursor, sql, params)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()


def _run(cursor: Any, sql: str, params: Any) -> None:
    if params is None:
        cursor.execute(sql)  # no parameters: drivers must not scan the SQL for placeholders
    else:
        cursor.execute(sql, params)


class _SqliteWithMd5:
    """SQLite has no MD5 and types values, not columns: each connection gets Python's MD5 and Python's
    canonical values (``retl_canonical(value, declared column type)``), so the diff's SQL runs inside SQLite
    and gives exactly the text the in-memory diff gives."""

    conn_type = "sqlite"

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def get_conn(self) -> Any:
        conn = self._hook.get_conn()
        conn.create_function("md5", 1, _md5_hex, deterministic=True)
        conn.create_function("retl_canonical", 2, _sqlite_canonical, deterministic=True)
        return conn


class _PinnedSession:
    """The hook, with ``sqlcompose.SESSION_SETTINGS`` run on every connection it opens."""

    def __init__(self, hook: Any, kind: str) -> None:
        self._hook = hook
        self._settings = SESSION_SETTINGS.get(DIALECTS[kind], ())
        self.conn_type = getattr(hook, "conn_type", None) or kind
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)

    def get_conn(self) -> Any:
        conn = self._hook.get_conn()
        if self._settings:
            if self._kind == "duckdb":
                for statement in self._settings:
                    conn.execute(statement)
            else:
                _apply_settings(conn, self._settings)
        return conn


def _apply_settings(conn: Any, settings: Sequence[str]) -> None:
    """Each setting on its own, in autocommit: one a server refuses (Redshift has no IntervalStyle) neither
    aborts the others nor the diff. The canonical SQL does not depend on them; plain text casts do."""
    previous = getattr(conn, "autocommit", False)
    conn.autocommit = True
    try:
        with closing(conn.cursor()) as cursor:
            for statement in settings:
                try:
                    cursor.execute(statement)
                except Exception:  # noqa: BLE001, S112 - an unsupported setting keeps the server's default
                    continue
    finally:
        conn.autocommit = previous


def _sqlite_canonical(value: Any, declared: str) -> str | None:
    """``canonical_value`` of one SQLite value, read as its declared ``column_types`` entry when it has one."""
    if value is None:
        return None
    if declared:
        value = convert_value(value, declared)
    text = fp.canonical_value(value)
    return None if text == fp.NULL else text


def _md5_hex(value: Any) -> str | None:
    if value is None:
        return None
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def warehouse_store(
    spec: str,
    hook: Any,
    sql: str,
    *,
    sync_id: str,
    parameters: Mapping[str, Any] | Sequence[Any] | None = None,
    chunksize: int = 50_000,
    column_types: Mapping[str, str] | None = None,
) -> WarehouseCheckpointStore:
    """The store for ``"warehouse"`` / ``"warehouse:<schema>.<table>"`` on the sync's source hook."""
    table = warehouse_checkpoint_table(spec)
    # Positional placeholders (?, %s) are consumed once per occurrence of the query; numbered
    # ones ($1, DuckDB/PostgreSQL style) name the same value wherever they occur.
    numbered = re.search(r"\$\d", sql) is not None
    runner = HookSqlRunner(
        hook, parameters, chunksize=chunksize, column_types=column_types, repeat_parameters=not numbered
    )
    store = LeasedWarehouseCheckpointStore(runner, sql, sync_id=sync_id, table=table)
    store.lease_label = lease_label()
    return store


# ----------------------------------------------------------------------------------------------
# The sync lease in the warehouse: a row per sync in ``<table>_lease``, taken and renewed atomically

#: Warehouses whose PRIMARY KEY is only informational: two INSERTs of one sync_id both succeed.
_UNENFORCED_KEYS = {"snowflake", "bigquery", "redshift"}


class LeasedWarehouseCheckpointStore(WarehouseCheckpointStore, LeasingMixin):
    """The warehouse checkpoint plus the sync lease, one row per sync in ``<table>_lease``.

    Taking the lease deletes an expired row (or this owner's) and inserts this try's row in one
    transaction; the table's primary key on ``sync_id`` makes two concurrent takers conflict, and
    the loser waits. Renewal is ``UPDATE ... WHERE owner = me AND expires_at > now`` (one row
    or lost). Commits and finalize check the lease first, in their own statement just before
    the commit's transaction (not inside it): the window between the two is milliseconds, and
    the heartbeat keeps the lease far from expiry. Snowflake, BigQuery and Redshift do not
    enforce primary keys: there, after inserting, a taker reads the live rows back and the
    smallest owner token wins, which is best effort for takers that race within one round trip.
    """

    def __init__(self, runner: Any, query: str, *, sync_id: str, table: str = DEFAULT_TABLE) -> None:
        super().__init__(runner, query, sync_id=sync_id, table=table)
        self._lease_table = f"{table}_lease"
        self._lease_sync_id = sync_id
        self._lease_created = False

    # -------------------------------------------------------------- lease SQL (PostgreSQL syntax, transpiled)
    def _lease_sql(self, template: str) -> str:
        return ";\n".join(sqlglot.transpile(template, read="postgres", write=self.runner.dialect))

    @staticmethod
    def _text(value: str) -> str:
        return exp.Literal.string(value).sql("postgres")

    def _where_sync(self) -> str:
        return f"sync_id = {self._text(self._lease_sync_id)}"

    def _run_lease(self, statements: Sequence[str]) -> list[int]:
        """Run ``statements`` in one transaction; the row count of each."""
        hook = getattr(self.runner, "hook", None)
        if hook is None:  # a custom runner: no row counts; its execute() is all we have
            self.runner.execute(list(statements))
            return [-1] * len(statements)
        counts = []
        with closing(hook.get_conn()) as conn:
            if getattr(self.runner, "kind", "") == "duckdb":
                conn.execute("BEGIN TRANSACTION")
            cursor = conn.cursor()
            try:
                for sql in statements:
                    cursor.execute(sql)
                    counts.append(getattr(cursor, "rowcount", -1))
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return counts

    def _ensure_lease_table(self) -> None:
        if self._lease_created:
            return
        create = self._lease_sql(
            f"CREATE TABLE IF NOT EXISTS {self._lease_table} (sync_id VARCHAR(200) NOT NULL PRIMARY KEY, "
            f"owner VARCHAR(64) NOT NULL, label VARCHAR(500), expires_at DOUBLE PRECISION NOT NULL, "
            f"host VARCHAR(300), pid INTEGER)"
        )
        try:
            self._run_lease([create])
        except Exception:  # noqa: BLE001 - PostgreSQL: two racing CREATE IF NOT EXISTS, one fails; now it exists
            self._run_lease([create])
        self._lease_created = True

    def _live_holders(self, now: float) -> list[LeaseHolder]:
        frames = list(
            self.runner.read(
                self._lease_sql(
                    f"SELECT owner, label, expires_at, host, pid FROM {self._lease_table} "
                    f"WHERE {self._where_sync()} AND expires_at > {now!r}"
                )
            )
        )
        rows = pd.concat(frames) if frames else pd.DataFrame()
        holders = []
        for _, row in rows.iterrows():
            record = {str(k).lower(): (None if pd.isna(v) else v) for k, v in row.items()}
            holder = LeaseHolder.from_json(record)
            if holder is not None:
                holders.append(holder)
        return sorted(holders, key=lambda h: h.owner)

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        self._ensure_lease_table()
        me = self._text(holder.owner)
        for dead in self._live_holders(now):
            if dead.owner != holder.owner and dead.is_over(now):  # its process is gone from this host
                self._lease_release(dead.owner)
        try:
            self._run_lease(
                [
                    self._lease_sql(
                        f"DELETE FROM {self._lease_table} WHERE {self._where_sync()} "
                        f"AND (expires_at <= {now!r} OR owner = {me})"
                    ),
                    self._lease_sql(
                        f"INSERT INTO {self._lease_table} (sync_id, owner, label, expires_at, host, pid) VALUES "
                        f"({self._text(self._lease_sync_id)}, {me}, {self._text(holder.label[:500])}, "
                        f"{holder.expires_at!r}, {self._text(holder.host[:300])}, {int(holder.pid)})"
                    ),
                ]
            )
        except Exception:  # the primary key refused a second holder (any driver's error type)
            live = [h for h in self._live_holders(now) if h.owner != holder.owner]
            if live:
                return live[0]
            raise  # no holder to blame: a real error
        if self.runner.dialect in _UNENFORCED_KEYS:
            live = self._live_holders(now)
            if live and live[0].owner != holder.owner:
                self._lease_release(holder.owner)
                return live[0]
        return None

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        counts = self._run_lease(
            [
                self._lease_sql(
                    f"UPDATE {self._lease_table} SET expires_at = {holder.expires_at!r} WHERE {self._where_sync()} "
                    f"AND owner = {self._text(holder.owner)} AND expires_at > {now!r}"
                )
            ]
        )
        if counts[0] >= 0:
            return counts[0] == 1
        return any(h.owner == holder.owner for h in self._live_holders(now))  # driver without row counts

    def _lease_release(self, owner: str) -> None:
        self._ensure_lease_table()
        self._run_lease(
            [
                self._lease_sql(
                    f"DELETE FROM {self._lease_table} WHERE {self._where_sync()} AND owner = {self._text(owner)}"
                )
            ]
        )

    # -------------------------------------------------------------- every write checks the lease first
    def commit(self, entry: JournalEntry, *, target_fingerprint: str, payload_fingerprint: str) -> None:
        self.check_lease()
        super().commit(entry, target_fingerprint=target_fingerprint, payload_fingerprint=payload_fingerprint)

    def finalize(self, checkpoint: Checkpoint) -> None:
        self.check_lease(confirm=True)
        super().finalize(checkpoint)

    def discard(self) -> None:
        self.check_lease()
        super().discard()

    def forget_contents(self, target: str, payload: str) -> None:
        self.check_lease()
        super().forget_contents(target, payload)
