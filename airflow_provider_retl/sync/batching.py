"""One API-sized batch per write call, and a refused batch split until the bad records are alone.

Every destination call the engine makes goes through ``isolate``: when the API refuses
a whole batch for something one record carries (a 400/409/413/422 the hook marks as
``record_level``), the batch is halved and each half sent again, until every bad record
is alone and gets its own reject with the API's reason; good records go through. One
bad record in 100 costs about 2*log2(100) extra calls. This lives here, once, so no hook
copies it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from airflow_provider_retl.sync.errors import BatchRejectedError
from airflow_provider_retl.sync.records import Outcome

T = TypeVar("T")


def isolate(
    items: Sequence[T], call: Callable[[Sequence[T]], list[Outcome]], on_split: Callable[[int, str], None] | None = None
) -> list[Outcome]:
    """``call(items)``; a record-level refusal of several items is bisected, of one item becomes its outcome."""
    try:
        return call(items)
    except BatchRejectedError as err:
        if not err.record_level:
            raise
        if len(items) == 1:
            lone = err.outcome if isinstance(err.outcome, Outcome) else None
            return [lone or Outcome.failure(reason=err.reason or str(err), code=err.code)]
        if on_split is not None:
            on_split(len(items), err.reason or str(err))
        middle = len(items) // 2
        return isolate(items[:middle], call, on_split) + isolate(items[middle:], call, on_split)


def batches(count: int, size: int) -> list[range]:
    """Index ranges of consecutive batches of at most ``size`` of ``count`` items."""
    size = max(1, int(size))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
