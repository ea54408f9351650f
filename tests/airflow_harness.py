"""Run real Airflow DAGs in the test process with ``dag.test()``.

One pytest process (one xdist worker) owns one temporary ``AIRFLOW_HOME`` with a
SQLite metadata DB, migrated once. Every ``run_dag`` call writes the DAG file into the
dags folder (``dag.test()`` syncs the dags-folder bundle and refuses a DAG that is not
serialized from a file there), parses it, runs one DagRun, and reads the outcome back
from the metadata DB: run state, each task's state, try number, per-try states and
XComs. The first run in a process pays ~6 s for the in-process Execution API; later
runs take a fraction of a second, so keep one process for many runs.

Nothing here imports Airflow at module import time: ``conftest.py`` must be able to
set the environment (``airflow_env``) before the first ``import airflow``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DAG_FILE_PREFIX = "retl_test_"


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for an isolated Airflow in ``home``; set it before ``import airflow``."""
    return {
        "AIRFLOW_HOME": str(home),
        # Unit test mode: no airflow.cfg is read or written, fresh Fernet/JWT keys per process.
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SECRETS__USE_CACHE": "False",
    }


def dags_folder() -> Path:
    return Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


_migrated_seconds: float | None = None


def migrate_db() -> float:
    """``airflow db migrate`` in this process, once; returns the seconds it took (0.0 when done before)."""
    global _migrated_seconds
    if _migrated_seconds is not None:
        return 0.0
    start = time.perf_counter()
    from airflow.utils.db import upgradedb

    dags_folder().mkdir(parents=True, exist_ok=True)
    upgradedb()
    _migrated_seconds = time.perf_counter() - start
    return _migrated_seconds


@dataclass(frozen=True)
class TaskResult:
    """One task instance of a run, as the metadata DB has it after the run."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    max_tries: int
    #: State of every try, oldest first (from task_instance_history + the current row).
    tries: tuple[str | None, ...]
    xcoms: Mapping[str, Any] = field(default_factory=dict)

    @property
    def return_value(self) -> Any:
        return self.xcoms.get("return_value")


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    logical_date: dt.datetime | None
    run_after: dt.datetime
    state: str
    tasks: Mapping[tuple[str, int], TaskResult]
    seconds: float
    dag_file: Path
    dag_text: str = field(default="", repr=False)

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def task(self, task_id: str, map_index: int = -1) -> TaskResult:
        try:
            return self.tasks[(task_id, map_index)]
        except KeyError:
            raise KeyError(f"no task instance {task_id!r} map_index={map_index} in {sorted(self.tasks)}") from None

    def return_value(self, task_id: str, map_index: int = -1) -> Any:
        return self.task(task_id, map_index).return_value

    def __str__(self) -> str:
        tis = ", ".join(
            f"{t.task_id}{'' if t.map_index < 0 else f'[{t.map_index}]'}={t.state}(tries={list(t.tries)})"
            for t in self.tasks.values()
        )
        return f"DagRun {self.dag_id}/{self.run_id}: {self.state} [{tis}] in {self.seconds:.2f}s"


def write_dag(source: str | os.PathLike[str], dag_id: str, *, extra_files: Mapping[str, str] | None = None) -> Path:
    """Make ``source`` the only DAG file in the dags folder and return its path there.

    ``source`` is a ``Path`` (or a ``str`` ending in ``.py`` without newlines) to copy,
    or else the text of the file. Other files this harness wrote before are removed, so
    ``dag.test()``'s bundle sync parses one file, not every DAG of the session.
    ``extra_files`` (name -> text) are written beside it (sibling DAGs, helper modules).
    """
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and source.endswith(".py")):
        text = Path(source).read_text()
    else:
        text = str(source)
    folder = dags_folder()
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{DAG_FILE_PREFIX}{dag_id}.py": text}
    for name, extra in (extra_files or {}).items():
        wanted[name if name.startswith(DAG_FILE_PREFIX) else DAG_FILE_PREFIX + name] = extra
    for old in folder.glob(f"{DAG_FILE_PREFIX}*.py"):
        if old.name not in wanted:
            old.unlink()
    for name, content in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
    return folder / f"{DAG_FILE_PREFIX}{dag_id}.py"


def load_dag(path: Path, dag_id: str):
    """Parse ``path`` the way the dag processor does and return the DAG ``dag_id``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=path, safe_mode=False)
    if bag.import_errors:
        raise RuntimeError(f"DAG file {path.name} failed to import:\n" + "\n".join(bag.import_errors.values()))
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise LookupError(f"DAG file {path.name} defines no DAG {dag_id!r} (found {sorted(bag.dags)})")
    return dag


_last_logical_date: dict[str, dt.datetime] = {}


def _next_logical_date(dag_id: str) -> dt.datetime:
    # Later runs must sort after earlier ones (XCom include_prior_dates orders by logical date).
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    last = _last_logical_date.get(dag_id)
    if last is not None and now <= last:
        now = last + dt.timedelta(seconds=1)
    return now


def run_dag(
    source: str | os.PathLike[str],
    dag_id: str,
    *,
    conf: Mapping[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> DagRunResult:
    """Run one DagRun of ``dag_id`` from ``source`` with ``dag.test()`` and return its outcome.

    A failed task does not raise: look at ``result.state`` and the task results.
    Each call is a new run (a new logical date unless given; reusing a logical date
    replaces that run, as ``dag.test()`` does).
    """
    migrate_db()
    path = write_dag(source, dag_id, extra_files=extra_files)
    dag = load_dag(path, dag_id)
    if logical_date is None:
        logical_date = _next_logical_date(dag_id)
    _last_logical_date[dag_id] = max(logical_date, _last_logical_date.get(dag_id, logical_date))
    start = time.perf_counter()
    dr = dag.test(logical_date=logical_date, run_conf=dict(conf) if conf is not None else None)
    result = collect_result(dag_id, dr.run_id, seconds=time.perf_counter() - start)
    return dataclasses.replace(result, dag_file=path, dag_text=path.read_text())


def clear_and_rerun(previous: DagRunResult, *, task_ids: list[str] | None = None) -> DagRunResult:
    """Clear the tasks of a finished run and run them again in the *same* run, like "Clear" in the UI.

    ``dag.test()`` cannot do this (it replaces a run with the same logical date), so this
    repeats its scheduling loop on the existing run: the cleared task instances get a new
    try, their XComs are wiped at try start, their ``task_state_store`` is kept.
    """
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import select

    # Another run_dag may have replaced the file since: put this DAG back first.
    dag = load_dag(write_dag(previous.dag_text, previous.dag_id), previous.dag_id)
    start = time.perf_counter()
    with create_session() as session:
        query = select(TaskInstance).where(TaskInstance.dag_id == previous.dag_id, TaskInstance.run_id == previous.run_id)
        if task_ids is not None:
            query = query.where(TaskInstance.task_id.in_(task_ids))
        tis = list(session.scalars(query))
        clear_task_instances(tis, session, dag_run_state=DagRunState.RUNNING)
    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == previous.dag_id, DagRun.run_id == previous.run_id))
        dr.dag = DBDagBag().get_dag_for_run(dag_run=dr, session=session)
        while dr.state == DagRunState.RUNNING:
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            scheduled = [ti for ti in dr.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]
            unfinished = [ti for ti in dr.get_task_instances(session=session) if ti.state not in State.finished]
            if not scheduled and unfinished:
                raise RuntimeError(f"run {dr.run_id} is stuck: {[(ti.task_id, ti.state) for ti in unfinished]}")
            for ti in scheduled:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
    result = collect_result(previous.dag_id, previous.run_id, seconds=time.perf_counter() - start)
    return dataclasses.replace(result, dag_file=previous.dag_file, dag_text=previous.dag_text)


def collect_result(dag_id: str, run_id: str, *, seconds: float = 0.0) -> DagRunResult:
    """Read a run's outcome back from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dr is None:
            raise LookupError(f"no DagRun {dag_id}/{run_id}")
        history: dict[tuple[str, int], list[tuple[int, str | None]]] = {}
        for h in session.scalars(
            select(TaskInstanceHistory).where(TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run_id)
        ):
            history.setdefault((h.task_id, h.map_index), []).append((h.try_number, _state(h.state)))
        xcoms: dict[tuple[str, int], dict[str, Any]] = {}
        for x in session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)):
            xcoms.setdefault((x.task_id, x.map_index), {})[x.key] = _xcom_value(x.value)
        tasks: dict[tuple[str, int], TaskResult] = {}
        for ti in session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
        ):
            key = (ti.task_id, ti.map_index)
            past = [state for try_number, state in sorted(history.get(key, [])) if try_number < ti.try_number]
            tasks[key] = TaskResult(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=_state(ti.state),
                try_number=ti.try_number,
                max_tries=ti.max_tries,
                tries=(*past, _state(ti.state)),
                xcoms=xcoms.get(key, {}),
            )
        return DagRunResult(
            dag_id=dag_id,
            run_id=run_id,
            logical_date=dr.logical_date,
            run_after=dr.run_after,
            state=_state(dr.state) or "none",
            tasks=tasks,
            seconds=seconds,
            dag_file=dags_folder() / f"{DAG_FILE_PREFIX}{dag_id}.py",
        )


def _xcom_value(stored: Any) -> Any:
    # The JSON column gives back what the task SDK sent: serde's encoding (a tuple is a dict
    # with __classname__), not the str that XComModel.deserialize_value expects.
    from airflow.sdk.serde import deserialize

    return deserialize(stored)


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


# Metadata DB views for assertions. Tests read the ORM directly; tasks never do.


def variables(prefix: str = "") -> dict[str, str]:
    """Airflow Variables (key -> raw stored text) whose key starts with ``prefix``."""
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(VariableModel).where(VariableModel.key.startswith(prefix, autoescape=True)))
        return {row.key: row.get_val() for row in rows}


def task_state(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """A task instance's ``task_state_store`` (key -> JSON value) as the metadata DB holds it."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_id,
                TaskStateStoreModel.run_id == run_id,
                TaskStateStoreModel.task_id == task_id,
                TaskStateStoreModel.map_index == map_index,
            )
        )
        return {row.key: json.loads(row.value) for row in rows}


def connection_env(
    conn_id: str,
    conn_type: str,
    *,
    host: str | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """``(AIRFLOW_CONN_<ID>, json)``: a Connection as an environment variable (JSON form)."""
    doc: dict[str, Any] = {"conn_type": conn_type}
    for name, value in (("host", host), ("login", login), ("password", password), ("schema", schema), ("port", port)):
        if value is not None:
            doc[name] = value
    if extra:
        doc["extra"] = dict(extra)
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc)
