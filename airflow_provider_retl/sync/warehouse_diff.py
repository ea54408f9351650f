"""The diff inside the warehouse: the checkpoint is a table next to the data, compared in SQL.

For tables of tens of millions of rows, reading every row out of the warehouse on every run
only to find that almost nothing changed costs time, memory and egress. Here the checkpoint
lives in a warehouse table (``sync_id, key_hash, row_hash, dest_id``) and each run asks the
warehouse for the difference: the query's rows are hashed in SQL, joined with the checkpoint,
and only new, changed, duplicated or bad-key rows (with their payloads) and removed keys
(hash and destination id) leave the warehouse. A no-op run moves two numbers.

Hashes are the first 64 bits of an MD5 of a canonical text built in SQL (every column in the
canonical form of ``sync.sqlcompose.canonical_expression``, the text Python's ``canonical_value``
gives for the same value, so a retyped column or another session TimeZone changes no hash;
length-prefixed so columns cannot run into each other; NULL is its own token). They
are comparable only within one warehouse, which is the only place they are ever compared;
the hash algorithm recorded with the checkpoint names the dialect, so moving the table to
another warehouse re-plans safely instead of trusting foreign hashes.

SQL is written once (PostgreSQL syntax) and transpiled with sqlglot to the warehouse's
dialect; the user's query is inserted verbatim as a subquery on lines of its own, never
transpiled, at a placeholder found by token (``sync.sqlcompose.render``).
Progress is written back per committed batch (the same journal entries the other stores
append), so a killed try resumes from the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlglot import exp

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync import sqlcompose
from airflow_provider_retl.sync.checkpoint import FORMAT_VERSION, Checkpoint, JournalEntry
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.diff import (
    DEST_ID,
    INTERNAL,
    KEY,
    KEY_HASH,
    KIND,
    ROW_HASH,
    SnapshotDiff,
    duplicate_key_reject,
)
from airflow_provider_retl.sync.errors import CheckpointError, ConfigurationError
from airflow_provider_retl.sync.legacy import LEGACY_CHECKPOINT_NOTE
from airflow_provider_retl.sync.progress import Progress
from airflow_provider_retl.sync.records import PENDING, ChangeKind, Reject, SyncReport
from airflow_provider_retl.sync.sqlnames import DEFAULT_TABLE, table_parts

#: The placeholder table name the generated SQL uses for the user's query.
_QUERY = sqlcompose.QUERY
#: PostgreSQL text cannot hold the engine's NUL-prefixed pending mark; this is its stored form.
_STORED_PENDING = "__retl_pending__"
_ZERO_HASH = "0" * 16
#: Warehouse kinds (sources.source_kind) -> sqlglot dialects.
DIALECTS = {
    "postgres": "postgres",
    "redshift": "redshift",
    "duckdb": "duckdb",
    "sqlite": "sqlite",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "mysql": "mysql",
}


class SqlRunner(Protocol):
    """How the warehouse diff talks to a warehouse (the Airflow side builds one from a SQL hook)."""

    dialect: str

    def read(self, sql: str, *, query_uses: int = 0) -> Iterator[pd.DataFrame]:
        """Stream the rows of ``sql``; ``query_uses`` = how often the user's query (and so its
        parameters) occurs in it."""

    def columns(self, sql: str, *, query_uses: int = 0) -> Sequence[tuple[Any, ...]]:
        """(name in SQL, name in the frames ``read`` gives[, DB-API type code]) of each column ``sql`` returns
        (run with LIMIT 0). Without the type code a column's canonical text is a plain text cast."""

    def execute(self, statements: Sequence[str], *, query_uses: Sequence[int] = ()) -> None:
        """Run ``statements`` in one transaction and commit (``query_uses`` per statement, default 0)."""


@dataclass(frozen=True)
class _Sql:
    """SQL text builders for one dialect and one sync (composition rules: ``sync.sqlcompose``)."""

    dialect: str
    table_name: str
    sync_id: str

    def render(self, template: str, query: str | None = None, expressions: Mapping[str, str] | None = None) -> str:
        """Transpile a PostgreSQL-syntax template; then put the user's query and ``expressions`` in, by token."""
        return sqlcompose.render(template, self.dialect, query=query, expressions=expressions)

    def ident(self, name: str) -> str:
        return exp.to_identifier(name, quoted=True).sql("postgres")

    def literal(self, value: str) -> str:
        return exp.Literal.string(value).sql("postgres")

    @property
    def _parts(self) -> list[str]:
        return table_parts(self.table_name)

    @property
    def table(self) -> str:
        return sqlcompose.quoted_table(self._parts, self.dialect)

    @property
    def meta_table(self) -> str:
        parts = self._parts
        return sqlcompose.quoted_table([*parts[:-1], f"{parts[-1]}_meta"], self.dialect)

    @property
    def sync_filter(self) -> str:
        return f"sync_id = {self.literal(self.sync_id)}"


def algorithm_for(dialect: str) -> str:
    """The hash algorithm a warehouse checkpoint of ``dialect`` is written with (issue 15's canonical SQL)."""
    return f"sql-canon3-md5-64/{dialect}"


def legacy_algorithm_for(dialect: str) -> str:
    """What the previous release wrote: key and row texts were plain ``CAST(column AS TEXT)``."""
    return f"sql-md5-64/{dialect}"


class WarehouseCheckpointStore:
    """A checkpoint kept as a table in the warehouse, diffed in SQL: for syncs too large to read whole.

    ``runner`` executes SQL on the warehouse; ``query`` is the sync's query (run inside the
    diff statements); ``table`` is ``[schema.]table`` (created when missing, with a
    ``<table>_meta`` companion holding the fingerprints). Several syncs share one table,
    separated by ``sync_id``. Stores no raw values: only hashes and destination ids.
    """

    def __init__(self, runner: SqlRunner, query: str, *, sync_id: str, table: str = DEFAULT_TABLE) -> None:
        if runner.dialect not in DIALECTS.values():
            raise ConfigurationError(
                f"checkpoint='warehouse' supports {sorted(DIALECTS)} warehouses; this one is {runner.dialect!r}"
            )
        table = str(table).strip()
        table_parts(table)  # a bad name fails here, with the rule (the operator checks it at DAG parse)
        self.runner = runner
        self.query = sqlcompose.query_body(query, runner.dialect)
        self.sql = _Sql(runner.dialect, table, sync_id)
        self.algorithm = algorithm_for(runner.dialect)
        self._created = False

    @property
    def description(self) -> str:
        return f"warehouse table {self.sql.table_name} (sync {self.sql.sync_id!r}, diffed in SQL)"

    # ------------------------------------------------------------------ tables
    def ensure_tables(self) -> None:
        if self._created:
            return
        s = self.sql
        # Row stores need the key index for the per-batch DELETE ... IN (...); DuckDB's is an in-memory
        # ART that costs more than it saves (its scans and hash joins need none), so it gets none.
        key = "" if s.dialect == "duckdb" else ", PRIMARY KEY (sync_id, key_hash)"
        self.runner.execute(
            [
                s.render(
                    f"CREATE TABLE IF NOT EXISTS {s.table} (sync_id VARCHAR(200) NOT NULL, key_hash VARCHAR(16) NOT NULL, "
                    f"row_hash VARCHAR(16) NOT NULL, dest_id VARCHAR(255){key})"
                ),
                s.render(
                    f"CREATE TABLE IF NOT EXISTS {s.meta_table} (sync_id VARCHAR(200) NOT NULL PRIMARY KEY, "
                    f"format_version INTEGER NOT NULL, hash_algorithm VARCHAR(64) NOT NULL, "
                    f"target_fingerprint VARCHAR(64) NOT NULL, payload_fingerprint VARCHAR(64) NOT NULL)"
                ),
            ]
        )
        self._created = True

    # ------------------------------------------------------------------ CheckpointStore
    def load(self) -> Checkpoint | None:
        """Only the fingerprints: the rows stay in the warehouse."""
        self.ensure_tables()
        s = self.sql
        frames = list(
            self.runner.read(
                s.render(
                    f"SELECT format_version, hash_algorithm, target_fingerprint, payload_fingerprint "
                    f"FROM {s.meta_table} WHERE {s.sync_filter}"
                )
            )
        )
        rows = pd.concat(frames) if frames else pd.DataFrame()
        if len(rows) == 0:
            return None
        row = {str(k).lower(): v for k, v in rows.iloc[0].items()}
        version = int(row["format_version"])
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint was written by a newer airflow-provider-retl (format {version}, this one reads "
                f"up to {FORMAT_VERSION}); upgrade the provider or reset with full_resync=True"
            )
        return Checkpoint(
            str(row["target_fingerprint"]),
            str(row["payload_fingerprint"]),
            hash_algorithm=str(row["hash_algorithm"]),
        )

    def _meta_statements(self, target: str, payload: str) -> list[str]:
        s = self.sql
        values = ", ".join(
            [
                s.literal(s.sync_id),
                str(FORMAT_VERSION),
                s.literal(self.algorithm),
                s.literal(target),
                s.literal(payload),
            ]
        )
        return [
            s.render(f"DELETE FROM {s.meta_table} WHERE {s.sync_filter}"),
            s.render(
                f"INSERT INTO {s.meta_table} (sync_id, format_version, hash_algorithm, target_fingerprint, "
                f"payload_fingerprint) VALUES ({values})"
            ),
        ]

    def commit(self, entry: JournalEntry, *, target_fingerprint: str, payload_fingerprint: str) -> None:
        """Apply one batch's outcomes to the table, with the fingerprints, in one transaction."""
        self.ensure_tables()
        s = self.sql
        statements: list[str] = []
        touched = [_hex(k) for k in np.concatenate([entry.key_hashes, entry.deleted]).tolist()]
        for start in range(0, len(touched), 1000):
            keys = ", ".join(s.literal(k) for k in touched[start : start + 1000])
            statements.append(s.render(f"DELETE FROM {s.table} WHERE {s.sync_filter} AND key_hash IN ({keys})"))
        rows = [
            f"({s.literal(s.sync_id)}, {s.literal(_hex(k))}, {s.literal(_hex(r))}, {_id_literal(s, i)})"
            for k, r, i in zip(entry.key_hashes.tolist(), entry.row_hashes.tolist(), entry.dest_ids, strict=True)
        ]
        for start in range(0, len(rows), 500):
            statements.append(
                s.render(
                    f"INSERT INTO {s.table} (sync_id, key_hash, row_hash, dest_id) VALUES {', '.join(rows[start : start + 500])}"
                )
            )
        statements += self._meta_statements(target_fingerprint, payload_fingerprint)
        self.runner.execute(statements)

    def finalize(self, checkpoint: Checkpoint) -> None:
        """Rows were applied by each commit; record the fingerprints this run synced under."""
        self.ensure_tables()
        self.runner.execute(self._meta_statements(checkpoint.target_fingerprint, checkpoint.payload_fingerprint))

    # ------------------------------------------------------------------ resets
    def discard(self) -> None:
        """Forget every row of this sync (its destination ids mean nothing any more)."""
        s = self.sql
        self.runner.execute(
            [
                s.render(f"DELETE FROM {s.table} WHERE {s.sync_filter}"),
                s.render(f"DELETE FROM {s.meta_table} WHERE {s.sync_filter}"),
            ]
        )

    def forget_contents(self, target: str, payload: str) -> None:
        """Keep the ids, forget what was sent (row hash 0): every row is re-sent, even after a failed try."""
        s = self.sql
        self.runner.execute(
            [s.render(f"UPDATE {s.table} SET row_hash = {s.literal(_ZERO_HASH)} WHERE {s.sync_filter}")]
            + self._meta_statements(target, payload)
        )

    def make_diff(
        self, destination: Destination, config: SyncConfig, report: SyncReport, progress: Progress
    ) -> WarehouseDiff:
        return WarehouseDiff(destination, self, config, report, progress)


class WarehouseDiff(SnapshotDiff):
    """SnapshotDiff's decisions (columns, match field, key folding, checkpoint trust), computed in SQL."""

    store: WarehouseCheckpointStore

    def __init__(
        self,
        destination: Destination,
        store: WarehouseCheckpointStore,
        config: SyncConfig,
        report: SyncReport,
        progress: Progress,
    ) -> None:
        super().__init__(destination, store, config, report, progress)
        if getattr(config, "partition", None):
            raise ConfigurationError(
                "checkpoint='warehouse' diffs the whole query in the warehouse; partitioned syncs use the "
                "variable, xcom or file checkpoints"
            )
        self.resend_all = False
        self.ignore_checkpoint = False
        self.pending: pd.DataFrame | None = None
        self.removed_keys = np.empty(0, dtype=np.uint64)
        self.removed_ids = np.empty(0, dtype=object)
        #: frame column name -> the identifier SQL must quote (Snowflake: "email" -> "EMAIL").
        self.sql_names: dict[str, str] = {}
        #: frame column name -> DB-API type code of the query's column (decides its canonical SQL).
        self.sql_types: dict[str, Any] = {}
        #: placeholder -> canonical-text SQL of one column, put into the transpiled statements by token.
        self.expressions: dict[str, str] = {}

    # ------------------------------------------------------------------ checkpoint trust
    def _adopt_checkpoint(self, payload_fingerprint: str) -> None:
        store, cfg = self.store, self.config
        target = cfg.target_fingerprint(self.match_field, fold_keys=self.fold_keys)
        loaded = self.loaded
        reset = None
        if (
            loaded is not None
            and loaded.hash_algorithm == legacy_algorithm_for(store.sql.dialect)
            and loaded.target_fingerprint == target
        ):
            # The previous release's table: its ids and sent events still hold, only key texts changed.
            self.report.checkpoint_reset = LEGACY_CHECKPOINT_NOTE
            if cfg.dry_run:
                self.ignore_checkpoint = True  # a dry run writes nothing, so it cannot translate the keys
            else:
                store.runner.execute(
                    self.upgrade_statements(target, payload_fingerprint), query_uses=[0, 2, 0, 0, 0, 0]
                )
        elif loaded is not None and loaded.hash_algorithm != store.algorithm:
            reset = "hash algorithm changed: every row is re-planned"
        elif loaded is not None and loaded.target_fingerprint != target:
            reset = "destination, object, primary key or match field changed: destination ids discarded, every row re-planned"
        if reset:
            self.report.checkpoint_reset = reset
            # Events: the engine refuses to re-send what the old rows knew as sent (unless resend_events),
            # so they are kept until it has decided; forgetting them first would lose that for good.
            keep = self.caps.events and not cfg.resend_events
            if cfg.dry_run or keep:
                self.ignore_checkpoint = True
            else:
                store.discard()  # nothing was sent yet; the old rows mean nothing for this definition
        elif loaded is not None and (loaded.payload_fingerprint != payload_fingerprint or cfg.full_resync):
            if not cfg.full_resync:
                self.report.checkpoint_reset = "mapping changed: every row is re-sent (destination ids kept)"
            if cfg.dry_run:
                self.resend_all = True
            else:
                store.forget_contents(target, payload_fingerprint)
        self.base = Checkpoint(target, payload_fingerprint, hash_algorithm=store.algorithm)

    def base_differs_from_store(self) -> bool:
        loaded, base = self.loaded, self.base
        return (
            loaded is None
            or base is None
            or loaded.hash_algorithm != base.hash_algorithm
            or loaded.target_fingerprint != base.target_fingerprint
            or loaded.payload_fingerprint != base.payload_fingerprint
        )

    # ------------------------------------------------------------------ SQL pieces
    def _ident(self, column: str) -> str:
        return self.store.sql.ident(self.sql_names.get(column, column))

    def _text(self, column: str) -> str:
        """The column's canonical text (``sync.sqlcompose.canonical_expression``): the same for the same value
        whatever the column's type or the session's settings; NULL for NULL (and NaN)."""
        dialect = self.store.sql.dialect
        if not sqlcompose.native_canonical(dialect):
            return f"CAST({self._ident(column)} AS TEXT)"
        declared = {
            str(k).lower(): str(v).lower() for k, v in (getattr(self.store.runner, "column_types", None) or {}).items()
        }
        sql = sqlcompose.canonical_expression(
            dialect,
            exp.to_identifier(self.sql_names.get(column, column), quoted=True).sql(dialect),
            sqlcompose.column_kind(dialect, self.sql_types.get(column)),
            declared.get(str(column).lower()),
        )
        for name, known in self.expressions.items():
            if known == sql:
                return name
        name = f"{sqlcompose.EXPRESSION_PREFIX}{len(self.expressions)}__"
        self.expressions[name] = sql
        return name

    def _key_text(self) -> str:
        """The key's canonical text; NULL when any part is NULL or blank (those rows are rejected)."""
        parts = [self._text(c) for c in self.key_columns]
        if self.fold_keys:
            parts = [f"LOWER(TRIM({parts[0]}))"]
        bad = " OR ".join(f"{self._text(c)} IS NULL OR TRIM({self._text(c)}) = ''" for c in self.key_columns)
        joined = (
            parts[0]
            if len(parts) == 1
            else " || '|' || ".join(f"CAST(LENGTH({p}) AS TEXT) || ':' || {p}" for p in parts)
        )
        return f"CASE WHEN {bad} THEN NULL ELSE {joined} END"

    def _row_text(self) -> str:
        assert self.field_sources is not None
        pieces = [
            f"COALESCE(CAST(LENGTH({self._text(src)}) AS TEXT) || ':' || {self._text(src)}, 'n')"
            for _, src in sorted(self.field_sources.items())
        ]
        return " || '|' || ".join(pieces) if pieces else "''"

    @staticmethod
    def _hash(text: str) -> str:
        return f"SUBSTRING(MD5({text}), 1, 16)"

    def _checkpoint_rows(self) -> str:
        s = self.store.sql
        never = " AND 1 = 0" if self.ignore_checkpoint else ""
        return f"(SELECT key_hash, row_hash, dest_id FROM {s.table} WHERE {s.sync_filter}{never})"

    def diff_sql(self) -> str:
        """New, changed, duplicated and bad-key rows with their payloads (one statement, one snapshot)."""
        kt = self._key_text()
        changed = (
            "1 = 1"
            if self.resend_all
            else (f"c.key_hash IS NULL OR c.row_hash <> s.__retl_row_hash OR c.dest_id = '{_STORED_PENDING}'")
        )
        # PostgreSQL flattens the subquery and recomputes its MD5s in every join and filter that names
        # them; OFFSET 0 is its documented fence (measured at 1M rows: 17.7 s -> 10.6 s for this statement).
        fence = " OFFSET 0" if self.store.sql.dialect in ("postgres", "redshift") else ""
        template = (
            "SELECT s.*, c.dest_id AS __retl_dest_id, c.key_hash AS __retl_known, k.copies AS __retl_copies "
            f"FROM (SELECT q.*, {kt} AS __retl_key_text, {self._hash(kt)} AS __retl_key_hash, "
            f"{self._hash(self._row_text())} AS __retl_row_hash FROM {_QUERY} AS q{fence}) AS s "
            f"LEFT JOIN {self._checkpoint_rows()} AS c ON c.key_hash = s.__retl_key_hash "
            f"LEFT JOIN (SELECT {self._hash(kt)} AS key_hash, COUNT(*) AS copies FROM {_QUERY} AS q "
            f"WHERE ({kt}) IS NOT NULL GROUP BY {self._hash(kt)}) AS k ON k.key_hash = s.__retl_key_hash "
            f"WHERE s.__retl_key_text IS NULL OR k.copies > 1 OR {changed}"
        )
        return self.store.sql.render(template, self.store.query, self.expressions)

    def canonical_sql(self) -> str:
        """The key text and each mapped field's canonical text of every row (to inspect what the hashes see)."""
        assert self.field_sources is not None
        fields = ", ".join(
            f"{self._text(src)} AS {self.store.sql.ident(dest)}" for dest, src in sorted(self.field_sources.items())
        )
        template = f"SELECT {self._key_text()} AS __retl_key_text, {fields} FROM {_QUERY} AS q"
        return self.store.sql.render(template, self.store.query, self.expressions)

    def removed_sql(self) -> str:
        """Checkpointed keys the query no longer returns, plus the number of rows read."""
        kt = self._key_text()
        template = (
            "SELECT c.key_hash AS __retl_key_hash, c.dest_id AS __retl_dest_id, CAST(NULL AS BIGINT) AS __retl_rows "
            f"FROM {self._checkpoint_rows()} AS c WHERE NOT EXISTS (SELECT 1 FROM {_QUERY} AS q "
            f"WHERE {self._hash(kt)} = c.key_hash) "
            f"UNION ALL SELECT NULL, NULL, COUNT(*) FROM {_QUERY} AS q"
        )
        return self.store.sql.render(template, self.store.query, self.expressions)

    def _legacy_key_text(self) -> str:
        """The previous release's key text (``CAST(column AS TEXT)`` parts), to find its checkpoint rows."""
        parts = [f"CAST({self._ident(c)} AS TEXT)" for c in self.key_columns]
        if self.fold_keys:
            parts = [f"LOWER(TRIM({parts[0]}))"]
        if len(parts) == 1:
            return parts[0]
        return " || '|' || ".join(f"CAST(LENGTH({p}) AS TEXT) || ':' || {p}" for p in parts)

    def upgrade_statements(self, target: str, payload: str) -> list[str]:
        """Move a previous release's checkpoint rows to this release's key hashes; ids kept, row hashes zeroed.

        Each live row's old and new key hashes are computed side by side; a checkpoint row found by
        its old hash takes the new one when the pair is one-to-one and the new hash is not taken.
        Every row hash becomes 0, so each known key is re-planned by its id (no lookup, no event).
        Checkpoint rows no live row matches keep their old hash: they are the removed keys either way.
        """
        s = self.store.sql
        kt = self._key_text()
        staging = s.literal(f"{s.sync_id}#upgrade")
        pairs = (
            f"SELECT {self._hash(self._legacy_key_text())} AS old_hash, {self._hash(kt)} AS new_hash "
            f"FROM {_QUERY} AS q WHERE ({kt}) IS NOT NULL"
        )
        moves = (
            f"SELECT p.old_hash, MIN(p.new_hash) AS new_hash FROM ({pairs}) AS p "
            f"WHERE p.old_hash <> p.new_hash AND p.new_hash NOT IN "
            f"(SELECT key_hash FROM {s.table} WHERE {s.sync_filter}) "
            f"AND p.new_hash IN (SELECT p2.new_hash FROM ({pairs}) AS p2 GROUP BY p2.new_hash "
            f"HAVING COUNT(DISTINCT p2.old_hash) = 1) "
            f"GROUP BY p.old_hash HAVING COUNT(DISTINCT p.new_hash) = 1"
        )
        insert = (
            f"INSERT INTO {s.table} (sync_id, key_hash, row_hash, dest_id) "
            f"SELECT {staging}, COALESCE(m.new_hash, c.key_hash), {s.literal(_ZERO_HASH)}, c.dest_id "
            f"FROM {self._checkpoint_rows()} AS c LEFT JOIN ({moves}) AS m ON m.old_hash = c.key_hash"
        )
        return [
            s.render(f"DELETE FROM {s.table} WHERE sync_id = {staging}"),
            s.render(insert, self.store.query, self.expressions),
            s.render(f"DELETE FROM {s.table} WHERE {s.sync_filter}"),
            s.render(f"UPDATE {s.table} SET sync_id = {s.literal(s.sync_id)} WHERE sync_id = {staging}"),
            *self.store._meta_statements(target, payload),
        ]

    def rebaseline_statements(self) -> list[str]:
        s = self.store.sql
        kt = self._key_text()
        staging = s.literal(f"{s.sync_id}#rebaseline")
        insert = (
            f"INSERT INTO {s.table} (sync_id, key_hash, row_hash, dest_id) "
            f"SELECT {staging}, h.key_hash, h.row_hash, c.dest_id FROM "
            f"(SELECT {self._hash(kt)} AS key_hash, MIN({self._hash(self._row_text())}) AS row_hash FROM {_QUERY} AS q "
            f"WHERE ({kt}) IS NOT NULL GROUP BY {self._hash(kt)} HAVING COUNT(*) = 1) AS h "
            f"LEFT JOIN {self._checkpoint_rows()} AS c ON c.key_hash = h.key_hash"
        )
        return [
            s.render(f"DELETE FROM {s.table} WHERE sync_id = {staging}"),
            s.render(insert, self.store.query, self.expressions),
            s.render(f"DELETE FROM {s.table} WHERE {s.sync_filter}"),
            s.render(f"UPDATE {s.table} SET sync_id = {s.literal(s.sync_id)} WHERE sync_id = {staging}"),
        ]

    # ------------------------------------------------------------------ reading
    def describe_query(self) -> None:
        """Learn the query's columns (names as SQL spells them, types) and resolve key and mapping on them."""
        probe = self.store.sql.render(f"SELECT * FROM {_QUERY} AS q LIMIT 0", self.store.query)
        named = self.store.runner.columns(probe, query_uses=1)
        if not named:
            raise ConfigurationError("the query returned no columns")
        # A runner may also report each column's DB-API type code (HookSqlRunner does): it picks the canonical SQL.
        self.sql_names = {str(shown): str(in_sql) for in_sql, shown, *_ in named}
        self.sql_types = {str(col[1]): col[2] for col in named if len(col) > 2}
        self._setup_columns([str(col[1]) for col in named])

    def read_in_warehouse(self) -> None:
        """Ask the warehouse for the difference; only changed rows come back."""
        self.describe_query()
        assert self.field_sources is not None
        pending_parts: list[pd.DataFrame] = []
        bad_rows = dup_rows = 0
        for chunk in self.store.runner.read(self.diff_sql(), query_uses=2):
            if not len(chunk):
                continue
            chunk = chunk.reset_index(drop=True)
            lowered = {str(c).lower(): c for c in chunk.columns}
            internal = {
                name: chunk[lowered[name]]
                for name in (
                    "__retl_key_text",
                    "__retl_key_hash",
                    "__retl_row_hash",
                    "__retl_dest_id",
                    "__retl_known",
                    "__retl_copies",
                )
            }
            parts = fp.key_parts(chunk, self.key_columns)
            keys = fp.join_key_parts(parts)
            # The warehouse decided which keys are bad (NULL or blank); the reasons are SnapshotDiff's.
            bad = internal["__retl_key_text"].isna().to_numpy()
            _, reasons = self.key_problems(parts)
            for i in np.flatnonzero(bad):
                reason = reasons.get(int(i), "primary key is NULL or empty")
                self.report.add_reject(Reject(fp.display_key(keys[i]), reason, "source"))
            copies = pd.to_numeric(internal["__retl_copies"], errors="coerce").fillna(0).to_numpy()
            dup = ~bad & (copies > 1)
            for i in np.flatnonzero(dup):
                self.report.add_reject(duplicate_key_reject(fp.display_key(keys[i]), int(copies[i])))
            bad_rows += int(bad.sum())
            dup_rows += int(dup.sum())
            keep = ~bad & ~dup
            if not keep.any():
                continue
            part = pd.DataFrame({dest: chunk[src] for dest, src in self.field_sources.items()})[keep].reset_index(
                drop=True
            )
            ids = internal["__retl_dest_id"][keep].to_numpy(dtype=object)
            # The same key text the in-memory diff builds (event ids are derived from it); rejects
            # above show the key as the source has it.
            part[KEY] = fp.fold_case(keys[keep]) if self.fold_keys else keys[keep]
            part[KEY_HASH] = _u64(internal["__retl_key_hash"][keep])
            part[ROW_HASH] = _u64(internal["__retl_row_hash"][keep])
            part[DEST_ID] = np.array([_stored_id(i) for i in ids], dtype=object)
            part[KIND] = np.where(
                internal["__retl_known"][keep].isna().to_numpy(), ChangeKind.NEW.value, ChangeKind.CHANGED.value
            )
            pending_parts.append(part)
        self.pending = (
            pd.concat(pending_parts, ignore_index=True)
            if pending_parts
            else pd.DataFrame(columns=[*self.field_sources, *INTERNAL])
        )
        removed_keys, removed_ids, rows_read = [], [], 0
        for chunk in self.store.runner.read(self.removed_sql(), query_uses=2):
            lowered = {str(c).lower(): c for c in chunk.columns}
            counts = chunk[lowered["__retl_rows"]]
            rows_read += int(pd.to_numeric(counts, errors="coerce").fillna(0).sum())
            gone = counts.isna().to_numpy()
            removed_keys += chunk[lowered["__retl_key_hash"]][gone].tolist()
            removed_ids += [_stored_id(i) for i in chunk[lowered["__retl_dest_id"]][gone].tolist()]
        self.removed_keys = _u64(pd.Series(removed_keys, dtype=object))
        self.removed_ids = np.array(removed_ids, dtype=object)
        self.report.rows_read = rows_read
        self.report.unchanged = rows_read - bad_rows - dup_rows - len(self.pending)
        self.report.planned["new"] = int((self.pending[KIND] == ChangeKind.NEW.value).sum())
        self.report.planned["changed"] = int((self.pending[KIND] == ChangeKind.CHANGED.value).sum())
        self.report.planned["removed"] = len(self.removed_keys)
        self.progress("read %d rows in the warehouse; %d came out", rows_read, len(self.pending) + bad_rows + dup_rows)

    def finish_read(self) -> pd.DataFrame:
        if self.pending is None:
            raise RuntimeError("read_in_warehouse() must run before finish_read()")
        return self.pending

    def removed(self) -> tuple[np.ndarray, np.ndarray]:
        return self.removed_keys, self.removed_ids

    def rebaseline(self) -> None:
        """Mark the whole current result as synced, in SQL, without sending anything."""
        assert self.base is not None
        self.store.runner.execute(self.rebaseline_statements(), query_uses=[0, 1, 0, 0])
        self.store.finalize(self.base)


def _hex(value: int) -> str:
    return f"{int(value):016x}"


def _u64(hexes: pd.Series) -> np.ndarray:
    return np.array([int(str(h), 16) for h in hexes.tolist()], dtype=np.uint64)


def _stored_id(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return PENDING if text == _STORED_PENDING else text


def _id_literal(s: _Sql, dest_id: Any) -> str:
    if dest_id is None or (isinstance(dest_id, float) and np.isnan(dest_id)):
        return "NULL"
    return s.literal(_STORED_PENDING if dest_id == PENDING else str(dest_id))


__all__ = [
    "DEFAULT_TABLE",
    "DIALECTS",
    "SqlRunner",
    "WarehouseCheckpointStore",
    "WarehouseDiff",
    "algorithm_for",
    "legacy_algorithm_for",
]
