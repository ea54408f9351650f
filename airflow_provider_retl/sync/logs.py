"""The logger the engine writes to: any object with %-style ``debug``/``info``/``warning``/``error``."""

from __future__ import annotations

from typing import Any, Protocol

from airflow_provider_retl.sync.redaction import REDACTOR


class SyncLogger(Protocol):
    """What the engine calls on its logger: a ``logging.Logger`` or Airflow's task logger (``self.log``)."""

    def debug(self, msg: str, /, *args: Any) -> None: ...

    def info(self, msg: str, /, *args: Any) -> None: ...

    def warning(self, msg: str, /, *args: Any) -> None: ...

    def error(self, msg: str, /, *args: Any) -> None: ...


class RedactingLogger:
    """A ``SyncLogger`` that formats each line and scrubs every registered secret before it logs.

    Airflow masks task logs with its own masker, but only whole secrets it was told about, and
    a line formatted from an exception or a destination's answer may carry a cut one; so the
    engine's lines pass through the process-wide :data:`~airflow_provider_retl.sync.redaction.REDACTOR`.
    """

    def __init__(self, log: SyncLogger) -> None:
        self.wrapped = log

    def _emit(self, method: Any, msg: str, args: tuple[Any, ...]) -> None:
        if REDACTOR.empty:
            method(msg, *args)
            return
        try:
            text = msg % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join([str(msg), *(str(a) for a in args)])
        # Passed as an argument, never as the format: a redacted line may contain '%'.
        method("%s", REDACTOR.redact(text))

    def debug(self, msg: str, /, *args: Any) -> None:
        self._emit(self.wrapped.debug, msg, args)

    def info(self, msg: str, /, *args: Any) -> None:
        self._emit(self.wrapped.info, msg, args)

    def warning(self, msg: str, /, *args: Any) -> None:
        self._emit(self.wrapped.warning, msg, args)

    def error(self, msg: str, /, *args: Any) -> None:
        self._emit(self.wrapped.error, msg, args)


def redacting(log: SyncLogger) -> SyncLogger:
    """``log`` wrapped in a :class:`RedactingLogger` (once)."""
    return log if isinstance(log, RedactingLogger) else RedactingLogger(log)
