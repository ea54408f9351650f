"""Fixtures of the reliability suites: one warm fork server per pytest process, one warm
Airflow fork server per Airflow crash module, and the (store x scenario) benches it serves."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_retl.testing.crash import ForkServer
from airflow_provider_retl.testing.emulators import start_emulator

from . import scenarios
from .airflow_crash import AirflowForkServer, Bench

#: The destinations the Airflow-store crash modules kill: native upsert, lookup-then-create,
#: events exactly once (Customer.io's dedupe id).
AIRFLOW_CRASH_SCENARIOS = {
    "hubspot_upsert": scenarios.hubspot_upsert,
    "hubspot_lookup": scenarios.hubspot_lookup,
    "customerio_events": scenarios.customerio_events,
}


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Forks one child per killed run; the children's logs go to a file, not the test output."""
    log = tempfile.NamedTemporaryFile(prefix="retl-crash-children-", suffix=".log", delete=False)
    with ForkServer(stderr=log) as server:
        server.log_path = Path(log.name)  # type: ignore[attr-defined]
        yield server
    log.close()
    Path(log.name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def airflow_fork_server() -> Iterator[AirflowForkServer]:
    """A warm Airflow process per module (one module per store, so xdist spreads them)."""
    log = tempfile.NamedTemporaryFile(prefix="retl-airflow-crash-", suffix=".log", delete=False)  # noqa: SIM115
    with AirflowForkServer(stderr=log) as server:
        assert server.threads_at_fork == [], f"fork server is not single-threaded: {server.threads_at_fork}"
        yield server
    log.close()
    Path(log.name).unlink(missing_ok=True)


@pytest.fixture(scope="module", params=sorted(AIRFLOW_CRASH_SCENARIOS))
def airflow_bench(request, airflow_fork_server, tmp_path_factory) -> Iterator[Bench]:
    """The calling module's ``STORE`` x one scenario, with its clean reference run done."""
    store = request.module.STORE
    scenario = AIRFLOW_CRASH_SCENARIOS[request.param]()
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        workdir = tmp_path_factory.mktemp(f"crash-{store}-{scenario.name}")
        bench = Bench(store, scenario, running, airflow_fork_server, workdir).prepare()
        yield bench
        print(f"\n{store} {scenario.name}: kills fired {dict(bench.tally)}")
