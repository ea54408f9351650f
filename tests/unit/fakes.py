"""An in-memory destination for engine unit tests (the engine's collaborator, not the engine).

Integration tests use the real hooks against the HTTP emulators; this one lets the engine's
rules be tested exhaustively and fast, with exact call counts.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_provider_retl.sync.destination import Capabilities, SendLimits
from airflow_provider_retl.sync.errors import BatchRejectedError, OutcomeUnknownError, RetryableDestinationError
from airflow_provider_retl.sync.records import Outcome, Record
from airflow_provider_retl.sync.validate import email, run_validators


class InMemoryDestination:
    """Records keyed by id, unique on ``match_field``; counts every call."""

    def __init__(
        self,
        *,
        upsert: bool = True,
        lookup: bool = True,
        batch: int = 100,
        match_field: str | None = "email",
        concurrency: int = 2,
        reject: Callable[[dict[str, Any]], str | None] | None = None,
        bulk_threshold: int | None = None,
        events: bool = False,
        can_reconcile: bool = True,
        bulk_batch_size: int = 1000,
        refuse_batch: Callable[[dict[str, Any]], str | None] | None = None,
    ):
        #: An API that refuses a whole batch (400, nothing applied) when one record is bad, like most batch APIs.
        self.refuse_batch = refuse_batch
        #: Other fields the destination matches existing records by (like Zendesk's user emails).
        self.identities: tuple[str, ...] = ()
        #: Other names of the match field in a query (like Mailchimp's email for email_address).
        self.match_aliases: tuple[str, ...] = ()
        self._bulk_threshold = bulk_threshold
        self.is_event_stream = events
        self.can_reconcile = can_reconcile
        #: Every event received, in order (duplicates included): what a user would see twice.
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bulk_batch_size = bulk_batch_size
        self.can_upsert = upsert
        self.can_lookup = lookup
        self.max_batch_size = batch
        self.lookup_batch_size = batch
        self.max_concurrency = concurrency
        self.match = match_field
        self.reject = reject
        self.records: dict[str, dict[str, Any]] = {}
        # The engine calls from several threads; the real hooks are thread-safe too.
        self.lock = threading.RLock()
        self.calls: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self.retry_count = 0
        # Fault switches: raise on the n-th call of a kind, or apply-then-lose the response.
        self.fail_on: dict[str, int] = {}
        self.lose_response_on: dict[str, int] = {}

    @property
    def request_count(self) -> int:
        return len(self.calls)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)

    def by_match(self, value: Any) -> str | None:
        with self.lock:
            items = list(self.records.items())
        for rid, fields in items:
            if str(fields.get(self.match, "")).lower() == str(value).lower():
                return rid
        return None

    def _call(self, kind: str, n: int, records: Sequence[Record] = ()) -> None:
        self.calls.append((kind, n))
        if self.fail_on.get(kind) == self.count(kind):
            raise RetryableDestinationError(f"{kind} failed (injected)", status=503)
        for record in records if self.refuse_batch else ():
            reason = self.refuse_batch(record.fields)
            if reason:
                raise BatchRejectedError(f"{kind} -> 400: {reason}", status=400, reason=reason, code="INVALID_BATCH")

    def _lost(self, kind: str) -> bool:
        return self.lose_response_on.get(kind) == self.count(kind)

    # capabilities, asked by the engine all at once
    def capabilities(self, object: str) -> Capabilities:
        return Capabilities(
            lookup=self.can_lookup,
            delete=True,
            events=self.is_event_stream,
            default_match=self.match,
            identities=self.identities,
            match_aliases=self.match_aliases,
            bulk_threshold=self._bulk_threshold,
            case_insensitive=frozenset({"email"}),
            upsert=lambda field: self.supports_upsert(object, field),
        )

    @property
    def limits(self) -> SendLimits:
        return SendLimits(self.max_batch_size, self.lookup_batch_size, self.max_concurrency, self.bulk_batch_size)

    def supports_upsert(self, object: str, match_field: str | None) -> bool:
        return self.can_upsert and match_field == self.match








    def sync_fields(self, object: str, fields: Sequence[str], key_fields: Sequence[str] = ()) -> None:
        self.announced_fields = list(fields)

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        return run_validators(fields, {"email": [email]})

    # calls
    def _write(self, record: Record, rid: str | None) -> Outcome:
        with self.lock:
            return self._write_locked(record, rid)

    def _write_locked(self, record: Record, rid: str | None) -> Outcome:
        reason = self.reject(record.fields) if self.reject else None
        if reason:
            return Outcome.failure(reason, code="INVALID")
        created = rid is None
        rid = rid or str(next(self._ids))
        self.records.setdefault(rid, {}).update(record.fields)
        return Outcome.success(rid, created=created)

    def upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        self._call("upsert", len(records), records)
        return self._upsert(records, match_field)

    def _upsert(self, records: Sequence[Record], match_field: str) -> list[Outcome]:
        if not self.can_lookup:
            # A webhook-like destination: keyed by the sync key, says nothing about created vs updated.
            outcomes = [self._write(r, r.key) for r in records]
            return [Outcome.success(o.dest_id) if o.ok else o for o in outcomes]
        return [self._write(r, self.by_match(r.fields[match_field])) for r in records]


    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        self._call("send_events", len(records), records)
        outcomes = []
        with self.lock:
            for r in records:
                reason = self.reject(r.fields) if self.reject else None
                if reason:
                    outcomes.append(Outcome.failure(reason, code="INVALID"))
                    continue
                self.events.append((r.event_id, dict(r.fields)))
                outcomes.append(Outcome.success())
        if self._lost("send_events"):
            raise OutcomeUnknownError("connection reset after sending (injected)")
        return outcomes

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        self._call("reconcile", len(records))
        if not self.can_reconcile:
            return [None] * len(records)
        delivered = {event_id for event_id, _ in self.events}
        return [r.event_id in delivered for r in records]


    def bulk_upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        # Recorded as its own call kind in one append: rewriting calls[-1] raced other worker threads.
        self._call("bulk_upsert", len(records), records)
        return self._upsert(records, match_field)

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        self._call("lookup", len(values))
        return {v: rid for v in values if (rid := self.by_match(v)) is not None}

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        self._call("create", len(records), records)
        outcomes = [self._write(r, None) for r in records]
        if self._lost("create"):
            raise OutcomeUnknownError("connection reset after sending (injected)")
        return outcomes

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        self._call("update", len(records), records)
        return [
            self._write(r, r.dest_id) if r.dest_id in self.records else Outcome.failure("not found", "OBJECT_NOT_FOUND")
            for r in records
        ]

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        self._call("delete", len(dest_ids))
        for rid in dest_ids:
            self.records.pop(rid, None)
        return [Outcome.success(rid) for rid in dest_ids]
