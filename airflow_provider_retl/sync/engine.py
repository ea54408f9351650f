"""``run_sync``: read the query to its end, diff it against the checkpoint, push the difference.

The run has three phases, and the order is what makes it safe:

1. **Read** every chunk: map, hash and diff each one, keep only changed rows. Nothing is
   sent while reading, so a cancelled or truncated extract sends nothing, commits nothing
   and never mirror-deletes keys merely because they were not read.
2. **Plan**: reject NULL/empty and duplicated keys (every copy, so the result does not
   depend on row order), find removed keys, and choose the cheapest call per row.
3. **Push** in batches with bounded concurrency. Each acknowledged batch is committed to
   the checkpoint journal at once, so a killed try loses at most the batches in flight and
   a retry re-plans from there. The base is rewritten only when the run succeeds.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import HASH_ALGORITHM, Checkpoint, CheckpointStore, JournalEntry
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    CheckpointError,
    ConfigurationError,
    OutcomeUnknownError,
    RejectRatioExceeded,
    RetryableSyncError,
    SyncError,
)
from airflow_provider_retl.sync.plan import SKIP_NOT_MIRROR, Action, after_lookup, plan_changes, plan_events
from airflow_provider_retl.sync.records import EXISTS, PENDING, ChangeKind, Mode, Outcome, Record, Reject, SyncReport
from airflow_provider_retl.sync.values import column_to_wire, frame_to_wire

_KEY = "__retl_key"
_KH = "__retl_key_hash"
_RH = "__retl_row_hash"
_ID = "__retl_dest_id"
_KIND = "__retl_kind"
_INTERNAL = [_KEY, _KH, _RH, _ID, _KIND]


@dataclass
class SyncConfig:
    """Everything that defines one sync; validated on construction (nothing is sent before)."""

    sync_id: str
    object: str
    primary_key: str | Sequence[str]
    mode: Mode | str = Mode.UPSERT
    mapping: Mapping[str, str] | None = None
    match_on: str | None = None
    batch_size: int | None = None
    dry_run: bool = False
    full_resync: bool = False
    rebaseline: bool = False
    max_reject_ratio: float | None = None
    #: Identifies the destination account (e.g. connection id + host): part of the checkpoint fingerprint.
    destination_identity: str = ""
    progress_interval: float = 5.0
    #: Seconds between checkpoint journal writes while pushing (0: one write per finished batch).
    commit_interval: float = 0.5
    primary_keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.mode = Mode.parse(self.mode)
        keys = [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigurationError("primary_key must be a column name or a non-empty list of column names")
        self.primary_keys = keys
        if self.mapping is not None:
            if not isinstance(self.mapping, Mapping) or not self.mapping:
                raise ConfigurationError("mapping must be a non-empty dict of destination field -> source column")
            self.mapping = dict(self.mapping)
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigurationError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if self.max_reject_ratio is not None and not 0 <= self.max_reject_ratio <= 1:
            raise ConfigurationError(f"max_reject_ratio must be between 0 and 1; got {self.max_reject_ratio!r}")
        if self.rebaseline and (self.full_resync or self.dry_run):
            raise ConfigurationError("rebaseline cannot be combined with full_resync or dry_run")
        if not self.object:
            raise ConfigurationError("object (the destination object, e.g. 'contacts') is required")

    def target_fingerprint(self, match_field: str | None) -> str:
        """What makes destination ids meaningful: destination account, object, key, match field."""
        return _digest(
            {
                "destination": self.destination_identity,
                "object": self.object,
                "primary_key": self.primary_keys,
                "match_on": match_field,
            }
        )


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class _Progress:
    """Logs a progress line at most every ``interval`` seconds (and always when forced)."""

    def __init__(self, log: logging.Logger, interval: float, clock: Callable[[], float]):
        self.log, self.interval, self.clock = log, interval, clock
        self.last = clock()

    def __call__(self, message: str, *args: Any, force: bool = False) -> None:
        now = self.clock()
        if force or now - self.last >= self.interval:
            self.last = now
            self.log.info(message, *args)


def _resolve_column(name: str, columns: Sequence[str], what: str) -> str:
    """Find ``name`` among the result's columns, case-insensitively when unambiguous (Snowflake)."""
    if name in columns:
        return name
    folded = [c for c in columns if str(c).lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ConfigurationError(f"{what} {name!r} is not a column of the query result; columns are: {list(columns)}")


class _Run:
    """One execution of a sync; holds the state shared by the three phases."""

    def __init__(
        self,
        destination: Destination,
        store: CheckpointStore,
        config: SyncConfig,
        log: logging.Logger,
        clock: Callable[[], float],
    ):
        self.destination = destination
        self.store = store
        self.config = config
        self.mode: Mode = config.mode  # type: ignore[assignment]
        self.log = log
        self.clock = clock
        self.progress = _Progress(log, config.progress_interval, clock)
        self.report = SyncReport(
            sync_id=config.sync_id,
            object=config.object,
            mode=self.mode.value,
            dry_run=config.dry_run,
            full_resync=config.full_resync,
            rebaseline=config.rebaseline,
            checkpoint=store.description,
        )
        self.match_field: str | None = None
        self.field_sources: dict[str, str] | None = None  # destination field -> source column
        self.key_columns: list[str] = []
        self.loaded: Checkpoint | None = None
        self.base: Checkpoint | None = None
        self.ck_index: pd.Index = pd.Index([], dtype=np.uint64)
        self.seen: np.ndarray = np.zeros(0, dtype=bool)
        self.key_hash_chunks: list[np.ndarray] = []
        self.row_hash_chunks: list[np.ndarray] = []
        self.key_text_chunks: list[np.ndarray] = []
        self.pending_chunks: list[pd.DataFrame] = []
        self.entries: list[JournalEntry] = []
        self.uncommitted: list[JournalEntry] = []
        self.last_commit = clock()
        self.requests_at_start = destination.request_count
        self.retries_at_start = destination.retry_count
        self.push_started = clock()

    # ---------------------------------------------------------------- load
    def load_checkpoint(self) -> None:
        try:
            self.loaded = self.store.load()
        except CheckpointError as exc:
            if not self.config.full_resync:
                raise CheckpointError(
                    f"{exc}. Nothing was sent. Run once with full_resync=True to discard it and re-send "
                    f"every row (records are matched by key, so no duplicates are created)."
                ) from exc
            self.report.checkpoint_reset = f"unreadable checkpoint discarded (full_resync): {exc}"
            self.loaded = None

    def _adopt_checkpoint(self, payload_fingerprint: str) -> None:
        """Decide what of the loaded checkpoint this run may trust."""
        target = self.config.target_fingerprint(self.match_field)
        loaded = self.loaded
        if loaded is None:
            base = Checkpoint(target, payload_fingerprint)
        elif loaded.hash_algorithm != HASH_ALGORITHM:
            self.report.checkpoint_reset = "hash algorithm changed: every row is re-planned"
            base = Checkpoint(target, payload_fingerprint)
        elif loaded.target_fingerprint != target:
            self.report.checkpoint_reset = (
                "destination, object, primary key or match field changed: destination ids discarded, every row re-planned"
            )
            base = Checkpoint(target, payload_fingerprint)
        else:
            base = loaded.with_fingerprints(target, payload_fingerprint)
            if loaded.payload_fingerprint != payload_fingerprint or self.config.full_resync:
                if not self.config.full_resync:
                    self.report.checkpoint_reset = "mapping changed: every row is re-sent (destination ids kept)"
                base.row_hashes = np.zeros(len(base), dtype=np.uint64)
        self.base = base
        self.ck_index = pd.Index(base.key_hashes, dtype=np.uint64)
        self.seen = np.zeros(len(base), dtype=bool)

    # ---------------------------------------------------------------- read
    def _setup_columns(self, columns: Sequence[str]) -> None:
        cfg = self.config
        self.key_columns = [_resolve_column(k, columns, "primary key column") for k in cfg.primary_keys]
        if cfg.mapping is None:
            self.field_sources = {str(c): c for c in columns}
        else:
            self.field_sources = {
                dest: _resolve_column(src, columns, f"mapping source for {dest!r}") for dest, src in cfg.mapping.items()
            }
        self.match_field = cfg.match_on or self.destination.default_match_field(cfg.object)
        if self.match_field is None and len(self.key_columns) == 1:
            # Identity: the field the key column is sent as.
            key_column = self.key_columns[0]
            self.match_field = next((d for d, s in self.field_sources.items() if s == key_column), str(key_column))
        if self.match_field is not None and self.match_field not in self.field_sources:
            folded = [f for f in self.field_sources if f.lower() == self.match_field.lower()]
            if len(folded) == 1:
                self.match_field = folded[0]
            elif self.destination.needs_lookup(cfg.object):
                raise ConfigurationError(
                    f"match field {self.match_field!r} is not among the fields sent: {list(self.field_sources)}; "
                    f"add it to the query or mapping, or set match_on"
                )
        payload_fingerprint = _digest(sorted(self.field_sources.items()))
        self._adopt_checkpoint(payload_fingerprint)

    def read_chunk(self, chunk: pd.DataFrame) -> None:
        if self.field_sources is None:
            self._setup_columns(list(chunk.columns))
        assert self.base is not None and self.field_sources is not None
        n = len(chunk)
        self.report.rows_read += n
        if n == 0:
            return
        chunk = chunk.reset_index(drop=True)
        parts = fp.key_parts(chunk, self.key_columns)
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for column, part in zip(self.key_columns, parts, strict=True):
            null = part == fp.NULL
            empty = ~null & (pd.Series(part).str.strip().to_numpy() == "")
            for i in np.flatnonzero(null & ~bad):
                reasons[int(i)] = f"primary key column {column!r} is NULL"
            for i in np.flatnonzero(empty & ~bad):
                reasons[int(i)] = f"primary key column {column!r} is empty"
            bad |= null | empty
        keys = fp.join_key_parts(parts)
        for i, reason in sorted(reasons.items()):
            self.report.add_reject(Reject(fp.display_key(keys[i]), reason, "source"))

        good = ~bad
        keys = keys[good]
        payload = pd.DataFrame({dest: chunk[src] for dest, src in self.field_sources.items()})[good]
        key_hashes = fp.key_hashes(keys)
        row_hashes = fp.row_hashes(payload)
        positions = self.ck_index.get_indexer(key_hashes)
        known = positions >= 0
        self.seen[positions[known]] = True
        safe_positions = np.where(known, positions, 0)
        if len(self.base):
            ck_rows = np.where(known, self.base.row_hashes[safe_positions], 0)
            ids = np.where(known, self.base.dest_ids[safe_positions], None)
        else:
            ck_rows = np.zeros(len(keys), dtype=np.uint64)
            ids = np.full(len(keys), None, dtype=object)
        # An event sent by a try that died before its acknowledgement must be reconciled, not skipped.
        interrupted = ids == PENDING
        kinds = np.where(
            ~known,
            ChangeKind.NEW.value,
            np.where((ck_rows == row_hashes) & (ck_rows != 0) & ~interrupted, "unchanged", ChangeKind.CHANGED.value),
        )
        self.key_hash_chunks.append(key_hashes)
        self.row_hash_chunks.append(row_hashes)
        self.key_text_chunks.append(keys)
        changed = kinds != "unchanged"
        if changed.any():
            pending = payload[changed].reset_index(drop=True)
            pending[_KEY] = keys[changed]
            pending[_KH] = key_hashes[changed]
            pending[_RH] = row_hashes[changed]
            pending[_ID] = ids[changed]
            pending[_KIND] = kinds[changed]
            self.pending_chunks.append(pending)
        self.progress("read %d rows", self.report.rows_read)

    # ---------------------------------------------------------------- plan
    def finish_read(self) -> pd.DataFrame:
        """Duplicates and removed keys, once the whole result is known."""
        if self.base is None:
            # An empty result: no columns seen; keep the checkpoint's own payload fingerprint.
            self.field_sources = {}
            self.match_field = self.config.match_on or self.destination.default_match_field(self.config.object)
            payload = self.loaded.payload_fingerprint if self.loaded else _digest([])
            self._adopt_checkpoint(payload)
        all_keys = np.concatenate(self.key_hash_chunks) if self.key_hash_chunks else np.empty(0, dtype=np.uint64)
        uniques, inverse, counts = np.unique(all_keys, return_inverse=True, return_counts=True)
        duplicated = counts[inverse] > 1
        if duplicated.any():
            texts = np.concatenate(self.key_text_chunks)
            dup_counts = counts[inverse]
            for i in np.flatnonzero(duplicated):
                self.report.add_reject(
                    Reject(
                        fp.display_key(texts[i]),
                        f"duplicate primary key: {int(dup_counts[i])} rows share it; none of them is synced",
                        "source",
                    )
                )
        pending = (
            pd.concat(self.pending_chunks, ignore_index=True)
            if self.pending_chunks
            else pd.DataFrame(columns=[*(self.field_sources or {}), *_INTERNAL])
        )
        if duplicated.any():
            dup_keys = uniques[counts > 1]
            pending = pending[~np.isin(pending[_KH].to_numpy(dtype=np.uint64), dup_keys)].reset_index(drop=True)
        self.report.unchanged = len(all_keys) - int(duplicated.sum()) - len(pending)
        self.report.planned["new"] = int((pending[_KIND] == ChangeKind.NEW.value).sum())
        self.report.planned["changed"] = int((pending[_KIND] == ChangeKind.CHANGED.value).sum())
        self.report.planned["removed"] = int((~self.seen).sum())
        return pending

    # ---------------------------------------------------------------- push
    def wire_batch(
        self, pending: pd.DataFrame, rows: np.ndarray, action: Action
    ) -> tuple[list[Record], list[Reject]]:
        """Records ready to send for ``rows`` of ``pending`` and the rows that fail local checks."""
        frame = pending.iloc[rows]
        fields_frame = frame[[c for c in frame.columns if c not in _INTERNAL]]
        wires, failures = frame_to_wire(fields_frame)
        records: list[Record] = []
        rejects: list[Reject] = []
        keys = frame[_KEY].to_numpy()
        key_hashes = frame[_KH].to_numpy(dtype=np.uint64)
        row_hashes = frame[_RH].to_numpy(dtype=np.uint64)
        ids = frame[_ID].to_numpy()
        for i, fields in enumerate(wires):
            key = fp.display_key(keys[i])
            if i in failures:
                name, reason = failures[i]
                rejects.append(Reject(key, reason, "validation", field=name))
                continue
            problems = self.destination.validate(self.config.object, fields)
            if problems:
                rejects.append(Reject(key, "; ".join(r for _, r in problems), "validation", field=problems[0][0]))
                continue
            match_value = fields.get(self.match_field) if self.match_field else None
            if action in (Action.UPSERT, Action.BULK_UPSERT, Action.CREATE) and self.destination.needs_lookup(self.config.object):
                if match_value is None or match_value == "":
                    rejects.append(
                        Reject(key, f"match field {self.match_field!r} is empty: the record cannot be matched", "validation", field=self.match_field)
                    )
                    continue
            dest_id = ids[i] if isinstance(ids[i], str) and ids[i] != PENDING else None
            record = Record(key, fields, int(key_hashes[i]), int(row_hashes[i]), dest_id, match_value)
            if action in (Action.SEND_EVENT, Action.RECONCILE):
                record.event_id = self.event_id(record.key_hash)
            records.append(record)
        return records, rejects

    def send(self, pending: pd.DataFrame, rows: np.ndarray, action: Action) -> tuple[list[Record], list[Reject], list[Outcome]]:
        """Build one batch and send it (runs in a worker thread)."""
        records, rejects = self.wire_batch(pending, rows, action)
        if not records:
            return records, rejects, []
        obj = self.config.object
        if action is Action.SEND_EVENT:
            outcomes = self.destination.send_events(obj, records)
        elif action is Action.BULK_UPSERT:
            outcomes = self.destination.bulk_upsert(obj, records, self.match_field or "")
        elif action is Action.UPSERT:
            outcomes = self.destination.upsert(obj, records, self.match_field or "")
        elif action is Action.UPDATE:
            outcomes = self.destination.update(obj, records)
        else:
            outcomes = self._create_reconciling(records)
        if len(outcomes) != len(records):
            raise SyncError(f"destination returned {len(outcomes)} outcomes for {len(records)} records")
        return records, rejects, outcomes

    def _create_reconciling(self, records: list[Record]) -> list[Outcome]:
        """Create; records that turn out to exist are updated, and a lost response is reconciled by lookup."""
        outcomes = self._create_or_lookup(records)
        exists = [i for i, o in enumerate(outcomes) if not o.ok and o.code == EXISTS and o.dest_id]
        if exists:
            # Created meanwhile (by another tool or an earlier lost response): update it by id instead.
            targets = [records[i] for i in exists]
            for i, record in zip(exists, targets, strict=True):
                record.dest_id = outcomes[i].dest_id
            updated = self.destination.update(self.config.object, targets)
            for i, outcome in zip(exists, updated, strict=True):
                outcomes[i] = Outcome.success(outcome.dest_id or records[i].dest_id, created=False) if outcome.ok else outcome
        return outcomes

    def _create_or_lookup(self, records: list[Record]) -> list[Outcome]:
        obj = self.config.object
        try:
            return self.destination.create(obj, records)
        except OutcomeUnknownError as exc:
            self.log.warning("create of %d records: outcome unknown (%s); reconciling by lookup", len(records), exc)
        found = self._lookup_ids([r.match_value for r in records])
        outcomes: list[Outcome | None] = [None] * len(records)
        missing = []
        for i, record in enumerate(records):
            dest_id = found[i]
            if dest_id is not None:
                outcomes[i] = Outcome.success(dest_id, created=True)
            else:
                missing.append(i)
        if missing:
            try:
                retried = self.destination.create(obj, [records[i] for i in missing])
            except OutcomeUnknownError as exc:
                raise RetryableSyncError(
                    "create failed twice with an unknown outcome; the next try reconciles by lookup"
                ) from exc
            for i, outcome in zip(missing, retried, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _lookup_ids(self, values: Sequence[Any]) -> list[str | None]:
        assert self.match_field is not None
        found = self.destination.lookup(self.config.object, self.match_field, list(values))
        folded = {str(k).strip().lower(): v for k, v in found.items()}
        return [found.get(v) or folded.get(str(v).strip().lower()) if v is not None else None for v in values]

    def commit(self, entry: JournalEntry, *, flush: bool = True) -> None:
        """Queue ``entry`` for the checkpoint journal; write the queue unless ``flush`` is False.

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
        assert self.base is not None
        entry = JournalEntry.merge(self.uncommitted)
        self.store.commit(
            entry, target_fingerprint=self.base.target_fingerprint, payload_fingerprint=self.base.payload_fingerprint
        )
        self.entries.append(entry)
        self.uncommitted = []
        self.last_commit = self.clock()

    def event_id(self, key_hash: int) -> str:
        """The same id for the same event on every try and run of this sync."""
        assert self.base is not None
        return f"retl-{self.base.target_fingerprint[:12]}-{key_hash:016x}"

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
            if not outcome.ok:
                self.report.add_reject(Reject(record.key, outcome.reason or "rejected by the destination", "destination", code=outcome.code))
                continue
            keys.append(record.key_hash)
            rows.append(record.row_hash)
            ids.append(outcome.dest_id or record.dest_id or record.event_id)
            if action is Action.SEND_EVENT:
                self.report.events += 1
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
        if records:
            self.report.batches += 1
        self.commit(JournalEntry.puts(keys, rows, ids), flush=False)
        if action is Action.SEND_EVENT and batch_key_hashes is not None:
            # Events that were refused (or never sent) lose their "pending" mark: retried next run.
            refused = np.setdiff1d(batch_key_hashes, np.asarray(keys, dtype=np.uint64))
            self.commit(JournalEntry.deletes(refused), flush=False)

    def batches(self, rows: np.ndarray, size: int) -> list[np.ndarray]:
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def run_pool(self, jobs: list[tuple[Action, np.ndarray]], pending: pd.DataFrame, total: int) -> None:
        """Send batches with bounded concurrency; stop submitting at the first error, drain, re-raise."""
        workers = max(1, int(getattr(self.destination, "max_concurrency", 1) or 1))
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
                        key_hashes = pending[_KH].to_numpy(dtype=np.uint64)[rows]
                        row_hashes = pending[_RH].to_numpy(dtype=np.uint64)[rows]
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
                    self.apply(action, records, rejects, outcomes, pending[_KH].to_numpy(dtype=np.uint64)[rows])
                self.commit(JournalEntry(), flush=error is not None)
                if error is not None:
                    queue.clear()
                self._push_progress(done, total)
        self.flush_commits()
        if error is not None:
            raise error

    def _push_progress(self, done: int, total: int, force: bool = False) -> None:
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
                key = fp.display_key(pending[_KEY].iat[row])
                self.report.add_reject(
                    Reject(key, f"match field {self.match_field!r} is empty: the record cannot be matched", "validation", field=self.match_field)
                )
            else:
                usable.append((row, value))
        size = max(1, int(self.destination.lookup_batch_size))
        groups = [usable[i : i + size] for i in range(0, len(usable), size)]
        workers = max(1, int(getattr(self.destination, "max_concurrency", 1) or 1))
        found_rows, missing_rows = [], []
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retl-lookup") as pool:
            results = pool.map(lambda g: self._lookup_ids([v for _, v in g]), groups)
            for group, ids in zip(groups, results, strict=True):
                for (row, _), dest_id in zip(group, ids, strict=True):
                    if dest_id is None:
                        missing_rows.append(row)
                    else:
                        pending.iat[row, pending.columns.get_loc(_ID)] = dest_id
                        found_rows.append(row)
        return np.asarray(found_rows, dtype=np.int64), np.asarray(missing_rows, dtype=np.int64)

    def reconcile_events(self, pending: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Ask the destination about events of an interrupted try; return the rows to send again."""
        resend = []
        for batch in self.batches(rows, max(1, int(self.destination.max_batch_size))):
            records, rejects = self.wire_batch(pending, batch, Action.RECONCILE)
            for reject in rejects:
                self.report.add_reject(reject)
            landed = self.destination.reconcile_events(self.config.object, records) if records else []
            by_key = dict(zip(pending[_KH].to_numpy(dtype=np.uint64)[batch].tolist(), batch.tolist(), strict=True))
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

    def removed(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.base is not None
        gone = ~self.seen
        return self.base.key_hashes[gone], self.base.dest_ids[gone]

    def delete_removed(self) -> None:
        key_hashes, ids = self.removed()
        has_id = np.array([isinstance(i, str) and i != "" for i in ids], dtype=bool)
        for kh in key_hashes[~has_id]:
            self.report.add_reject(
                Reject(f"#{int(kh):016x}", "cannot delete: no destination id was recorded for this key", "destination")
            )
        size = self._write_batch_size()
        obj = self.config.object
        for start in range(0, int(has_id.sum()), size):
            batch_keys = key_hashes[has_id][start : start + size]
            batch_ids = [str(i) for i in ids[has_id][start : start + size]]
            outcomes = self.destination.delete(obj, batch_ids)
            done = []
            for kh, outcome in zip(batch_keys, outcomes, strict=True):
                if outcome.ok:
                    done.append(int(kh))
                    self.report.deleted += 1
                else:
                    self.report.add_reject(Reject(f"#{int(kh):016x}", outcome.reason or "delete refused", "destination", code=outcome.code))
            self.report.batches += 1
            self.commit(JournalEntry.deletes(done))

    def _write_batch_size(self) -> int:
        limit = max(1, int(self.destination.max_batch_size))
        return min(self.config.batch_size or limit, limit)

    def finalize(self) -> None:
        assert self.base is not None
        self.store.finalize(self.base.apply(self.entries))

    def rebaseline(self) -> None:
        """Mark the whole current result as synced without sending anything."""
        assert self.base is not None
        keys = np.concatenate(self.key_hash_chunks) if self.key_hash_chunks else np.empty(0, dtype=np.uint64)
        rows = np.concatenate(self.row_hash_chunks) if self.row_hash_chunks else np.empty(0, dtype=np.uint64)
        duplicated = pd.Index(keys).duplicated(keep=False)
        keys, rows = keys[~duplicated], rows[~duplicated]
        positions = self.ck_index.get_indexer(keys)
        ids = np.where(positions >= 0, self.base.dest_ids[np.where(positions >= 0, positions, 0)] if len(self.base) else None, None)
        self.store.finalize(
            Checkpoint(self.base.target_fingerprint, self.base.payload_fingerprint, keys, rows, ids.astype(object))
        )


def run_sync(
    chunks: Iterable[pd.DataFrame],
    destination: Destination,
    store: CheckpointStore,
    config: SyncConfig,
    *,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SyncReport:
    """Sync a query result (an iterable of DataFrame chunks) into ``destination``; return the report.

    Raises ``RejectRatioExceeded`` (after committing every accepted record) when more rows
    were rejected than ``config.max_reject_ratio`` allows, and re-raises destination errors
    after committing the batches that completed, so a retry resumes from there.
    """
    log = log or logging.getLogger("airflow_provider_retl.sync")
    started = clock()
    run = _Run(destination, store, config, log, clock)
    mode: Mode = config.mode  # type: ignore[assignment]
    run.load_checkpoint()
    for chunk in chunks:
        run.read_chunk(chunk)
    pending = run.finish_read()
    report = run.report
    run.progress(
        "read %d rows to the end: %d new, %d changed, %d removed, %d unchanged",
        report.rows_read,
        report.planned["new"],
        report.planned["changed"],
        report.planned["removed"],
        report.unchanged,
        force=True,
    )

    if config.rebaseline:
        run.rebaseline()
        return _finish(run, started)

    obj = config.object
    kinds = pending[_KIND].to_numpy(dtype=object)
    has_id = np.array([isinstance(i, str) and i != "" for i in pending[_ID].to_numpy()], dtype=bool)
    events = destination.supports_events(obj)
    if events:
        if mode not in (Mode.UPSERT, Mode.INSERT):
            raise ConfigurationError(f"{obj!r} is an event stream: events are only ever inserted; use mode='insert'")
        plan = plan_events(kinds, pending[_ID].to_numpy(dtype=object) == PENDING)
    else:
        plan = plan_changes(
            kinds,
            has_id,
            mode,
            can_upsert=destination.supports_upsert(obj, run.match_field),
            needs_lookup=destination.needs_lookup(obj),
        )
    report.plan = plan.counts()
    for reason, rows in plan.skipped.items():
        if len(rows):
            report.skip(reason, len(rows))
    if mode is not Mode.MIRROR and report.planned["removed"]:
        report.skip(SKIP_NOT_MIRROR, report.planned["removed"])
    if mode is Mode.MIRROR and report.planned["removed"] and not destination.supports_delete(obj):
        raise ConfigurationError(f"mode='mirror' needs deletes, which this destination does not support for {obj!r}")

    if config.dry_run:
        # Validate what would be sent, so a dry run also reports the rejects; send nothing.
        for action in (Action.UPSERT, Action.UPDATE, Action.CREATE, Action.LOOKUP, Action.SEND_EVENT):
            for rows in run.batches(plan.rows(action), 1000):
                _, rejects = run.wire_batch(pending, rows, action)
                for reject in rejects:
                    report.add_reject(reject)
        return _finish(run, started)

    run.push_started = clock()
    total = int(sum(len(plan.rows(a)) for a in Action))
    size = run._write_batch_size()
    jobs = [(a, b) for a in (Action.UPSERT, Action.UPDATE, Action.CREATE) for b in run.batches(plan.rows(a), size)]
    if events:
        send = plan.rows(Action.SEND_EVENT)
        if len(plan.rows(Action.RECONCILE)):
            send = np.concatenate([send, run.reconcile_events(pending, plan.rows(Action.RECONCILE))])
        jobs = [(Action.SEND_EVENT, b) for b in run.batches(send, size)]
    threshold = destination.bulk_threshold(obj)
    if threshold is not None and len(plan.rows(Action.UPSERT)) >= threshold:
        # Large syncs: one bulk job per bulk_batch_size records instead of thousands of calls.
        bulk_size = max(1, int(destination.bulk_batch_size))
        jobs = [(Action.BULK_UPSERT, b) for b in run.batches(plan.rows(Action.UPSERT), bulk_size)]
        jobs += [(a, b) for a in (Action.UPDATE, Action.CREATE) for b in run.batches(plan.rows(a), size)]
    lookup_rows = plan.rows(Action.LOOKUP)
    if len(lookup_rows):
        found, missing = run.lookup_rows(pending, lookup_rows)
        on_found, on_missing = after_lookup(mode)
        if on_found is None and len(found):
            report.skip("insert mode: record already exists", len(found))
            # Remember the id so later runs need no lookup; row hash 0 means "content not synced".
            run.commit(
                JournalEntry.puts(
                    pending[_KH].to_numpy(dtype=np.uint64)[found],
                    np.zeros(len(found), dtype=np.uint64),
                    pending[_ID].to_numpy()[found],
                )
            )
        elif on_found is not None:
            jobs += [(on_found, b) for b in run.batches(found, size)]
        if on_missing is None and len(missing):
            report.skip("update mode: record not found in destination", len(missing))
        elif on_missing is not None:
            jobs += [(on_missing, b) for b in run.batches(missing, size)]
    run.run_pool(jobs, pending, total)
    if mode is Mode.MIRROR:
        run.delete_removed()
    run._push_progress(total, total, force=True)
    run.finalize()
    return _finish(run, started)


def _finish(run: _Run, started: float) -> SyncReport:
    report = run.report
    report.requests = run.destination.request_count - run.requests_at_start
    report.retries = run.destination.retry_count - run.retries_at_start
    report.seconds = round(run.clock() - started, 3)
    report.rows_per_second = round(report.rows_read / report.seconds, 1) if report.seconds > 0 else 0.0
    run.log.info("%s", report.summary())
    ratio = run.config.max_reject_ratio
    if ratio is not None and report.rows_read and report.rejected / report.rows_read > ratio:
        raise RejectRatioExceeded(
            f"{report.rejected} of {report.rows_read} rows rejected ({report.rejected / report.rows_read:.1%}), "
            f"more than max_reject_ratio={ratio:.1%}; accepted rows were synced and checkpointed",
            report,
        )
    return report
