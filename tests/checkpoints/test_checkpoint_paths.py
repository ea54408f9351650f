"""A sync name used in a file checkpoint's path (``{sync_id}``) cannot leave the checkpoint folder
(issue 15, class 7): refused when the DAG is parsed if the name is static, and when the store is
built after templating otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_retl.checkpoints.spec import check_path_component, checkpoint_store_from_spec
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.errors import ConfigurationError

ESCAPING = [
    "../x",
    "..",
    ".",
    "a/../../etc/passwd",
    "/etc/passwd",
    "/abs",
    "sub/dir",
    "a\\..\\b",
    "x\x00y",
    "tab\tname",
    "new\nline",
    "",
    f"..{os.sep}..{os.sep}x",
]


@pytest.mark.parametrize("name", ESCAPING)
@pytest.mark.parametrize(
    "spec", ["file:///{folder}/{{sync_id}}.parquet", "{folder}/{{sync_id}}.parquet", "{folder}/{{sync_id}}/ck.parquet"]
)
def test_a_sync_name_that_would_leave_the_folder_is_refused(tmp_path, spec, name):
    text = spec.format(folder=str(tmp_path).lstrip("/") if spec.startswith("file:") else tmp_path)
    with pytest.raises(ConfigurationError, match="cannot name a file checkpoint"):
        checkpoint_store_from_spec(text, sync_id=name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["dag.task", "my-sync_2", "dag.task.3.p0of2", "..hidden-but-plain", "a..b", "Ünïcode"])
def test_plain_names_stay_in_the_folder(tmp_path, name):
    store = checkpoint_store_from_spec(f"{tmp_path}/{{sync_id}}.parquet", sync_id=name)
    assert isinstance(store, FileCheckpointStore)
    assert store.path.parent == tmp_path
    assert store.path.name == f"{name}.parquet"
    assert Path(os.path.normpath(store.path)).parent == tmp_path


def test_a_path_without_the_placeholder_ignores_the_name(tmp_path):
    # The sync name never reaches the file system here: the user's own path is used as written.
    store = checkpoint_store_from_spec(f"{tmp_path}/fixed.parquet", sync_id="../x")
    assert store.path == tmp_path / "fixed.parquet"


def test_the_check_names_what_is_wrong():
    with pytest.raises(ConfigurationError, match="path separator") as caught:
        check_path_component("../x")
    assert "'../x'" in str(caught.value)
    with pytest.raises(ConfigurationError, match="NUL or a control character"):
        check_path_component("a\x00b")
    with pytest.raises(ConfigurationError, match="names a folder"):
        check_path_component("..")


def _operator(**overrides):
    from airflow_provider_retl.operators.reverse_etl import ReverseETLOperator

    arguments = {
        "task_id": "sync",
        "conn_id": "warehouse",
        "sql": "select 1 as email",
        "destination_conn_id": "hubspot",
        "object": "contacts",
        "primary_key": "email",
        "checkpoint": "/data/checkpoints/{sync_id}.parquet",
    }
    return ReverseETLOperator(**{**arguments, **overrides})


@pytest.mark.parametrize("name", ["../x", "/etc/cron.d/x", "a/b", "x\x00"])
def test_a_static_escaping_sync_name_fails_when_the_dag_is_parsed(name):
    with pytest.raises(ConfigurationError, match="cannot name a file checkpoint"):
        _operator(sync_name=name)


def test_a_templated_sync_name_is_checked_after_rendering(tmp_path):
    operator = _operator(sync_name="{{ params.name }}", checkpoint=f"{tmp_path}/{{sync_id}}.parquet")
    operator.sync_name = "../../escaped"  # what the template rendered to
    with pytest.raises(ConfigurationError, match="cannot name a file checkpoint"):
        operator._checkpoint_store(operator._sync_id(), context={})
    assert list(tmp_path.iterdir()) == []


def test_the_operator_runs_one_try_of_a_sync_per_dag_by_default():
    assert _operator(sync_name="ok").max_active_tis_per_dag == 1
    assert _operator(sync_name="ok", max_active_tis_per_dag=4).max_active_tis_per_dag == 4


def test_default_args_can_still_change_the_default():
    from airflow.sdk import DAG

    with DAG("d", schedule=None, default_args={"max_active_tis_per_dag": 3}):
        operator = _operator(sync_name="ok")
    assert operator.max_active_tis_per_dag == 3
