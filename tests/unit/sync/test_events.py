"""Event streams: every event is sent exactly once, across re-runs, failures and retries."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import ConfigurationError, OutcomeUnknownError, RetryableDestinationError
from tests.unit.fakes import InMemoryDestination


def events(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_key": [f"evt-{i}" for i in range(start, start + n)],
            "external_id": [f"user-{i % 7}" for i in range(start, start + n)],
            "name": ["repurchase_due"] * n,
        }
    )


def run(frame, dest, store, **kw):
    config = SyncConfig(sync_id="e", object="events", primary_key="event_key", mode=kw.pop("mode", "insert"), **kw)
    return run_sync([frame.iloc[i : i + 10] for i in range(0, len(frame), 10)], dest, store, config)


def event_stream(**kw) -> InMemoryDestination:
    return InMemoryDestination(events=True, lookup=False, match_field=None, batch=10, concurrency=1, **kw)


def delivered(dest) -> Counter:
    return Counter(event_id for event_id, _ in dest.events)


def test_each_event_is_sent_once_across_runs_and_never_updated():
    dest, store = event_stream(), MemoryCheckpointStore()
    report = run(events(25), dest, store)
    assert report.events == 25 and len(dest.events) == 25
    frame = events(30)
    frame.loc[0, "name"] = "renamed"  # an event already sent is never re-sent or updated
    report = run(frame, dest, store)
    assert report.events == 5 and report.skipped == {"event already sent (events are never re-sent or updated)": 1}
    assert max(delivered(dest).values()) == 1 and len(dest.events) == 30


@pytest.mark.parametrize("failure", [OutcomeUnknownError, RetryableDestinationError])
def test_a_batch_that_landed_unacknowledged_is_reconciled_not_resent(failure):
    dest, store = event_stream(), MemoryCheckpointStore()
    real_send = dest.send_events
    calls = {"n": 0}

    def send_then_fail(object, records):
        calls["n"] += 1
        outcomes = real_send(object, records)  # the events land...
        if calls["n"] == 2:
            raise failure("connection reset after the request was sent")  # ...the answer does not
        return outcomes

    dest.send_events = send_then_fail
    with pytest.raises(failure):
        run(events(40), dest, store)
    landed = len(dest.events)
    assert landed >= 20
    report = run(events(40), dest, store)  # the retry
    assert sorted(delivered(dest).values()) == [1] * 40  # every event exactly once
    assert report.events == 40 - landed
    assert report.skipped.get("event already delivered by an interrupted try (reconciled)") == 10
    assert dest.count("reconcile") == 1


def test_an_unacknowledged_batch_that_did_not_land_is_sent_on_retry():
    dest, store = event_stream(), MemoryCheckpointStore()
    real_send = dest.send_events
    calls = {"n": 0}

    def fail_before_landing(object, records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RetryableDestinationError("503 before anything was applied")
        return real_send(object, records)

    dest.send_events = fail_before_landing
    with pytest.raises(RetryableDestinationError):
        run(events(30), dest, store)
    report = run(events(30), dest, store)
    assert sorted(delivered(dest).values()) == [1] * 30
    assert report.rejected == 0


def test_without_a_way_to_ask_unknown_events_are_reported_not_resent():
    dest, store = event_stream(can_reconcile=False), MemoryCheckpointStore()
    dest.lose_response_on = {"send_events": 1}
    with pytest.raises(OutcomeUnknownError):
        run(events(10), dest, store)
    report = run(events(10), dest, store, max_reject_ratio=1.0)  # every row is rejected on purpose
    assert len(dest.events) == 10 and max(delivered(dest).values()) == 1
    assert report.rejected == 10 and {r.code for r in report.rejects} == {"OUTCOME_UNKNOWN"}


def test_refused_events_are_retried_next_run():
    dest, store = event_stream(reject=lambda f: "unknown user" if f["external_id"] == "user-3" else None), MemoryCheckpointStore()
    report = run(events(14), dest, store)
    assert report.rejected == 2 and report.events == 12
    dest.reject = None
    report = run(events(14), dest, store)
    assert report.events == 2 and max(delivered(dest).values()) == 1


def test_event_ids_are_stable_across_tries():
    dest, store = event_stream(), MemoryCheckpointStore()
    dest.lose_response_on = {"send_events": 1}
    with pytest.raises(OutcomeUnknownError):
        run(events(5), dest, store)
    first_ids = [e for e, _ in dest.events]
    run(events(5), dest, store)
    assert [e for e, _ in dest.events] == first_ids  # reconciled: same ids, nothing new


def test_events_cannot_be_mirrored_or_updated():
    with pytest.raises(ConfigurationError, match="only ever inserted"):
        run(events(2), event_stream(), MemoryCheckpointStore(), mode="mirror")
