"""Fault profiles of the shared emulator ``Faults``, under a real sync: engine ``run_sync`` +
``HubSpotHook`` + HubSpot emulator + ``FileCheckpointStore``; then the same profiles on every
other destination hook (``FAULT_SCENARIOS``, at the end of this module).

Each case syncs version 1 of a source, then version 2 (30 changed, 20 removed, 40 new) in
mirror mode, with one fault profile switched on for both runs, re-running a failed try the
way Airflow retries a task (at most ``MAX_TRIES`` tries per version). Two destinations:

* ``upsert``: contacts, native batch upsert by email (every write is idempotent);
* ``lookup``: companies matched on domain: search lookup, then create or update by id
  (a create whose answer is lost is reconciled by lookup, never resent blindly).

Asserted: destination == source, no duplicate, at least one fault was injected, and the
extra requests are bounded:

* ``retries <= injected`` (a retry only follows an injected fault);
* ``requests - clean_requests <= EXTRA_PER_FAULT * injected + RERUN_OVERHEAD * reruns``
  (a fault costs one resend, plus one reconciling lookup for a create; a re-run re-reads the
  properties); ``clean_requests`` is the same two runs without faults;
* ``injected <= 2 * rate * requests + 3`` (the seeded rate does what it says).

Seeded and reproducible: the fault sequence is a function of ``Faults(seed=...)`` and the
request order, and ``max_concurrency=1`` fixes the order (with concurrent batches the same
seed hits different requests from run to run).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_provider_retl.hooks.hubspot import HubSpotHook
from airflow_provider_retl.hooks.zendesk import clear_job_gates
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import RetryableSyncError
from airflow_provider_retl.testing.crash import HOOKS, SyncSpec
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

from . import scenarios
from .crash_support import Scenario, check, checkpoint_of
from .test_crash_destinations import SCENARIOS as CRASH_SCENARIOS

MAX_TRIES = 4
EXTRA_PER_FAULT = 3
RERUN_OVERHEAD = 3
SEEDS = (0, 1)

#: name -> (Faults fields, the fault rate the bound is derived from, hook extras)
PROFILES: dict[str, tuple[dict[str, Any], float, dict[str, Any]]] = {
    "5xx_10pct": ({"error_rate": 0.1}, 0.1, {}),
    "burst_429": ({"burst_429": 4, "retry_after": 2.0}, 0.0, {}),
    "reset_10pct": ({"reset_rate": 0.1}, 0.1, {}),
    # The server stalls 1 s; the client gives up after 0.3 s (room for a loaded CI machine).
    "slow_past_timeout": ({"timeout_rate": 0.1, "slow_seconds": 1.0}, 0.1, {"read_timeout": 0.3}),
    "malformed_10pct": ({"malformed_rate": 0.1}, 0.1, {}),
}


@dataclass(frozen=True)
class Destination:
    object: str
    key: str
    field: str
    config: dict[str, Any] = field(default_factory=dict)

    def row(self, i: int, version: str) -> dict[str, Any]:
        if self.object == "contacts":
            return {"email": f"c{i}@example.com", "firstname": f"F{i}{version}"}
        return {"domain": f"d{i}.example.com", "name": f"N{i}{version}"}


DESTINATIONS = {
    "upsert": Destination("contacts", "email", "firstname"),
    "lookup": Destination("companies", "domain", "name", {"match_on": "domain"}),
}


def versions(dest: Destination) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    v1 = [dest.row(i, "a") for i in range(120)]
    v2 = [dest.row(i, "b" if i < 30 else "a") for i in range(100)] + [dest.row(i, "a") for i in range(120, 160)]
    return v1, v2


def chunks(rows: list[dict[str, Any]], size: int = 50) -> list[pd.DataFrame]:
    frame = pd.DataFrame(rows)
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


@pytest.fixture(scope="module")
def hubspot():
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@dataclass
class Totals:
    requests: int = 0
    retries: int = 0
    tries: int = 0
    sleeps: list[float] = field(default_factory=list)


def sync_until_done(rows, dest: Destination, store: FileCheckpointStore, totals: Totals) -> None:
    """One version of the source, re-run after a failed try like Airflow's task retries."""
    cfg = SyncConfig(
        sync_id=f"faults-{dest.object}",
        object=dest.object,
        primary_key=dest.key,
        mode="mirror",
        commit_interval=0,
        destination_identity="faults",
        **dest.config,
    )
    for _ in range(MAX_TRIES):
        totals.tries += 1
        with HubSpotHook("rel_faults", sleep=totals.sleeps.append) as hook:
            try:
                report = run_sync(chunks(rows), hook, store, cfg)
            except RetryableSyncError:
                totals.requests += hook.request_count
                totals.retries += hook.retry_count
                continue
        totals.requests += report.requests
        totals.retries += report.retries
        assert report.rejected == 0, report.rejects
        return
    pytest.fail(f"sync of {dest.object} did not finish in {MAX_TRIES} tries")


def read_back(hubspot, dest: Destination) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in hubspot.emulator.records(dest.object):
        found.setdefault(record["properties"][dest.key], []).append(record["properties"][dest.field])
    return found


def run_both_versions(hubspot, monkeypatch, tmp_path: Path, dest: Destination, extra: dict[str, Any]) -> Totals:
    doc = {
        "conn_type": "retl_hubspot",
        "host": hubspot.url,
        "password": DEFAULT_TOKEN,
        "extra": {"rate_limit": 0, "batch_size": 5, "max_retries": 5, "max_concurrency": 1, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_REL_FAULTS", json.dumps(doc))
    store = FileCheckpointStore(tmp_path / f"{dest.object}.parquet")
    totals = Totals()
    v1, v2 = versions(dest)
    for rows in (v1, v2):
        sync_until_done(rows, dest, store, totals)
        found = read_back(hubspot, dest)
        duplicates = {k: v for k, v in found.items() if len(v) > 1}
        assert not duplicates, f"duplicate records: {sorted(duplicates)[:5]}"
        assert {k: v[0] for k, v in found.items()} == {r[dest.key]: r[dest.field] for r in rows}
    return totals


@pytest.fixture(scope="module")
def clean_requests(hubspot, tmp_path_factory):
    """Requests of the two runs without faults, per destination (the baseline of the bounds)."""
    cache: dict[str, int] = {}

    def get(kind: str) -> int:
        if kind not in cache:
            mp = pytest.MonkeyPatch()
            try:
                hubspot.emulator.reset()
                totals = run_both_versions(hubspot, mp, tmp_path_factory.mktemp("clean"), DESTINATIONS[kind], {})
            finally:
                mp.undo()
            assert totals.tries == 2 and totals.retries == 0
            cache[kind] = totals.requests
        return cache[kind]

    return get


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(DESTINATIONS))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_fault_profile_converges_with_bounded_extra_requests(
    hubspot, monkeypatch, tmp_path, clean_requests, profile, kind, seed
):
    clean = clean_requests(kind)
    faults, rate, extra = PROFILES[profile]
    hubspot.emulator.reset()
    injected_before = sum(hubspot.faults.injected.values())  # the counter lives as long as the emulator
    hubspot.faults.update(seed=seed, **faults)
    try:
        totals = run_both_versions(hubspot, monkeypatch, tmp_path, DESTINATIONS[kind], extra)
    finally:
        hubspot.faults.clear()
    injected = sum(hubspot.faults.injected.values()) - injected_before

    print(
        f"FAULTS {profile} {kind} seed={seed}: {injected} faults, {totals.requests} requests "
        f"(clean {clean}), {totals.retries} retries, {totals.tries - 2} re-runs"
    )
    assert injected > 0, "the profile injected no fault: the test proves nothing"
    assert totals.retries <= injected
    reruns = totals.tries - 2
    assert totals.requests - clean <= EXTRA_PER_FAULT * injected + RERUN_OVERHEAD * reruns, (
        f"{totals.requests} requests vs {clean} clean, {injected} faults, {reruns} re-runs"
    )
    if rate:
        assert injected <= 2 * rate * totals.requests + 3
    if profile == "burst_429":
        # Every 429 is answered by one resend after the server's Retry-After (2 s, not slept here).
        assert injected == faults["burst_429"] and totals.retries == injected and reruns == 0
        assert totals.requests == clean + injected
        assert sum(1 for s in totals.sleeps if s >= 2.0) == injected


# ---------------------------------------------------------------------------------------------
# Every other destination: the same profiles against the crash suites' scenarios.
#
# Each scenario of ``scenarios.py`` (one per destination hook besides HubSpot, whose two kinds
# are above) runs version 1 then version 2 with a profile switched on, re-running failed tries.
# Judged by ``crash_support.check`` against the same two runs without faults: destination ==
# source, no duplicate record, events once (at most once for Braze, the rest reported in doubt),
# and the checkpoint a clean run writes. The same request bounds as above (measured: every
# injected fault costs exactly one extra request on each of these destinations).

#: Scenario per destination hook (HubSpot: ``DESTINATIONS`` above).
FAULT_SCENARIOS = {
    "customerio_events": scenarios.customerio_events,
    "braze_events": scenarios.braze_events,
    "zendesk_users_external_id": scenarios.zendesk_users_external_id,
    "mailchimp_members": scenarios.mailchimp_members,
    "salesforce_contacts": scenarios.salesforce_contacts,
    "webhook_upsert": scenarios.webhook_upsert,
}
FAULT_SEEDS = (0,)
#: Every hook the fault profiles run on.
HOOK_KEYS = {"hubspot"} | {FAULT_SCENARIOS[name]().hook for name in FAULT_SCENARIOS}


@pytest.fixture(scope="module")
def benches():
    """One running emulator per scenario (started on first use) and its clean request count and checkpoint."""
    running: dict[str, Any] = {}
    clean: dict[str, tuple[int, dict[int, tuple[int, Any]]]] = {}

    def get(name: str, tmp: Path) -> tuple[Scenario, Any, int, dict[int, tuple[int, Any]]]:
        scenario = FAULT_SCENARIOS[name]()
        if name not in running:
            running[name] = start_emulator(scenario.emulator, **scenario.emulator_options)
            emu = running[name]
            emu.emulator.reset()
            totals, store, _ = run_scenario(scenario, emu, tmp / "clean.parquet", {})
            assert totals.tries == 2 and totals.retries == 0, totals
            clean[name] = (totals.requests, checkpoint_of(store))
        return scenario, running[name], *clean[name]

    yield get
    for emu in running.values():
        emu.stop()


def _hook_for(spec: SyncSpec, sleeps: list[float]) -> Any:
    """The hook of ``spec`` (like ``crash.build``), with retry sleeps recorded instead of slept."""
    os.environ[f"AIRFLOW_CONN_{spec.conn_id.upper()}"] = json.dumps(spec.connection)
    module, _, cls = HOOKS[spec.hook].partition(":")
    hook = getattr(importlib.import_module(module), cls)(spec.conn_id, sleep=sleeps.append)
    for attr, value in spec.hook_attrs.items():
        setattr(hook, attr, value)
    return hook


def run_scenario(scenario: Scenario, running: Any, store_path: Path, extra: dict[str, Any]) -> tuple[Totals, Path, Any]:
    """v1 then v2 of ``scenario``, each re-run after a failed try (at most ``MAX_TRIES``); the last report."""
    clear_job_gates()  # Zendesk's per-account job gate is process-wide: start each case with a fresh one
    totals = Totals()
    report: Any = None
    for rows in (scenario.v1, scenario.v2):
        spec = scenario.spec(running.url, store_path, rows)
        spec.connection = {
            **spec.connection,
            "extra": {**spec.connection["extra"], "batch_size": 5, "max_retries": 5, "max_concurrency": 1, **extra},
        }
        spec.chunk_size = 50
        for _ in range(MAX_TRIES):
            totals.tries += 1
            hook = _hook_for(spec, totals.sleeps)
            try:
                _, store, config = build_store_and_config(spec)
                report = run_sync(chunks(rows), hook, store, config)
            except RetryableSyncError:
                totals.requests += hook.request_count
                totals.retries += hook.retry_count
                continue
            finally:
                hook.close()
            totals.requests += report.requests
            totals.retries += report.retries
            if not scenario.at_most_once:
                assert report.rejected == 0, report.rejects
            break
        else:
            pytest.fail(f"{scenario.name}: a version did not sync in {MAX_TRIES} tries")
    return totals, store_path, report


def build_store_and_config(spec: SyncSpec) -> tuple[None, FileCheckpointStore, SyncConfig]:
    return None, FileCheckpointStore(spec.store_path), SyncConfig(**spec.config)


@pytest.mark.parametrize("seed", FAULT_SEEDS)
@pytest.mark.parametrize("name", sorted(FAULT_SCENARIOS))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_fault_profile_converges_on_every_destination(benches, tmp_path, profile, name, seed):
    scenario, running, clean, reference = benches(name, tmp_path)
    faults, rate, extra = PROFILES[profile]
    running.emulator.reset()
    injected_before = sum(running.faults.injected.values())
    running.faults.update(seed=seed, **faults)
    try:
        totals, store, report = run_scenario(scenario, running, tmp_path / "faults.parquet", extra)
    finally:
        running.faults.clear()
    injected = sum(running.faults.injected.values()) - injected_before
    reruns = totals.tries - 2

    print(
        f"FAULTS {profile} {name} seed={seed}: {injected} faults, {totals.requests} requests "
        f"(clean {clean}), {totals.retries} retries, {reruns} re-runs, {report.rejected} reported in doubt"
    )
    what = f"{name} under {profile} (seed {seed})"
    check(scenario, running.emulator, reference, checkpoint_of(store), report, what, undelivered_in_doubt=True)
    assert injected > 0, "the profile injected no fault: the test proves nothing"
    assert totals.retries <= injected
    assert totals.requests - clean <= EXTRA_PER_FAULT * injected + RERUN_OVERHEAD * reruns, (
        f"{totals.requests} requests vs {clean} clean, {injected} faults, {reruns} re-runs"
    )
    if rate:
        assert injected <= 2 * rate * totals.requests + 3
    if profile == "burst_429":
        # Every 429 is answered by one resend after the server's Retry-After (2 s, recorded, not slept).
        assert injected == faults["burst_429"] and totals.retries == injected and reruns == 0
        assert sum(1 for s in totals.sleeps if s >= 2.0) == injected


def test_every_destination_hook_has_crash_scenarios_and_fault_profiles():
    """A registered destination (``crash.HOOKS`` derives from the registry) without a crash scenario or a fault-profile run fails here."""
    crashed = {factory().hook for factory in CRASH_SCENARIOS.values()}
    assert set(HOOKS) - crashed == set(), f"hooks without a crash scenario: {sorted(set(HOOKS) - crashed)}"
    assert set(HOOKS) - HOOK_KEYS == set(), f"hooks without a fault-profile run: {sorted(set(HOOKS) - HOOK_KEYS)}"
    # And every scenario names a hook the fork server can build.
    assert crashed | HOOK_KEYS <= set(HOOKS)
