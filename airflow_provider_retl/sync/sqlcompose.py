"""Composing the warehouse diff's SQL around the user's query, structurally, and canonical values in SQL.

Two jobs, both about never treating SQL as a flat string:

* **Composition.** Generated statements are written once (PostgreSQL syntax), transpiled with
  sqlglot, and only then receive the pieces that must not be transpiled: the user's query and
  dialect-specific expressions. Those go in at *placeholder identifiers*, found with sqlglot's
  tokenizer: only an unquoted identifier token equal to the placeholder is replaced, so the same
  text inside a string literal (a sync id) or a quoted identifier (a column) is never touched.
  The user's query goes in as ``(\\n<query>\\n)``: on lines of its own, so a trailing
  ``-- comment`` ends on its own line; a trailing ``;`` is removed by token, not by text.
* **Canonical values.** ``canonical_expression`` writes, per dialect and column type, the SQL
  that yields the same text ``sync.fingerprint.canonical_value`` gives for the same value in
  Python: integers without ``.0``, decimals without trailing zeros (``numeric(12,2)`` 1.00 is
  ``1``), floats as Python's shortest ``repr`` (integral floats below 2**53 as integers; NaN is
  NULL), booleans ``true``/``false``, timestamps in UTC ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``
  (naive ones are taken as UTC), dates ``YYYY-MM-DD``, text as it is. None of them depends on a
  session setting (``TimeZone``, ``DateStyle``, ``extra_float_digits``). PostgreSQL and DuckDB
  get native expressions; SQLite calls ``retl_canonical`` (registered by the Airflow side with
  Python's own ``canonical_value``); other dialects keep ``CAST(... AS TEXT)`` (a known limit:
  stable, but not retype-proof).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.sqlnames import table_parts

#: Placeholder identifier of the user's query in generated templates.
QUERY = "__retl_query__"
#: Prefix of placeholders for dialect-specific expressions (``__retl_x0__`` ...).
EXPRESSION_PREFIX = "__retl_x"

#: Dialects whose unquoted identifiers fold case: a quoted name must be folded the same way to mean the same table.
_FOLDING = {"postgres", "redshift", "snowflake", "duckdb", "sqlite"}

# Column kinds the canonical expressions distinguish.
INTEGER, DECIMAL, FLOAT, FLOAT4, BOOLEAN, TIMESTAMP, TIMESTAMPTZ, DATE, TEXT = (
    "integer",
    "decimal",
    "float",
    "float4",
    "boolean",
    "timestamp",
    "timestamptz",
    "date",
    "text",
)

# PostgreSQL type OIDs (pg_type.oid; stable across versions) -> kind.
_PG_KINDS = {
    20: INTEGER,
    21: INTEGER,
    23: INTEGER,
    26: INTEGER,
    1700: DECIMAL,
    700: FLOAT4,
    701: FLOAT,
    16: BOOLEAN,
    1114: TIMESTAMP,
    1184: TIMESTAMPTZ,
    1082: DATE,
    25: TEXT,
    1043: TEXT,
    1042: TEXT,
    19: TEXT,
}
_DUCKDB_INTEGERS = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
# column_types (sources.COLUMN_TYPES) -> (kind, PostgreSQL type, DuckDB type) to cast a declared column to.
_DECLARED = {
    "integer": (INTEGER, "NUMERIC", "HUGEINT"),
    "decimal": (DECIMAL, "NUMERIC", "DECIMAL(38, 10)"),
    "boolean": (BOOLEAN, "BOOLEAN", "BOOLEAN"),
    "timestamp": (TIMESTAMP, "TIMESTAMP", "TIMESTAMP"),
    "timestamptz": (TIMESTAMPTZ, "TIMESTAMPTZ", "TIMESTAMPTZ"),
    "date": (DATE, "DATE", "DATE"),
    "string": (TEXT, None, None),
    "json": (None, None, None),
}
_SAFE_FLOAT_INT = "9007199254740992"  # 2**53: integral floats below it are written as integers


def column_kind(dialect: str, type_code: Any) -> str | None:
    """The kind of a result column from its DB-API ``type_code`` (None: not known, cast to text)."""
    if dialect == "postgres" and isinstance(type_code, int):
        return _PG_KINDS.get(type_code)
    if dialect == "duckdb":
        name = str(type_code).upper()
        if name in _DUCKDB_INTEGERS:
            return INTEGER
        if name.startswith("DECIMAL"):
            return DECIMAL
        if name == "DOUBLE":
            return FLOAT
        if name in ("FLOAT", "REAL"):
            return FLOAT4
        if name == "BOOLEAN":
            return BOOLEAN
        if name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            return TIMESTAMPTZ
        if name.startswith("TIMESTAMP"):
            return TIMESTAMP
        if name == "DATE":
            return DATE
        if name == "VARCHAR":
            return TEXT
    return None


def _pg_float(x: str) -> str:
    # PostgreSQL writes shortest round-trip digits (extra_float_digits >= 1, pinned anyway) but switches to
    # exponent notation from 1e15 where Python's repr does from 1e16: that decade goes through numeric.
    return (
        f"CASE WHEN {x} = 'NaN' THEN NULL WHEN {x} = 'Infinity' THEN 'inf' WHEN {x} = '-Infinity' THEN '-inf' "
        f"WHEN {x} = TRUNC({x}) AND ABS({x}) < {_SAFE_FLOAT_INT} THEN CAST(CAST({x} AS BIGINT) AS TEXT) "
        f"WHEN ABS({x}) >= 1e15 AND ABS({x}) < 1e16 THEN CAST(CAST(CAST({x} AS TEXT) AS NUMERIC) AS TEXT) "
        f"|| CASE WHEN {x} = TRUNC({x}) THEN '.0' ELSE '' END ELSE CAST({x} AS TEXT) END"
    )


def _duckdb_float(x: str) -> str:
    # DuckDB's double -> VARCHAR is Python's repr (same digits, same exponent thresholds, inf/-inf).
    return (
        f"CASE WHEN ISNAN({x}) THEN NULL WHEN ISINF({x}) THEN CAST({x} AS VARCHAR) "
        f"WHEN {x} = TRUNC({x}) AND ABS({x}) < {_SAFE_FLOAT_INT} THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) "
        f"ELSE CAST({x} AS VARCHAR) END"
    )


_PG_STAMP = "'YYYY-MM-DD\"T\"HH24:MI:SS.US'"
_DUCKDB_STAMP = "'%Y-%m-%dT%H:%M:%S.%f'"


def canonical_expression(dialect: str, x: str, kind: str | None, declared: str | None = None) -> str:
    """SQL (in ``dialect``) for the canonical text of the column ``x`` (already quoted); NULL for NULL/NaN.

    ``kind``: ``column_kind`` of the column; ``declared``: its ``column_types`` entry, if any.
    """
    if dialect == "sqlite":
        # SQLite types values, not columns: Python's own canonical_value decides, per value.
        return f"retl_canonical({x}, '{declared or ''}')"
    if declared is not None and declared in _DECLARED:
        declared_kind, pg_type, duck_type = _DECLARED[declared]
        cast_to = pg_type if dialect == "postgres" else duck_type if dialect == "duckdb" else None
        if cast_to is not None:
            x = f"CAST({x} AS {cast_to})"
        kind = declared_kind
    if dialect == "postgres":
        if kind == DECIMAL:
            # Trailing zeros trimmed in text rather than with TRIM_SCALE: PostgreSQL < 13 and Redshift lack it.
            text = f"CAST({x} AS TEXT)"
            return (
                f"CASE WHEN {text} = 'NaN' THEN NULL WHEN {x} = 0 THEN '0' "
                f"WHEN POSITION('.' IN {text}) > 0 THEN RTRIM(RTRIM({text}, '0'), '.') ELSE {text} END"
            )
        if kind == FLOAT:
            return _pg_float(x)
        if kind == FLOAT4:
            # psycopg parses float4's text into a Python float: so does this.
            return _pg_float(f"CAST(CAST({x} AS TEXT) AS DOUBLE PRECISION)")
        if kind == TIMESTAMP:
            return f"TO_CHAR({x}, {_PG_STAMP}) || '+00:00'"
        if kind == TIMESTAMPTZ:
            return f"TO_CHAR({x} AT TIME ZONE 'UTC', {_PG_STAMP}) || '+00:00'"
        if kind == DATE:
            return f"TO_CHAR({x}, 'YYYY-MM-DD')"
        return f"CAST({x} AS TEXT)"
    if dialect == "duckdb":
        if kind == DECIMAL:
            text = f"CAST({x} AS VARCHAR)"
            return (
                f"CASE WHEN {x} = 0 THEN '0' WHEN CONTAINS({text}, '.') THEN RTRIM(RTRIM({text}, '0'), '.') "
                f"ELSE {text} END"
            )
        if kind == FLOAT:
            return _duckdb_float(x)
        if kind == FLOAT4:
            return _duckdb_float(f"CAST({x} AS DOUBLE)")
        if kind == TIMESTAMP:
            return f"STRFTIME(CAST({x} AS TIMESTAMP), {_DUCKDB_STAMP}) || '+00:00'"
        if kind == TIMESTAMPTZ:
            return f"STRFTIME(TIMEZONE('UTC', {x}), {_DUCKDB_STAMP}) || '+00:00'"
        if kind == DATE:
            return f"STRFTIME({x}, '%Y-%m-%d')"
        return f"CAST({x} AS VARCHAR)"
    return f"CAST({x} AS TEXT)"


def native_canonical(dialect: str) -> bool:
    """Whether ``canonical_expression`` writes retype-proof SQL for ``dialect`` (else a plain text cast)."""
    return dialect in ("postgres", "duckdb", "sqlite")


# ---------------------------------------------------------------------- session settings
#: Settings that change how values print as text, pinned on every connection the diff uses. The
#: canonical expressions do not depend on them; the plain text casts (other types) and the drivers do.
SESSION_SETTINGS = {
    "postgres": (
        "SET TIME ZONE 'UTC'",
        "SET DateStyle = 'ISO, MDY'",
        "SET IntervalStyle = 'postgres'",
        "SET extra_float_digits = 1",
    ),
    "duckdb": ("SET TimeZone = 'UTC'",),
}


# ---------------------------------------------------------------------- table names
def quoted_table(parts: Sequence[str], dialect: str) -> str:
    """The table name quoted (PostgreSQL quoting, transpiled later), folded the way ``dialect`` folds it unquoted."""
    out = []
    for part in parts:
        ident = exp.to_identifier(part)
        if dialect in _FOLDING:
            ident = Dialect.get_or_raise(dialect).normalize_identifier(ident)
        out.append(exp.to_identifier(ident.name, quoted=True).sql("postgres"))
    return ".".join(out)


# ---------------------------------------------------------------------- the user's query
def query_body(query: str, dialect: str) -> str:
    """The user's query ready to sit in ``(\\n...\\n)``: a trailing ``;`` removed by token; two statements refused.

    When the dialect's tokenizer cannot read the query (syntax sqlglot does not know), it is kept
    as written but for a final ``;``: lines of its own still keep a trailing comment from
    swallowing what follows.
    """
    text = query.strip()
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(text)
    except SqlglotError:
        # A final ';' outside any comment is the common case; anything subtler is left to the warehouse.
        return text[:-1].rstrip() if text.endswith(";") else text
    semicolons = [t for t in tokens if t.token_type == TokenType.SEMICOLON]
    if not semicolons:
        return text
    if len(semicolons) > 1 or semicolons[0] is not tokens[-1]:
        raise ConfigurationError("the sync's query must be one statement; it has more than one (a ';' in the middle)")
    body = text[: semicolons[0].start].rstrip()
    if not body:
        raise ConfigurationError("the sync's query is empty")
    return body


def render(
    template: str,
    dialect: str,
    *,
    query: str | None = None,
    expressions: Mapping[str, str] | None = None,
) -> str:
    """Transpile a PostgreSQL-syntax template to ``dialect``; then put in, by token, the query and the expressions.

    ``expressions``: placeholder identifier -> SQL already in ``dialect``. Only unquoted identifier
    tokens equal to a placeholder are replaced; literals and quoted identifiers are never touched.
    """
    out = ";\n".join(sqlglot.transpile(template, read="postgres", write=dialect))
    values = dict(expressions or {})
    if query is not None:
        values[QUERY] = f"(\n{query}\n)"
    if not values:
        return out
    pieces: list[str] = []
    position = 0
    for token in Dialect.get_or_raise(dialect).tokenize(out):
        if token.token_type == TokenType.VAR and token.text in values:
            pieces.append(out[position : token.start])
            pieces.append(values[token.text])
            position = token.end + 1
    pieces.append(out[position:])
    return "".join(pieces)


__all__ = [
    "QUERY",
    "SESSION_SETTINGS",
    "canonical_expression",
    "column_kind",
    "native_canonical",
    "query_body",
    "quoted_table",
    "render",
    "table_parts",
]
