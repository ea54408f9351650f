"""A checkpoint kept in Airflow Variables: survives retries, failed runs and cleared runs."""

from __future__ import annotations

import re
from typing import Any

import orjson
from airflow.sdk import Variable

from airflow_provider_retl.checkpoints.spec import warn_if_large
from airflow_provider_retl.sync.checkpoint import JournalingStore
from airflow_provider_retl.sync.errors import CheckpointError, ConfigurationError

KEY_PREFIX = "retl_checkpoint__"
JOURNAL_INFIX = "__journal__"
#: Variable.key is VARCHAR(250); leave room for the prefix, the journal infix and the batch number.
MAX_SYNC_ID_LENGTH = 250 - len(KEY_PREFIX) - len(JOURNAL_INFIX) - 12
_SYNC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class VariableCheckpointStore(JournalingStore):
    """Base in Variable ``retl_checkpoint__<sync_id>``, one Variable per committed batch beside it.

    A commit writes one small Variable (``retl_checkpoint__<sync_id>__journal__<n>``), so
    it costs in proportion to the batch; ``finalize`` rewrites the base once and deletes
    the journal Variables. Variables outlive tries and runs, so a retry, a cleared task
    and the run after a failed run all resume from base + journal. Values are compact
    JSON text; they hold hashes and destination ids only.

    Works inside a running task only (``Variable.set`` needs the task's API channel).
    Two tasks must not share a ``sync_id``.
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
        _refuse_sensitive_name(self.key)
        self._next_index: int | None = None

    @property
    def description(self) -> str:
        return f"variable:{self.key}"

    def journal_key(self, index: int) -> str:
        return f"{self.journal_prefix}{index}"

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
            indexes = self._journal_indexes()
            self._next_index = indexes[-1] + 1 if indexes else 0
        Variable.set(self.journal_key(self._next_index), orjson.dumps(document).decode())
        self._next_index += 1

    def _read_journal(self) -> list[Any]:
        indexes = self._journal_indexes()
        self._next_index = indexes[-1] + 1 if indexes else 0
        docs = []
        for index in indexes:
            key = self.journal_key(index)
            doc = _decode(Variable.get(key, default=None), key)
            if doc is not None:  # deleted between listing and reading: a finalize raced us
                docs.append(doc)
        return docs

    def _clear_journal(self) -> None:
        for index in self._journal_indexes():
            Variable.delete(self.journal_key(index))
        self._next_index = 0

    def _journal_indexes(self) -> list[int]:
        # keys(prefix=) matches with SQL LIKE, where "_" is a wildcard: filter again exactly.
        start = len(self.journal_prefix)
        return sorted(
            int(key[start:])
            for key in Variable.keys(prefix=self.journal_prefix)
            if key.startswith(self.journal_prefix) and key[start:].isdigit()
        )


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
