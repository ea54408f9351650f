"""Reverse ETL for Apache Airflow: push what changed in a warehouse query into business apps.

This module stays light: Airflow reads ``get_provider_info()`` (the
``apache_airflow_provider`` entry point) in every process, so nothing heavy is
imported here. The public classes load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DestinationHook": "airflow_provider_retl.hooks.destination",
    "ReverseETLOperator": "airflow_provider_retl.operators.reverse_etl",
    "partitions": "airflow_provider_retl.operators.reverse_etl",
    "run_sync": "airflow_provider_retl.sync.engine",
    "VariableCheckpointStore": "airflow_provider_retl.checkpoints",
    "XComCheckpointStore": "airflow_provider_retl.checkpoints",
}

__all__ = ["__version__", "get_provider_info", *_EXPORTS]  # noqa: PLE0604 - lazy exports


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow (the keys of provider.yaml), derived from the destination registry."""
    from airflow_provider_retl.destinations.provider_info import provider_info

    return provider_info(__version__)
