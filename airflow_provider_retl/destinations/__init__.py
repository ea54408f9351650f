"""The registry of destinations: one ``DestinationSpec`` per folder, in the order forms list them.

A new destination is a folder ``destinations/<name>/`` (``spec.py``, ``hook.py``,
``emulator.py``) and one line in ``_NAMES``; the provider info, connection forms, extras
parsing, lineage links, the emulator registry and CLI, and the conformance suites all read
``REGISTRY``.
"""

from __future__ import annotations

import importlib

from airflow_provider_retl.destinations.kit import DestinationSpec

_NAMES = ("zendesk", "hubspot", "braze", "webhook", "customerio", "mailchimp", "salesforce")

REGISTRY: dict[str, DestinationSpec] = {
    name: importlib.import_module(f"airflow_provider_retl.destinations.{name}.spec").SPEC for name in _NAMES
}


def by_conn_type(conn_type: str) -> DestinationSpec | None:
    """The destination whose connection type is ``conn_type``, or None."""
    for spec in REGISTRY.values():
        if spec.conn_type == conn_type:
            return spec
    return None


__all__ = ["REGISTRY", "DestinationSpec", "by_conn_type"]
