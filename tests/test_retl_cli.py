"""``airflow retl test <conn_id>``: the provider's CLI command, run as a user runs it (``python -m airflow``).

Airflow loads the ``retl`` group through the provider info's ``cli`` key; the command tests
a destination connection found in the metadata DB (what the UI creates) or in an
``AIRFLOW_CONN_*`` variable against a real emulator, and fails with exit code 1 and a
message that holds no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_retl.testing.emulators import RunningEmulator, start_emulator

REPO = Path(__file__).resolve().parents[1]
TOKEN = "pat-cli-test-0000-token"
WRONG_TOKEN = "pat-cli-wrong-9999-token"


@pytest.fixture(scope="module")
def hubspot() -> Iterator[RunningEmulator]:
    running = start_emulator("hubspot", tokens=[TOKEN], rate_limit=None)
    yield running
    running.stop()


def airflow_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=environ, capture_output=True, text=True,
                          timeout=120, check=False)


def conn_env(conn_id: str, fields: dict) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)}


def test_the_retl_group_lists_its_commands():
    done = airflow_cli("retl", "--help")
    assert done.returncode == 0, done.stderr
    assert "test" in done.stdout and "Test a destination connection" in done.stdout
    assert "replay" in done.stdout and "Replay a sync's rejects now" in done.stdout


def test_a_connection_imported_into_the_metadata_db_passes(airflow_db, hubspot, tmp_path):
    # What `make airflow` does (and what the UI's form creates): a row in the metadata DB. Unit test
    # mode draws a Fernet key per process, so both commands share one to read the stored password.
    from cryptography.fernet import Fernet

    env = {"AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"cli_hubspot_db": {"conn_type": "retl_hubspot", "host": hubspot.url,
                                                   "password": TOKEN}}))
    imported = airflow_cli("connections", "import", "--overwrite", str(path), env=env)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    before = hubspot.emulator.request_count()
    done = airflow_cli("retl", "test", "cli_hubspot_db", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Connection 'cli_hubspot_db' works: Connected to HubSpot" in done.stdout
    assert hubspot.emulator.request_count() == before + 1  # one cheap read
    assert TOKEN not in done.stdout + done.stderr


def test_a_wrong_token_fails_with_the_destinations_answer_and_no_secret(hubspot):
    env = conn_env("cli_hubspot_bad", {"conn_type": "retl_hubspot", "host": hubspot.url, "password": WRONG_TOKEN})
    done = airflow_cli("retl", "test", "cli_hubspot_bad", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Connection 'cli_hubspot_bad' failed its test:" in done.stderr
    assert "401" in done.stderr
    assert WRONG_TOKEN not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_or_foreign_connection_fails_saying_so():
    env = conn_env("cli_not_ours", {"conn_type": "http", "host": "http://127.0.0.1:9", "password": "hunter2-secret"})
    done = airflow_cli("retl", "test", "cli_not_ours", env=env)
    assert done.returncode == 1
    assert "has type 'http', not a Reverse ETL destination" in done.stderr
    assert "hunter2-secret" not in done.stdout + done.stderr
    done = airflow_cli("retl", "test", "cli_no_such_conn")
    assert done.returncode == 1
    assert "Connection 'cli_no_such_conn' is not defined" in done.stderr


TINY_DAG = '''
import datetime as dt
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    EmptyOperator(task_id="sync")
'''


def test_replay_clears_the_syncs_task_in_the_latest_run(dag_runner):
    from sqlalchemy import select

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    dag_id = "retl_cli_replay"
    result = dag_runner.run_dag(TINY_DAG.format(dag_id=dag_id), dag_id)
    assert result.state == "success"
    done = airflow_cli("retl", "replay", dag_id, "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Cleared 'sync' in run '{result.run_id}' of '{dag_id}'" in done.stdout
    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id)).one()
        assert ti.state is None  # the scheduler runs it again
    missing = airflow_cli("retl", "replay", dag_id, "nope")
    assert missing.returncode == 1 and "has no task 'nope'" in missing.stderr
    no_run = airflow_cli("retl", "replay", "retl_cli_no_such_dag", "sync")
    assert no_run.returncode == 1 and "has no run" in no_run.stderr
