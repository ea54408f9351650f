"""Destination hooks. Imported lazily: ``from airflow_provider_retl.hooks import HubSpotHook``."""

from __future__ import annotations

import importlib
from typing import Any


def _exports() -> dict[str, str]:
    # The destinations' hooks come from the registry (a spec names its hook's public class path).
    from airflow_provider_retl.destinations import REGISTRY

    found = {"DestinationHook": "airflow_provider_retl.hooks.destination"}
    for spec in REGISTRY.values():
        module, _, name = spec.hook_class.rpartition(".")
        found[name] = module
    return found


_EXPORTS = _exports()

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
