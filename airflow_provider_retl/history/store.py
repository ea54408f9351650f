"""Sync history in SQL tables: one row per try (``<prefix>runs``), one per record (``<prefix>changes``).

The tables live in any common.sql database (by default the sync's own warehouse), so a user
queries them next to their models, and the Airflow UI plugin reads them through this module
(which imports neither Airflow nor FastAPI at module level: it needs only a DbApiHook-like
object with ``run``, ``get_records``, ``insert_rows`` and ``placeholder``).

Portability: TEXT, BIGINT and DOUBLE PRECISION columns only, timestamps as ISO-8601 UTC text
(``2026-12-08T01:20:00.000000+00:00``, which sorts as time does), booleans as 0/1 and row
hashes as 16 hex digits. That SQL runs unchanged on DuckDB, SQLite, PostgreSQL, MySQL/MariaDB
and Snowflake. Rows are written in chunks (``executemany``, one transaction per chunk), never
one round trip per row. Every text that may quote a destination's answer is redacted (every
registered secret masked) before it is truncated and stored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.records import reason_pattern
from airflow_provider_retl.sync.redaction import REDACTOR

if TYPE_CHECKING:
    from airflow_provider_retl.sync.outcomes import RecordOutcomes

__all__ = ["ACK_COLUMNS", "CHANGE_COLUMNS", "RUN_COLUMNS", "HistoryStore", "utc_now"]

#: (column, SQL type) of the runs table, in order. docs/history.md says what each one means.
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sync_id", "TEXT"),
    ("dag_id", "TEXT"),
    ("run_id", "TEXT"),
    ("task_id", "TEXT"),
    ("map_index", "BIGINT"),
    ("try_number", "BIGINT"),
    ("started_at", "TEXT"),
    ("ended_at", "TEXT"),
    ("state", "TEXT"),
    ("rows_read", "BIGINT"),
    ("planned_new", "BIGINT"),
    ("planned_changed", "BIGINT"),
    ("planned_removed", "BIGINT"),
    ("unchanged", "BIGINT"),
    ("created", "BIGINT"),
    ("updated", "BIGINT"),
    ("upserted", "BIGINT"),
    ("deleted", "BIGINT"),
    ("events", "BIGINT"),
    ("skipped", "BIGINT"),
    ("rejected", "BIGINT"),
    ("requests", "BIGINT"),
    ("retries", "BIGINT"),
    ("seconds", "DOUBLE PRECISION"),
    ("checkpoint_store", "TEXT"),
    ("error_class", "TEXT"),
    ("error_message", "TEXT"),
    ("dry_run", "BIGINT"),
    ("destination_conn_id", "TEXT"),
    ("object_name", "TEXT"),
    ("sync_mode", "TEXT"),
    ("destination_url", "TEXT"),
)

#: (column, SQL type) of the changes table (the row changelog), in order.
CHANGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sync_id", "TEXT"),
    ("run_id", "TEXT"),
    ("try_number", "BIGINT"),
    ("changed_at", "TEXT"),
    ("record_key", "TEXT"),
    ("operation", "TEXT"),
    ("status", "TEXT"),
    ("reason", "TEXT"),
    ("reason_group", "TEXT"),
    ("stage", "TEXT"),
    ("field_name", "TEXT"),
    ("reason_code", "TEXT"),
    ("http_status", "BIGINT"),
    ("attempts", "BIGINT"),
    ("destination_id", "TEXT"),
    ("row_hash", "TEXT"),
    ("payload", "TEXT"),
)

#: (column, SQL type) of the acknowledgements table.
ACK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sync_id", "TEXT"),
    ("record_key", "TEXT"),
    ("row_hash", "TEXT"),
    ("acknowledged_at", "TEXT"),
    ("acknowledged_by", "TEXT"),
    ("applied_at", "TEXT"),
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Rows per INSERT round trip (executemany) and per transaction.
CHUNK = 5000
#: Longest stored reason / error message (after redaction).
MAX_TEXT = 2000
#: Keys per ``IN (...)`` list.
IN_CHUNK = 500


def utc_now() -> str:
    """Now as the tables store time: ISO-8601 UTC with microseconds (sorts as time does)."""
    return stamp(dt.datetime.now(dt.UTC))


def stamp(moment: dt.datetime) -> str:
    """``moment`` in the tables' time format (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def clean_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Redact every registered secret, then truncate (never the other way round)."""
    if value is None:
        return None
    text = REDACTOR.redact(str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_history_names(schema: str | None, prefix: str) -> None:
    """A schema (``[database.]schema``) and table prefix made of plain identifiers, or a ConfigurationError."""
    if schema is not None and not _SCHEMA.match(schema):
        raise ConfigurationError(
            f"history_schema must be a plain [database.]schema name (letters, digits, _); got {schema!r}"
        )
    if not isinstance(prefix, str) or not _IDENTIFIER.match(prefix + "x"):
        raise ConfigurationError(f"history table prefix must be letters, digits and _; got {prefix!r}")


class HistoryStore:
    """Read and write a sync history: runs, the row changelog and acknowledged rejects.

    ``HistoryStore(hook, schema=None, prefix="retl_")`` works on the tables
    ``[schema.]<prefix>runs``, ``<prefix>changes`` and ``<prefix>acks`` through any common.sql
    DbApiHook. A user (or the UI) can list runs and syncs, group a run's rejects by reason,
    follow one record key through time, acknowledge rejects so they stop being retried (until
    the row changes), and purge old rows.
    """

    def __init__(self, hook: Any, schema: str | None = None, prefix: str = "retl_") -> None:
        check_history_names(schema, prefix)
        self.hook = hook
        self.schema = schema
        self.prefix = prefix
        dot = f"{schema}." if schema else ""
        self.runs_table = f"{dot}{prefix}runs"
        self.changes_table = f"{dot}{prefix}changes"
        self.acks_table = f"{dot}{prefix}acks"
        self._ensured = False

    @classmethod
    def from_location(cls, location: Mapping[str, Any]) -> HistoryStore:
        """The store a sync report's ``history`` entry names (``{"conn_id", "schema", "runs_table", ...}``).

        Resolves the connection through Airflow (imported here, not at module level).
        """
        from airflow.sdk import BaseHook

        runs_table = str(location.get("runs_table") or "retl_runs")
        prefix = runs_table.rsplit(".", 1)[-1][: -len("runs")] if runs_table.endswith("runs") else "retl_"
        hook = BaseHook.get_connection(str(location["conn_id"])).get_hook()
        return cls(hook, schema=location.get("schema") or None, prefix=prefix)

    # ------------------------------------------------------------------ plumbing
    @property
    def _p(self) -> str:
        return str(getattr(self.hook, "placeholder", None) or "%s")

    def _records(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.hook.get_records(sql, parameters=tuple(parameters)) or [])

    def _dicts(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def _insert(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert in chunks of CHUNK rows: one executemany and one transaction per chunk."""
        if _is_duckdb(self.hook):
            return self._insert_duckdb(table, columns, rows)
        written = 0
        for chunk in _chunks(rows, CHUNK):
            self.hook.insert_rows(table, chunk, target_fields=list(columns), commit_every=CHUNK, executemany=True)
            written += len(chunk)
        return written

    def _insert_duckdb(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        """DuckDB: one ``INSERT ... SELECT`` from a registered DataFrame per chunk.

        DuckDB's executemany binds row by row (5,000 rows took ~30 s where this takes ~0.1 s).
        """
        import pandas as pd

        names = ", ".join(columns)
        written = 0
        conn = self.hook.get_conn()
        try:
            for chunk in _chunks(rows, CHUNK):
                frame = pd.DataFrame.from_records(chunk, columns=list(columns))
                conn.register("retl_history_chunk", frame)
                try:
                    conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM retl_history_chunk")
                finally:
                    conn.unregister("retl_history_chunk")
                written += len(chunk)
        finally:
            conn.close()
        return written

    def ensure_tables(self) -> None:
        """Create the tables if missing (``CREATE TABLE IF NOT EXISTS``; idempotent, once per store)."""
        if self._ensured:
            return
        statements = []
        if self.schema:
            statements.append(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        for table, columns in (
            (self.runs_table, RUN_COLUMNS),
            (self.changes_table, CHANGE_COLUMNS),
            (self.acks_table, ACK_COLUMNS),
        ):
            body = ", ".join(f"{name} {kind}" for name, kind in columns)
            statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        self.hook.run(statements)
        self._ensured = True

    # ------------------------------------------------------------------ writing
    def write_run(self, run: Mapping[str, Any]) -> None:
        """Append one try's row; ``run`` maps column names (see RUN_COLUMNS) to values (missing: NULL)."""
        self.ensure_tables()
        values = []
        for name, _ in RUN_COLUMNS:
            value = run.get(name)
            if name in ("error_message", "destination_url", "checkpoint_store"):
                value = clean_text(value)
            elif isinstance(value, bool):
                value = int(value)
            values.append(value)
        self._insert(self.runs_table, [n for n, _ in RUN_COLUMNS], [tuple(values)])

    def write_changes(
        self,
        sync_id: str,
        run_id: str,
        try_number: int,
        outcomes: RecordOutcomes,
        *,
        at: str | None = None,
        payload: bool = False,
    ) -> int:
        """Append one row per record outcome of a try, in chunks; returns the number of rows written.

        ``payload`` stores the fields sent (personal data: off unless the user asked for it).
        """
        self.ensure_tables()
        at = at or utc_now()
        payloads = outcomes.payloads if payload else None

        def rows() -> Iterator[tuple[Any, ...]]:
            for i, (key, operation, status, dest_id, reason, stage, field, code, row_hash) in enumerate(
                outcomes.rows()
            ):
                body = None
                if payloads is not None and payloads[i] is not None:
                    body = REDACTOR.redact(json.dumps(payloads[i], default=str, sort_keys=True))
                yield (
                    sync_id,
                    run_id,
                    try_number,
                    at,
                    key,
                    operation,
                    status,
                    clean_text(reason),
                    None if reason is None else clean_text(reason_pattern(reason)),
                    stage,
                    field,
                    clean_text(code, 200),
                    _http_status(code),
                    None,
                    dest_id,
                    None if row_hash is None else f"{int(row_hash) & 0xFFFFFFFFFFFFFFFF:016x}",
                    body,
                )

        return self._insert(self.changes_table, [n for n, _ in CHANGE_COLUMNS], rows())

    def purge(self, older_than_days: float, sync_id: str | None = None) -> int:
        """Delete runs, changes and applied acknowledgements older than ``older_than_days``; returns runs deleted.

        With ``sync_id``, only that sync's rows (what a run does at write time).
        """
        self.ensure_tables()
        cutoff = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=float(older_than_days)))
        where, params = "", [cutoff]
        if sync_id is not None:
            where, params = f" AND sync_id = {self._p}", [cutoff, sync_id]
        count = self._records(f"SELECT COUNT(*) FROM {self.runs_table} WHERE started_at < {self._p}{where}", params)
        self.hook.run(
            [
                f"DELETE FROM {self.runs_table} WHERE started_at < {self._p}{where}",
                f"DELETE FROM {self.changes_table} WHERE changed_at < {self._p}{where}",
                f"DELETE FROM {self.acks_table} WHERE applied_at IS NOT NULL AND applied_at < {self._p}{where}",
            ],
            parameters=params,
        )
        return int(count[0][0]) if count else 0

    # ------------------------------------------------------------------ reading
    def runs(self, sync_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Runs (one row per try), newest first; all syncs, or one."""
        self.ensure_tables()
        columns = [n for n, _ in RUN_COLUMNS]
        where, params = "", []
        if sync_id is not None:
            where, params = f" WHERE sync_id = {self._p}", [sync_id]
        rows = self._records(
            f"SELECT {', '.join(columns)} FROM {self.runs_table}{where} "
            f"ORDER BY started_at DESC, try_number DESC LIMIT {int(limit)}",
            params,
        )
        return self._dicts(columns, rows)

    def syncs(self) -> list[dict[str, Any]]:
        """The latest try of every sync id, most recently started first."""
        self.ensure_tables()
        columns = [n for n, _ in RUN_COLUMNS]
        select = ", ".join(f"r.{c}" for c in columns)
        rows = self._records(
            f"SELECT {select} FROM {self.runs_table} r JOIN "
            f"(SELECT sync_id, MAX(started_at) AS last_started FROM {self.runs_table} GROUP BY sync_id) l "
            f"ON r.sync_id = l.sync_id AND r.started_at = l.last_started "
            f"ORDER BY r.started_at DESC"
        )
        seen: dict[str, dict[str, Any]] = {}
        for run in self._dicts(columns, rows):
            kept = seen.get(run["sync_id"])
            if kept is None or (run["try_number"] or 0) > (kept["try_number"] or 0):
                seen[run["sync_id"]] = run
        return list(seen.values())

    def last_run_id(self, sync_id: str) -> str | None:
        """The run id of the sync's most recent try."""
        runs = self.runs(sync_id, limit=1)
        return runs[0]["run_id"] if runs else None

    def reject_groups(self, sync_id: str, run_id: str | None = None, examples: int = 5) -> list[dict[str, Any]]:
        """Rejects of a run's last try (default: the latest run) grouped by stage and reason, largest first.

        Each group: ``{"reason", "stage", "reason_code", "count", "examples": [keys]}``.
        """
        self.ensure_tables()
        run_id = run_id or self.last_run_id(sync_id)
        if run_id is None:
            return []
        p = self._p
        tries = self._records(
            f"SELECT MAX(try_number) FROM {self.changes_table} WHERE sync_id = {p} AND run_id = {p}",
            [sync_id, run_id],
        )
        if not tries or tries[0][0] is None:
            return []
        scope = f"sync_id = {p} AND run_id = {p} AND try_number = {p} AND status = 'rejected'"
        params = [sync_id, run_id, tries[0][0]]
        groups = self._records(
            # By the reason's pattern (its values blanked, as the report groups them): 1,000 invalid
            # emails are one group, not 1,000.
            f"SELECT reason_group, stage, MIN(reason_code), COUNT(*) FROM {self.changes_table} WHERE {scope} "
            f"GROUP BY reason_group, stage ORDER BY COUNT(*) DESC LIMIT 100",
            params,
        )
        out = []
        for reason, stage, code, count in groups:
            keys = self._records(
                f"SELECT record_key FROM {self.changes_table} WHERE {scope} AND reason_group = {p} AND stage = {p} "
                f"ORDER BY record_key LIMIT {int(examples)}",
                [*params, reason, stage],
            )
            out.append(
                {
                    "reason": reason,
                    "stage": stage,
                    "reason_code": code,
                    "count": int(count),
                    "examples": [k[0] for k in keys],
                }
            )
        return out

    def key_history(self, sync_id: str, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The recent outcomes of one record key, newest first (with acknowledgement state)."""
        self.ensure_tables()
        columns = [n for n, _ in CHANGE_COLUMNS]
        rows = self._records(
            f"SELECT {', '.join(columns)} FROM {self.changes_table} WHERE sync_id = {self._p} AND record_key = {self._p} "
            f"ORDER BY changed_at DESC, try_number DESC LIMIT {int(limit)}",
            [sync_id, key],
        )
        return self._dicts(columns, rows)

    # ------------------------------------------------------------------ acknowledgements
    def acknowledge(self, sync_id: str, keys: Sequence[str], by: str) -> int:
        """Stop retrying the rejects of ``keys`` until their rows change; returns how many were acknowledged.

        Each acknowledgement keeps the row hash the key's latest reject had: the next run marks
        the row as synced as it is (nothing sent) only while its content still has that hash.
        Keys without a reject on record are ignored.
        """
        self.ensure_tables()
        latest: dict[str, tuple[str, str | None]] = {}
        unique = list(dict.fromkeys(str(k) for k in keys))
        for start in range(0, len(unique), IN_CHUNK):
            part = unique[start : start + IN_CHUNK]
            marks = ", ".join([self._p] * len(part))
            rows = self._records(
                f"SELECT record_key, changed_at, row_hash FROM {self.changes_table} "
                f"WHERE sync_id = {self._p} AND status = 'rejected' AND record_key IN ({marks})",
                [sync_id, *part],
            )
            for key, at, row_hash in rows:
                if key not in latest or at > latest[key][0]:
                    latest[key] = (at, row_hash)
        now = utc_now()
        who = clean_text(by, 200)
        rows_out = [(sync_id, key, row_hash, now, who, None) for key, (_, row_hash) in latest.items()]
        return self._insert(self.acks_table, [n for n, _ in ACK_COLUMNS], rows_out)

    def acknowledge_rejects(
        self,
        sync_id: str,
        by: str,
        run_id: str | None = None,
        reason: str | None = None,
        stage: str | None = None,
    ) -> int:
        """Acknowledge every reject of a run's last try (default: the latest run), or those of one reason/stage."""
        self.ensure_tables()
        run_id = run_id or self.last_run_id(sync_id)
        if run_id is None:
            return 0
        p = self._p
        where = f"sync_id = {p} AND run_id = {p} AND status = 'rejected'"
        params: list[Any] = [sync_id, run_id]
        if reason is not None:  # a group's reason, as reject_groups() gives it
            where += f" AND reason_group = {p}"
            params.append(reason)
        if stage is not None:
            where += f" AND stage = {p}"
            params.append(stage)
        keys = [
            r[0] for r in self._records(f"SELECT DISTINCT record_key FROM {self.changes_table} WHERE {where}", params)
        ]
        return self.acknowledge(sync_id, keys, by)

    def acknowledgements(self, sync_id: str, pending_only: bool = True) -> list[dict[str, Any]]:
        """Acknowledgements of a sync (by default only those no run has applied yet), newest first."""
        self.ensure_tables()
        columns = [n for n, _ in ACK_COLUMNS]
        where = " AND applied_at IS NULL" if pending_only else ""
        rows = self._records(
            f"SELECT {', '.join(columns)} FROM {self.acks_table} WHERE sync_id = {self._p}{where} "
            f"ORDER BY acknowledged_at DESC",
            [sync_id],
        )
        return self._dicts(columns, rows)

    def pending_acknowledgements(self, sync_id: str) -> dict[str, int]:
        """Key -> row hash of the acknowledgements the next run applies (the latest per key)."""
        out: dict[str, int] = {}
        for ack in reversed(self.acknowledgements(sync_id)):  # oldest first: the latest wins
            if ack["row_hash"]:
                out[ack["record_key"]] = int(ack["row_hash"], 16)
        return out

    def mark_applied(self, sync_id: str, keys: Sequence[str]) -> None:
        """Record that a run applied the acknowledgements of ``keys``."""
        if not keys:
            return
        now = utc_now()
        unique = list(dict.fromkeys(keys))
        statements, parameters = [], []
        for start in range(0, len(unique), IN_CHUNK):
            part = unique[start : start + IN_CHUNK]
            marks = ", ".join([self._p] * len(part))
            statements.append(
                f"UPDATE {self.acks_table} SET applied_at = {self._p} "
                f"WHERE sync_id = {self._p} AND applied_at IS NULL AND record_key IN ({marks})"
            )
            parameters.append([now, sync_id, *part])
        for sql, params in zip(statements, parameters, strict=True):
            self.hook.run(sql, parameters=params)

    def describe(self, conn_id: str | None = None) -> dict[str, Any]:
        """Where this history lives, as the sync report's ``history`` entry carries it."""
        return {
            "conn_id": conn_id,
            "schema": self.schema,
            "runs_table": self.runs_table,
            "changes_table": self.changes_table,
            "acks_table": self.acks_table,
        }


def _chunks(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _is_duckdb(hook: Any) -> bool:
    return type(hook).__module__.startswith("airflow.providers.duckdb") or getattr(hook, "conn_type", None) == "duckdb"


def _http_status(code: str | None) -> int | None:
    """A destination code that is an HTTP status (``"400"``, ``"HTTP 422"``) as a number; else None."""
    if not code:
        return None
    match = re.fullmatch(r"(?:HTTP[ _]?)?([1-5]\d\d)", str(code).strip(), re.IGNORECASE)
    return int(match.group(1)) if match else None
