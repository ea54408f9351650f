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

from airflow_provider_retl.sources import column_names, convert_value, read_query, source_kind
from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.sqlcompose import SESSION_SETTINGS
from airflow_provider_retl.sync.sqlnames import warehouse_checkpoint_table
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
    return WarehouseCheckpointStore(runner, sql, sync_id=sync_id, table=table)
