"""`make airflow`: Airflow 3 (`airflow standalone`) with the example DAGs, ready to click through.

* the destination emulators of the shop example run in this process, on their fixed ports
  (HubSpot 8081, Mailchimp 8083, Salesforce 8084, Zendesk 8085, Customer.io 8087);
* every example connection is set as an ``AIRFLOW_CONN_*`` variable pointing at them, and
  ``warehouse`` at ``.airflow/shop.duckdb`` (dbt builds it in the first task);
* one pool per destination account is created, ``shop_dbt_to_apps`` is unpaused (its
  daily run starts at once), and the UI is at http://localhost:8080 (login admin / admin).

Make a task fail with an emulator fault, e.g.
``curl -X POST localhost:8081/_emulator/faults -H 'content-type: application/json' -d '{"error_rate": 1}'``,
then clear it in the UI once the fault is off (``{"error_rate": 0}``) and watch the retry resume.
Stop with Ctrl-C. State lives in ``.airflow/`` (``make clean`` removes it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".airflow"
PORT = int(os.environ.get("RETL_AIRFLOW_PORT", "8080"))
USER, PASSWORD = "admin", "admin"
DAG_ID = "shop_dbt_to_apps"


def environment(urls: dict[str, str]) -> dict[str, str]:
    from airflow_provider_retl.testing import example_stack

    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{PORT}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(HOME / "passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "RETL_DBT_EXECUTABLE": env.get("RETL_DBT_EXECUTABLE") or str(ROOT / ".venv-dbt" / "bin" / "dbt"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    env.update(example_stack.connection_env(urls, warehouse_path=str(HOME / "shop.duckdb")))
    return env


def airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_for_ui(timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v2/version", timeout=2):
                return True
        except OSError:
            time.sleep(2)
    return False


def start_the_example(env: dict[str, str], stop: threading.Event) -> None:
    """Once the DAG is parsed, unpause it: the scheduler starts its latest daily run at once.

    Only this DAG: the dbt DAG of ``shop_assets.py`` writes the same DuckDB file, and a
    DuckDB file has one writer at a time.
    """
    deadline = time.monotonic() + 300
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            airflow(env, "dags", "unpause", DAG_ID)
            print(f"Unpaused {DAG_ID}; its first run starts now: http://localhost:{PORT}/dags/{DAG_ID}", flush=True)
            return
        except RuntimeError:
            stop.wait(5)  # not parsed yet


def main() -> int:
    from airflow_provider_retl.testing import example_stack

    HOME.mkdir(exist_ok=True)
    (HOME / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    if not Path(environment({k: "" for k in example_stack.PORTS})["RETL_DBT_EXECUTABLE"]).exists():
        print("dbt is missing: run `make .venv-dbt/.retl-installed` (make airflow does)", file=sys.stderr)
        return 1
    running = example_stack.start_example_emulators(fixed_ports=True)
    urls = {kind: emulator.url for kind, emulator in running.items()}
    env = environment(urls)
    for kind, url in urls.items():
        print(f"{kind:<11} emulator: {url}  (state: {url}/_emulator/state)")
    airflow(env, "db", "migrate")
    pools = {name: {"slots": 2, "description": "example destination account", "include_deferred": False}
             for name in _example_pools()}
    (HOME / "pools.json").write_text(json.dumps(pools))
    airflow(env, "pools", "import", str(HOME / "pools.json"))

    standalone = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env,
                                  stdout=open(HOME / "standalone.log", "w"), stderr=subprocess.STDOUT)
    stop = threading.Event()
    try:
        if not wait_for_ui():
            print(f"Airflow did not come up; see {HOME / 'standalone.log'}", file=sys.stderr)
            return 1
        print(f"\nAirflow UI: http://localhost:{PORT}  login: {USER} / {PASSWORD}")
        print(f"Airflow logs: {HOME / 'standalone.log'}; Ctrl-C stops everything.\n", flush=True)
        threading.Thread(target=start_the_example, args=(env, stop), daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.is_set() and standalone.poll() is None:
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if standalone.poll() is None:
            standalone.send_signal(signal.SIGINT)
            try:
                standalone.wait(30)
            except subprocess.TimeoutExpired:
                standalone.kill()
        example_stack.stop_all(running)
    return 0


def _example_pools() -> list[str]:
    sys.path.insert(0, str(ROOT / "dags"))
    import shop_example

    return sorted(set(shop_example.POOLS.values()))


if __name__ == "__main__":
    raise SystemExit(main())
