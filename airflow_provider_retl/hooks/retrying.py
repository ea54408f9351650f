"""When a failed HTTP call may be sent again, and how long to wait first.

Two questions, kept apart:

* *Classification* (``error_from_exception``): did the request surely not reach
  the server (connection refused, connect timeout), or may it have been applied
  (read timeout, connection reset after sending)? For an idempotent call both
  are simply retryable; for a non-idempotent one (a create that is not an
  upsert) the second becomes ``OutcomeUnknownError``, which is never retried
  blindly: the engine reconciles the batch by lookup first. This is urllib3's
  ``Retry(read=False)`` rule: never resend where data may have made it to the server.
* *Policy* (``RetryPolicy``): composed from tenacity parts; retry on
  ``RetryableDestinationError`` only, wait what ``Retry-After`` says or else
  exponentially with jitter, stop after a number of attempts or before a deadline.
"""

from __future__ import annotations

import email.utils
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import requests
import tenacity
import urllib3.exceptions

from airflow_provider_retl.sync.errors import (
    DestinationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
    exception_chain,
)

__all__ = [
    "RetryPolicy",
    "RetryStats",
    "error_from_exception",
    "parse_retry_after",
    "request_surely_not_sent",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How a hook retries: data, like HttpHook's ``retry_args``, with an injectable ``sleep``.

    ``max_attempts`` counts the first try (``max_retries + 1``). ``deadline`` bounds
    the whole call including waits; a wait that would cross it is not started.
    A ``Retry-After`` longer than ``max_retry_after`` (a daily quota, say) is not
    waited for inside the task: the error surfaces and Airflow's own retry takes over.
    """

    max_attempts: int = 6
    deadline: float | None = 300.0
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, RetryableDestinationError) or isinstance(exc, OutcomeUnknownError):
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after

    def wait_for(self, exc: BaseException) -> float | None:
        """The server's wish (Retry-After), if it expressed one."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return None
        return min(max(0.0, float(retry_after)), self.max_retry_after)

    def retrying(
        self,
        stats: RetryStats | None = None,
        *,
        on_retry: Callable[[BaseException, float, int], None] | None = None,
        enabled: bool = True,
    ) -> tenacity.Retrying:
        """A ``tenacity.Retrying`` for one call: ``for attempt in policy.retrying(): with attempt: ...``."""
        stop: Any = tenacity.stop_after_attempt(self.max_attempts if enabled else 1)
        if self.deadline is not None:
            stop = stop | _StopBeforeDeadline(self.deadline)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.upcoming_sleep
            if stats is not None:
                stats.add_retry(wait)
            if on_retry is not None and exc is not None:
                on_retry(exc, wait, state.attempt_number)

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(self.should_retry),
            wait=_WaitRetryAfter(
                self,
                tenacity.wait_exponential(multiplier=self.initial_wait, max=self.max_wait)
                + tenacity.wait_random(0, self.jitter),
            ),
            stop=stop,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class _StopBeforeDeadline(tenacity.stop.stop_base):
    """Do not start a wait that would end past the deadline.

    Time spent is the larger of the wall clock and the sum of waits, so an
    injected (virtual) ``sleep`` is held to the deadline as well.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        spent = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return spent + (retry_state.upcoming_sleep or 0.0) >= self.deadline


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Wait what the server asked for (Retry-After), else fall back (exponential with jitter)."""

    def __init__(self, policy: RetryPolicy, fallback: tenacity.wait.wait_base) -> None:
        self.policy = policy
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = self.policy.wait_for(exc) if exc is not None else None
        return self.fallback(retry_state) if wait is None else wait


class RetryStats:
    """Requests sent and retries made by one hook (thread-safe counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"RetryStats(requests={self.requests}, retries={self.retries}, waited={self.waited:.2f})"

    def add_request(self) -> None:
        with self._lock:
            self.requests += 1

    def add_retry(self, wait: float = 0.0) -> None:
        with self._lock:
            self.retries += 1
            self.waited += wait


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/garbled."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def request_surely_not_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (nothing was sent).

    Connection refused, DNS failure and connect timeouts happen before a byte
    of the request is written. A read timeout, a reset or a remote disconnect
    after sending are not that: the server may have applied the call.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    for cause in exception_chain(exc):
        # NewConnectionError (refused, DNS) subclasses ConnectTimeoutError in urllib3.
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError):
            return True
    return False


def _certificate_problem(exc: BaseException) -> bool:
    return any(isinstance(c, ssl.SSLCertVerificationError) for c in exception_chain(exc))


def error_from_exception(
    exc: requests.RequestException,
    *,
    idempotent: bool,
    what: str,
    redact: Callable[[str], str] = lambda s: s,
) -> DestinationError:
    """Translate a transport error from requests into the engine's error types.

    ``what`` names the call (e.g. "HubSpot POST /crm/v3/objects/contacts/batch/create");
    messages never include headers, so the token cannot leak through them.
    """
    request = getattr(exc, "request", None)
    kind = type(exc).__name__
    if _certificate_problem(exc):
        return FatalDestinationError(
            redact(f"{what}: TLS certificate verification failed ({kind}); check 'verify' in the connection"),
            request=request,
        )
    if request_surely_not_sent(exc):
        return RetryableDestinationError(
            redact(f"{what}: could not connect ({kind}); nothing was sent"), request=request
        )
    if idempotent:
        return RetryableDestinationError(redact(f"{what}: {kind} (safe to resend)"), request=request)
    return OutcomeUnknownError(
        redact(f"{what}: {kind} after the request was sent; it may or may not have been applied"),
        request=request,
        # A read timeout: the server was still working on it, and may finish after we look.
        may_land_later=isinstance(exc, requests.exceptions.ReadTimeout),
    )
