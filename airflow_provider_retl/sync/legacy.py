"""Key texts of the previous release's checkpoints (``canon2-siphash64``), for upgrading them.

Issue 15 changed two canonical forms that can be part of a key: a naive timestamp's text now
ends in ``+00:00`` (naive is taken as UTC), and an email key is folded with ``lower()`` instead
of ``casefold()``. Every other key text is unchanged, so a canon2 checkpoint keeps its
destination ids and pending marks when each read row's canon2 key hash is computed next to its
canon3 one and the checkpoint entry found by it is moved to the new hash. Row hashes are not
translated (any payload column may have changed text): those rows are re-planned by id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import LEGACY_HASH_ALGORITHM

__all__ = ["LEGACY_CHECKPOINT_NOTE", "LEGACY_HASH_ALGORITHM", "legacy_key_hashes", "legacy_key_parts"]
#: What the report says when such a checkpoint is adopted.
LEGACY_CHECKPOINT_NOTE = "checkpoint of an older version: rows re-planned by key, ids kept"
_UTC_SUFFIX = "+00:00"


def _naive_timestamps(series: pd.Series) -> np.ndarray:
    """Which values of a column are naive timestamps (the only key values canon2 wrote without an offset)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return np.zeros(len(series), dtype=bool)
    if pd.api.types.is_datetime64_dtype(dtype):
        return np.ones(len(series), dtype=bool)
    if dtype != object:
        return np.zeros(len(series), dtype=bool)
    return np.array(
        [
            (isinstance(v, dt.datetime) and v.tzinfo is None) or isinstance(v, np.datetime64)
            for v in series.to_numpy(dtype=object)
        ],
        dtype=bool,
    )


def legacy_key_parts(
    frame: pd.DataFrame, key_columns: Sequence[str], parts: Sequence[np.ndarray], *, fold_keys: bool
) -> list[np.ndarray]:
    """The canon2 texts of the key parts ``parts`` (canon3, unfolded) of ``frame``'s key columns."""
    legacy: list[np.ndarray] = []
    for column, part in zip(key_columns, parts, strict=True):
        naive = _naive_timestamps(frame[column]) & (part != fp.NULL)
        if naive.any():
            part = part.copy()
            part[naive] = np.array([text.removesuffix(_UTC_SUFFIX) for text in part[naive]], dtype=object)
        legacy.append(part)
    if fold_keys:
        legacy[0] = np.array([text if text == fp.NULL else text.strip().casefold() for text in legacy[0]], dtype=object)
    return legacy


def legacy_key_hashes(
    frame: pd.DataFrame, key_columns: Sequence[str], parts: Sequence[np.ndarray], *, fold_keys: bool
) -> np.ndarray:
    """The key hashes the previous release computed for these rows."""
    return fp.key_hashes(fp.join_key_parts(legacy_key_parts(frame, key_columns, parts, fold_keys=fold_keys)))
