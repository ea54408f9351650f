"""One contract for every registered destination, run against its emulator through the real hook.

Parametrised over ``tests/reliability/scenarios.ALL`` (at least one scenario per destination
of the registry: a destination added without one fails ``test_every_registered_destination_
has_a_scenario``), so a new destination gets every check for free:

* nothing is lost or invented under bad input (null and duplicate keys, NaN, huge strings,
  unicode): every source row either lands, with its value intact, or is a reject naming its
  key and a reason; the sync itself never crashes;
* a second run of the same rows writes nothing (only changed rows are pushed);
* a connection asking for batches far above the API's limit is held to the limit the spec
  declares, and the emulator (which enforces the vendor's limit) refuses nothing;
* the connection's secrets appear in no log line, report or exception, and a wrong
  credential fails at once, without retries.

Crashes and injected faults over the same scenarios: tests/reliability/test_crash_destinations.py
and test_fault_profiles.py. The wire format against the vendors' documents: test_vendor_documents.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_retl.destinations import REGISTRY
from airflow_provider_retl.sync.errors import FatalSyncError, exception_chain
from airflow_provider_retl.testing.crash import build, chunks_of
from airflow_provider_retl.testing.emulators import start_emulator
from tests.reliability import scenarios
from tests.reliability.crash_support import Scenario

NAMES = sorted(scenarios.ALL)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
UNICODE = "Zoë Ñandú 🚀 مرحبا e\u0301 \u4e2d\u6587"
HUGE = "x" * 200_000


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Iterator[Callable[[str], tuple[Scenario, Any, Path]]]:
    """Each scenario's emulator, started on first use and kept to the module's end."""
    made: dict[str, tuple[Scenario, Any, Path]] = {}
    with ExitStack() as stack:

        def get(name: str) -> tuple[Scenario, Any, Path]:
            if name not in made:
                scenario = scenarios.ALL[name]()
                running = stack.enter_context(start_emulator(scenario.emulator, **scenario.emulator_options))
                made[name] = (scenario, running, tmp_path_factory.mktemp(name))
            scenario, running, workdir = made[name]
            running.emulator.reset()
            return scenario, running, workdir

        yield get


def _run(scenario: Scenario, url: str, store: Path, rows: list[dict[str, Any]], **connection_extra: Any):
    """One sync in this process, through the real hook; returns (report, every reject, the hook)."""
    from airflow_provider_retl.sync.engine import run_sync

    spec = scenario.spec(url, store, rows)
    if connection_extra:
        spec.connection = {**spec.connection, "extra": {**spec.connection.get("extra", {}), **connection_extra}}
    hook, checkpoints, config = build(spec)
    rejects: list[Any] = []
    try:
        report = run_sync(chunks_of(spec), hook, checkpoints, config, on_reject=rejects.append)
    finally:
        hook.close()
    return report, rejects, hook


def _text_field(scenario: Scenario) -> str:
    """A field of the scenario's rows that is free text (not the key, not an identity or match field).

    Events carry any property: they get a ``note`` (their ``name`` is the event's name, not data).
    """
    if scenario.events:
        return "note"
    row = scenario.v1[0]
    identity = {scenario.key, "email", "email_address", "external_id", "customer", "id", "External_Id__c", "domain"}
    texts = [f for f, v in row.items() if isinstance(v, str) and f not in identity]
    assert texts, f"{scenario.name}: no free-text field to put bad input in: {row}"
    return texts[-1]


def test_every_registered_destination_has_a_scenario():
    covered = {factory().hook for factory in scenarios.ALL.values()}
    assert covered == set(REGISTRY), f"destinations without a conformance scenario: {set(REGISTRY) - covered}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_loses_nothing_and_crashes_nothing(bench, name):
    scenario, running, workdir = bench(name)
    field = _text_field(scenario)
    base = [{field: f"note {i}", **r} for i, r in enumerate(scenario.v1[:30])]
    template = base[-1]

    digits = re.search(r"\d+", str(template[scenario.key]))
    assert digits, f"{name}: keys carry a number to vary"

    def variant(i: int, value: Any) -> dict[str, Any]:
        # A row of its own: every identity value (key, email, person ...) gets a new number.
        fresh = str(int(digits.group()) + 1000 * i)
        row = {f: v.replace(digits.group(), fresh) if isinstance(v, str) else v for f, v in template.items()}
        row[field] = value
        return row

    null_key = {**variant(1, "no key"), scenario.key: None}
    duplicate = variant(2, "first copy")
    duplicate_again = {**duplicate, field: "second copy"}
    odd = [variant(3, float("nan")), variant(4, HUGE), variant(5, UNICODE)]
    rows = [*base, null_key, duplicate, duplicate_again, *odd]

    report, rejects, _ = _run(scenario, running.url, workdir / "bad.parquet", rows)

    found = scenario.read_back(running.emulator)
    rejected_keys = [r.key for r in rejects]
    assert all(r.reason for r in rejects), f"{name}: a reject without a reason: {rejects}"
    assert report.rejected == len(rejects)
    # Conservation: every row landed exactly once or was rejected, by key, with a reason.
    keyed = [r for r in rows if r[scenario.key] is not None]
    landed = {r[scenario.key] for r in keyed} & set(found)
    assert len(rows) == len(landed) + report.rejected, (
        f"{name}: {len(rows)} rows, {len(landed)} landed, {report.rejected} rejected: {rejects}"
    )
    assert rejected_keys.count(duplicate[scenario.key]) == 2, f"{name}: both copies of a duplicate key are rejected"
    assert duplicate[scenario.key] not in found
    assert len([r for r in rejects if r.key not in {row[scenario.key] for row in keyed}]) == 1  # the null key
    copies = {k: len(v) for k, v in found.items() if len(v) > 1}
    assert not copies, f"{name}: duplicates {copies}"
    # What landed is what the source holds, unicode and long text included.
    for row in [*base, odd[1], odd[2]]:
        key = row[scenario.key]
        if key in found:
            [(_, fields)] = found[key]
            assert fields.get(field) == row[field], f"{name}: {key}: {field} changed on the way"
        else:
            assert key in rejected_keys, f"{name}: {key} neither landed nor rejected"


@pytest.mark.parametrize("name", NAMES)
def test_a_second_run_of_the_same_rows_writes_nothing(bench, name):
    scenario, running, workdir = bench(name)
    store = workdir / "noop.parquet"
    first, _, _ = _run(scenario, running.url, store, scenario.v1)
    assert first.rejected == 0
    writes_before = _writes(running.emulator)
    second, _, _ = _run(scenario, running.url, store, scenario.v1)
    sent = (second.created, second.updated, second.upserted, second.deleted, second.events, second.rejected)
    assert sent == (0, 0, 0, 0, 0, 0), f"{name}: a no-op run sent {sent}"
    assert _writes(running.emulator) == writes_before, f"{name}: the no-op run made write calls"


def _writes(emulator: Any) -> int:
    """Write calls the emulator answered, logins aside (a new hook may log in again)."""
    return sum(1 for r in emulator.requests if r.method in WRITE_METHODS and not _is_auth(r.path))


def _is_auth(path: str) -> bool:
    return "oauth" in path or path.endswith("/token")


@pytest.mark.parametrize("name", NAMES)
def test_batches_are_held_to_the_api_limit(bench, name):
    scenario, running, workdir = bench(name)
    limit = REGISTRY[scenario.hook].limits.batch
    report, rejects, hook = _run(scenario, running.url, workdir / "limit.parquet", scenario.v1, batch_size=limit * 10)
    assert hook.max_batch_size == limit
    assert report.rejected == 0, rejects
    refused = [r for r in running.emulator.requests if r.status in (400, 413, 422)]
    assert not refused, f"{name}: the emulator refused {[(r.method, r.path, r.status) for r in refused]}"
    assert report.batches >= math.ceil(len(scenario.v1) / limit)


def _secrets(scenario: Scenario, url: str) -> list[str]:
    connection = scenario.connection(url)
    spec = REGISTRY[scenario.hook]
    secret_knobs = {k.name for k in spec.all_knobs() if k.secret}
    found = [connection.get("password")]
    found += [v for k, v in (connection.get("extra") or {}).items() if k in secret_knobs]
    return [str(s) for s in found if s]


@pytest.mark.parametrize("name", NAMES)
def test_secrets_stay_out_of_logs_reports_and_errors(bench, name, caplog):
    scenario, running, workdir = bench(name)
    secrets = _secrets(scenario, running.url)
    assert secrets, f"{name}: the scenario's connection holds no secret to check"
    with caplog.at_level(logging.DEBUG):
        report, _, _ = _run(scenario, running.url, workdir / "secrets.parquet", scenario.v1[:20])
    exposed = caplog.text + json.dumps(dataclasses.asdict(report), default=str)
    for secret in secrets:
        assert secret not in exposed, f"{name}: a secret reached the logs or the report"

    # A wrong credential: refused at once (no retries), and the error does not carry it either.
    wrong = "wr0ng-Secret-" + "7" * 20
    bad = dataclasses.replace(scenario, connection=lambda url: {**scenario.connection(url), "password": wrong})
    running.emulator.reset()
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as caught:
        _run(bad, running.url, workdir / "wrong.parquet", scenario.v1[:20])
    chain = exception_chain(caught.value)
    assert any(isinstance(e, FatalSyncError) for e in chain), f"{name}: a wrong credential is not fatal: {chain!r}"
    text = caplog.text + " ".join(f"{type(e).__name__}: {e}" for e in chain)
    assert wrong not in text, f"{name}: the wrong credential reached the logs or the error"
    assert running.emulator.request_count() <= 3, f"{name}: a refused credential was retried"
