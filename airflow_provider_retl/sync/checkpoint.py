"""Checkpoints: what the last successful run delivered, as hashes and destination ids.

A checkpoint holds, per primary key: key hash -> (row hash, destination id). No raw
values are stored. It carries its format version, the hash algorithm, and two
fingerprints of what defines the sync:

* ``target_fingerprint`` (destination, object, key, match field): when it differs the
  destination ids mean nothing for this sync, so the whole checkpoint is discarded;
* ``payload_fingerprint`` (the mapping): when it differs, the ids are kept but every
  row is re-sent, because the same row now produces another payload.

Stores persist a *base* plus an append-only *journal* of this run's committed
outcomes, so committing progress after a batch costs in proportion to the batch.
``finalize`` folds everything into a new base; ``load`` folds a journal a killed or
failed try left behind, which is how a retry resumes where it stopped.

One run of a sync at a time: a store that supports it keeps a *lease* (owner, expiry)
beside the checkpoint. ``run_sync`` takes it before it loads (waiting up to ``lease_wait``
seconds for another holder), a heartbeat thread renews it, every commit and ``finalize``
checks it first (a try whose lease was lost or taken over stops without committing), and
it is released when the run ends. See :class:`Lease`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import functools
import inspect
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
import orjson

from airflow_provider_retl.sync.errors import CheckpointError, RetryableSyncError

FORMAT_VERSION = 1
#: Canonical value encoding + pandas' SipHash-2-4 (fixed key) combined per column.
# canon2: decimals keep every digit (canon1 rounded to 28); canon3: naive timestamps are UTC (+00:00 suffix)
HASH_ALGORITHM = "canon3-siphash64"
#: The previous release's algorithm: its checkpoints are upgraded (sync.legacy), not reset.
LEGACY_HASH_ALGORITHM = "canon2-siphash64"

_EMPTY_U64 = np.empty(0, dtype=np.uint64)


# Large payloads are zlib-compressed ("z:" prefix); small journal entries are not worth it.
_COMPRESS_FROM = 4096


def _pack(raw: bytes) -> str:
    if len(raw) >= _COMPRESS_FROM:
        return "z:" + base64.b64encode(zlib.compress(raw, 1)).decode()
    return base64.b64encode(raw).decode()


def _unpack(text: str) -> bytes:
    if text.startswith("z:"):
        return zlib.decompress(base64.b64decode(text[2:]))
    return base64.b64decode(text)


def _pack_u64(values: np.ndarray) -> str:
    return _pack(np.ascontiguousarray(values, dtype="<u8").tobytes())


def _unpack_u64(text: str) -> np.ndarray:
    return np.frombuffer(_unpack(text), dtype="<u8").astype(np.uint64)


def _pack_ids(ids: np.ndarray) -> str:
    return _pack(orjson.dumps(list(ids)))


def _unpack_ids(text: str) -> np.ndarray:
    return np.array(orjson.loads(_unpack(text)), dtype=object)


@dataclass
class JournalEntry:
    """Outcomes of one committed batch: keys now delivered (with row hash and id) or deleted."""

    key_hashes: np.ndarray = field(default_factory=lambda: _EMPTY_U64)
    row_hashes: np.ndarray = field(default_factory=lambda: _EMPTY_U64)
    dest_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    deleted: np.ndarray = field(default_factory=lambda: _EMPTY_U64)

    @classmethod
    def puts(cls, key_hashes: npt.ArrayLike, row_hashes: npt.ArrayLike, dest_ids: Iterable[str | None]) -> JournalEntry:
        return cls(
            key_hashes=np.asarray(key_hashes, dtype=np.uint64),
            row_hashes=np.asarray(row_hashes, dtype=np.uint64),
            dest_ids=np.asarray(list(dest_ids), dtype=object),
        )

    @classmethod
    def deletes(cls, key_hashes: npt.ArrayLike) -> JournalEntry:
        return cls(deleted=np.asarray(key_hashes, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.key_hashes) + len(self.deleted)

    @classmethod
    def merge(cls, entries: Sequence[JournalEntry]) -> JournalEntry:
        """One entry equivalent to ``entries`` applied in order (puts and deletes never share a key in one run)."""
        if len(entries) == 1:
            return entries[0]
        return cls(
            key_hashes=np.concatenate([e.key_hashes for e in entries]).astype(np.uint64),
            row_hashes=np.concatenate([e.row_hashes for e in entries]).astype(np.uint64),
            dest_ids=np.concatenate([e.dest_ids for e in entries]) if entries else np.empty(0, dtype=object),
            deleted=np.concatenate([e.deleted for e in entries]).astype(np.uint64),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "k": _pack_u64(self.key_hashes),
            "r": _pack_u64(self.row_hashes),
            "i": _pack_ids(self.dest_ids),
            "d": _pack_u64(self.deleted),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        try:
            entry = cls(
                key_hashes=_unpack_u64(data["k"]),
                row_hashes=_unpack_u64(data["r"]),
                dest_ids=_unpack_ids(data["i"]),
                deleted=_unpack_u64(data["d"]),
            )
        except Exception as exc:  # any decoding problem means the journal is not ours
            raise CheckpointError(f"checkpoint journal entry is unreadable: {type(exc).__name__}") from exc
        if not (len(entry.key_hashes) == len(entry.row_hashes) == len(entry.dest_ids)):
            raise CheckpointError("checkpoint journal entry is inconsistent (array lengths differ)")
        return entry


@dataclass
class Checkpoint:
    """What has been delivered for one sync: arrays aligned by position, keys unique."""

    target_fingerprint: str
    payload_fingerprint: str
    key_hashes: np.ndarray = field(default_factory=lambda: _EMPTY_U64)
    row_hashes: np.ndarray = field(default_factory=lambda: _EMPTY_U64)
    dest_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    format_version: int = FORMAT_VERSION
    hash_algorithm: str = HASH_ALGORITHM
    #: Journal entries folded in by ``load`` (a previous try's progress); 0 for a clean base.
    resumed_entries: int = 0

    def __len__(self) -> int:
        return len(self.key_hashes)

    def with_fingerprints(self, target: str, payload: str) -> Checkpoint:
        return Checkpoint(target, payload, self.key_hashes, self.row_hashes, self.dest_ids)

    def apply(self, entries: Sequence[JournalEntry]) -> Checkpoint:
        """Fold journal entries (in order; later wins) into a new checkpoint."""
        if not entries:
            return self
        keys = [self.key_hashes]
        rows = [self.row_hashes]
        ids = [self.dest_ids]
        dels = [np.zeros(len(self.key_hashes), dtype=bool)]
        for entry in entries:
            keys += [entry.key_hashes, entry.deleted]
            rows += [entry.row_hashes, np.zeros(len(entry.deleted), dtype=np.uint64)]
            ids += [entry.dest_ids, np.full(len(entry.deleted), None, dtype=object)]
            dels += [np.zeros(len(entry.key_hashes), dtype=bool), np.ones(len(entry.deleted), dtype=bool)]
        all_keys = np.concatenate(keys).astype(np.uint64)
        all_rows = np.concatenate(rows).astype(np.uint64)
        # Ids stay a plain object array: a pandas column would turn None into NaN (pandas 3 strings).
        all_ids = np.concatenate([np.asarray(i, dtype=object) for i in ids])
        deleted = np.concatenate(dels)
        # Later entries win: the last position of each key, kept in position order.
        last = np.sort(len(all_keys) - 1 - np.unique(all_keys[::-1], return_index=True)[1])
        last = last[~deleted[last]]
        return Checkpoint(
            self.target_fingerprint,
            self.payload_fingerprint,
            all_keys[last],
            all_rows[last],
            all_ids[last],
            self.format_version,
            self.hash_algorithm,
            self.resumed_entries,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "hash_algorithm": self.hash_algorithm,
            "target_fingerprint": self.target_fingerprint,
            "payload_fingerprint": self.payload_fingerprint,
            "count": len(self),
            "keys": _pack_u64(self.key_hashes),
            "rows": _pack_u64(self.row_hashes),
            "ids": _pack_ids(self.dest_ids),
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict) or "format_version" not in data:
            raise CheckpointError("checkpoint is unreadable: not a checkpoint document")
        _check_format(data.get("format_version"), data.get("hash_algorithm"))
        try:
            checkpoint = cls(
                target_fingerprint=str(data["target_fingerprint"]),
                payload_fingerprint=str(data["payload_fingerprint"]),
                key_hashes=_unpack_u64(data["keys"]),
                row_hashes=_unpack_u64(data["rows"]),
                dest_ids=_unpack_ids(data["ids"]),
                format_version=int(data["format_version"]),
                hash_algorithm=str(data["hash_algorithm"]),
            )
        except Exception as exc:
            raise CheckpointError(f"checkpoint is unreadable: {type(exc).__name__}") from exc
        if not (len(checkpoint.key_hashes) == len(checkpoint.row_hashes) == len(checkpoint.dest_ids) == data["count"]):
            raise CheckpointError("checkpoint is unreadable: its arrays do not match its count")
        return checkpoint


def _legacy_of(journal_doc: dict[str, Any]) -> str | None:
    """The hash algorithm whose checkpoints a journal of ``journal_doc``'s algorithm may be folded onto."""
    return LEGACY_HASH_ALGORITHM if journal_doc.get("hash_algorithm") == HASH_ALGORITHM else None


def _check_format(version: Any, algorithm: Any) -> None:
    if not isinstance(version, int):
        raise CheckpointError("checkpoint is unreadable: no format version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint was written by a newer airflow-provider-retl (format {version}, this one reads "
            f"up to {FORMAT_VERSION}); upgrade the provider or reset with full_resync=True"
        )
    if version < 1:
        raise CheckpointError(f"checkpoint format {version} has no upgrade path")


# ---------------------------------------------------------------------------------------------
# Lease: one run of a sync at a time

#: Seconds a lease lives without renewal. A killed (or frozen) try blocks its sync this long at most.
LEASE_TTL = 120.0
#: Seconds a run waits for another holder's lease before it fails. Longer than ``LEASE_TTL``, so the
#: lease of a killed try always expires while its retry waits.
LEASE_WAIT = 150.0

log = logging.getLogger(__name__)


class SyncLeaseError(CheckpointError, RetryableSyncError):
    """Another run holds (or took over) this sync's lease; retrying later is the fix."""


class LeaseHeld(SyncLeaseError):
    """The lease is held by another run and did not free up within the wait."""

    def __init__(self, message: str, holder: LeaseHolder) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(SyncLeaseError):
    """This try's lease expired or was taken over: it must not commit or send anything more."""


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease and until when (``expires_at``: seconds since the epoch, wall clock).

    ``host`` and ``pid`` name the holder's process: a lease whose process is gone from this
    very host (a killed try) is over at once, without waiting for its expiry (``is_over``).
    """

    owner: str
    label: str
    expires_at: float
    host: str = ""
    pid: int = 0

    def is_over(self, now: float) -> bool:
        """Expired, or held by a process of this host that no longer exists (killed, crashed)."""
        if self.expires_at <= now:
            return True
        if not self.pid or self.host != _HOST or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # exists, owned by another user
        return False

    def describe(self) -> str:
        until = dt.datetime.fromtimestamp(self.expires_at, dt.UTC).isoformat(timespec="seconds")
        return f"{self.label or 'another run'} (lease {self.owner[:8]}, expires {until} unless renewed)"

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "label": self.label,
            "expires_at": self.expires_at,
            "host": self.host,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: Any) -> LeaseHolder | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                str(data["owner"]),
                str(data.get("label") or ""),
                float(data["expires_at"]),
                str(data.get("host") or ""),
                int(data.get("pid") or 0),
            )
        except (KeyError, TypeError, ValueError):
            return None


#: This machine, as lease holders record it: the host name plus the boot id, so two machines (or
#: two boots) never mistake each other's process ids for their own.
def _this_host() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


_HOST = _this_host()


def default_lease_label() -> str:
    """The process part of an owner label: host and pid (the run part comes from Airflow's context)."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


class LeaseBackend(Protocol):
    """The three lease primitives a store implements (atomic in the store's own way)."""

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        """Take the lease for ``holder`` if it is free, expired or already its own; else return the holder."""

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        """Extend ``holder``'s lease to ``holder.expires_at``; False when it is no longer held by it
        (expired at ``now`` or taken over): an expired lease is lost even if nobody took it yet."""

    def _lease_release(self, owner: str) -> None:
        """Drop the lease of ``owner`` if it still holds it (never another owner's)."""


class Lease:
    """One try's hold on a sync's lease: acquire (waiting), heartbeat renewal, checks, release.

    The owner is a random token per try (never reused), shown with ``label`` (the Airflow run
    and try, host and pid). The expiry is wall-clock time written into the store, so hosts
    that share a store must have clocks that agree to well within ``ttl`` (NTP).

    ``check()`` runs before every commit: it fails once the heartbeat found the lease lost, and
    confirms the lease with the store itself (renewing it) when the last confirmation is older
    than ``ttl / 4`` by this process's monotonic clock, which keeps counting while a process is
    frozen, so a try that wakes up after a long pause asks the store before it writes.
    """

    def __init__(
        self,
        backend: LeaseBackend,
        *,
        label: str = "",
        ttl: float = LEASE_TTL,
        wait: float = LEASE_WAIT,
        poll: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        heartbeat: bool = True,
    ) -> None:
        if ttl <= 0 or wait < 0:
            raise ValueError(f"lease ttl must be > 0 and wait >= 0; got ttl={ttl}, wait={wait}")
        self.backend = backend
        self.owner = uuid.uuid4().hex
        self.label = label or default_lease_label()
        self.ttl = float(ttl)
        self.wait = float(wait)
        self.poll = poll if poll is not None else min(2.0, max(0.05, self.ttl / 20))
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.held = False
        self.lost: str | None = None
        self._confirmed = 0.0
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _me(self) -> LeaseHolder:
        return LeaseHolder(self.owner, self.label, self.clock() + self.ttl, _HOST, os.getpid())

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait`` seconds for another holder; raise ``LeaseHeld``."""
        deadline = self.monotonic() + self.wait
        while True:
            holder = self.backend._lease_try_acquire(self._me(), self.clock())
            if holder is None:
                break
            if self.monotonic() >= deadline:
                with contextlib.suppress(Exception):  # withdraw a waiting claim; it would expire anyway
                    self.backend._lease_release(self.owner)
                raise LeaseHeld(
                    f"another run of this sync is in progress: {holder.describe()}. Waited {self.wait:.0f} s; "
                    f"a crashed run's lease expires by itself, so a retry after that goes on",
                    holder,
                )
            self.sleep(self.poll)
        self.held = True
        self.lost = None
        self._confirmed = self.monotonic()
        if self._heartbeat:
            self._thread = threading.Thread(target=self._beat, name="retl-lease-heartbeat", daemon=True)
            self._thread.start()

    def _renew(self) -> bool:
        if self.lost:
            return False
        started = self.monotonic()
        # No lock of ours is held during the store call: the file store takes its flock inside, and a
        # commit holds that flock while it checks the lease (lock order would invert).
        renewed = self.backend._lease_renew(self._me(), self.clock())
        with self._lock:
            if renewed:
                self._confirmed = max(self._confirmed, started)
            elif not self.lost:
                self.lost = "its lease expired or was taken over by another run"
        return renewed

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self._renew():
                    log.error("sync lease lost: %s; this try stops before its next commit", self.lost)
                    return
            except Exception as exc:  # noqa: BLE001 - a store hiccup; the next beat (or check) tries again
                log.warning("could not renew the sync lease (%s); retrying", type(exc).__name__)
                if self.monotonic() - self._confirmed > self.ttl:
                    self.lost = "its lease could not be renewed before it expired"
                    return

    def check(self, *, confirm: bool = False) -> None:
        """Raise ``LeaseLost`` unless this try still holds the lease (ask the store when due or ``confirm``)."""
        if not self.held:
            return
        if not self.lost and (confirm or self.monotonic() - self._confirmed > self.ttl / 4):
            self._renew()
        if self.lost:
            raise LeaseLost(f"this try must not commit: {self.lost} (owner {self.label})")

    def release(self) -> None:
        """Stop renewing and drop the lease (a lost lease is left to its new holder)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, self.ttl))
        if self.held and not self.lost:
            try:
                self.backend._lease_release(self.owner)
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                log.warning("could not release the sync lease (%s); it expires in %.0f s", type(exc).__name__, self.ttl)
        self.held = False


_F = TypeVar("_F", bound=Callable[..., Any])


def holding_lease(run: _F) -> _F:
    """Decorate ``run_sync``: hold the store's lease (if it has one) for the whole run, dry runs excepted."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        store = bound.arguments.get("store")
        config = bound.arguments.get("config")
        acquire = getattr(store, "acquire_lease", None)
        if acquire is None or getattr(config, "dry_run", False):
            return run(*args, **kwargs)
        acquire()
        try:
            return run(*args, **kwargs)
        finally:
            store.release_lease()  # type: ignore[union-attr]

    return wrapper  # type: ignore[return-value]


class LeasingMixin:
    """Lease plumbing for stores that implement ``LeaseBackend``: ``acquire_lease``, checks, release.

    ``lease_ttl``, ``lease_wait`` and ``lease_label`` may be set on an instance before the run.
    """

    lease_ttl: float = LEASE_TTL
    lease_wait: float = LEASE_WAIT
    lease_label: str = ""
    lease: Lease | None = None

    def acquire_lease(self) -> None:
        """Take this sync's lease for the run (``run_sync`` does this); see :class:`Lease`."""
        if not hasattr(self, "_lease_try_acquire") or (self.lease is not None and self.lease.held):
            return
        self.lease = Lease(self, label=self.lease_label, ttl=self.lease_ttl, wait=self.lease_wait)  # type: ignore[arg-type]
        self.lease.acquire()

    def release_lease(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def check_lease(self, *, confirm: bool = False) -> None:
        """Raise ``LeaseLost`` if this try's lease is gone; a no-op when no lease was taken."""
        if self.lease is not None:
            self.lease.check(confirm=confirm)


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a sync keeps its checkpoint: load, commit progress, finalize."""

    @property
    def description(self) -> str:
        """Where the checkpoint lives, for the report (never a secret)."""

    def load(self) -> Checkpoint | None:
        """The base with any leftover journal folded in; None when the sync never ran."""

    def commit(self, entry: JournalEntry, *, target_fingerprint: str, payload_fingerprint: str) -> None:
        """Durably append one batch's outcomes (cost proportional to the batch).

        The fingerprints travel with every journal entry so a first run that dies
        before ``finalize`` still leaves a journal that says which sync it belongs to.
        """

    def finalize(self, checkpoint: Checkpoint) -> None:
        """Replace the base with ``checkpoint`` and drop the journal."""


class JournalingStore(LeasingMixin):
    """A store built from five primitives: read/write a base document, append/read/clear a journal.

    Subclasses (Variable, XCom, file...) only move JSON documents; folding, format checks
    and error wrapping live here once. A subclass that also implements the ``LeaseBackend``
    primitives gets the sync lease: every commit and finalize checks it first.
    """

    def _guarded(self) -> contextlib.AbstractContextManager[Any]:
        """Held around check-then-write; a store with a real lock makes the pair atomic (file: flock)."""
        return contextlib.nullcontext()

    @property
    def description(self) -> str:
        """Where the checkpoint lives, for the report (never a secret); subclasses name theirs."""
        return "checkpoint"

    # Store developer overrides:
    def _read_base(self) -> Any | None:
        raise NotImplementedError

    def _write_base(self, document: dict[str, Any]) -> None:
        raise NotImplementedError

    def _append_journal(self, document: dict[str, Any]) -> None:
        raise NotImplementedError

    def _read_journal(self) -> list[Any]:
        raise NotImplementedError

    def _clear_journal(self) -> None:
        raise NotImplementedError

    def _read_base_checkpoint(self) -> Checkpoint | None:
        """The base as a Checkpoint; stores with a binary base (Parquet) override this."""
        document = self._read_base()
        return None if document is None else Checkpoint.from_json(document)

    # Framework part:
    def load(self) -> Checkpoint | None:
        base = self._read_base_checkpoint()
        journal_docs = self._read_journal()
        if not journal_docs:
            return base
        for doc in journal_docs:
            _check_format(doc.get("format_version"), doc.get("hash_algorithm"))
        # The journal is newer than the base. If the sync's definition changed in between (a
        # try with another destination/object/key committed, then failed), the base means
        # nothing for it: fold the entries of the latest definition onto an empty base.
        latest = journal_docs[-1]
        target = latest.get("target_fingerprint")
        # A base of the previous release under this release's journal is a try that upgraded it and
        # failed: keep the base (still labelled old, so the diff finds its untouched keys by their old hashes).
        upgrading = base is not None and base.hash_algorithm == LEGACY_HASH_ALGORITHM == _legacy_of(latest)
        if (
            base is None
            or base.target_fingerprint != target
            or (base.hash_algorithm != latest.get("hash_algorithm") and not upgrading)
        ):
            base = Checkpoint(str(target), str(latest.get("payload_fingerprint")))
        entries = [
            JournalEntry.from_json(doc["entry"]) for doc in journal_docs if doc.get("target_fingerprint") == target
        ]
        folded = base.apply(entries)
        folded.resumed_entries = len(entries)
        return folded

    def commit(self, entry: JournalEntry, *, target_fingerprint: str, payload_fingerprint: str) -> None:
        document = {
            "format_version": FORMAT_VERSION,
            "hash_algorithm": HASH_ALGORITHM,
            "target_fingerprint": target_fingerprint,
            "payload_fingerprint": payload_fingerprint,
            "entry": entry.to_json(),
        }
        with self._guarded():
            self.check_lease()
            self._append_journal(document)

    def finalize(self, checkpoint: Checkpoint) -> None:
        # Base first, then journal: a crash in between leaves a journal that folds to the same state.
        with self._guarded():
            self.check_lease(confirm=True)
            self._write_base(checkpoint.to_json())
        self._clear_journal()


class MemoryCheckpointStore(JournalingStore):
    """Keeps the checkpoint in this process: for tests, benchmarks and dry runs."""

    description = "memory"

    def __init__(self) -> None:
        self.base: dict[str, Any] | None = None
        self.journal: list[dict[str, Any]] = []
        self.commits = 0

    def _read_base(self) -> Any | None:
        return orjson.loads(orjson.dumps(self.base)) if self.base is not None else None

    def _write_base(self, document: dict[str, Any]) -> None:
        self.base = document

    def _append_journal(self, document: dict[str, Any]) -> None:
        self.commits += 1
        self.journal.append(document)

    def _read_journal(self) -> list[Any]:
        return list(self.journal)

    def _clear_journal(self) -> None:
        self.journal = []

    # A lease within this process (threads, tests); the stores that persist implement it durably.
    _memory_lease_lock = threading.Lock()
    holder: LeaseHolder | None = None

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        with self._memory_lease_lock:
            current = self.holder
            if current is None or current.owner == holder.owner or current.is_over(now):
                self.holder = holder
                return None
            return current

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        with self._memory_lease_lock:
            current = self.holder
            if current is None or current.owner != holder.owner or current.expires_at <= now:
                return False
            self.holder = holder
            return True

    def _lease_release(self, owner: str) -> None:
        with self._memory_lease_lock:
            if self.holder is not None and self.holder.owner == owner:
                self.holder = None


class FileCheckpointStore(JournalingStore):
    """A Parquet base file plus a JSON-lines journal beside it; handles millions of keys.

    ``path`` is a local path (the base); the journal is ``<path>.journal.jsonl``. Each
    commit appends one line and fsyncs it; ``finalize`` writes a new Parquet file to a
    temporary name and renames it over the old one, so a crash never leaves half a base.

    The sync lease is ``<path>.lease`` (owner, expiry as JSON), read and written only while
    holding an exclusive ``flock`` on ``<path>.lock``; commits and finalize check the lease
    under the same lock, so check-then-write is atomic between processes on one host. Over
    NFS, ``flock`` is only as good as the server's lock manager (NFSv4: yes; older: no).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal.jsonl")
        self.lease_path = self.path.with_name(self.path.name + ".lease")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._locks = threading.local()

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        depth = getattr(self._locks, "depth", 0)
        if depth:  # this thread holds the flock already (e.g. a renewal inside a commit)
            self._locks.depth = depth + 1
            try:
                yield
            finally:
                self._locks.depth = depth
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._locks.depth = 1
            try:
                yield
            finally:
                self._locks.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read_lease(self) -> LeaseHolder | None:
        try:
            return LeaseHolder.from_json(orjson.loads(self.lease_path.read_bytes()))
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            return None  # a torn write of a dead process: nobody holds it

    def _write_lease(self, holder: LeaseHolder) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.lease_path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(holder.to_json()))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.lease_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        with self._guarded():
            current = self._read_lease()
            if current is not None and current.owner != holder.owner and not current.is_over(now):
                return current
            self._write_lease(holder)
            return None

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        with self._guarded():
            current = self._read_lease()
            if current is None or current.owner != holder.owner or current.expires_at <= now:
                return False
            self._write_lease(holder)
            return True

    def _lease_release(self, owner: str) -> None:
        with self._guarded():
            current = self._read_lease()
            if current is not None and current.owner == owner:
                self.lease_path.unlink(missing_ok=True)

    def commit(self, entry: JournalEntry, *, target_fingerprint: str, payload_fingerprint: str) -> None:
        # The flock makes the lease check and the append one step: confirm with the file every time.
        with self._guarded():
            self.check_lease(confirm=self.lease is not None and self.lease.held)
            super().commit(entry, target_fingerprint=target_fingerprint, payload_fingerprint=payload_fingerprint)

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def _read_base(self) -> Any | None:
        if not self.path.exists():
            return None
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path)
            meta = orjson.loads(table.schema.metadata[b"retl_checkpoint"])
        except Exception as exc:
            raise CheckpointError(f"checkpoint file {self.path} is unreadable: {type(exc).__name__}") from exc
        meta["_table"] = table
        return meta

    def _read_base_checkpoint(self) -> Checkpoint | None:
        base_doc = self._read_base()
        if base_doc is None:
            return None
        _check_format(base_doc.get("format_version"), base_doc.get("hash_algorithm"))
        table = base_doc.pop("_table")
        try:
            return Checkpoint(
                target_fingerprint=base_doc["target_fingerprint"],
                payload_fingerprint=base_doc["payload_fingerprint"],
                key_hashes=table.column("key_hash").to_numpy().astype(np.uint64),
                row_hashes=table.column("row_hash").to_numpy().astype(np.uint64),
                dest_ids=np.asarray(table.column("dest_id").to_pylist(), dtype=object),
                format_version=base_doc["format_version"],
                hash_algorithm=base_doc["hash_algorithm"],
            )
        except Exception as exc:
            raise CheckpointError(f"checkpoint file {self.path} is unreadable: {type(exc).__name__}") from exc

    def finalize(self, checkpoint: Checkpoint) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = {k: v for k, v in checkpoint.to_json().items() if k not in ("keys", "rows", "ids")}
        table = pa.table(
            {
                "key_hash": pa.array(checkpoint.key_hashes, type=pa.uint64()),
                "row_hash": pa.array(checkpoint.row_hashes, type=pa.uint64()),
                "dest_id": pa.array(list(checkpoint.dest_ids), type=pa.string()),
            }
        ).replace_schema_metadata({b"retl_checkpoint": orjson.dumps(meta)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            with self._guarded():
                # Checked under the lock, right before the base changes: a try that lost its lease
                # while writing the Parquet file leaves the base as it was.
                self.check_lease(confirm=True)
                os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._clear_journal()

    def _append_journal(self, document: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end:
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    # A torn last line (a kill mid-write): cut it off, or this line would be glued
                    # to it and the journal would become unreadable after one more failed try.
                    fh.seek(0)
                    fh.truncate(fh.read().rfind(b"\n") + 1)
            fh.write(orjson.dumps(document) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _read_journal(self) -> list[Any]:
        if not self.journal_path.exists():
            return []
        docs = []
        with open(self.journal_path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a torn last line from a kill mid-write: that commit never completed
                try:
                    docs.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise CheckpointError(f"checkpoint journal {self.journal_path} is corrupt") from exc
        return docs

    def _clear_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)
