"""Strict checks of the table names users give (no SQL parser needed: cheap enough for DAG parse time)."""

from __future__ import annotations

import re

from airflow_provider_retl.sync.errors import ConfigurationError

#: The table ``checkpoint="warehouse"`` uses when the spec names none.
DEFAULT_TABLE = "retl_checkpoints"
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_WAREHOUSE = "warehouse"


def table_parts(table: str, *, what: str = "checkpoint table") -> list[str]:
    """``table`` split into ``[[db.]schema.]table`` parts, each a plain identifier, or ConfigurationError.

    Plain identifiers only (``[A-Za-z_][A-Za-z0-9_$]*``): a name is then never SQL in disguise
    (``t--x``, ``x;drop``, quotes, spaces), and quoting it through the dialect is exact.
    """
    parts = str(table).split(".")
    if not 1 <= len(parts) <= 3 or not all(_PLAIN_IDENTIFIER.fullmatch(p) for p in parts):
        raise ConfigurationError(
            f"{what} {table!r} is not a [[database.]schema.]table name: each part must be a plain identifier "
            f"(letters, digits, _ and $, not starting with a digit), at most three parts, no quotes, spaces, "
            f"comments or semicolons"
        )
    if any(p.lower().startswith("__retl") for p in parts):
        raise ConfigurationError(f"{what} {table!r}: names starting with __retl are reserved")
    return parts


def warehouse_checkpoint_table(spec: str) -> str:
    """The table of a ``"warehouse"`` / ``"warehouse:<[db.]schema.table>"`` checkpoint spec, checked strictly."""
    text = str(spec).strip()
    if text.lower() != _WAREHOUSE and not text.lower().startswith(_WAREHOUSE + ":"):
        raise ConfigurationError(f"{spec!r} is not a 'warehouse' or 'warehouse:<schema>.<table>' checkpoint")
    table = text[len(_WAREHOUSE) :].removeprefix(":").strip() or DEFAULT_TABLE
    table_parts(table)
    return table


__all__ = ["DEFAULT_TABLE", "table_parts", "warehouse_checkpoint_table"]
