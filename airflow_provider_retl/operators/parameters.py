"""The checks a ReverseETLOperator's parameters pass before anything runs.

They run twice: when the DAG file is parsed (``__init__``: a bad parameter is an import
error of the DAG, shown in the UI, instead of a failed run at 3 a.m.), skipping values that
are still Jinja templates; and at the start of ``execute`` after rendering, where a failure
ends the task without Airflow retries. Every message starts with the parameter's name.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_retl.operators.rejects_table import check_table_name
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.records import Mode

if TYPE_CHECKING:
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

__all__ = ["check_parameters", "is_templated"]

_BOOLEANS = ("dry_run", "full_resync", "rebaseline", "allow_empty_source", "allow_identity_change", "resend_events")


def is_templated(value: Any) -> bool:
    """True when ``value`` (or a string inside it) still holds Jinja to render."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(k) or is_templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return False


def check_parameters(op: ReverseETLOperator, sync_id: str | None) -> None:
    """Raise ConfigurationError naming the first parameter of ``op`` that cannot work.

    ``sync_id`` is the checkpoint's name when it is known (None while ``sync_name`` is a template).
    """
    for name in ("conn_id", "destination_conn_id", "sql", "object"):
        _text(name, getattr(op, name))
    keys = [op.primary_key] if isinstance(op.primary_key, str) else op.primary_key
    if not is_templated(keys) and (
        isinstance(keys, (str, bytes, Mapping))
        or not isinstance(keys, Sequence)
        or not keys
        or not all(isinstance(k, str) and k.strip() for k in keys)
    ):
        raise ConfigurationError(
            f"primary_key must be a column name or a non-empty list of column names; got {op.primary_key!r}"
        )
    if (
        op.mapping is not None
        and not is_templated(op.mapping)
        and (
            not isinstance(op.mapping, Mapping)
            or not op.mapping
            or not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in op.mapping.items())
        )
    ):
        raise ConfigurationError(
            f"mapping must be a non-empty dict of destination field -> source column (both names); "
            f"got {_shown(op.mapping)}"
        )
    _whole("batch_size", op.batch_size, optional=True)
    _whole("chunksize", op.chunksize)
    if op.max_reject_ratio is not None and not (_is_number(op.max_reject_ratio) and 0 <= op.max_reject_ratio <= 1):
        raise ConfigurationError(f"max_reject_ratio must be a number between 0 and 1; got {op.max_reject_ratio!r}")
    if not (_is_number(op.progress_interval) and op.progress_interval >= 0):
        raise ConfigurationError(f"progress_interval must be seconds >= 0; got {op.progress_interval!r}")
    for name in _BOOLEANS:
        value = op.plan_only if name == "dry_run" else getattr(op, name)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name} must be True or False; got {value!r}")
    for name in ("match_on", "sync_name", "event_name", "event_time_field"):
        _text(name, getattr(op, name), optional=True)
    parameters = op.parameters
    if (
        parameters is not None
        and not is_templated(parameters)
        and (isinstance(parameters, (str, bytes)) or not isinstance(parameters, (Mapping, Sequence)))
    ):
        raise ConfigurationError(f"parameters must be a dict or a list of query parameters; got {op.parameters!r}")
    _check_column_types(op.column_types)
    if op.rejects_table is not None:
        check_table_name(op.rejects_table)
    _check_events(op)
    _check_checkpoint(op, sync_id)


def _check_events(op: ReverseETLOperator) -> None:
    # event_name / event_time_field only make sense for an event object, and events are only
    # ever inserted: whatever the destination, update and mirror cannot work.
    if (op.event_name or op.event_time_field) and Mode(op.mode) in (Mode.UPDATE, Mode.MIRROR):
        given = "event_name" if op.event_name else "event_time_field"
        raise ConfigurationError(
            f"mode={op.mode!r} cannot sync events ({given} is set): events are only ever inserted, never "
            f"updated or deleted; use mode='insert'"
        )


def _check_checkpoint(op: ReverseETLOperator, sync_id: str | None) -> None:
    from airflow_provider_retl.checkpoints.spec import checkpoint_store_from_spec, is_warehouse_spec

    spec = op.checkpoint
    if isinstance(spec, str) and is_templated(spec):
        return
    if is_warehouse_spec(spec):
        if op.partition is not None:
            raise ConfigurationError(
                "checkpoint='warehouse' diffs the whole query in the warehouse and cannot be partitioned; "
                "drop partition, or use another checkpoint store for partitioned syncs"
            )
        return
    if isinstance(spec, str) and spec.strip().lower() == "xcom":
        return  # needs the running task; nothing else to check
    if sync_id is None and isinstance(spec, (str, os.PathLike)):
        return  # the name (a template) is checked after rendering
    try:
        # Builds the store object only (no read, no write): a Variable store checks its name here,
        # including the rule that Airflow must not take it for a secret.
        checkpoint_store_from_spec(spec, sync_id=sync_id or "parse-check", partition=op.partition)
    except ConfigurationError as exc:
        message = str(exc)
        if message.startswith("sync_id"):
            message += " (the sync_id is sync_name, by default '<dag_id>.<task_id>')"
        elif not message.startswith("checkpoint"):
            message = f"checkpoint: {message}"
        raise ConfigurationError(message) from None


def _check_column_types(column_types: Any) -> None:
    if not isinstance(column_types, Mapping):
        raise ConfigurationError(f"column_types must be a dict of column -> type; got {column_types!r}")
    from airflow_provider_retl.sources import COLUMN_TYPES

    for name, kind in column_types.items():
        if str(kind).lower() not in COLUMN_TYPES:
            raise ConfigurationError(f"column_types[{name!r}] is {kind!r}; use one of {', '.join(COLUMN_TYPES)}")


def _text(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string; got {value!r}")


def _whole(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1; got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, (str, Mapping, list, tuple)) else f"a {type(value).__name__}"
