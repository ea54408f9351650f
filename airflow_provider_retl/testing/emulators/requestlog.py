"""A thread-safe log of the API requests an emulator answered (or failed on purpose)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedRequest:
    """One API request: ``status`` is 0 when the connection was dropped without a response."""

    method: str
    path: str
    status: int
    at: float  # time.time() when the request arrived
    duration: float
    fault: str | None = None

    @property
    def route(self) -> str:
        """``"METHOD /path"``, the key used by the per-route counts."""
        return f"{self.method} {self.path}"


class RequestLog:
    """Counts per route and per status, plus the last ``keep`` requests in order."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[LoggedRequest] = deque(maxlen=keep)
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._by_route_status: Counter[tuple[str, int]] = Counter()
        self._total = 0

    def add(self, method: str, path: str, status: int, started: float, fault: str | None = None) -> None:
        """Record a finished request (``started`` is its ``time.time()`` on arrival)."""
        entry = LoggedRequest(method, path, status, started, time.time() - started, fault)
        with self._lock:
            self._recent.append(entry)
            self._by_route[entry.route] += 1
            self._by_status[status] += 1
            self._by_route_status[(entry.route, status)] += 1
            self._total += 1

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """Requests so far, optionally for one route and/or one status.

        ``route`` is ``"METHOD /path"`` or just ``"/path"`` (any method), e.g.
        ``"POST /crm/v3/objects/contacts/batch/upsert"``.
        """
        with self._lock:
            if route is None and status is None:
                return self._total
            return sum(
                n
                for (key, code), n in self._by_route_status.items()
                if (route is None or route == key or route == key.split(" ", 1)[1])
                and (status is None or status == code)
            )

    def entries(self) -> list[LoggedRequest]:
        """The last requests kept, oldest first."""
        with self._lock:
            return list(self._recent)

    def snapshot(self, last: int = 100) -> dict[str, Any]:
        """JSON-ready summary for ``GET /_emulator/requests``."""
        with self._lock:
            recent = list(self._recent)[-last:] if last > 0 else []
            return {
                "total": self._total,
                "by_route": dict(self._by_route),
                "by_status": {str(k): v for k, v in self._by_status.items()},
                "recent": [asdict(e) for e in recent],
            }

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._recent.clear()
            self._by_route.clear()
            self._by_status.clear()
            self._by_route_status.clear()
            self._total = 0
