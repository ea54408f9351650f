"""Plain data that flows between the engine, the destinations and the report.

Nothing here imports Airflow or an HTTP library: destinations (hooks) build
``Outcome`` objects, the engine builds ``Change`` and ``Reject`` objects and a
``SyncReport`` that the operator returns as its XCom.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class Mode(str, enum.Enum):
    """What a sync is allowed to do in the destination."""

    UPSERT = "upsert"  # create new records, update changed ones
    UPDATE = "update"  # only update records that already exist; never create
    INSERT = "insert"  # only create records that do not exist; never update
    MIRROR = "mirror"  # upsert, and delete/archive records whose key left the query

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"mode must be one of {allowed}; got {value!r}") from None


class ChangeKind(str, enum.Enum):
    """Why a row is in the plan, as decided by the diff against the checkpoint."""

    NEW = "new"  # key not in the checkpoint
    CHANGED = "changed"  # key in the checkpoint with another row hash
    REMOVED = "removed"  # key in the checkpoint, absent from this run's result


@dataclass(slots=True)
class Record:
    """One row on its way to a destination.

    ``fields`` are wire-ready values (str, int, float, bool, None, list, dict).
    ``match_value`` is the value of the destination field used to find the
    record when ``dest_id`` is unknown (e.g. the email).
    """

    key: str
    fields: dict[str, Any]
    key_hash: int = 0
    row_hash: int = 0
    dest_id: str | None = None
    match_value: Any = None
    #: Stable id of an event (the same on every retry), for destinations that deduplicate by it.
    event_id: str | None = None


#: Checkpoint destination id of an event whose batch was sent but not yet acknowledged: the next
#: try asks the destination whether it landed before sending it again (never twice).
PENDING = "\x00pending"

#: ``Outcome.code`` of a create refused because the record already exists; ``dest_id`` then
#: holds the existing record's id, and the engine updates that record instead.
EXISTS = "EXISTS"


@dataclass(slots=True, frozen=True)
class Outcome:
    """Result of one record in one destination call.

    ``ok`` records carry the destination id when the API returns one;
    failed records carry a human-readable ``reason`` (and the destination's
    error code in ``code``) and are reported as rejects and not checkpointed.
    ``created`` is True/False when the API says which, None when it does not.
    """

    ok: bool
    dest_id: str | None = None
    reason: str | None = None
    code: str | None = None
    created: bool | None = None

    @classmethod
    def success(cls, dest_id: str | None = None, created: bool | None = None) -> Outcome:
        return cls(ok=True, dest_id=dest_id, created=created)

    @classmethod
    def failure(cls, reason: str, code: str | None = None) -> Outcome:
        return cls(ok=False, reason=reason, code=code)


@dataclass(slots=True, frozen=True)
class Reject:
    """A row that was not synced, with the key it had and why."""

    key: str
    reason: str
    stage: str  # "source" (key problems), "validation" (local rules), "destination" (API said no)
    field: str | None = None
    code: str | None = None
    #: For a row refused before sending ("validation"): what the plan had it as ("new" or "changed").
    kind: str | None = None
    #: Row hash of the refused content where known (history: an acknowledgement holds until it changes).
    row_hash: int | None = dataclasses.field(default=None, compare=False, repr=False)
    #: The fields refused, only while a run collects payloads for its history (personal data).
    payload: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)


#: Rejects kept in full in the report (the count is always exact).
MAX_REJECTS_IN_REPORT = 1000
#: Example rejects kept per reason: 1,001 identical rejects are one reason with a count, not a list.
REJECT_EXAMPLES_PER_REASON = 10

#: Quoted values and numbers in a reject reason: one reason per kind of problem, not per value.
_REASON_VALUES = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|(?<![\w.])\d[\d,.]*(?![\w])")


def reason_pattern(reason: str) -> str:
    """``"invalid email 'a b': ..."`` -> ``"invalid email '…': ..."``: what rejects are grouped by."""
    return _REASON_VALUES.sub(lambda m: "'…'" if m.group(0)[0] in "'\"" else "N", reason)


@dataclass
class SyncReport:
    """What one sync run did; returned by the operator as a JSON-serialisable dict."""

    sync_id: str
    object: str
    mode: str
    dry_run: bool = False
    full_resync: bool = False
    rebaseline: bool = False
    rows_read: int = 0
    #: Partitioned runs: ``"i/n"`` and the rows this partition owned (its key slice; in
    #: partition 0 also the rows with a NULL/empty key). Summed over partitions: rows_read.
    partition: str | None = None
    rows_in_partition: int | None = None
    unchanged: int = 0
    planned: dict[str, int] = field(default_factory=lambda: {"new": 0, "changed": 0, "removed": 0})
    #: Rows per destination call kind (upsert/update/create/lookup) as planned.
    plan: dict[str, int] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    upserted: int = 0
    deleted: int = 0
    events: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    #: Rows the plan counted new or changed that were rejected before sending (local validation): not
    #: checkpointed, so they are planned again every run until the data is fixed. The summary counts
    #: them as rejected, not as new or changed: a run with nothing to send reads "0 new".
    rejected_planned: dict[str, int] = field(default_factory=lambda: {"new": 0, "changed": 0})
    #: Example rejects: at most REJECT_EXAMPLES_PER_REASON per reason, MAX_REJECTS_IN_REPORT in all.
    rejects: list[Reject] = field(default_factory=list)
    #: Every reject grouped by stage and reason (its values blanked, see ``reason_pattern``):
    #: ``{"reason", "stage", "code", "count", "examples"}`` with a few example keys.
    reject_reasons: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    batches: int = 0
    checkpoint: str = ""
    checkpoint_reset: str | None = None
    seconds: float = 0.0
    rows_per_second: float = 0.0

    #: Called with every reject, beyond the report's cap (e.g. to write them all to a table).
    on_reject: Callable[[Reject], None] | None = field(default=None, repr=False, compare=False)

    def add_reject(self, reject: Reject) -> None:
        self.rejected += 1
        if reject.stage == "validation" and reject.kind in self.rejected_planned:
            self.rejected_planned[reject.kind] += 1
        group = self._reject_group(reject)
        group["count"] += 1
        if len(group["examples"]) < REJECT_EXAMPLES_PER_REASON and len(self.rejects) < MAX_REJECTS_IN_REPORT:
            group["examples"].append(reject.key)
            self.rejects.append(reject)
        if self.on_reject is not None:
            self.on_reject(reject)

    def _reject_group(self, reject: Reject) -> dict[str, Any]:
        # Rejects come from worker results applied on one thread; the index is rebuilt after from_dict.
        index: dict[tuple[str, str], dict[str, Any]] | None = getattr(self, "_groups", None)
        if index is None or len(index) != len(self.reject_reasons):
            index = {(g["stage"], g["reason"]): g for g in self.reject_reasons}
            object.__setattr__(self, "_groups", index)
        reason = reason_pattern(reject.reason)
        group = index.get((reject.stage, reason))
        if group is None:
            group = {"reason": reason, "stage": reject.stage, "code": reject.code, "count": 0, "examples": []}
            self.reject_reasons.append(group)
            index[(reject.stage, reason)] = group
        return group

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def rejected_unsent(self) -> int:
        """Rows rejected before any request: key problems at the source and local validation."""
        return sum(g["count"] for g in self.reject_reasons if g["stage"] in ("source", "validation"))

    @property
    def pushed(self) -> int:
        return self.created + self.updated + self.upserted + self.deleted + self.events

    def to_dict(self) -> dict[str, Any]:
        listener, self.on_reject = self.on_reject, None
        try:
            data = asdict(self)
        finally:
            self.on_reject = listener
        data.pop("on_reject", None)
        for reject in data["rejects"]:
            reject.pop("row_hash", None)
            reject.pop("payload", None)  # internal: the history's acknowledgements, not the report
        data["pushed"] = self.pushed
        data["rejects_truncated"] = self.rejected > len(self.rejects)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncReport:
        """The report back from its XCom form (``to_dict``)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["rejects"] = [Reject(**r) for r in data.get("rejects", [])]
        report = cls(**values)
        return report

    def summary(self) -> str:
        """A few readable lines for logs and the demo."""
        lines = [
            f"sync {self.sync_id} -> {self.object} ({self.mode}{', dry run' if self.dry_run else ''}):",
            f"  read {self.rows_read} rows"
            + (f" ({self.rows_in_partition} in partition {self.partition})" if self.partition else "")
            + f": {self.planned['new'] - self.rejected_planned.get('new', 0)} new, "
            f"{self.planned['changed'] - self.rejected_planned.get('changed', 0)} changed, "
            f"{self.planned['removed']} removed, {self.unchanged} unchanged"
            + (f", {self.rejected_unsent} rejected before sending" if self.rejected_unsent else ""),
            f"  pushed {self.pushed}: {self.created} created, {self.updated} updated, "
            f"{self.upserted} upserted, {self.deleted} deleted"
            + (f", {self.events} events" if self.events else "")
            + f", in {self.requests} requests "
            f"({self.retries} retries, {self.batches} batches)",
            f"  rejected {self.rejected}" + (f", skipped {self.skipped}" if self.skipped else ""),
            f"  {self.seconds:.2f}s, {self.rows_per_second:,.0f} rows/s, checkpoint: {self.checkpoint}",
        ]
        if self.checkpoint_reset:
            lines.append(f"  checkpoint reset: {self.checkpoint_reset}")
        # Grouped by reason, most frequent first: 1,001 identical rejects are one line.
        groups = sorted(self.reject_reasons, key=lambda g: -g["count"])
        for group in groups[:20]:
            examples = ", ".join(repr(k) for k in group["examples"][:5])
            more = "" if group["count"] <= len(group["examples"][:5]) else ", ..."
            lines.append(f"  {group['count']} rejected [{group['stage']}] {group['reason']} (e.g. {examples}{more})")
        if len(groups) > 20:
            rest = sum(g["count"] for g in groups[20:])
            lines.append(f"  ... and {rest} more rejects for {len(groups) - 20} other reasons (see 'reject_reasons')")
        return "\n".join(lines)
