"""The logger the engine writes to: any object with %-style ``debug``/``info``/``warning``/``error``."""

from __future__ import annotations

from typing import Any, Protocol


class SyncLogger(Protocol):
    """What the engine calls on its logger: a ``logging.Logger`` or Airflow's task logger (``self.log``)."""

    def debug(self, msg: str, /, *args: Any) -> None: ...

    def info(self, msg: str, /, *args: Any) -> None: ...

    def warning(self, msg: str, /, *args: Any) -> None: ...

    def error(self, msg: str, /, *args: Any) -> None: ...
