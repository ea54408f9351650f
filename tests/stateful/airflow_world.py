"""The same world, but every run is a real Airflow DagRun (``dag.test()``) of ReverseETLOperator.

The source is a SQLite table; the checkpoint is one of the Airflow-backed stores
(``variable``, ``xcom``) or ``warehouse`` (a table beside the source). One Airflow process runs
every DagRun of the session (the harness's migrated DB).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.stateful.world import Destination, RunResult, World

DAG_TEMPLATE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id="sync", retries=1, retry_delay=dt.timedelta(seconds=0), **{kwargs!r})
"""


class AirflowWorld(World):
    """A World whose runs go through ``dag.test()``; ``checkpoint`` is the operator's argument."""

    def __init__(self, dest: Destination, checkpoint: str, workdir: Path, running: Any, harness: Any):
        super().__init__(dest, "sqlite", workdir, running)
        self.checkpoint = checkpoint
        self.harness = harness
        self.dag_id = f"stateful_{uuid.uuid4().hex[:10]}"

    def run_once(self, partition: tuple[int, int] | None, *, kill: Any = None, slot: int | None = None) -> RunResult:
        assert kill is None, "kills in Airflow runs are the crash suites' job (tests/reliability)"
        self.write_source()
        kwargs = {
            "conn_id": self.src_conn,
            "sql": "select * from src",
            "destination_conn_id": self.conn_id,
            "checkpoint": self.checkpoint if self.checkpoint != "warehouse" else "warehouse:retl_ck_af",
            "sync_name": self.sync_id,
            "progress_interval": 0.0,
            # Histories of null/duplicated keys only are normal here; the threshold has its own tests.
            "max_reject_ratio": 1.0,
            **{k: v for k, v in self.dest.config.items()},
        }
        if partition is not None:
            kwargs["partition"] = f"{partition[0]}/{partition[1]}"
        text = DAG_TEMPLATE.format(dag_id=self.dag_id, kwargs=kwargs)
        outcome = self.harness.run_dag(text, self.dag_id)
        result = RunResult()
        ti = outcome.task("sync")
        result.report = ti.return_value
        if not outcome.succeeded:
            result.error = RuntimeError(f"DagRun failed: {outcome}")
        emitted = [json.dumps(ti.xcoms, default=str), str(outcome)]
        emitted += [r.path for r in self.running.emulator.requests]
        result.emitted = "\n".join(emitted)
        return result
