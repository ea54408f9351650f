"""Which warehouse errors a retry cannot fix: the query itself is wrong.

A syntax error, an unknown table or column, a missing function or privilege fail the same
way on every try, so the task should fail at once instead of after ``retries`` attempts.
Transient errors (connection lost, timeouts, serialization failures, deadlocks, lock waits)
are not listed here and keep retrying.

Drivers say it in different ways, checked in this order on the error and what it wraps
(``__cause__``, ``__context__``, SQLAlchemy's ``orig``):

* SQLSTATE (psycopg 2/3, mysql-connector, Snowflake, Redshift, most ODBC drivers): class
  ``42`` (syntax error or access rule violation), ``3D`` (unknown catalog), ``3F``
  (unknown schema);
* DuckDB: ``ParserException``, ``SyntaxException``, ``CatalogException``, ``BinderException``;
* sqlite3: an ``OperationalError`` whose message starts like SQLite's compile errors
  (``near "x": syntax error``, ``no such table``, ``no such column`` ...); SQLite has no
  finer error code for these than ``SQLITE_ERROR``;
* MySQL / MariaDB error numbers (MySQLdb, PyMySQL): 1064 parse error, 1146 unknown table,
  1054 unknown column, and their relatives;
* BigQuery (google-api-core): ``BadRequest`` (400, invalid query) and ``NotFound`` (404).

Driver modules are never imported here: an error of a driver is checked only when that
driver's module is already loaded (it raised the error, so it is).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

__all__ = ["permanent_sql_error"]

#: SQLSTATE classes no retry fixes: syntax/access rule (42), catalog (3D), schema (3F).
PERMANENT_SQLSTATE_CLASSES = ("42", "3D", "3F")

_DUCKDB_PERMANENT = ("ParserException", "SyntaxException", "CatalogException", "BinderException")

#: How sqlite3 words compile errors of the statement (sqlite3 raises them all as OperationalError).
_SQLITE_PERMANENT_PREFIXES = (
    "near ",  # near "selec": syntax error
    "incomplete input",
    "unrecognized token",
    "no such table",
    "no such column",
    "no such function",
    "no such module",
    "ambiguous column name",
    "wrong number of arguments",
    "misuse of aggregate",
    "sub-select returns",
)

#: MySQL / MariaDB: parse error, unknown table/column/database/function, ambiguous column, access denied.
_MYSQL_PERMANENT = frozenset({1064, 1146, 1054, 1049, 1305, 1052, 1149, 1142, 1143, 1044, 1109, 1128})

_BIGQUERY_PERMANENT = ("BadRequest", "NotFound")


def permanent_sql_error(exc: BaseException) -> BaseException | None:
    """The driver error in ``exc`` (or in what it wraps) that a retry cannot fix, else None."""
    for error in _chain(exc):
        if _is_permanent(error):
            return error
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    queue: list[object] = [exc]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        queue.extend((getattr(item, "orig", None), item.__cause__, item.__context__))


def _is_permanent(error: BaseException) -> bool:
    sqlstate = _sqlstate(error)
    if sqlstate is not None:
        return sqlstate[:2].upper() in PERMANENT_SQLSTATE_CLASSES
    module = type(error).__module__ or ""
    if module.split(".")[0] in ("duckdb", "_duckdb"):
        duckdb = sys.modules.get("duckdb")
        permanent = tuple(getattr(duckdb, name) for name in _DUCKDB_PERMANENT if hasattr(duckdb, name))
        return bool(permanent) and isinstance(error, permanent)
    if isinstance(error, sqlite3.OperationalError):
        return str(error).lower().startswith(_SQLITE_PERMANENT_PREFIXES)
    if module.startswith(("MySQLdb", "pymysql", "mysql.connector")):
        return _mysql_errno(error) in _MYSQL_PERMANENT
    if module.startswith("google.api_core"):
        return type(error).__name__ in _BIGQUERY_PERMANENT
    return False


def _sqlstate(error: BaseException) -> str | None:
    # psycopg 3, mysql-connector, Snowflake: .sqlstate; psycopg2: .pgcode; both may be None.
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(error, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _mysql_errno(error: BaseException) -> int | None:
    errno = getattr(error, "errno", None)
    if isinstance(errno, int):
        return errno
    first = error.args[0] if error.args else None
    return first if isinstance(first, int) else None
