"""Progress lines for long runs: at most one every few seconds, and always the last."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_retl.sync.logs import SyncLogger


class Progress:
    """Logs a progress line at most every ``interval`` seconds (and always when forced)."""

    def __init__(self, log: SyncLogger, interval: float, clock: Callable[[], float]):
        self.log, self.interval, self.clock = log, interval, clock
        self.last = clock()

    def __call__(self, message: str, *args: Any, force: bool = False) -> None:
        now = self.clock()
        if force or now - self.last >= self.interval:
            self.last = now
            self.log.info(message, *args)
