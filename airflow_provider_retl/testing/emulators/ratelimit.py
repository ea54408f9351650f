"""A rolling-window rate limiter that remembers every decision, for assertions.

HubSpot's ``TEN_SECONDLY_ROLLING`` policy allows N requests in any 10-second
window per app/account. This limiter keeps the time of each accepted request
per key; a request is refused when ``limit`` requests were already accepted in
the last ``window`` seconds, and ``retry_after`` says when the oldest of them
leaves the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    """The answer for one request: allowed or not, what is left, and when to retry."""

    allowed: bool
    limit: int | None
    remaining: int | None
    retry_after: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (HTTP allows no fractions), at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass(frozen=True)
class RateEvent:
    """One rate-limit decision: ``at`` is ``time.monotonic()``."""

    at: float
    key: str
    allowed: bool


class RollingWindowLimiter:
    """``limit`` requests per ``window`` seconds per key; ``limit=None`` disables limiting."""

    def __init__(
        self,
        limit: int | None = 190,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_events: int = 200_000,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("rate limit must be at least 1 (or None to disable)")
        if window <= 0:
            raise ValueError("rate window must be positive")
        self.limit = limit
        self.window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._accepted: dict[str, deque[float]] = defaultdict(deque)
        # Bounded so a long benchmark cannot grow it without limit.
        self._events: deque[RateEvent] = deque(maxlen=max_events)

    def acquire(self, key: str) -> RateDecision:
        """Count one request for ``key`` if the window has room; record the decision either way."""
        with self._lock:
            now = self._clock()
            if self.limit is None:
                self._events.append(RateEvent(now, key, True))
                return RateDecision(True, None, None)
            accepted = self._accepted[key]
            while accepted and accepted[0] <= now - self.window:
                accepted.popleft()
            if len(accepted) >= self.limit:
                self._events.append(RateEvent(now, key, False))
                return RateDecision(False, self.limit, 0, accepted[0] + self.window - now)
            accepted.append(now)
            self._events.append(RateEvent(now, key, True))
            return RateDecision(True, self.limit, self.limit - len(accepted))

    @property
    def events(self) -> list[RateEvent]:
        """The last ``max_events`` decisions, in order (accepted and refused)."""
        with self._lock:
            return list(self._events)

    def max_in_window(self, key: str | None = None, window: float | None = None) -> int:
        """The most accepted requests seen in any rolling window (to assert it never exceeded the limit)."""
        span = self.window if window is None else window
        times = sorted(e.at for e in self.events if e.allowed and (key is None or e.key == key))
        best, start = 0, 0
        for end, moment in enumerate(times):
            while times[start] <= moment - span:
                start += 1
            best = max(best, end - start + 1)
        return best

    def reset(self) -> None:
        """Forget accepted requests and the event log."""
        with self._lock:
            self._accepted.clear()
            self._events.clear()


class RollingWindowRateLimited:
    """Mixin for an emulator whose account limit is one ``RollingWindowLimiter`` in ``self.limiter``."""

    limiter: RollingWindowLimiter

    @property
    def rate_events(self) -> list[RateEvent]:
        """Every rate-limit decision (accepted and 429), with ``time.monotonic()`` times."""
        return self.limiter.events
