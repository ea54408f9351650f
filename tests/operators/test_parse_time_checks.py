"""A ReverseETLOperator parameter that cannot work is an import error of the DAG file.

Each case writes a DAG file and parses it with Airflow's DagBag, the way the dag processor
does: the import error must name the parameter (and the task), so the DAG shows the problem
in the UI instead of failing a run at 3 a.m. Values that are still Jinja templates are not
checked at parse time (they are checked after rendering; see tests/reliability/test_fail_fast.py).
"""

from __future__ import annotations

import textwrap

import pytest

DAG_FILE = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), catchup=False):
    ReverseETLOperator(task_id={task_id!r}, **{kwargs!r})
"""

BASE = {
    "conn_id": "warehouse",
    "sql": "select email, firstname from customers",
    "destination_conn_id": "hubspot",
    "object": "contacts",
    "primary_key": "email",
}


def import_errors(tmp_path, *, dag_id: str = "parse_check", task_id: str = "sync", **overrides) -> str:
    """Parse a one-task DAG file; return its import errors ("" when it imports)."""
    from airflow.dag_processing.dagbag import DagBag

    path = tmp_path / f"{dag_id}.py"
    path.write_text(textwrap.dedent(DAG_FILE.format(dag_id=dag_id, task_id=task_id, kwargs={**BASE, **overrides})))
    bag = DagBag(dag_folder=path, safe_mode=False)
    if not bag.import_errors:
        assert dag_id in bag.dags
    return "\n".join(bag.import_errors.values())


BAD = {
    # parameter named in the error: overrides
    "mode": {"mode": "merge"},
    "primary_key": {"primary_key": []},
    "primary_key ": {"primary_key": 3},
    "batch_size": {"batch_size": 0},
    "batch_size ": {"batch_size": True},
    "batch_size  ": {"batch_size": "100"},
    "chunksize": {"chunksize": 0},
    "max_reject_ratio": {"max_reject_ratio": 1.5},
    "max_reject_ratio ": {"max_reject_ratio": "0.1"},
    "progress_interval": {"progress_interval": -1},
    "dry_run": {"dry_run": "yes"},
    "full_resync": {"full_resync": 1},
    "mapping": {"mapping": {}},
    "mapping ": {"mapping": {"firstname": 1}},
    "match_on": {"match_on": ""},
    "parameters": {"parameters": "not a list"},
    "column_types": {"column_types": {"payload": "blob"}},
    "rejects_table": {"rejects_table": "t--x"},
    "partition": {"partition": "4/4"},
    "partition ": {"partition": "half"},
    "checkpoint": {"checkpoint": "varible"},
    "checkpoint ": {"checkpoint": "warehouse", "partition": "0/2"},
    "checkpoint  ": {"checkpoint": "file://host/x.parquet"},
    "rebaseline": {"rebaseline": True, "dry_run": True},
    "event_name": {"event_name": "signup", "mode": "mirror"},
    "event_time_field": {"event_time_field": "at", "mode": "update"},
    "sync_id": {"sync_name": "crm_token_sync"},
    "sync_id ": {"sync_name": "has spaces"},
    "sync_name": {"sync_name": 5},
    "sync_name ": {"sync_name": ""},
    "destination_params": {"destination_params": ["max_retries", 1]},
}


@pytest.mark.parametrize("parameter", sorted(BAD))
def test_a_bad_parameter_is_an_import_error_naming_it(airflow_home, tmp_path, parameter):
    errors = import_errors(tmp_path, **BAD[parameter])
    assert errors, f"{BAD[parameter]} imported without error"
    assert parameter.strip() in errors
    if parameter.strip() not in ("mode", "partition"):  # checked before the rest, by the types themselves
        assert "ReverseETLOperator 'sync'" in errors  # the task as well as the parameter


def test_a_default_sync_id_that_looks_secret_is_refused_at_parse_time(airflow_home, tmp_path):
    # sync_id defaults to <dag_id>.<task_id>: a task named like a secret would make a masked Variable.
    errors = import_errors(tmp_path, task_id="push_api_token")
    assert "push_api_token" in errors and "secret" in errors
    assert import_errors(tmp_path, task_id="push_api_token", checkpoint="xcom") == ""  # no Variable, no problem


def test_a_sensitive_name_is_fine_for_stores_that_do_not_make_variables(airflow_home, tmp_path):
    assert import_errors(tmp_path, sync_name="crm_token_sync", checkpoint=str(tmp_path / "cp.parquet")) == ""


def test_a_good_definition_imports(airflow_home, tmp_path):
    assert import_errors(tmp_path) == ""
    assert (
        import_errors(
            tmp_path,
            mode="mirror",
            mapping={"email": "email", "firstname": "first"},
            batch_size=50,
            max_reject_ratio=0.2,
            partition="1/4",
            column_types={"payload": "json"},
            parameters={"since": "2026-01-01"},
            rejects_table="retl.rejects",
        )
        == ""
    )
    assert import_errors(tmp_path, object="events", primary_key="id", mode="insert", event_name="signup") == ""


@pytest.mark.parametrize(
    "templated",
    [
        {"sync_name": "{{ params.name }}"},
        {"mapping": "{{ var.json.contact_mapping }}"},
        {"object": "{{ params.object }}"},
        {"parameters": "{{ params.query_parameters }}"},
    ],
)
def test_templated_values_wait_for_rendering(airflow_home, tmp_path, templated):
    assert import_errors(tmp_path, **templated) == ""


def test_check_parameters_after_rendering_uses_the_same_rules():
    # execute() calls check_parameters with the rendered values; the message names the parameter.
    from airflow_provider_retl.operators.parameters import check_parameters
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator
    from airflow_provider_retl.sync.errors import ConfigurationError

    op = ReverseETLOperator(task_id="t", sync_name="{{ params.name }}", mapping="{{ var.json.m }}", **BASE)
    op.mapping = "email"  # what a template rendered to
    with pytest.raises(ConfigurationError, match="^mapping must be a non-empty dict"):
        check_parameters(op, "crm")
    op.mapping = {"email": "email"}
    with pytest.raises(ConfigurationError, match=r"^sync_id .*retl_checkpoint__crm_password.*secret.*sync_name"):
        check_parameters(op, "crm_password")
    check_parameters(op, "crm")
