"""Checkpoint stores backed by Airflow: Variables, XCom (journal in Variables), and the resolver.

``checkpoint_store_from_spec("variable" | "xcom" | "file:///..." | store, sync_id=..., context=...)``
is what the operator calls; the stores implement ``sync.checkpoint.JournalingStore``.
"""

from __future__ import annotations

from airflow_provider_retl.checkpoints.spec import checkpoint_store_from_spec
from airflow_provider_retl.checkpoints.variable import VariableCheckpointStore
from airflow_provider_retl.checkpoints.xcom import XComCheckpointStore

__all__ = ["VariableCheckpointStore", "XComCheckpointStore", "checkpoint_store_from_spec"]
