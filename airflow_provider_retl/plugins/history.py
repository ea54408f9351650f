"""One sync's page data: from its history tables when its reports name them, else from the reports.

A report carries ``report["history"] = {"conn_id", "schema", "runs_table", "changes_table", ...}``
when the sync writes history (the default). The history tables know every try (Airflow keeps
the XCom of a task's last try only) and every record's outcome; the reports alone know the
last try of each run and the rejects they kept. A history that cannot be read (a database
that is down, a DuckDB file a running sync holds) is never an error page: the page falls
back to the reports and says why, naming only the error's class (messages may quote a DSN).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_retl.plugins.data import (
    Run,
    Sync,
    group_syncs,
    key_outcomes_from_reports,
    reject_groups_from_reports,
)

log = logging.getLogger(__name__)

#: Tries read from the runs table per sync page.
HISTORY_RUNS = 200


@dataclass(frozen=True)
class SyncView:
    """What the sync page shows: the runs, grouped rejects and a record's outcomes."""

    sync: Sync
    groups: Sequence[Mapping[str, Any]] = ()
    rejects_run: str | None = None
    outcomes: Sequence[Mapping[str, Any]] = ()
    #: Where the data came from, for the page ("table x in connection y"); None: the reports.
    source: str | None = None
    #: Whether the rejects groups come from a readable history (which can record acknowledgements).
    from_history: bool = False


def history_location(sync: Sync) -> Mapping[str, Any] | None:
    """The ``history`` entry of the newest report that has one."""
    for run in sync.runs:
        where = (run.report or {}).get("history")
        if isinstance(where, Mapping) and where.get("conn_id") and where.get("runs_table"):
            return where
    return None


def open_history(where: Mapping[str, Any]) -> Any:
    """A ``HistoryStore`` on the tables ``where`` (a report's ``history`` entry) names.

    The API server runs in Airflow's "server" process context, where the task SDK resolves
    connections from the metadata DB and secrets backends as well as the environment.
    """
    from airflow_provider_retl.history.store import HistoryStore

    store = HistoryStore.from_location(where)
    if store.runs_table != where["runs_table"]:
        raise ValueError("the report's history tables do not follow the store's naming")
    # The report says the sync wrote these tables: a page view must not create tables in a warehouse.
    store._ensured = True
    return store


def _moment(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def runs_from_history(rows: Sequence[Mapping[str, Any]], known: Sequence[Run], dag_ids: Collection[str]) -> list[Run]:
    """History rows as ``Run``s (only DAGs the user may read), with the XCom report of the tries Airflow still has."""
    by_try = {(r.dag_id, r.run_id, r.task_id, r.map_index, r.try_number): r for r in known}
    runs = []
    for row in rows:
        if row.get("dag_id") not in dag_ids:
            continue
        where = (row.get("dag_id"), row.get("run_id"), row.get("task_id"), row.get("map_index"), row.get("try_number"))
        ti_run = by_try.get(where)  # type: ignore[arg-type]
        counts = {op: int(row.get(op) or 0) for op in ("created", "updated", "upserted", "deleted", "events")}
        seconds = row.get("seconds")
        runs.append(
            Run(
                sync_id=str(row["sync_id"]),
                dag_id=str(row["dag_id"]),
                run_id=str(row["run_id"]),
                task_id=str(row["task_id"]),
                map_index=-1 if row.get("map_index") is None else int(row["map_index"]),
                try_number=int(row.get("try_number") or 0),
                state=str(row.get("state") or "none"),
                start=_moment(row.get("started_at")),
                end=_moment(row.get("ended_at")),
                seconds=float(seconds) if seconds is not None else None,
                report=ti_run.report if ti_run else None,
                link=(ti_run.link if ti_run else "") or str(row.get("destination_url") or ""),
                counts=counts,
                rejected=int(row.get("rejected") or 0),
                requests=int(row.get("requests") or 0),
            )
        )
    # Tries the history does not have (running now, or written before history was on) stay listed.
    recorded = {(r.dag_id, r.run_id, r.task_id, r.map_index, r.try_number) for r in runs}
    runs += [r for key, r in by_try.items() if key not in recorded]
    return runs


def _outcome(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": _moment(row.get("changed_at")),
        "run_id": row.get("run_id"),
        "try_number": row.get("try_number"),
        "operation": row.get("operation"),
        "status": row.get("status"),
        "reason": row.get("reason"),
        "http_status": row.get("http_status"),
    }


def sync_view(sync: Sync, *, key: str | None, dag_ids: Collection[str]) -> SyncView:
    """The sync page's data: from the history tables its reports name, else from the reports."""
    where = history_location(sync)
    if where is not None:
        try:
            store = open_history(where)
            rows = store.runs(sync.sync_id, limit=HISTORY_RUNS)
            runs = runs_from_history(rows, sync.runs, dag_ids)
            merged = group_syncs(runs)[0] if runs else sync
            latest = next((r for r in merged.runs if r.start is not None), merged.last)
            groups = store.reject_groups(sync.sync_id, latest.run_id)
            outcomes = [_outcome(row) for row in store.key_history(sync.sync_id, key)] if key else []
            return SyncView(
                sync=merged,
                groups=groups,
                rejects_run=latest.run_id,
                outcomes=outcomes,
                source=f"{where['runs_table']} and {where.get('changes_table')} (connection {where['conn_id']})",
                from_history=True,
            )
        except Exception as exc:  # noqa: BLE001 - an unreadable history falls back to the reports
            log.warning("Sync history of %s unreadable (%s); showing the reports", sync.sync_id, type(exc).__name__)
            fallback = f"unreadable ({type(exc).__name__}); showing what Airflow's reports hold"
            return _from_reports(sync, key, source=fallback)
    return _from_reports(sync, key, source=None)


def acknowledge(sync: Sync, *, run_id: str, reason: str, stage: str, by: str) -> int:
    """Acknowledge the rejects of one reason in ``run_id`` (they stop being retried until their rows change)."""
    where = history_location(sync)
    if where is None:
        raise LookupError("this sync keeps no history, so it cannot record acknowledgements")
    return int(open_history(where).acknowledge_rejects(sync.sync_id, by, run_id=run_id, reason=reason, stage=stage))


def tries_of(run: Run) -> list[Run]:
    """Every try of ``run``'s task instance the history recorded, newest first ([] without a readable history)."""
    where = history_location(Sync(run.sync_id, [run]))
    if where is None:
        return []
    try:
        rows = open_history(where).runs(run.sync_id, limit=HISTORY_RUNS)
    except Exception as exc:  # noqa: BLE001 - the tab still shows the report without the tries
        log.warning("Sync history of %s unreadable (%s)", run.sync_id, type(exc).__name__)
        return []
    mine = [
        row
        for row in rows
        if (row.get("dag_id"), row.get("run_id"), row.get("task_id"), row.get("map_index"))
        == (run.dag_id, run.run_id, run.task_id, run.map_index)
    ]
    return sorted(runs_from_history(mine, [run], {run.dag_id}), key=lambda r: -r.try_number)


def _from_reports(sync: Sync, key: str | None, *, source: str | None) -> SyncView:
    with_report = next((run for run in sync.runs if run.report is not None), None)
    return SyncView(
        sync=sync,
        groups=reject_groups_from_reports(sync.runs),
        rejects_run=with_report.run_id if with_report else None,
        outcomes=key_outcomes_from_reports(sync.runs, key) if key else [],
        source=source,
    )


__all__ = ["SyncView", "acknowledge", "open_history", "sync_view", "tries_of"]
