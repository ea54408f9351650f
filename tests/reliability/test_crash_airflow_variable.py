"""SIGKILL a real Airflow task whose checkpoint is in Variables, then retry it as a NEW DagRun.

Each trial (one seed, one destination of ``conftest.AIRFLOW_CRASH_SCENARIOS``: HubSpot
contacts by native upsert, HubSpot companies by search lookup then create/update, Customer.io
events exactly once): version 1 of the source syncs cleanly in its own DAG; version 2 runs in
a forked child (``airflow_crash.AirflowForkServer``: a warm process with Airflow imported, the
metadata DB migrated and one ``dag.test()`` run behind it) that SIGKILLs itself at a seeded
kill point (before the first batch, mid-push, inside or right after a journal write, in
finalize); 30% of trials kill the first retry too. The dead task instance is reaped (failed,
as the scheduler does on a lost heartbeat) and retried as a new DagRun: the checkpoint lives
in Variables, across runs.

After the retry (``crash_support.check``): the emulator (in this process, never in the fork
server) holds exactly the source rows, no duplicates, every event once, the stored checkpoint
(read back from the metadata DB) equals a clean run's (same keys and row hashes, each id the
destination's or the stable event id), and no journal Variable is left.
"""

from __future__ import annotations

import pytest

from .crash_support import SEEDS

STORE = "variable"


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_task_retries_to_a_clean_state(airflow_bench, seed):
    fired = airflow_bench.trial(seed)
    assert fired, "no kill fired: the trial proves nothing"
