"""The model-based test through real Airflow: every run is a ``dag.test()`` DagRun of
ReverseETLOperator (SQLite source), over the Airflow checkpoint stores and the warehouse store,
for a lookup-then-create destination and an event stream. Kills are left to the engine machine
(tests/stateful/test_machine.py) and the crash suites; here the task's Airflow retry handles a
lost response."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from tests.stateful.airflow_world import AirflowWorld
from tests.stateful.conftest import profile
from tests.stateful.machine import SyncMachine
from tests.stateful.world import DESTINATIONS

pytestmark = pytest.mark.dagrun


class AirflowMachine(SyncMachine):
    """The engine machine without in-process kills and concurrency (each needs a second Airflow
    process: the crash suites do that) and store switches (one store per DAG)."""

    disabled_rules = frozenset(
        {"run_killed_then_retry", "concurrent_runs", "switch_store", "echoing_server_error", "fix_bad_keys"}
    )
    final_run = True


@pytest.mark.parametrize(
    ("dest_name", "checkpoint"), [("lookup", "variable"), ("events", "xcom"), ("lookup", "warehouse")]
)
def test_random_histories_in_airflow(dest_name, checkpoint, dag_runner, tmp_path_factory):
    from airflow_provider_retl.testing.emulators import start_emulator

    dest = DESTINATIONS[dest_name]
    counter = itertools.count()
    with start_emulator(dest.emulator, **dest.emulator_options) as running:

        def world() -> AirflowWorld:
            running.emulator.reset()
            running.faults.clear()
            workdir = tmp_path_factory.mktemp(f"af-{dest_name}-{checkpoint}-{next(counter)}")
            return AirflowWorld(dest, checkpoint, workdir, running, dag_runner)

        machine = type(
            f"AirflowMachine_{dest_name}_{checkpoint}", (AirflowMachine,), {"world_factory": staticmethod(world)}
        )
        base = profile()
        run_state_machine_as_test(
            machine, settings=settings(base, max_examples=max(1, base.max_examples // 10), stateful_step_count=8)
        )
