"""A checkpoint kept in Airflow Variables: survives retries, failed runs and cleared runs."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from airflow.sdk import Variable

from airflow_provider_retl.checkpoints.spec import warn_if_large
from airflow_provider_retl.sync.checkpoint import JournalingStore, LeaseHolder
from airflow_provider_retl.sync.errors import CheckpointError, ConfigurationError

KEY_PREFIX = "retl_checkpoint__"
JOURNAL_INFIX = "__journal__"
#: Lease claims: one Variable per contending try, ``retl_lease__<name>__<owner token>``.
LEASE_PREFIX = "retl_lease__"
#: Variable.key is VARCHAR(250); leave room for the prefix, the journal infix and the batch number.
MAX_SYNC_ID_LENGTH = 250 - len(KEY_PREFIX) - len(JOURNAL_INFIX) - 12
_SYNC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class VariableLeasing:
    """The ``LeaseBackend`` primitives of a store whose lease lives in claim Variables (Variable and XCom stores).

    The store sets ``_lease_backend`` to the ``VariableLeaseBackend`` of the name its runs contend for.
    """

    _lease_backend: VariableLeaseBackend

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        return self._lease_backend._lease_try_acquire(holder, now)

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        return self._lease_backend._lease_renew(holder, now)

    def _lease_release(self, owner: str) -> None:
        self._lease_backend._lease_release(owner)


class VariableCheckpointStore(VariableLeasing, JournalingStore):
    """Base in Variable ``retl_checkpoint__<sync_id>``, one Variable per committed batch beside it.

    A commit writes one small Variable (``retl_checkpoint__<sync_id>__journal__<n>``), so
    it costs in proportion to the batch; ``finalize`` rewrites the base once and deletes
    the journal Variables. Variables outlive tries and runs, so a retry, a cleared task
    and the run after a failed run all resume from base + journal. Values are compact
    JSON text; they hold hashes and destination ids only.

    Works inside a running task only (``Variable.set`` needs the task's API channel).

    One run per ``sync_id`` at a time: the sync lease is a set of claim Variables
    ``retl_lease__<sync_id>__<owner>`` (see :class:`VariableLeaseBackend`), so two DagRuns,
    a frozen try and its retry, or two tasks given the same ``sync_name`` take turns.
    Leave ``[secrets] use_cache`` off: a cached Variable read would hide another run's claim.
    """

    def __init__(self, sync_id: str) -> None:
        if not isinstance(sync_id, str) or not _SYNC_ID.fullmatch(sync_id) or len(sync_id) > MAX_SYNC_ID_LENGTH:
            raise ConfigurationError(
                f"sync_id {sync_id!r} cannot name an Airflow Variable: use letters, digits, '_', '-' or '.', "
                f"starting with a letter or digit, at most {MAX_SYNC_ID_LENGTH} characters"
            )
        self.sync_id = sync_id
        self.key = f"{KEY_PREFIX}{sync_id}"
        self.journal_prefix = f"{self.key}{JOURNAL_INFIX}"
        self.journal = VariableJournal(self.journal_prefix)
        _refuse_sensitive_name(self.key)
        self._next_index: int | None = None
        self._lease_backend = VariableLeaseBackend(sync_id)

    @property
    def description(self) -> str:
        return f"variable:{self.key}"

    def journal_key(self, index: int) -> str:
        return self.journal.key(index)

    # Store primitives

    def _read_base(self) -> Any | None:
        return _decode(Variable.get(self.key, default=None), self.key)

    def _write_base(self, document: dict[str, Any]) -> None:
        text = orjson.dumps(document).decode()
        warn_if_large(len(text), keys=document.get("count"), description=self.description)
        Variable.set(
            self.key,
            text,
            description=f"airflow-provider-retl checkpoint of sync {self.sync_id!r} (managed; do not edit)",
        )

    def _append_journal(self, document: dict[str, Any]) -> None:
        if self._next_index is None:
            indexes = self.journal.indexes()
            self._next_index = indexes[-1] + 1 if indexes else 0
        self.journal.write(self._next_index, document)
        self._next_index += 1

    def _read_journal(self) -> list[Any]:
        indexes = self.journal.indexes()
        self._next_index = indexes[-1] + 1 if indexes else 0
        return [doc for _, doc in self.journal.read(indexes)]

    def _clear_journal(self) -> None:
        self.journal.delete(self.journal.indexes())
        self._next_index = 0


class VariableJournal:
    """Journal documents in numbered Variables ``<prefix><n>``: one atomic write per entry."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def indexes(self) -> list[int]:
        """The entries' numbers, in numeric order ("10" sorts after "2")."""
        # keys(prefix=) matches with SQL LIKE, where "_" is a wildcard: filter again exactly.
        start = len(self.prefix)
        return sorted(
            int(key[start:])
            for key in Variable.keys(prefix=self.prefix)
            if key.startswith(self.prefix) and key[start:].isdigit()
        )

    def write(self, index: int, document: dict[str, Any]) -> None:
        Variable.set(self.key(index), orjson.dumps(document).decode())

    def read(self, indexes: list[int]) -> list[tuple[int, Any]]:
        docs = []
        for index in indexes:
            key = self.key(index)
            doc = _decode(Variable.get(key, default=None), key)
            if doc is not None:  # deleted between listing and reading: a finalize raced us
                docs.append((index, doc))
        return docs

    def delete(self, indexes: list[int]) -> None:
        for index in indexes:
            Variable.delete(self.key(index))


def variable_safe_name(name: str) -> str:
    """``name`` if it can be part of a Variable key, else a stable digest of it."""
    if not _SYNC_ID.fullmatch(name) or len(name) > MAX_SYNC_ID_LENGTH:
        # Long or unusual names (dag.task ids) get a stable digest: the key must fit VARCHAR(250).
        return "h" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return name


def _decode(raw: Any, key: str) -> Any | None:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"Airflow Variable {key} is not a checkpoint document (not JSON)") from exc


def _refuse_sensitive_name(key: str) -> None:
    # Airflow masks every Variable whose name looks secret ("token", "secret", "dsn"...), and
    # masking a multi-megabyte checkpoint makes every log line slow. Names only; no values.
    try:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    except ImportError:  # the helper moved: skip the check rather than fail the sync
        return
    if should_hide_value_for_key(key):
        raise ConfigurationError(
            f"sync_id makes the checkpoint Variable {key!r} look like a secret to Airflow (it would be "
            "masked in every log line); choose a sync_id without words such as 'token', 'secret', "
            "'password', 'dsn' or 'proxy'"
        )


class VariableLeaseBackend:
    """A sync lease made of Airflow Variables, which have no compare-and-set: Lamport's bakery.

    The task SDK can get, set, delete and list Variables, each one atomic, but cannot write
    one *only if* it still holds an expected value. So every contending try writes only its
    own claim Variable (``retl_lease__<name>__<owner>``: owner label, ticket number, expiry,
    ``choosing`` flag) and reads everyone else's, which is exactly what the bakery algorithm
    needs for mutual exclusion: a try takes a ticket one higher than every live claim it sees
    (while flagged ``choosing``), then holds the lease once no live claim is choosing or holds a
    lower (ticket, owner). A claim past its expiry is dead: it is ignored and deleted, and its
    owner's next renewal finds it expired or gone, so a frozen try that wakes up stops.

    Limits: correct as long as the metadata DB gives read-your-writes on single Variables (it
    does; every call is a transaction through the API server) and hosts' clocks agree within a
    fraction of the TTL; a renewal races the expiry only if a try freezes between reading and
    rewriting its own claim with under a quarter of its TTL left, which the heartbeat avoids.
    """

    def __init__(self, name: str) -> None:
        self.lease_prefix = f"{LEASE_PREFIX}{variable_safe_name(name)}__"
        self._ticket = 0

    def _claim_key(self, owner: str) -> str:
        return f"{self.lease_prefix}{owner}"

    def _claims(self, now: float) -> dict[str, dict[str, Any]]:
        """Live claims by owner; dead ones (expired or unreadable) are deleted on the way."""
        claims: dict[str, dict[str, Any]] = {}
        for key in Variable.keys(prefix=self.lease_prefix):
            if not key.startswith(self.lease_prefix):  # prefix= is a LIKE: "_" matches anything
                continue
            raw = Variable.get(key, default=None)
            try:
                claim = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                claim = None
            holder = LeaseHolder.from_json(claim)
            if holder is None or not isinstance(claim, dict) or holder.is_over(now):
                if raw is not None:
                    Variable.delete(key)
                continue
            claims[holder.owner] = claim
        return claims

    def _write_claim(self, holder: LeaseHolder, *, ticket: int, choosing: bool) -> None:
        claim = {**holder.to_json(), "ticket": ticket, "choosing": choosing}
        Variable.set(self._claim_key(holder.owner), orjson.dumps(claim).decode())

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        if not self._ticket:
            # Doorway: announce, take a ticket above every live one, publish it.
            self._write_claim(holder, ticket=0, choosing=True)
            others = [c for o, c in self._claims(now).items() if o != holder.owner]
            self._ticket = 1 + max((int(c.get("ticket") or 0) for c in others), default=0)
            self._write_claim(holder, ticket=self._ticket, choosing=False)
        else:
            self._write_claim(holder, ticket=self._ticket, choosing=False)  # keep a waiting claim alive
        mine = (self._ticket, holder.owner)
        ahead = [
            c
            for o, c in self._claims(now).items()
            if o != holder.owner and (c.get("choosing") or (int(c.get("ticket") or 0), o) < mine)
        ]
        if not ahead:
            return None
        first = min(ahead, key=lambda c: (bool(c.get("choosing")), int(c.get("ticket") or 0), str(c["owner"])))
        return LeaseHolder.from_json(first)

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        raw = Variable.get(self._claim_key(holder.owner), default=None)
        current = LeaseHolder.from_json(orjson.loads(raw)) if raw is not None else None
        if current is None or current.expires_at <= now:
            return False
        self._write_claim(holder, ticket=self._ticket, choosing=False)
        return True

    def _lease_release(self, owner: str) -> None:
        Variable.delete(self._claim_key(owner))
        self._ticket = 0
