"""The contract between the engine and a destination (a Sink-sized surface).

A destination answers two questions once per run, ``capabilities(object)`` (what it can do
with the object: the planner takes the answer whole) and ``limits`` (records per call,
keys per lookup, calls in flight), and implements the per-batch calls it supports. Every
call returns one ``Outcome`` per input record, in input order; a call that fails as a whole
raises an error from ``sync.errors``. The engine owns batching (``sync.batching``),
planning, bookkeeping and commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from airflow_provider_retl.sync.records import Outcome, Record

#: Fields every API we know compares case-insensitively.
EMAIL_FIELDS = frozenset({"email", "email_address"})


def _never(field: str | None) -> bool:
    return False


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do with one object, asked once per run and handed to the planner.

    ``can_upsert(field)`` may cost the destination a request (HubSpot's unique properties,
    Salesforce's describe), so it is a function asked only when something is to be written.
    """

    #: Existing records must be found (looked up) before writing; False for a webhook or /users/track.
    lookup: bool = True
    delete: bool = False
    #: An event stream: each row is sent once and never updated.
    events: bool = False
    #: The destination field that identifies a record when the user names none.
    default_match: str | None = None
    #: Other names the default match field may have in a query (Mailchimp: ``email``).
    match_aliases: tuple[str, ...] = ()
    #: Fields besides the match field by which a write finds an existing record (Zendesk users: email).
    identities: tuple[str, ...] = ()
    #: ``update`` works by match value and skips missing records (no destination id needed).
    updates_by_match: bool = False
    #: Upserts from which ``bulk_upsert`` is used (None: no bulk API).
    bulk_threshold: int | None = None
    #: Fields the destination compares case-insensitively (lower case).
    case_insensitive: frozenset[str] = EMAIL_FIELDS
    upsert: Callable[[str | None], bool] = field(default=_never, compare=False, repr=False)

    def can_upsert(self, match_field: str | None) -> bool:
        """True when a native upsert can match records on ``match_field``."""
        return self.upsert(match_field)

    def ignores_case(self, match_field: str | None) -> bool:
        return match_field is not None and match_field.lower() in self.case_insensitive


@dataclass(frozen=True)
class SendLimits:
    """How much one call may carry and how many may run at once (the connection's settings, within the API's)."""

    batch: int = 100
    lookup_batch: int = 100
    concurrency: int = 1
    bulk_batch: int = 10_000


@runtime_checkable
class Destination(Protocol):
    """What ``run_sync`` needs from a destination (``DestinationHook`` implements it)."""

    def capabilities(self, object: str) -> Capabilities:
        """What the destination can do with ``object`` (an unknown object raises ``ConfigurationError``)."""

    @property
    def limits(self) -> SendLimits:
        """Records per write call, keys per lookup call, write calls in flight, records per bulk job."""

    def sync_fields(self, object: str, fields: Sequence[str], key_fields: Sequence[str] = ()) -> None:
        """Told once per run, before anything is sent: the fields this sync sends, and those of its key."""

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Local checks before sending: a list of (field, reason); empty when valid."""

    def upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        """Create or update by ``match_field``; idempotent."""

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        """Find existing records: {match value: destination id} for those that exist."""

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Create new records; not idempotent (raise OutcomeUnknownError if unsure)."""

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Update records by their ``dest_id``; idempotent."""

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """Delete or archive by destination id; idempotent (already gone is ok)."""

    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Send events; ``record.event_id`` is stable across retries (pass it where the API dedupes)."""

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        """For events whose outcome is unknown: True landed, False did not, None cannot tell."""

    def bulk_upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        """Upsert many records in one bulk job (e.g. Salesforce Bulk API 2.0); same outcomes as ``upsert``."""

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (the report shows the difference)."""

    @property
    def retry_count(self) -> int:
        """Retries made so far."""
