"""The provider info Airflow reads (the keys of ``provider.yaml``), derived from the registry.

``python -m airflow_provider_retl.destinations.provider_info`` prints it as YAML; the
committed ``provider.yaml`` is that output, and a test keeps the two equal.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow_provider_retl.destinations import REGISTRY

PACKAGE = "airflow-provider-retl"
#: The Airflow plugin's name (``airflow_provider_retl.plugins.PLUGIN_NAME``; not imported here, since that
#: module imports Airflow's plugins manager and provider info is read early).
PLUGIN_NAME = "reverse_etl"


def provider_info(version: str) -> dict[str, Any]:
    """Provider metadata for Airflow: integrations, modules, one connection type per destination, the UI plugin."""
    specs = list(REGISTRY.values())
    integrations: list[dict[str, Any]] = [{"integration-name": "Reverse ETL", "tags": ["software"]}]
    for spec in specs:
        entry: dict[str, Any] = {"integration-name": spec.title}
        if spec.doc_url:
            entry["external-doc-url"] = spec.doc_url
        entry["tags"] = list(spec.tags)
        integrations.append(entry)
    return {
        "package-name": PACKAGE,
        "name": "Reverse ETL",
        "description": "Reverse ETL for Apache Airflow: sync warehouse query results into "
        + ", ".join(spec.title for spec in specs)
        + ", pushing only what changed.",
        "versions": [version],
        "integrations": integrations,
        "operators": [
            {"integration-name": "Reverse ETL", "python-modules": ["airflow_provider_retl.operators.reverse_etl"]}
        ],
        "hooks": [
            {"integration-name": "Reverse ETL", "python-modules": ["airflow_provider_retl.hooks.destination"]},
            *({"integration-name": spec.title, "python-modules": [spec.hook_module]} for spec in specs),
        ],
        "connection-types": [spec.connection_type() for spec in specs],
        # `airflow retl ...` (Airflow's CLI parser calls each function and adds the commands it returns).
        "cli": ["airflow_provider_retl.cli.definition.get_retl_cli_commands"],
        # Also the ``airflow.plugins`` entry point: this key is read only when provider discovery is not lazy.
        "plugins": [{"name": PLUGIN_NAME, "plugin-class": "airflow_provider_retl.plugins.ReverseETLPlugin"}],
    }


def provider_yaml(version: str) -> str:
    """``provider.yaml`` as committed: a header, then the provider info in YAML."""
    import yaml  # Airflow depends on PyYAML; only this generator needs it

    header = (
        "# Generated from airflow_provider_retl/destinations (the registry of destination specs) by\n"
        "#   python -m airflow_provider_retl.destinations.provider_info > provider.yaml\n"
        "# Do not edit by hand: tests/test_provider_info.py fails when it differs from the registry.\n"
    )
    return header + yaml.safe_dump(provider_info(version), sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":
    from airflow_provider_retl import __version__

    sys.stdout.write(provider_yaml(__version__))
