"""What the Reverse ETL pages show, read from Airflow's metadata DB and the sync history tables.

Syncs are found from Airflow's own records: task instances whose operator is
``ReverseETLOperator`` and the report each one left in XCom (``return_value`` on success,
``sync_report`` on failure) with its "Destination" extra link (resolved by the worker
when the task ended, so the API server never opens a connection to build it). When a
report names history tables (``report["history"]``), the runs, grouped rejects and a
record's outcomes come from there; otherwise from the reports Airflow still holds.

Everything returned is plain data (dataclasses, dicts) for ``pages.py`` to render.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

OPERATOR = "ReverseETLOperator"
#: XCom keys: the report on success, the report on failure, the extra link's URL.
REPORT_KEYS = ("return_value", "sync_report")
LINK_KEY = "_link_DestinationLink"
#: Operations a run's rows are counted by (report keys, plotted as one line each).
OPERATIONS = ("created", "updated", "upserted", "deleted", "events")
#: Task instances read per page: the newest first.
MAX_TASK_INSTANCES = 2000


@dataclass(frozen=True)
class Run:
    """One try of a sync: where it ran, how it ended, and its report (when Airflow still has it)."""

    sync_id: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: str
    start: dt.datetime | None
    end: dt.datetime | None
    seconds: float | None
    report: Mapping[str, Any] | None = None
    link: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    rejected: int | None = None
    requests: int | None = None

    @property
    def rows_changed(self) -> int | None:
        """Rows pushed (created, updated, upserted, deleted, events), or None without a report."""
        return sum(self.counts.values()) if self.counts else (None if self.report is None else 0)


@dataclass(frozen=True)
class Sync:
    """A sync id and its runs, newest first."""

    sync_id: str
    runs: list[Run]

    @property
    def last(self) -> Run:
        """The newest run."""
        return self.runs[0]

    @property
    def link(self) -> str:
        """The newest destination link any run left."""
        return next((run.link for run in self.runs if run.link), "")


def decode_xcom(value: Any) -> Any:
    """An XCom value as the task pushed it (the column holds JSON text or serde's encoding)."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    try:
        from airflow.sdk.serde import deserialize

        return deserialize(value)
    except Exception:  # noqa: BLE001 - not serde-encoded: the plain JSON is the value
        return value


def _state(value: Any) -> str:
    return "none" if value is None else str(getattr(value, "value", value))


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def run_from_report(report: Mapping[str, Any] | None, *, sync_id: str, link: str = "", **where: Any) -> Run:
    """A ``Run`` with the counts of ``report`` (None: a try that left no report)."""
    counts = {op: _int(report.get(op)) for op in OPERATIONS} if report else {}
    seconds = where.pop("seconds", None)
    if report and report.get("seconds") is not None:
        seconds = float(report["seconds"])
    return Run(
        sync_id=sync_id,
        seconds=seconds,
        report=report,
        link=link,
        counts=counts,
        rejected=_int(report.get("rejected")) if report else None,
        requests=_int(report.get("requests")) if report else None,
        **where,
    )


def sync_dag_ids(session: Session) -> set[str]:
    """DAGs that have a sync task instance (the only ones whose XCom permission matters here)."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    return set(session.scalars(select(TaskInstance.dag_id).where(TaskInstance.operator == OPERATOR).distinct()))


def task_instance_runs(
    session: Session,
    *,
    dag_ids: Iterable[str] | None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int | None = None,
    limit: int = MAX_TASK_INSTANCES,
) -> list[Run]:
    """The sync task instances the user may see (``dag_ids``; None: all), newest first, with their reports."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    query = select(TaskInstance).where(TaskInstance.operator == OPERATOR)
    if dag_ids is not None:
        query = query.where(TaskInstance.dag_id.in_(list(dag_ids)))
    for column, value in (
        (TaskInstance.dag_id, dag_id),
        (TaskInstance.run_id, run_id),
        (TaskInstance.task_id, task_id),
        (TaskInstance.map_index, map_index),
    ):
        if value is not None:
            query = query.where(column == value)
    query = query.order_by(TaskInstance.start_date.desc().nulls_last(), TaskInstance.dag_id).limit(limit)
    tis = list(session.scalars(query))
    if not tis:
        return []
    xcoms: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    xcom_query = select(
        XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value
    ).where(
        XComModel.key.in_([*REPORT_KEYS, LINK_KEY]),
        XComModel.dag_id.in_({ti.dag_id for ti in tis}),
        XComModel.task_id.in_({ti.task_id for ti in tis}),
        XComModel.run_id.in_({ti.run_id for ti in tis}),
    )
    for x_dag, x_run, x_task, x_map, key, value in session.execute(xcom_query):
        xcoms.setdefault((x_dag, x_run, x_task, x_map), {})[key] = decode_xcom(value)
    runs = []
    for ti in tis:
        found = xcoms.get((ti.dag_id, ti.run_id, ti.task_id, ti.map_index), {})
        report = next((found[k] for k in REPORT_KEYS if isinstance(found.get(k), dict)), None)
        link = found.get(LINK_KEY)
        default_id = f"{ti.dag_id}.{ti.task_id}" + (f".{ti.map_index}" if ti.map_index >= 0 else "")
        runs.append(
            run_from_report(
                report,
                sync_id=str(report.get("sync_id") or default_id) if report else default_id,
                link=link if isinstance(link, str) else "",
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
                try_number=ti.try_number,
                state=_state(ti.state),
                start=ti.start_date,
                end=ti.end_date,
                seconds=ti.duration,
            )
        )
    return runs


def group_syncs(runs: Iterable[Run]) -> list[Sync]:
    """Runs grouped by sync id, each newest first; syncs sorted by id."""
    by_id: dict[str, list[Run]] = {}
    for run in runs:
        by_id.setdefault(run.sync_id, []).append(run)
    return [Sync(sync_id, sorted(rs, key=_newest_first)) for sync_id, rs in sorted(by_id.items())]


def _newest_first(run: Run) -> tuple[float, int]:
    start = run.start.timestamp() if run.start else float("inf")  # not started yet: on top
    return (-start, -run.try_number)


def reject_groups_from_reports(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """The newest report's rejects grouped by reason: ``{"reason", "stage", "count", "examples"}``."""
    for run in runs:
        if run.report is not None:
            groups = run.report.get("reject_reasons") or []
            return sorted(
                ({**g, "examples": list(g.get("examples") or [])} for g in groups if isinstance(g, dict)),
                key=lambda g: -_int(g.get("count")),
            )
    return []


def key_outcomes_from_reports(runs: Iterable[Run], key: str) -> list[dict[str, Any]]:
    """What the reports Airflow still holds say about ``key``: the runs that rejected it.

    Reports list rejects only (up to a cap); the history tables know every outcome.
    """
    outcomes = []
    for run in runs:
        for reject in (run.report or {}).get("rejects") or []:
            if isinstance(reject, dict) and str(reject.get("key")) == key:
                outcomes.append(
                    {
                        "run_id": run.run_id,
                        "try_number": run.try_number,
                        "at": run.start,
                        "operation": None,
                        "status": "rejected",
                        "reason": reject.get("reason"),
                        "http_status": None,
                    }
                )
    return outcomes
