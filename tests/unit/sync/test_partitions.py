"""Hash partitions of one sync (``SyncConfig.partition``): n runs that together are the whole sync."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import parse_partition, partition_suffix
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    EmptySourceError,
    GuardrailTripped,
    RejectRatioExceeded,
)
from tests.unit.fakes import InMemoryDestination
from tests.unit.sync.test_engine import chunks, contacts


def partition_of(email: str, n: int) -> int:
    """Which partition owns an email key: the engine's key hash of the case-folded key, mod n."""
    key = fp.fold_case(np.array([email], dtype=object))
    return int(fp.key_hashes(key)[0] % np.uint64(n))


def run(frame, dest, store, partition, **kw):
    config = SyncConfig(sync_id="t", object="contacts", primary_key="email", partition=partition, **kw)
    return run_sync(chunks(frame), dest, store, config)


def run_all(frame, dest, stores, **kw):
    n = len(stores)
    return [run(frame, dest, stores[i], (i, n), **kw) for i in range(n)]


def emails_in(dest: InMemoryDestination) -> list[str]:
    return sorted(r["email"] for r in dest.records.values())


class TestConfig:
    @pytest.mark.parametrize(
        "value, expected",
        [("2/4", (2, 4)), (" 0 / 1 ", (0, 1)), ((1, 3), (1, 3)), ([0, 2], (0, 2)), ((np.int64(1), 2), (1, 2))],
    )
    def test_accepted_forms(self, value, expected):
        assert parse_partition(value) == expected
        assert SyncConfig(sync_id="t", object="o", primary_key="k", partition=value).partition == expected

    @pytest.mark.parametrize("value", ["4/4", "-1/2", "0/0", "1/-3", "a/b", "1/2/3", "3", 2.0, (1.0, 2), (True, 2), {}])
    def test_refused_forms(self, value):
        with pytest.raises(ConfigurationError, match="partition"):
            SyncConfig(sync_id="t", object="o", primary_key="k", partition=value)

    def test_suffix_and_fingerprint(self):
        assert partition_suffix((2, 4)) == ".p2of4" and partition_suffix(None) == ""
        plain = SyncConfig(sync_id="t", object="o", primary_key="k")
        fingerprints = {
            SyncConfig(sync_id="t", object="o", primary_key="k", partition=p).target_fingerprint("k")
            for p in [(0, 2), (1, 2), (0, 3)]
        }
        assert len(fingerprints) == 3 and plain.target_fingerprint("k") not in fingerprints


class TestSlices:
    @pytest.mark.parametrize("n", [1, 3, 4])
    def test_partitions_together_sync_every_row_exactly_once(self, n):
        frame = contacts(60)
        dest, stores = InMemoryDestination(), [MemoryCheckpointStore() for _ in range(n)]
        reports = run_all(frame, dest, stores)
        assert emails_in(dest) == sorted(frame["email"])
        assert sum(r.created for r in reports) == 60 and sum(r.pushed for r in reports) == 60
        assert [r.created for r in reports] == [sum(partition_of(e, n) == i for e in frame["email"]) for i in range(n)]
        if n > 1:
            assert all(0 < r.created < 60 for r in reports)  # the split is real, not all-or-nothing
        assert all(r.rows_read == 60 for r in reports)
        assert sum(r.rows_in_partition for r in reports) == 60
        assert [r.partition for r in reports] == [f"{i}/{n}" for i in range(n)]
        # Each checkpoint holds its own slice only.
        for i, store in enumerate(stores):
            keys = store.load().key_hashes
            assert len(keys) == reports[i].created and np.all(keys % np.uint64(n) == np.uint64(i))

        frame.loc[[5, 40], "firstname"] = "Changed"
        before = list(dest.calls)
        reports = run_all(frame, dest, stores)
        assert sum(r.updated for r in reports) == 2 and sum(r.unchanged for r in reports) == 58
        owners = {partition_of(frame.loc[i, "email"], n) for i in (5, 40)}
        assert {i for i, r in enumerate(reports) if r.pushed} == owners
        assert len(dest.calls) - len(before) == len(owners)

    def test_bad_keys_are_rejected_by_partition_zero_only(self):
        frame = pd.concat(
            [
                contacts(20),
                pd.DataFrame({"email": [None, "  "], "firstname": ["x", "y"], "score": [1, 2]}),
                # Copies of one key that differ only in case and spaces: one key, rejected as duplicates.
                pd.DataFrame({"email": ["Dup@Example.com", " dup@example.com"], "firstname": ["a", "b"], "score": [3, 4]}),
            ],
            ignore_index=True,
        )
        dest, stores = InMemoryDestination(), [MemoryCheckpointStore() for _ in range(3)]
        reports = run_all(frame, dest, stores)
        source_rejects = [[(r.key, r.reason) for r in rep.rejects if r.stage == "source"] for rep in reports]
        null_rejects = [[k for k, reason in rejects if "NULL" in reason or "empty" in reason] for rejects in source_rejects]
        assert [len(x) for x in null_rejects] == [2, 0, 0]
        dup_owner = partition_of("dup@example.com", 3)
        dups = [[k for k, reason in rejects if "duplicate" in reason] for rejects in source_rejects]
        assert [len(x) for x in dups] == [2 if i == dup_owner else 0 for i in range(3)]
        assert sum(r.rejected for r in reports) == 4
        assert emails_in(dest) == sorted(contacts(20)["email"])
        assert sum(r.rows_in_partition for r in reports) == len(frame)

    def test_reject_ratio_is_measured_within_the_partition(self):
        good = contacts(40)
        owner = partition_of("bad@", 4)
        bad = pd.DataFrame({"email": ["bad@"], "firstname": ["x"], "score": [0]})
        frame = pd.concat([good, bad], ignore_index=True)
        in_slice = sum(partition_of(e, 4) == owner for e in good["email"]) + 1
        ratio = (1 / in_slice + 1 / len(frame)) / 2  # above 1 of 41 rows, below 1 of the slice's rows
        with pytest.raises(RejectRatioExceeded) as caught:
            run(frame, InMemoryDestination(), MemoryCheckpointStore(), (owner, 4), max_reject_ratio=ratio)
        assert caught.value.report.rows_in_partition == in_slice
        other = (owner + 1) % 4
        assert run(frame, InMemoryDestination(), MemoryCheckpointStore(), (other, 4), max_reject_ratio=ratio).rejected == 0


class TestMirror:
    def test_a_removed_key_is_deleted_once_by_its_own_partition(self):
        frame = contacts(45)
        dest, stores = InMemoryDestination(), [MemoryCheckpointStore() for _ in range(3)]
        run_all(frame, dest, stores, mode="mirror")
        gone = ["user3@example.com", "user31@example.com"]
        reports = run_all(frame[~frame["email"].isin(gone)], dest, stores, mode="mirror")
        assert sum(r.deleted for r in reports) == 2 and dest.count("delete") == len({partition_of(e, 3) for e in gone})
        for i, report in enumerate(reports):
            assert report.deleted == sum(partition_of(e, 3) == i for e in gone)
            assert report.planned["removed"] == report.deleted
        assert emails_in(dest) == sorted(set(frame["email"]) - set(gone))

    def test_a_partition_never_deletes_keys_outside_its_slice(self):
        frame = contacts(45)
        dest, stores = InMemoryDestination(), [MemoryCheckpointStore() for _ in range(3)]
        run_all(frame, dest, stores, mode="mirror")
        # The source keeps partition 1's keys only: 0 and 2 delete their own keys, 1 deletes nothing.
        kept = frame[[partition_of(e, 3) == 1 for e in frame["email"]]]
        report = run(kept, dest, stores[1], (1, 3), mode="mirror")
        assert report.deleted == 0 and report.unchanged == len(kept)
        assert len(dest.records) == 45
        # Every key of partition 0's slice left: the delete guardrail trips (nothing sent) ...
        with pytest.raises(GuardrailTripped, match="mirror would delete"):
            run(kept, dest, stores[0], (0, 3), mode="mirror")
        assert len(dest.records) == 45
        # ... and, let through once, the partition deletes exactly its own keys.
        report = run(kept, dest, stores[0], (0, 3), mode="mirror", override_guardrails=True)
        owned = sum(partition_of(e, 3) == 0 for e in frame["email"])
        # Partition 0's slice is empty, but the query returned rows: not an empty source.
        assert report.deleted == owned and report.rows_in_partition == 0
        assert len(dest.records) == 45 - owned

    def test_an_empty_or_keyless_result_is_still_refused_in_every_partition(self):
        frame = contacts(30)
        dest, stores = InMemoryDestination(), [MemoryCheckpointStore() for _ in range(3)]
        run_all(frame, dest, stores, mode="mirror")
        keyless = pd.DataFrame({"email": [None, None], "firstname": ["a", "b"], "score": [1, 2]})
        for source in (frame.iloc[:0], keyless):
            for i in range(3):
                with pytest.raises(EmptySourceError):
                    run(source, dest, stores[i], (i, 3), mode="mirror")
        assert len(dest.records) == 30 and dest.count("delete") == 0

    def test_changing_n_replans_instead_of_deleting_another_slice(self):
        frame = contacts(40)
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        run(frame, dest, store, (0, 2), mode="mirror")
        calls = dest.count("upsert")
        # The same store now serves partition 0 of 3: its checkpoint holds keys of another slice.
        report = run(frame, dest, store, (0, 3), mode="mirror")
        assert report.checkpoint_reset and "partition" in report.checkpoint_reset
        assert report.planned["removed"] == 0 and report.deleted == 0 and dest.count("delete") == 0
        assert dest.count("upsert") > calls  # its slice is re-planned (matched by key: no duplicates)
        expected = {e for e in frame["email"] if partition_of(e, 2) == 0 or partition_of(e, 3) == 0}
        assert emails_in(dest) == sorted(expected)  # nothing deleted, nothing duplicated
        keys = store.load().key_hashes
        assert np.all(keys % np.uint64(3) == 0)
