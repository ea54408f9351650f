"""A real Airflow CeleryExecutor deployment on this machine, for tests.

``CeleryCluster`` starts what a distributed Airflow 3 runs, each as its own process
group with its own log file: ``airflow api-server`` (the workers' Execution API),
``airflow scheduler``, ``airflow dag-processor`` and N ``airflow celery worker``s. It
uses a fresh PostgreSQL metadata database (a uniquely named one on the local server,
dropped afterwards), a Redis DB number of its own as the Celery broker (claimed with a
key, so clusters started side by side never share one; flushed afterwards), free
loopback ports, and a temporary ``AIRFLOW_HOME`` whose dags folder the caller fills.

    with CeleryCluster(workers=2, concurrency=2, env={"AIRFLOW_CONN_X": ...}) as cluster:
        cluster.add_dag_file("my_dag.py", text)
        cluster.wait_for_dag("my_dag")
        run_id = cluster.trigger("my_dag")
        cluster.kill_worker("worker1")          # SIGKILL, as if its machine died
        state = cluster.wait_for_run("my_dag", run_id, timeout=300)

Teardown always runs (also when the body fails): every process tree is killed, the
database dropped and the Redis DB flushed. The temporary directory (AIRFLOW_HOME and
``logs/<service>.log``) is removed after a clean exit and kept, with its path printed,
after a failure (or always with ``RETL_KEEP_CLUSTER=1``).

Only loopback addresses are used. Nothing here imports Airflow: the cluster's processes
have their own configuration (environment variables), and the test process reads the
metadata database with psycopg.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

POSTGRES_ADMIN_DSN = os.environ.get("RETL_CLUSTER_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Redis DB numbers a cluster may claim for its broker, tried in order (DB 0 is left to other
#: tests). ``RETL_CLUSTER_REDIS_DB`` names one. Kombu prefixes its broadcast channels with the DB
#: number, so clusters on different DBs of one server never see each other's messages.
REDIS_DBS = tuple(int(n) for n in os.environ.get("RETL_CLUSTER_REDIS_DB", "13,12,11,10,9,8").split(","))
#: Key that marks a Redis DB as taken by a running cluster (expires if the owner never cleans up).
REDIS_CLAIM_KEY = "retl:cluster:owner"
REDIS_CLAIM_SECONDS = 3600

TERMINAL_RUN_STATES = ("success", "failed")


class ClusterError(RuntimeError):
    """The cluster did not come up, a service died, or a wait timed out."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of ``pid`` and every group its descendants run in.

    Airflow 3's task supervisor puts each task runner in a process group of its own
    (``supervisor.py``: ``os.setpgid(0, 0)``), so signalling the worker's group alone
    would leave running tasks orphaned: a machine that dies takes them too. The group is
    stopped first, so no process forks a child while the tree is being listed.
    """
    if pid != os.getpgrp():
        try:
            os.killpg(pid, signal.SIGSTOP)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    groups = {pid}
    for child in descendants:
        try:
            groups.add(os.getpgid(child.pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never our own group
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for child in descendants:
        try:
            child.send_signal(sig)
        except psutil.Error:
            pass
    if sig != signal.SIGKILL:  # a stopped process would never act on a SIGTERM
        for group in groups:
            try:
                os.killpg(group, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass
class Service:
    """One long-running process of the cluster, leader of its own process group."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this service's process or one of its descendants."""
        if not self.running or not pid:
            return False
        try:
            proc = psutil.Process(pid)
            return proc.pid == self.pid or any(parent.pid == self.pid for parent in proc.parents())
        except psutil.NoSuchProcess:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class TaskInstanceRow:
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    pid: int | None
    hostname: str | None


@dataclass
class CeleryCluster:
    """Airflow 3 + CeleryExecutor on this machine; use as a context manager.

    :param workers: number of ``airflow celery worker`` processes (``worker1`` ...).
    :param concurrency: task slots per worker.
    :param env: extra environment of every process (``AIRFLOW_CONN_*``, ``AIRFLOW__*`` overrides).
    :param heartbeat_timeout: seconds without a task heartbeat after which the scheduler fails
        the try (and retries it when it has retries left); Airflow's default is 300.
    :param redis_dbs: Redis DB numbers to claim one from for the broker: the first without a
        claim of another cluster; it is emptied before use and flushed afterwards.
    """

    workers: int = 2
    concurrency: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    heartbeat_timeout: int = 20
    redis_dbs: tuple[int, ...] = REDIS_DBS
    startup_timeout: float = 240.0

    base_dir: Path = field(init=False)
    home: Path = field(init=False)
    db_name: str = field(init=False)
    api_port: int = field(init=False)
    redis_db: int | None = field(init=False, default=None)
    services: dict[str, Service] = field(init=False, default_factory=dict)
    #: Seconds from the start of ``__enter__``: "db migrate", "services ready".
    timings: dict[str, float] = field(init=False, default_factory=dict)
    _db_created: bool = field(init=False, default=False)
    #: Fernet key, JWT secret and API secret key every component must share.
    _secrets: dict[str, str] = field(init=False, default_factory=dict, repr=False)

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> CeleryCluster:
        self.base_dir = Path(tempfile.mkdtemp(prefix="retl-cluster-"))
        self.home = self.base_dir / "airflow"
        (self.home / "dags").mkdir(parents=True)
        (self.base_dir / "logs").mkdir()
        self.db_name = f"retl_airflow_{uuid.uuid4().hex[:12]}"
        self.api_port = free_port()
        from cryptography.fernet import Fernet

        self._secrets = {
            "fernet": Fernet.generate_key().decode(),
            "jwt": secrets.token_urlsafe(32),
            "api": secrets.token_urlsafe(32),
        }
        try:
            self._start()
        except BaseException:
            self._teardown(failed=True)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._teardown(failed=exc_type is not None)

    def _start(self) -> None:
        self._claim_redis_db()
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'create database "{self.db_name}"')
        self._db_created = True
        started = time.monotonic()
        self.run_cli("db", "migrate", log_name="db-migrate", timeout=self.startup_timeout)
        self.timings["db migrate"] = time.monotonic() - started
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1")
        self._spawn("scheduler", "scheduler")
        self._spawn("dag-processor", "dag-processor")
        for n in range(1, self.workers + 1):
            self._spawn(
                f"worker{n}",
                "celery", "worker",
                "--concurrency", str(self.concurrency),
                "--celery-hostname", f"worker{n}@%h",
                "--pid", str(self.home / f"worker{n}.pid"),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            )  # fmt: skip
        deadline = started + self.startup_timeout
        self._wait("the API server to answer", self._api_ready, deadline)
        self._wait("the scheduler and the dag processor to heartbeat", self._jobs_running, deadline)
        self._wait(f"{self.workers} Celery workers to answer a ping", self._workers_ready, deadline)
        self.timings["services ready"] = time.monotonic() - started

    def _teardown(self, failed: bool) -> None:
        errors: list[str] = []
        for service in self.services.values():
            if service.running:
                kill_tree(service.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for service in self.services.values():
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_tree(service.pid, signal.SIGKILL)  # stragglers and orphaned task runners
            try:
                service.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                errors.append(f"{service.name} (pid {service.pid}) survived SIGKILL")
        if self._db_created:
            try:
                with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
                    conn.execute(f'drop database if exists "{self.db_name}" with (force)')
            except psycopg.Error as exc:
                errors.append(f"could not drop database {self.db_name}: {exc}")
        if self.redis_db is not None:
            try:
                with self._redis() as client:
                    client.flushdb()  # the broker's queues and our claim
            except Exception as exc:  # redis.RedisError: Redis went away; nothing left to clean
                errors.append(f"could not flush Redis DB {self.redis_db}: {exc}")
        if failed or errors or os.environ.get("RETL_KEEP_CLUSTER"):
            print(f"\nCeleryCluster: AIRFLOW_HOME and logs/<service>.log kept in {self.base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if errors:
            raise ClusterError("teardown: " + "; ".join(errors))

    # -- configuration --------------------------------------------------------------

    @property
    def metadata_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"

    @property
    def broker_url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def logs_dir(self) -> Path:
        return self.base_dir / "logs"

    def process_env(self) -> dict[str, str]:
        """The environment of every cluster process: this process's, minus its Airflow settings."""
        # tests/conftest.py points this process at a SQLite home in unit-test mode; none of
        # that may leak into the cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        sql_alchemy = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.db_name}"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
                # Every component must sign and check the workers' tokens with one secret.
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
                "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@127.0.0.1:5432/{self.db_name}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
                # The provider's defaults, spelled out because the worker-loss test depends on them:
                # a task message is acknowledged only when the task finished (acks_late), and a
                # worker reserves no more messages than it has free slots (prefetch 1).
                "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
        )
        env.update(self.env)
        return env

    # -- processes ----------------------------------------------------------------

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _spawn(self, name: str, *args: str) -> Service:
        service = Service(name, self._airflow(*args), self.logs_dir / f"{name}.log")
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(
                service.argv,
                env=self.process_env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killable as one
            )
        self.services[name] = service
        return service

    def run_cli(self, *args: str, log_name: str | None = None, timeout: float = 120.0) -> str:
        """Run ``airflow <args>`` to completion with the cluster's configuration; returns its output."""
        log_path = self.logs_dir / f"{log_name or 'cli'}.log"
        try:
            result = subprocess.run(
                self._airflow(*args),
                env=self.process_env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"airflow {' '.join(args)} did not finish in {timeout:.0f}s") from exc
        with log_path.open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise ClusterError(f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result.stdout

    def worker(self, n: int) -> Service:
        return self.services[f"worker{n}"]

    @property
    def worker_services(self) -> list[Service]:
        return [s for name, s in self.services.items() if name.startswith("worker")]

    def worker_of(self, pid: int | None) -> str | None:
        """Name of the running worker whose process tree holds ``pid`` (a task's process)."""
        if not pid:
            return None
        for service in self.worker_services:
            if service.owns(pid):
                return service.name
        return None

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker's process group and its task runners' groups: the machine died."""
        service = self.services[name]
        kill_tree(service.pid, signal.SIGKILL)
        service.process.wait(timeout=30)
        service.killed_at = time.monotonic()

    def check_alive(self) -> None:
        """Raise when a service died that the test did not kill."""
        for service in self.services.values():
            if service.killed_at is None and not service.running:
                raise ClusterError(
                    f"{service.name} exited with {service.process.returncode}; its log ends:\n{service.log_tail()}"
                )

    # -- readiness ------------------------------------------------------------------

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float, interval: float = 1.0) -> None:
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}")
            time.sleep(interval)

    def _api_ready(self) -> bool:
        try:
            return requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _jobs_running(self) -> bool:
        rows = self.query(
            "select job_type, count(*) from job where state = 'running' "
            "and latest_heartbeat > now() - interval '60 seconds' group by job_type"
        )
        running = {job_type for job_type, count in rows if count}
        return {"SchedulerJob", "DagProcessorJob"} <= running

    def _workers_ready(self) -> bool:
        return set(self.ping_workers()) >= {f"worker{n}" for n in range(1, self.workers + 1)}

    def ping_workers(self, timeout: float = 2.0) -> list[str]:
        """Names (``worker1`` ...) of the workers that answer a Celery ping on the broker."""
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.ping(timeout=timeout) or []
        except Exception:  # kombu.exceptions.OperationalError while Redis is unreachable
            return []
        finally:
            app.close()
        return sorted(name.split("@", 1)[0] for reply in replies for name in reply)

    # -- DAGs and runs --------------------------------------------------------------

    def add_dag_file(self, name: str, text: str) -> Path:
        path = self.dags_folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)  # the dag processor never sees half a file
        return path

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Until the dag processor has serialized ``dag_id`` (raises with its import error if any)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if self.query("select 1 from serialized_dag where dag_id = %s", (dag_id,)):
                return
            errors = self.query("select filename, stacktrace from import_error")
            if errors:
                raise ClusterError(f"DAG import errors: {errors}")
            if time.monotonic() > deadline:
                raise ClusterError(f"DAG {dag_id} was not parsed in {timeout:.0f}s")
            time.sleep(1)

    def trigger(self, dag_id: str, run_id: str | None = None, conf: Mapping[str, Any] | None = None) -> str:
        """Create a DagRun through the public REST API (as the UI's Trigger button does); returns its run id."""
        run_id = run_id or f"cluster__{uuid.uuid4().hex[:8]}"
        # simple_auth_manager_all_admins: GET /auth/token hands out an admin token without credentials.
        token = requests.get(f"{self.api_url}/auth/token", timeout=30).json()["access_token"]
        response = requests.post(
            f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if response.status_code >= 300:
            raise ClusterError(f"triggering {dag_id} answered {response.status_code}: {response.text[:2000]}")
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("select state from dag_run where dag_id = %s and run_id = %s", (dag_id, run_id))
        return rows[0][0] if rows else None

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceRow]:
        rows = self.query(
            "select task_id, map_index, state, try_number, pid, hostname from task_instance "
            "where dag_id = %s and run_id = %s order by task_id, map_index",
            (dag_id, run_id),
        )
        return [TaskInstanceRow(*row) for row in rows]

    def try_history(self, dag_id: str, run_id: str) -> dict[tuple[str, int], list[tuple[int, str | None]]]:
        """(task_id, map_index) -> [(try_number, state), ...] of finished earlier tries and the current one."""
        tries: dict[tuple[str, int], list[tuple[int, str | None]]] = {}
        for task_id, map_index, try_number, state in self.query(
            "select task_id, map_index, try_number, state from task_instance_history "
            "where dag_id = %s and run_id = %s order by try_number",
            (dag_id, run_id),
        ):
            tries.setdefault((task_id, map_index), []).append((try_number, state))
        for ti in self.task_instances(dag_id, run_id):
            tries.setdefault((ti.task_id, ti.map_index), []).append((ti.try_number, ti.state))
        return tries

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        rows = self.query(
            "select value from xcom where dag_id = %s and run_id = %s and task_id = %s and map_index = %s and key = %s",
            (dag_id, run_id, task_id, map_index, key),
        )
        return rows[0][0] if rows else None

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        *,
        on_poll: Callable[[list[TaskInstanceRow]], None] | None = None,
        interval: float = 0.5,
    ) -> str:
        """Poll until the run is success/failed; ``on_poll`` sees the task instances every poll."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                tis = ", ".join(
                    f"{t.task_id}[{t.map_index}]={t.state}/try{t.try_number}"
                    for t in self.task_instances(dag_id, run_id)
                )
                raise ClusterError(f"run {dag_id}/{run_id} still {state} after {timeout:.0f}s: {tis}")
            time.sleep(interval)

    # -- metadata DB and broker -------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] | None = None) -> list[tuple]:
        with psycopg.connect(self.metadata_dsn, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def _redis(self, db: int | None = None):
        import redis

        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.redis_db if db is None else db, socket_timeout=5)

    def _claim_redis_db(self) -> None:
        """Take the first DB of ``redis_dbs`` no other cluster claims, and empty it of leftovers."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{self.db_name}"
        for db in self.redis_dbs:
            with self._redis(db) as client:
                if client.set(REDIS_CLAIM_KEY, owner, nx=True, ex=REDIS_CLAIM_SECONDS):
                    for key in client.scan_iter(count=1000):
                        if key != REDIS_CLAIM_KEY.encode():
                            client.delete(key)
                    self.redis_db = db
                    return
        raise ClusterError(f"every Redis DB of {self.redis_dbs} is claimed by another cluster ({REDIS_CLAIM_KEY})")


@dataclass
class EmulatorProcess:
    """An emulator started with its CLI, ``python -m airflow_provider_retl.testing.emulators``,
    as a process of its own (so the workers' traffic is real HTTP between processes).

    ``args`` are the subcommand's options; the port is picked here. ``admin("state")``
    reads an admin route (``/_emulator/state``, ``requests`` ...).
    """

    kind: str
    args: Sequence[str] = ()
    log_path: Path | None = None
    startup_timeout: float = 60.0
    url: str = field(init=False, default="")
    process: subprocess.Popen | None = field(init=False, default=None)

    def __enter__(self) -> EmulatorProcess:
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix=f"retl-{self.kind}-emulator-", suffix=".log")[1])
        port = free_port()
        argv = [sys.executable, "-m", "airflow_provider_retl.testing.emulators", self.kind,
                "--host", "127.0.0.1", "--port", str(port), *self.args]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        marker = f"{self.kind} emulator listening on "
        while not self.url:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(marker):
                    self.url = line[len(marker):].strip()
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise ClusterError(f"{self.kind} emulator did not start:\n{text[-3000:]}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            kill_tree(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def admin(self, route: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}/_emulator/{route}", params=params, timeout=120)
        response.raise_for_status()
        return response.json()
