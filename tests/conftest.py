"""Test session setup shared by every suite.

* Each pytest process (each xdist worker) gets its own temporary ``AIRFLOW_HOME`` with a
  SQLite metadata DB. The environment is set here, at import, before anything imports
  Airflow; the DB is migrated only when a test asks for ``airflow_db`` / ``dag_runner``.
  Engine unit tests never touch these fixtures and never import Airflow.
* ``set_connection`` registers Connections as ``AIRFLOW_CONN_<ID>`` (JSON) for one test.
* ``postgres`` tests use the machine's PostgreSQL (127.0.0.1:5432, db ``test``). Without
  a server they skip locally and FAIL when ``CI`` is set.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Importable as ``airflow_harness`` whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

import airflow_harness  # noqa: E402  (needs the path above; imports no Airflow)

if "airflow" in sys.modules:
    raise RuntimeError(
        "airflow was imported before tests/conftest.py could point AIRFLOW_HOME at a temporary "
        "directory; remove the early import (a plugin or a -p option?)"
    )

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix=f"retl-airflow-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"))
os.environ.update(airflow_harness.airflow_env(AIRFLOW_HOME))
(AIRFLOW_HOME / "dags").mkdir()

POSTGRES_DSN = os.environ.get("RETL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    # Airflow's in-process Execution API client (dag.test()) triggers this; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not os.environ.get("RETL_KEEP_AIRFLOW_HOME"):
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Mark by fixture so `-m "not dagrun"` / `-m postgres` / `-m mysql` select correctly without hand-marking.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "airflow_db" in fixtures:
            item.add_marker(pytest.mark.dagrun)
        if "postgres_dsn" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "mariadb_table" in fixtures:
            item.add_marker(pytest.mark.mysql)
    # UI tests (a whole `airflow standalone` + Chromium, minutes) run only when a -m expression
    # names them (`make ui-test` runs `-m ui`); otherwise they are deselected, and counted as such.
    if not re.search(r"\bui\b", config.option.markexpr or ""):
        ui = [item for item in items if item.get_closest_marker("ui")]
        if ui:
            config.hook.pytest_deselected(items=ui)
            items[:] = [item for item in items if not item.get_closest_marker("ui")]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres"):
        _require_postgres()


# Airflow


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path):
    """A migrated metadata DB for this process (``airflow db migrate`` once)."""
    airflow_harness.migrate_db()
    return airflow_harness


@pytest.fixture(scope="session")
def dag_runner(airflow_db):
    """The harness: ``dag_runner.run_dag(source, dag_id, conf=..., logical_date=...)`` and friends."""
    return airflow_db


@pytest.fixture
def set_connection(monkeypatch: pytest.MonkeyPatch):
    """Register a Connection for this test: ``set_connection("hubspot_default", "hubspot", host=url, password=token)``."""

    def _set(
        conn_id: str,
        conn_type: str,
        host: str | None = None,
        password: str | None = None,
        extra: dict[str, Any] | None = None,
        *,
        login: str | None = None,
        schema: str | None = None,
        port: int | None = None,
    ) -> str:
        name, value = airflow_harness.connection_env(
            conn_id, conn_type, host=host, login=login, password=password, schema=schema, port=port, extra=extra
        )
        monkeypatch.setenv(name, value)
        return conn_id

    return _set


# PostgreSQL


@functools.cache
def _postgres_error() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # any failure means "no usable server"
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _require_postgres() -> None:
    error = _postgres_error()
    if error is None:
        return
    if _in_ci():
        pytest.fail(f"PostgreSQL at {POSTGRES_DSN} does not answer and CI is set: {error}", pytrace=False)
    pytest.skip(f"no PostgreSQL at {POSTGRES_DSN} ({error})")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    _require_postgres()
    return POSTGRES_DSN


@dataclass(frozen=True)
class PostgresSchema:
    """A schema of its own in the test database, dropped after the test."""

    dsn: str
    name: str

    def connect(self):
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True, options=f"-c search_path={self.name}")
        return conn

    def execute(self, sql: str, params: Any = None) -> list[tuple]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def connection_fields(self) -> dict[str, Any]:
        """Fields for an Airflow ``postgres`` Connection whose queries default to this schema."""
        from urllib.parse import urlsplit

        url = urlsplit(self.dsn)
        return {
            "host": url.hostname or "127.0.0.1",
            "port": url.port or 5432,
            "login": url.username or "postgres",
            "password": url.password,
            "schema": url.path.lstrip("/") or "test",
            "extra": {"options": f"-c search_path={self.name}"},
        }


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[PostgresSchema]:
    """A fresh schema per test; register it with ``set_connection(id, "postgres", **pg_schema.connection_fields())``."""
    import psycopg

    schema = PostgresSchema(postgres_dsn, f"retl_t_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'create schema "{schema.name}"')
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema.name}" cascade')


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Each test starts and ends with an empty process-wide redactor (hooks register into it)."""
    yield
    from airflow_provider_retl.sync.redaction import REDACTOR  # imports no Airflow

    REDACTOR.forget_all()
