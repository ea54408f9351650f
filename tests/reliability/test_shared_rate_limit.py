"""Load: 8 syncs at once against one HubSpot emulator account with a short rolling window.

Eight threads in one process, each with its own ``HubSpotHook`` on the same connection
(same base URL and token, so the same account key): they share the process-wide
``RollingWindowLimiter`` of ``hooks/ratelimit.py``. The emulator allows ``LIMIT`` requests
in any rolling ``WINDOW`` seconds per account and answers 429 beyond that.

Asserted: the emulator never accepted more than ``LIMIT`` requests in any window, sent no
429, and every sync finished with destination == source and no duplicate. A control run
gives every hook its own limiter (no sharing): the account is overrun and 429s come back,
which shows the first assertion can fail.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from airflow_provider_retl.hooks.hubspot import HubSpotHook
from airflow_provider_retl.hooks.ratelimit import (
    RollingWindowLimiter,
    clear_shared_limiters,
)
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, start_emulator

SYNCS = 8
ROWS_PER_SYNC = 60
LIMIT, WINDOW = 20, 1.0


def rows_of(n: int) -> list[dict[str, str]]:
    return [{"email": f"s{n}-{i}@example.com", "firstname": f"F{n}-{i}"} for i in range(ROWS_PER_SYNC)]


def run_syncs(hubspot, monkeypatch, *, shared: bool):
    doc = {"conn_type": "retl_hubspot", "host": hubspot.url, "password": DEFAULT_TOKEN,
           "extra": {"rate_limit": LIMIT, "rate_window": WINDOW, "batch_size": 10, "max_retries": 8}}
    monkeypatch.setenv("AIRFLOW_CONN_REL_LOAD", json.dumps(doc))
    clear_shared_limiters()

    def one(n: int):
        limiter = None if shared else RollingWindowLimiter(LIMIT, WINDOW)
        cfg = SyncConfig(sync_id=f"load-{n}", object="contacts", primary_key="email", mode="upsert",
                         commit_interval=0)
        with HubSpotHook("rel_load", limiter=limiter) as hook:
            return run_sync([pd.DataFrame(rows_of(n))], hook, MemoryCheckpointStore(), cfg)

    with ThreadPoolExecutor(SYNCS) as pool:
        reports = list(pool.map(one, range(SYNCS)))
    clear_shared_limiters()
    return reports


def assert_destination_equals_sources(hubspot) -> None:
    found = [(r["properties"]["email"], r["properties"]["firstname"]) for r in hubspot.emulator.records("contacts")]
    expected = [(r["email"], r["firstname"]) for n in range(SYNCS) for r in rows_of(n)]
    assert len(found) == len({e for e, _ in found}), "duplicate contacts"
    assert sorted(found) == sorted(expected)


def test_eight_syncs_share_the_account_limit(monkeypatch):
    with start_emulator("hubspot", rate_limit=LIMIT, rate_window=WINDOW, keep_requests=5000) as hubspot:
        reports = run_syncs(hubspot, monkeypatch, shared=True)
        requests = sum(r.requests for r in reports)
        print(f"LOAD shared: {requests} requests, max in window {hubspot.emulator.max_requests_in_window()}, "
              f"429s {hubspot.emulator.request_count(status=429)}")
        assert all(r.rejected == 0 and r.upserted + r.created == ROWS_PER_SYNC for r in reports)
        assert_destination_equals_sources(hubspot)
        assert requests >= 2 * LIMIT, "too few requests to load the window"
        assert hubspot.emulator.max_requests_in_window() <= LIMIT
        assert hubspot.emulator.request_count(status=429) == 0
        assert sum(r.retries for r in reports) == 0


def test_control_without_a_shared_limiter_overruns_the_account(monkeypatch):
    with start_emulator("hubspot", rate_limit=LIMIT, rate_window=WINDOW, keep_requests=5000) as hubspot:
        reports = run_syncs(hubspot, monkeypatch, shared=False)
        too_many = hubspot.emulator.request_count(status=429)
        print(f"LOAD control: {sum(r.requests for r in reports)} requests, 429s {too_many}")
        assert too_many > 0, "the control did not overrun the account: the shared-limit test proves nothing"
        assert_destination_equals_sources(hubspot)  # 429s are retried after Retry-After


@pytest.fixture(autouse=True)
def _forget_limiters():
    yield
    clear_shared_limiters()
