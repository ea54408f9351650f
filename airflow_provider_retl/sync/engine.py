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

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import (
    HASH_ALGORITHM,
    Checkpoint,
    CheckpointStore,
    JournalEntry,
    holding_lease,
)
from airflow_provider_retl.sync.config import IDENTITY_CHANGE_MIN_KEYS, IDENTITY_CHANGE_RATIO, SyncConfig
from airflow_provider_retl.sync.destination import Capabilities, Destination
from airflow_provider_retl.sync.diff import (
    DEST_ID,
    KEY,
    KEY_HASH,
    KIND,
    ROW_HASH,
    EventResendError,
    ReplacedIdentityError,
    SnapshotDiff,
)
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    EmptySourceError,
    GuardrailTripped,
    RejectRatioExceeded,
)
from airflow_provider_retl.sync.legacy import LEGACY_CHECKPOINT_NOTE
from airflow_provider_retl.sync.logs import SyncLogger, redacting
from airflow_provider_retl.sync.outcomes import RecordOutcomes
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
from airflow_provider_retl.sync.records import PENDING, ChangeKind, Mode, Reject, SyncReport

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
    siblings: Callable[[], Iterable[Checkpoint]] | None = None,
    outcomes: RecordOutcomes | None = None,
    acknowledged: Mapping[str, int] | None = None,
) -> SyncReport:
    """Sync a query result (an iterable of DataFrame chunks) into ``destination``; return the report.

    Raises ``RejectRatioExceeded`` (after committing every accepted record) when more rows
    were rejected than ``config.max_reject_ratio`` allows, and re-raises destination errors
    after committing the batches that completed, so a retry resumes from there.
    ``on_reject`` sees every rejected row (the report keeps examples and counts all).
    ``siblings`` yields the checkpoints of this sync under its other partition layouts
    (unpartitioned, or another partition count): an events sync counts what they sent as
    sent, so re-partitioning never sends an event twice; on a layout's first run, any other sync
    takes the ids they hold for its live keys and deletes (mirror) the keys of its partition
    that left the source meanwhile.
    ``outcomes`` collects every record's outcome (pushed or rejected) for a changelog, also
    when the run fails part-way; ``outcomes.report`` is this run's report from the start.
    ``acknowledged`` maps record keys to the row hash a user acknowledged their reject with:
    such a row, while its content still has that hash, is marked synced as it is (checkpointed
    with that hash, nothing sent), so it is no longer retried; once it changes it is sent again.
    """
    log = redacting(log or logging.getLogger("airflow_provider_retl.sync"))  # secrets never reach a log line
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
        on_reject=_both(on_reject, outcomes.rejected) if outcomes is not None else on_reject,
    )
    if outcomes is not None:
        outcomes.report = report
    progress = Progress(log, config.progress_interval, clock)

    def finish() -> SyncReport:
        report.requests = destination.request_count - requests_at_start
        report.retries = destination.retry_count - retries_at_start
        return _finish(report, config, log, clock() - started)

    def finish_early() -> SyncReport:
        """The report of a run a guardrail stopped: what it read and planned, nothing pushed."""
        report.requests = destination.request_count - requests_at_start
        report.retries = destination.retry_count - retries_at_start
        report.seconds = round(clock() - started, 3)
        log.info("%s", report.summary())
        return report

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
    caps = diff.caps
    events = caps.events
    # Before the empty-source guard: keys a sibling layout knows count as removed there too.
    removed_elsewhere: tuple[np.ndarray, np.ndarray] | None = None
    read_key_hashes = getattr(diff, "read_key_hashes", None)
    if (
        not events
        and siblings is not None
        and read_key_hashes is not None
        and not config.full_resync
        and not _layout_established(diff)
    ):
        removed_elsewhere = _adopt_known_elsewhere(pending, report, siblings, config, diff, read_key_hashes())
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
    sent_elsewhere = JournalEntry()
    if events and siblings is not None and not config.resend_events:
        sent_elsewhere = _adopt_sent_elsewhere(pending, report, siblings)
    acknowledged_entry = None
    if acknowledged and not config.rebaseline and len(pending):
        pending, acknowledged_entry = _take_acknowledged(pending, report, acknowledged, outcomes)
    if not config.rebaseline and not config.dry_run:
        # Guards that stop a run before it sends anything.
        if events:
            _check_events_reset(report, config, pending)
        else:
            # Not for events: an events query over a moving window replaces its keys every run.
            _check_identity_change(report, config)
            try:
                _check_guardrails(report, config, mode)
            except GuardrailTripped as exc:
                exc.report = finish_early()
                raise
    if config.rebaseline:
        diff.rebaseline()
        return finish()

    # 2. Plan the cheapest calls.
    assert diff.base is not None
    kinds = pending[KIND].to_numpy(dtype=object)
    ids = pending[DEST_ID].to_numpy(dtype=object)
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
            can_upsert=len(pending) > 0 and caps.can_upsert(diff.match_field),
            needs_lookup=caps.lookup,
            updates_by_match=caps.updates_by_match,
        )
    report.plan = plan.counts()
    for reason, rows in plan.skipped.items():
        if len(rows):
            report.skip(reason, len(rows))
    if mode is not Mode.MIRROR and report.planned["removed"]:
        report.skip(SKIP_NOT_MIRROR, report.planned["removed"])
    if mode is Mode.MIRROR and report.planned["removed"] and not caps.delete:
        raise ConfigurationError(
            f"mode='mirror' needs deletes, which this destination does not support for {obj!r} (or which its "
            "connection does not allow, e.g. Braze's allow_delete)"
        )

    pusher = Pusher(
        destination,
        store,
        config,
        report,
        diff.base,
        diff.match_field,
        log=log,
        clock=clock,
        progress=progress,
        caps=caps,
        outcomes=outcomes,
    )
    if not config.dry_run:
        try:
            _check_reject_share(report, config, plan, pusher, pending)
        except GuardrailTripped as exc:
            exc.report = finish_early()
            raise
    if acknowledged_entry is not None and not config.dry_run:
        pusher.commit(acknowledged_entry)
    if len(sent_elsewhere) and not config.dry_run:
        pusher.commit(sent_elsewhere)  # known here from now on, whatever the layout of the next run
    if config.dry_run:
        # Validate what would be sent, so a dry run also reports the rejects; send nothing.
        for action in (Action.UPSERT, Action.UPDATE, Action.CREATE, Action.LOOKUP, Action.SEND_EVENT):
            for rows in pusher.batches(plan.rows(action), 1000):
                for reject in pusher.wire_batch(pending, rows, action)[1]:
                    report.add_reject(reject)
        return finish()

    # 3. Push, committing batch by batch.
    total = int(sum(len(plan.rows(a)) for a in Action))
    rematch = not events and diff.match_field is not None and caps.lookup
    if not events:
        # Which live key holds which destination id: match collisions and mirror deletes check it.
        pusher.holders = diff.live_holders()
        if rematch and not caps.updates_by_match:
            pusher.refused_updates = []
    # A match field that is the key itself cannot be shared by two live keys (they would be duplicates).
    key_is_match = (
        len(diff.key_columns) == 1
        and diff.match_field is not None
        and (diff.field_sources or {}).get(diff.match_field) == diff.key_columns[0]
    )
    jobs = _jobs(plan, pusher, pending, caps, mode, events, check_shared=not key_is_match)
    pusher.run_pool(jobs, pending, total)
    pusher.rematch_refused_updates()
    removed_keys, removed_ids = diff.removed()
    if removed_elsewhere is not None and len(removed_elsewhere[0]):
        removed_keys = np.concatenate([removed_keys, removed_elsewhere[0]])
        removed_ids = np.concatenate([removed_ids, removed_elsewhere[1]])
    if len(removed_keys) and not events:
        live_ids = {i for i in pending[DEST_ID].to_numpy(dtype=object) if isinstance(i, str)}
        pusher.settle_removed(removed_keys, removed_ids, delete=mode is Mode.MIRROR, live_ids=live_ids)
    pusher.log_progress(total, total, force=True)
    if pusher.entries or diff.base_differs_from_store():
        pusher.finalize()
    # else: nothing changed and the stored base is already this one (a no-op run rewrites nothing).
    return finish()


#: ``SyncReport.skipped`` reason of acknowledged rejects marked as synced.
SKIP_ACKNOWLEDGED = "acknowledged reject, unchanged since: marked as synced without sending"


def _both(first: Callable[[Reject], None] | None, second: Callable[[Reject], None]) -> Callable[[Reject], None]:
    if first is None:
        return second

    def call(reject: Reject) -> None:
        first(reject)
        second(reject)

    return call


def _take_acknowledged(
    pending: pd.DataFrame,
    report: SyncReport,
    acknowledged: Mapping[str, int],
    outcomes: RecordOutcomes | None,
) -> tuple[pd.DataFrame, JournalEntry | None]:
    """Pending rows whose reject a user acknowledged, unchanged since: out of the plan, into the checkpoint.

    They are checkpointed with their row hash (and the destination id the checkpoint had, if
    any), so the next diff sees them unchanged and a later change of the row sends it again.
    """
    texts = [fp.display_key(k) for k in pending[KEY].to_numpy(dtype=object)]
    row_hashes = pending[ROW_HASH].to_numpy(dtype=np.uint64)
    hit = np.array([acknowledged.get(t) == int(h) for t, h in zip(texts, row_hashes.tolist(), strict=True)], dtype=bool)
    if not hit.any():
        return pending, None
    rows = np.flatnonzero(hit)
    kinds = pending[KIND].to_numpy(dtype=object)[rows]
    for kind in (ChangeKind.NEW.value, ChangeKind.CHANGED.value):
        report.planned[kind] -= int((kinds == kind).sum())
    report.unchanged += len(rows)
    report.skip(SKIP_ACKNOWLEDGED, len(rows))
    ids = [i if isinstance(i, str) and i not in ("", PENDING) else None for i in pending[DEST_ID].to_numpy()[rows]]
    entry = JournalEntry.puts(pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows], row_hashes[rows], ids)
    if outcomes is not None:
        outcomes.acknowledged([texts[r] for r in rows.tolist()], ids, row_hashes[rows].tolist())
    return pending[~hit].reset_index(drop=True), entry


def _jobs(
    plan: Plan,
    pusher: Pusher,
    pending: pd.DataFrame,
    caps: Capabilities,
    mode: Mode,
    events: bool,
    *,
    check_shared: bool = True,
) -> list[tuple[Action, np.ndarray]]:
    """The write batches of a plan; lookups and event reconciliation happen here, before writing."""
    size = pusher.write_batch_size()
    if events:
        send = plan.rows(Action.SEND_EVENT)
        if len(plan.rows(Action.RECONCILE)):
            send = np.concatenate([send, pusher.reconcile_events(pending, plan.rows(Action.RECONCILE))])
        return [(Action.SEND_EVENT, b) for b in pusher.batches(send, size)]
    # Two live keys must never end up on one destination record (a silent merge, and mirror
    # would later delete the record of the one that "left"): reject both sides before sending.
    # Also on the other fields the destination identifies records by (Zendesk users: an email
    # matches an existing user whatever the external_id), for every row written this run.
    writes = np.concatenate([plan.rows(a) for a in (Action.UPSERT, Action.LOOKUP, Action.UPDATE, Action.CREATE)])
    kept = writes
    for field in caps.identities:
        if field != pusher.match_field:
            kept = pusher.reject_shared_match_values(pending, kept, field)
    refused = np.setdiff1d(writes, kept)

    def rows(action: Action) -> np.ndarray:
        return np.setdiff1d(plan.rows(action), refused) if len(refused) else plan.rows(action)

    matched = np.concatenate([rows(Action.UPSERT), rows(Action.LOOKUP)])
    if check_shared and caps.lookup:
        matched = pusher.reject_shared_match_values(pending, matched)
    upserts = np.intersect1d(rows(Action.UPSERT), matched)
    updates = pusher.reject_held_ids(pending, rows(Action.UPDATE), found=False)
    threshold = caps.bulk_threshold
    if threshold is not None and len(upserts) >= threshold:
        # Large syncs: one bulk job per bulk_batch_size records instead of thousands of calls.
        jobs = [(Action.BULK_UPSERT, b) for b in pusher.batches(upserts, max(1, pusher.limits.bulk_batch))]
    else:
        jobs = [(Action.UPSERT, b) for b in pusher.batches(upserts, size)]
    jobs += [(Action.UPDATE, b) for b in pusher.batches(updates, size)]
    jobs += [(Action.CREATE, b) for b in pusher.batches(rows(Action.CREATE), size)]
    lookup_rows = np.intersect1d(rows(Action.LOOKUP), matched)
    if len(lookup_rows):
        found, missing = pusher.lookup_rows(pending, lookup_rows)
        found = pusher.reject_held_ids(pending, found, found=True)
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


def _adopt_sent_elsewhere(
    pending: pd.DataFrame, report: SyncReport, siblings: Callable[[], Iterable[Checkpoint]]
) -> JournalEntry:
    """New event keys that another partition layout of this sync already sent (or has in doubt).

    A key's partition is its hash modulo the partition count, so after re-partitioning an
    event sent by one layout arrives as "new" in another's checkpoint. Such rows become
    "changed" (never re-sent; in-doubt ones are reconciled), and the returned entry records
    them in this layout's checkpoint.
    """
    new = np.flatnonzero(pending[KIND].to_numpy(dtype=object) == ChangeKind.NEW.value)
    if not len(new):
        return JournalEntry()
    key_hashes = pending[KEY_HASH].to_numpy(dtype=np.uint64)
    wanted = pd.Index(key_hashes[new])
    adopted: dict[int, tuple[int, Any]] = {}  # pending row -> (row hash, id)
    for checkpoint in siblings():
        if checkpoint.hash_algorithm != HASH_ALGORITHM or not len(checkpoint):
            continue
        positions = pd.Index(checkpoint.key_hashes).get_indexer(wanted)
        for row, position in zip(new[positions >= 0].tolist(), positions[positions >= 0].tolist(), strict=True):
            dest_id = checkpoint.dest_ids[position]
            # A sent event wins over an in-doubt mark of another layout.
            if row not in adopted or adopted[row][1] == PENDING:
                adopted[row] = (int(checkpoint.row_hashes[position]), dest_id)
    if not adopted:
        return JournalEntry()
    rows = np.fromiter(adopted, dtype=np.int64, count=len(adopted))
    ids = np.array([adopted[r][1] for r in rows.tolist()], dtype=object)
    kinds = pending[KIND].to_numpy(dtype=object).copy()
    kinds[rows] = ChangeKind.CHANGED.value
    pending[KIND] = kinds
    dest_ids = pending[DEST_ID].to_numpy(dtype=object).copy()
    dest_ids[rows] = ids
    pending[DEST_ID] = dest_ids
    report.planned["new"] -= len(rows)
    report.planned["changed"] += len(rows)
    # In-doubt marks are carried over as they are (the row hash they were sent with), so the
    # reconciliation sees whether the row changed since.
    return JournalEntry.puts(key_hashes[rows], np.array([adopted[r][0] for r in rows.tolist()], dtype=np.uint64), ids)


def _layout_established(diff: Any) -> bool:
    """This layout's own checkpoint is trusted and complete: its ids and keys are the whole truth.

    Siblings are consulted only before that (its first run, or a try resuming one): once a
    layout ran, other layouts' checkpoints are stale (their keys this layout deleted would be
    deleted again, their ids of those records adopted by a revived key).
    """
    loaded, base = diff.loaded, diff.base
    return (
        loaded is not None
        and base is not None
        and loaded.hash_algorithm == HASH_ALGORITHM
        and loaded.target_fingerprint == base.target_fingerprint
        and loaded.resumed_entries == 0
    )


#: Partition counts whose layouts may be siblings (the operator probes up to 32).
SIBLING_LAYOUTS_MAX = 64


def _sibling_targets(config: SyncConfig, match_field: str | None, fold_keys: bool) -> set[str]:
    """Target fingerprints of this sync under every partition layout (another layout's ids mean the same records)."""
    layouts: list[tuple[int, int] | None] = [None]
    layouts += [(i, n) for n in range(1, SIBLING_LAYOUTS_MAX + 1) for i in range(n)]
    return {
        dataclasses.replace(config, partition=layout).target_fingerprint(match_field, fold_keys=fold_keys)
        for layout in layouts
    }


def _adopt_known_elsewhere(
    pending: pd.DataFrame,
    report: SyncReport,
    siblings: Callable[[], Iterable[Checkpoint]],
    config: SyncConfig,
    diff: SnapshotDiff,
    read_key_hashes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Records another partition layout of this sync knows, for keys of this run's partition.

    A partition's checkpoint starts empty after re-partitioning, so it would neither know
    the ids of its live keys (lookups, and creates of records that exist) nor the keys that
    left the source meanwhile (mirror would never delete them). New live keys a sibling holds
    an id for become "changed" with that id (updated by id); sibling keys of this partition
    that this run did not read and its own checkpoint does not know are returned as
    (key hashes, ids), to be settled like this run's own removed keys (holders protected).
    Only siblings of the same destination, object, key and match field count.
    """
    empty = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=object))
    targets = _sibling_targets(config, diff.match_field, diff.fold_keys)
    known_ids: dict[int, Any] = {}
    for checkpoint in siblings():
        if checkpoint.hash_algorithm != HASH_ALGORITHM or not len(checkpoint):
            continue
        if checkpoint.target_fingerprint not in targets:
            continue
        for key_hash, dest_id in zip(checkpoint.key_hashes.tolist(), checkpoint.dest_ids.tolist(), strict=True):
            # A real id wins over another layout's missing or in-doubt one.
            if (isinstance(dest_id, str) and dest_id not in ("", PENDING)) or key_hash not in known_ids:
                known_ids[key_hash] = dest_id
    if not known_ids:
        return empty
    sibling_keys = np.fromiter(known_ids, dtype=np.uint64, count=len(known_ids))
    partition = config.partition
    if partition is not None:
        sibling_keys = sibling_keys[sibling_keys % np.uint64(partition[1]) == np.uint64(partition[0])]
    # Live keys: a new one a sibling has an id for takes it (no lookup, no create).
    kinds = pending[KIND].to_numpy(dtype=object).copy()
    new = np.flatnonzero(kinds == ChangeKind.NEW.value)
    key_hashes = pending[KEY_HASH].to_numpy(dtype=np.uint64)
    ids = pending[DEST_ID].to_numpy(dtype=object).copy()
    adopted = [
        row
        for row in new.tolist()
        if isinstance(known_ids.get(int(key_hashes[row])), str) and known_ids[int(key_hashes[row])] not in ("", PENDING)
    ]
    if adopted:
        rows = np.array(adopted, dtype=np.int64)
        ids[rows] = np.array([known_ids[int(key_hashes[r])] for r in adopted], dtype=object)
        kinds[rows] = ChangeKind.CHANGED.value
        pending[DEST_ID] = ids
        pending[KIND] = kinds
        report.planned["new"] -= len(rows)
        report.planned["changed"] += len(rows)
    # Keys that left: in this partition, not read this run, unknown to this layout's own checkpoint.
    own = diff.base.key_hashes if diff.base is not None else np.empty(0, dtype=np.uint64)
    gone = sibling_keys[~np.isin(sibling_keys, read_key_hashes) & ~np.isin(sibling_keys, own)]
    if not len(gone):
        return empty
    report.planned["removed"] += len(gone)
    return gone, np.array([known_ids[int(k)] for k in gone.tolist()], dtype=object)


def _check_identity_change(report: SyncReport, config: SyncConfig) -> None:
    """Most checkpointed keys removed and as many new ones: the key was replaced, not the data.

    A retyped key column, a renamed or re-generated key, or a changed key expression would
    otherwise make mirror delete every record and re-create them all (and, without lookups,
    duplicate them). Stop before anything is sent.
    """
    if config.allow_identity_change:
        return
    removed, new = report.planned["removed"], report.planned["new"]
    checkpointed = removed + report.planned["changed"] + report.unchanged
    if checkpointed < IDENTITY_CHANGE_MIN_KEYS or removed < IDENTITY_CHANGE_MIN_KEYS:
        return
    if removed > IDENTITY_CHANGE_RATIO * checkpointed and new > IDENTITY_CHANGE_RATIO * checkpointed:
        raise ReplacedIdentityError(
            f"this run would remove {removed} of the {checkpointed} checkpointed keys and add {new} new keys at once: "
            f"that looks like a replaced identity (the primary key column retyped, renamed or computed differently), "
            f"not a change of data, so nothing was sent. If the source keys really changed, run once with "
            f"allow_identity_change=True (mirror then deletes the old records that no new key is matched onto), or with rebaseline=True to adopt the current result as synced without sending"
        )


#: Below these sizes the guardrails stay quiet: a share of a handful of records says nothing.
GUARDRAIL_MIN_DELETES = 10
GUARDRAIL_MIN_SYNCED_FOR_SOURCE_DROP = 100

#: How to override a guardrail for one run, said in every message.
OVERRIDE_ONCE = (
    'To let this one run go ahead, trigger the DAG with the run conf {{"retl_override_guardrails": ["{sync_id}"]}} '
    "(or true for every sync of the run), or set override_guardrails=True on the task for one run"
)


def _check_guardrails(report: SyncReport, config: SyncConfig, mode: Mode) -> None:
    """Stop before sending when the plan looks like a broken source rather than a change of data."""
    if config.override_guardrails:
        return
    removed = report.planned["removed"]
    synced = removed + report.planned["changed"] + report.unchanged  # the checkpointed keys
    live_synced = report.planned["changed"] + report.unchanged
    override = OVERRIDE_ONCE.format(sync_id=config.sync_id)
    # allow_identity_change already says "delete the old keys' records" for a replaced key.
    if mode is Mode.MIRROR and removed and not config.allow_identity_change:
        too_many = config.max_deletes is not None and removed > config.max_deletes
        too_large = (
            config.max_delete_ratio is not None
            and removed >= GUARDRAIL_MIN_DELETES
            and removed > config.max_delete_ratio * synced
        )
        if too_many or too_large:
            limit = (
                f"max_deletes={config.max_deletes}"
                if too_many
                else f"max_delete_ratio={config.max_delete_ratio:g} of the {synced} synced records"
            )
            raise GuardrailTripped(
                f"guardrail: mirror would delete {removed} of {synced} synced records ({removed / synced:.0%}), "
                f"above {limit}; nothing was sent. {override}, or raise the limit"
            )
    if (
        config.min_source_ratio is not None
        and synced >= GUARDRAIL_MIN_SYNCED_FOR_SOURCE_DROP
        and live_synced + report.planned["new"] < config.min_source_ratio * synced
    ):
        now = live_synced + report.planned["new"]
        raise GuardrailTripped(
            f"guardrail: the source returned {now} usable keys where {synced} were synced before "
            f"({now / synced:.0%}, below min_source_ratio={config.min_source_ratio:g}): that looks like a broken "
            f"upstream model or a filter gone wrong; nothing was sent. {override}, or lower min_source_ratio"
        )


#: Planned calls whose rows the pre-send reject check validates (lookups become updates or creates).
_SENT_ACTIONS = (Action.UPSERT, Action.UPDATE, Action.CREATE, Action.LOOKUP, Action.SEND_EVENT, Action.RECONCILE)
#: Rows validated per step of the pre-send reject check: it stops within a step of where the
#: share can no longer be passed (the pusher still converts 10k-row blocks, once).
_CHECK_STEP = 1_000


def _check_reject_share(
    report: SyncReport, config: SyncConfig, plan: Plan, pusher: Pusher, pending: pd.DataFrame
) -> None:
    """Guardrail: stop before sending when the rows rejected already pass ``max_reject_ratio_before_send``.

    Known before anything is sent: the source's rejects (NULL/empty and duplicated keys) and
    the local checks of the rows that would be sent (values the wire cannot carry, the
    destination's rules). Those checks run here, once: rejected rows leave the plan, and the
    rows that pass are not checked again when their batch is built. Checking stops as soon as
    the share can no longer be passed, so a run that sends few rows (most incremental runs)
    checks none here and its batches check them as before. The share after sending
    (``_finish``) still counts what the destination rejects.
    """
    # Off by default: the team's rule is that a mostly rejected run commits what succeeded, then
    # fails (``max_reject_ratio`` in ``_finish``); stopping before sending is a per-sync choice.
    ratio = config.max_reject_ratio_before_send
    rows = report.rows_read if report.rows_in_partition is None else report.rows_in_partition
    if config.override_guardrails or ratio is None or ratio >= 1 or not rows:
        return
    limit = ratio * rows
    to_check = [(action, plan.rows(action)) for action in _SENT_ACTIONS if len(plan.rows(action))]
    remaining = sum(len(r) for _, r in to_check)
    checked = 0
    failed: list[np.ndarray] = []
    for _, candidates in to_check:
        for start in range(0, len(candidates), _CHECK_STEP):
            if report.rejected + remaining <= limit:
                break  # even if every row left failed, the share would not be passed
            step = candidates[start : start + _CHECK_STEP]
            failed.append(pusher.validate_rows(pending, step))
            remaining -= len(step)
            checked += len(step)
            if report.rejected > limit:
                raise GuardrailTripped(_reject_share_message(report, config, rows, checked, remaining))
    bad = np.concatenate(failed) if failed else np.empty(0, dtype=np.int64)
    if len(bad):
        # Rejected here: never batched, looked up or sent.
        for action, candidates in to_check:
            plan.by_action[action] = candidates[~np.isin(candidates, bad)]


def _reject_share_message(report: SyncReport, config: SyncConfig, rows: int, checked: int, unchecked: int) -> str:
    """What the reject guardrail saw: counts by stage, the top reasons with example keys (never values)."""
    by_stage: dict[str, int] = {}
    for group in report.reject_reasons:
        by_stage[group["stage"]] = by_stage.get(group["stage"], 0) + group["count"]
    stages = ", ".join(f"{count} {stage}" for stage, count in sorted(by_stage.items(), key=lambda kv: -kv[1]))
    top = sorted(report.reject_reasons, key=lambda g: -g["count"])[:3]
    reasons = "; ".join(
        f"{g['count']} x [{g['stage']}] {g['reason']} (e.g. {', '.join(repr(k) for k in g['examples'][:3])})"
        for g in top
    )
    scope = f" (stopped after checking {checked} rows to send; {unchecked} not checked)" if unchecked else ""
    override = OVERRIDE_ONCE.format(sync_id=config.sync_id)
    return (
        f"guardrail: {report.rejected} of {rows} rows are rejected before sending ({report.rejected / rows:.0%}: "
        f"{stages}){scope}, above max_reject_ratio_before_send="
        f"{config.max_reject_ratio_before_send:g}; nothing was sent. Top reasons: {reasons}. Fix the data, or "
        f"raise max_reject_ratio_before_send; {override[0].lower()}{override[1:]} (the valid rows are then sent, "
        f"and the run still fails after them if the rejects pass max_reject_ratio)"
    )


def _check_events_reset(report: SyncReport, config: SyncConfig, pending: pd.DataFrame) -> None:
    """An events sync whose checkpoint was reset would send again every event it forgot."""
    # An upgraded checkpoint of the previous release forgot nothing: its sent events stay known.
    if not report.checkpoint_reset or report.checkpoint_reset == LEGACY_CHECKPOINT_NOTE or config.resend_events:
        return
    new = pending[pending[KIND] == "new"]
    if not len(new):
        return
    examples = ", ".join(repr(fp.display_key(k)) for k in new[KEY].to_numpy()[:5])
    raise EventResendError(
        f"the checkpoint of this events sync was reset ({report.checkpoint_reset}), so {len(new)} events that may "
        f"have been sent before would be sent again (e.g. {examples}); nothing was sent. If that is what you want, "
        f"run once with resend_events=True; otherwise restore the previous definition (partition count, key, "
        f"match field, destination)"
    )


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
