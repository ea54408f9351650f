"""The ``celery`` tests are opt-in: they start a whole CeleryExecutor cluster (~8 processes).

They run only when a ``-m`` expression names them (``pytest -m celery``) and are
deselected otherwise, like the ``ui`` tests. ``make test`` runs them in a pytest
invocation of their own after the other suites, so no xdist neighbour competes with
the cluster for the CPU while a worker is being killed.
"""

from __future__ import annotations

import re

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if re.search(r"\bcelery\b", config.option.markexpr or ""):
        return
    celery = [item for item in items if item.get_closest_marker("celery")]
    if celery:
        config.hook.pytest_deselected(items=celery)
        items[:] = [item for item in items if not item.get_closest_marker("celery")]
