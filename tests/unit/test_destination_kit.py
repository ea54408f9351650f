"""The destination kit: specs are consistent, knobs parse one way everywhere, hooks take their facts from specs."""

from __future__ import annotations

import importlib

import pytest

from airflow_provider_retl.destinations import REGISTRY, by_conn_type
from airflow_provider_retl.destinations.kit import Knob, Limits, transport_knobs
from airflow_provider_retl.sync.errors import ConfigurationError

SPECS = sorted(REGISTRY.values(), key=lambda s: s.name)


def _hook_class(spec):
    module, _, name = spec.hook_class.rpartition(".")
    return getattr(importlib.import_module(module), name)


class TestKnob:
    def test_missing_or_empty_is_the_default(self):
        knob = Knob("job_timeout", "number", "Job timeout", 900, exclusive_minimum=0)
        assert knob.parse(None) == 900 and knob.parse("") == 900

    @pytest.mark.parametrize(
        ("knob", "value", "message"),
        [
            (Knob("n", "integer", "N", 1, minimum=1), "2.5", "whole number"),
            (Knob("n", "integer", "N", 1, minimum=1), 0, "at least 1"),
            (Knob("n", "integer", "N", 1, minimum=1), True, "number"),
            (Knob("t", "number", "T", 1.0, exclusive_minimum=0), "-3", "positive"),
            (Knob("t", "number", "T", 1.0, exclusive_minimum=0), "nan", "finite"),
            (Knob("t", "number", "T", 1.0, exclusive_minimum=0), "soon", "number"),
            (Knob("b", "boolean", "B", False), "perhaps", "true or false"),
            (Knob("s", "string", "S", "a", enum=("a", "b")), "c", "one of a, b"),
            (Knob("j", "integer", "J", 25, minimum=1, maximum=30), 31, "at most 30"),
            (Knob("h", "object", "H"), "x=1", "mapping"),
        ],
    )
    def test_bad_values_are_configuration_errors_naming_the_knob(self, knob, value, message):
        with pytest.raises(ConfigurationError, match=message) as caught:
            knob.parse(value)
        assert knob.name in str(caught.value)

    def test_values_parse_to_their_type(self):
        assert Knob("n", "integer", "N").parse("7") == 7
        assert Knob("n", "integer", "N").parse(7.0) == 7
        assert Knob("b", "boolean", "B").parse("Off") is False
        assert Knob("s", "string", "S", enum=("token", "oauth")).parse(" OAuth ") == "oauth"
        assert Knob("batch_size", "integer", "B", 100, maximum=100, cap_at_maximum=True).parse(500) == 100

    def test_form_schema_carries_type_bounds_default_and_secrecy(self):
        knobs = {k.name: k for k in transport_knobs(Limits(batch=75, concurrency=4, rate=3000, window=3))}
        assert knobs["batch_size"].schema() == {"type": ["integer", "null"], "minimum": 1, "maximum": 75, "default": 75}
        assert knobs["rate_limit"].schema()["default"] == 3000
        assert knobs["rate_limit_redis_url"].schema()["format"] == "password"
        assert "default" not in knobs["timeout"].schema()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
class TestSpecs:
    def test_hook_takes_identity_and_limits_from_its_spec(self, spec):
        hook = _hook_class(spec)
        assert hook.spec is spec
        assert (hook.conn_type, hook.conn_name_attr, hook.default_conn_name) == (
            spec.conn_type,
            spec.conn_name_attr,
            spec.default_conn_name,
        )
        assert hook.api_batch_limit == spec.limits.batch and hook.api_lookup_limit == spec.limits.lookup_batch
        assert hook.default_max_concurrency == spec.limits.concurrency
        assert hook.default_rate_limit == spec.limits.rate and hook.default_rate_window == spec.limits.window
        assert set(hook.knobs()) == {k.name for k in spec.all_knobs()}

    def test_declaration_is_consistent(self, spec):
        assert by_conn_type(spec.conn_type) is spec
        assert spec.conn_type == f"retl_{spec.name}"
        assert 1 <= spec.limits.default_batch <= spec.limits.batch
        names = [k.name for k in spec.all_knobs()]
        assert len(names) == len(set(names)), "a knob is declared twice"
        for knob in spec.all_knobs():
            if knob.default is not None:
                assert knob.parse(knob.default) == knob.parse(None), knob.name  # the default is a valid value
        assert spec.objects
        for declared in spec.objects:
            if declared.default_match and declared.upsert_by and "*" not in declared.upsert_by:
                assert declared.default_match in declared.upsert_by, declared.name
            assert not (declared.events and declared.upsert_by), "an event stream is never upserted"

    def test_hook_answers_what_the_spec_declares_for_each_object(self, spec):
        hook = _hook_class(spec)("kit_no_such_conn")  # static answers need no connection
        for declared in spec.objects:
            name = "p_custom_thing" if declared.name == "*" else declared.name
            for spelling in (name, *declared.aliases):
                assert hook.needs_lookup(spelling) == declared.lookup, (spec.name, spelling)
                assert hook.default_match_field(spelling) == declared.default_match, (spec.name, spelling)
                assert hook.supports_events(spelling) == declared.events, (spec.name, spelling)
                assert tuple(hook.match_field_aliases(spelling)) == declared.match_aliases, (spec.name, spelling)
                assert hook.updates_by_match(spelling) == declared.updates_by_match, (spec.name, spelling)
                assert tuple(hook.match_identities(spelling)) == declared.identities, (spec.name, spelling)
                for field in declared.upsert_by if "*" not in declared.upsert_by else ():
                    assert hook.supports_upsert(spelling, field), (spec.name, spelling, field)
                if declared.events:
                    assert not hook.supports_upsert(spelling, None)

    def test_emulator_is_registered_and_importable(self, spec):
        from airflow_provider_retl.testing.emulators import EMULATORS
        from airflow_provider_retl.testing.emulators.cli import SUBCOMMANDS

        assert spec.emulator is not None
        assert EMULATORS[spec.name].__name__ == spec.emulator.cls.rpartition(":")[2]
        assert SUBCOMMANDS[spec.name][:2] == (spec.emulator.help, spec.emulator.port)


def test_conn_types_names_and_emulator_ports_are_unique():
    assert len({s.conn_type for s in SPECS}) == len(SPECS)
    ports = [s.emulator.port for s in SPECS if s.emulator]
    assert len(ports) == len(set(ports))


def test_the_kit_imports_nothing_from_airflow():
    import subprocess
    import sys

    code = (
        "import sys; import airflow_provider_retl.destinations as d; "
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.') or m == 'requests']; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_object_a_destination_does_not_declare_fails_naming_those_it_has():
    hook = _hook_class(REGISTRY["zendesk"])("kit_no_such_conn")
    with pytest.raises(ConfigurationError, match="Zendesk has no object 'tickets'; it syncs 'users', 'organizations'"):
        hook.supports_delete("tickets")
