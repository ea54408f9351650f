"""`make airflow`: Airflow 3 (`airflow standalone`) with the example DAGs, ready to click through.

* the destination emulators of the shop example run in this process, on their fixed ports
  (HubSpot 8081, Mailchimp 8083, Salesforce 8084, Zendesk 8085, Customer.io 8087), and the
  webhook receiver of ``retl_demo`` (8082);
* every example connection is imported into the metadata DB (``airflow connections import``,
  again at each start), so it is listed and editable under Admin -> Connections; ``warehouse``
  is ``.airflow/shop.duckdb`` (dbt builds it in the first task), ``demo_warehouse`` is
  ``.airflow/demo.duckdb`` (the ``customers`` table of ``retl_demo``, built here);
* the connection form's Test button is enabled (``[core] test_connection``); the destination
  connections carry their emulator's port, which Airflow 3.3.2's Test button in the connection
  list needs (without one it answers 400, apache/airflow#73298);
* one pool per destination account is created, ``shop_dbt_to_apps`` is unpaused (its
  daily run starts at once), and the UI is at http://127.0.0.1:8080, bound to the loopback
  interface only, for user ``admin`` with a password generated on the first start and kept in
  ``.airflow/passwords.json`` (printed at every start).

README.md ("Click through it in Airflow") says what to click, how to make a sync fail with an emulator fault
and how a cleared task resumes. Stop with Ctrl-C. State lives in ``.airflow/`` (``make clean``
removes it). ``running_standalone()`` starts the same thing elsewhere (another home, free
ports): ``tests/ui/test_airflow_ui.py`` uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".airflow"
PORT = int(os.environ.get("RETL_AIRFLOW_PORT", "8080"))
USER = "admin"
#: The API server (and so the UI) listens on the loopback interface only.
BIND_HOST = "127.0.0.1"
DAG_ID = "shop_dbt_to_apps"


def environment(*, home: Path = HOME, port: int = PORT) -> dict[str, str]:
    """The environment of every `airflow` process of the standalone (connections live in its DB)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__HOST": BIND_HOST,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{BIND_HOST}:{port}/execution/",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "RETL_DBT_EXECUTABLE": env.get("RETL_DBT_EXECUTABLE") or str(ROOT / ".venv-dbt" / "bin" / "dbt"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    return env


def example_connections(urls: Mapping[str, str], home: Path) -> dict[str, dict[str, Any]]:
    """Every connection the example DAGs use (JSON form of `airflow connections import`)."""
    from airflow_provider_retl.testing import example_stack

    conns = example_stack.connections(
        {k: v for k, v in urls.items() if k in example_stack.PORTS},
        warehouse_path=str(home / "shop.duckdb"),
        history_path=str(home / "retl_history.sqlite"),
    )
    conns["webhook_default"] = demo_data().webhook_connection(urls["webhook"])
    conns[demo_data().WAREHOUSE_CONN_ID] = demo_data().warehouse_connection(home / "demo.duckdb", read_only=True)
    # dags/retl_guardrail_alerts.py mails its alerts here: any local SMTP debugging server on 1025 receives them.
    conns["retl_alerts_smtp"] = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": 1025,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost"},
    }
    for fields in conns.values():
        # Airflow 3.3.2's Test button in the connection list sends port 0 for a connection without
        # one and gets a 400 (apache/airflow#73298); the emulator's port (also in the URL) avoids that.
        port = urlsplit(str(fields["host"])).port
        if fields["conn_type"].startswith("retl_") and port:
            fields["port"] = port
    return conns


def demo_data() -> Any:
    """``demo/demo_data.py`` (the retl_demo table and connections), shared with `make demo`."""
    if str(ROOT / "demo") not in sys.path:
        sys.path.insert(0, str(ROOT / "demo"))
    import demo_data as module

    return module


def admin_password(home: Path) -> str:
    """The admin's password: generated on the first start, then read from the simple auth manager's file."""
    path = home / "passwords.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    password = known.get(USER)
    if not password or password == "admin":  # an .airflow/ of an older `make airflow` had admin/admin
        password = secrets.token_urlsafe(12)
        # Readable by its owner only, from its first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**known, USER: password}, fh)
        path.chmod(0o600)  # a file left by an older `make airflow` keeps its mode through O_CREAT
    return password


def airflow(env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "airflow", *args], env=dict(env), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Standalone:
    """A running ``airflow standalone`` and the example emulators it syncs to."""

    home: Path
    port: int
    password: str
    env: dict[str, str]
    emulators: dict[str, Any]  # kind -> RunningEmulator
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{BIND_HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "standalone.log"


def wait_for_api(port: int, process: subprocess.Popen | None = None, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=2):
                return True
        except OSError:
            time.sleep(2)
    return False


@contextlib.contextmanager
def running_standalone(
    home: Path = HOME,
    port: int = PORT,
    *,
    fixed_ports: bool = True,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> Iterator[Standalone]:
    """Emulators, metadata DB, pools and ``airflow standalone``, stopped on exit.

    ``fixed_ports=False`` starts the emulators on free ports (the connections follow them).
    """
    from airflow_provider_retl.destinations import REGISTRY
    from airflow_provider_retl.testing import example_stack
    from airflow_provider_retl.testing.emulators import start_emulator

    home.mkdir(parents=True, exist_ok=True)
    password = admin_password(home)
    dbt = environment(home=home, port=port)["RETL_DBT_EXECUTABLE"]
    if not Path(dbt).exists():
        raise FileNotFoundError("dbt is missing: run `make .venv-dbt/.retl-installed` (make airflow does)")
    running = example_stack.start_example_emulators(fixed_ports=fixed_ports)
    process: subprocess.Popen | None = None
    try:
        # retl_demo's webhook receiver, on the webhook emulator's own port (8082).
        webhook_spec = REGISTRY["webhook"].emulator
        webhook_port = webhook_spec.port if fixed_ports and webhook_spec is not None else 0
        running["webhook"] = start_emulator("webhook", port=webhook_port, secret=demo_data().WEBHOOK_SECRET)
        urls = {kind: emulator.url for kind, emulator in running.items()}
        env = environment(home=home, port=port)
        env.update(extra_env or {})
        airflow(env, "db", "migrate")
        # In the metadata DB, not AIRFLOW_CONN_* variables: the UI lists only the DB's connections.
        (home / "connections.json").write_text(json.dumps(example_connections(urls, home), indent=2))
        (home / "connections.json").chmod(0o600)
        airflow(env, "connections", "import", "--overwrite", str(home / "connections.json"))
        demo_data().build_warehouse(home / "demo.duckdb")
        pools = {name: {"slots": 2, "description": "example destination account", "include_deferred": False}
                 for name in _example_pools()}
        (home / "pools.json").write_text(json.dumps(pools))
        airflow(env, "pools", "import", str(home / "pools.json"))
        # A session of its own, so stopping it also reaches the scheduler, api-server... it started.
        process = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, start_new_session=True,
                                   stdout=open(home / "standalone.log", "w"), stderr=subprocess.STDOUT)
        if not wait_for_api(port, process, timeout):
            raise RuntimeError(f"Airflow did not come up on port {port}; see {home / 'standalone.log'}")
        yield Standalone(home=home, port=port, password=password, env=env, emulators=running, process=process)
    finally:
        if process is not None:
            _stop(process)
        example_stack.stop_all(running)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # standalone stops its components on Ctrl-C
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is left
    process.wait()


def unpause_when_parsed(env: Mapping[str, str], dag_id: str, stop: threading.Event, timeout: float = 300) -> bool:
    """Unpause ``dag_id`` once the dag processor has parsed it; the scheduler starts its latest daily run at once.

    Only this DAG: the dbt DAG of ``shop_assets.py`` writes the same DuckDB file, and a
    DuckDB file has one writer at a time.
    """
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            airflow(env, "dags", "unpause", dag_id)
            return True
        except RuntimeError:
            stop.wait(5)  # not parsed yet
    return False


def main() -> int:
    stop = threading.Event()
    try:
        with running_standalone() as standalone:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())  # once up, as before
            for kind, emulator in standalone.emulators.items():
                print(f"{kind:<11} emulator: {emulator.url}  (state: {emulator.url}/_emulator/state)")
            print(f"\nAirflow UI: {standalone.url}  login: {USER} / {standalone.password}")
            print(f"(listening on {BIND_HOST} only; the password is kept in {standalone.home / 'passwords.json'})")
            print(f"Airflow logs: {standalone.log_path}; Ctrl-C stops everything.\n", flush=True)

            def start_the_example() -> None:
                if unpause_when_parsed(standalone.env, DAG_ID, stop):
                    print(f"Unpaused {DAG_ID}; its first run starts now: {standalone.url}/dags/{DAG_ID}",
                          flush=True)

            threading.Thread(target=start_the_example, daemon=True).start()
            while not stop.is_set() and standalone.process.poll() is None:
                stop.wait(1)
    except KeyboardInterrupt:
        pass
    except (FileNotFoundError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        stop.set()
    return 0


def _example_pools() -> list[str]:
    if str(ROOT / "dags") not in sys.path:
        sys.path.insert(0, str(ROOT / "dags"))
    import shop_example

    return sorted(set(shop_example.POOLS.values()))


if __name__ == "__main__":
    raise SystemExit(main())
