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

    The store's lease (one run of a sync at a time) is labelled with the Airflow try of
    ``context`` (or the current task's), so a run that finds it taken can say who holds it.
    """
    return with_lease_label(_store_from_spec(spec, sync_id=sync_id, context=context, partition=partition), context)


def _store_from_spec(
    spec: Any, *, sync_id: str, context: Any = None, partition: tuple[int, int] | None = None
) -> CheckpointStore:
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


def lease_label(context: Any = None) -> str:
    """Who holds a sync lease, for the message another run shows: the Airflow try, host and pid.

    Built from ``context`` (or the current task's, when there is one); never holds a secret.
    """
    from airflow_provider_retl.sync.checkpoint import default_lease_label

    if context is None:
        try:
            from airflow.sdk import get_current_context

            context = get_current_context()
        except Exception:  # noqa: BLE001 - outside a task: the process is all we can name
            return default_lease_label()
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return default_lease_label()
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
    if getattr(ti, "map_index", -1) not in (None, -1):
        where += f"[{ti.map_index}]"
    run_id = getattr(ti, "run_id", None) or (context.get("run_id") if hasattr(context, "get") else None)
    return f"{where} run {run_id!r} try {getattr(ti, 'try_number', '?')}, {default_lease_label()}"


def with_lease_label(store: CheckpointStore, context: Any = None) -> CheckpointStore:
    """Name the current Airflow try as the owner of ``store``'s lease (stores without a lease: unchanged)."""
    if hasattr(store, "lease_label") and not getattr(store, "lease_label", ""):
        store.lease_label = lease_label(context)
    return store


def _path_of_file_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigurationError(
            f"checkpoint URL {url!r} is not a local absolute path: write file:///absolute/path.parquet (three slashes)"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"checkpoint URL {url!r} must not have a query or fragment")
    return unquote(parts.path)


def check_path_component(sync_id: str) -> str:
    """``sync_id`` if it is safe as one file name inside the checkpoint folder, else ConfigurationError.

    A sync name is templated, so ``"../x"``, an absolute path, a path separator, NUL or a
    control character would let a file checkpoint (``{sync_id}`` in its path) leave its folder
    or land in a surprising one; such names are refused, never rewritten, so two names never
    silently share a file.
    """
    problems = []
    if not isinstance(sync_id, str) or not sync_id:
        problems.append("it is empty")
    else:
        if sync_id in (".", ".."):
            problems.append(f"{sync_id!r} names a folder")
        separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
        if any(sep in sync_id for sep in separators):
            problems.append("it contains a path separator")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in sync_id):
            problems.append("it contains NUL or a control character")
        if os.path.isabs(sync_id) or os.path.splitdrive(sync_id)[0]:
            problems.append("it is an absolute path")
    if problems:
        raise ConfigurationError(
            f"sync name {sync_id!r} cannot name a file checkpoint ('{{sync_id}}' in its path): {', '.join(problems)}; "
            "use letters, digits, '_', '-' and '.'"
        )
    return sync_id


def _with_sync_id(path: str, sync_id: str, partition: tuple[int, int] | None = None) -> str:
    if "{sync_id}" in path:
        resolved = path.replace("{sync_id}", check_path_component(sync_id))
        return resolved
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
