"""One sync in a process of its own, started together with others: the concurrency tests' child.

``python -m tests.reliability.lease_child <job.json>`` builds the sync of a ``crash.SyncSpec``
(file checkpoint) or, with ``"warehouse"`` in the job, the warehouse checkpoint on a SQL
connection; waits at a file barrier until every party is ready (so the runs really start
together, after their imports); runs ``run_sync``; and writes the report or the error as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _barrier(folder: Path, me: int, parties: int, timeout: float = 120.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ready-{me}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other runs never got ready")
        time.sleep(0.005)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    outcome: dict[str, Any]
    try:
        from airflow_provider_retl.sync.engine import run_sync
        from airflow_provider_retl.testing.crash import SyncSpec, build, chunks_of

        spec = SyncSpec(**job["spec"])
        hook, store, config = build(spec)
        warehouse = job.get("warehouse")
        if warehouse:
            import os

            from airflow.sdk import BaseHook

            from airflow_provider_retl.checkpoints.warehouse import warehouse_store

            os.environ[f"AIRFLOW_CONN_{warehouse['conn_id'].upper()}"] = json.dumps(warehouse["connection"])
            sql_hook = BaseHook.get_connection(warehouse["conn_id"]).get_hook()
            store = warehouse_store(
                warehouse["spec"], sql_hook, warehouse["sql"], sync_id=config.sync_id, column_types=None
            )
        for name in ("lease_ttl", "lease_wait"):
            if name in job:
                setattr(store, name, job[name])
        store.lease_label = f"party {job['me']}"
        _barrier(Path(job["barrier"]), job["me"], job["parties"])
        report = run_sync(chunks_of(spec), hook, store, config)
        outcome = {"ok": True, "report": report.to_dict()}
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(job["result"]).write_text(json.dumps(outcome, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
