"""Replay the rejects of a sync now: clear its latest task instance so Airflow runs it again.

Rejected rows are never checkpointed, so any new try of the sync task sends every row that is
not yet synced (rejects included) and nothing else. "Replay now" is therefore plain Airflow:
clear the sync's task instance in its latest DAG run (what the UI's "Clear" button does),
which requeues the run; the scheduler then runs the task again. From a shell the same is
``airflow tasks clear <dag_id> --task-regex '^<task_id>$' --start-date <run date> --yes``.

This needs the metadata database (call it in the API server, e.g. from the UI plugin, or in
a CLI process), never inside a task.
"""

from __future__ import annotations

from typing import Any

__all__ = ["replay_rejects"]


def replay_rejects(dag_id: str, task_id: str, run_id: str | None = None, *, session: Any = None) -> dict[str, Any]:
    """Clear ``task_id`` (every map index) in ``run_id`` (default: the DAG's latest run) so it runs again.

    Returns ``{"dag_id", "run_id", "task_id", "cleared": <task instances cleared>}``. Raises
    ``LookupError`` when the DAG has no run or the run has no such task. A running task
    instance is not interrupted (it is left to finish; replay later).
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    def replay(db: Any) -> dict[str, Any]:
        query = select(DagRun).where(DagRun.dag_id == dag_id)
        if run_id is not None:
            query = query.where(DagRun.run_id == run_id)
        run = db.scalars(query.order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(1)).first()
        if run is None:
            raise LookupError(f"DAG {dag_id!r} has no run{f' {run_id!r}' if run_id else ''} to replay")
        tis = list(
            db.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run.run_id,
                    TaskInstance.task_id == task_id,
                )
            )
        )
        if not tis:
            raise LookupError(f"run {run.run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
        idle = [ti for ti in tis if ti.state not in (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED)]
        if idle:
            clear_task_instances(idle, db, dag_run_state=DagRunState.QUEUED)
        db.flush()
        return {"dag_id": dag_id, "run_id": run.run_id, "task_id": task_id, "cleared": len(idle)}

    if session is not None:
        return replay(session)
    with create_session() as db:
        return replay(db)
