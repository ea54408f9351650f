"""Checkpoint format: folding journals, round trips, versions, no raw values."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from airflow_provider_retl.sync.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    FileCheckpointStore,
    JournalEntry,
    MemoryCheckpointStore,
)
from airflow_provider_retl.sync.errors import CheckpointError

META = {"target_fingerprint": "t", "payload_fingerprint": "p"}


def test_journal_folds_in_order_later_wins_and_deletes_apply():
    base = Checkpoint("t", "p", np.array([1, 2], dtype=np.uint64), np.array([10, 20], dtype=np.uint64), np.array(["a", "b"], dtype=object))
    folded = base.apply([JournalEntry.puts([2, 3], [21, 30], ["b", "c"]), JournalEntry.deletes([1]), JournalEntry.puts([1], [11], ["a2"])])
    got = dict(zip(folded.key_hashes.tolist(), zip(folded.row_hashes.tolist(), folded.dest_ids.tolist())))
    assert got == {1: (11, "a2"), 2: (21, "b"), 3: (30, "c")}


def test_json_round_trip_preserves_uint64_and_none_ids():
    ck = Checkpoint("t", "p", np.array([2**64 - 1, 0], dtype=np.uint64), np.array([5, 6], dtype=np.uint64), np.array([None, "x"], dtype=object))
    back = Checkpoint.from_json(orjson.loads(orjson.dumps(ck.to_json())))
    assert back.key_hashes.tolist() == [2**64 - 1, 0] and back.dest_ids.tolist() == [None, "x"]
    assert back.format_version == FORMAT_VERSION


def test_store_holds_no_raw_values():
    store = MemoryCheckpointStore()
    store.commit(JournalEntry.puts([123], [456], ["hs-1"]), **META)
    store.finalize(store.load())
    assert b"@" not in orjson.dumps(store.base)


def test_first_run_journal_without_base_resumes():
    store = MemoryCheckpointStore()
    store.commit(JournalEntry.puts([1], [2], ["x"]), **META)
    loaded = store.load()
    assert len(loaded) == 1 and loaded.resumed_entries == 1 and loaded.target_fingerprint == "t"


@pytest.mark.parametrize("document", [{"x": 1}, "text", {"format_version": 1, "keys": "!!"}])
def test_unreadable_documents_raise_checkpoint_error(document):
    with pytest.raises(CheckpointError):
        Checkpoint.from_json(document)


def test_file_store_ignores_a_torn_last_journal_line(tmp_path):
    store = FileCheckpointStore(tmp_path / "c.parquet")
    store.commit(JournalEntry.puts([1], [2], ["x"]), **META)
    with open(store.journal_path, "ab") as fh:
        fh.write(b'{"format_version": 1, "entr')  # killed mid-write
    assert len(store.load()) == 1


def test_file_store_commit_cost_is_per_batch(tmp_path):
    store = FileCheckpointStore(tmp_path / "c.parquet")
    n = 200_000
    store.finalize(Checkpoint("t", "p", np.arange(n, dtype=np.uint64), np.arange(n, dtype=np.uint64), np.full(n, "id", dtype=object)))
    base_size = store.path.stat().st_size
    store.commit(JournalEntry.puts(range(100), range(100), ["i"] * 100), **META)
    assert store.path.stat().st_size == base_size  # the base is untouched by a commit
    assert store.journal_path.stat().st_size < 4000


def test_journal_of_a_changed_definition_replaces_the_old_base():
    store = MemoryCheckpointStore()
    store.commit(JournalEntry.puts([1], [2], ["old"]), **META)
    store.finalize(store.load())
    # A try with another destination object committed progress, then failed.
    store.commit(JournalEntry.puts([5], [6], ["new"]), target_fingerprint="t2", payload_fingerprint="p")
    loaded = store.load()
    assert loaded.target_fingerprint == "t2" and loaded.key_hashes.tolist() == [5]


def test_file_store_changed_definition_journal(tmp_path):
    store = FileCheckpointStore(tmp_path / "c.parquet")
    store.commit(JournalEntry.puts([1], [2], ["old"]), **META)
    store.finalize(store.load())
    store.commit(JournalEntry.puts([5], [6], ["new"]), target_fingerprint="t2", payload_fingerprint="p")
    assert store.load().key_hashes.tolist() == [5]
    store.commit(JournalEntry.puts([7], [8], ["x"]), target_fingerprint="t2", payload_fingerprint="p")
    assert sorted(store.load().key_hashes.tolist()) == [5, 7]


def test_unknown_ids_stay_none_when_journal_entries_are_folded(tmp_path):
    base = Checkpoint("t", "p", np.array([1, 2], dtype=np.uint64), np.array([1, 2], dtype=np.uint64), np.array([None, None], dtype=object))
    folded = base.apply([JournalEntry.puts([1], [5], ["77"])])
    assert dict(zip(folded.key_hashes.tolist(), folded.dest_ids.tolist())) == {1: "77", 2: None}
    store = FileCheckpointStore(tmp_path / "c.parquet")
    store.finalize(folded)  # pyarrow refused NaN ids before
    assert store.load().dest_ids.tolist().count(None) == 1
