"""Switchable, reproducible fault injection shared by every emulator.

A ``Faults`` object is consulted once per API request (never for the
``/_emulator`` admin routes) and answers with a ``FaultDecision``: which fault,
if any, hits this request. Random faults come from a seeded RNG so a failing
run can be replayed; ``fail_next`` queues faults deterministically for tests.

Fault kinds and what the client sees:

- ``error``: a 500/502/503 with a JSON body; nothing is applied.
- ``reset``: the TCP connection is reset with no HTTP response; nothing is applied.
- ``timeout``: the request is read and applied, but its answer comes ``slow_seconds``
  late: a client whose read timeout is shorter has given up by then, yet the write
  landed, like a real API that completed the request server-side. ``slow_apply_after``
  says when, within the stall, the write lands: 0 (default) at once, ``slow_seconds``
  at the very end (after the client gave up, racing its retry).
- ``lost_response``: the request IS applied, then the connection is reset with no
  response ("the write landed but the response was lost").
- ``malformed``: the request is applied and answered 200 with a truncated,
  invalid JSON body.
- ``rate_limit``: a 429 with ``Retry-After`` (``burst_429`` queues N of them).

``latency`` is not a fault kind: it is added to every API request.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any

FAULT_KINDS: tuple[str, ...] = ("error", "reset", "timeout", "lost_response", "malformed", "rate_limit")

# Fields a caller may set through ``Faults.update`` / ``POST /_emulator/faults``.
_SETTABLE: tuple[str, ...] = (
    "error_rate",
    "error_statuses",
    "reset_rate",
    "latency",
    "timeout_rate",
    "slow_seconds",
    "slow_apply_after",
    "lost_response_rate",
    "malformed_rate",
    "burst_429",
    "retry_after",
)


# Of those, the ones that shape a fault rather than switch one on; ``clear`` keeps them.
_SETTINGS: tuple[str, ...] = ("error_statuses", "slow_seconds", "slow_apply_after", "retry_after")


@dataclass(frozen=True)
class FaultDecision:
    """The fault chosen for one request: ``kind`` is None when the request runs normally."""

    kind: str | None = None
    latency: float = 0.0
    status: int | None = None  # for "error": which 5xx
    delay: float = 0.0  # for "timeout": how long the answer is withheld
    apply_after: float = 0.0  # for "timeout": when, within ``delay``, the request is applied
    retry_after: float = 0.0  # for "rate_limit"


@dataclass
class Faults:
    """Fault switches for an emulator; thread-safe, changeable while the server runs.

    Rates are fractions of API requests in [0, 1]; they are checked in the order
    reset, error, timeout, lost_response, malformed, so at most one fault hits a
    request. ``burst_429`` and ``fail_next`` queues take precedence over rates.
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    reset_rate: float = 0.0
    latency: float = 0.0
    timeout_rate: float = 0.0
    slow_seconds: float = 30.0
    slow_apply_after: float = 0.0
    lost_response_rate: float = 0.0
    malformed_rate: float = 0.0
    burst_429: int = 0
    retry_after: float = 1.0
    seed: int | None = 0
    injected: Counter[str] = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._queue: deque[str | None] = deque()
        self.error_statuses = tuple(int(s) for s in self.error_statuses)
        self._check()

    def fail_next(self, n: int = 1, kind: str = "error", *, after: int = 0) -> None:
        """Make ``n`` API requests fail with ``kind`` (one of FAULT_KINDS), once ``after`` more have passed.

        ``after`` is how a test fails a sync part-way: the first batches land, then the faults hit.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._queue.extend([None] * int(after) + [kind] * int(n))

    def update(self, **changes: Any) -> None:
        """Set fault fields by name (unknown names raise ``ValueError``); ``seed`` re-seeds."""
        unknown = set(changes) - set(_SETTABLE) - {"seed", "fail_next"}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in changes.items():
                if name == "fail_next":
                    continue
                if name == "error_statuses":
                    value = tuple(int(s) for s in value)
                elif name == "burst_429":
                    value = int(value)
                elif name == "seed":
                    self._rng = random.Random(value)
                elif value is not None:
                    value = float(value)
                setattr(self, name, value)
            self._check()
        queued = changes.get("fail_next")
        if queued:
            # {"fail_next": {"n": 2, "kind": "reset"}} from the admin route.
            self.fail_next(int(queued.get("n", 1)), str(queued.get("kind", "error")), after=int(queued.get("after", 0)))

    def clear(self) -> None:
        """Switch every fault off and forget queued ones (latency included)."""
        with self._lock:
            for f in fields(self):
                if f.name in _SETTABLE and f.name not in _SETTINGS:
                    setattr(self, f.name, 0 if f.name == "burst_429" else 0.0)
            self._queue.clear()

    def to_dict(self) -> dict[str, Any]:
        """The current switches, queued faults and counts of faults injected so far."""
        with self._lock:
            data: dict[str, Any] = {name: getattr(self, name) for name in _SETTABLE}
            data["error_statuses"] = list(self.error_statuses)
            data["seed"] = self.seed
            data["queued"] = list(self._queue)
            data["injected"] = dict(self.injected)
            return data

    def decide(self) -> FaultDecision:
        """Pick the fault for one API request and count it."""
        with self._lock:
            kind = self._pick()
            if kind:
                self.injected[kind] += 1
            return FaultDecision(
                kind=kind,
                latency=self.latency,
                status=self._rng.choice(self.error_statuses) if kind == "error" else None,
                delay=self.slow_seconds if kind == "timeout" else 0.0,
                apply_after=min(self.slow_apply_after, self.slow_seconds) if kind == "timeout" else 0.0,
                retry_after=self.retry_after if kind == "rate_limit" else 0.0,
            )

    def _pick(self) -> str | None:
        if self._queue:
            return self._queue.popleft()  # None: a request let through before queued faults
        if self.burst_429 > 0:
            self.burst_429 -= 1
            return "rate_limit"
        # One draw per request keeps the sequence reproducible whatever the rates are.
        draw = self._rng.random()
        threshold = 0.0
        for kind, rate in (
            ("reset", self.reset_rate),
            ("error", self.error_rate),
            ("timeout", self.timeout_rate),
            ("lost_response", self.lost_response_rate),
            ("malformed", self.malformed_rate),
        ):
            threshold += rate
            if draw < threshold:
                return kind
        return None

    def _check(self) -> None:
        rates = (self.error_rate, self.reset_rate, self.timeout_rate, self.lost_response_rate, self.malformed_rate)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be within [0, 1] and add up to at most 1")
        if self.latency < 0 or self.slow_seconds < 0 or self.slow_apply_after < 0 or self.burst_429 < 0:
            raise ValueError("latency, slow_seconds, slow_apply_after and burst_429 must not be negative")
