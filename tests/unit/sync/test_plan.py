"""Mode rules: the action chosen per row, from its change kind and what the destination can do."""

import numpy as np
import pytest

from airflow_provider_retl.sync.plan import Action, plan_changes, plan_events
from airflow_provider_retl.sync.records import Mode

KINDS = np.array(["new", "new", "changed", "changed"], dtype=object)
HAS_ID = np.array([False, True, False, True])


def rows(plan, action):
    return plan.rows(action).tolist()


def test_known_ids_are_updated_and_the_rest_upserted_when_the_api_can():
    plan = plan_changes(KINDS, HAS_ID, Mode.UPSERT, can_upsert=True, needs_lookup=True)
    assert rows(plan, Action.UPDATE) == [1, 3] and rows(plan, Action.UPSERT) == [0, 2]
    assert rows(plan, Action.LOOKUP) == []


def test_without_upsert_unknown_ids_are_looked_up():
    plan = plan_changes(KINDS, HAS_ID, Mode.MIRROR, can_upsert=False, needs_lookup=True)
    assert rows(plan, Action.LOOKUP) == [0, 2] and rows(plan, Action.UPDATE) == [1, 3]


def test_insert_looks_up_even_where_upsert_exists_and_never_updates():
    plan = plan_changes(KINDS, HAS_ID, Mode.INSERT, can_upsert=True, needs_lookup=True)
    assert rows(plan, Action.LOOKUP) == [0] and rows(plan, Action.UPSERT) == []
    assert plan.skipped["insert mode: never updates"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("by_match, update, skipped", [(False, [1, 3], [0]), (True, [0, 1, 2, 3], [])])
def test_update_mode_without_lookups(by_match, update, skipped):
    plan = plan_changes(KINDS, HAS_ID, Mode.UPDATE, can_upsert=True, needs_lookup=False, updates_by_match=by_match)
    assert rows(plan, Action.UPDATE) == update
    assert plan.skipped.get("update mode: record not found in destination", np.array([])).tolist() == skipped


def test_events_send_new_keys_reconcile_interrupted_ones_and_skip_the_rest():
    plan = plan_events(KINDS, np.array([False, False, True, False]))
    assert rows(plan, Action.SEND_EVENT) == [0, 1] and rows(plan, Action.RECONCILE) == [2]
    assert list(plan.skipped.values())[0].tolist() == [3]
