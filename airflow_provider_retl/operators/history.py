"""The operator's side of the sync history: where it lives, and writing one try into it.

``history="warehouse"`` (the default) keeps the tables in the sync's own warehouse
(``conn_id``), ``history="conn:<conn_id>"`` in another common.sql database, and
``history=None`` turns it off. Writing never changes a try's outcome: a history that cannot
be written (a read-only warehouse, a database that is down) is a redacted warning in the
task log, and the sync's result (success, failure, report) stays what it was. A sync must not
stop delivering data because its bookkeeping database is unavailable; the warning says so.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_retl.history.store import HistoryStore, check_history_names, clean_text, utc_now
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.redaction import REDACTOR

if TYPE_CHECKING:
    from airflow_provider_retl.sync.outcomes import RecordOutcomes
    from airflow_provider_retl.sync.records import SyncReport

__all__ = ["HistorySpec", "parse_history"]

WAREHOUSE = "warehouse"
CONN_PREFIX = "conn:"


class HistorySpec:
    """Where a sync's history lives: ``conn_id`` None means the sync's own warehouse connection."""

    def __init__(
        self, conn_id: str | None, schema: str | None, payload: bool, retention_days: float | None, prefix: str
    ):
        self.conn_id = conn_id
        self.schema = schema
        self.payload = payload
        self.retention_days = retention_days
        self.prefix = prefix


def parse_history(
    history: Any,
    schema: Any = None,
    payload: Any = False,
    retention_days: Any = 90,
    prefix: Any = "retl_",
) -> HistorySpec | None:
    """Check the ``history*`` parameters (a ConfigurationError names the bad one); None: history off."""
    if history is None or history is False:
        return None
    if not isinstance(history, str) or not (
        history == WAREHOUSE or (history.startswith(CONN_PREFIX) and history[len(CONN_PREFIX) :].strip())
    ):
        raise ConfigurationError(
            f"history must be 'warehouse' (the sync's own conn_id), 'conn:<conn_id>' (another SQL "
            f"connection) or None (off); got {history!r}"
        )
    if schema is not None and not isinstance(schema, str):
        raise ConfigurationError(f"history_schema must be a schema name or None; got {schema!r}")
    try:
        check_history_names(schema or None, prefix)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc)) from None
    if not isinstance(payload, bool):
        raise ConfigurationError(f"history_payload must be True or False; got {payload!r}")
    if retention_days is not None and (
        isinstance(retention_days, bool) or not isinstance(retention_days, numbers.Real) or retention_days <= 0
    ):
        raise ConfigurationError(
            f"history_retention_days must be a number of days > 0, or None; got {retention_days!r}"
        )
    conn_id = None if history == WAREHOUSE else history[len(CONN_PREFIX) :].strip()
    days = None if retention_days is None else float(retention_days)
    return HistorySpec(conn_id, schema or None, payload, days, prefix)


def open_store(spec: HistorySpec, warehouse_hook: Any) -> HistoryStore:
    """The store of ``spec``: on the warehouse hook, or on the hook of the connection it names."""
    hook = warehouse_hook
    if spec.conn_id is not None:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(spec.conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise ConfigurationError(
                f"history connection {spec.conn_id!r} gives a {type(hook).__name__}, not a common.sql DbApiHook"
            )
    return HistoryStore(hook, schema=spec.schema, prefix=spec.prefix)


def run_row(
    operator: Any,
    context: Any,
    report: SyncReport | None,
    *,
    sync_id: str,
    started_at: str,
    error: BaseException | None,
    destination_url: str | None,
) -> dict[str, Any]:
    """The runs-table row of one try (counts from the report as far as the try got)."""
    ti = context["ti"]
    row: dict[str, Any] = {
        "sync_id": sync_id,
        "dag_id": operator.dag_id,
        "run_id": context["run_id"],
        "task_id": operator.task_id,
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "started_at": started_at,
        "ended_at": utc_now(),
        "state": "failed" if error is not None else "success",
        "error_class": type(error).__name__ if error is not None else None,
        "error_message": clean_text(error) if error is not None else None,
        "dry_run": bool(operator.plan_only),
        "destination_conn_id": operator.destination_conn_id,
        "object_name": operator.object,
        "sync_mode": operator.mode,
        "destination_url": destination_url or None,
    }
    if report is not None:
        row.update(
            rows_read=report.rows_read,
            planned_new=report.planned.get("new", 0),
            planned_changed=report.planned.get("changed", 0),
            planned_removed=report.planned.get("removed", 0),
            unchanged=report.unchanged,
            created=report.created,
            updated=report.updated,
            upserted=report.upserted,
            deleted=report.deleted,
            events=report.events,
            skipped=sum(report.skipped.values()),
            rejected=report.rejected,
            requests=report.requests,
            retries=report.retries,
            seconds=report.seconds,
            checkpoint_store=report.checkpoint,
        )
    return row


def write_try(
    store: HistoryStore,
    spec: HistorySpec,
    run: Mapping[str, Any],
    outcomes: RecordOutcomes,
    log: Any,
) -> bool:
    """Write one try's run row and changelog, then purge what is past retention; False (and a warning) on failure."""
    try:
        store.write_run(run)
        written = store.write_changes(
            str(run["sync_id"]), str(run["run_id"]), int(run["try_number"] or 0), outcomes, payload=spec.payload
        )
        if spec.retention_days is not None:
            store.purge(spec.retention_days, sync_id=str(run["sync_id"]))
        log.info("Sync history: 1 run and %d record outcomes written to %s", written, store.changes_table)
        return True
    except Exception as exc:  # noqa: BLE001 - history never changes the sync's outcome
        warn(log, f"could not write the sync history to {store.runs_table}", exc)
        return False


def warn(log: Any, what: str, exc: BaseException) -> None:
    """A redacted warning: the sync's own result is unchanged."""
    log.warning("%s: %s (the sync's result is unchanged)", what, REDACTOR.redact(f"{type(exc).__name__}: {exc}")[:2000])
