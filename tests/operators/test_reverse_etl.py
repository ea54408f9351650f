"""ReverseETLOperator checks its definition when the DAG is parsed, not at 3 a.m."""

import pytest


def _op(**kw):
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    args = dict(task_id="t", conn_id="wh", sql="select 1", destination_conn_id="d", object="contacts", primary_key="email")
    return ReverseETLOperator(**{**args, **kw})


def test_bad_mode_fails_at_parse_time():
    with pytest.raises(ValueError, match="mode must be one of upsert, update, insert, mirror"):
        _op(mode="merge")


def test_bad_reject_ratio_and_conflicting_flags_fail_at_parse_time():
    with pytest.raises(ValueError, match="max_reject_ratio"):
        _op(max_reject_ratio=1.5)
    with pytest.raises(ValueError, match="rebaseline"):
        _op(rebaseline=True, dry_run=True)


def test_templated_mapping_is_checked_after_rendering_only():
    op = _op(mapping="{{ var.json.contact_mapping }}")
    assert "mapping" in op.template_fields and op.template_ext == (".sql",)
