"""Writing a run's rejected rows back to the warehouse (``rejects_table=``).

Analysts fix data where it lives: a table of every row a sync could not deliver, with its
key, the stage that refused it and the reason, next to the models that produced it. Rows
are appended per run (``run_id``), so the table is also a history. The SQL is plain and
portable (TEXT columns, ``CREATE TABLE IF NOT EXISTS``) across DuckDB, SQLite, PostgreSQL,
MySQL/MariaDB and Snowflake; the table name is validated, never interpolated blindly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.records import Reject
from airflow_provider_retl.sync.redaction import REDACTOR

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

COLUMNS = ("sync_id", "run_id", "rejected_at", "reject_key", "stage", "reason", "field", "code")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")
_BATCH = 1000


def check_table_name(table: str) -> str:
    """``schema.table`` made of plain identifiers, or a ConfigurationError."""
    if not _TABLE_NAME.match(table or ""):
        raise ConfigurationError(
            f"rejects_table must be a plain [database.][schema.]table name (letters, digits, _); got {table!r}"
        )
    return table


def write_rejects(hook: DbApiHook, table: str, rejects: Sequence[Reject], *, sync_id: str, run_id: str) -> int:
    """Create ``table`` if needed and append ``rejects``; returns the number of rows written."""
    check_table_name(table)
    columns = ", ".join(f"{name} TEXT" for name in COLUMNS)
    hook.run(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    if not rejects:
        return 0
    now = dt.datetime.now(dt.UTC).isoformat()
    # A reason may quote a destination's answer: scrub every registered secret before it is stored.
    rows = [
        tuple(REDACTOR.redact(v) if isinstance(v, str) else v for v in (sync_id, run_id, now, *_reject_values(r)))
        for r in rejects
    ]
    for start in range(0, len(rows), _BATCH):
        hook.insert_rows(table, rows[start : start + _BATCH], target_fields=list(COLUMNS), commit_every=_BATCH)
    return len(rows)


def _reject_values(reject: Reject) -> tuple[str | None, ...]:
    return (reject.key, reject.stage, reject.reason, reject.field, reject.code)
