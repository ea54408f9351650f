"""A checkpoint kept in the task's own XCom, with the journal of a run in its task_state_store."""

from __future__ import annotations

from typing import Any

import orjson

from airflow_provider_retl.checkpoints.spec import warn_if_large
from airflow_provider_retl.checkpoints.variable import VariableLeaseBackend
from airflow_provider_retl.sync.checkpoint import JournalingStore, LeaseHolder
from airflow_provider_retl.sync.errors import CheckpointError, ConfigurationError

XCOM_KEY = "retl_checkpoint"
JOURNAL_KEY = "retl_journal_{index}"
JOURNAL_COUNT_KEY = "retl_journal_count"


class XComCheckpointStore(JournalingStore):
    """Base = this task's XCom ``retl_checkpoint`` from the latest run; journal in ``task_state_store``.

    Airflow deletes a task instance's XComs when each try starts, so a run's progress
    cannot live in XCom until the run succeeds. The journal of the current run lives in
    ``context["task_state_store"]`` instead (keys ``retl_journal_<n>`` + a count), which
    Airflow keeps for every try of the same run (retries and "Clear" in the UI) and
    scopes by map index. ``finalize`` pushes the new base as this run's XCom.

    ``load`` returns the latest run's XCom (``include_prior_dates``, same map index) plus
    this run's journal: a retry, or a successful run cleared in the UI, resumes where the
    run was. Once ``finalize`` ran in this try, it returns the new base alone.

    The run's journal is kept after ``finalize`` (it is never read by another run) so a
    task cleared after success resumes from it instead of re-sending the whole run. It
    expires with ``[state_store] default_retention_days``.

    One run of this task at a time: XComs and ``task_state_store`` are private to a run, so
    the sync lease lives in claim Variables ``retl_lease__xcom.<dag_id>.<task_id>[.<map_index>]__*``
    (:class:`~airflow_provider_retl.checkpoints.variable.VariableLeaseBackend`), which every
    run and try of the task sees.

    Limits: progress of a run that fails for good is not carried to the next run (use the
    ``variable`` store where that matters, e.g. non-idempotent events); "latest" means the
    latest logical date, so a backfill of an old date starts from the checkpoint before it.
    """

    def __init__(self, context: Any, *, key: str = XCOM_KEY) -> None:
        try:
            self.ti = context["ti"]
            self.state = context["task_state_store"]
        except (KeyError, TypeError):
            raise ConfigurationError(
                "the xcom checkpoint store needs the running task's context (with 'ti' and "
                "'task_state_store', Airflow >= 3.3)"
            ) from None
        self.key = key
        self._count: int | None = None
        self._finalized = False
        name = f"xcom.{self.ti.dag_id}.{self.ti.task_id}" + ("" if self.map_index < 0 else f".{self.map_index}")
        self._lease_backend = VariableLeaseBackend(name)

    @property
    def map_index(self) -> int:
        map_index = getattr(self.ti, "map_index", None)
        return -1 if map_index is None else map_index

    @property
    def description(self) -> str:
        suffix = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"xcom:{self.ti.dag_id}.{self.ti.task_id}{suffix}:{self.key}"

    # Lease primitives (LeaseBackend): claim Variables shared by every run of this task

    def _lease_try_acquire(self, holder: LeaseHolder, now: float) -> LeaseHolder | None:
        return self._lease_backend._lease_try_acquire(holder, now)

    def _lease_renew(self, holder: LeaseHolder, now: float) -> bool:
        return self._lease_backend._lease_renew(holder, now)

    def _lease_release(self, owner: str) -> None:
        self._lease_backend._lease_release(owner)

    # Store primitives

    def _read_base(self) -> Any | None:
        # Latest logical date first, this run included: its XCom exists only if finalize
        # ran in this try (Airflow wiped it when the try started).
        return self.ti.xcom_pull(
            task_ids=self.ti.task_id, key=self.key, include_prior_dates=True, map_indexes=self.map_index
        )

    def _write_base(self, document: dict[str, Any]) -> None:
        warn_if_large(len(orjson.dumps(document)), keys=document.get("count"), description=self.description)
        self.ti.xcom_push(key=self.key, value=document)
        self._finalized = True

    def _append_journal(self, document: dict[str, Any]) -> None:
        index = self._journal_count()
        self.state.set(JOURNAL_KEY.format(index=index), document)
        # The entry counts only once the count says so: a crash in between leaves an
        # orphan that the next commit overwrites.
        self.state.set(JOURNAL_COUNT_KEY, index + 1)
        self._count = index + 1

    def _read_journal(self) -> list[Any]:
        if self._finalized:
            return []  # already folded into this run's XCom
        docs = []
        for index in range(self._journal_count(refresh=True)):
            doc = self.state.get(JOURNAL_KEY.format(index=index))
            if not isinstance(doc, dict):
                raise CheckpointError(f"task_state_store has no checkpoint journal entry {index} of {self._count}")
            docs.append(doc)
        return docs

    def _clear_journal(self) -> None:
        # Deliberately kept: see the class docstring (a cleared successful run resumes from it).
        return None

    def _journal_count(self, *, refresh: bool = False) -> int:
        if self._count is None or refresh:
            count = self.state.get(JOURNAL_COUNT_KEY, 0)
            self._count = count if isinstance(count, int) and count >= 0 else 0
        return self._count
