"""An events sync moved between a warehouse checkpoint and a file-like store keeps its event ids.

The warehouse diff hashes keys in SQL (MD5) and the in-memory diff in Python (SipHash); the
event id must come from neither store's hash but from the canonical key text alone, so
Customer.io's dedupe (by event id) drops what the other store already sent. Real engine, real
DuckDB/SQLite read through Airflow's hooks, real Customer.io emulator over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_retl.checkpoints.warehouse import warehouse_store
from airflow_provider_retl.sources import read_query
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import CUSTOMERIO_API_KEY, CUSTOMERIO_SITE_ID, start_emulator

ROWS = [(i, dt.datetime(2026, 1, 1, 10) + dt.timedelta(hours=i), f"p{i}", f"v{i}") for i in range(1, 6)]


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
    monkeypatch.setenv("AIRFLOW_CONN_EVENT_STORES_CIO", json.dumps(doc))
    return CustomerIoHook("event_stores_cio", sleep=lambda s: None)


def make_source(kind: str, tmp_path: Path, set_connection) -> str:
    """Table ``src`` (key = (k, ts)) in a real ``kind`` warehouse; returns its connection id."""
    path = tmp_path / f"w.{kind}"
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect(str(path))
        con.execute("create table src (k bigint, ts timestamp, id varchar, name varchar)")
    else:
        con = sqlite3.connect(path)
        con.execute("create table src (k bigint, ts text, id text, name text)")
    con.executemany(
        "insert into src values (?, ?, ?, ?)",
        [[k, ts if kind == "duckdb" else ts.isoformat(sep=" "), i, v] for k, ts, i, v in ROWS],
    )
    con.commit()
    con.close()
    set_connection(f"ev_{kind}", kind, host=str(path))
    return f"ev_{kind}"


def config() -> SyncConfig:
    return SyncConfig(
        sync_id="ev_stores",
        object="events",
        primary_key=["k", "ts"],
        mode="insert",
        commit_interval=0,
    )


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_events_keep_their_ids_from_a_warehouse_to_a_file_like_store(
    kind, tmp_path, set_connection, cio_hook, customerio
):
    from airflow.sdk import BaseHook

    conn_id = make_source(kind, tmp_path, set_connection)
    # SQLite has no timestamp type: the sync declares it, and reader and warehouse diff both use it.
    types = {"ts": "timestamp"} if kind == "sqlite" else None
    hook = BaseHook.get_connection(conn_id).get_hook()
    query = "select * from src"
    store = warehouse_store("warehouse:retl_ck", hook, query, sync_id="ev_stores", column_types=types)
    run_sync([], cio_hook, store, config())
    sent_ids = {e["id"] for e in customerio.emulator.events()}
    assert len(sent_ids) == len(ROWS)

    # The same sync on a fresh (file-like) store: it reads the same table and sends every row again,
    # with the same ids, so Customer.io drops each as a duplicate.
    frames = list(read_query(hook, query, column_types=types))
    run_sync(frames, cio_hook, MemoryCheckpointStore(), config())
    assert customerio.emulator.duplicate_events == len(ROWS)
    processed = Counter(e["attributes"]["k"] for e in customerio.emulator.events())
    assert processed == Counter({k: 1 for k, *_ in ROWS})
