"""SIGKILL a sync at seeded points (before the first batch, mid-push, mid-commit, in finalize) and retry.

For each destination kind (native upsert, lookup-then-create, event streams) and each seed,
the retry must leave: the destination equal to the source, no duplicate records, events
exactly once (Customer.io) or at most once with the rest reported in doubt (Braze), and the
checkpoint a clean run would have written (same keys and row hashes, the destination's ids).
"""

from __future__ import annotations

import pytest

from airflow_provider_retl.testing.emulators import start_emulator

from . import scenarios
from .crash_support import SEEDS, reference_run, run_trial

SCENARIOS = {
    "hubspot_upsert": scenarios.hubspot_upsert,
    "hubspot_lookup": scenarios.hubspot_lookup,
    "customerio_events": scenarios.customerio_events,
    "braze_events": scenarios.braze_events,
    "zendesk_users_external_id": scenarios.zendesk_users_external_id,
    "zendesk_users_email": scenarios.zendesk_users_email,
    "mailchimp_members": scenarios.mailchimp_members,
    "salesforce_contacts": scenarios.salesforce_contacts,
    "webhook_upsert": scenarios.webhook_upsert,
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def setup(request, tmp_path_factory):
    scenario = SCENARIOS[request.param]()
    workdir = tmp_path_factory.mktemp(scenario.name)
    with start_emulator(scenario.emulator, **scenario.emulator_options) as running:
        reference = reference_run(scenario, running, workdir)
        yield scenario, running, reference, workdir


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_sync_retries_to_a_clean_state(setup, fork_server, seed):
    scenario, running, reference, workdir = setup
    trial = run_trial(scenario, running, fork_server, reference, seed, workdir)
    assert trial.fired >= 1
