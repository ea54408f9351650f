"""Turn the operator's ``checkpoint=`` argument into a store."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_retl.sync.checkpoint import CheckpointStore, FileCheckpointStore
from airflow_provider_retl.sync.config import partition_suffix
from airflow_provider_retl.sync.errors import ConfigurationError

#: Above this many bytes a Variable/XCom checkpoint document is worth moving to the file store.
#: Measured (benchmarks/RESULTS.md, scenario 5): ~25 bytes per key, so 4 MiB is ~170k keys; each run
#: encodes, sends and stores the whole document again, and MySQL caps a Variable at 16 MiB (~680k keys).
LARGE_CHECKPOINT_BYTES = 4 * 2**20

log = logging.getLogger(__name__)

ALLOWED = (
    "'variable', 'xcom', 'warehouse' or 'warehouse:<schema>.<table>' (built by the operator on its SQL hook), "
    "a 'file:///absolute/path.parquet' URL, a local path ending in '.parquet' "
    "('{sync_id}' in a path is replaced by the sync id), or a CheckpointStore object "
    "(with description, load, commit and finalize)"
)


#: ``checkpoint="warehouse"`` or ``checkpoint="warehouse:<schema>.<table>"`` (checkpoints.warehouse).
WAREHOUSE = "warehouse"


def is_warehouse_spec(spec: Any) -> bool:
    """True for the specs ``checkpoints.warehouse.warehouse_store`` builds (imported only then: it pulls sqlglot)."""
    if not isinstance(spec, str):
        return False
    text = spec.strip().lower()
    return text == WAREHOUSE or text.startswith(WAREHOUSE + ":")


def checkpoint_store_from_spec(
    spec: Any, *, sync_id: str, context: Any = None, partition: tuple[int, int] | None = None
) -> CheckpointStore:
    """The store ``spec`` names.

    ``"variable"`` -> :class:`VariableCheckpointStore` (``sync_id``); ``"xcom"`` ->
    :class:`XComCheckpointStore` (needs the task ``context``); ``file://`` URLs and local
    ``.parquet`` paths -> :class:`FileCheckpointStore`; a store object is used as it is.
    Anything else raises :class:`ConfigurationError` (a ``ValueError``) listing these.

    ``partition`` (the operator's): a file path without ``{sync_id}`` gets the partition's
    suffix before ``.parquet`` so partitions never share a file (``sync_id`` already has it;
    the xcom store is per map index, and the partition is in the checkpoint fingerprint).
    """
    if isinstance(spec, str):
        text = spec.strip()
        lowered = text.lower()
        if lowered == "variable":
            from airflow_provider_retl.checkpoints.variable import VariableCheckpointStore

            return VariableCheckpointStore(sync_id)
        if lowered == "xcom":
            if context is None:
                raise ConfigurationError("checkpoint='xcom' needs the running task's context")
            from airflow_provider_retl.checkpoints.xcom import XComCheckpointStore

            return XComCheckpointStore(context)
        if is_warehouse_spec(text):
            raise ConfigurationError(
                f"checkpoint={text!r} lives in the source warehouse: ReverseETLOperator builds it on its SQL hook; "
                "elsewhere use airflow_provider_retl.checkpoints.warehouse.warehouse_store(spec, hook, sql, sync_id=...)"
            )
        if lowered.startswith("file:"):
            return FileCheckpointStore(_with_sync_id(_path_of_file_url(text), sync_id, partition))
        if "://" not in text and lowered.endswith(".parquet"):
            return FileCheckpointStore(_with_sync_id(text, sync_id, partition))
    elif isinstance(spec, os.PathLike):
        path = os.fspath(spec)
        if isinstance(path, str) and path.lower().endswith(".parquet"):
            return FileCheckpointStore(_with_sync_id(path, sync_id, partition))
    elif isinstance(spec, CheckpointStore):
        return spec
    raise ConfigurationError(f"checkpoint must be {ALLOWED}; got {_shown(spec)}")


def _path_of_file_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigurationError(
            f"checkpoint URL {url!r} is not a local absolute path: write file:///absolute/path.parquet (three slashes)"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"checkpoint URL {url!r} must not have a query or fragment")
    return unquote(parts.path)


def _with_sync_id(path: str, sync_id: str, partition: tuple[int, int] | None = None) -> str:
    if "{sync_id}" in path:
        return path.replace("{sync_id}", sync_id)
    suffix = partition_suffix(partition)
    if suffix and path.lower().endswith(".parquet"):
        return f"{path[: -len('.parquet')]}{suffix}{path[-len('.parquet') :]}"
    return path


def _shown(spec: Any) -> str:
    if isinstance(spec, (str, os.PathLike)) or spec is None:
        return repr(spec)
    return f"an object of type {type(spec).__name__}"


def warn_if_large(size_bytes: int, *, keys: Any, description: str, limit: int = LARGE_CHECKPOINT_BYTES) -> bool:
    """Log a warning (and return True) when a Variable/XCom checkpoint document is past ``limit`` bytes."""
    if size_bytes <= limit:
        return False
    log.warning(
        "checkpoint %s is %.1f MiB (%s keys), above the %.0f MiB that Variable and XCom checkpoints handle "
        "well: every run rewrites the whole document through the metadata DB. Use the file store "
        "(checkpoint='file:///path/{sync_id}.parquet', FileCheckpointStore) for syncs of this size.",
        description,
        size_bytes / 2**20,
        keys,
        limit / 2**20,
    )
    return True
