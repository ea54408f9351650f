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
hooks of several tasks running in the same worker process share the budget. Tasks on
several workers (or several processes of one worker: every task is a process) share
it only through ``RedisRollingWindowLimiter``, which keeps the same window in Redis;
hooks use it when the connection's extra ``rate_limit_redis_url`` names a server.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["Limiter", "RedisRollingWindowLimiter", "RollingWindowLimiter", "clear_shared_limiters", "shared_limiter"]

log = logging.getLogger(__name__)

#: How long to wait before looking again when every slot is held by a request in flight.
IN_FLIGHT_POLL_SECONDS = 0.01


class Limiter(Protocol):
    """What a hook needs of a rate limiter (both limiters here have it)."""

    limit: int
    window: float
    waited: float

    def acquire(self) -> float: ...
    def release(self) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def tighten(self, limit: int, window: float) -> None: ...


def _check_window(limit: int, window: float) -> None:
    if int(limit) < 1:
        raise ValueError(f"rate limit must be at least 1 request; got {limit!r}")
    if float(window) <= 0:
        raise ValueError(f"rate window must be positive seconds; got {window!r}")


class _Slot:
    """``with limiter:`` holds one slot for the duration of a request."""

    def acquire(self) -> float:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class RollingWindowLimiter(_Slot):
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
        _check_window(limit, window)
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


#: Seconds an acquired slot counts as in flight in Redis when its release never comes (the
#: process died mid-request); then it still counts for ``window`` seconds like a finished one.
IN_FLIGHT_LEASE_SECONDS = 120.0
#: Seconds between warnings while Redis is unreachable and the in-process window is used.
REDIS_WARNING_INTERVAL = 60.0

# The window as two sorted sets per account, scored by Redis' own clock (TIME), so every
# worker agrees on "now" whatever its own clock says. KEYS: done, flight, pause.
# done: released slots, score = when the slot frees (finish + window); flight: slots in use,
# score = lease end. The scripts run atomically, so no two processes take the last slot.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
_ACQUIRE = (
    _NOW
    + """
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return paused * 1000 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return math.max(1, math.ceil((tonumber(first[2]) - now) * 1000000)) end
return tonumber(ARGV[4])
"""
)
_RELEASE = (
    _NOW
    + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 0
"""
)
_PAUSE = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 0
"""
_IN_USE = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') + redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
"""
)


class RedisRollingWindowLimiter(_Slot):
    """``RollingWindowLimiter``'s window kept in Redis: shared by every process that names the same account.

    Same semantics (a slot counts from acquire until ``window`` seconds after its release;
    ``pause`` holds every caller back; ``tighten`` adopts a stricter configuration) and the
    same interface, so N task processes on any number of workers together stay under the
    API's limit. ``key`` names the account (hashed into the Redis key names, which start
    with ``retl:ratelimit:``). Give either ``url`` (``redis://host:6379/0``) or a redis-py
    ``client``. Processes of one account should use the same limit and window.

    A slot whose release never comes (the process died mid-request) is freed ``lease``
    seconds after it was taken. While Redis cannot be reached, each process falls back to
    its own in-process window (logged), so an outage slows nothing down but can cost 429s.
    """

    def __init__(
        self,
        key: str,
        limit: int,
        window: float,
        *,
        url: str | None = None,
        client: Any = None,
        lease: float = IN_FLIGHT_LEASE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_window(limit, window)
        if client is None:
            if not url:
                raise ValueError("RedisRollingWindowLimiter needs a Redis url or client")
            client = _redis_client(url)
        self.limit = int(limit)
        self.window = float(window)
        self.lease = float(lease)
        self._sleep = sleep
        self._client = client
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        # One hash tag: all three keys land in the same slot of a Redis Cluster.
        prefix = f"retl:ratelimit:{{{digest}}}"
        self._keys = [f"{prefix}:done", f"{prefix}:flight", f"{prefix}:pause"]
        self._acquire_script = client.register_script(_ACQUIRE)
        self._release_script = client.register_script(_RELEASE)
        self._pause_script = client.register_script(_PAUSE)
        self._in_use_script = client.register_script(_IN_USE)
        self._lock = threading.Lock()
        # Each thread releases the slot it acquired (None: taken from the in-process fallback).
        self._held = threading.local()
        self._fallback = RollingWindowLimiter(limit, window, sleep=sleep)
        self._warned_at: float | None = None
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit}, window={self.window}, key={self._keys[0]!r})"

    @property
    def keys(self) -> list[str]:
        """The Redis keys of this account's window: done, in flight, pause."""
        return list(self._keys)

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds spent waiting."""
        token = uuid.uuid4().hex
        waited = 0.0
        while True:
            try:
                delay_us = int(self._acquire_script(keys=self._keys, args=self._acquire_args(token)))
            except Exception as exc:  # redis.RedisError: never fail a sync because Redis is away
                if not _is_redis_error(exc):
                    raise
                self._warn(exc)
                waited += self._fallback.acquire()
                token = None  # type: ignore[assignment]
                break
            if delay_us <= 0:
                break
            delay = delay_us / 1e6
            self._sleep(delay)
            waited += delay
        self._stack().append(token)
        if waited:
            with self._lock:
                self.waited += waited
        return waited

    def release(self) -> None:
        """Mark this thread's request as finished; its slot frees up ``window`` seconds from now."""
        stack = self._stack()
        if not stack:
            return
        token = stack.pop()
        if token is None:
            self._fallback.release()
            return
        try:
            self._release_script(keys=self._keys, args=[token, repr(self.window), self._ttl()])
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self._warn(exc)  # the slot stays counted until its lease ends: conservative

    def pause(self, seconds: float) -> None:
        """Hold every caller of every process back for ``seconds`` (e.g. 429 + Retry-After)."""
        self._fallback.pause(seconds)
        milliseconds = int(max(0.0, seconds) * 1000)
        if milliseconds <= 0:
            return
        try:
            self._pause_script(keys=self._keys[2:], args=[milliseconds])
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self._warn(exc)

    def tighten(self, limit: int, window: float) -> None:
        """Adopt a stricter configuration when another hook for the same account asks for one."""
        with self._lock:
            self.limit = min(self.limit, int(limit))
            self.window = max(self.window, float(window))
        self._fallback.tighten(limit, window)

    @property
    def in_use(self) -> int:
        """Slots counted right now across every process (in flight plus finished within the window)."""
        return int(self._in_use_script(keys=self._keys[:2]))

    def reset(self) -> None:
        """Forget the shared window (tests; never while syncs run)."""
        self._client.delete(*self._keys)

    def _acquire_args(self, token: str) -> list[Any]:
        poll_us = int(IN_FLIGHT_POLL_SECONDS * 1e6)
        return [self.limit, token, repr(self.lease), poll_us, self._ttl()]

    def _ttl(self) -> int:
        # The keys vanish once nothing in them can count any more.
        return int(self.window + self.lease) + 60

    def _stack(self) -> list[str | None]:
        stack = getattr(self._held, "tokens", None)
        if stack is None:
            stack = self._held.tokens = []
        return stack

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if self._warned_at is not None and now - self._warned_at < REDIS_WARNING_INTERVAL:
                return
            self._warned_at = now
        log.warning(
            "Redis rate limiter unreachable (%s: %s); limiting within this process only until it answers",
            type(exc).__name__,
            exc,
        )


def _redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        from airflow.sdk.exceptions import AirflowOptionalProviderFeatureException

        raise AirflowOptionalProviderFeatureException(
            "rate_limit_redis_url needs the redis package: pip install 'airflow-provider-retl[redis]'"
        ) from exc
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def _is_redis_error(exc: BaseException) -> bool:
    try:
        import redis
    except ImportError:  # a client object of another library: treat its errors as its own
        return False
    return isinstance(exc, redis.RedisError)


_shared: dict[tuple[str, str | None], Limiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(
    key: str,
    limit: int,
    window: float,
    *,
    redis_url: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Limiter:
    """The process-wide limiter of one destination account (created on first use).

    ``key`` names the account (e.g. base URL + token hash). When hooks for the
    same account disagree on the limit, the stricter one wins: exceeding the
    account's budget costs 429s for every task sharing it. With ``redis_url`` the
    window lives in that Redis (``RedisRollingWindowLimiter``), shared across processes.
    """
    with _shared_lock:
        limiter = _shared.get((key, redis_url))
        if limiter is None:
            if redis_url:
                limiter = RedisRollingWindowLimiter(key, limit, window, url=redis_url, sleep=sleep)
            else:
                limiter = RollingWindowLimiter(limit, window, clock=clock, sleep=sleep)
            _shared[(key, redis_url)] = limiter
        elif (limiter.limit, limiter.window) != (int(limit), float(window)):
            limiter.tighten(limit, window)
        return limiter


def clear_shared_limiters() -> None:
    """Forget every shared limiter (tests)."""
    with _shared_lock:
        _shared.clear()
