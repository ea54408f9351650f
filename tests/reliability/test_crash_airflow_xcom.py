"""SIGKILL a real Airflow task whose checkpoint is in XCom, then clear and re-run the SAME DagRun.

Like ``test_crash_airflow_variable.py`` (same destinations, seeds and checks), but the
checkpoint is the task's ``retl_checkpoint`` XCom of the latest earlier run (wiped when a
try starts) and the journal of a failed try lives in numbered Variables; the retry is the same
DagRun cleared and run again ("Clear" in the UI, or an Airflow retry).
"""

from __future__ import annotations

import pytest

from .crash_support import SEEDS

STORE = "xcom"


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_task_retries_to_a_clean_state(airflow_bench, seed):
    fired = airflow_bench.trial(seed)
    assert fired, "no kill fired: the trial proves nothing"
