"""Fixtures of the reliability suites: one warm fork server per pytest process."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_retl.testing.crash import ForkServer


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Forks one child per killed run; the children's logs go to a file, not the test output."""
    log = tempfile.NamedTemporaryFile(prefix="retl-crash-children-", suffix=".log", delete=False)
    with ForkServer(stderr=log) as server:
        server.log_path = Path(log.name)  # type: ignore[attr-defined]
        yield server
    log.close()
    Path(log.name).unlink(missing_ok=True)
