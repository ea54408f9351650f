"""The engine's per-record outcomes (for the history changelog) and acknowledged rejects, in memory."""

from __future__ import annotations

import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import RetryableDestinationError
from airflow_provider_retl.sync.outcomes import RecordOutcomes
from tests.unit.fakes import InMemoryDestination
from tests.unit.sync.test_engine import chunks, contacts


def run(frame, dest, store, outcomes=None, acknowledged=None, **kw):
    config = SyncConfig(sync_id="t", object="contacts", primary_key="email", max_reject_ratio=1.0, **kw)
    return run_sync(chunks(frame), dest, store, config, outcomes=outcomes, acknowledged=acknowledged)


def test_every_record_outcome_is_collected():
    dest = InMemoryDestination(reject=lambda f: "refused" if f["score"] == 3 else None)
    store = MemoryCheckpointStore()
    outcomes = RecordOutcomes()
    report = run(contacts(6), dest, store, outcomes, mode="mirror")
    assert outcomes.report is report
    assert outcomes.counts() == {"upsert": 5, "reject": 1} or outcomes.counts() == {"create": 5, "reject": 1}
    rejected = outcomes.statuses.index("rejected")
    assert outcomes.keys[rejected] == "user3@example.com" and outcomes.reasons[rejected] == "refused"
    assert outcomes.stages[rejected] == "destination" and isinstance(outcomes.row_hashes[rejected], int)
    assert all(outcomes.dest_ids[i] for i, s in enumerate(outcomes.statuses) if s == "ok")
    assert outcomes.payloads is None

    frame = contacts(6).iloc[1:]  # user0 leaves: mirror deletes it
    outcomes = RecordOutcomes(payload=True)
    run(frame, dest, store, outcomes, mode="mirror")
    assert sorted(outcomes.operations) == ["delete", "reject"]
    assert outcomes.keys[outcomes.operations.index("delete")].startswith("#")
    assert outcomes.payloads[outcomes.operations.index("reject")]["score"] == 3
    assert "row_hash" not in report.to_dict()["rejects"][0]


def test_a_failed_run_keeps_the_outcomes_of_the_batches_it_completed():
    dest, store = InMemoryDestination(batch=10, concurrency=1), MemoryCheckpointStore()
    dest.fail_on = {"upsert": 3}
    outcomes = RecordOutcomes()
    with pytest.raises(RetryableDestinationError):
        run(contacts(50), dest, store, outcomes)
    assert len(outcomes) == len(dest.records) == outcomes.report.pushed > 0


def test_an_acknowledged_reject_is_checkpointed_until_its_row_changes():
    dest = InMemoryDestination(reject=lambda f: "refused" if f["score"] == 3 else None)
    store = MemoryCheckpointStore()
    outcomes = RecordOutcomes()
    run(contacts(5), dest, store, outcomes)
    i = outcomes.statuses.index("rejected")
    ack = {outcomes.keys[i]: outcomes.row_hashes[i]}

    outcomes = RecordOutcomes()
    calls = dest.request_count
    report = run(contacts(5), dest, store, outcomes, acknowledged=ack)
    assert report.rejected == 0 and report.unchanged == 5 and report.planned["new"] == 0
    assert dest.request_count == calls
    assert outcomes.acknowledged_keys == ["user3@example.com"] and outcomes.statuses == ["acknowledged"]

    report = run(contacts(5), dest, store)  # no acknowledgement passed: the checkpoint holds it
    assert report.unchanged == 5 and report.rejected == 0

    frame = contacts(5)
    frame.loc[3, "firstname"] = "Changed"
    report = run(frame, dest, store, acknowledged=ack)  # a stale acknowledgement does not hide a change
    assert report.planned["changed"] == 1 and report.rejected == 1

