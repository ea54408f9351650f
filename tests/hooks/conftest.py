"""Fixtures of the hook tests: connections as AIRFLOW_CONN_* env vars, fresh shared limiters, a scripted server."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_retl.hooks.ratelimit import clear_shared_limiters

from .support import TOKEN, ScriptedServer, conn_json


@pytest.fixture
def add_connection(monkeypatch):
    """Register a connection for this test: ``add_connection("hubspot_default", "retl_hubspot", url, ...)``."""

    def add(conn_id: str, conn_type: str, host: str | None, password: str | None = TOKEN, **extra: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(conn_type, host, password, **extra))
        return conn_id

    return add


@pytest.fixture(autouse=True)
def _fresh_shared_limiters():
    clear_shared_limiters()
    yield
    clear_shared_limiters()


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv
