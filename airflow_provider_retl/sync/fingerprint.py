"""Stable, vectorised row and key hashing.

Every value is first put in a canonical text form that does not depend on which
warehouse or driver produced it, nor on the column's type: the same logical value has
one text. Integers: digits, no ``+``, no ``.0``. Decimals: plain notation, no trailing zeros,
every digit kept (``numeric(12,2)`` 1.00 is ``1``, as is integer 1). Floats: integral ones
below 2**53 are integers (``5.0`` is ``5``, so an int -> float retype changes nothing);
others are Python's shortest round-trip ``repr`` (``0.1``, ``1e-05``, ``inf``); NaN is NULL.
Booleans: ``true``/``false``. Timestamps: UTC, microseconds, ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``;
naive timestamps are taken as UTC (so naive -> aware retypes under UTC change nothing). Dates:
``YYYY-MM-DD``. Text: as it is (the text ``"5"`` equals the integer 5: a key retyped to its
text keeps its identity). NULL, NaN and NaT are one NULL distinct from the empty string.
The warehouse diff computes the same text in SQL (``sync.sqlcompose.canonical_expression``). Columns are then hashed with pandas' SipHash-2-4
(fixed key, so hashes are identical across processes and machines) and combined per
row. The algorithm name is stored in checkpoints: changing anything here must change
``HASH_ALGORITHM`` in ``checkpoint.py`` so old checkpoints are re-planned, never misread.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

#: Canonical text of NULL; cannot collide with real text because of the NUL byte.
NULL = "\x00N"
_KEY_SEPARATOR = "\x1f"
#: Every timestamp's canonical text ends in UTC's offset (naive ones are taken as UTC).
_UTC = "+00:00"
_SAFE_FLOAT_INT = 2**53
#: What str.strip() removes in ASCII (str.isspace), for the vectorised fold_case.
_ASCII_WHITESPACE = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
#: Rows sampled to decide whether a text column's values repeat enough to hash them per distinct value.
_DISTINCT_SAMPLE = 2048


def _canon_timestamp(value: dt.datetime) -> str:
    # Naive timestamps are taken as UTC: a column retyped timestamp -> timestamptz keeps its values' text.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    # numpy's ISO text, as the column path (_iso_micros) writes it: zero-padded years, microseconds.
    return str(np.datetime_as_string(np.datetime64(value.replace(tzinfo=None), "us"), unit="us")) + _UTC


def _canon_float(value: float) -> str:
    if math.isnan(value):
        return NULL
    if value.is_integer() and abs(value) < _SAFE_FLOAT_INT:
        return str(int(value))
    return repr(value)


def _json_default(value: Any) -> Any:
    text = canonical_value(value)
    return None if text == NULL else text


def _json_ready(value: Any) -> Any:
    """Containers orjson cannot take as they are: object arrays (BigQuery REPEATED) and ints beyond 64 bits.

    Everything orjson already serialised keeps its text, so no existing canonical form changes.
    """
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return value
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # as the wire sends it (values.to_wire)
    return value


def canonical_value(value: Any) -> str:
    """The canonical text of one value (the slow path; columns use ``canonical_column``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return NULL
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _canon_float(float(value))
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return NULL
        if value == value.to_integral_value():
            return str(int(value))
        # Every digit counts: normalize() in the default context would round to 28 digits.
        return format(value.normalize(decimal.Context(prec=max(len(value.as_tuple().digits), 1))), "f")
    if isinstance(value, dt.datetime):  # pd.Timestamp is a datetime
        return _canon_timestamp(value)
    if isinstance(value, np.datetime64):
        return NULL if np.isnat(value) else _canon_timestamp(pd.Timestamp(value).to_pydatetime())
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dt.timedelta, np.timedelta64)):
        return repr(pd.Timedelta(value).total_seconds())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        return orjson.dumps(
            _json_ready(value),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            default=_json_default,
        ).decode()
    return str(value)


def _iso_micros(series: pd.Series, suffix: str) -> np.ndarray:
    """``%Y-%m-%dT%H:%M:%S.%f`` + suffix for a naive datetime column, in C (strftime is 2x slower)."""
    stamps = series.to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(stamps, unit="us")
    if suffix:
        text = np.char.add(text, suffix)
    values = text.astype(object)
    values[np.isnat(stamps)] = NULL
    return values


def _float_reprs(floats: np.ndarray) -> np.ndarray:
    """``repr(float(v))`` of each value, in C where that gives the same text.

    Arrow's float -> string cast writes the same shortest round-trip digits as ``repr`` but
    switches to exponent notation at other magnitudes (``1e-05`` is ``0.00001`` there, and
    ``1.2e+11`` appears where repr writes ``120000000000.5``). Its text is kept only where
    repr is positional (1e-4 <= |v| < 1e16) and Arrow's is too (a '.', no 'e'); repr does
    the rest (inf, tiny and huge values: rare in data).
    """
    if not len(floats):
        return np.empty(0, dtype=object)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return np.array([repr(v) for v in floats.tolist()], dtype=object)
    text = pc.cast(pa.array(floats, type=pa.float64()), pa.string())
    magnitude = np.abs(floats)
    same = (
        (magnitude >= 1e-4)
        & (magnitude < 1e16)
        & pc.match_substring(text, ".").to_numpy(zero_copy_only=False)
        & ~pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    )
    values = text.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~same):
        values[i] = repr(float(floats[i]))
    return values


def canonical_column(series: pd.Series) -> np.ndarray:
    """Canonical text of a whole column as an object array, vectorised where the dtype allows."""
    n = len(series)
    dtype = series.dtype
    mask = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(dtype):
        values = np.where(series.fillna(False).to_numpy(dtype=bool), "true", "false").astype(object)
    elif pd.api.types.is_integer_dtype(dtype):
        filled = series.fillna(0) if mask.any() else series
        values = filled.to_numpy(dtype=np.int64).astype(str).astype(object)
    elif pd.api.types.is_float_dtype(dtype):
        floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
        mask = mask | np.isnan(floats)
        safe = np.where(mask, 0.0, floats)
        integral = (safe == np.floor(safe)) & (np.abs(safe) < _SAFE_FLOAT_INT)
        values = np.empty(n, dtype=object)
        values[integral] = safe[integral].astype(np.int64).astype(str)
        rest = ~integral
        values[rest] = _float_reprs(safe[rest])
    elif isinstance(dtype, pd.DatetimeTZDtype):
        values = _iso_micros(series.dt.tz_convert("UTC").dt.tz_localize(None), _UTC)
    elif pd.api.types.is_datetime64_dtype(dtype):
        values = _iso_micros(series, _UTC)  # naive means UTC
    else:
        values = series.to_numpy(dtype=object)
        if pd.api.types.infer_dtype(values, skipna=True) != "string":
            values = np.array([canonical_value(v) for v in values], dtype=object)
        else:
            values = values.copy()
    if mask.any():
        values[mask] = NULL
    return values


def hash_text(values: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (pandas' fixed key) of an object array of str, as uint64."""
    return pd.util.hash_array(values, categorize=False).astype(np.uint64, copy=False)


def combine_hashes(columns: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Order-dependent combination of per-column hashes (the scheme pandas uses for frames)."""
    result = np.full(n, 0x345678, dtype=np.uint64)
    mult = np.uint64(1000003)
    with np.errstate(over="ignore"):
        for i, column in enumerate(columns):
            result = (result ^ column) * mult
            mult += np.uint64(82520 + 2 * (len(columns) - i))
        result += np.uint64(97531)
    # 0 is reserved in checkpoints for "destination id known, content not synced".
    result[result == 0] = 1
    return result


def _text_hashes(series: pd.Series) -> np.ndarray | None:
    """``hash_text(canonical_column(series))`` for a column of str (text is its own canonical form).

    None when the column holds anything but str and NULLs. A column whose values repeat
    (names, cities, countries: most text columns) is factorised first (in Arrow for Arrow
    strings), so each distinct value is converted and hashed once instead of once per row.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        pass
    elif dtype == object:
        if pd.api.types.infer_dtype(series.to_numpy(), skipna=True) != "string":
            return None
    else:
        return None
    n = len(series)
    if n > _DISTINCT_SAMPLE and series.iloc[:_DISTINCT_SAMPLE].nunique(dropna=False) > _DISTINCT_SAMPLE // 2:
        # Mostly distinct (emails, ids): factorising would cost more than it saves.
        values = series.to_numpy(dtype=object)
        mask = series.isna().to_numpy()
        if mask.any():
            values = values.copy()  # may be the column's own array
            values[mask] = NULL
        return hash_text(values)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    # NULL goes last, so the NA code -1 picks it.
    distinct = np.append(np.asarray(uniques, dtype=object), NULL)
    return hash_text(distinct)[codes]


def column_hashes(series: pd.Series) -> np.ndarray:
    """SipHash of the canonical text of every value of a column."""
    hashed = _text_hashes(series)
    return hash_text(canonical_column(series)) if hashed is None else hashed


def row_hashes(frame: pd.DataFrame, known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """One uint64 per row over the frame's columns, independent of column order.

    ``known``: column name -> ``column_hashes`` of that column already computed by the
    caller (the key column, hashed for the key), so it is not hashed twice.
    """
    columns = sorted(frame.columns)
    hashed = []
    for name in columns:
        # Mixing the column name in makes {"a": 1, "b": NULL} differ from {"a": NULL, "b": 1}.
        name_hash = hash_text(np.array([str(name)], dtype=object))[0]
        values = known.get(name) if known else None
        hashed.append((column_hashes(frame[name]) if values is None else values) ^ name_hash)
    return combine_hashes(hashed, len(frame))


def key_parts(frame: pd.DataFrame, key_columns: Sequence[str]) -> list[np.ndarray]:
    """Canonical text of each key column; NULL parts are ``NULL`` so callers can reject them."""
    return [canonical_column(frame[c]) for c in key_columns]


def _as_arrow(texts: np.ndarray):
    """Arrow text of ``texts``, or None when Arrow cannot hold one of them (a lone surrogate)."""
    import pyarrow as pa

    try:
        return pa.array(texts, type=pa.string())
    except (pa.ArrowException, UnicodeError):
        return None


def fold_case(part: np.ndarray) -> np.ndarray:
    """Key text trimmed and lower-cased (NULLs stay NULL): the identity of an email key.

    Returns ``part`` itself when no value changes. Plain ASCII text without upper case and
    without whitespace at either end (nearly every email) is already folded; Arrow finds
    those in C and Python folds only the rest.
    """
    import pyarrow.compute as pc

    if not len(part):
        return part
    arr = _as_arrow(part)
    if arr is None:
        folded = np.zeros(len(part), dtype=bool)
    else:
        folded = pc.and_(
            pc.and_(pc.string_is_ascii(arr), pc.equal(pc.ascii_lower(arr), arr)),
            pc.equal(pc.ascii_trim(arr, _ASCII_WHITESPACE), arr),
        ).to_numpy(zero_copy_only=False)
    todo = np.flatnonzero(~folded)
    if not len(todo):
        return part
    out = part.copy()
    changed = False
    for i in todo:
        value = out[i]
        if value != NULL:
            # lower(), not casefold(): destinations compare emails by lower case, and casefold()
            # would make "straße@x.com" and "strasse@x.com" one key (a wrong duplicate reject).
            new = value.strip().lower()
            if new != value:
                out[i] = new
                changed = True
    return out if changed else part


def blank(texts: np.ndarray) -> np.ndarray:
    """True where a text is empty or whitespace only (``str.strip() == ""``)."""
    import pyarrow.compute as pc

    if not len(texts):
        return np.zeros(0, dtype=bool)
    # Text with a printable, non-space ASCII character is never blank; Python checks the rest.
    arr = _as_arrow(texts)
    if arr is None:
        maybe = np.ones(len(texts), dtype=bool)
    else:
        maybe = ~pc.match_substring_regex(arr, "[!-~]").to_numpy(zero_copy_only=False)
    out = np.zeros(len(texts), dtype=bool)
    for i in np.flatnonzero(maybe):
        out[i] = texts[i].strip() == ""
    return out


def join_key_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One key string per row from its parts (a separator that never occurs in data)."""
    if len(parts) == 1:
        return parts[0]
    return np.array([_KEY_SEPARATOR.join(row) for row in zip(*parts, strict=True)], dtype=object)


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """Hash of canonical key strings (what checkpoints store instead of the key)."""
    return hash_text(keys)


def display_key(key: str) -> str:
    """How a key is shown in rejects (composite parts joined by '|')."""
    return key.replace(_KEY_SEPARATOR, "|").replace(NULL, "NULL")
