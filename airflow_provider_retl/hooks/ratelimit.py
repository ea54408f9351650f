"""Client-side rate limiting: at most N requests in any rolling window of W seconds.

HubSpot (like most SaaS APIs) counts requests in a *rolling* window: "100 per
10 seconds" means no 10-second interval may hold more than 100 requests. A
token bucket refilled at N/W allows a full bucket plus a refill inside one
window (up to 2N), so it is the wrong model here.

A slot is counted from the moment it is acquired until ``window`` seconds after
its request *finished*: the server saw the request somewhere between those two
instants, so the next request that reuses the slot reaches the server at least
``window`` seconds after the old one, whatever the latency was.

One limiter exists per destination account and process (``shared_limiter``), so
hooks of several tasks running in the same worker process share the budget.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["RollingWindowLimiter", "shared_limiter", "clear_shared_limiters"]

#: How long to wait before looking again when every slot is held by a request in flight.
IN_FLIGHT_POLL_SECONDS = 0.01


class RollingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds; safe to share between threads.

    Use ``with limiter: send()`` (or ``acquire()`` / ``release()``) around each request.
    ``clock`` and ``sleep`` are injectable so tests run in virtual time.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if int(limit) < 1:
            raise ValueError(f"rate limit must be at least 1 request; got {limit!r}")
        if float(window) <= 0:
            raise ValueError(f"rate window must be positive seconds; got {window!r}")
        self.limit = int(limit)
        self.window = float(window)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Finish times of recent requests, ascending (appended under the lock from a monotonic clock).
        self._finished: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._paused_until = 0.0
        #: Total seconds callers spent waiting for a slot (for reports and tests).
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit}, window={self.window})"

    def __enter__(self) -> RollingWindowLimiter:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds spent waiting."""
        waited = 0.0
        while True:
            delay = self._try_acquire()
            if delay <= 0:
                if waited:
                    with self._lock:
                        self.waited += waited
                return waited
            self._sleep(delay)
            waited += delay

    def release(self) -> None:
        """Mark the request as finished; its slot frees up ``window`` seconds from now."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._finished.append(self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said so, e.g. 429 + Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def tighten(self, limit: int, window: float) -> None:
        """Adopt a stricter configuration when another hook for the same account asks for one."""
        with self._lock:
            self.limit = min(self.limit, int(limit))
            self.window = max(self.window, float(window))

    @property
    def in_use(self) -> int:
        """Slots counted right now (in flight plus finished within the window)."""
        with self._lock:
            self._expire(self._clock())
            return self._in_flight + len(self._finished)

    def _try_acquire(self) -> float:
        """Take a slot and return 0, or return how long to wait before trying again."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            self._expire(now)
            if self._in_flight + len(self._finished) < self.limit:
                self._in_flight += 1
                return 0.0
            if self._finished:
                return max(self._finished[0] + self.window - now, 1e-6)
            return IN_FLIGHT_POLL_SECONDS

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        finished = self._finished
        while finished and finished[0] <= cutoff:
            finished.popleft()


_shared: dict[str, RollingWindowLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(
    key: str,
    limit: int,
    window: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RollingWindowLimiter:
    """The process-wide limiter of one destination account (created on first use).

    ``key`` names the account (e.g. base URL + token hash). When hooks for the
    same account disagree on the limit, the stricter one wins: exceeding the
    account's budget costs 429s for every task sharing it.
    """
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = RollingWindowLimiter(limit, window, clock=clock, sleep=sleep)
        elif (limiter.limit, limiter.window) != (int(limit), float(window)):
            limiter.tighten(limit, window)
        return limiter


def clear_shared_limiters() -> None:
    """Forget every shared limiter (tests)."""
    with _shared_lock:
        _shared.clear()
