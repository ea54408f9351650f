"""Variable/XCom checkpoints warn, naming the file store, above the size the benchmarks found sensible."""

from __future__ import annotations

import logging

import numpy as np

from airflow_provider_retl.checkpoints import spec, variable
from airflow_provider_retl.checkpoints.spec import LARGE_CHECKPOINT_BYTES, warn_if_large
from airflow_provider_retl.checkpoints.variable import VariableCheckpointStore
from airflow_provider_retl.checkpoints.xcom import XComCheckpointStore
from airflow_provider_retl.sync.checkpoint import Checkpoint


def checkpoint(keys: int) -> Checkpoint:
    rng = np.random.default_rng(0)
    return Checkpoint(
        "t" * 32,
        "p" * 32,
        rng.integers(0, 2**63, keys, dtype=np.uint64),
        rng.integers(0, 2**63, keys, dtype=np.uint64),
        np.array([str(10_000_000_000 + i) for i in range(keys)], dtype=object),
    )


def test_threshold_is_a_few_mebibytes():
    assert 1 * 2**20 <= LARGE_CHECKPOINT_BYTES <= 16 * 2**20  # below MySQL's 16 MiB Variable cap


def test_small_document_is_quiet(caplog):
    with caplog.at_level(logging.WARNING, logger=spec.__name__):
        assert warn_if_large(1000, keys=40, description="variable:x") is False
    assert caplog.records == []


def test_large_document_warns_and_names_the_file_store(caplog):
    with caplog.at_level(logging.WARNING, logger=spec.__name__):
        assert warn_if_large(LARGE_CHECKPOINT_BYTES + 1, keys=170_000, description="variable:retl_checkpoint__s")
    (record,) = caplog.records
    assert "variable:retl_checkpoint__s" in record.getMessage()
    assert "file store" in record.getMessage() and "FileCheckpointStore" in record.getMessage()


def test_variable_store_warns_on_a_large_base(monkeypatch, caplog):
    written = {}

    class FakeVariable:
        @staticmethod
        def set(key, value, description=None):
            written[key] = value

    monkeypatch.setattr(variable, "Variable", FakeVariable)
    store = VariableCheckpointStore("big_sync")
    with caplog.at_level(logging.WARNING, logger=spec.__name__):
        store._write_base(checkpoint(1_000).to_json())
        assert caplog.records == []
        store._write_base(checkpoint(200_000).to_json())  # ~25 bytes a key: ~4.7 MiB
    assert len(written["retl_checkpoint__big_sync"]) > LARGE_CHECKPOINT_BYTES
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "200000 keys" in caplog.records[0].getMessage()


def test_xcom_store_warns_on_a_large_base(monkeypatch, caplog):
    class FakeTI:
        dag_id, task_id, map_index = "d", "t", -1

        def __init__(self):
            self.pushed = {}

        def xcom_pull(self, **kwargs):
            return None  # no earlier base

        def xcom_push(self, key, value):
            self.pushed[key] = value

    class FakeVariable:  # the journal Variables (none yet): finalize numbers the base after them
        @staticmethod
        def keys(prefix=None):
            return []

    monkeypatch.setattr(variable, "Variable", FakeVariable)
    ti = FakeTI()
    store = XComCheckpointStore({"ti": ti})
    with caplog.at_level(logging.WARNING, logger=spec.__name__):
        store._write_base(checkpoint(200_000).to_json())
    assert "retl_checkpoint" in ti.pushed
    assert len(caplog.records) == 1 and "xcom:d.t:retl_checkpoint" in caplog.records[0].getMessage()
