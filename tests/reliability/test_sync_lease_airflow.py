"""The sync lease of the Airflow stores (Variable, XCom) under real concurrency: two ``dag.test()``
processes run the same sync at the same moment on one metadata DB (issue 15, class 4).

``dag.test()`` runs a task directly, whatever ``max_active_tis_per_dag`` says, so these two
runs of one DAG overlap for real and only the store's lease keeps them apart: 200 HubSpot
companies must stay 200. A barrier task makes both syncs start together.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

ROOT = Path(__file__).resolve().parents[2]
N = 200

DAG = """
import datetime as dt
import time
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id="DAG_ID", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):

    @task
    def barrier(**context):
        folder = Path("BARRIER")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / context["ti"].run_id.replace(":", "_").replace("+", "_")).touch()
        while len(list(folder.iterdir())) < 2:
            time.sleep(0.005)

    barrier() >> ReverseETLOperator(
        task_id="sync",
        conn_id="lease_src",
        sql="select domain, name, city from src",
        destination_conn_id="lease_hubspot",
        object="companies",
        primary_key="domain",
        match_on="domain",
        checkpoint="STORE",
        sync_name=SYNC_NAME,
    )
"""

CHILD = """
import datetime as dt, json, sys
sys.path.insert(0, "TESTS")
import airflow_harness
job = json.loads(sys.argv[1])
result = airflow_harness.run_dag(job["dag"], job["dag_id"], logical_date=dt.datetime.fromisoformat(job["date"]))
print("RESULT", json.dumps({"run_id": result.run_id, "state": result.state}))
"""


@pytest.mark.parametrize("store", ["variable", "xcom"])
def test_two_dagruns_started_together_create_each_company_once(dag_runner, set_connection, tmp_path, store):
    warehouse = tmp_path / "w.sqlite"
    with sqlite3.connect(warehouse) as conn:
        conn.execute("create table src (domain varchar(200), name varchar(200), city varchar(200))")
        conn.executemany(
            "insert into src values (?, ?, ?)", [(f"d{i}.example.com", f"Company {i}", f"C{i}") for i in range(N)]
        )
    dag_id = f"lease_{store}_{os.getpid()}"
    text = (
        DAG.replace("DAG_ID", dag_id)
        .replace("BARRIER", str(tmp_path / "barrier"))
        .replace("STORE", store)
        .replace("SYNC_NAME", repr(f"lease_companies_{store}") if store == "variable" else "None")
    )
    with start_emulator("hubspot", rate_limit=None) as running:
        running.emulator.faults.update(latency=0.05)
        set_connection("lease_src", "sqlite", host=str(warehouse))
        set_connection(
            "lease_hubspot", "retl_hubspot", host=running.url, password=DEFAULT_TOKEN, extra={"batch_size": 20, "rate_limit": 0}
        )
        dag_runner.migrate_db()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        procs = []
        for i in range(2):
            job = {"dag": text, "dag_id": dag_id, "date": (base + dt.timedelta(hours=i)).isoformat()}
            code = CHILD.replace("TESTS", str(ROOT / "tests"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, json.dumps(job)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
        runs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            (tmp_path / f"out{len(runs)}.txt").write_text(out)
            print("CHILD-OUT", tmp_path)
            assert proc.returncode == 0, out[-2000:]
            line = next(l for l in out.splitlines() if l.startswith("RESULT "))
            runs.append(json.loads(line[len("RESULT ") :]))

        results = [dag_runner.collect_result(dag_id, run["run_id"]) for run in runs]
        assert all(r.succeeded for r in results), [str(r) for r in results]
        companies = Counter(r["properties"]["domain"] for r in running.emulator.records("companies"))
        assert len(companies) == N and set(companies.values()) == {1}, f"{sum(companies.values())} companies for {N} rows"
        created = sorted(r.task("sync").return_value["created"] for r in results)
        assert created == [0, N], f"companies created per run: {created}"
        leftovers = dag_runner.variables("retl_lease__")
        assert not leftovers, f"lease claims left behind: {sorted(leftovers)}"
