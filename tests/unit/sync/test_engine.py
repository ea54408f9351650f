"""The engine's rules, end to end in memory: diff, modes, bookkeeping, bad keys, resume."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import FileCheckpointStore, MemoryCheckpointStore
from airflow_provider_retl.sync.engine import SyncConfig, run_sync
from airflow_provider_retl.sync.records import SyncReport
from airflow_provider_retl.sync.errors import (
    CheckpointError,
    ConfigurationError,
    RejectRatioExceeded,
    RetryableDestinationError,
)
from tests.unit.fakes import InMemoryDestination


def contacts(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "email": [f"user{i}@example.com" for i in range(start, start + n)],
            "firstname": [f"First{i}" for i in range(start, start + n)],
            "score": np.arange(start, start + n, dtype=np.int64),
        }
    )


def chunks(frame: pd.DataFrame, size: int = 7):
    for i in range(0, len(frame), size):
        yield frame.iloc[i : i + size]


def sync(frame, dest, store, **kw):
    config = SyncConfig(sync_id="t", object="contacts", primary_key=kw.pop("primary_key", "email"), **kw)
    return run_sync(chunks(frame), dest, store, config)


class TestDiff:
    def test_first_run_creates_all_second_run_sends_nothing(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        report = sync(contacts(25), dest, store)
        assert report.planned == {"new": 25, "changed": 0, "removed": 0}
        assert report.created == 25 and len(dest.records) == 25
        assert dest.count("upsert") == 1  # 25 rows fit one batch of 100
        calls = dest.request_count
        report = sync(contacts(25), dest, store)
        assert report.unchanged == 25 and report.pushed == 0
        assert dest.request_count == calls

    def test_changing_three_rows_sends_exactly_three_by_id(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(30), dest, store)
        frame = contacts(30)
        frame.loc[[2, 11, 29], "score"] = -1
        before = len(dest.calls)
        report = sync(frame, dest, store)
        assert report.planned["changed"] == 3 and report.updated == 3
        assert dest.calls[before:] == [("update", 3)]  # known ids: no lookup, no upsert
        assert [dest.records[dest.by_match(f"user{i}@example.com")]["score"] for i in (2, 11, 29)] == [-1, -1, -1]

    def test_batches_respect_batch_size(self):
        dest, store = InMemoryDestination(batch=10), MemoryCheckpointStore()
        sync(contacts(35), dest, store)
        assert sorted(n for k, n in dest.calls if k == "upsert") == [5, 10, 10, 10]
        dest2 = InMemoryDestination(batch=10)
        sync(contacts(35), dest2, MemoryCheckpointStore(), batch_size=4)
        assert max(n for _, n in dest2.calls) == 4

    def test_type_canonical_values_do_not_resend(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(10), dest, store)
        frame = contacts(10)
        frame["score"] = frame["score"].astype(float)  # 3 -> 3.0 is the same value
        report = sync(frame, dest, store)
        assert report.unchanged == 10 and report.pushed == 0

    def test_null_vs_empty_string_is_a_change(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        frame = contacts(3)
        frame["firstname"] = [None, "", "x"]
        sync(frame, dest, store)
        frame2 = frame.copy()
        frame2["firstname"] = ["", None, "x"]
        assert sync(frame2, dest, store).planned["changed"] == 2


class TestKeys:
    def test_null_and_empty_keys_rejected_with_reason(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        frame = contacts(5)
        frame.loc[1, "email"] = None
        frame.loc[3, "email"] = "   "
        report = sync(frame, dest, store)
        assert report.created == 3 and report.rejected == 2
        reasons = sorted(r.reason for r in report.rejects)
        assert reasons == ["primary key column 'email' is NULL", "primary key column 'email' is empty"]
        assert all(r.stage == "source" for r in report.rejects)

    @pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
    def test_duplicate_keys_reject_every_copy_whatever_the_order(self, order):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        frame = pd.DataFrame(
            {"email": ["a@x.com", "dup@x.com", "b@x.com", "dup@x.com"], "firstname": ["A", "D1", "B", "D2"]}
        ).iloc[order]
        config = SyncConfig(sync_id="t", object="contacts", primary_key="email")
        report = run_sync([frame.iloc[:2], frame.iloc[2:]], dest, store, config)  # copies in different chunks
        assert report.created == 2
        assert [(r.key, r.stage) for r in report.rejects] == [("dup@x.com", "source")] * 2
        assert "duplicate primary key: 2 rows" in report.rejects[0].reason
        assert dest.by_match("dup@x.com") is None

    def test_duplicate_of_an_already_synced_key_is_not_synced_nor_deleted(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(3), dest, store, mode="mirror")
        frame = pd.concat([contacts(3), contacts(1)], ignore_index=True)
        frame.loc[3, "firstname"] = "other"
        report = sync(frame, dest, store, mode="mirror")
        assert report.rejected == 2 and report.deleted == 0 and report.unchanged == 2
        assert len(dest.records) == 3

    def test_composite_key(self):
        dest, store = InMemoryDestination(lookup=False, match_field=None), MemoryCheckpointStore()
        frame = pd.DataFrame({"region": ["eu", "eu", "us"], "id": [1, 2, 1], "v": [1, 2, 3]})
        report = sync(frame, dest, store, primary_key=["region", "id"])
        assert report.upserted == 3
        assert sorted(dest.records) == ["eu|1", "eu|2", "us|1"]

    def test_missing_key_column_is_a_clear_configuration_error(self):
        with pytest.raises(ConfigurationError, match="'customer_id' is not a column.*email"):
            sync(contacts(2), InMemoryDestination(), MemoryCheckpointStore(), primary_key="customer_id")

    def test_key_column_case_insensitive(self):
        frame = contacts(3).rename(columns={"email": "EMAIL"})
        report = sync(frame, InMemoryDestination(match_field="EMAIL"), MemoryCheckpointStore())
        assert report.created == 3


class TestModes:
    def test_update_never_creates(self):
        dest = InMemoryDestination()
        sync(contacts(3), dest, MemoryCheckpointStore())  # these exist, but a new store knows no ids
        report = sync(contacts(6), dest, MemoryCheckpointStore(), mode="update")
        assert report.updated == 3 and report.created == 0
        assert report.skipped == {"update mode: record not found in destination": 3}
        assert len(dest.records) == 3

    def test_insert_never_updates(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(3), dest, MemoryCheckpointStore())
        report = sync(contacts(5), dest, store, mode="insert")
        assert report.created == 2 and report.updated == 0
        assert report.skipped == {"insert mode: record already exists": 3}
        frame = contacts(5)
        frame["firstname"] = "changed"
        report = sync(frame, dest, store, mode="insert")
        assert report.pushed == 0 and dest.count("update") == 0
        assert all(r["firstname"] != "changed" for r in dest.records.values())

    def test_mirror_deletes_removed_keys_and_only_after_reading_everything(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(10), dest, store, mode="mirror")
        report = sync(contacts(8), dest, store, mode="mirror")
        assert report.planned["removed"] == 2 and report.deleted == 2
        assert len(dest.records) == 8
        report = sync(contacts(8), dest, store, mode="mirror")
        assert report.pushed == 0 and report.planned["removed"] == 0

    def test_upsert_ignores_removed_keys(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(5), dest, store)
        report = sync(contacts(3), dest, store)
        assert report.deleted == 0 and report.skipped == {"removed from source (mode is not mirror)": 2}
        assert len(dest.records) == 5

    def test_lookup_then_create_without_upsert(self):
        dest = InMemoryDestination(upsert=False)
        sync(contacts(4), InMemoryDestination(), MemoryCheckpointStore())
        dest.records = {"99": {"email": "user1@example.com"}}
        report = sync(contacts(4), dest, MemoryCheckpointStore())
        assert report.created == 3 and report.updated == 1
        assert dest.count("lookup") == 1 and dest.count("create") == 1 and dest.count("update") == 1
        assert dest.records["99"]["firstname"] == "First1"

    def test_match_on_email_follows_an_email_change_in_place(self):
        dest, store = InMemoryDestination(upsert=False), MemoryCheckpointStore()
        frame = contacts(3)
        frame["customer_id"] = [10, 11, 12]
        sync(frame, dest, store, primary_key="customer_id", match_on="email")
        frame.loc[1, "email"] = "renamed@example.com"
        report = sync(frame, dest, store, primary_key="customer_id", match_on="email")
        assert report.updated == 1 and report.created == 0
        assert len(dest.records) == 3 and dest.by_match("renamed@example.com") is not None

    def test_dry_run_sends_nothing_and_commits_nothing(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        frame = contacts(5)
        frame.loc[0, "email"] = "not-an-email"
        report = sync(frame, dest, store, dry_run=True)
        assert dest.request_count == 0 and store.base is None and store.journal == []
        assert report.planned["new"] == 5 and report.plan == {"upsert": 5} and report.rejected == 1

    def test_full_resync_resends_everything_by_id(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(5), dest, store)
        report = sync(contacts(5), dest, store, full_resync=True)
        assert report.updated == 5 and len(dest.records) == 5

    def test_rebaseline_marks_current_result_synced_without_sending(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        report = sync(contacts(6), dest, store, rebaseline=True)
        assert dest.request_count == 0 and report.rebaseline
        frame = contacts(6)
        frame.loc[0, "score"] = 100
        report = sync(frame, dest, store)
        assert report.planned == {"new": 0, "changed": 1, "removed": 0}

    def test_mapping_change_resends_with_known_ids(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(4), dest, store, mapping={"email": "email", "firstname": "firstname"})
        report = sync(contacts(4), dest, store, mapping={"email": "email", "first_name": "firstname"})
        assert report.checkpoint_reset and "mapping changed" in report.checkpoint_reset
        assert report.updated == 4 and len(dest.records) == 4

    def test_another_object_discards_ids(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(2), dest, store)
        config = SyncConfig(sync_id="t", object="companies", primary_key="email")
        report = run_sync([contacts(2)], dest, store, config)
        assert "ids discarded" in report.checkpoint_reset


class TestRejects:
    def test_destination_and_validation_rejects_are_reported_and_not_checkpointed(self):
        dest = InMemoryDestination(reject=lambda f: "score too high" if f["score"] >= 8 else None)
        store = MemoryCheckpointStore()
        frame = contacts(10)
        frame.loc[0, "email"] = "broken@"
        report = sync(frame, dest, store)
        assert report.created == 7 and report.rejected == 3
        by_key = {r.key: r for r in report.rejects}
        assert by_key["broken@"].stage == "validation" and "invalid email" in by_key["broken@"].reason
        assert by_key["user8@example.com"].reason == "score too high"
        dest.reject = None
        frame.loc[0, "email"] = "fixed@example.com"
        report = sync(frame, dest, store)
        assert report.created == 3 and report.rejected == 0  # rejected rows come back next run

    def test_infinite_float_is_a_row_reject(self):
        frame = contacts(3).assign(ratio=[1.5, float("inf"), float("nan")])
        report = sync(frame, InMemoryDestination(), MemoryCheckpointStore())
        assert report.created == 2 and report.rejects[0].key == "user1@example.com"
        assert "infinite" in report.rejects[0].reason

    def test_reject_ratio_fails_after_committing_good_rows(self):
        dest, store = InMemoryDestination(reject=lambda f: "no" if f["score"] % 2 else None), MemoryCheckpointStore()
        with pytest.raises(RejectRatioExceeded) as info:
            sync(contacts(10), dest, store, max_reject_ratio=0.2)
        assert info.value.report.rejected == 5 and info.value.report.created == 5
        assert len(store.load()) == 5


class TestResume:
    def test_failure_mid_push_keeps_progress_and_retry_sends_only_the_rest(self):
        dest, store = InMemoryDestination(batch=10, concurrency=1), MemoryCheckpointStore()
        dest.fail_on = {"upsert": 3}
        with pytest.raises(RetryableDestinationError):
            sync(contacts(50), dest, store)
        delivered = len(dest.records)
        # Batches already in flight when the 3rd failed still complete and are committed.
        assert delivered in (20, 30) and store.base is None
        assert len(store.load()) == delivered
        dest.fail_on = {}
        report = sync(contacts(50), dest, store)
        assert report.created == 50 - delivered and report.unchanged == delivered
        assert report.requests == (50 - delivered) // 10
        assert len(dest.records) == 50
        assert store.journal == [] and len(store.load()) == 50

    def test_lost_create_response_is_reconciled_by_lookup(self):
        dest, store = InMemoryDestination(upsert=False, batch=5, concurrency=1), MemoryCheckpointStore()
        dest.lose_response_on = {"create": 1}
        report = sync(contacts(8), dest, store)
        assert len(dest.records) == 8  # no duplicate of the 5 whose response was lost
        assert report.created == 8 and report.rejected == 0

    def test_truncated_read_sends_nothing_and_commits_nothing(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(10), dest, store, mode="mirror")

        def broken():
            yield contacts(3)
            raise ConnectionError("server closed the connection unexpectedly")

        config = SyncConfig(sync_id="t", object="contacts", primary_key="email", mode="mirror")
        calls = dest.request_count
        with pytest.raises(ConnectionError):
            run_sync(broken(), dest, store, config)
        assert dest.request_count == calls and len(dest.records) == 10 and store.journal == []

    def test_file_store_round_trip_and_resume(self, tmp_path):
        path = tmp_path / "cp" / "contacts.parquet"
        dest = InMemoryDestination(batch=10, concurrency=1)
        dest.fail_on = {"upsert": 2}
        with pytest.raises(RetryableDestinationError):
            sync(contacts(30), dest, FileCheckpointStore(path))
        dest.fail_on = {}
        delivered = len(dest.records)
        report = sync(contacts(30), dest, FileCheckpointStore(path))
        assert report.created == 30 - delivered and report.unchanged == delivered and path.exists()
        assert sync(contacts(30), dest, FileCheckpointStore(path)).pushed == 0

    def test_corrupt_checkpoint_is_a_clear_error_unless_full_resync(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(3), dest, store)
        store.base["keys"] = "garbage"
        with pytest.raises(CheckpointError, match="full_resync=True"):
            sync(contacts(3), dest, store)
        report = sync(contacts(3), dest, store, full_resync=True)
        assert "unreadable" in report.checkpoint_reset and len(dest.records) == 3

    def test_newer_checkpoint_format_is_refused(self):
        dest, store = InMemoryDestination(), MemoryCheckpointStore()
        sync(contacts(3), dest, store)
        store.base["format_version"] = 99
        with pytest.raises(CheckpointError, match="newer"):
            sync(contacts(3), dest, store)


def test_progress_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="airflow_provider_retl.sync")
    sync(contacts(5), InMemoryDestination(), MemoryCheckpointStore())
    text = caplog.text
    assert "read 5 rows to the end: 5 new" in text and "pushed 5/5 records" in text


def test_config_is_validated_before_anything_runs():
    with pytest.raises(ValueError, match="mode must be one of"):
        SyncConfig(sync_id="t", object="contacts", primary_key="email", mode="merge")
    with pytest.raises(ConfigurationError):
        SyncConfig(sync_id="t", object="contacts", primary_key=[])
    with pytest.raises(ConfigurationError):
        SyncConfig(sync_id="t", object="contacts", primary_key="email", max_reject_ratio=2)


def test_create_refused_as_existing_updates_that_record():
    from airflow_provider_retl.sync.records import EXISTS, Outcome

    dest = InMemoryDestination(upsert=False)
    real_create = dest.create

    def create_racing(object, records):
        # Someone else created user1 between our lookup and our create.
        dest.records["77"] = {"email": "user1@example.com"}
        outcomes = real_create(object, [r for r in records if r.fields["email"] != "user1@example.com"])
        it = iter(outcomes)
        return [Outcome(ok=False, dest_id="77", code=EXISTS, reason="exists") if r.fields["email"] == "user1@example.com" else next(it) for r in records]

    dest.create = create_racing
    report = sync(contacts(3), dest, MemoryCheckpointStore())
    assert report.created == 2 and report.updated == 1 and report.rejected == 0
    assert dest.records["77"]["firstname"] == "First1" and len(dest.records) == 3


def test_large_upserts_take_the_bulk_path_and_small_ones_do_not():
    dest = InMemoryDestination(bulk_threshold=50, bulk_batch_size=40)
    store = MemoryCheckpointStore()
    report = sync(contacts(90), dest, store)
    assert sorted(dest.calls) == [("bulk_upsert", 10), ("bulk_upsert", 40), ("bulk_upsert", 40)]
    assert report.created == 90 and len(store.load()) == 90
    frame = contacts(90)
    frame.loc[:4, "score"] = -5
    sync(frame, dest, store)
    assert dest.calls[-1] == ("update", 5)


def test_destination_alias_of_the_match_field_is_found_without_match_on():
    dest = InMemoryDestination(match_field="email_address", upsert=False)
    dest.match_aliases = ("email",)
    report = sync(contacts(3), dest, MemoryCheckpointStore(), mode="insert")
    assert report.created == 3 and dest.count("lookup") == 1


def test_identical_copies_of_a_synced_key_are_rejected_even_when_unchanged():
    dest, store = InMemoryDestination(), MemoryCheckpointStore()
    sync(contacts(3), dest, store)
    report = sync(pd.concat([contacts(3), contacts(1)], ignore_index=True), dest, store)
    # Both copies of user0 equal the checkpoint: no text was kept, so the key shows as its hash.
    assert report.rejected == 2 and all(r.key.startswith("#") for r in report.rejects)
    assert report.unchanged == 2 and report.pushed == 0


def test_email_keys_differing_only_in_case_or_whitespace_are_duplicates():
    dest, store = InMemoryDestination(), MemoryCheckpointStore()
    frame = contacts(3)
    frame.loc[3] = [" USER1@Example.com ", "Other", 99]
    report = sync(frame, dest, store)
    assert report.created == 2 and report.rejected == 2
    assert {r.key for r in report.rejects} == {"user1@example.com"}
    assert "duplicate primary key" in report.rejects[0].reason


def test_non_email_keys_stay_case_sensitive():
    dest = InMemoryDestination(lookup=False, match_field=None)
    frame = pd.DataFrame({"code": ["abc", "ABC"], "v": [1, 2]})
    report = sync(frame, dest, MemoryCheckpointStore(), primary_key="code")
    assert report.upserted == 2 and report.rejected == 0


def test_a_no_op_run_does_not_rewrite_the_checkpoint(tmp_path):
    dest, path = InMemoryDestination(), tmp_path / "c.parquet"
    sync(contacts(20), dest, FileCheckpointStore(path))
    written = path.stat().st_mtime_ns
    report = sync(contacts(20), dest, FileCheckpointStore(path))
    assert report.pushed == 0 and path.stat().st_mtime_ns == written
    frame = contacts(20)
    frame.loc[0, "score"] = -1
    sync(frame, dest, FileCheckpointStore(path))
    assert path.stat().st_mtime_ns != written


@pytest.mark.parametrize("upsert", [True, False])
def test_rows_without_a_match_value_are_rejected_not_sent(upsert):
    dest = InMemoryDestination(upsert=upsert)
    frame = contacts(3)
    frame["customer_id"] = [1, 2, 3]
    frame.loc[1, "email"] = None
    report = sync(frame, dest, MemoryCheckpointStore(), primary_key="customer_id", match_on="email")
    assert report.created == 2 and report.rejected == 1
    assert report.rejects[0].key == "2" and "match field 'email' is empty" in report.rejects[0].reason
    assert all(r.get("email") for r in dest.records.values())


def test_wire_values_converted_in_blocks_are_those_of_each_row(monkeypatch):
    # Batches (10 rows) straddle conversion blocks (7 rows), and only 2 blocks are kept: every record
    # must still carry its own row's values, and a second conversion of a block must give the same.
    from airflow_provider_retl.sync import push

    monkeypatch.setattr(push, "WIRE_BLOCK", 7)
    monkeypatch.setattr(push, "WIRE_BLOCKS_KEPT", 2)
    dest = InMemoryDestination(batch=10, concurrency=3)
    frame = contacts(53)
    frame.loc[5, "firstname"] = None
    report = sync(frame, dest, MemoryCheckpointStore())
    assert report.created == 53
    for i in range(53):
        record = dest.records[dest.by_match(f"user{i}@example.com")]
        assert record["score"] == i and record["firstname"] == (None if i == 5 else f"First{i}")


def test_a_row_refused_before_sending_is_a_reject_not_new_on_every_no_op_run():
    # A row local validation refuses is not checkpointed, so each run plans it again as new. The
    # summary counts it once, as rejected: a run with nothing to send reads "0 new" (it read
    # "1 new" on every no-op run of the demo). A changed row refused counts the same way.
    dest, store = InMemoryDestination(), MemoryCheckpointStore()
    frame = contacts(10)
    frame["customer_id"] = np.arange(10)
    frame.loc[3, "email"] = "not-an-email"
    first = sync(frame, dest, store, primary_key="customer_id")
    assert first.planned["new"] == 10 and first.created == 9 and first.rejected == 1
    assert first.rejected_planned == {"new": 1, "changed": 0} and first.rejects[0].kind == "new"
    assert "read 10 rows: 9 new, 0 changed, 0 removed, 0 unchanged, 1 rejected before sending" in first.summary()
    calls = dest.request_count
    again = sync(frame, dest, store, primary_key="customer_id")
    assert dest.request_count == calls and again.pushed == 0 and again.rejected == 1
    assert "read 10 rows: 0 new, 0 changed, 0 removed, 9 unchanged, 1 rejected before sending" in again.summary()
    changed = frame.copy()
    changed.loc[5, "email"] = "also bad"
    changed.loc[6, "score"] = -1
    third = sync(changed, dest, store, primary_key="customer_id")
    assert third.rejected_planned == {"new": 1, "changed": 1}
    assert "read 10 rows: 0 new, 1 changed, 0 removed, 7 unchanged, 2 rejected before sending" in third.summary()
    assert SyncReport.from_dict(third.to_dict()).summary() == third.summary()
