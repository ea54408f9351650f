"""Guardrails stop a run that looks like a broken source before anything is sent."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import FatalSyncError, GuardrailTripped
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
    for bad in ({"max_delete_ratio": 2}, {"min_source_ratio": -0.1}, {"max_deletes": -1}, {"max_deletes": True}):
        with pytest.raises(Exception, match="must be"):
            SyncConfig(sync_id="g", object="contacts", primary_key="email", **bad)


def test_allow_identity_change_lets_a_replaced_key_delete_its_old_records():
    dest, store = _synced(40)
    renamed = pd.DataFrame({"email": [f"v{i}@example.com" for i in range(40)], "name": ["N"] * 40})
    report = _run(dest, store, renamed, allow_identity_change=True)
    assert report.deleted == 40
