"""Mode rules: which call each changed row needs, at the lowest request cost.

Given, for every changed row, whether it is new or changed and whether the
checkpoint knows its destination id, decide per row:

* known id -> ``update`` by id (no lookup, and a changed match value such as a new
  email updates the record in place instead of creating a duplicate);
* unknown id and the destination upserts on the match field -> ``upsert``;
* unknown id otherwise -> ``lookup`` by the match value, then ``update`` or ``create``
  (``after_lookup``);
* destinations that have no notion of existing records (webhooks) -> ``upsert``.

``insert`` never updates and ``update`` never creates: rows the mode forbids are
*skipped* (counted with a reason, not rejected, not checkpointed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from airflow_provider_retl.sync.records import ChangeKind, Mode


class Action(str, enum.Enum):
    """A destination call."""

    UPSERT = "upsert"
    BULK_UPSERT = "bulk_upsert"
    UPDATE = "update"
    CREATE = "create"
    LOOKUP = "lookup"
    DELETE = "delete"
    SEND_EVENT = "send_event"
    RECONCILE = "reconcile"


SKIP_INSERT_EXISTS = "insert mode: record already exists"
SKIP_UPDATE_MISSING = "update mode: record not found in destination"
SKIP_NOT_MIRROR = "removed from source (mode is not mirror)"
SKIP_REMOVED_ADOPTED = "removed key's record is held by a live key (re-keyed): kept, not deleted"


@dataclass
class Plan:
    """Row positions (into the pending rows) per action, plus skips by reason."""

    by_action: dict[Action, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, action: Action) -> np.ndarray:
        return self.by_action.get(action, np.empty(0, dtype=np.int64))

    def counts(self) -> dict[str, int]:
        return {a.value: len(v) for a, v in self.by_action.items() if len(v)}


def plan_changes(
    kinds: np.ndarray,
    has_id: np.ndarray,
    mode: Mode,
    *,
    can_upsert: bool,
    needs_lookup: bool,
    updates_by_match: bool = False,
) -> Plan:
    """Decide the action per pending row (``kinds`` holds ChangeKind values)."""
    new = kinds == ChangeKind.NEW.value
    changed = kinds == ChangeKind.CHANGED.value
    plan = Plan()
    positions = np.arange(len(kinds))

    def put(action: Action, mask: np.ndarray) -> None:
        plan.by_action[action] = np.concatenate([plan.rows(action), positions[mask]])

    if mode is Mode.INSERT:
        # A changed row was created by an earlier run: inserting never touches it again.
        plan.skipped["insert mode: never updates"] = positions[changed | (new & has_id)]
        # Even where upsert exists it would overwrite an existing record: look up, create the missing.
        put(Action.LOOKUP if needs_lookup else Action.UPSERT, new & ~has_id)
        return plan

    if mode is Mode.UPDATE:
        if updates_by_match:
            # The API updates by match value and ignores records that do not exist (Braze
            # _update_existing_only, Customer.io _update): no lookup, and nothing is created.
            put(Action.UPDATE, new | changed)
            return plan
        put(Action.UPDATE, has_id & (new | changed))
        if needs_lookup:
            put(Action.LOOKUP, ~has_id & (new | changed))
        else:
            # Without lookups a destination cannot tell "exists"; only rows it acknowledged before qualify.
            put(Action.UPSERT, ~has_id & changed)
            plan.skipped[SKIP_UPDATE_MISSING] = positions[~has_id & new]
        return plan

    # upsert and mirror
    if not needs_lookup:
        put(Action.UPSERT, new | changed)
        return plan
    put(Action.UPDATE, has_id & (new | changed))
    if can_upsert:
        put(Action.UPSERT, ~has_id & (new | changed))
    else:
        put(Action.LOOKUP, ~has_id & (new | changed))
    return plan


SKIP_EVENT_SENT = "event already sent (events are never re-sent or updated)"


def plan_events(kinds: np.ndarray, pending: np.ndarray) -> Plan:
    """Event streams: new keys are sent once; a key whose send was interrupted is reconciled first."""
    new = kinds == ChangeKind.NEW.value
    changed = kinds == ChangeKind.CHANGED.value
    positions = np.arange(len(kinds))
    plan = Plan()
    plan.by_action[Action.SEND_EVENT] = positions[new]
    plan.by_action[Action.RECONCILE] = positions[changed & pending]
    plan.skipped[SKIP_EVENT_SENT] = positions[changed & ~pending]
    return plan


def after_lookup(mode: Mode) -> tuple[Action | None, Action | None]:
    """After a lookup: (action for rows found, action for rows not found); None means skip."""
    if mode is Mode.INSERT:
        return None, Action.CREATE
    if mode is Mode.UPDATE:
        return Action.UPDATE, None
    return Action.UPDATE, Action.CREATE
