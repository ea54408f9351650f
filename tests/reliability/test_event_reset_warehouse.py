"""An events sync with ``checkpoint="warehouse"`` whose checkpoint would be reset refuses, and keeps it.

The warehouse store used to drop the rows of a checkpoint whose target changed as soon as the
diff saw the change; for events that loses, for good, what was sent. Now the rows stay until
the engine has decided: it refuses (nothing sent, nothing forgotten) unless ``resend_events``.
"""

from __future__ import annotations

import pytest

from airflow_provider_retl.sync.diff import EventResendError
from airflow_provider_retl.sync.engine import run_sync
from tests.checkpoints.test_warehouse_store import Source, config, people
from tests.unit.fakes import InMemoryDestination


@pytest.fixture
def source(tmp_path, set_connection) -> Source:
    return Source("duckdb", tmp_path, set_connection, None)


def test_a_reset_events_checkpoint_in_the_warehouse_refuses_and_is_kept(source):
    source.insert(people(20))
    dest = InMemoryDestination(events=True, upsert=False, batch=50, concurrency=1)
    assert run_sync(iter(()), dest, source.store(), config(mode="insert", destination_identity="old")).events == 20
    with pytest.raises(EventResendError, match="20 events"):
        run_sync(iter(()), dest, source.store(), config(mode="insert", destination_identity="new"))
    assert len(dest.events) == 20
    # Nothing was forgotten: back under the old definition, every event is still known as sent.
    report = run_sync(iter(()), dest, source.store(), config(mode="insert", destination_identity="old"))
    assert report.events == 0 and len(dest.events) == 20
    # On purpose: the new definition starts over and sends them again.
    report = run_sync(
        iter(()), dest, source.store(), config(mode="insert", destination_identity="new", resend_events=True)
    )
    assert report.events == 20 and len(dest.events) == 40
