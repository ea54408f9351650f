"""An event is delivered once in the life of a sync: the real engine against the Customer.io and Braze emulators.

Event identity comes from the event's canonical key alone, so it does not move with the
partition count, the checkpoint store, the sync definition or the connection names; a run
that lost what it knew as sent refuses instead of sending it all again; an event left in
doubt by a killed try is not sent again once its row has changed.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.diff import EventResendError
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import OutcomeUnknownError
from airflow_provider_retl.sync.push import Pusher
from airflow_provider_retl.testing.emulators import (
    BRAZE_API_KEY,
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    start_emulator,
)


@pytest.fixture(scope="module")
def customerio():
    with start_emulator("customerio", rate_limit=None) as running:
        yield running


@pytest.fixture
def cio_hook(customerio, monkeypatch):
    from airflow_provider_retl.hooks.customerio import CustomerIoHook

    customerio.emulator.reset()
    doc = {
        "conn_type": "retl_customerio",
        "host": customerio.url,
        "login": CUSTOMERIO_SITE_ID,
        "password": CUSTOMERIO_API_KEY,
        "extra": {"rate_limit": 0, "batch_size": 20},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EVENT_IDENTITY_CIO", json.dumps(doc))
    return CustomerIoHook("event_identity_cio", sleep=lambda s: None)


def events(n: int, start: int = 0, name: str = "ordered") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_key": [f"e{i}" for i in range(start, start + n)],
            "id": [f"p{i % 7}" for i in range(start, start + n)],
            "name": [name] * n,
            "amount": list(range(start, start + n)),
        }
    )


def sync_with(hook, store, frame, siblings=None, **kw):
    config = SyncConfig(
        **{
            "sync_id": "events",
            "object": "events",
            "primary_key": "event_key",
            "mode": "insert",
            "commit_interval": 0,
            **kw,
        }
    )
    return run_sync([frame], hook, store, config, siblings=siblings)


def processed(customerio) -> Counter:
    """Deliveries per event key that Customer.io processed (its own dedupe removed)."""
    return Counter(e["attributes"]["event_key"] for e in customerio.emulator.events())


def received(customerio) -> Counter:
    """Every delivery received, duplicates included: what was sent."""
    return Counter(e["attributes"]["event_key"] for e in customerio.emulator.events(include_duplicates=True))


def test_event_id_is_the_canonical_key_alone():
    # Nothing of the sync definition, store or partition: only the key's hash.
    assert Pusher.event_id(0x1234) == "retl-0000000000001234"


def test_repartitioning_never_sends_an_event_again(cio_hook, customerio):
    whole = MemoryCheckpointStore()
    sync_with(cio_hook, whole, events(30))
    assert received(customerio) == Counter({f"e{i}": 1 for i in range(30)})
    # 1 -> 2 partitions: each slice has a fresh checkpoint, but the unpartitioned one is a sibling.
    halves = [MemoryCheckpointStore(), MemoryCheckpointStore()]
    for i, store in enumerate(halves):
        report = sync_with(cio_hook, store, events(40), siblings=lambda: [whole.load()], partition=(i, 2))
    received_now = received(customerio)
    assert max(received_now.values()) == 1 and len(received_now) == 40  # only e30..e39 were sent
    # ... and back to one partition: what the two slices sent counts too.
    report = sync_with(cio_hook, whole, events(45), siblings=lambda: [s.load() for s in halves])
    assert report.events == 5 and max(received(customerio).values()) == 1 and len(received(customerio)) == 45
    # The knowledge was adopted: without the siblings, nothing is new any more.
    assert sync_with(cio_hook, whole, events(45)).events == 0


def test_a_switched_store_resends_with_the_same_ids_so_customerio_drops_them(cio_hook, customerio):
    sync_with(cio_hook, MemoryCheckpointStore(), events(10))
    # Another store (and another sync id): nothing known, so the events go out again, with the same ids.
    sync_with(cio_hook, MemoryCheckpointStore(), events(10), sync_id="renamed")
    assert processed(customerio) == Counter({f"e{i}": 1 for i in range(10)})
    assert customerio.emulator.duplicate_events == 10


def test_a_reset_checkpoint_refuses_and_says_what_would_be_sent(cio_hook, customerio):
    store = MemoryCheckpointStore()
    sync_with(cio_hook, store, events(12), destination_identity="cio_old@abc")
    # The destination connection was renamed: the checkpoint's target changed.
    with pytest.raises(EventResendError, match="resend_events=True") as caught:
        sync_with(cio_hook, store, events(12), destination_identity="cio_new@abc")
    assert "12 events" in str(caught.value) and "'e0'" in str(caught.value)
    assert sum(received(customerio).values()) == 12  # nothing was sent
    report = sync_with(cio_hook, store, events(12), destination_identity="cio_new@abc", resend_events=True)
    assert report.events == 12 and processed(customerio) == Counter({f"e{i}": 1 for i in range(12)})


def test_an_events_query_over_a_moving_window_is_not_a_replaced_identity(cio_hook, customerio):
    store = MemoryCheckpointStore()
    sync_with(cio_hook, store, events(20))
    report = sync_with(cio_hook, store, events(20, start=20))  # yesterday's events left the window
    assert report.events == 20 and report.planned["removed"] == 20
    assert received(customerio) == Counter({f"e{i}": 1 for i in range(40)})


# ---------------------------------------------------------------------- Braze: no dedupe id (F14)
@pytest.fixture(scope="module")
def braze():
    with start_emulator("braze", rate_limit=None, export_rate_limit=None) as running:
        yield running


@pytest.fixture
def braze_hook(braze, monkeypatch):
    from airflow_provider_retl.hooks.braze import BrazeHook

    braze.emulator.reset()
    doc = {
        "conn_type": "retl_braze",
        "host": braze.url,
        "password": BRAZE_API_KEY,
        "extra": {"rate_limit": 0, "batch_size": 20},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EVENT_IDENTITY_BRAZE", json.dumps(doc))
    return BrazeHook("event_identity_braze", sleep=lambda s: None)


def braze_events(name: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_key": [f"e{i}" for i in range(4)],
            "external_id": [f"u{i}" for i in range(4)],
            "name": name,
            "time": "2026-01-01T00:00:00Z",
        }
    )


def test_an_in_doubt_event_whose_row_changed_is_not_sent_again(braze_hook, braze):
    """F14: the first try's batch landed but its answer was lost; the row is edited before the retry."""
    store = MemoryCheckpointStore()
    braze.faults.fail_next(1, "lost_response")
    with pytest.raises(OutcomeUnknownError):
        sync_with(braze_hook, store, braze_events("welcome"))
    # Braze's export would say "no 'welcome_v2' event for this user" and the event would go out again.
    report = sync_with(braze_hook, store, braze_events("welcome_v2"), max_reject_ratio=1.0)
    assert report.events == 0 and report.rejected == 4
    assert {r.code for r in report.rejects} == {"OUTCOME_UNKNOWN"}
    assert all("changed since it was sent" in r.reason for r in report.rejects)
    deliveries = Counter(e["properties"]["event_key"] for e in braze.emulator.events())
    assert deliveries == Counter({f"e{i}": 1 for i in range(4)})
    # Still in doubt on the next run (the mark is kept), never sent a second time.
    report = sync_with(braze_hook, store, braze_events("welcome_v2"), max_reject_ratio=1.0)
    assert report.events == 0 and len(braze.emulator.events()) == 4
