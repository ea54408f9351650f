"""Hypothesis profiles of the stateful tests and their emulators.

``ci`` (the default, what ``make test`` runs): few examples per configuration, derandomized,
so CI is deterministic. ``soak`` (``make soak``, ``HYPOTHESIS_PROFILE=soak``): many examples,
random seeds, longer histories.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, settings

from airflow_provider_retl.testing.emulators import start_emulator
from tests.stateful.world import DESTINATIONS

_COMMON = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "report_multiple_bugs": False,
}
# CI: no shrinking (a failing history is printed as generated; the regression tests are the
# minimal ones), so a red run costs no more time than a green one.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("RETL_STATEFUL_EXAMPLES", "3")),
    stateful_step_count=12,
    derandomize=True,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    **_COMMON,
)
settings.register_profile(
    "soak",
    max_examples=int(os.environ.get("RETL_STATEFUL_EXAMPLES", "500")),
    stateful_step_count=30,
    derandomize=False,
    print_blob=True,
    **_COMMON,
)


def profile() -> settings:
    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module", params=sorted(DESTINATIONS))
def running_destination(request) -> Iterator[tuple[str, object]]:
    dest = DESTINATIONS[request.param]
    with start_emulator(dest.emulator, **dest.emulator_options) as running:
        yield request.param, running
