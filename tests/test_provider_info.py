"""get_provider_info() is valid for Airflow 3.3 and everything it lists imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.providers_manager import (
    _create_customized_form_field_behaviours_schema_validator,
    _create_provider_info_schema_validator,
)

import airflow_provider_retl
from airflow_provider_retl import get_provider_info

INFO = get_provider_info()
ROOT = Path(__file__).resolve().parents[1]


def _modules(section: str) -> list[str]:
    return [m for entry in INFO.get(section, []) for m in entry["python-modules"]]


class TestProviderInfo:
    def test_valid_against_airflows_schema(self):
        _create_provider_info_schema_validator().validate(INFO)

    def test_identity(self):
        assert INFO["package-name"] == "airflow-provider-retl"
        assert INFO["versions"] == [airflow_provider_retl.__version__]
        assert INFO["operators"][0]["python-modules"] == ["airflow_provider_retl.operators.reverse_etl"]

    def test_integration_names_are_declared(self):
        declared = {i["integration-name"] for i in INFO["integrations"]}
        for section in ("hooks", "operators"):
            assert {e["integration-name"] for e in INFO[section]} <= declared

    @pytest.mark.parametrize("module", _modules("hooks"))
    def test_hook_modules_import(self, module):
        importlib.import_module(module)

    @pytest.mark.parametrize("module", _modules("operators"))
    def test_operator_modules_import(self, module):
        importlib.import_module(module)

    @pytest.mark.parametrize("conn", INFO["connection-types"], ids=lambda c: c["connection-type"])
    def test_connection_types_match_their_hooks(self, conn):
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook_class = getattr(importlib.import_module(module), name)
        assert hook_class.conn_type == conn["connection-type"]
        assert hook_class.default_conn_name and hook_class.hook_name
        # Airflow builds the hook as hook_class(**{conn_name_attr: conn_id}).
        hook = hook_class(**{hook_class.conn_name_attr: "some_conn"})
        assert getattr(hook, hook_class.conn_name_attr) == "some_conn"

    @pytest.mark.parametrize("conn", INFO["connection-types"], ids=lambda c: c["connection-type"])
    def test_form_behaviour_is_valid_and_matches_the_hook(self, conn):
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook_class = getattr(importlib.import_module(module), name)
        behaviour = hook_class.get_ui_field_behaviour()
        _create_customized_form_field_behaviours_schema_validator().validate(behaviour)
        assert behaviour["hidden_fields"] == conn["ui-field-behaviour"]["hidden-fields"]
        assert behaviour["relabeling"] == conn["ui-field-behaviour"]["relabeling"]

    @pytest.mark.parametrize("conn", INFO["connection-types"], ids=lambda c: c["connection-type"])
    def test_conn_fields_are_extras_the_hooks_read(self, conn):
        module, _, name = conn["hook-class-name"].rpartition(".")
        known = set(getattr(importlib.import_module(module), name).knobs())
        for field, spec in conn["conn-fields"].items():
            assert field in known
            assert spec["label"] and "type" in spec["schema"]

    def test_airflow_loads_the_form_metadata(self):
        # What ProvidersManager does with our connection-types, without installing the package.
        from airflow.providers_manager import ProvidersManager, ProviderInfo

        manager = ProvidersManager()
        # The installed package may already be loaded (the session is shared): put everything back as found,
        # or the tests that run after this one in the same process lose our connection types.
        saved = (
            dict(manager._provider_dict),
            dict(manager._connection_form_widgets),
            dict(manager._field_behaviours),
        )
        manager._provider_dict["airflow-provider-retl"] = ProviderInfo(
            version=airflow_provider_retl.__version__, data=INFO
        )
        try:
            manager._load_ui_metadata()
            assert manager._field_behaviours["retl_hubspot"]["hidden_fields"] == ["schema", "login", "port"]
            widget = manager._connection_form_widgets["extra__retl_hubspot__rate_limit"]
            assert widget.field["value"] == 100
        finally:
            for target, before in zip(
                (manager._provider_dict, manager._connection_form_widgets, manager._field_behaviours), saved
            ):
                target.clear()
                target.update(before)


@pytest.mark.parametrize("name", sorted(airflow_provider_retl._EXPORTS))
def test_public_names_load_lazily(name):
    module = airflow_provider_retl._EXPORTS[name]
    assert getattr(airflow_provider_retl, name) is getattr(importlib.import_module(module), name)


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError):
        airflow_provider_retl.NoSuchThing  # noqa: B018


def test_importing_the_package_stays_light():
    code = (
        "import sys, airflow_provider_retl as p; p.get_provider_info(); "
        "heavy = [m for m in ('airflow', 'requests', 'pandas', 'tenacity') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_airflow_cli_lists_the_installed_provider_and_its_hooks(tmp_path):
    # The package is installed (editable) into the venv by `make`: its entry point must be found.
    import os

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow = Path(sys.executable).with_name("airflow")
    providers = subprocess.run([str(airflow), "providers", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "airflow-provider-retl" in providers.stdout, providers.stderr[-2000:]
    hooks = subprocess.run([str(airflow), "providers", "hooks"], capture_output=True, text=True, env=env, timeout=120)
    assert "airflow_provider_retl.hooks.hubspot.HubSpotHook" in hooks.stdout
    assert "airflow_provider_retl.hooks.webhook.WebhookHook" in hooks.stdout


def test_committed_provider_yaml_is_generated_from_the_registry():
    """provider.yaml is the registry's output; a destination added without regenerating it fails here."""
    import yaml

    from airflow_provider_retl.destinations.provider_info import provider_yaml

    committed = (ROOT / "provider.yaml").read_text()
    generated = provider_yaml(airflow_provider_retl.__version__)
    assert committed == generated, (
        "provider.yaml is stale: run python -m airflow_provider_retl.destinations.provider_info > provider.yaml"
    )
    assert yaml.safe_load(committed) == INFO


def test_every_registered_destination_has_a_connection_type_and_hook_module():
    from airflow_provider_retl.destinations import REGISTRY

    conn_types = {c["connection-type"]: c for c in INFO["connection-types"]}
    hook_modules = set(_modules("hooks"))
    for spec in REGISTRY.values():
        assert conn_types[spec.conn_type]["hook-class-name"] == spec.hook_class
        assert spec.hook_module in hook_modules
