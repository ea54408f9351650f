"""The sync lease of the Airflow stores (Variable, XCom), inside real tasks run by ``dag.test()``.

Variables have no compare-and-set, so these stores take turns with claim Variables (the bakery
algorithm, ``checkpoints.variable.VariableLeaseBackend``). Checked here in real tasks:

* a held lease (an earlier try that is still running, or was killed and has not expired)
  makes another try fail with a message naming it, also across DagRuns for the XCom store;
* an expired claim is taken over and its owner can no longer commit;
* no claim Variable is left behind.

Two overlapping ``dag.test()`` processes on one SQLite metadata DB were tried and are not
reliable (one of them stalls while both serialize the DAG), and ``dag.test()`` swaps the task
SDK's channel so other threads of a task cannot call the Variable API there; so contention
between processes is covered by the file and warehouse stores in ``test_sync_lease.py``.
"""

from __future__ import annotations

import pytest

DAG = """
import datetime as dt
import time

from airflow.sdk import DAG, task

with DAG(dag_id="DAG_ID", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):

    @task
    def probe(**context):
        from airflow_provider_retl.checkpoints.variable import VariableCheckpointStore
        from airflow_provider_retl.checkpoints.xcom import XComCheckpointStore
        from airflow_provider_retl.sync.checkpoint import JournalEntry, Lease, LeaseHeld, LeaseLost

        def new():
            return VariableCheckpointStore("lease_probe") if "STORE" == "variable" else XComCheckpointStore(context)

        entry = JournalEntry.puts([1], [2], ["id-1"])
        out = {}
        phase = (context["dag_run"].conf or {}).get("phase", "hold")
        if phase == "hold":
            held = new()
            held.lease_label = "the killed try"
            held.acquire_lease()  # and never released: this task "dies" holding it
            return {"held": True}
        # A later run / try: the claim of the "killed" one is still alive.
        second = new()
        second.lease_wait = 0
        try:
            second.acquire_lease()
            out["blocked"] = None
        except LeaseHeld as exc:
            out["blocked"] = str(exc)
        # Its claim expires: a retry whose clock is past the expiry takes over and commits.
        later = time.time() + 3 * second.lease_ttl
        retry = new()
        retry.lease = Lease(retry, label="retry", clock=lambda: later, wait=0, heartbeat=False)
        retry.lease.acquire()
        retry.commit(entry, target_fingerprint="t", payload_fingerprint="p")
        retry.release_lease()
        # A zombie: holds the lease, freezes past its expiry, another try takes over, it wakes up.
        zombie = new()
        zombie.lease = Lease(zombie, label="zombie", wait=0, heartbeat=False)
        zombie.lease.acquire()
        taker = new()
        taker.lease = Lease(taker, label="taker", clock=lambda: later, wait=0, heartbeat=False)
        taker.lease.acquire()
        zombie.lease.monotonic = lambda: time.monotonic() + 3 * zombie.lease_ttl
        try:
            zombie.commit(entry, target_fingerprint="t", payload_fingerprint="p")
            out["zombie_committed"] = True
        except LeaseLost:
            out["zombie_committed"] = False
        taker.release_lease()
        zombie.release_lease()

        return out

    probe()
"""


@pytest.mark.parametrize("store", ["variable", "xcom"])
def test_the_lease_of_the_airflow_stores(dag_runner, store):
    dag_id = f"lease_probe_{store}"
    text = DAG.replace("DAG_ID", dag_id).replace("STORE", store)
    held = dag_runner.run_dag(text, dag_id, conf={"phase": "hold"})
    assert held.succeeded, held
    later = dag_runner.run_dag(text, dag_id, conf={"phase": "contend"})  # another DagRun of the task
    assert later.succeeded, later
    out = later.task("probe").return_value
    assert out["blocked"] and "the killed try" in out["blocked"] and "expires" in out["blocked"], out
    assert held.run_id != later.run_id
    assert out["zombie_committed"] is False, out
    claims = dag_runner.variables("retl_lease__")
    # Only the "killed" try's claim is left (it never released; the retry deleted it as expired
    # or it expires by itself); every released claim is gone.
    assert len([k for k in claims if "probe" in k]) <= 1, sorted(claims)
