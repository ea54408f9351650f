"""A write that times out on the client but lands on the server: real engine + HubSpot hook +
HubSpot emulator + File store.

The emulator's ``timeout`` fault reads and applies the request, then withholds the answer
``slow_seconds`` (1 s) while the hook's read timeout (0.3 s) expires: the client gave up, the
write is there, like a real API that completed the request server-side. With
``slow_apply_after == slow_seconds`` the write lands only after the client gave up (and,
for an idempotent call, after its resend).

Asserted, against a clean run of the same sync on the same (reset) emulator:

* create path (companies matched on their non-unique domain: search lookup, then create):
  the timed-out create is never resent blindly; the engine reconciles the batch by lookup,
  finds the records, and creates nothing twice (same number of create calls as the clean
  run, one extra search); the checkpoint holds the ids the destination has;
* the same create landing only after the client gave up (``slow_apply_after = slow_seconds``):
  the reconciling lookup finds nothing yet, so creating the batch again would race the late
  write (it did: 20 duplicate companies before the fix). The try fails with a retryable error
  instead; the retry (Airflow's, after its delay) finds the late records and creates nothing twice;
* batch upsert path (contacts upserted by email): the hook resends the idempotent upsert
  once (``report.retries == 1``, one extra request); whether the timed-out write landed
  before or after the resend, the destination ends equal to the source, no duplicates.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pandas as pd
import pytest

from airflow_provider_retl.hooks.hubspot import HubSpotHook
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import RetryableSyncError
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

from .crash_support import checkpoint_of

SLOW = 1.0
READ_TIMEOUT = 0.3

COMPANIES = [{"domain": f"d{i}.example.com", "name": f"N{i}"} for i in range(100)]
CONTACTS = [{"email": f"c{i}@example.com", "firstname": f"F{i}"} for i in range(100)]


@pytest.fixture(scope="module")
def hubspot():
    with start_emulator("hubspot", rate_limit=None) as running:
        yield running


@pytest.fixture
def connection(hubspot, monkeypatch):
    # One batch at a time, so "the k-th write" is the same request on every run.
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN,
           "extra": {"rate_limit": 0, "batch_size": 20, "max_retries": 3, "max_concurrency": 1,
                     "read_timeout": READ_TIMEOUT}}
    monkeypatch.setenv("AIRFLOW_CONN_REL_LATE", json.dumps(doc))
    hubspot.emulator.reset()
    yield
    hubspot.faults.clear()
    hubspot.faults.update(slow_apply_after=0.0)


def sync(rows, tmp_path, name: str, **config):
    cfg = SyncConfig(**{"sync_id": "late", "commit_interval": 0, "destination_identity": "late", **config})
    frame = pd.DataFrame(rows)
    store = FileCheckpointStore(tmp_path / f"{name}.parquet")
    with HubSpotHook("rel_late", sleep=lambda s: None) as hook:
        report = run_sync([frame.iloc[i : i + 20] for i in range(0, len(frame), 20)], hook, store, cfg)
    return report, store


def calls(hubspot, path_end: str) -> int:
    return sum(1 for r in hubspot.emulator.requests if r.path.endswith(path_end))


def wait_until_answered(hubspot, timeout: float = SLOW + 3.0) -> list[int]:
    """Statuses of the timed-out requests, once their late answers went out (the write ran by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [r.status for r in hubspot.emulator.requests if r.fault == "timeout"]
        if statuses:
            return statuses
        time.sleep(0.02)
    return []


def ids_of(store: FileCheckpointStore) -> set[str]:
    return {dest_id for _, dest_id in checkpoint_of(store.path).values()}


def by_key(hubspot, obj: str, key: str, field: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in hubspot.emulator.records(obj):
        found.setdefault(record["properties"][key], []).append(record["properties"][field])
    return found


COMPANY_SYNC = {"object": "companies", "primary_key": "domain", "match_on": "domain", "mode": "upsert"}
CONTACT_SYNC = {"object": "contacts", "primary_key": "email", "mode": "upsert"}


@pytest.mark.parametrize("after", [0, 3])
def test_timed_out_create_that_landed_is_reconciled_not_duplicated(hubspot, connection, tmp_path, after):
    clean, _ = sync(COMPANIES, tmp_path, "clean", **COMPANY_SYNC)
    clean_creates, clean_searches = calls(hubspot, "/batch/create"), calls(hubspot, "/search")
    assert clean.created == 100 and clean_creates == 5

    hubspot.emulator.reset()
    hubspot.faults.update(slow_seconds=SLOW)
    # The k-th create of the run: after the properties call and the first search.
    hubspot.faults.fail_next(1, "timeout", after=after + 2)
    report, store = sync(COMPANIES, tmp_path, "faulted", **COMPANY_SYNC)
    assert wait_until_answered(hubspot) == [201], "the timed-out create did not land on the server"
    timed_out = [r.path for r in hubspot.emulator.requests if r.fault == "timeout"]
    assert timed_out == ["/crm/v3/objects/companies/batch/create"]

    found = by_key(hubspot, "companies", "domain", "name")
    duplicates = {k: len(v) for k, v in found.items() if len(v) > 1}
    assert not duplicates, f"duplicate companies: {duplicates}"
    assert {k: v[0] for k, v in found.items()} == {r["domain"]: r["name"] for r in COMPANIES}
    # Reconciled by lookup, not resent: the same creates as the clean run, one more search.
    assert calls(hubspot, "/batch/create") == clean_creates
    assert calls(hubspot, "/search") == clean_searches + 1
    assert report.requests == clean.requests + 1 and report.retries == 0 and report.rejected == 0
    assert report.created == 100
    assert ids_of(store) == {r["id"] for r in hubspot.emulator.records("companies")}


@pytest.mark.parametrize("lands", ["at_once", "after_the_resend"])
def test_timed_out_upsert_is_resent_once_and_converges(hubspot, connection, tmp_path, lands):
    clean, _ = sync(CONTACTS, tmp_path, "clean", **CONTACT_SYNC)
    clean_upserts = calls(hubspot, "/batch/upsert")
    assert clean_upserts == 5 and clean.retries == 0

    hubspot.emulator.reset()
    hubspot.faults.update(slow_seconds=SLOW, slow_apply_after=SLOW if lands == "after_the_resend" else 0.0)
    hubspot.faults.fail_next(1, "timeout", after=3)  # the properties call, two upserts, then this one
    report, store = sync(CONTACTS, tmp_path, "faulted", **CONTACT_SYNC)
    assert wait_until_answered(hubspot) == [200], "the timed-out upsert did not land on the server"
    timed_out = [r.path for r in hubspot.emulator.requests if r.fault == "timeout"]
    assert timed_out == ["/crm/v3/objects/contacts/batch/upsert"]

    found = by_key(hubspot, "contacts", "email", "firstname")
    emails = Counter(r["properties"]["email"] for r in hubspot.emulator.records("contacts"))
    assert not {e for e, n in emails.items() if n > 1}, "duplicate contacts"
    assert {k: v[0] for k, v in found.items()} == {r["email"]: r["firstname"] for r in CONTACTS}
    # One resend of the idempotent batch, nothing else.
    assert report.retries == 1 and report.requests == clean.requests + 1
    assert calls(hubspot, "/batch/upsert") == clean_upserts + 1
    assert report.rejected == 0
    assert ids_of(store) == {r["id"] for r in hubspot.emulator.records("contacts")}


def test_timed_out_create_that_lands_late_is_not_created_again(hubspot, connection, tmp_path):
    clean, _ = sync(COMPANIES, tmp_path, "clean", **COMPANY_SYNC)
    clean_creates = calls(hubspot, "/batch/create")

    hubspot.emulator.reset()
    hubspot.faults.update(slow_seconds=SLOW, slow_apply_after=SLOW)
    hubspot.faults.fail_next(1, "timeout", after=3)  # the second create
    with pytest.raises(RetryableSyncError, match="not found yet"):
        sync(COMPANIES, tmp_path, "faulted", **COMPANY_SYNC)
    assert wait_until_answered(hubspot) == [201], "the timed-out create did not land on the server"
    first_try = Counter(r["properties"]["domain"] for r in hubspot.emulator.records("companies"))
    assert max(first_try.values()) == 1, "the first try created the timed-out batch again"
    assert calls(hubspot, "/batch/create") == len(first_try) // 20  # every create call of it made new records
    report, store = sync(COMPANIES, tmp_path, "faulted", **COMPANY_SYNC)  # the task's retry

    found = by_key(hubspot, "companies", "domain", "name")
    duplicates = {k: len(v) for k, v in found.items() if len(v) > 1}
    assert not duplicates, f"duplicate companies: {duplicates}"
    assert {k: v[0] for k, v in found.items()} == {r["domain"]: r["name"] for r in COMPANIES}
    assert calls(hubspot, "/batch/create") == clean_creates  # the late batch was never sent twice
    # The retry found the first try's records (the late batch included) by lookup and left them alone.
    assert report.created == 100 - len(first_try) and report.rejected == 0 and report.retries == 0
    assert ids_of(store) == {r["id"] for r in hubspot.emulator.records("companies")}
