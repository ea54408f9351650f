"""A checkpoint kept in the task's own XCom, with the journal of every run in Airflow Variables."""

from __future__ import annotations

from typing import Any

import orjson

from airflow_provider_retl.checkpoints.spec import warn_if_large
from airflow_provider_retl.checkpoints.variable import (
    VariableJournal,
    VariableLeaseBackend,
    VariableLeasing,
    variable_safe_name,
)
from airflow_provider_retl.sync.checkpoint import JournalingStore
from airflow_provider_retl.sync.errors import ConfigurationError

XCOM_KEY = "retl_checkpoint"
#: Journal entries: ``retl_journal__<xcom.dag_id.task_id[.map_index]>__<n>`` (a digest if the name is long).
JOURNAL_PREFIX = "retl_journal__"
#: Key in the XCom document: the highest journal number folded into it.
JOURNAL_UPTO = "journal_upto"


class XComCheckpointStore(VariableLeasing, JournalingStore):
    """Base = this task's XCom ``retl_checkpoint`` from the latest run; journal in Airflow Variables.

    Airflow deletes a task instance's XComs when each try starts, so a run's progress
    cannot live in XCom until the run succeeds. Each commit writes one numbered Variable
    ``retl_journal__xcom.<dag_id>.<task_id>[.<map_index>]__<n>`` instead; Variables outlive
    tries and runs, so a retry, a cleared run and the run after a run that failed for good
    all resume from the progress already made (events are not sent twice, records not
    created twice). ``finalize`` pushes the new base as this run's XCom, recording the
    highest journal number folded into it (``journal_upto``).

    ``load`` returns the latest run's XCom (``include_prior_dates``, same map index) plus,
    in order, every journal entry numbered above its ``journal_upto``, whichever run wrote
    it. Once ``finalize`` ran in this try, it returns the new base alone.

    ``finalize`` deletes only the entries the loaded base already held; the ones this run
    folded stay until the next run's finalize, so a run cleared after success (its XCom
    is wiped when the new try starts) resumes from them instead of re-sending the run.

    One run of this task at a time: XComs are private to a run, so the sync lease lives in
    claim Variables ``retl_lease__xcom.<dag_id>.<task_id>[.<map_index>]__*``
    (:class:`~airflow_provider_retl.checkpoints.variable.VariableLeaseBackend`), which every
    run and try of the task sees; it also keeps journal numbers from interleaving.

    Limit: "latest" means the latest logical date, so a backfill of an old date starts from
    the checkpoint before it (plus the journal left since).
    """

    def __init__(self, context: Any, *, key: str = XCOM_KEY) -> None:
        try:
            self.ti = context["ti"]
        except (KeyError, TypeError):
            raise ConfigurationError("the xcom checkpoint store needs the running task's context (with 'ti')") from None
        self.key = key
        self._finalized = False
        #: ``journal_upto`` of the base this try loaded (-1: none); None until read.
        self._base_upto: int | None = None
        self._next_index: int | None = None
        name = f"xcom.{self.ti.dag_id}.{self.ti.task_id}" + ("" if self.map_index < 0 else f".{self.map_index}")
        self._lease_backend = VariableLeaseBackend(name)
        self.journal = VariableJournal(f"{JOURNAL_PREFIX}{variable_safe_name(name)}__")

    @property
    def map_index(self) -> int:
        map_index = getattr(self.ti, "map_index", None)
        return -1 if map_index is None else map_index

    @property
    def description(self) -> str:
        suffix = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"xcom:{self.ti.dag_id}.{self.ti.task_id}{suffix}:{self.key}"

    # Store primitives

    def _read_base(self) -> Any | None:
        # Latest logical date first, this run included: its XCom exists only if finalize
        # ran in this try (Airflow wiped it when the try started).
        document = self.ti.xcom_pull(
            task_ids=self.ti.task_id, key=self.key, include_prior_dates=True, map_indexes=self.map_index
        )
        upto = document.get(JOURNAL_UPTO) if isinstance(document, dict) else None
        # bool is an int: refuse it too. A base without the mark predates the Variable journal.
        self._base_upto = upto if isinstance(upto, int) and not isinstance(upto, bool) else -1
        return document

    def _write_base(self, document: dict[str, Any]) -> None:
        # Every entry that exists now is in this base: the loaded base held those up to its
        # mark, load folded the rest, and this try's commits are in the checkpoint. The lease
        # keeps any other run from appending meanwhile.
        indexes = self.journal.indexes()
        upto = max(self._loaded_upto(), self._next(indexes) - 1)
        document = {**document, JOURNAL_UPTO: upto}
        warn_if_large(len(orjson.dumps(document)), keys=document.get("count"), description=self.description)
        self.ti.xcom_push(key=self.key, value=document)
        self._finalized = True

    def _append_journal(self, document: dict[str, Any]) -> None:
        if self._next_index is None:
            self._next_index = self._next(self.journal.indexes())
        # One Variable per entry, written at once: a crash leaves it whole or absent.
        self.journal.write(self._next_index, document)
        self._next_index += 1

    def _read_journal(self) -> list[Any]:
        if self._finalized:
            return []  # already folded into this run's XCom
        indexes = self.journal.indexes()
        self._next_index = self._next(indexes)
        upto = self._loaded_upto()
        return [doc for _, doc in self.journal.read([i for i in indexes if i > upto])]

    def _clear_journal(self) -> None:
        # Only what the loaded base held: this run's entries stay for a clear of this run.
        upto = self._loaded_upto()
        self.journal.delete([i for i in self.journal.indexes() if i <= upto])

    def _loaded_upto(self) -> int:
        if self._base_upto is None:
            self._read_base()
        assert self._base_upto is not None  # set by _read_base
        return self._base_upto

    def _next(self, indexes: list[int]) -> int:
        # Numbers only grow, also once finalize deleted every entry: the base's mark counts.
        return max(indexes[-1] + 1 if indexes else 0, self._loaded_upto() + 1, self._next_index or 0)
