"""Guardrails stop a run that looks like a broken source before anything is sent."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import FatalSyncError, GuardrailTripped, RejectRatioExceeded
from tests.unit.fakes import InMemoryDestination


def _rows(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"email": [f"u{i}@example.com" for i in range(start, start + n)], "name": ["N"] * n})


def _synced(n: int, mode: str = "mirror"):
    dest, store = InMemoryDestination(), MemoryCheckpointStore()
    run_sync([_rows(n)], dest, store, SyncConfig(sync_id="g", object="contacts", primary_key="email", mode=mode))
    return dest, store


def _run(dest, store, frame, **config):
    cfg = {"sync_id": "g", "object": "contacts", "primary_key": "email", "mode": "mirror", **config}
    return run_sync([frame], dest, store, SyncConfig(**cfg))


def test_mass_deletes_trip_before_any_request_and_say_how_to_override():
    dest, store = _synced(120)
    calls = len(dest.calls)
    with pytest.raises(GuardrailTripped) as caught:
        _run(dest, store, _rows(50))  # 70 of 120 would be deleted
    assert isinstance(caught.value, FatalSyncError)  # no Airflow retry
    message = str(caught.value)
    assert "delete 70 of 120" in message and "max_delete_ratio=0.5" in message
    assert "retl_override_guardrails" in message and "override_guardrails=True" in message
    assert len(dest.calls) == calls and len(dest.records) == 120  # nothing was sent
    # Overridden for one run: the deletes go through; the next run is guarded again.
    report = _run(dest, store, _rows(50), override_guardrails=True)
    assert report.deleted == 70 and len(dest.records) == 50


def test_a_count_limit_trips_on_its_own_and_small_syncs_are_not_guarded_by_share():
    dest, store = _synced(100)
    with pytest.raises(GuardrailTripped, match="max_deletes=5"):
        _run(dest, store, _rows(94), max_deletes=5)
    small, small_store = _synced(4)
    assert _run(small, small_store, _rows(1)).deleted == 3  # 75%, but under 10 deletes


def test_a_shrunken_source_trips_in_every_mode():
    dest, store = _synced(200, mode="upsert")
    calls = len(dest.calls)
    with pytest.raises(GuardrailTripped, match=r"returned 60 usable keys where 200 were synced"):
        _run(dest, store, _rows(60), mode="upsert")
    assert len(dest.calls) == calls
    assert _run(dest, store, _rows(60), mode="upsert", min_source_ratio=None).rows_read == 60
    assert _run(dest, store, _rows(150), mode="upsert").rows_read == 150  # 75%: fine


def test_limits_are_validated():
    for bad in (
        {"max_delete_ratio": 2},
        {"min_source_ratio": -0.1},
        {"max_deletes": -1},
        {"max_deletes": True},
        {"max_reject_ratio_before_send": 1.5},
    ):
        with pytest.raises(Exception, match="must be"):
            SyncConfig(sync_id="g", object="contacts", primary_key="email", **bad)


def test_allow_identity_change_lets_a_replaced_key_delete_its_old_records():
    dest, store = _synced(40)
    renamed = pd.DataFrame({"email": [f"v{i}@example.com" for i in range(40)], "name": ["N"] * 40})
    report = _run(dest, store, renamed, allow_identity_change=True)
    assert report.deleted == 40


class CountingDestination(InMemoryDestination):
    """Counts the destination's local checks and refuses a ``note`` that holds a made-up secret."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validated: list[str] = []

    def validate(self, object, fields):
        self.validated.append(fields.get("email"))
        problems = super().validate(object, fields)
        if fields.get("note"):
            problems.append(("note", f"note {fields['note']!r} is not allowed"))
        return problems


def _noted(good: int, bad: int) -> pd.DataFrame:
    frame = _rows(good + bad)
    frame["note"] = [None] * good + ["sk-live-123456"] * bad
    return frame


def test_known_rejects_over_the_share_trip_before_sending_with_counts_reasons_and_keys():
    dest, store = CountingDestination(), MemoryCheckpointStore()
    frame = pd.concat([_noted(3, 5), pd.DataFrame({"email": [None, None], "name": "N", "note": None})], ignore_index=True)
    with pytest.raises(GuardrailTripped) as caught:
        _run(dest, store, frame, mode="upsert", max_reject_ratio_before_send=0.5)
    message = str(caught.value)
    assert "7 of 10 rows are rejected before sending (70%: 5 validation, 2 source)" in message
    assert "max_reject_ratio_before_send=0.5" in message and "retl_override_guardrails" in message
    assert "'u3@example.com'" in message and "NULL" in message  # example keys
    assert "sk-live" not in message  # values are blanked in reasons: a value may be a secret
    assert dest.calls == [] and store.load() is None  # nothing sent, nothing committed
    report = caught.value.report
    assert report.rejected == 7 and report.rows_read == 10 and report.pushed == 0


def test_rows_checked_before_sending_are_not_checked_again_and_rejected_rows_are_not_batched():
    dest, store = CountingDestination(), MemoryCheckpointStore()
    report = _run(dest, store, _noted(6, 4), mode="upsert", max_reject_ratio_before_send=0.5)  # 40%: under the share
    assert report.created == 6 and report.rejected == 4
    assert sorted(dest.validated) == sorted(_rows(10)["email"])  # each row once
    assert sum(n for kind, n in dest.calls if kind == "upsert") == 6


def test_a_small_change_checks_nothing_up_front():
    dest, store = CountingDestination(), MemoryCheckpointStore()
    _run(dest, store, _rows(100), mode="upsert", max_reject_ratio_before_send=0.5)
    dest.validated.clear()
    changed = _rows(100)
    changed.loc[:2, "name"] = "M"
    report = _run(dest, store, changed, mode="upsert", max_reject_ratio_before_send=0.5)
    assert report.updated + report.upserted == 3 and len(dest.validated) == 3  # in the batches, as before


def test_the_override_sends_the_valid_rows_once_and_still_fails_after_committing_them():
    dest, store = CountingDestination(), MemoryCheckpointStore()
    with pytest.raises(RejectRatioExceeded, match="8 of 10 rows rejected") as caught:
        _run(dest, store, _noted(2, 8), mode="upsert", override_guardrails=True, max_reject_ratio_before_send=0.5)
    assert caught.value.report.created == 2 and len(store.load()) == 2  # sent and committed, then failed
    with pytest.raises(GuardrailTripped, match="8 of 10 rows"):
        _run(dest, store, _noted(2, 8), mode="upsert", max_reject_ratio_before_send=0.5)


def test_by_default_a_mostly_rejected_run_sends_its_valid_rows_then_fails():
    # The team's rule: commit what succeeded, then fail; the check before sending is opt-in.
    dest, store = CountingDestination(), MemoryCheckpointStore()
    with pytest.raises(RejectRatioExceeded, match="8 of 10 rows rejected") as caught:
        _run(dest, store, _noted(2, 8), mode="upsert")
    assert caught.value.report.created == 2 and sorted(dest.validated) == sorted(_rows(10)["email"])
    assert len(store.load()) == 2


def test_a_ratio_of_one_turns_the_reject_guardrail_off():
    dest, store = CountingDestination(), MemoryCheckpointStore()
    report = _run(dest, store, _noted(0, 10), mode="upsert", max_reject_ratio=1.0, max_reject_ratio_before_send=1.0)
    assert report.rejected == 10


def test_events_are_guarded_by_the_reject_share_too():
    dest, store = InMemoryDestination(events=True, lookup=False), MemoryCheckpointStore()
    frame = pd.DataFrame({"email": ["a@example.com", "b@", "c@", "d@"], "name": "N"})
    with pytest.raises(GuardrailTripped, match="3 of 4 rows are rejected before sending"):
        _run(dest, store, frame, mode="insert", max_reject_ratio_before_send=0.5)
    assert dest.events == [] and dest.calls == []
    report = _run(dest, store, frame, mode="insert", override_guardrails=True, max_reject_ratio=1.0, max_reject_ratio_before_send=0.5)
    assert report.events == 1 and [fields["email"] for _, fields in dest.events] == ["a@example.com"]
