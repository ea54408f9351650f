"""Fault profiles of the shared emulator ``Faults``, under a real sync: engine ``run_sync`` +
``HubSpotHook`` + HubSpot emulator + ``FileCheckpointStore``.

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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_provider_retl.hooks.hubspot import HubSpotHook
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import RetryableSyncError
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

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
    cfg = SyncConfig(sync_id=f"faults-{dest.object}", object=dest.object, primary_key=dest.key, mode="mirror",
                     commit_interval=0, destination_identity="faults", **dest.config)
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
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN,
           "extra": {"rate_limit": 0, "batch_size": 5, "max_retries": 5, "max_concurrency": 1, **extra}}
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

    print(f"FAULTS {profile} {kind} seed={seed}: {injected} faults, {totals.requests} requests "
          f"(clean {clean}), {totals.retries} retries, {totals.tries - 2} re-runs")
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
