"""checkpoint_store_from_spec: which store each spelling of ``checkpoint=`` gives (no Airflow run needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_retl.checkpoints import VariableCheckpointStore, XComCheckpointStore, checkpoint_store_from_spec
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore, MemoryCheckpointStore
from airflow_provider_retl.sync.errors import ConfigurationError


class FakeTI:
    dag_id, task_id, map_index = "d", "t", 3


CONTEXT = {"ti": FakeTI(), "task_state_store": object()}


class TestCheckpointStoreFromSpec:
    def test_variable(self):
        store = checkpoint_store_from_spec("variable", sync_id="hubspot_contacts", context=None)
        assert isinstance(store, VariableCheckpointStore)
        assert store.description == "variable:retl_checkpoint__hubspot_contacts"
        assert store.journal_key(7) == "retl_checkpoint__hubspot_contacts__journal__7"

    def test_xcom(self):
        store = checkpoint_store_from_spec(" XCom ", sync_id="s", context=CONTEXT)
        assert isinstance(store, XComCheckpointStore)
        assert store.description == "xcom:d.t[3]:retl_checkpoint"

    def test_xcom_needs_the_task_context(self):
        with pytest.raises(ConfigurationError, match="context"):
            checkpoint_store_from_spec("xcom", sync_id="s", context=None)
        with pytest.raises(ConfigurationError, match="'ti'"):
            checkpoint_store_from_spec("xcom", sync_id="s", context={"task_state_store": object()})

    @pytest.mark.parametrize(
        ("spec", "path"),
        [
            ("file:///data/ckpt/{sync_id}.parquet", "/data/ckpt/s1.parquet"),
            ("file://localhost/data/a%20b.parquet", "/data/a b.parquet"),
            ("file:///data/ckpt/s1.journaled", "/data/ckpt/s1.journaled"),
            ("/data/ckpt/{sync_id}.parquet", "/data/ckpt/s1.parquet"),
            ("relative/ckpt.PARQUET", "relative/ckpt.PARQUET"),
            (Path("/data/x.parquet"), "/data/x.parquet"),
        ],
    )
    def test_files(self, spec, path):
        store = checkpoint_store_from_spec(spec, sync_id="s1", context=None)
        assert isinstance(store, FileCheckpointStore)
        assert store.path == Path(path)

    @pytest.mark.parametrize(
        ("spec", "path"),
        [
            ("/data/ck.parquet", "/data/ck.p2of4.parquet"),
            ("file:///data/ck.PARQUET", "/data/ck.p2of4.PARQUET"),
            (Path("/data/ck.parquet"), "/data/ck.p2of4.parquet"),
            ("/data/{sync_id}.parquet", "/data/s1.p2of4.parquet"),  # the operator's sync id has the suffix
        ],
    )
    def test_partitions_never_share_a_file(self, spec, path):
        store = checkpoint_store_from_spec(spec, sync_id="s1.p2of4", context=None, partition=(2, 4))
        assert store.path == Path(path)

    def test_a_store_object_is_used_as_it_is(self):
        store = MemoryCheckpointStore()
        assert checkpoint_store_from_spec(store, sync_id="s", context=None) is store

    @pytest.mark.parametrize(
        "spec",
        ["variables", "", "s3://bucket/ckpt.parquet", "/data/ckpt.json", Path("/data/ckpt.csv"), None, 42, object()],
    )
    def test_anything_else_is_refused_with_the_allowed_values(self, spec):
        with pytest.raises(ValueError, match=r"'variable', 'xcom', 'warehouse' or 'warehouse:<schema>.<table>' \(built by the operator on its SQL hook\), a 'file:///absolute/path.parquet' URL"):
            checkpoint_store_from_spec(spec, sync_id="s", context=None)

    def test_warehouse_needs_the_operators_sql_hook(self):
        with pytest.raises(ConfigurationError, match="warehouse_store"):
            checkpoint_store_from_spec("warehouse:analytics.ck", sync_id="s", context=None)

    @pytest.mark.parametrize("url", ["file://server/share/x.parquet", "file:relative.parquet", "file:///x.parquet?v=1"])
    def test_file_urls_must_be_local_and_absolute(self, url):
        with pytest.raises(ConfigurationError, match="checkpoint URL"):
            checkpoint_store_from_spec(url, sync_id="s", context=None)


class TestVariableCheckpointStoreNames:
    @pytest.mark.parametrize("sync_id", ["", "has space", "_leading", "x" * 300, "a/b", None])
    def test_sync_ids_that_cannot_name_a_variable_are_refused(self, sync_id):
        with pytest.raises(ConfigurationError, match="cannot name an Airflow Variable"):
            VariableCheckpointStore(sync_id)

    @pytest.mark.parametrize("sync_id", ["crm_token_refresh", "my_secret_list", "warehouse_dsn"])
    def test_names_airflow_would_mask_are_refused(self, sync_id):
        with pytest.raises(ConfigurationError, match="look like a secret"):
            VariableCheckpointStore(sync_id)
