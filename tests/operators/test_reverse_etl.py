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


def test_partition_is_checked_at_parse_time_and_names_its_own_checkpoint():
    from airflow_provider_retl import partitions

    assert partitions(3) == ["0/3", "1/3", "2/3"] and partitions(1) == ["0/1"]
    for bad in (0, -2, 2.0, True, "3"):
        with pytest.raises(ValueError, match="partitions"):
            partitions(bad)
    with pytest.raises(ValueError, match="out of range"):
        _op(partition="4/4")
    assert _op(partition=[1, 4]).partition == (1, 4)

    class TI:
        map_index = 2

    context = {"ti": TI()}
    op = _op(partition="2/4")
    assert op._sync_id(context) == f"{op.dag_id}.t.2.p2of4"
    assert _op(partition=(2, 4), sync_name="crm")._sync_id(context) == "crm.p2of4"
    assert _op()._sync_id(context) == f"{op.dag_id}.t.2"
