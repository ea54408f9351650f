"""Error types the engine decides on (by type, never by message text).

Destinations raise these; the operator alone maps them to Airflow exceptions
(retryable -> AirflowException, fatal -> AirflowFailException).
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """Base class of every error a sync raises on purpose."""


class FatalSyncError(SyncError):
    """A retry cannot fix this: bad configuration, auth refused, unknown object."""


class ConfigurationError(FatalSyncError, ValueError):
    """The sync's parameters are inconsistent (raised before anything is sent)."""


class RetryableSyncError(SyncError):
    """Transient: the same call may succeed later (429, 5xx, network)."""


class DestinationError(SyncError):
    """An HTTP call failed; keeps the response (and request) like requests' exceptions do."""

    def __init__(self, message: str, *, status: int | None = None, response: Any = None, request: Any = None):
        super().__init__(message)
        self.status = status
        self.response = response
        self.request = request


class RetryableDestinationError(DestinationError, RetryableSyncError):
    """429, 5xx, connection problems: retried under the hook's policy."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class FatalDestinationError(DestinationError, FatalSyncError):
    """401/403 and other refusals that no retry fixes."""


class OutcomeUnknownError(DestinationError, RetryableSyncError):
    """A non-idempotent call may have been applied, but its response was lost.

    The engine reconciles the batch (lookup by key) before sending it again,
    so a lost create response never becomes a duplicate record.

    ``may_land_later``: the server had the whole request and had not answered when the
    client gave up (a read timeout), so it may still apply it *after* a lookup found
    nothing; such records are not created again in the same try.
    """

    def __init__(self, message: str, *, may_land_later: bool = False, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.may_land_later = may_land_later


class BatchRejectedError(DestinationError):
    """The destination refused the whole batch (a 4xx), nothing of it applied.

    ``record_level``: the refusal may be caused by one input (400, 409, 413, 422 unless the
    hook says otherwise), so the engine splits the batch to isolate it (``sync.batching``);
    ``reason`` and ``code`` are the destination's own words, the reject of a lone record.
    """

    RECORD_LEVEL_STATUSES = frozenset({400, 409, 413, 422})

    def __init__(
        self,
        message: str,
        *,
        record_level: bool | None = None,
        reason: str | None = None,
        code: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(message, **kwargs)
        self.record_level = self.status in self.RECORD_LEVEL_STATUSES if record_level is None else record_level
        self.reason = reason
        self.code = code or (str(self.status) if self.status else None)
        #: The hook's whole outcome for a lone record (a 409 may name the existing record's id).
        self.outcome: Any = None


class GuardrailTripped(FatalSyncError):
    """A run planned something a guardrail forbids (mass deletes, a shrunken source, too many rejects);
    nothing was sent. ``report`` is the run's report as far as it got (rows read, planned, rejects)."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


class EmptySourceError(FatalSyncError):
    """A mirror sync read no usable row and would delete every synced record (see allow_empty_source)."""


class CheckpointError(SyncError):
    """A checkpoint could not be read or does not belong to this sync."""


class RejectRatioExceeded(FatalSyncError):
    """More rows were rejected than ``max_reject_ratio`` allows; the report is attached."""

    def __init__(self, message: str, report: Any):
        super().__init__(message)
        self.report = report


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps, breadth first, each once.

    Follows what drivers and HTTP libraries use to wrap: exception arguments, ``__cause__``,
    ``__context__``, urllib3's ``reason``, SQLAlchemy's ``orig`` and the members of exception groups.
    Error classification (what a retry can fix) and secret scrubbing both need the whole chain.
    """
    seen: list[BaseException] = []
    queue: list[Any] = [exc]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        queue.extend(a for a in item.args if isinstance(a, BaseException))
        queue.extend([item.__cause__, item.__context__, getattr(item, "reason", None), getattr(item, "orig", None)])
        queue.extend(getattr(item, "exceptions", ()) or ())
    return seen
