"""Pushing planned changes: batches, bounded concurrency, per-batch commits, reconciliation.

Each acknowledged batch is committed to the checkpoint journal (grouped with the batches
that finished with it), so a killed try loses at most the batches in flight. Non-idempotent
calls are made safe here: a create whose response was lost is looked up before being sent
again, and events get a durable "pending" mark before they leave, so a retry asks the
destination about them instead of sending them twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.batching import isolate
from airflow_provider_retl.sync.checkpoint import Checkpoint, CheckpointStore, JournalEntry
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.destination import Capabilities, Destination
from airflow_provider_retl.sync.diff import DEST_ID, INTERNAL, KEY, KEY_HASH, KIND, ROW_HASH, LiveHolders
from airflow_provider_retl.sync.errors import BatchRejectedError, OutcomeUnknownError, RetryableSyncError, SyncError
from airflow_provider_retl.sync.logs import SyncLogger
from airflow_provider_retl.sync.outcomes import RecordOutcomes
from airflow_provider_retl.sync.plan import SKIP_INSERT_EXISTS, SKIP_REMOVED_ADOPTED, Action
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.records import EXISTS, PENDING, Outcome, Record, Reject, SyncReport
from airflow_provider_retl.sync.values import column_to_wire, frame_to_wire

T = TypeVar("T")

#: ``Reject.code`` of two live keys that resolve to one destination record.
MATCH_COLLISION = "MATCH_COLLISION"

#: Rows of the pending frame turned into wire values at once. Per batch of 100, pandas'
#: fixed costs (iloc, one Series per column) were most of the conversion time.
WIRE_BLOCK = 10_000
#: Converted blocks kept: batches walk the rows in order, so older blocks are done.
WIRE_BLOCKS_KEPT = 4
#: Blocks converted by the check before sending (``validate_rows``) kept for the batches, so
#: they are not converted twice: up to 100k rows' wire dicts (~70 MB for ten short columns).
CHECKED_BLOCKS_KEPT = 10


@dataclasses.dataclass
class _WireBlock:
    """``WIRE_BLOCK`` rows of a pending frame, converted once for all the batches they fall in."""

    pending: pd.DataFrame
    wires: list[dict[str, Any]]
    failures: dict[int, tuple[str, str]]
    keys: np.ndarray
    key_hashes: np.ndarray
    row_hashes: np.ndarray


class Pusher:
    """Sends planned rows of the pending frame to a destination and commits what it accepted."""

    def __init__(
        self,
        destination: Destination,
        store: CheckpointStore,
        config: SyncConfig,
        report: SyncReport,
        base: Checkpoint,
        match_field: str | None,
        *,
        log: SyncLogger,
        clock: Callable[[], float],
        progress: Progress,
        caps: Capabilities | None = None,
        outcomes: RecordOutcomes | None = None,
    ):
        self.destination = destination
        #: Every record's outcome, for the history changelog (None: not collected, no cost).
        self.outcomes = outcomes
        self._payloads = outcomes is not None and outcomes.payloads is not None
        self.caps = caps if caps is not None else destination.capabilities(config.object)
        #: Records per call, keys per lookup, calls in flight: read once for the run.
        self.limits = destination.limits
        self.store = store
        self.config = config
        self.report = report
        self.base = base
        self.match_field = match_field
        self.log = log
        self.clock = clock
        self.progress = progress
        self.entries: list[JournalEntry] = []
        self.uncommitted: list[JournalEntry] = []
        self.last_commit = clock()
        self.push_started = clock()
        self.requests_at_start = destination.request_count
        self._wire_blocks: dict[int, _WireBlock] = {}
        self._checked_blocks: dict[int, _WireBlock] = {}
        self._wire_lock = threading.Lock()
        #: Destination id -> live keys (key hash, shown key) the checkpoint gives it (set by the engine).
        self.holders = LiveHolders()
        #: Destination id -> (key hash, shown key) of the live key this run wrote it for.
        self.written: dict[str, tuple[int, str]] = {}
        #: Ids that lookups of live rows found this run (even if their write was then refused).
        self.found_ids: set[str] = set()
        #: Updates by checkpointed id the destination refused, held back for ``rematch_refused_updates``
        #: (only when the engine turns it on: destinations that look records up by a match field).
        self.refused_updates: list[tuple[Record, Outcome]] | None = None
        #: Pending rows whose local checks already passed (``validate_rows``, before sending):
        #: ``wire_batch`` does not run the destination's rules on them again.
        self.validated: np.ndarray | None = None

    def validate_rows(self, pending: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Run the local checks of ``rows`` now, before anything is sent; return the rows that fail.

        Their rejects go to the report; the rows that pass are marked, so the batches that
        send them later skip the checks (the destination's rules are the costly part).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.validated is None or len(self.validated) != len(pending):
            self.validated = np.zeros(len(pending), dtype=bool)
        wires, failures, keys, _, row_hashes = self._wire_rows(pending, rows)
        kinds = pending[KIND].iloc[rows].to_numpy() if KIND in pending.columns else None
        with self._wire_lock:
            for block in np.unique(rows // WIRE_BLOCK).tolist():
                cached = self._wire_blocks.get(block)
                if cached is not None and len(self._checked_blocks) < CHECKED_BLOCKS_KEPT:
                    self._checked_blocks[block] = cached
        failed = []
        for i, fields in enumerate(wires):
            kind = str(kinds[i]) if kinds is not None else None
            reject = self._local_reject(fp.display_key(keys[i]), fields, failures.get(i), kind)
            if reject is None:
                self.validated[rows[i]] = True
            else:
                self.report.add_reject(self._hashed(reject, row_hashes[i], fields))
                failed.append(int(rows[i]))
        return np.asarray(failed, dtype=np.int64)

    def _local_reject(
        self, key: str, fields: dict[str, Any], failure: tuple[str, str] | None, kind: str | None
    ) -> Reject | None:
        """A value the wire cannot carry, or a rule of the destination the record breaks (``kind``: as planned)."""
        if failure is not None:
            name, reason = failure
            return Reject(key, reason, "validation", field=name, kind=kind)
        problems = self.destination.validate(self.config.object, fields)
        if problems:
            return Reject(key, "; ".join(r for _, r in problems), "validation", field=problems[0][0], kind=kind)
        return None

    def wire_batch(self, pending: pd.DataFrame, rows: np.ndarray, action: Action) -> tuple[list[Record], list[Reject]]:
        """Records ready to send for ``rows`` of ``pending`` and the rows that fail local checks."""
        rows = np.asarray(rows, dtype=np.int64)
        wires, failures, keys, key_hashes, row_hashes = self._wire_rows(pending, rows)
        records: list[Record] = []
        rejects: list[Reject] = []
        ids = pending[DEST_ID].iloc[rows].to_numpy()  # not cached: lookups fill it in
        # Records that will be matched by value (upsert/create where records can exist) need one.
        needs_match = action in (Action.UPSERT, Action.BULK_UPSERT, Action.CREATE) and self.caps.lookup
        # Event ids come from the canonical key TEXT hashed here, in Python, whatever diffed it: a
        # warehouse checkpoint's key hash is an MD5 computed in SQL, so ids taken from it would
        # differ from a file store's for the same key and the destination's dedupe would miss.
        event_hashes = fp.key_hashes(keys) if action in (Action.SEND_EVENT, Action.RECONCILE) else None
        checked = self.validated[rows] if self.validated is not None else np.zeros(len(rows), dtype=bool)
        # What the diff planned for each row: a row refused here was counted new or changed by the
        # plan, and the report counts it as rejected instead (it is tried again next run).
        kinds = pending[KIND].iloc[rows].to_numpy() if KIND in pending.columns else None
        for i, fields in enumerate(wires):
            key = fp.display_key(keys[i])
            kind = str(kinds[i]) if kinds is not None else None
            if not checked[i]:
                reject = self._local_reject(key, fields, failures.get(i), kind)
                if reject is not None:
                    rejects.append(self._hashed(reject, row_hashes[i], fields))
                    continue
            match_value = fields.get(self.match_field) if self.match_field else None
            if needs_match and (match_value is None or match_value == ""):
                reject = dataclasses.replace(self.empty_match_reject(key), kind=kind)
                rejects.append(self._hashed(reject, row_hashes[i], fields))
                continue
            dest_id = ids[i] if isinstance(ids[i], str) and ids[i] != PENDING else None
            record = Record(key, fields, int(key_hashes[i]), int(row_hashes[i]), dest_id, match_value)
            if action in (Action.SEND_EVENT, Action.RECONCILE):
                assert event_hashes is not None
                record.event_id = self.event_id(int(event_hashes[i]))
            records.append(record)
        return records, rejects

    def _hashed(self, reject: Reject, row_hash: Any, fields: dict[str, Any] | None = None) -> Reject:
        """``reject`` with the row hash of the refused content (and its fields while payloads are collected)."""
        if self.outcomes is None:
            return reject  # only the history needs them: no copy per reject otherwise
        payload = fields if self._payloads else None
        return dataclasses.replace(reject, row_hash=int(row_hash), payload=payload)

    def _wire_rows(self, pending: pd.DataFrame, rows: np.ndarray) -> tuple[Any, ...]:
        """For ``rows``: wire dicts (fresh copies), {index in rows: (field, reason)} for values that
        cannot be sent, key texts, key hashes and row hashes."""
        wires: list[dict[str, Any]] = []
        failures: dict[int, tuple[str, str]] = {}
        keys = np.empty(len(rows), dtype=object)
        key_hashes = np.empty(len(rows), dtype=np.uint64)
        row_hashes = np.empty(len(rows), dtype=np.uint64)
        for i, row in enumerate(rows.tolist()):
            block, offset = divmod(row, WIRE_BLOCK)
            cached = self._wire_block(pending, block)
            wires.append(dict(cached.wires[offset]))
            if offset in cached.failures:
                failures[i] = cached.failures[offset]
            keys[i], key_hashes[i], row_hashes[i] = (
                cached.keys[offset],
                cached.key_hashes[offset],
                cached.row_hashes[offset],
            )
        return wires, failures, keys, key_hashes, row_hashes

    def _wire_block(self, pending: pd.DataFrame, block: int) -> _WireBlock:
        with self._wire_lock:  # batches are built in worker threads
            cached = self._wire_blocks.get(block) or self._checked_blocks.get(block)
            if cached is not None and cached.pending is pending:
                return cached
            start = block * WIRE_BLOCK
            frame = pending.iloc[start : start + WIRE_BLOCK]
            wires, failures = frame_to_wire(frame[[c for c in pending.columns if c not in INTERNAL]])
            cached = _WireBlock(
                pending,
                wires,
                failures,
                frame[KEY].to_numpy(),
                frame[KEY_HASH].to_numpy(dtype=np.uint64),
                frame[ROW_HASH].to_numpy(dtype=np.uint64),
            )
            while len(self._wire_blocks) >= WIRE_BLOCKS_KEPT:
                del self._wire_blocks[next(iter(self._wire_blocks))]  # the oldest
            self._wire_blocks[block] = cached
            return cached

    def empty_match_reject(self, key: str) -> Reject:
        return Reject(
            key,
            f"match field {self.match_field!r} is empty: the record cannot be matched",
            "validation",
            field=self.match_field,
        )

    def send(
        self, pending: pd.DataFrame, rows: np.ndarray, action: Action
    ) -> tuple[list[Record], list[Reject], list[Outcome]]:
        """Build one batch and send it (runs in a worker thread)."""
        records, rejects = self.wire_batch(pending, rows, action)
        if not records:
            return records, rejects, []
        obj = self.config.object
        match = self.match_field or ""
        if action is Action.SEND_EVENT:
            outcomes = self.isolate(records, lambda part: self.destination.send_events(obj, part))
        elif action is Action.BULK_UPSERT:
            outcomes = self.destination.bulk_upsert(obj, records, match)  # one job: per-record results, no split
        elif action is Action.UPSERT:
            outcomes = self.isolate(records, lambda part: self.destination.upsert(obj, part, match))
        elif action is Action.UPDATE:
            outcomes = self.isolate(records, lambda part: self.destination.update(obj, part))
        else:
            outcomes = self._create_reconciling(records)
        if len(outcomes) != len(records):
            raise SyncError(f"destination returned {len(outcomes)} outcomes for {len(records)} records")
        return records, rejects, outcomes

    def isolate(self, items: Sequence[T], call: Callable[[Sequence[T]], list[Outcome]]) -> list[Outcome]:
        """One write call; a batch refused for one record's sake is split until that record is alone."""

        def split(count: int, reason: str) -> None:
            self.log.info(
                "the destination refused a batch of %d (%s); splitting it to find the bad records", count, reason
            )

        return isolate(items, call, split)

    def _create_reconciling(self, records: list[Record]) -> list[Outcome]:
        """Create; records that turn out to exist are updated, and a lost response is reconciled by lookup."""
        outcomes = self._create_or_lookup(records)
        exists = [i for i, o in enumerate(outcomes) if not o.ok and o.code == EXISTS and o.dest_id]
        if exists:
            # Created meanwhile (by another tool or an earlier lost response): update it by id instead.
            targets = [records[i] for i in exists]
            for i, record in zip(exists, targets, strict=True):
                record.dest_id = outcomes[i].dest_id
            updated = self.isolate(targets, lambda part: self.destination.update(self.config.object, part))
            for i, outcome in zip(exists, updated, strict=True):
                outcomes[i] = (
                    Outcome.success(outcome.dest_id or records[i].dest_id, created=False) if outcome.ok else outcome
                )
        return outcomes

    def _create_or_lookup(self, records: list[Record]) -> list[Outcome]:
        obj = self.config.object
        try:
            return self.isolate(records, lambda part: self.destination.create(obj, part))
        except OutcomeUnknownError as exc:
            self.log.warning("create of %d records: outcome unknown (%s); reconciling by lookup", len(records), exc)
            unknown = exc
        found = self._lookup_ids([r.match_value for r in records])
        outcomes: list[Outcome | None] = [None] * len(records)
        missing = []
        for i, record in enumerate(records):
            dest_id = found[i]
            if dest_id is not None:
                outcomes[i] = Outcome.success(dest_id, created=True)
            else:
                missing.append(i)
        if missing and unknown.may_land_later:
            # The timed-out create may still be applied after this lookup: creating the
            # records now could duplicate them. Fail this try; the next one looks them up again.
            raise RetryableSyncError(
                f"create of {len(records)} records timed out and {len(missing)} of them are not found yet; "
                "the destination may still apply it, so the next try reconciles them by lookup"
            ) from unknown
        if missing:
            try:
                retried = self.isolate([records[i] for i in missing], lambda part: self.destination.create(obj, part))
            except OutcomeUnknownError as exc:
                raise RetryableSyncError(
                    "create failed twice with an unknown outcome; the next try reconciles by lookup"
                ) from exc
            for i, outcome in zip(missing, retried, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _lookup_ids(self, values: Sequence[Any]) -> list[str | None]:
        assert self.match_field is not None
        size = max(1, self.limits.lookup_batch)
        found: dict[Any, str] = {}
        for start in range(0, len(values), size):  # every lookup call within the API's lookup limit
            found.update(
                self.destination.lookup(self.config.object, self.match_field, list(values[start : start + size]))
            )
        folded = {str(k).strip().lower(): v for k, v in found.items()}
        return [found.get(v) or folded.get(str(v).strip().lower()) if v is not None else None for v in values]

    def commit(self, entry: JournalEntry, *, flush: bool = True) -> None:
        """Queue ``entry`` for the checkpoint journal; write the queue now if ``flush``, else once
        ``commit_interval`` has passed since the last write.

        Batches that finish together (or within ``commit_interval``) share one journal write:
        a durable write (fsync, a Variable) per batch of 100 would dominate fast destinations,
        and an acknowledged batch whose commit is lost is only re-sent (upserts are
        idempotent; creates are preceded by lookups), never duplicated.
        """
        if len(entry):
            self.uncommitted.append(entry)
        if flush or self.clock() - self.last_commit >= self.config.commit_interval:
            self.flush_commits()

    def flush_commits(self) -> None:
        if not self.uncommitted:
            return
        entry = JournalEntry.merge(self.uncommitted)
        self.store.commit(
            entry, target_fingerprint=self.base.target_fingerprint, payload_fingerprint=self.base.payload_fingerprint
        )
        self.entries.append(entry)
        self.uncommitted = []
        self.last_commit = self.clock()

    @staticmethod
    def event_id(key_hash: int) -> str:
        """The id of an event: the Python hash (``fingerprint.key_hashes``) of its canonical key text alone.

        So it is the same on every try and run, and across partition counts, renamed
        connections, checkpoint stores (never the store's own key hash: a warehouse's is
        an MD5 computed in SQL) and sync definitions (a target fingerprint in it would let
        the destination's own dedupe miss a re-sent event).
        """
        return f"retl-{key_hash:016x}"

    def apply(
        self,
        action: Action,
        records: list[Record],
        rejects: list[Reject],
        outcomes: list[Outcome],
        batch_key_hashes: np.ndarray | None = None,
    ) -> None:
        for reject in rejects:
            self.report.add_reject(reject)
        keys, rows, ids = [], [], []
        for record, outcome in zip(records, outcomes, strict=True):
            if not outcome.ok and action is Action.UPDATE and self.refused_updates is not None:
                self.refused_updates.append((record, outcome))
                continue
            if not outcome.ok:
                reject = Reject(
                    record.key, outcome.reason or "rejected by the destination", "destination", code=outcome.code
                )
                self.report.add_reject(self._hashed(reject, record.row_hash, record.fields))
                continue
            dest_id = outcome.dest_id or record.dest_id or record.event_id
            if action is not Action.SEND_EVENT and dest_id:
                other = self.other_holder(str(dest_id), record.key_hash)
                if other is not None:
                    # The destination matched this row onto a record another live key holds (an
                    # upsert or "already exists" on a shared match value): never checkpoint the
                    # merge, or mirror would later delete a record a live row maps to.
                    reject = self.collision_reject(record.key, other)
                    self.report.add_reject(self._hashed(reject, record.row_hash, record.fields))
                    continue
                self.written[str(dest_id)] = (record.key_hash, record.key)
            keys.append(record.key_hash)
            rows.append(record.row_hash)
            ids.append(dest_id)
            if action is Action.SEND_EVENT:
                self.report.events += 1
                if self.outcomes is not None:
                    self._observe("event", record, dest_id)
                continue
            created = outcome.created
            if created is None and action not in (Action.UPSERT, Action.BULK_UPSERT):
                created = action is Action.CREATE
            if created is True:
                self.report.created += 1
            elif created is False:
                self.report.updated += 1
            else:
                self.report.upserted += 1
            if self.outcomes is not None:
                self._observe(
                    "create" if created is True else "update" if created is False else "upsert", record, dest_id
                )
        if records:
            self.report.batches += 1
        self.commit(JournalEntry.puts(keys, rows, ids), flush=False)
        if action is Action.SEND_EVENT and batch_key_hashes is not None:
            # Events that were refused (or never sent) lose their "pending" mark: retried next run.
            refused = np.setdiff1d(batch_key_hashes, np.asarray(keys, dtype=np.uint64))
            self.commit(JournalEntry.deletes(refused), flush=False)

    def _observe(self, operation: str, record: Record, dest_id: Any) -> None:
        assert self.outcomes is not None
        payload = record.fields if self._payloads else None
        self.outcomes.pushed_one(
            operation, record.key, None if dest_id is None else str(dest_id), record.row_hash, payload
        )

    def batches(self, rows: np.ndarray, size: int) -> list[np.ndarray]:
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def run_pool(self, jobs: list[tuple[Action, np.ndarray]], pending: pd.DataFrame, total: int) -> None:
        """Send batches with bounded concurrency; stop submitting at the first error, drain, re-raise."""
        workers = max(1, self.limits.concurrency)
        error: BaseException | None = None
        done = 0
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retl-push") as pool:
            queue = list(jobs)
            in_flight: dict[cf.Future[Any], tuple[Action, np.ndarray]] = {}
            while queue or in_flight:
                while queue and error is None and len(in_flight) < workers * 2:
                    action, rows = queue.pop(0)
                    if action is Action.SEND_EVENT:
                        # Write-ahead: durable "pending" marks before the events leave, so a try that
                        # dies mid-call is reconciled on retry instead of sending them twice.
                        key_hashes = pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows]
                        row_hashes = pending[ROW_HASH].to_numpy(dtype=np.uint64)[rows]
                        self.commit(JournalEntry.puts(key_hashes, row_hashes, [PENDING] * len(rows)))
                    in_flight[pool.submit(self.send, pending, rows, action)] = (action, rows)
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    action, rows = in_flight.pop(future)
                    done += len(rows)
                    try:
                        records, rejects, outcomes = future.result()
                    except BatchRejectedError as exc:
                        records, rejects = self.wire_batch(pending, rows, action)
                        rejects += [Reject(r.key, str(exc), "destination") for r in records]
                        records, outcomes = [], []
                    except Exception as exc:  # noqa: BLE001 - any failure stops the run after draining
                        error = error or exc
                        continue
                    self.apply(action, records, rejects, outcomes, pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows])
                if error is not None:
                    self.flush_commits()
                    queue.clear()
                self.log_progress(done, total)
        self.flush_commits()
        if error is not None:
            raise error

    def log_progress(self, done: int, total: int, force: bool = False) -> None:
        elapsed = max(self.clock() - self.push_started, 1e-9)
        self.progress(
            "pushed %d/%d records (%.0f/s): %d created, %d updated, %d upserted, %d rejected, %d requests",
            done,
            total,
            done / elapsed,
            self.report.created,
            self.report.updated,
            self.report.upserted,
            self.report.rejected,
            self.destination.request_count - self.requests_at_start,
            force=force,
        )

    def lookup_rows(self, pending: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resolve destination ids for ``rows`` by their match value: (found rows, missing rows)."""
        assert self.match_field is not None
        values, failures = column_to_wire(pending[self.match_field].iloc[rows])
        usable = []
        for i, (row, value) in enumerate(zip(rows, values, strict=True)):
            if i in failures or value is None or value == "":
                key = fp.display_key(pending[KEY].iat[row])
                self.report.add_reject(self.empty_match_reject(key))
            else:
                usable.append((row, value))
        size = max(1, self.limits.lookup_batch)
        groups = [usable[i : i + size] for i in range(0, len(usable), size)]
        workers = max(1, self.limits.concurrency)
        found_rows, missing_rows = [], []
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retl-lookup") as pool:
            results = pool.map(lambda g: self._lookup_ids([v for _, v in g]), groups)
            for group, ids in zip(groups, results, strict=True):
                for (row, _), dest_id in zip(group, ids, strict=True):
                    if dest_id is None:
                        missing_rows.append(row)
                    else:
                        pending.iat[row, pending.columns.get_loc(DEST_ID)] = dest_id
                        found_rows.append(row)
        return np.asarray(found_rows, dtype=np.int64), np.asarray(missing_rows, dtype=np.int64)

    def reconcile_events(self, pending: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Ask the destination about events of an interrupted try; return the rows to send again.

        An in-doubt event whose row changed since it was sent stays in doubt: the destination
        would be asked about (and sent) the new content, which is not what may have landed.
        """
        resend = []
        keys = pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows]
        now = pending[ROW_HASH].to_numpy(dtype=np.uint64)[rows]
        changed: set[int] = set()
        if not self.config.resend_events:
            sent_with = self._pending_row_hashes(keys)
            changed = {
                int(k) for k, n, was in zip(keys, now, sent_with, strict=True) if was is not None and was != int(n)
            }
        for batch in self.batches(rows, max(1, self.limits.batch)):
            records, rejects = self.wire_batch(pending, batch, Action.RECONCILE)
            for reject in rejects:
                self.report.add_reject(reject)
            doubtful = [r for r in records if r.key_hash in changed]
            for record in doubtful:
                self.report.add_reject(
                    Reject(
                        record.key,
                        "event outcome unknown after an interrupted try, and its row changed since it was sent; "
                        "not re-sent to avoid a duplicate (check the destination, then run with resend_events=True "
                        "to send it)",
                        "destination",
                        code="OUTCOME_UNKNOWN",
                    )
                )
            records = [r for r in records if r.key_hash not in changed]
            landed = self.destination.reconcile_events(self.config.object, records) if records else []
            by_key = dict(zip(pending[KEY_HASH].to_numpy(dtype=np.uint64)[batch].tolist(), batch.tolist(), strict=True))
            keys, row_hashes, ids = [], [], []
            for record, state in zip(records, landed, strict=True):
                if state is True:
                    keys.append(record.key_hash)
                    row_hashes.append(record.row_hash)
                    ids.append(record.event_id)
                    self.report.skip("event already delivered by an interrupted try (reconciled)")
                elif state is False:
                    resend.append(by_key[record.key_hash])
                else:
                    self.report.add_reject(
                        Reject(
                            record.key,
                            "event outcome unknown after an interrupted try and the destination cannot be asked; "
                            "not re-sent to avoid a duplicate (check the destination, then run with full_resync=True to send it)",
                            "destination",
                            code="OUTCOME_UNKNOWN",
                        )
                    )
            self.commit(JournalEntry.puts(keys, row_hashes, ids))
        return np.asarray(resend, dtype=np.int64)

    def _pending_row_hashes(self, key_hashes: np.ndarray) -> list[int | None]:
        """The row hash each key's in-doubt mark was written with (None: unknown, e.g. after full_resync)."""
        if not len(self.base):
            return [None] * len(key_hashes)
        positions = pd.Index(self.base.key_hashes).get_indexer(key_hashes)
        out: list[int | None] = []
        for position in positions.tolist():
            row_hash = int(self.base.row_hashes[position]) if position >= 0 else 0
            out.append(row_hash or None)
        return out

    def remember_existing(self, pending: pd.DataFrame, rows: np.ndarray) -> None:
        """Insert mode found these records in the destination: skip them, but keep their ids.

        Row hash 0 means "destination id known, content not synced", so later runs need no
        lookup and still never update them.
        """
        if not len(rows):
            return
        self.report.skip(SKIP_INSERT_EXISTS, len(rows))
        self.commit(
            JournalEntry.puts(
                pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows],
                np.zeros(len(rows), dtype=np.uint64),
                pending[DEST_ID].to_numpy()[rows],
            )
        )

    def settle_removed(self, key_hashes: np.ndarray, ids: np.ndarray, *, delete: bool, live_ids: set[str]) -> None:
        """Keys that left the query: their records are deleted (mirror, ``delete``) unless a live key holds them.

        A record written this run, held by a live key in the checkpoint (``holders``), found
        by a lookup of a live row, or carried by a pending row (``live_ids``) still belongs to
        the source (a re-keyed row took it over): it is never deleted, and the removed key's
        checkpoint entry is dropped in every mode, so a revived old key cannot take it back
        without a lookup (which then sees the collision).
        """
        protected = set(self.written) | self.found_ids | live_ids
        has_id = np.array([isinstance(i, str) and i != "" and i != PENDING for i in ids], dtype=bool)
        adopted = has_id & np.array(
            [i in protected or (has and self.holders.holds(i)) for i, has in zip(ids, has_id, strict=True)], dtype=bool
        )
        if adopted.any():
            self.report.skip(SKIP_REMOVED_ADOPTED, int(adopted.sum()))
            self.commit(JournalEntry.deletes(key_hashes[adopted]))
        if not delete:
            return
        for kh in key_hashes[~has_id]:
            self.report.add_reject(
                Reject(f"#{int(kh):016x}", "cannot delete: no destination id was recorded for this key", "destination")
            )
        doomed = has_id & ~adopted
        size = self.write_batch_size()
        obj = self.config.object
        for start in range(0, int(doomed.sum()), size):
            batch_keys = key_hashes[doomed][start : start + size]
            batch_ids = [str(i) for i in ids[doomed][start : start + size]]
            outcomes = self.isolate(batch_ids, lambda part: self.destination.delete(obj, part))
            done = []
            for kh, outcome in zip(batch_keys, outcomes, strict=True):
                if outcome.ok:
                    done.append(int(kh))
                    self.report.deleted += 1
                else:
                    self.report.add_reject(
                        Reject(f"#{int(kh):016x}", outcome.reason or "delete refused", "destination", code=outcome.code)
                    )
            self.report.batches += 1
            self.commit(JournalEntry.deletes(done))
            if self.outcomes is not None and done:
                ok = [outcome.ok for outcome in outcomes]
                deleted_ids = [i for i, good in zip(batch_ids, ok, strict=True) if good]
                self.outcomes.pushed("delete", [f"#{kh:016x}" for kh in done], deleted_ids, [None] * len(done))

    def rematch_refused_updates(self) -> None:
        """Updates by id that the destination refused: did their match value move to another record?

        Two rows that swap match values (F3: k1 now has k2's email and k2 has k1's) cannot be
        updated by their old ids where the match field is unique: each update collides with
        the other record. The records follow the match value, not the key: each refused row
        is looked up by its match value, and takes the record found when no live key keeps
        that record (its holder moves away in the same way, or nobody holds it). The rest are
        rejected with the destination's reason, or as a match collision.
        """
        refused, self.refused_updates = self.refused_updates or [], None
        if not refused:
            return
        assert self.match_field is not None
        size = max(1, self.limits.lookup_batch)
        found: list[str | None] = []
        for start in range(0, len(refused), size):
            part = refused[start : start + size]
            found += self._lookup_ids([r.match_value if r.match_value not in (None, "") else None for r, _ in part])
        moving = {
            record.key_hash: dest_id
            for (record, _), dest_id in zip(refused, found, strict=True)
            if dest_id is not None and dest_id != record.dest_id
        }
        targets = list(moving.values())
        movers: list[Record] = []
        for record, outcome in refused:
            target = moving.get(record.key_hash)
            if target is None:
                self.report.add_reject(
                    Reject(
                        record.key, outcome.reason or "rejected by the destination", "destination", code=outcome.code
                    )
                )
                continue
            stays = [
                _shown(holder, text)
                for holder, text in [
                    *self.holders.get(target),
                    *([self.written[target]] if target in self.written else []),
                ]
                if holder != record.key_hash and moving.get(holder, target) == target
            ]
            if stays or targets.count(target) > 1:
                other = (
                    stays[0]
                    if stays
                    else next(
                        r.key for r, _ in refused if r.key_hash != record.key_hash and moving.get(r.key_hash) == target
                    )
                )
                self.report.add_reject(self.collision_reject(record.key, other))
                continue
            movers.append(record)
        if not movers:
            return
        # The movers leave their old records and take the ones their match values are on.
        for record in movers:
            old = record.dest_id
            if old is not None:
                self.holders.set(old, [h for h in self.holders.get(old) if h[0] != record.key_hash])
                if self.written.get(old, (None,))[0] == record.key_hash:
                    del self.written[old]
            record.dest_id = moving[record.key_hash]
            self.holders.set(record.dest_id, [*self.holders.get(record.dest_id), (record.key_hash, record.key)])
        for start in range(0, len(movers), self.write_batch_size()):
            batch = movers[start : start + self.write_batch_size()]
            self.apply(Action.UPDATE, batch, [], self.destination.update(self.config.object, batch))
        self.flush_commits()

    # ------------------------------------------------------------------ match collisions
    def other_holder(self, dest_id: str, key_hash: int) -> str | None:
        """The shown key of another live key that holds ``dest_id`` (checkpoint or this run), if any."""
        for holder_hash, text in self.holders.get(dest_id):
            if holder_hash != key_hash:
                return _shown(holder_hash, text)
        written = self.written.get(dest_id)
        if written is not None and written[0] != key_hash:
            return written[1]
        return None

    def collision_reject(self, key: str, other: str, detail: str = "") -> Reject:
        return Reject(
            key,
            f"match collision: keys {key!r} and {other!r} resolve to the same destination record{detail}; "
            f"neither is merged into the other (make the match value unique per key)",
            "destination",
            field=self.match_field,
            code=MATCH_COLLISION,
        )

    def match_texts(self, pending: pd.DataFrame, rows: np.ndarray, field: str | None = None) -> list[str | None]:
        """The match value (or ``field``) of ``rows`` as the destination compares it (None: no usable value)."""
        field = field or self.match_field
        assert field is not None
        values, failures = column_to_wire(pending[field].iloc[rows])
        fold = self.caps.ignores_case(field)
        texts: list[str | None] = []
        for i, value in enumerate(values):
            if i in failures or value is None or value == "":
                texts.append(None)
            else:
                text = str(value).strip()
                texts.append(text.lower() if fold else text)
        return texts

    def reject_shared_match_values(
        self, pending: pd.DataFrame, rows: np.ndarray, field: str | None = None
    ) -> np.ndarray:
        """Rows to be matched by value that share their match value (or the value of ``field``, another
        field the destination identifies records by) with another such row are all rejected (the
        destination would merge them into one record); returns the rows left."""
        field = field or self.match_field
        if field is None or not len(rows) or field not in pending.columns:
            return rows
        texts = self.match_texts(pending, rows, field)
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if text is not None:
                groups.setdefault(text, []).append(i)
        shared = [members for members in groups.values() if len(members) > 1]
        if not shared:
            return rows
        keys = pending[KEY].to_numpy()
        drop = set()
        for members in shared:
            shown = [fp.display_key(keys[rows[i]]) for i in members]
            for j, i in enumerate(members):
                other = shown[1] if j == 0 else shown[0]
                detail = f" (both have {field} {texts[i]!r}" + (
                    f", with {len(members) - 2} more keys)" if len(members) > 2 else ")"
                )
                self.report.add_reject(self.collision_reject(shown[j], other, detail))
                drop.add(i)
        return rows[[i for i in range(len(rows)) if i not in drop]]

    def reject_held_ids(self, pending: pd.DataFrame, rows: np.ndarray, *, found: bool) -> np.ndarray:
        """Rows whose destination id (from the checkpoint, or ``found`` by a lookup) another live key
        holds: rejected as a match collision; the key that holds it in the checkpoint keeps it, and
        ids found for several rows and held by none go to none of them. Returns the rows left."""
        if not len(rows):
            return rows
        ids = pending[DEST_ID].to_numpy()[rows]
        key_hashes = pending[KEY_HASH].to_numpy(dtype=np.uint64)[rows]
        keys = pending[KEY].to_numpy()[rows]
        by_id: dict[str, list[int]] = {}
        for i, dest_id in enumerate(ids):
            if isinstance(dest_id, str):
                by_id.setdefault(dest_id, []).append(i)
                if found:
                    self.found_ids.add(dest_id)
        keep = np.ones(len(rows), dtype=bool)
        for dest_id, members in by_id.items():
            for i in members:
                other = self.other_holder(dest_id, int(key_hashes[i]))
                if other is None and found and len(members) > 1:
                    other = fp.display_key(keys[members[1] if i == members[0] else members[0]])
                if other is not None:
                    self.report.add_reject(self.collision_reject(fp.display_key(keys[i]), other))
                    keep[i] = False
        return rows[keep]

    def write_batch_size(self) -> int:
        limit = max(1, self.limits.batch)
        return min(self.config.batch_size or limit, limit)

    def finalize(self) -> None:
        self.store.finalize(self.base.apply(self.entries))


def _shown(key_hash: int, text: str | None) -> str:
    """A key as a reject names it: its text, or its hash where the text is not at hand."""
    return fp.display_key(text) if isinstance(text, str) else f"#{key_hash:016x}"
