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
#: events exactly once (Customer.io's dedupe id), every seed of ``crash_support.SEEDS``.
AIRFLOW_CRASH_SCENARIOS = {
    "hubspot_upsert": scenarios.hubspot_upsert,
    "hubspot_lookup": scenarios.hubspot_lookup,
    "customerio_events": scenarios.customerio_events,
}
#: The other destinations, each killed as a real Airflow task at ONE seed per store (a whole
#: DagRun per run makes every seed of every destination too slow for this suite; the File-store
#: suite runs all seeds on them). Seeds chosen so the kill points differ between destinations
#: (``plan_kills``: seed % 6 picks read, request, after_request, commit_torn, after_commit, finalize).
AIRFLOW_CRASH_ONE_SEED = {
    "zendesk_users_external_id": (scenarios.zendesk_users_external_id, 1),
    "mailchimp_members": (scenarios.mailchimp_members, 2),
    "salesforce_contacts": (scenarios.salesforce_contacts, 3),
    "webhook_upsert": (scenarios.webhook_upsert, 4),
    "braze_events": (scenarios.braze_events, 8),
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (listed as deselected, never skipped) the seeds an ``AIRFLOW_CRASH_ONE_SEED`` destination does not run."""
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        name = spec.params.get("airflow_bench") if spec is not None else None
        if name in AIRFLOW_CRASH_ONE_SEED and spec.params.get("seed") != AIRFLOW_CRASH_ONE_SEED[name][1]:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="module", params=sorted(AIRFLOW_CRASH_SCENARIOS) + sorted(AIRFLOW_CRASH_ONE_SEED))
def airflow_bench(request, airflow_fork_server, tmp_path_factory) -> Iterator[Bench]:
    """The calling module's ``STORE`` x one scenario, with its clean reference run done."""
    store = request.module.STORE
    name = request.param
    scenario = AIRFLOW_CRASH_SCENARIOS[name]() if name in AIRFLOW_CRASH_SCENARIOS else AIRFLOW_CRASH_ONE_SEED[name][0]()
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        workdir = tmp_path_factory.mktemp(f"crash-{store}-{scenario.name}")
        bench = Bench(store, scenario, running, airflow_fork_server, workdir).prepare()
        yield bench
        print(f"\n{store} {scenario.name}: kills fired {dict(bench.tally)}")


@pytest.fixture(scope="module")
def hubspot():
    """A HubSpot emulator for the test module, without a rate limit (these suites count requests)."""
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@pytest.fixture
def hook(hubspot, monkeypatch, request):
    """A real HubSpotHook on the module's emulator, emptied first, through a connection named after the module.

    A module that needs other extras (batch size, retries) defines its own ``hook``.
    """
    import json

    from airflow_provider_retl.hooks.hubspot import HubSpotHook
    from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN

    hubspot.emulator.reset()
    conn_id = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN, "extra": {"rate_limit": 0}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))
    with HubSpotHook(conn_id, sleep=lambda s: None) as h:
        yield h
