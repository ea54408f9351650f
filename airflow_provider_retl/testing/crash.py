"""Crash injection for reliability tests: run a sync in a child process that SIGKILLs itself.

A sync is described by a JSON-ready ``SyncSpec`` (destination hook, connection, store path,
``SyncConfig`` fields, source rows), so the same sync can run in this process (``build``,
``run_spec``) or in a forked child that kills itself at a ``KillPoint``:

* ``read``: after ``k`` chunks were read (nothing sent yet);
* ``request``: at the ``k``-th HTTP call, before it is sent (other batches may be in flight);
* ``after_request``: right after the ``k``-th HTTP call was answered (applied, not committed);
* ``commit_torn``: in the middle of the ``k``-th checkpoint journal write (half a line on disk);
* ``after_commit``: right after the ``k``-th journal write;
* ``finalize``: when the new base is written but the journal not yet cleared.

``ForkServer`` is a warm process (the provider, Airflow's task SDK, pandas imported once)
that forks one child per run, so a run costs a fork (~10 ms), not an interpreter start
(~2 s). Children are forked from a single-threaded process, which is what makes fork
safe; emulators therefore run in the *test* process and survive every kill.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import pandas as pd

from airflow_provider_retl.destinations import REGISTRY

KILL_POINTS = ("read", "request", "after_request", "commit_torn", "after_commit", "finalize")

#: Destination name -> "module:HookClass", from the registry of destination specs.
HOOKS = {name: ":".join(spec.hook_class.rsplit(".", 1)) for name, spec in REGISTRY.items()}


@dataclass(frozen=True)
class KillPoint:
    where: str
    k: int

    def __post_init__(self) -> None:
        if self.where not in KILL_POINTS:
            raise ValueError(f"unknown kill point {self.where!r}; expected one of {KILL_POINTS}")


@dataclass
class SyncSpec:
    """Everything one sync run needs, as plain JSON."""

    hook: str  # key of HOOKS
    conn_id: str
    connection: dict[str, Any]  # AIRFLOW_CONN_<ID> JSON document
    store_path: str
    config: dict[str, Any]  # SyncConfig keyword arguments
    rows: list[dict[str, Any]]
    chunk_size: int = 50
    hook_attrs: dict[str, Any] = field(default_factory=dict)  # e.g. event_name, set like the operator does

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


@dataclass
class Counters:
    """How often each kill point was passed in a run (to choose ``k`` for a kill)."""

    read: int = 0
    request: int = 0
    commit: int = 0
    finalize: int = 0


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def build(spec: SyncSpec) -> tuple[Any, Any, Any]:
    """(hook, store, config) of a spec; the connection is registered as an environment variable."""
    from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
    from airflow_provider_retl.sync.config import SyncConfig

    os.environ[f"AIRFLOW_CONN_{spec.conn_id.upper()}"] = json.dumps(spec.connection)
    hook = _import(HOOKS[spec.hook])(spec.conn_id)
    for name, value in spec.hook_attrs.items():
        setattr(hook, name, value)
    return hook, FileCheckpointStore(spec.store_path), SyncConfig(**spec.config)


def chunks_of(spec: SyncSpec) -> Iterator[pd.DataFrame]:
    frame = pd.DataFrame(spec.rows)
    for start in range(0, len(frame), spec.chunk_size):
        yield frame.iloc[start : start + spec.chunk_size]


def run_spec(spec: SyncSpec, *, counters: Counters | None = None, log: Any = None) -> Any:
    """Run the sync of ``spec`` in this process; ``counters`` counts the kill points passed."""
    from airflow_provider_retl.sync.engine import run_sync

    hook, store, config = build(spec)
    chunks = chunks_of(spec)
    if counters is not None:
        chunks = _instrument(hook, store, chunks, counters, None)
    try:
        return run_sync(chunks, hook, store, config, log=log)
    finally:
        hook.close()


def die() -> None:
    """SIGKILL this process: no cleanup, no flush, like a killed worker."""
    os.kill(os.getpid(), signal.SIGKILL)


class KillSwitch:
    """Counts the kill points a run passes (in ``counters``) and dies at ``kill``, if given.

    ``hit(name)`` returns the 0-based count of ``name`` so far; ``fires(where, n)`` says whether
    the ``n``-th pass of counter ``where`` is the chosen kill point.
    """

    def __init__(self, kill: KillPoint | None, counters: Counters) -> None:
        self.kill = kill
        self.counters = counters
        self._lock = threading.Lock()

    def hit(self, name: str) -> int:
        with self._lock:
            n = getattr(self.counters, name)
            setattr(self.counters, name, n + 1)
            return n

    def fires(self, where: str, n: int) -> bool:
        return self.kill is not None and self.kill.where == where and self.kill.k == n


def _instrument(hook: Any, store: Any, chunks: Iterator[pd.DataFrame], counters: Counters, kill: KillPoint | None):
    """Wrap the hook's sender and the store's journal so each kill point is counted (and maybe fired)."""
    switch = KillSwitch(kill, counters)
    hit, fires = switch.hit, switch.fires
    send = hook._send

    def sending(*args: Any, **kwargs: Any) -> Any:
        n = hit("request")
        if fires("request", n):
            die()
        response = send(*args, **kwargs)
        if fires("after_request", n):
            die()
        return response

    hook._send = sending
    append = store._append_journal

    def appending(document: dict[str, Any]) -> None:
        n = hit("commit")
        if fires("commit_torn", n):
            line = json.dumps(document).encode() + b"\n"
            Path(store.journal_path).parent.mkdir(parents=True, exist_ok=True)
            with open(store.journal_path, "ab") as fh:
                fh.write(line[: len(line) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            die()
        append(document)
        if fires("after_commit", n):
            die()

    store._append_journal = appending
    clear = store._clear_journal

    def clearing() -> None:
        n = hit("finalize")
        if fires("finalize", n):
            die()
        clear()

    store._clear_journal = clearing

    def reading() -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            n = hit("read")
            if fires("read", n):
                die()
            yield chunk

    return reading()


def run_child(spec: SyncSpec, kill: KillPoint | None, result_path: str) -> None:
    """Body of a forked child: run the spec, dying at ``kill``; write the report (or error) as JSON."""
    from airflow_provider_retl.sync.engine import run_sync

    outcome: dict[str, Any]
    try:
        hook, store, config = build(spec)
        chunks = _instrument(hook, store, chunks_of(spec), Counters(), kill)
        report = run_sync(chunks, hook, store, config)
        outcome = {"ok": True, "report": report.to_dict() if hasattr(report, "to_dict") else vars(report)}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(outcome, default=str))


@dataclass
class ChildResult:
    exitcode: int | None
    signal: int | None
    outcome: dict[str, Any] | None

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL


class ForkServer:
    """A warm single-threaded process that forks one child per ``run`` (a context manager)."""

    def __init__(self, env: dict[str, str] | None = None, *, stderr: Any = None) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._env = env
        self._stderr = stderr  # where the children's logs go (a file keeps test output readable)
        self._lock = threading.Lock()

    def start(self) -> Self:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_retl.testing.crash"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        ready = self._proc.stdout.readline()  # type: ignore[union-attr]
        if ready.strip() != b"ready":
            raise RuntimeError(f"fork server did not start: {ready!r}")
        return self

    def run(self, spec: SyncSpec, kill: KillPoint | None, result_path: str, timeout: float = 120.0) -> ChildResult:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        request = {"spec": json.loads(spec.to_json()), "kill": asdict(kill) if kill else None, "result": result_path}
        with self._lock:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        status = json.loads(line)
        outcome = json.loads(Path(result_path).read_text()) if Path(result_path).exists() else None
        return ChildResult(status.get("exitcode"), status.get("signal"), outcome)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed (Airflow prints on import) goes to stderr, never into the protocol
    # Warm up: everything a child needs is imported once, before any fork.
    import pyarrow.parquet  # noqa: F401

    import airflow_provider_retl.sync.engine  # noqa: F401

    for path in HOOKS.values():
        _import(path)
    channel.write(b"ready\n")
    channel.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        spec = SyncSpec(**request["spec"])
        kill = KillPoint(**request["kill"]) if request["kill"] else None
        run_forked(channel, functools.partial(run_child, spec, kill, request["result"]))


def run_forked(channel: Any, child: Callable[[], None]) -> None:
    """Run ``child`` in a forked process and write how it ended (exit code or killing signal) to
    ``channel`` as one JSON line: the answer both fork servers give for every request."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:  # noqa: BLE001 - the exit code is the answer; the traceback goes to stderr
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    answer = {
        "exitcode": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    }
    channel.write(json.dumps(answer).encode() + b"\n")
    channel.flush()


if __name__ == "__main__":
    _serve()
