"""Turning warehouse values into JSON-ready wire values.

One conversion for every source: NULL/NaN/NaT -> None, numpy scalars -> Python,
timestamps -> ISO 8601, Decimal -> int when integral else an exact string (never
rounded through float), bytes -> base64. Values JSON cannot carry (infinity) raise
``ValueError`` so the row is rejected with a reason instead of crashing the batch.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import numpy as np
import pandas as pd

_INT64 = 2**63


def to_wire(value: Any) -> Any:
    """A JSON-ready copy of ``value``; raises ValueError for values JSON cannot carry."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        integer = int(value)
        # Integers beyond 64 bits travel as exact strings: many JSON parsers would round them.
        return integer if -_INT64 <= integer < _INT64 else str(integer)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isinf(number):
            raise ValueError("value is infinite, which JSON cannot represent")
        return number
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return None
        if value.is_infinite():
            raise ValueError("value is infinite, which JSON cannot represent")
        if value == value.to_integral_value():
            return to_wire(int(value))
        return exact_decimal_text(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dt.timedelta, np.timedelta64)):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_wire(v) for v in value]
    return str(value)


def exact_decimal_text(value: decimal.Decimal) -> str:
    """Plain notation without trailing zeros, every digit kept (``normalize()`` alone rounds to 28 digits)."""
    return format(value.normalize(decimal.Context(prec=max(len(value.as_tuple().digits), 1))), "f")


def column_to_wire(series: pd.Series) -> tuple[list[Any], dict[int, str]]:
    """Wire values of a whole column (fast paths by dtype) and {row position: reason} for failures."""
    dtype = series.dtype
    failures: dict[int, str] = {}
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        values = series.astype(object).where(series.notna(), None).tolist()
        return [v if v is None else to_wire(v) for v in values], failures
    if pd.api.types.is_float_dtype(dtype):
        floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
        out: list[Any] = floats.tolist()
        for pos in np.flatnonzero(~np.isfinite(floats)):
            if np.isnan(floats[pos]):
                out[pos] = None
            else:
                failures[int(pos)] = "value is infinite, which JSON cannot represent"
                out[pos] = None
        return out, failures
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return [None if v is pd.NaT else v.isoformat() for v in series.tolist()], failures
    values = series.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        return [
            None if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))) else v for v in values
        ], failures
    out = []
    for i, value in enumerate(values):
        try:
            out.append(to_wire(value))
        except (ValueError, TypeError, OverflowError) as exc:
            failures[i] = str(exc)
            out.append(None)
    return out, failures


def frame_to_wire(frame: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[int, tuple[str, str]]]:
    """Wire dicts for every row and {row position: (field, reason)} for rows that cannot be sent."""
    columns = list(frame.columns)
    converted = []
    failures: dict[int, tuple[str, str]] = {}
    for name in columns:
        values, column_failures = column_to_wire(frame[name])
        converted.append(values)
        for i, reason in column_failures.items():
            failures.setdefault(i, (name, f"{name}: {reason}"))
    rows = (
        [dict(zip(columns, values, strict=True)) for values in zip(*converted, strict=True)]
        if columns
        else [{} for _ in range(len(frame))]
    )
    return rows, failures
