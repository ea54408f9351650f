"""Every record's outcome in one run, kept column by column for a changelog.

A run hands ``run_sync(..., outcomes=RecordOutcomes())`` a collector; the engine appends one
entry per record pushed (created, updated, upserted, deleted, event sent) or rejected, with
its key, destination id and, for rejects, the stage, reason, field and code. The values go
into plain lists (one per column), not one object per record: a million-row run appends to
a dozen lists. Without a collector the engine does none of this work.

Failed tries keep what they collected up to the error (the engine commits batch by batch,
so what was pushed before a destination error or a reject-ratio failure is in the lists).
Nothing here imports Airflow: the operator writes the lists to history tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from airflow_provider_retl.sync.records import Reject, SyncReport

__all__ = ["ACKNOWLEDGED", "OK", "REJECTED", "RecordOutcomes"]

#: ``status`` of a record the destination accepted, and of one that was not synced.
OK = "ok"
REJECTED = "rejected"
#: ``operation`` and ``status`` of an acknowledged reject marked as synced without sending.
ACKNOWLEDGED = "acknowledged"


class RecordOutcomes:
    """Collects what happened to each record of a run (pass one to ``run_sync``).

    Read it column-wise (``keys``, ``operations``, ``statuses`` ... all of one length) or
    row-wise with ``rows()``. ``report`` is the run's report as the engine fills it, also
    when the run fails part-way (counts up to the failure).
    """

    COLUMNS = (
        "record_key",
        "operation",
        "status",
        "destination_id",
        "reason",
        "stage",
        "field_name",
        "reason_code",
        "row_hash",
    )

    def __init__(self, *, payload: bool = False) -> None:
        #: The fields sent (or refused by the destination) per record, when asked for (personal data).
        self.payloads: list[dict[str, Any] | None] | None = [] if payload else None
        self.keys: list[str] = []
        self.operations: list[str] = []
        self.statuses: list[str] = []
        self.dest_ids: list[str | None] = []
        self.reasons: list[str | None] = []
        self.stages: list[str | None] = []
        self.fields: list[str | None] = []
        self.codes: list[str | None] = []
        #: Row hash of the content sent or refused (None where unknown, e.g. a delete).
        self.row_hashes: list[int | None] = []
        #: Keys whose acknowledgement this run applied (marked synced without sending).
        self.acknowledged_keys: list[str] = []
        #: The run's report (set by ``run_sync`` when it starts).
        self.report: SyncReport | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def pushed(
        self,
        operation: str,
        keys: Sequence[str],
        dest_ids: Sequence[str | None],
        row_hashes: Sequence[int | None],
    ) -> None:
        """Records the destination accepted in one batch, all with one ``operation``."""
        n = len(keys)
        self.keys.extend(keys)
        self.operations.extend([operation] * n)
        self.statuses.extend([OK] * n)
        self.dest_ids.extend(dest_ids)
        none: list[None] = [None] * n
        self.reasons.extend(none)
        self.stages.extend(none)
        self.fields.extend(none)
        self.codes.extend(none)
        self.row_hashes.extend(row_hashes)
        if self.payloads is not None:
            self.payloads.extend([None] * n)

    def pushed_one(
        self,
        operation: str,
        key: str,
        dest_id: str | None,
        row_hash: int | None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """One accepted record (where operations differ record by record, e.g. upsert vs create)."""
        self.keys.append(key)
        self.operations.append(operation)
        self.statuses.append(OK)
        self.dest_ids.append(dest_id)
        self.reasons.append(None)
        self.stages.append(None)
        self.fields.append(None)
        self.codes.append(None)
        self.row_hashes.append(row_hash)
        if self.payloads is not None:
            self.payloads.append(payload)

    def rejected(self, reject: Reject, payload: dict[str, Any] | None = None) -> None:
        """A record that was not synced (called for every reject, like ``SyncReport.on_reject``)."""
        self.keys.append(reject.key)
        self.operations.append("reject")
        self.statuses.append(REJECTED)
        self.dest_ids.append(None)
        self.reasons.append(reject.reason)
        self.stages.append(reject.stage)
        self.fields.append(reject.field)
        self.codes.append(reject.code)
        self.row_hashes.append(reject.row_hash)
        if self.payloads is not None:
            self.payloads.append(payload if payload is not None else reject.payload)

    def acknowledged(self, keys: Sequence[str], dest_ids: Sequence[str | None], row_hashes: Sequence[int]) -> None:
        """Rejected rows a user acknowledged, marked as synced as they are (nothing sent)."""
        self.pushed(ACKNOWLEDGED, keys, dest_ids, row_hashes)
        self.statuses[len(self.statuses) - len(keys) :] = [ACKNOWLEDGED] * len(keys)
        self.acknowledged_keys.extend(keys)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """One tuple per record, in ``COLUMNS`` order."""
        return zip(
            self.keys,
            self.operations,
            self.statuses,
            self.dest_ids,
            self.reasons,
            self.stages,
            self.fields,
            self.codes,
            self.row_hashes,
            strict=True,
        )

    def counts(self) -> dict[str, int]:
        """Records per operation (``reject`` included)."""
        out: dict[str, int] = {}
        for operation in self.operations:
            out[operation] = out.get(operation, 0) + 1
        return out
