"""Two keys sharing a value of another field the destination identifies records by are both rejected.

Zendesk's create_or_update_many finds a user by external_id *or email*: two warehouse rows
with different external ids and one email would become one user (the second overwrites
the first, and its external id). The spec declares such fields (``ObjectSpec.identities``)
and the engine rejects every row sharing a value, naming the other key, before sending.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.testing.emulators import start_emulator
from tests.conformance.test_contract import _run
from tests.reliability import scenarios
from tests.unit.fakes import InMemoryDestination


def test_rows_sharing_an_identity_value_are_rejected_before_sending():
    dest = InMemoryDestination(match_field="external_id", upsert=True)
    dest.identities = ("external_id", "email")
    frame = pd.DataFrame(
        {
            "external_id": ["a", "b", "c", "d"],
            "email": ["x@acme.io", "X@acme.io ", "z@acme.io", None],
            "name": ["A", "B", "C", "D"],
        }
    )
    config = SyncConfig(sync_id="ids", object="users", primary_key="external_id", mode="upsert", max_reject_ratio=1)
    report = run_sync([frame], dest, MemoryCheckpointStore(), config)
    assert sorted(r.key for r in report.rejects) == ["a", "b"]
    assert all("email" in r.reason and "match collision" in r.reason for r in report.rejects)
    assert sorted(f["external_id"] for f in dest.records.values()) == ["c", "d"]  # an empty email shares nothing


def test_zendesk_users_sharing_an_email_are_not_merged():
    scenario = scenarios.zendesk_users_external_id()
    rows = [dict(r) for r in scenario.v1[:5]]
    twin = {**rows[2], scenario.key: "ext-777", "name": "Twin"}  # another key, the same email
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        report, rejects, _ = _run(scenario, running.url, Path(tempfile.mkdtemp()) / "c.parquet", [*rows, twin])
        found = scenario.read_back(running.emulator)
    assert sorted(r.key for r in rejects) == ["ext-2", "ext-777"]
    assert "ext-777" not in found and "ext-2" not in found  # neither takes the shared email's user
    assert sorted(found) == ["ext-0", "ext-1", "ext-3", "ext-4"]
    assert report.rejected == 2
