"""The snapshot diff: a query result, chunk by chunk, against the checkpoint.

Warehouses have no change feed, so changes are found by hashing every row and comparing
it with the checkpoint of the last delivery. The whole result is read before anything is
decided: duplicated keys are rejected (every copy, so the outcome never depends on row
order) and keys are only "removed" once the query was read to its end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import HASH_ALGORITHM, Checkpoint, CheckpointStore
from airflow_provider_retl.sync.config import SyncConfig, digest
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import CheckpointError, ConfigurationError
from airflow_provider_retl.sync.legacy import LEGACY_CHECKPOINT_NOTE, LEGACY_HASH_ALGORITHM, legacy_key_hashes
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.records import PENDING, ChangeKind, Reject, SyncReport

# Internal columns of the pending frame (the changed rows and what is known about them).
KEY = "__retl_key"
KEY_HASH = "__retl_key_hash"
ROW_HASH = "__retl_row_hash"
DEST_ID = "__retl_dest_id"
KIND = "__retl_kind"
INTERNAL = [KEY, KEY_HASH, ROW_HASH, DEST_ID, KIND]

#: "No destination id" as a 0-d object array, the fill np.where broadcasts (its typing takes arrays, not a bare None).
_NO_ID = np.array(None, dtype=object)


def _resolve_column(name: str, columns: Sequence[str], what: str) -> str:
    """Find ``name`` among the result's columns, case-insensitively when unambiguous (Snowflake)."""
    if name in columns:
        return name
    folded = [c for c in columns if str(c).lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ConfigurationError(f"{what} {name!r} is not a column of the query result; columns are: {list(columns)}")


def duplicate_key_reject(key: str, copies: int) -> Reject:
    """Every copy of a duplicated key is rejected, so the outcome never depends on row order."""
    return Reject(key, f"duplicate primary key: {copies} rows share it; none of them is synced", "source")


def check_unique_columns(columns: Sequence[str]) -> None:
    """Two result columns with one name (``select a as x, b as x``): which one is sent would be an accident.

    Raises ConfigurationError naming them instead of letting the last one win.
    """
    counts: dict[str, int] = {}
    for column in columns:
        counts[str(column)] = counts.get(str(column), 0) + 1
    duplicated = sorted(name for name, n in counts.items() if n > 1)
    if duplicated:
        raise ConfigurationError(
            f"the query result has duplicate column names {duplicated}: only one of each could be sent, and "
            f"which one would be an accident; give every column its own alias"
        )


class ReplacedIdentityError(ConfigurationError):
    """A run would remove and re-create most keys at once: a replaced key, not a change of data."""


class EventResendError(ConfigurationError):
    """An events sync lost what it knew as sent (checkpoint reset); sending would repeat past events."""


class LiveHolders:
    """Destination id -> the live keys (key hash, key text or None) that hold it; moves made this run on top.

    Built in C-speed steps (one dict from zipped lists) because it spans the whole
    checkpoint, while each lookup (one per written record) is a dict hit.
    """

    def __init__(
        self, ids: np.ndarray | None = None, key_hashes: np.ndarray | None = None, texts: np.ndarray | None = None
    ) -> None:
        self._key_hashes = np.empty(0, dtype=np.uint64) if key_hashes is None else key_hashes
        self._texts = np.empty(0, dtype=object) if texts is None else texts
        ids = np.empty(0, dtype=object) if ids is None else ids
        texts_of_ids = ids.tolist()
        self._first: dict[str, int] = dict(zip(texts_of_ids, range(len(ids)), strict=True))
        self._many: dict[str, list[int]] = {}
        if len(self._first) < len(ids):
            # Two live keys on one id (a state older runs could leave): rare, so a Python pass is fine.
            seen: dict[str, list[int]] = {}
            for position, dest_id in enumerate(texts_of_ids):
                seen.setdefault(dest_id, []).append(position)
            self._many = {dest_id: positions for dest_id, positions in seen.items() if len(positions) > 1}
        self._moved: dict[str, list[tuple[int, str | None]]] = {}

    def get(self, dest_id: str) -> list[tuple[int, str | None]]:
        if dest_id in self._moved:
            return self._moved[dest_id]
        positions = self._many.get(dest_id)
        if positions is None:
            position = self._first.get(dest_id)
            positions = [] if position is None else [position]
        return [(int(self._key_hashes[p]), self._texts[p]) for p in positions]

    def set(self, dest_id: str, holders: list[tuple[int, str | None]]) -> None:
        self._moved[dest_id] = holders

    def holds(self, dest_id: str) -> bool:
        return bool(self.get(dest_id))


class SnapshotDiff:
    """Reads a query result against a checkpoint and keeps only what must be sent."""

    def __init__(
        self,
        destination: Destination,
        store: CheckpointStore,
        config: SyncConfig,
        report: SyncReport,
        progress: Progress,
    ):
        self.destination = destination
        self.store = store
        self.config = config
        self.report = report
        self.progress = progress
        #: What the destination can do with the object, asked once for the run.
        self.caps = destination.capabilities(config.object)
        self.match_field: str | None = None
        self.field_sources: dict[str, str] | None = None  # destination field -> source column
        self.key_columns: list[str] = []
        self.loaded: Checkpoint | None = None
        self.base: Checkpoint | None = None
        self.ck_index: pd.Index = pd.Index([], dtype=np.uint64)
        self.seen: np.ndarray = np.zeros(0, dtype=bool)
        self.key_hash_chunks: list[np.ndarray] = []
        self.row_hash_chunks: list[np.ndarray] = []
        self.pending_chunks: list[pd.DataFrame] = []
        self.fold_keys = False
        #: Partitioned runs: rows with a usable key owned by other partitions, and rows left to
        #: other partitions in all (those plus NULL/empty keys, which partition 0 rejects).
        self.usable_elsewhere = 0
        self.rows_elsewhere = 0
        #: Key text of every checkpointed key seen this run (by checkpoint position), so a match
        #: collision can name the live key that holds a destination id even when it is unchanged.
        self.live_key_texts: np.ndarray = np.empty(0, dtype=object)
        #: The loaded checkpoint is the previous release's: its entries are found by canon2 key hashes too.
        self.legacy = False
        #: Upgrade: checkpoint entries that are stale copies of a key stored anew (dropped once read).
        self.superseded: np.ndarray = np.zeros(0, dtype=bool)

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
        target = self.config.target_fingerprint(self.match_field, fold_keys=self.fold_keys)
        loaded = self.loaded
        if loaded is None:
            base = Checkpoint(target, payload_fingerprint)
        elif loaded.hash_algorithm == LEGACY_HASH_ALGORITHM and loaded.target_fingerprint == target:
            # The previous release's checkpoint: what it knows (ids, sent events, in-doubt marks) still
            # holds, only some key texts changed. Keys are translated as rows are read (read_chunk);
            # row hashes cannot be, so every row is re-planned by its id (no lookup, no event re-sent).
            self.report.checkpoint_reset = LEGACY_CHECKPOINT_NOTE
            base = Checkpoint(
                target,
                payload_fingerprint,
                loaded.key_hashes.copy(),
                np.zeros(len(loaded), dtype=np.uint64),
                loaded.dest_ids,
            )
            self.legacy = True
        elif loaded.hash_algorithm != HASH_ALGORITHM:
            self.report.checkpoint_reset = "hash algorithm changed: every row is re-planned"
            base = Checkpoint(target, payload_fingerprint)
        elif loaded.target_fingerprint != target:
            self.report.checkpoint_reset = (
                "destination, object, primary key, match field or partition changed: destination ids discarded, "
                "every row re-planned"
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
        self.superseded = np.zeros(len(base), dtype=bool)
        self.live_key_texts = np.full(len(base), None, dtype=object)

    def _setup_columns(self, columns: Sequence[str]) -> None:
        cfg = self.config
        check_unique_columns(columns)
        self.key_columns = [_resolve_column(k, columns, "primary key column") for k in cfg.primary_keys]
        if cfg.mapping is None:
            self.field_sources = {str(c): c for c in columns}
        else:
            self.field_sources = {
                dest: _resolve_column(src, columns, f"mapping source for {dest!r}") for dest, src in cfg.mapping.items()
            }
        self.match_field = cfg.match_on or self.caps.default_match
        if self.match_field is None and len(self.key_columns) == 1:
            # Identity: the field the key column is sent as.
            key_column = self.key_columns[0]
            self.match_field = next((d for d, s in self.field_sources.items() if s == key_column), str(key_column))
        if self.match_field is not None and self.match_field not in self.field_sources:
            folded = [f for f in self.field_sources if f.lower() == self.match_field.lower()]
            if not folded and cfg.match_on is None:
                # The destination's other name for its match field (Mailchimp: email for email_address).
                aliases = {a.lower() for a in self.caps.match_aliases}
                folded = [f for f in self.field_sources if f.lower() in aliases][:1]
            if len(folded) == 1:
                self.match_field = folded[0]
            elif self.caps.lookup:
                raise ConfigurationError(
                    f"match field {self.match_field!r} is not among the fields sent: {list(self.field_sources)}; "
                    f"add it to the query or mapping, or set match_on"
                )
        # Email keys: "A@x.com " and "a@x.com" are one record to the destination, so they are one
        # key here too (their copies are then duplicates, rejected, instead of overwriting each other).
        key_field = next((d for d, s in self.field_sources.items() if s == self.key_columns[0]), None)
        self.fold_keys = (
            len(self.key_columns) == 1
            and key_field is not None
            and key_field == self.match_field
            and self.caps.ignores_case(self.match_field)
        )
        # Tell the destination what this sync sends (Zendesk's mirror unsets exactly these fields).
        key_fields = [d for d, s in self.field_sources.items() if s in self.key_columns]
        self.destination.sync_fields(cfg.object, list(self.field_sources), key_fields)
        payload_fingerprint = digest(sorted(self.field_sources.items()))
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
        unfolded = parts[0]
        legacy_hashes = (
            legacy_key_hashes(chunk, self.key_columns, parts, fold_keys=self.fold_keys) if self.legacy else None
        )
        if self.fold_keys:
            parts = [fp.fold_case(parts[0])]  # the same array when nothing needed folding
        bad, reasons = self.key_problems(parts)
        keys = fp.join_key_parts(parts)
        partition = self.config.partition
        if partition is None or partition[0] == 0:  # partitioned: partition 0 alone reports bad keys
            for i, reason in sorted(reasons.items()):
                self.report.add_reject(Reject(fp.display_key(keys[i]), reason, "source"))
        else:
            self.rows_elsewhere += len(reasons)

        good = ~bad
        keys = keys[good]
        payload = pd.DataFrame({dest: chunk[src] for dest, src in self.field_sources.items()})
        if bad.any():
            payload = payload[good]
            if legacy_hashes is not None:
                legacy_hashes = legacy_hashes[good]
        key_hashes = fp.key_hashes(keys)
        if partition is not None:
            # A key's partition is a function of its key hash, so duplicates share one partition.
            mine = key_hashes % np.uint64(partition[1]) == np.uint64(partition[0])
            self.usable_elsewhere += len(mine) - int(mine.sum())
            self.rows_elsewhere += len(mine) - int(mine.sum())
            keys, payload, key_hashes = keys[mine], payload[mine], key_hashes[mine]
            if legacy_hashes is not None:
                legacy_hashes = legacy_hashes[mine]
        # A single key column's text, unfolded, is also what the row hash hashes for that column: reuse it.
        key_column_hashes = None
        if len(parts) == 1 and parts[0] is unfolded:
            key_column_hashes = {d: key_hashes for d, src in self.field_sources.items() if src == self.key_columns[0]}
        row_hashes = fp.row_hashes(payload, key_column_hashes)
        positions = self.ck_index.get_indexer(key_hashes)
        if legacy_hashes is not None:
            positions = self._translate_legacy_keys(key_hashes, legacy_hashes, positions)
        known = positions >= 0
        self.seen[positions[known]] = True
        self.live_key_texts[positions[known]] = keys[known]
        safe_positions = np.where(known, positions, 0)
        if len(self.base):
            ck_rows = np.where(known, self.base.row_hashes[safe_positions], 0)
            ids = np.where(known, self.base.dest_ids[safe_positions], _NO_ID)
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
        if self.config.rebaseline:
            self.row_hash_chunks.append(row_hashes)
        changed = kinds != "unchanged"
        if changed.any():
            pending = payload[changed].reset_index(drop=True)
            pending[KEY] = keys[changed]
            pending[KEY_HASH] = key_hashes[changed]
            pending[ROW_HASH] = row_hashes[changed]
            pending[DEST_ID] = ids[changed]
            pending[KIND] = kinds[changed]
            self.pending_chunks.append(pending)
        self.progress("read %d rows", self.report.rows_read)

    def _translate_legacy_keys(
        self, key_hashes: np.ndarray, legacy_hashes: np.ndarray, positions: np.ndarray
    ) -> np.ndarray:
        """Move the checkpoint entries found by a row's canon2 key hash to its canon3 one; the rows' positions.

        Only entries no row holds by its canon3 hash are moved, once each: a canon2 text two rows share
        (``"Straße"`` and ``"strasse"`` casefold alike) stays with the row whose key text did not change.
        """
        assert self.base is not None
        if not len(self.base):
            return positions
        legacy_positions = self.ck_index.get_indexer(legacy_hashes)
        # A key found by its new hash AND by its old one at another entry: a failed upgrading try already
        # stored it anew (journal); the old entry is a stale copy, not a removed key (mirror would delete it).
        stale = (positions >= 0) & (legacy_positions >= 0) & (legacy_positions != positions)
        if stale.any():
            self.superseded[legacy_positions[stale]] = True
            self.seen[legacy_positions[stale]] = True
        taken = np.zeros(len(self.base), dtype=bool)
        taken[positions[positions >= 0]] = True
        taken |= self.seen
        move = (positions < 0) & (legacy_positions >= 0)
        move[move] = ~taken[legacy_positions[move]]
        if not move.any():
            return positions
        rows = np.flatnonzero(move)
        # One row per entry (the first): two canon3 keys with one canon2 text cannot both own it.
        _, first = np.unique(legacy_positions[rows], return_index=True)
        rows = rows[np.sort(first)]
        self.base.key_hashes[legacy_positions[rows]] = key_hashes[rows]
        self.ck_index = pd.Index(self.base.key_hashes, dtype=np.uint64)
        positions = positions.copy()
        positions[rows] = legacy_positions[rows]
        return positions

    def key_problems(self, parts: list[np.ndarray]) -> tuple[np.ndarray, dict[int, str]]:
        """Rows whose key has a NULL or blank part (canonical key parts), and why: the first such column."""
        bad = np.zeros(len(parts[0]), dtype=bool)
        reasons: dict[int, str] = {}
        for column, part in zip(self.key_columns, parts, strict=True):
            null = part == fp.NULL
            empty = ~null & fp.blank(part)
            for i in np.flatnonzero(null & ~bad):
                reasons[int(i)] = f"primary key column {column!r} is NULL"
            for i in np.flatnonzero(empty & ~bad):
                reasons[int(i)] = f"primary key column {column!r} is empty"
            bad |= null | empty
        return bad, reasons

    def finish_read(self) -> pd.DataFrame:
        """Duplicates and removed keys, once the whole result is known."""
        if self.base is None:
            # An empty result: no columns seen; keep the checkpoint's own payload fingerprint.
            self.field_sources = {}
            self.match_field = self.config.match_on or self.caps.default_match
            self._adopt_identity_of_checkpoint()
            payload = self.loaded.payload_fingerprint if self.loaded else digest([])
            self._adopt_checkpoint(payload)
        if self.superseded.any():
            self._drop_superseded()
        all_keys = np.concatenate(self.key_hash_chunks) if self.key_hash_chunks else np.empty(0, dtype=np.uint64)
        uniques, inverse, counts = np.unique(all_keys, return_inverse=True, return_counts=True)
        duplicated = counts[inverse] > 1
        if duplicated.any():
            # Key text is kept only for changed rows (memory); a duplicate is almost always among
            # them, and otherwise it is shown by its hash.
            dup_keys = uniques[counts > 1]
            texts: dict[int, str] = {}
            for chunk in self.pending_chunks:
                hit = np.isin(chunk[KEY_HASH].to_numpy(dtype=np.uint64), dup_keys)
                for key_hash, text in zip(chunk[KEY_HASH].to_numpy(dtype=np.uint64)[hit], chunk[KEY].to_numpy()[hit]):
                    texts.setdefault(int(key_hash), fp.display_key(text))
            dup_counts = counts[inverse]
            for i in np.flatnonzero(duplicated):
                key_hash = int(all_keys[i])
                self.report.add_reject(
                    duplicate_key_reject(texts.get(key_hash, f"#{key_hash:016x}"), int(dup_counts[i]))
                )
        pending = (
            pd.concat(self.pending_chunks, ignore_index=True)
            if self.pending_chunks
            else pd.DataFrame(columns=[*(self.field_sources or {}), *INTERNAL])
        )
        if duplicated.any():
            dup_keys = uniques[counts > 1]
            pending = pending[~np.isin(pending[KEY_HASH].to_numpy(dtype=np.uint64), dup_keys)].reset_index(drop=True)
        self.report.unchanged = len(all_keys) - int(duplicated.sum()) - len(pending)
        if self.config.partition is not None:
            self.report.rows_in_partition = self.report.rows_read - self.rows_elsewhere
        self.report.planned["new"] = int((pending[KIND] == ChangeKind.NEW.value).sum())
        self.report.planned["changed"] = int((pending[KIND] == ChangeKind.CHANGED.value).sum())
        self.report.planned["removed"] = int((~self.seen).sum())
        return pending

    def _drop_superseded(self) -> None:
        """Remove the stale copies found while upgrading (everything aligned with the base shrinks with it)."""
        assert self.base is not None
        keep = ~self.superseded
        base = self.base
        self.base = Checkpoint(
            base.target_fingerprint,
            base.payload_fingerprint,
            base.key_hashes[keep],
            base.row_hashes[keep],
            base.dest_ids[keep],
        )
        self.ck_index = pd.Index(self.base.key_hashes, dtype=np.uint64)
        self.seen = self.seen[keep]
        self.live_key_texts = self.live_key_texts[keep]
        self.superseded = np.zeros(len(self.base), dtype=bool)

    def _adopt_identity_of_checkpoint(self) -> None:
        """An empty result has no columns: take the match field and key folding the checkpoint was made with.

        Otherwise it would look like another sync, silently drop the checkpoint and defeat mirror
        mode's empty-source guard.
        """
        if self.loaded is None:
            return
        cfg = self.config
        candidates = [self.match_field]
        if len(cfg.primary_keys) == 1:
            key = cfg.primary_keys[0].lower()
            candidates.append(cfg.primary_keys[0])
            candidates += [dest for dest, src in (cfg.mapping or {}).items() if src.lower() == key]
        for match_field in candidates:
            for fold_keys in (False, True):
                if cfg.target_fingerprint(match_field, fold_keys=fold_keys) == self.loaded.target_fingerprint:
                    self.match_field, self.fold_keys = match_field, fold_keys
                    return

    def base_differs_from_store(self) -> bool:
        """True when finalizing would store something new even without this run's entries."""
        loaded = self.loaded
        return (
            loaded is None
            or loaded.resumed_entries > 0  # a failed try's journal still to fold
            or self.base is None
            or loaded.hash_algorithm != self.base.hash_algorithm
            or loaded.target_fingerprint != self.base.target_fingerprint
            or loaded.payload_fingerprint != self.base.payload_fingerprint
            or self.config.full_resync
        )

    def read_key_hashes(self) -> np.ndarray:
        """Hashes of every usable key this run read in its partition (duplicated ones too)."""
        return np.concatenate(self.key_hash_chunks) if self.key_hash_chunks else np.empty(0, dtype=np.uint64)

    def removed(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.base is not None
        gone = ~self.seen
        return self.base.key_hashes[gone], self.base.dest_ids[gone]

    def live_holders(self) -> LiveHolders:
        """Destination id -> the live keys the checkpoint gives it (live: read this run).

        A store that diffs elsewhere (the warehouse) keeps no ids here; its pending rows
        still carry theirs.
        """
        if self.base is None or not len(self.base) or len(self.seen) != len(self.base):
            return LiveHolders()
        positions = np.flatnonzero(self.seen)
        ids = self.base.dest_ids[positions]
        usable = ~pd.isna(ids)
        usable[usable] = (ids[usable] != PENDING) & (ids[usable] != "")
        return LiveHolders(ids[usable], self.base.key_hashes[positions[usable]], self.live_key_texts[positions[usable]])

    def rebaseline(self) -> None:
        """Mark the whole current result as synced without sending anything."""
        assert self.base is not None
        keys = np.concatenate(self.key_hash_chunks) if self.key_hash_chunks else np.empty(0, dtype=np.uint64)
        rows = np.concatenate(self.row_hash_chunks) if self.row_hash_chunks else np.empty(0, dtype=np.uint64)
        duplicated = pd.Index(keys).duplicated(keep=False)
        keys, rows = keys[~duplicated], rows[~duplicated]
        positions = self.ck_index.get_indexer(keys)
        found = positions >= 0
        if len(self.base):
            ids = np.where(found, self.base.dest_ids[np.where(found, positions, 0)], _NO_ID)
        else:
            ids = np.full(len(keys), None, dtype=object)
        self.store.finalize(
            Checkpoint(self.base.target_fingerprint, self.base.payload_fingerprint, keys, rows, ids.astype(object))
        )
