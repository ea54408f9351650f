"""SIGKILL a sync at seeded points (before the first batch, mid-push, mid-commit, in finalize) and retry.

For every scenario of ``scenarios.py`` (at least one per hook of ``crash.HOOKS``: native upsert,
lookup-then-create, Zendesk jobs, Mailchimp batches, Salesforce collections, a signed webhook,
event streams) and each seed, the retry must leave: the destination equal to the source, no
duplicate records, events exactly once (Customer.io) or at most once with the rest reported in
doubt (Braze), and the checkpoint a clean run would have written (same keys and row hashes, the
destination's ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_retl.testing.emulators import start_emulator

from . import scenarios
from .crash_support import SEEDS, reference_run, run_trial

SCENARIOS = scenarios.ALL


@pytest.fixture(scope="module")
def benches(tmp_path_factory) -> Iterator[Callable[[str], tuple[Any, Any, Any, Path]]]:
    """Each scenario's emulator and clean reference run, made on first use and kept to the module's end.

    Not a parametrized module fixture: pytest-xdist hands each worker seeds of several scenarios
    in turn, and a parametrized fixture would stop its emulator and redo the reference run at
    every switch (most of this module's time, measured).
    """
    made: dict[str, tuple[Any, Any, Any, Path]] = {}
    with ExitStack() as stack:

        def get(name: str) -> tuple[Any, Any, Any, Path]:
            if name not in made:
                scenario = SCENARIOS[name]()
                workdir = tmp_path_factory.mktemp(scenario.name)
                running = stack.enter_context(start_emulator(scenario.emulator, **scenario.emulator_options))
                made[name] = (scenario, running, reference_run(scenario, running, workdir), workdir)
            return made[name]

        yield get


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_killed_sync_retries_to_a_clean_state(benches, fork_server, name, seed):
    scenario, running, reference, workdir = benches(name)
    trial = run_trial(scenario, running, fork_server, reference, seed, workdir)
    assert trial.fired >= 1
