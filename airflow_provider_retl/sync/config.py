"""SyncConfig: everything that defines one sync, validated before anything is read or sent."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.records import Mode

#: Share of rows that may be rejected before the run fails (after committing what succeeded).
DEFAULT_MAX_REJECT_RATIO = 0.5
#: A run that would remove AND create more than this share of the checkpointed keys (and at
#: least ``IDENTITY_CHANGE_MIN_KEYS`` of them) looks like a replaced key, not a change of data.
IDENTITY_CHANGE_RATIO = 0.5
IDENTITY_CHANGE_MIN_KEYS = 10


@dataclass
class SyncConfig:
    """Everything that defines one sync; validated on construction (nothing is sent before)."""

    sync_id: str
    object: str
    primary_key: str | Sequence[str]
    mode: Mode | str = Mode.UPSERT
    mapping: Mapping[str, str] | None = None
    match_on: str | None = None
    batch_size: int | None = None
    dry_run: bool = False
    full_resync: bool = False
    rebaseline: bool = False
    #: Fail the run when more than this share of rows is rejected (None: the default, 0.5; 1.0 never fails).
    max_reject_ratio: float | None = None
    #: Identifies the destination account (e.g. connection id + host): part of the checkpoint fingerprint.
    destination_identity: str = ""
    progress_interval: float = 5.0
    #: Seconds between checkpoint journal writes while pushing (0: one write per finished batch).
    commit_interval: float = 0.5
    #: Mirror mode: allow a result with no usable row to delete every synced record.
    allow_empty_source: bool = False
    #: ``(i, n)``: this run owns the keys whose key hash % n == i (also accepts ``"i/n"``).
    partition: tuple[int, int] | None = None
    #: Let a run that would remove and re-create most keys at once (a retyped or renamed key
    #: column) go ahead: mirror deletes the old records no new key is matched onto. Event streams are never stopped.
    allow_identity_change: bool = False
    #: Events: let a run whose checkpoint was reset (destination, key, match field or hash algorithm
    #: changed, or an unreadable checkpoint discarded) send again every event it no longer knows as sent.
    resend_events: bool = False
    #: Guardrails, checked after planning and before anything is sent (not for event streams):
    #: mirror may delete at most this share of the synced set (None: no share limit) ...
    max_delete_ratio: float | None = 0.5
    #: ... and at most this many records (None: no count limit).
    max_deletes: int | None = None
    #: The source must still hold this share of the synced set's keys (a broken upstream model or
    #: a filter gone wrong returns far fewer rows); None turns the check off.
    min_source_ratio: float | None = 0.5
    #: ... and the rows rejected before sending (NULL/duplicate keys, local validation of the rows
    #: to send) must be at most this share of the rows read (None: off, the default, so a mostly
    #: rejected run still sends its valid rows and then fails on ``max_reject_ratio``).
    max_reject_ratio_before_send: float | None = None
    #: Skip the guardrails for this run only (the operator sets it from the DAG run's conf).
    override_guardrails: bool = False
    primary_keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.mode = Mode.parse(self.mode)
        keys = [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigurationError("primary_key must be a column name or a non-empty list of column names")
        self.primary_keys = keys
        if self.mapping is not None:
            if not isinstance(self.mapping, Mapping) or not self.mapping:
                raise ConfigurationError("mapping must be a non-empty dict of destination field -> source column")
            self.mapping = dict(self.mapping)
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigurationError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if self.max_reject_ratio is None:
            self.max_reject_ratio = DEFAULT_MAX_REJECT_RATIO
        if isinstance(self.max_reject_ratio, bool) or not isinstance(self.max_reject_ratio, (int, float)):
            raise ConfigurationError(
                f"max_reject_ratio must be a number between 0 and 1; got {self.max_reject_ratio!r}"
            )
        if not 0 <= self.max_reject_ratio <= 1:
            raise ConfigurationError(f"max_reject_ratio must be between 0 and 1; got {self.max_reject_ratio!r}")
        for name in ("max_delete_ratio", "min_source_ratio", "max_reject_ratio_before_send"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
            ):
                raise ConfigurationError(f"{name} must be a number between 0 and 1 or None; got {value!r}")
        if self.max_deletes is not None and (
            isinstance(self.max_deletes, bool) or not isinstance(self.max_deletes, int) or self.max_deletes < 0
        ):
            raise ConfigurationError(f"max_deletes must be a whole number >= 0 or None; got {self.max_deletes!r}")
        if self.rebaseline and (self.full_resync or self.dry_run):
            raise ConfigurationError("rebaseline cannot be combined with full_resync or dry_run")
        if not self.object:
            raise ConfigurationError("object (the destination object, e.g. 'contacts') is required")
        self.partition = parse_partition(self.partition)

    def target_fingerprint(self, match_field: str | None, *, fold_keys: bool = False) -> str:
        """What makes destination ids meaningful: destination account, object, key, match field.

        Case-folded keys hash differently, so folding is part of it (only when on, which keeps
        the fingerprints of checkpoints written before folding existed).
        """
        identity: dict[str, Any] = {
            "destination": self.destination_identity,
            "object": self.object,
            "primary_key": self.primary_keys,
            "match_on": match_field,
        }
        if fold_keys:
            identity["keys"] = "trimmed-casefolded"
        if self.partition is not None:
            # A checkpoint of another slice (n changed, or two partitions sharing a store) must
            # never be diffed against this one: its keys would all look "removed".
            identity["partition"] = list(self.partition)
        return digest(identity)


def parse_partition(value: Any) -> tuple[int, int] | None:
    """``"2/4"``, ``(2, 4)`` or ``[2, 4]`` -> ``(2, 4)``; None stays None. Raises ConfigurationError."""
    if value is None:
        return None
    parts: Any = value
    if isinstance(value, str):
        parts = value.split("/")
    try:
        if isinstance(parts, (str, bytes)) or len(parts) != 2:
            raise ValueError
        index, count = (_as_int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigurationError(f"partition must be 'i/n' or (i, n) with whole numbers; got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigurationError(f"partition {index}/{count} is out of range: need n >= 1 and 0 <= i < n")
    return (index, count)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError  # noqa: TRY004 - caught by the caller, which names the parameter
    if isinstance(value, str):
        return int(value.strip())
    return operator.index(value)  # ints and numpy ints; never floats


def partition_suffix(partition: tuple[int, int] | None) -> str:
    """What a partition adds to its checkpoint's name: ``".p2of4"`` (empty when unpartitioned)."""
    return "" if partition is None else f".p{partition[0]}of{partition[1]}"


def digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
