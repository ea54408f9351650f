"""``run_sync``: read the query to its end, diff it against the checkpoint, push the difference.

The run has three phases, and the order is what makes it safe:

1. **Read** every chunk (``diff.SnapshotDiff``): map, hash and diff each one, keep only changed
   rows. Nothing is sent while reading, so a cancelled or truncated extract sends nothing,
   commits nothing and never mirror-deletes keys merely because they were not read.
2. **Plan** (``plan``): reject NULL/empty and duplicated keys, find removed keys, and choose
   the cheapest call per row.
3. **Push** (``push.Pusher``) in batches with bounded concurrency, committing each acknowledged
   batch to the checkpoint journal, so a killed try loses at most the batches in flight and a
   retry re-plans from there. The base is rewritten only when the run succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from airflow_provider_retl.sync.checkpoint import CheckpointStore, holding_lease
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.diff import DEST_ID, KIND, SnapshotDiff
from airflow_provider_retl.sync.errors import ConfigurationError, EmptySourceError, RejectRatioExceeded
from airflow_provider_retl.sync.logs import SyncLogger
from airflow_provider_retl.sync.plan import (
    SKIP_NOT_MIRROR,
    SKIP_UPDATE_MISSING,
    Action,
    Plan,
    after_lookup,
    plan_changes,
    plan_events,
)
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.push import Pusher
from airflow_provider_retl.sync.records import PENDING, Mode, Reject, SyncReport

__all__ = ["SyncConfig", "run_sync"]


@holding_lease  # one run of a sync at a time: the store's lease, held for the whole run
def run_sync(
    chunks: Iterable[pd.DataFrame],
    destination: Destination,
    store: CheckpointStore,
    config: SyncConfig,
    *,
    log: SyncLogger | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_reject: Callable[[Reject], None] | None = None,
) -> SyncReport:
    """Sync a query result (an iterable of DataFrame chunks) into ``destination``; return the report.

    Raises ``RejectRatioExceeded`` (after committing every accepted record) when more rows
    were rejected than ``config.max_reject_ratio`` allows, and re-raises destination errors
    after committing the batches that completed, so a retry resumes from there.
    ``on_reject`` sees every rejected row (the report keeps the first ones and counts all).
    """
    log = log or logging.getLogger("airflow_provider_retl.sync")
    started = clock()
    requests_at_start, retries_at_start = destination.request_count, destination.retry_count
    mode: Mode = config.mode  # type: ignore[assignment]
    obj = config.object
    report = SyncReport(
        sync_id=config.sync_id,
        object=obj,
        mode=mode.value,
        dry_run=config.dry_run,
        full_resync=config.full_resync,
        rebaseline=config.rebaseline,
        partition=None if config.partition is None else "{}/{}".format(*config.partition),
        checkpoint=store.description,
        on_reject=on_reject,
    )
    progress = Progress(log, config.progress_interval, clock)

    def finish() -> SyncReport:
        report.requests = destination.request_count - requests_at_start
        report.retries = destination.retry_count - retries_at_start
        return _finish(report, config, log, clock() - started)

    # 1. Read the whole result against the checkpoint.
    make_diff = getattr(store, "make_diff", None)
    if make_diff is not None:
        # The store diffs where the data lives (checkpoint="warehouse"): ``chunks`` is never read.
        diff = make_diff(destination, config, report, progress)
        diff.load_checkpoint()
        diff.read_in_warehouse()
    else:
        diff = SnapshotDiff(destination, store, config, report, progress)
        diff.load_checkpoint()
        for chunk in chunks:
            diff.read_chunk(chunk)
    pending = diff.finish_read()
    progress(
        "read %d rows to the end: %d new, %d changed, %d removed, %d unchanged",
        report.rows_read,
        report.planned["new"],
        report.planned["changed"],
        report.planned["removed"],
        report.unchanged,
        force=True,
    )
    if (
        mode is Mode.MIRROR
        and report.planned["removed"]
        and not config.allow_empty_source
        and len(pending) == 0
        and report.unchanged == 0
        and not getattr(diff, "usable_elsewhere", 0)
    ):
        # An empty (or all-invalid) result is far more often a broken upstream table than a
        # real "everything left": refuse to delete every synced record. Nothing was sent.
        # A partition whose own slice is empty while other partitions have rows is not that.
        raise EmptySourceError(
            f"the query returned {report.rows_read} rows and no usable key, so mirror mode would delete "
            f"all {report.planned['removed']} synced records; nothing was sent. If the source is really "
            f"empty, run with allow_empty_source=True"
        )
    if config.rebaseline:
        diff.rebaseline()
        return finish()

    # 2. Plan the cheapest calls.
    assert diff.base is not None
    kinds = pending[KIND].to_numpy(dtype=object)
    ids = pending[DEST_ID].to_numpy(dtype=object)
    events = destination.supports_events(obj)
    if events:
        if mode not in (Mode.UPSERT, Mode.INSERT):
            raise ConfigurationError(f"{obj!r} is an event stream: events are only ever inserted; use mode='insert'")
        plan = plan_events(kinds, ids == PENDING)
    else:
        plan = plan_changes(
            kinds,
            np.array([isinstance(i, str) and i != "" for i in ids], dtype=bool),
            mode,
            # Asking may cost a request (Salesforce describes the object): only when something is pending.
            can_upsert=len(pending) > 0 and destination.supports_upsert(obj, diff.match_field),
            needs_lookup=destination.needs_lookup(obj),
            updates_by_match=destination.updates_by_match(obj),
        )
    report.plan = plan.counts()
    for reason, rows in plan.skipped.items():
        if len(rows):
            report.skip(reason, len(rows))
    if mode is not Mode.MIRROR and report.planned["removed"]:
        report.skip(SKIP_NOT_MIRROR, report.planned["removed"])
    if mode is Mode.MIRROR and report.planned["removed"] and not destination.supports_delete(obj):
        raise ConfigurationError(f"mode='mirror' needs deletes, which this destination does not support for {obj!r}")

    pusher = Pusher(
        destination, store, config, report, diff.base, diff.match_field, log=log, clock=clock, progress=progress
    )
    if config.dry_run:
        # Validate what would be sent, so a dry run also reports the rejects; send nothing.
        for action in (Action.UPSERT, Action.UPDATE, Action.CREATE, Action.LOOKUP, Action.SEND_EVENT):
            for rows in pusher.batches(plan.rows(action), 1000):
                for reject in pusher.wire_batch(pending, rows, action)[1]:
                    report.add_reject(reject)
        return finish()

    # 3. Push, committing batch by batch.
    total = int(sum(len(plan.rows(a)) for a in Action))
    jobs = _jobs(plan, pusher, pending, destination, obj, mode, events)
    pusher.run_pool(jobs, pending, total)
    if mode is Mode.MIRROR:
        pusher.delete_removed(*diff.removed())
    pusher.log_progress(total, total, force=True)
    if pusher.entries or diff.base_differs_from_store():
        pusher.finalize()
    # else: nothing changed and the stored base is already this one (a no-op run rewrites nothing).
    return finish()


def _jobs(
    plan: Plan,
    pusher: Pusher,
    pending: pd.DataFrame,
    destination: Destination,
    obj: str,
    mode: Mode,
    events: bool,
) -> list[tuple[Action, np.ndarray]]:
    """The write batches of a plan; lookups and event reconciliation happen here, before writing."""
    size = pusher.write_batch_size()
    if events:
        send = plan.rows(Action.SEND_EVENT)
        if len(plan.rows(Action.RECONCILE)):
            send = np.concatenate([send, pusher.reconcile_events(pending, plan.rows(Action.RECONCILE))])
        return [(Action.SEND_EVENT, b) for b in pusher.batches(send, size)]
    upserts = plan.rows(Action.UPSERT)
    threshold = destination.bulk_threshold(obj)
    if threshold is not None and len(upserts) >= threshold:
        # Large syncs: one bulk job per bulk_batch_size records instead of thousands of calls.
        jobs = [(Action.BULK_UPSERT, b) for b in pusher.batches(upserts, max(1, int(destination.bulk_batch_size)))]
    else:
        jobs = [(Action.UPSERT, b) for b in pusher.batches(upserts, size)]
    jobs += [(a, b) for a in (Action.UPDATE, Action.CREATE) for b in pusher.batches(plan.rows(a), size)]
    lookup_rows = plan.rows(Action.LOOKUP)
    if len(lookup_rows):
        found, missing = pusher.lookup_rows(pending, lookup_rows)
        on_found, on_missing = after_lookup(mode)
        if on_found is None:
            pusher.remember_existing(pending, found)
        else:
            jobs += [(on_found, b) for b in pusher.batches(found, size)]
        if on_missing is None:
            if len(missing):
                pusher.report.skip(SKIP_UPDATE_MISSING, len(missing))
        else:
            jobs += [(on_missing, b) for b in pusher.batches(missing, size)]
    return jobs


def _finish(report: SyncReport, config: SyncConfig, log: SyncLogger, seconds: float) -> SyncReport:
    report.seconds = round(seconds, 3)
    report.rows_per_second = round(report.rows_read / report.seconds, 1) if report.seconds > 0 else 0.0
    log.info("%s", report.summary())
    ratio = config.max_reject_ratio
    # A partition's rejects are out of the rows it owned, not out of the whole result.
    rows = report.rows_read if report.rows_in_partition is None else report.rows_in_partition
    if ratio is not None and rows and report.rejected / rows > ratio:
        raise RejectRatioExceeded(
            f"{report.rejected} of {rows} rows rejected ({report.rejected / rows:.1%}), "
            f"more than max_reject_ratio={ratio:.1%}; accepted rows were synced and checkpointed",
            report,
        )
    return report
