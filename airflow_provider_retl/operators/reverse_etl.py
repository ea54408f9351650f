"""ReverseETLOperator: one task that keeps a destination object in sync with a SQL query."""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from airflow_provider_retl.checkpoints.spec import is_warehouse_spec
from airflow_provider_retl.history.store import HistoryStore, utc_now
from airflow_provider_retl.operators.history import open_store, parse_history, run_row, write_try
from airflow_provider_retl.operators.history import warn as warn_history
from airflow_provider_retl.operators.lineage import DestinationLink, operator_destination_url
from airflow_provider_retl.operators.parameters import check_parameters, is_templated
from airflow_provider_retl.operators.rejects_table import write_rejects
from airflow_provider_retl.sql_errors import permanent_sql_error
from airflow_provider_retl.sync.checkpoint import Checkpoint
from airflow_provider_retl.sync.config import parse_partition, partition_suffix
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import (
    CheckpointError,
    ConfigurationError,
    FatalSyncError,
    GuardrailTripped,
    RejectRatioExceeded,
)
from airflow_provider_retl.sync.outcomes import RecordOutcomes
from airflow_provider_retl.sync.records import Mode, Reject
from airflow_provider_retl.sync.redaction import REDACTOR
from airflow_provider_retl.sync.sqlnames import warehouse_checkpoint_table

if TYPE_CHECKING:
    import pandas as pd
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

    from airflow_provider_retl.hooks.destination import DestinationHook
    from airflow_provider_retl.sync.checkpoint import CheckpointStore

#: XCom key of the report when the task fails (the return value is only pushed on success).
REPORT_XCOM_KEY = "sync_report"
#: Partition counts probed for the other layouts of a sync (see ``_sibling_checkpoints``).
MAX_PARTITION_LAYOUTS = 32


def partitions(n: int) -> list[str]:
    """The ``n`` partitions of a sync, ``["0/n", ..., "n-1/n"]``, to map a task over.

    ``ReverseETLOperator.partial(task_id="sync", ...).expand(partition=partitions(4))`` runs
    four tasks that each own a quarter of the keys (by key hash) and keep their own checkpoint.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions(n) needs a whole number n >= 1; got {n!r}")
    return [f"{i}/{n}" for i in range(n)]


class ReverseETLOperator(BaseOperator):
    """Sync the result of a SQL query into a business app, sending only what changed.

    The query runs on any Airflow connection whose hook is a common.sql ``DbApiHook``
    (DuckDB, SQLite, PostgreSQL, Snowflake, BigQuery ...). Each row is matched to a
    destination record by ``primary_key``; rows are compared with the checkpoint of the
    last successful run and only new, changed (and in ``mirror`` mode, removed) rows are
    pushed, in the fewest calls the destination allows. Rejected rows are reported with
    their key and reason; a retry (or a "Clear" in the UI) resumes where the failed try
    stopped. The task returns the sync report (a JSON-serialisable dict) as its XCom.

    :param conn_id: warehouse connection (any common.sql DbApiHook).
    :param sql: the query, or a path to a ``.sql`` file (templated).
    :param destination_conn_id: connection of the destination (HubSpot, webhook ...).
    :param object: destination object, e.g. ``contacts``, ``companies``, a custom object.
    :param primary_key: the column (or columns) identifying a row.
    :param mapping: destination field -> source column; by default every column is sent
        under its own name, so SQL aliases are enough.
    :param mode: ``upsert`` | ``update`` (never creates) | ``insert`` (never updates) |
        ``mirror`` (upsert and delete/archive records whose key left the query).
    :param checkpoint: ``"variable"`` | ``"xcom"`` | a ``.parquet`` path | a store object |
        ``"warehouse"`` or ``"warehouse:<schema>.<table>"``: the checkpoint is a table in the
        source warehouse and the diff runs there in SQL, so only changed rows leave it (for
        tables too large to read whole every run; DuckDB, PostgreSQL, SQLite, Snowflake,
        BigQuery, Redshift, MySQL).
    :param batch_size: records per call (capped at the destination's limit).
    :param dry_run: plan and report, send nothing, change no checkpoint.
    :param max_reject_ratio: fail the task when more than this fraction of rows is rejected
        (accepted rows are still synced and checkpointed, and the report is still pushed).
        Default 0.5; 1.0 never fails. Also a guardrail: when the rejects known before sending
        (NULL/duplicate keys, local validation) already pass this share, the task fails at once
        and sends nothing.
    :param max_delete_ratio: guardrail: mirror deletes at most this share of the synced records
        (default 0.5, from 10 deletes on; None: no limit); checked before anything is sent.
    :param max_deletes: guardrail: mirror deletes at most this many records (default: no limit).
    :param min_source_ratio: guardrail: fail before sending when the query returns fewer keys than
        this share of those synced before (default 0.5, from 100 synced keys; None: off). Not for events.
    :param max_reject_ratio_before_send: guardrail: fail before sending when the rows rejected before
        anything is sent (NULL/duplicate keys, local validation) pass this share of the rows read
        (default None: off, so the valid rows of a mostly rejected run are still sent, then
        ``max_reject_ratio`` fails the task).
    :param override_guardrails: skip the guardrails (set it for one run, or trigger the DAG run
        with conf ``{"retl_override_guardrails": ["<sync id>"]}`` or ``true``, which lasts one run).
    :param allow_identity_change: a run that would remove and re-create most keys at once (a
        retyped or renamed key column) stops before sending; set True to let it go ahead.
    :param resend_events: an events sync whose checkpoint was reset (destination, key, match
        field or hash algorithm changed) refuses to run; set True to send the events again.
        (A new partition count is not a reset: what the other layouts sent counts as sent.)
    :param match_on: destination field used to find existing records when it differs from
        the source identity (``primary_key="customer_id", match_on="email"``).
    :param full_resync: ignore the checkpoint's row hashes for this run and send everything
        (destination ids are kept, so nothing is duplicated).
    :param rebaseline: mark the current result as synced without sending anything (adopting
        the provider on a destination that is already populated).
    :param parameters: query parameters (templated).
    :param chunksize: rows fetched from the warehouse per chunk.
    :param sync_name: name of the checkpoint; defaults to ``<dag_id>.<task_id>``.
    :param destination_params: keyword arguments for the destination hook (beat the extras).
    :param event_name: for event objects (Braze ``events``, Customer.io ``events``): the event
        name when the query has no ``name`` column (templated).
    :param event_time_field: for event objects: the field holding each event's timestamp.
    :param column_types: types of columns the source cannot type itself (SQLite, JSON in MariaDB):
        ``{"payload": "json", "created_at": "timestamptz"}``; see ``airflow_provider_retl.sources``.
    :param rejects_table: a warehouse table (``[schema.]table``, created if missing) to which every
        rejected row of each run is appended with its key, stage and reason, beyond the report's cap.
    :param allow_empty_source: mirror mode refuses (fails the task, sends nothing) when the
        query returns no usable row while records were synced before; set True to let an
        empty result delete them all.
    :param history: where the sync history (a row per try, a row per record pushed or rejected;
        see docs/history.md) is written: ``"warehouse"`` (default: tables ``retl_runs``,
        ``retl_changes``, ``retl_acks`` on ``conn_id``), ``"conn:<conn_id>"`` (another SQL
        connection) or None (off). A history that cannot be written only warns.
    :param history_schema: schema of the history tables (default: the connection's default).
    :param history_payload: also store the fields sent per record (personal data; default False).
    :param history_retention_days: history rows of this sync older than this are deleted when a
        try writes (default 90; None keeps everything).
    :param partition: ``"i/n"`` (or ``(i, n)``): sync only the keys whose key hash % n == i,
        so n tasks share one large sync; map over :func:`partitions`. Every task still runs
        the whole query; NULL/empty keys are rejected by partition 0 only, mirror deletes stay
        within the slice. Each partition has its own checkpoint (the sync id, and a file
        checkpoint's name, get a ``.p<i>of<n>`` suffix). Changing n starts every slice from
        an empty checkpoint: rows are re-sent (matched by key, so not duplicated), but keys
        removed from the query in the meantime are not mirror-deleted.
    """

    template_fields: Sequence[str] = (
        "sql",
        "conn_id",
        "destination_conn_id",
        "object",
        "parameters",
        "mapping",
        "sync_name",
        "event_name",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "mapping": "json", "parameters": "json"}
    ui_color = "#e8f4ff"
    operator_extra_links = (DestinationLink(),)

    def __init__(
        self,
        *,
        conn_id: str,
        sql: str,
        destination_conn_id: str,
        object: str,
        primary_key: str | Sequence[str],
        mapping: Mapping[str, str] | None = None,
        mode: str = "upsert",
        checkpoint: Any = "variable",
        batch_size: int | None = None,
        dry_run: bool = False,
        max_reject_ratio: float | None = None,
        match_on: str | None = None,
        full_resync: bool = False,
        rebaseline: bool = False,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        chunksize: int = 50_000,
        sync_name: str | None = None,
        destination_params: Mapping[str, Any] | None = None,
        progress_interval: float = 5.0,
        event_name: str | None = None,
        event_time_field: str | None = None,
        column_types: Mapping[str, str] | None = None,
        allow_empty_source: bool = False,
        rejects_table: str | None = None,
        partition: str | tuple[int, int] | Sequence[int] | None = None,
        allow_identity_change: bool = False,
        resend_events: bool = False,
        max_delete_ratio: float | None = 0.5,
        max_deletes: int | None = None,
        min_source_ratio: float | None = 0.5,
        max_reject_ratio_before_send: float | None = None,
        override_guardrails: bool = False,
        history: str | None = "warehouse",
        history_schema: str | None = None,
        history_payload: bool = False,
        history_retention_days: float | None = 90,
        **kwargs: Any,
    ) -> None:
        # One active try of this sync per DAG: overlapping DagRuns queue instead of both planning
        # from the same checkpoint (the store's lease still guards what this cannot see).
        if "max_active_tis_per_dag" not in kwargs and "max_active_tis_per_dag" not in (
            kwargs.get("default_args") or {}
        ):
            kwargs["max_active_tis_per_dag"] = 1
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.sql = sql
        self.destination_conn_id = destination_conn_id
        self.object = object
        self.primary_key = primary_key
        self.mapping = mapping
        self.mode = Mode.parse(mode).value  # fail at parse time, not at 3 a.m.
        self.checkpoint = checkpoint
        if is_warehouse_spec(checkpoint):
            warehouse_checkpoint_table(checkpoint)  # a bad table name is a DAG import error, not a failed run
        self.batch_size = batch_size
        # Kept as plan_only: an attribute named dry_run would shadow BaseOperator.dry_run() (renders the templates).
        self.plan_only = dry_run
        self.max_reject_ratio = max_reject_ratio
        self.match_on = match_on
        self.full_resync = full_resync
        self.rebaseline = rebaseline
        self.parameters = parameters
        self.chunksize = chunksize
        self.sync_name = sync_name
        if destination_params is not None and not isinstance(destination_params, Mapping):
            raise ConfigurationError(
                f"ReverseETLOperator {self.task_id!r}: destination_params must be a dict; got {destination_params!r}"
            )
        self.destination_params = dict(destination_params or {})
        self.progress_interval = progress_interval
        self.event_name = event_name
        self.event_time_field = event_time_field
        self.column_types = column_types if column_types is not None else {}
        self.allow_empty_source = allow_empty_source
        self.rejects_table = rejects_table or None  # checked with the others in _check_at_parse_time
        self.partition = parse_partition(partition)
        self.allow_identity_change = allow_identity_change
        self.resend_events = resend_events
        self.max_delete_ratio = max_delete_ratio
        self.max_deletes = max_deletes
        self.min_source_ratio = min_source_ratio
        self.max_reject_ratio_before_send = max_reject_ratio_before_send
        self.override_guardrails = override_guardrails
        #: Set per run from the DAG run's conf ``retl_override_guardrails``.
        self._override_once = False
        self.history = history
        self.history_schema = history_schema
        self.history_payload = history_payload
        self.history_retention_days = history_retention_days
        try:
            self._history = parse_history(history, history_schema, history_payload, history_retention_days)
        except ConfigurationError as exc:
            raise ConfigurationError(f"ReverseETLOperator {self.task_id!r}: {exc}") from None
        self._check_at_parse_time()

    def _check_at_parse_time(self) -> None:
        """Fail the DAG import on a parameter that cannot work; templated values wait for rendering."""
        try:
            named = self.sync_name is None or (isinstance(self.sync_name, str) and not is_templated(self.sync_name))
            sync_id = self._sync_id() if named else None  # else: a template, or a wrong type check_parameters names
            check_parameters(self, sync_id)
            if not any(is_templated(v) for v in (self.object, self.mapping, self.primary_key)):
                self._config("parse-check", destination_identity="")
        except ConfigurationError as exc:
            # The import error names the task as well as the parameter.
            raise ConfigurationError(f"ReverseETLOperator {self.task_id!r}: {exc}") from None

    # ------------------------------------------------------------------ hooks
    @cached_property
    def sql_hook(self) -> DbApiHook:
        """The warehouse hook of ``conn_id``; must be a common.sql DbApiHook."""
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        hook = _connection(self.conn_id, "conn_id").get_hook()
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"conn_id {self.conn_id!r} gives a {type(hook).__name__}, which is not a common.sql DbApiHook; "
                f"use a SQL connection (duckdb, sqlite, postgres, snowflake, ...) and make sure its provider "
                f"(and apache-airflow-providers-common-sql) is installed and up to date"
            )
        return hook

    @cached_property
    def destination_hook(self) -> DestinationHook:
        """The destination hook of ``destination_conn_id`` (its connection type picks the class)."""
        from airflow_provider_retl.hooks.destination import DestinationHook

        connection = _connection(self.destination_conn_id, "destination_conn_id")
        hook = connection.get_hook(hook_params=self.destination_params or None)
        if not isinstance(hook, DestinationHook):
            raise AirflowFailException(
                f"destination_conn_id {self.destination_conn_id!r} has connection type {connection.conn_type!r}, "
                f"which is not a reverse-ETL destination; use one of the retl_* connection types"
            )
        return hook

    # ------------------------------------------------------------------ lineage
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the query's tables (inputs) -> the destination object (output)."""
        from airflow_provider_retl.operators.lineage import facets_on_complete

        return facets_on_complete(self)

    # ------------------------------------------------------------------ run
    def _sync_id(self, context: Context | None = None) -> str:
        return self._base_sync_id(context) + partition_suffix(self.partition)

    def _base_sync_id(self, context: Context | None = None) -> str:
        """The sync id without the partition suffix (what every partition layout shares)."""
        if self.sync_name:
            return self.sync_name
        base = f"{self.dag_id}.{self.task_id}"
        map_index = context["ti"].map_index if context else -1
        if map_index is not None and map_index >= 0:
            base = f"{base}.{map_index}"
        return base

    def _sibling_checkpoints(self, context: Context) -> Iterator[Checkpoint]:
        """Checkpoints of this sync under its other partition layouts (events sent, ids and keys known).

        Probes the unpartitioned layout and 1..MAX_PARTITION_LAYOUTS partitions; a layout whose
        partition 0 has no checkpoint never ran. The xcom and warehouse stores are per task or
        unpartitioned, so they have no siblings to probe.
        """
        from airflow_provider_retl.checkpoints.spec import checkpoint_store_from_spec, is_warehouse_spec

        spec = self.checkpoint
        if not isinstance(spec, (str, os.PathLike)) or is_warehouse_spec(spec) or str(spec).strip().lower() == "xcom":
            return
        base = self._base_sync_id(context)
        own = None if self.partition is None else self.partition[1]
        for count in (None, *range(1, MAX_PARTITION_LAYOUTS + 1)):
            if count == own:
                continue
            parts: list[tuple[int, int] | None] = [None] if count is None else [(i, count) for i in range(count)]
            for index, part in enumerate(parts):
                store = checkpoint_store_from_spec(
                    spec, sync_id=base + partition_suffix(part), context=context, partition=part
                )
                try:
                    loaded = store.load()
                except CheckpointError as exc:
                    self.log.warning(
                        "Checkpoint %s of another partition layout is unreadable: %s", store.description, exc
                    )
                    continue
                if loaded is None:
                    if index == 0:
                        break
                    continue
                yield loaded

    def _config(self, sync_id: str, *, destination_identity: str) -> SyncConfig:
        return SyncConfig(
            sync_id=sync_id,
            object=self.object,
            primary_key=self.primary_key,
            mode=self.mode,
            mapping=self.mapping,
            match_on=self.match_on,
            batch_size=self.batch_size,
            dry_run=self.plan_only,
            full_resync=self.full_resync,
            rebaseline=self.rebaseline,
            max_reject_ratio=self.max_reject_ratio,
            destination_identity=destination_identity,
            progress_interval=self.progress_interval,
            allow_empty_source=self.allow_empty_source,
            partition=self.partition,
            allow_identity_change=self.allow_identity_change,
            resend_events=self.resend_events,
            max_delete_ratio=self.max_delete_ratio,
            max_deletes=self.max_deletes,
            min_source_ratio=self.min_source_ratio,
            max_reject_ratio_before_send=self.max_reject_ratio_before_send,
            override_guardrails=self.override_guardrails or self._override_once,
        )

    def _checkpoint_store(self, sync_id: str, context: Context) -> CheckpointStore:
        from airflow_provider_retl.checkpoints.spec import checkpoint_store_from_spec

        if is_warehouse_spec(self.checkpoint):
            from airflow_provider_retl.checkpoints.warehouse import warehouse_store

            return warehouse_store(
                self.checkpoint,
                self.sql_hook,
                self.sql,
                sync_id=sync_id,
                parameters=self.parameters,
                chunksize=self.chunksize,
                column_types=self.column_types,
            )
        return checkpoint_store_from_spec(self.checkpoint, sync_id=sync_id, context=context, partition=self.partition)

    def _read_chunks(self) -> Iterator[pd.DataFrame]:
        """Stream the query in chunks; the engine reads them all before it sends anything."""
        from airflow_provider_retl.sources import read_query

        return read_query(
            self.sql_hook, self.sql, self.parameters, chunksize=self.chunksize, column_types=self.column_types
        )

    def _write_rejects(self, rejects: list[Reject], sync_id: str, context: Context) -> None:
        if not self.rejects_table or self.plan_only:
            return
        written = write_rejects(self.sql_hook, self.rejects_table, rejects, sync_id=sync_id, run_id=context["run_id"])
        self.log.info("Wrote %d rejected rows to %s", written, self.rejects_table)

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the sync; the report (XCom) and any exception leave scrubbed of every registered secret."""
        try:
            return REDACTOR.redact_value(self._execute_failing_fast(context))
        except Exception as exc:
            if REDACTOR.scrub_exception(exc):
                raise
            # Its text is built from state we cannot rewrite: raise a clean copy, chained to nothing.
            kind = AirflowFailException if isinstance(exc, AirflowFailException) else AirflowException
            clean = kind(REDACTOR.redact("".join(traceback.format_exception_only(exc)).strip()))
        raise clean

    def _execute_failing_fast(self, context: Context) -> dict[str, Any]:
        """Errors that no retry can fix fail the task without Airflow retries."""
        try:
            return self._execute(context)
        except AirflowFailException:
            raise
        except FatalSyncError as exc:
            # ConfigurationError (also after rendering), refused auth, unknown object or field, ...
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        except NotImplementedError as exc:
            # The destination lacks a capability this sync needs: the same on every try.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}; a retry cannot fix this") from exc
        except Exception as exc:
            cause = permanent_sql_error(exc)
            if cause is None:
                raise  # transient (or unknown): Airflow's retries apply
            raise AirflowFailException(
                f"the query on conn_id {self.conn_id!r} failed with an error a retry cannot fix (fix the SQL, "
                f"the table or the grants): {type(cause).__name__}: {_first_lines(cause)}"
            ) from exc

    def _execute(self, context: Context) -> dict[str, Any]:
        # Rendered templates are checked like parse-time values were (fatal: no retry fixes them).
        check_parameters(self, self._sync_id(context))
        sync_id = self._sync_id(context)
        destination = self.destination_hook
        destination.get_conn()  # resolves the base URL; fails fast on a bad connection
        destination.sync_id = sync_id
        destination.event_name = self.event_name
        destination.event_time_field = self.event_time_field
        # Only a digest of the URL enters the checkpoint fingerprint (webhook URLs can hold secrets).
        url_digest = hashlib.sha256(destination.base_url.encode()).hexdigest()[:16]
        self._override_once = guardrails_overridden(context, sync_id)
        if self._override_once:
            self.log.warning(
                "Guardrails are off for this run of %s (the DAG run's conf retl_override_guardrails)", sync_id
            )
        config = self._config(sync_id, destination_identity=f"{self.destination_conn_id}@{url_digest}")
        store = self._checkpoint_store(sync_id, context)
        self.log.info(
            "Syncing %s -> %s %r (%s, checkpoint %s%s)",
            self.conn_id,
            self.destination_conn_id,
            self.object,
            self.mode,
            store.description,
            ", dry run" if self.plan_only else "",
        )
        history = self._open_history()
        acknowledged = self._acknowledged(history, sync_id)
        outcomes = RecordOutcomes(payload=self._history.payload) if history is not None and self._history else None
        started_at = utc_now()
        try:
            rejects: list[Reject] = []
            report = run_sync(
                self._read_chunks(),
                destination,
                store,
                config,
                log=self.log,
                on_reject=rejects.append if self.rejects_table else None,
                siblings=lambda: self._sibling_checkpoints(context),
                outcomes=outcomes,
                acknowledged=acknowledged or None,
            )
            self._write_rejects(rejects, sync_id, context)
        except RejectRatioExceeded as exc:
            self._write_rejects(rejects, sync_id, context)
            self._write_history(history, outcomes, context, sync_id, started_at, exc)
            result = exc.report.to_dict()
            if history is not None:
                result["history"] = history.describe(self._history_conn_id())
            context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=REDACTOR.redact_value(result))
            # Retrying cannot fix bad data: fail without retries, keep the report.
            raise AirflowFailException(str(exc)) from exc
        except GuardrailTripped as exc:
            # Nothing was sent; the report (what was read, planned and rejected) is for the alert and the UI.
            self._write_rejects(rejects, sync_id, context)
            self._write_history(history, outcomes, context, sync_id, started_at, exc)
            if exc.report is not None:
                result = exc.report.to_dict()
                if history is not None:
                    result["history"] = history.describe(self._history_conn_id())
                context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=REDACTOR.redact_value(result))
            raise
        except BaseException as exc:
            self._write_history(history, outcomes, context, sync_id, started_at, exc)
            raise
        self._write_history(history, outcomes, context, sync_id, started_at, None)
        if acknowledged and not self.plan_only:
            # An acknowledgement holds for the next successful run: unchanged rows are checkpointed
            # now, changed ones were sent again (a new reject can be acknowledged again).
            self._mark_acknowledgements_applied(history, sync_id, list(acknowledged))
        result = report.to_dict()
        if history is not None:
            result["history"] = history.describe(self._history_conn_id())
        return result

    # ------------------------------------------------------------------ history
    def _history_conn_id(self) -> str | None:
        if self._history is None:
            return None
        return self._history.conn_id or self.conn_id

    def _open_history(self) -> HistoryStore | None:
        """The history store of this sync (None: off, or unreachable, which only warns)."""
        if self._history is None:
            return None
        try:
            store = open_store(self._history, self.sql_hook if self._history.conn_id is None else None)
            store.ensure_tables()
            return store
        except Exception as exc:  # noqa: BLE001 - history never changes the sync's outcome
            warn_history(self.log, "sync history unavailable; this try is not recorded", exc)
            return None

    def _acknowledged(self, history: HistoryStore | None, sync_id: str) -> dict[str, int]:
        """Rejects a user acknowledged since the last run: key -> the row hash they were refused with."""
        if history is None:
            return {}
        try:
            acks = history.pending_acknowledgements(sync_id)
        except Exception as exc:  # noqa: BLE001
            warn_history(self.log, "could not read acknowledged rejects (they are retried as usual)", exc)
            return {}
        if acks:
            self.log.info("%d acknowledged rejects: unchanged rows are marked synced without sending", len(acks))
        return acks

    def _mark_acknowledgements_applied(self, history: HistoryStore | None, sync_id: str, keys: list[str]) -> None:
        if history is None:
            return
        try:
            history.mark_applied(sync_id, keys)
        except Exception as exc:  # noqa: BLE001
            warn_history(self.log, "could not mark acknowledgements applied (the next run re-applies them)", exc)

    def _write_history(
        self,
        history: HistoryStore | None,
        outcomes: RecordOutcomes | None,
        context: Context,
        sync_id: str,
        started_at: str,
        error: BaseException | None,
    ) -> bool:
        if history is None or outcomes is None or self._history is None:
            return False
        try:
            row = run_row(
                self,
                context,
                outcomes.report,
                sync_id=sync_id,
                started_at=started_at,
                error=error,
                destination_url=self._destination_url(),
            )
        except Exception as exc:  # noqa: BLE001
            warn_history(self.log, "could not describe this try for the sync history", exc)
            return False
        return write_try(history, self._history, row, outcomes, self.log)

    def _destination_url(self) -> str:
        """The destination's page of the object (as the task's link shows it), or ""."""
        try:
            return operator_destination_url(self)
        except Exception:  # noqa: BLE001 - a link is a nicety
            return ""


def _connection(conn_id: str, parameter: str) -> Any:
    """The Connection ``conn_id``; a missing one fails the task for good (no retry defines it)."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise AirflowFailException(
            f"{parameter} {conn_id!r} is not defined: add the connection (UI, AIRFLOW_CONN_{conn_id.upper()} "
            f"or a secrets backend), then clear the task; {exc}"
        ) from exc


def _first_lines(error: BaseException, limit: int = 5) -> str:
    # Driver messages can carry a long query echo and a caret line; the gist is at the top.
    lines = str(error).strip().splitlines()
    return "\n".join(lines[:limit]) + (" ..." if len(lines) > limit else "")


def guardrails_overridden(context: Any, sync_id: str) -> bool:
    """Whether the DAG run's conf turns the guardrails off for ``sync_id`` (this run only).

    ``{"retl_override_guardrails": true}`` for every sync of the run, or a list of sync ids.
    """
    dag_run = context.get("dag_run") if hasattr(context, "get") else None
    conf = getattr(dag_run, "conf", None) or {}
    value = conf.get("retl_override_guardrails") if isinstance(conf, dict) else None
    if value is True:
        return True
    if isinstance(value, str):
        value = [value]
    return isinstance(value, list | tuple) and sync_id in value
