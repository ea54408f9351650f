"""SIGKILL a real Airflow task (``dag.test()`` of one ``ReverseETLOperator``) at seeded points.

The Variable and XCom checkpoint stores only work inside a running task, so the child runs a
whole DagRun, not a bare ``run_sync``. ``AirflowForkServer`` starts a process that imports
Airflow and the provider, migrates this worker's SQLite metadata DB (``AIRFLOW_HOME`` comes
from ``tests/conftest.py`` through the environment) and warms one ``dag.test()`` run; then it
forks one child per run, so a run costs a fork plus the run itself, not Airflow's start-up.

Fork safety: the warm-up leaves one thread behind, the in-process Execution API's event loop
(``InProcessExecutionAPI.transport``, cached by ``in_process_api_server``). The server stops
that loop and drops the cached transport before it forks, so it forks single-threaded and
each child builds its own loop; the child also disposes the SQLAlchemy pool it inherited.
Emulators run in the test process, never in the server.

Kill points (counted over one DagRun, class-level patches installed in the child only):

* ``read``: after ``k`` chunks were read from the warehouse (nothing sent yet);
* ``request`` / ``after_request``: before / right after the ``k``-th HTTP call of the hook;
* ``commit_torn``: inside the ``k``-th journal write, before it is complete. Both stores write
  one journal Variable per commit: the kill comes before it is set (``Variable.set`` is one DB
  transaction, so no half-written Variable can exist);
* ``after_commit``: right after the ``k``-th journal write;
* ``finalize``: the new base (Variable / XCom) is written, the journal not yet cleared.

A killed child leaves its task instance ``running`` and its DagRun ``running``. Before the
next run, ``reap`` marks them failed, as the scheduler does when the task's heartbeat stops.

Run as ``python -m tests.reliability.airflow_crash`` (``AirflowForkServer`` does this).
In the test process, ``Bench`` runs one checkpoint store against one scenario of
``scenarios.py`` (the same destinations and sources as the File-store suite): the clean
reference, then seeded trials whose kills come from ``crash_support.plan_kills`` and whose
outcome is judged by ``crash_support.check``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_provider_retl.testing.crash import ChildResult, Counters, ForkServer, KillPoint, KillSwitch, die, run_forked

ROOT = Path(__file__).resolve().parents[2]

WARMUP_DAG = """
import datetime as dt
from airflow.sdk import DAG, Variable, task

with DAG(dag_id="retl_crash_warmup", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
    @task
    def warm(**context):
        Variable.set("retl_crash_warmup", "1")
        Variable.get("retl_crash_warmup")
        context["task_state_store"].set("warm", 1)
        import airflow_provider_retl.operators.reverse_etl  # noqa: F401
        import airflow_provider_retl.hooks.customerio  # noqa: F401
        import airflow_provider_retl.hooks.hubspot  # noqa: F401
        import airflow_provider_retl.sources  # noqa: F401
        import airflow_provider_retl.sync.engine  # noqa: F401
        return 1

    warm()
"""


@dataclass
class RunRequest:
    dag_text: str
    dag_id: str
    #: "new": a new DagRun at ``logical_date`` (dag.test()); "rerun": clear the latest run of
    #: ``dag_id`` and run it again (same run, like "Clear" in the UI).
    mode: str
    logical_date: str | None
    env: dict[str, str]
    kill: dict[str, Any] | None
    result: str
    #: Grouped commits every this many seconds (SyncConfig.commit_interval); 0: one journal write per batch.
    commit_interval: float | None = None
    #: After the run, read the stored checkpoint back: "variable" or "xcom" (None: don't).
    inspect: str | None = None


# Child side


def _instrument(kill: KillPoint | None, counters: Counters) -> None:
    """Class-level patches (this child only) that count each kill point and fire ``kill``."""
    from airflow_provider_retl.checkpoints.variable import VariableCheckpointStore
    from airflow_provider_retl.checkpoints.xcom import XComCheckpointStore
    from airflow_provider_retl.hooks.destination import DestinationHook
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    switch = KillSwitch(kill, counters)
    hit, fires = switch.hit, switch.fires
    send = DestinationHook._send

    def sending(self: Any, *args: Any, **kwargs: Any) -> Any:
        n = hit("request")
        if fires("request", n):
            die()
        response = send(self, *args, **kwargs)
        if fires("after_request", n):
            die()
        return response

    DestinationHook._send = sending

    read_chunks = ReverseETLOperator._read_chunks

    def reading(self: Any) -> Any:
        for chunk in read_chunks(self):
            n = hit("read")
            if fires("read", n):
                die()
            yield chunk

    ReverseETLOperator._read_chunks = reading

    var_append = VariableCheckpointStore._append_journal

    def var_appending(self: Any, document: dict[str, Any]) -> None:
        n = hit("commit")
        if fires("commit_torn", n):
            die()
        var_append(self, document)
        if fires("after_commit", n):
            die()

    VariableCheckpointStore._append_journal = var_appending

    xcom_append = XComCheckpointStore._append_journal

    def xcom_appending(self: Any, document: dict[str, Any]) -> None:
        n = hit("commit")
        if fires("commit_torn", n):
            die()
        xcom_append(self, document)
        if fires("after_commit", n):
            die()

    XComCheckpointStore._append_journal = xcom_appending

    for cls in (VariableCheckpointStore, XComCheckpointStore):
        clear = cls._clear_journal

        def clearing(self: Any, _clear: Any = clear) -> None:
            n = hit("finalize")  # called right after the new base was written
            if fires("finalize", n):
                die()
            _clear(self)

        cls._clear_journal = clearing


def _set_commit_interval(seconds: float) -> None:
    import dataclasses

    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    config = ReverseETLOperator._config

    def configured(self: Any, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(config(self, *args, **kwargs), commit_interval=seconds)

    ReverseETLOperator._config = configured


def stored_checkpoint(store: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The checkpoint as the metadata DB holds it (base with any journal left folded in), as JSON."""
    import airflow_harness

    from airflow_provider_retl.checkpoints.variable import JOURNAL_INFIX, KEY_PREFIX, variable_safe_name
    from airflow_provider_retl.checkpoints.xcom import JOURNAL_PREFIX, JOURNAL_UPTO, XCOM_KEY
    from airflow_provider_retl.sync.checkpoint import JournalingStore

    if store == "variable":
        key = f"{KEY_PREFIX}{dag_id}.sync"
        found = airflow_harness.variables(key)
        base = json.loads(found[key]) if key in found else None
        prefix = key + JOURNAL_INFIX
    else:
        result = airflow_harness.collect_result(dag_id, run_id)
        base = result.task("sync").xcoms.get(XCOM_KEY)
        prefix = f"{JOURNAL_PREFIX}{variable_safe_name(f'xcom.{dag_id}.sync')}__"
        found = airflow_harness.variables(prefix)
    indexes = sorted(int(k[len(prefix):]) for k in found if k.startswith(prefix) and k[len(prefix):].isdigit())
    # xcom: entries up to the base's mark are in the base (kept for a clear of the run, not pending).
    upto = base.get(JOURNAL_UPTO, -1) if store == "xcom" and isinstance(base, dict) else -1
    journal = [json.loads(found[f"{prefix}{i}"]) for i in indexes if i > upto]

    class Stored(JournalingStore):
        def _read_base(self) -> Any:
            return base

        def _read_journal(self) -> list[Any]:
            return journal

    checkpoint = Stored().load()
    if checkpoint is None:
        return {"keys": [], "rows": [], "ids": [], "journal_left": len(journal)}
    return {
        "keys": [int(k) for k in checkpoint.key_hashes],
        "rows": [int(r) for r in checkpoint.row_hashes],
        "ids": [None if d is None else str(d) for d in checkpoint.dest_ids],
        "journal_left": len(journal),
    }


def reap(dag_id: str) -> int:
    """Mark the running task instances and DagRuns of ``dag_id`` failed (a dead task's heartbeat stopped)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    n = 0
    with create_session() as session:
        for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.state == TaskInstanceState.RUNNING)
        ):
            ti.state = TaskInstanceState.FAILED
            ti.end_date = dt.datetime.now(dt.UTC)
            n += 1
        for dr in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.state == DagRunState.RUNNING)):
            dr.state = DagRunState.FAILED
    return n


def _latest_run_id(dag_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_id = session.scalar(
            select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date.desc()).limit(1)
        )
    if run_id is None:
        raise LookupError(f"no DagRun of {dag_id} to re-run")
    return run_id


def run_child(request: RunRequest) -> None:
    """Body of a forked child: one DagRun (maybe killed); the outcome as JSON in ``request.result``."""
    import airflow_harness

    os.environ.update(request.env)
    counters = Counters()
    outcome: dict[str, Any]
    try:
        _instrument(KillPoint(**request.kill) if request.kill else None, counters)
        if request.commit_interval is not None:
            _set_commit_interval(request.commit_interval)
        reaped = reap(request.dag_id)
        if request.mode == "new":
            logical_date = dt.datetime.fromisoformat(request.logical_date) if request.logical_date else None
            result = airflow_harness.run_dag(request.dag_text, request.dag_id, logical_date=logical_date)
        elif request.mode == "rerun":
            previous = airflow_harness.collect_result(request.dag_id, _latest_run_id(request.dag_id))
            previous = airflow_harness.dataclasses.replace(previous, dag_text=request.dag_text)
            result = airflow_harness.clear_and_rerun(previous)
        else:
            raise ValueError(f"unknown mode {request.mode!r}")
        task = result.task("sync")
        outcome = {
            "ok": result.succeeded,
            "run_id": result.run_id,
            "state": result.state,
            "tries": list(task.tries),
            "report": task.return_value,
            "reaped": reaped,
            "seconds": result.seconds,
        }
        if request.inspect:
            outcome["checkpoint"] = stored_checkpoint(request.inspect, request.dag_id, result.run_id)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    outcome["counters"] = asdict(counters)
    Path(request.result).write_text(json.dumps(outcome, default=str))


def _after_fork_in_child() -> None:
    from airflow import settings

    if settings.engine is not None:
        settings.engine.dispose(close=False)  # the parent's pooled connections stay the parent's


def _quiesce_execution_api() -> None:
    """Stop the in-process Execution API's loop thread and drop its transport (rebuilt per child)."""
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    api = in_process_api_server()
    try:
        transport = object.__getattribute__(api, "transport")  # the cached value; never builds one
    except AttributeError:
        transport = None
    if transport is not None:
        loop = transport.app.loop
        loop.call_soon_threadsafe(loop.stop)
        try:
            del api.transport  # attrs slots class: the cached_property is a slot
        except AttributeError:
            in_process_api_server.cache_clear()  # fall back to a new API object per child
    del transport
    # The loop thread, and the in-process supervisor's socket thread (it exits within 1 s of
    # its task ending: ``InProcessTestSupervisor._handle_socket_comms``).
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(10)


def _serve() -> None:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    sys.path.insert(0, str(ROOT / "tests"))
    import airflow_harness

    # Everything a child's task imports, imported once here (~0.5 s per run otherwise).
    import airflow.providers.common.sql.hooks.sql
    import airflow.providers.sqlite.hooks.sqlite
    import airflow_provider_retl.checkpoints
    import airflow_provider_retl.hooks.customerio
    import airflow_provider_retl.hooks.hubspot
    import airflow_provider_retl.operators.reverse_etl
    import airflow_provider_retl.sources
    import airflow_provider_retl.sync.engine  # noqa: F401

    airflow_harness.migrate_db()
    warm = airflow_harness.run_dag(WARMUP_DAG, "retl_crash_warmup")
    if not warm.succeeded:
        raise RuntimeError(f"warm-up run failed: {warm}")
    _quiesce_execution_api()
    from airflow import settings

    settings.engine.dispose()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    channel.write(json.dumps({"ready": True, "threads": others}).encode() + b"\n")
    channel.flush()
    for line in sys.stdin.buffer:
        request = RunRequest(**json.loads(line))
        alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if alive:  # forking with another thread alive is what this server exists to avoid
            answer = {"exitcode": None, "signal": None, "error": f"threads alive in the fork server: {alive}"}
            channel.write(json.dumps(answer).encode() + b"\n")
            channel.flush()
            continue

        def child(request: RunRequest = request) -> None:
            _after_fork_in_child()
            run_child(request)

        run_forked(channel, child)
    # stdin closed: done. Skip interpreter shutdown, whose finalizer of the stopped Execution API
    # loop would wait out two 5 s timeouts.
    channel.flush()
    sys.stderr.flush()
    os._exit(0)


# Test-process side


class AirflowForkServer(ForkServer):
    """The warm Airflow process (a context manager); ``run`` forks one child per DagRun."""

    def __init__(self, *, stderr: Any = None) -> None:
        super().__init__(stderr=stderr)
        self.threads_at_fork: list[str] = []

    def start(self) -> AirflowForkServer:
        env = dict(os.environ)  # AIRFLOW_HOME & co of this worker: the server shares its metadata DB
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.airflow_crash"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=str(ROOT),
        )
        line = self._proc.stdout.readline()  # type: ignore[union-attr]
        try:
            ready = json.loads(line)
        except ValueError:
            raise RuntimeError(f"Airflow fork server did not start: {line!r}") from None
        self.threads_at_fork = ready["threads"]
        return self

    def run(self, request: RunRequest, timeout: float = 120.0) -> ChildResult:  # type: ignore[override]
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        Path(request.result).unlink(missing_ok=True)
        self._proc.stdin.write(json.dumps(asdict(request)).encode() + b"\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("Airflow fork server died")
        status = json.loads(line)
        if status.get("error"):
            raise RuntimeError(status["error"])
        path = Path(request.result)
        outcome = json.loads(path.read_text()) if path.exists() else None
        return ChildResult(status.get("exitcode"), status.get("signal"), outcome)

    # stop(), __enter__ and __exit__ come from ForkServer.


DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=0, **{kwargs!r})
"""

#: The Variable store's retry is a new DagRun; the XCom store's is the same DagRun cleared.
RETRY_MODE = {"variable": "new", "xcom": "rerun"}


def ok(result: ChildResult) -> dict[str, Any]:
    """The outcome of a run that must have succeeded (else its traceback as the failure)."""
    assert result.exitcode == 0 and result.outcome and result.outcome.get("ok"), (
        result.outcome.get("traceback") or result.outcome if result.outcome else result
    )
    return result.outcome


def checkpoint_dict(stored: dict[str, Any]) -> dict[int, tuple[int, Any]]:
    """``stored_checkpoint``'s JSON as ``crash_support.check`` takes it: key hash -> (row hash, id)."""
    return {k: (r, d) for k, r, d in zip(stored["keys"], stored["rows"], stored["ids"], strict=True)}


class Bench:
    """One checkpoint store x one crash scenario: the scenario's emulator (in the test process),
    a SQLite warehouse, the fork server, the clean run's checkpoint and kill-point counts.

    The source of a scenario (``scenarios.py``) becomes a table; the DAG runs one
    ``ReverseETLOperator`` with the scenario's object, key, mode and match field.
    """

    def __init__(self, store: str, scenario: Any, running: Any, server: AirflowForkServer, workdir: Path) -> None:
        self.store, self.scenario, self.running, self.server, self.workdir = store, scenario, running, server, workdir
        self.warehouse = workdir / "warehouse.sqlite"
        self.columns = list(scenario.v1[0])
        self.env = {
            "AIRFLOW_CONN_CRASH_WH": json.dumps({"conn_type": "sqlite", "host": str(self.warehouse)}),
            "AIRFLOW_CONN_CRASH_DEST": json.dumps(scenario.connection(running.url)),
        }
        self._clock = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        self.runs = 0
        self.reference: dict[int, tuple[int, Any]] = {}
        self.counters = Counters()
        self.tally: Counter[str] = Counter()  # kills fired, by kill point

    def load_source(self, rows: list[dict[str, Any]]) -> None:
        import sqlite3

        con = sqlite3.connect(self.warehouse)
        try:
            con.execute("drop table if exists source")
            con.execute(f"create table source ({', '.join(self.columns)})")  # untyped: values keep their type
            con.executemany(
                f"insert into source values ({', '.join('?' * len(self.columns))})",
                [tuple(row[c] for c in self.columns) for row in rows],
            )
            con.commit()
        finally:
            con.close()

    def dag(self, dag_id: str) -> str:
        config = self.scenario.config
        kwargs = {
            "conn_id": "crash_wh", "sql": f"select {', '.join(self.columns)} from source",
            "destination_conn_id": "crash_dest", "object": config["object"], "primary_key": config["primary_key"],
            "mode": config["mode"], "match_on": config.get("match_on"), "checkpoint": self.store, "chunksize": 40,
        }
        return DAG_TEMPLATE.format(dag_id=dag_id, kwargs=kwargs)

    def run(
        self, dag_id: str, *, retry: bool = False, kill: KillPoint | None = None, commit_interval: float = 0.0,
        inspect: bool = False,
    ) -> ChildResult:
        self._clock += dt.timedelta(minutes=1)  # later runs sort after earlier ones
        self.runs += 1
        request = RunRequest(
            dag_text=self.dag(dag_id), dag_id=dag_id, mode=RETRY_MODE[self.store] if retry else "new",
            logical_date=self._clock.isoformat(), env=self.env, kill=asdict(kill) if kill else None,
            result=str(self.workdir / f"{dag_id}-{self.runs}.json"), commit_interval=commit_interval,
            inspect=self.store if inspect else None,
        )
        return self.server.run(request)

    def prepare(self) -> Bench:
        """The clean reference: v1 then v2 without kills; its checkpoint and the kill points of v2."""
        dag_id = f"crash_{self.store}_{self.scenario.name}_ref"
        self.running.emulator.reset()
        self.load_source(self.scenario.v1)
        ok(self.run(dag_id))
        self.load_source(self.scenario.v2)
        ref = ok(self.run(dag_id, inspect=True))
        self.reference = checkpoint_dict(ref["checkpoint"])
        self.counters = Counters(**ref["counters"])
        assert self.counters.request > 0 and self.counters.commit > 0, self.counters
        return self

    def trial(self, seed: int) -> list[KillPoint]:
        """v1 clean, v2 killed at the seed's kill points, then retried like Airflow; checked; the kills that fired."""
        from .crash_support import check, plan_kills

        kills, commit_interval = plan_kills(seed, self.counters)
        dag_id = f"crash_{self.store}_{self.scenario.name}_s{seed}"
        what = f"{self.store} {self.scenario.name} seed {seed} kills {kills}"
        self.running.emulator.reset()
        self.load_source(self.scenario.v1)
        ok(self.run(dag_id))
        self.load_source(self.scenario.v2)
        fired = []
        for i, kill in enumerate(kills):
            result = self.run(dag_id, retry=i > 0, kill=kill, commit_interval=commit_interval)
            if result.killed:
                fired.append(kill)
                self.tally[kill.where] += 1
            elif i == 0:
                raise AssertionError(f"{what}: the first kill did not fire: {result}")
            else:
                ok(result)  # the second kill point was not reached: that retry finished
        final = ok(self.run(dag_id, retry=True, inspect=True))
        if self.store == "xcom":
            assert final["tries"][-1] == "success" and len(final["tries"]) >= 2, f"{what}: not a re-run: {final}"
        stored = final["checkpoint"]
        # xcom: entries its base holds may stay (for a clear of the run); none may be pending.
        assert stored["journal_left"] == 0, f"{what}: {stored['journal_left']} journal entries not in the base"
        check(self.scenario, self.running.emulator, self.reference, checkpoint_dict(stored), final["report"], what)
        return fired


if __name__ == "__main__":
    _serve()
