"""Model-based test of the engine: random histories over every checkpoint store x one
destination of each kind (native upsert, lookup then create, events, asynchronous jobs).

Real parts only: ``run_sync``, the emulators over HTTP, file and warehouse checkpoint stores on
real DuckDB, SQLite and PostgreSQL. Findings become plain tests in ``test_regressions.py``.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis.stateful import run_state_machine_as_test

from airflow_provider_retl.hooks.zendesk import clear_job_gates
from tests.stateful.conftest import profile
from tests.stateful.machine import SyncMachine
from tests.stateful.world import DESTINATIONS, World

STORES = ["file", "duckdb", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("store_kind", STORES)
def test_random_histories(store_kind, running_destination, tmp_path_factory, request):
    name, running = running_destination
    pg = request.getfixturevalue("pg_schema") if store_kind == "postgres" else None
    counter = itertools.count()

    def world() -> World:
        running.emulator.reset()
        running.faults.clear()
        clear_job_gates()
        workdir = tmp_path_factory.mktemp(f"st-{name}-{store_kind}-{next(counter)}")
        return World(DESTINATIONS[name], store_kind, workdir, running, pg)

    machine = type(f"Machine_{name}_{store_kind}", (SyncMachine,), {"world_factory": staticmethod(world)})
    run_state_machine_as_test(machine, settings=profile())
