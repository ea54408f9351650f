"""The contract between the engine and a destination (a Sink-sized surface).

A destination says what it can do with class attributes and implements the
per-batch calls it supports. Every call returns one ``Outcome`` per input
record, in input order; a call that fails as a whole raises an error from
``sync.errors``. The engine owns batching, planning, bookkeeping and commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from airflow_provider_retl.sync.records import Outcome, Record


@runtime_checkable
class Destination(Protocol):
    """What ``run_sync`` needs from a destination (``DestinationHook`` implements it)."""

    # Read-only to the engine: a plain attribute satisfies these, and so does a hook's property.
    @property
    def max_batch_size(self) -> int:
        """Records per write call (create/update/upsert/delete)."""

    @property
    def lookup_batch_size(self) -> int:
        """Keys per lookup call."""

    @property
    def max_concurrency(self) -> int:
        """Write calls in flight at once."""

    def supports_upsert(self, object: str, match_field: str | None) -> bool:
        """True when ``upsert`` can match records on ``match_field`` for ``object``."""

    def supports_delete(self, object: str) -> bool:
        """True when ``delete`` works for ``object`` (mirror mode needs it)."""

    def needs_lookup(self, object: str) -> bool:
        """False for destinations with no notion of existing records (a webhook)."""

    def default_match_field(self, object: str) -> str | None:
        """The destination field that identifies a record when the user names none."""

    def match_ignores_case(self, object: str, match_field: str | None) -> bool:
        """True when the destination matches ``match_field`` case-insensitively (emails)."""

    def updates_by_match(self, object: str) -> bool:
        """True when ``update`` works by match value and skips missing records (no lookup needed)."""

    def sync_fields(self, object: str, fields: Sequence[str], key_fields: Sequence[str] = ()) -> None:
        """Told once per run, before anything is sent: the fields this sync sends, and those of its key."""

    def match_identities(self, object: str) -> Sequence[str]:
        """Other fields by which the destination finds an existing record on a write (values unique per record)."""

    def match_field_aliases(self, object: str) -> Sequence[str]:
        """Other field names the default match field may have in a query (e.g. ``email``)."""

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

    def supports_events(self, object: str) -> bool:
        """True when ``object`` is an event stream: each row is sent once and never updated."""

    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Send events; ``record.event_id`` is stable across retries (pass it where the API dedupes)."""

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        """For events whose outcome is unknown: True landed, False did not, None cannot tell."""

    def bulk_threshold(self, object: str) -> int | None:
        """Upserts from which ``bulk_upsert`` is cheaper than batches (None: no bulk API)."""

    @property
    def bulk_batch_size(self) -> int:
        """Records per ``bulk_upsert`` call (one bulk job)."""

    def bulk_upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        """Upsert many records in one bulk job (e.g. Salesforce Bulk API 2.0); same outcomes as ``upsert``."""

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (the report shows the difference)."""

    @property
    def retry_count(self) -> int:
        """Retries made so far."""
