"""Crash scenarios: a source that changes between two runs, killed mid-run, then retried.

Each scenario runs version 1 of its source cleanly, then version 2 in a forked child that
SIGKILLs itself at a seeded ``KillPoint`` (sometimes the first retry is killed too), then
retries cleanly in the test process, and checks the destination and the checkpoint against
a reference: the same two versions run once without any kill.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.records import PENDING
from airflow_provider_retl.testing.crash import KILL_POINTS, Counters, ForkServer, KillPoint, SyncSpec, run_spec

SEEDS = range(20)


def key_hash_of(values: list[Any]) -> list[int]:
    frame = pd.DataFrame({"k": values})
    return [int(h) for h in fp.key_hashes(fp.join_key_parts(fp.key_parts(frame, ["k"])))]


@dataclass
class Scenario:
    """Two versions of a source and how to read the destination back."""

    name: str
    emulator: str
    emulator_options: dict[str, Any]
    hook: str
    connection: Callable[[str], dict[str, Any]]  # url -> connection document
    config: dict[str, Any]
    key: str
    v1: list[dict[str, Any]]
    v2: list[dict[str, Any]]
    #: destination -> {key value: [(dest id, fields), ...]} (every copy, to find duplicates)
    read_back: Callable[[Any], dict[str, list[tuple[str, dict[str, Any]]]]]
    events: bool = False
    #: Events the destination cannot be asked about stay "pending" and are reported in doubt.
    at_most_once: bool = False
    hook_attrs: dict[str, Any] = field(default_factory=dict)

    def spec(self, url: str, store: Path, rows: list[dict[str, Any]], commit_interval: float = 0.0) -> SyncSpec:
        return SyncSpec(
            hook=self.hook,
            conn_id=f"crash_{self.name}",
            connection=self.connection(url),
            store_path=str(store),
            config={**self.config, "commit_interval": commit_interval, "destination_identity": self.name},
            rows=rows,
            chunk_size=40,
            hook_attrs=self.hook_attrs,
        )


def checkpoint_of(store: Path) -> dict[int, tuple[int, Any]]:
    ck = FileCheckpointStore(store).load()
    assert ck is not None
    return {int(k): (int(r), d) for k, r, d in zip(ck.key_hashes, ck.row_hashes, ck.dest_ids, strict=True)}


@dataclass
class Reference:
    counters: Counters
    checkpoint: dict[int, tuple[int, Any]]


def reference_run(scenario: Scenario, running: Any, workdir: Path) -> Reference:
    """v1 then v2 without kills; counts the kill points of the v2 run."""
    running.emulator.reset()
    store = workdir / "reference.parquet"
    run_spec(scenario.spec(running.url, store, scenario.v1))
    counters = Counters()
    run_spec(scenario.spec(running.url, store, scenario.v2), counters=counters)
    return Reference(counters, checkpoint_of(store))


def kill_point(where: str, counters: Counters, rng: random.Random) -> KillPoint:
    available = {
        "read": counters.read,
        "request": counters.request,
        "after_request": counters.request,
        "commit_torn": counters.commit,
        "after_commit": counters.commit,
        "finalize": counters.finalize,
    }[where]
    return KillPoint(where, rng.randrange(max(1, available)))


def plan_kills(seed: int, counters: Counters) -> tuple[list[KillPoint], float]:
    """The seeded kills of one trial and its commit interval.

    The first kill cycles through ``KILL_POINTS`` with the seed; 30% of trials also kill the
    first retry, somewhere else. Grouped commits (0.5 s) make the number of journal writes
    timing-dependent: kills aimed at a journal write use one write per batch, so the k-th
    write exists in every run.
    """
    rng = random.Random(seed)
    where = KILL_POINTS[seed % len(KILL_POINTS)]
    kills = [kill_point(where, counters, rng)]
    if rng.random() < 0.3:
        kills.append(kill_point(rng.choice(KILL_POINTS), counters, rng))
    commit_interval = rng.choice([0.0, 0.5]) if where not in ("commit_torn", "after_commit") else 0.0
    return kills, commit_interval


@dataclass
class Trial:
    kills: list[KillPoint]
    fired: int
    final_report: Any


def run_trial(
    scenario: Scenario, running: Any, server: ForkServer, reference: Reference, seed: int, workdir: Path
) -> Trial:
    kills, commit_interval = plan_kills(seed, reference.counters)
    running.emulator.reset()
    store = workdir / f"seed{seed}.parquet"
    run_spec(scenario.spec(running.url, store, scenario.v1))
    v2 = scenario.spec(running.url, store, scenario.v2, commit_interval)
    fired = 0
    for i, kill in enumerate(kills):
        result = server.run(v2, kill, str(workdir / f"seed{seed}-{i}.json"))
        if i == 0:
            assert result.killed, f"kill {kill} did not fire: {result}"
        elif not result.killed:
            assert result.outcome and result.outcome.get("ok"), result.outcome
            continue
        fired += 1
    report = run_spec(v2)
    what = f"{scenario.name} after kills {kills}"
    check(scenario, running.emulator, reference.checkpoint, checkpoint_of(store), report, what)
    return Trial(kills, fired, report)


def _rejects(report: Any) -> tuple[int, int, Any]:
    """(rows reported OUTCOME_UNKNOWN, rejected count, the rejects grouped by reason) of a SyncReport or its dict.

    Counted from the report's groups: the report lists only a few example keys per reason.
    """
    groups = report["reject_reasons"] if isinstance(report, dict) else report.reject_reasons
    rejected = report["rejected"] if isinstance(report, dict) else report.rejected
    return sum(g["count"] for g in groups if g.get("code") == "OUTCOME_UNKNOWN"), rejected, groups


def check(
    scenario: Scenario,
    emulator: Any,
    expected: dict[int, tuple[int, Any]],
    actual: dict[int, tuple[int, Any]],
    report: Any,
    what: str,
    *,
    undelivered_in_doubt: bool = False,
) -> None:
    """Destination == source, no duplicates, events once, and ``actual`` == the clean run's checkpoint.

    ``expected`` and ``actual`` map key hash -> (row hash, destination id); ``report`` is the
    final run's ``SyncReport`` (or its dict, as an Airflow task returns it).
    ``undelivered_in_doubt``: an at-most-once event reported in doubt may be missing (an
    injected fault can drop a request before it is applied; a kill cannot, it comes after).
    """
    found = scenario.read_back(emulator)
    source = {row[scenario.key]: row for row in scenario.v2}
    if scenario.events:
        assert set(found) <= set(source), f"{what}: events of unknown keys {set(found) - set(source)}"
        copies = {k: len(v) for k, v in found.items() if len(v) > 1}
        assert not copies, f"{what}: events delivered more than once: {copies}"
    else:
        assert set(found) == set(source), f"{what}: destination keys differ from the source"
        copies = {k: len(v) for k, v in found.items() if len(v) > 1}
        assert not copies, f"{what}: duplicate records {copies}"
        for key, [(_, fields)] in found.items():
            want = {f: v for f, v in source[key].items()}
            got = {f: fields.get(f) for f in want}
            assert got == want, f"{what}: {key}: destination {got} != source {want}"
    in_doubt, rejected, rejects = _rejects(report)
    if scenario.at_most_once:
        # Every event landed once or is reported in doubt (and still pending, never re-sent blindly).
        missing = set(source) - set(found)
        pending = {kh for kh, (_, d) in actual.items() if d == PENDING}
        if undelivered_in_doubt:
            unreported = (set(key_hash_of(sorted(missing))) if missing else set()) - pending
            assert not unreported, f"{what}: {len(unreported)} events neither delivered nor reported in doubt"
        else:
            assert not missing, f"{what}: events never delivered: {sorted(missing)[:5]}"
        assert len(pending) == in_doubt == rejected, f"{what}: {len(pending)} pending vs {rejects}"
        actual = {kh: v for kh, v in actual.items() if kh not in pending}
        expected = {kh: v for kh, v in expected.items() if kh not in pending}
    else:
        assert not in_doubt and rejected == 0, f"{what}: rejects {rejects}"
        if scenario.events:
            assert set(found) == set(source), f"{what}: events never delivered {set(source) - set(found)}"
    assert set(actual) == set(expected), f"{what}: checkpoint keys differ from a clean run's"
    rows = {kh: r for kh, (r, _) in actual.items()}
    assert rows == {kh: r for kh, (r, _) in expected.items()}, f"{what}: checkpoint row hashes differ"
    # Destination ids: the id the destination holds for each key (events: the stable event id).
    hashes = dict(zip(key_hash_of(list(found)), found, strict=True))
    for kh, (_, dest_id) in actual.items():
        if scenario.events:
            assert dest_id == expected[kh][1], f"{what}: event id of {hashes.get(kh)} differs"
        else:
            assert dest_id == found[hashes[kh]][0][0], f"{what}: checkpoint id of {hashes[kh]} is not the destination's"


def tally(trials: list[Trial]) -> Counter[str]:
    return Counter(k.where for t in trials for k in t.kills[: t.fired])


def _np(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
