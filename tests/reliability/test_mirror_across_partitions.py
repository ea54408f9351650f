"""Mirror keeps deleting, and creates nothing twice, across a change of partition layout.

After 1 -> n partitions each slice starts from an empty checkpoint of its own: the engine asks
the other layouts' checkpoints (``run_sync(..., siblings=)``) for the keys of its slice. A key
one of them knows that left the source is deleted; a live key it knows keeps its record's id
(updated by id: no lookup, no create). Real engine, HubSpot hook and emulator over HTTP
(companies: search lookup on the non-unique domain; contacts: native upsert by email).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync

OBJECTS = {
    "companies": {"primary_key": "k", "match_on": "domain", "mapping": {"domain": "m", "name": "v"}},
    "contacts": {"primary_key": "k", "match_on": "email", "mapping": {"email": "m", "firstname": "v"}},
}


def match(obj: str, i: int) -> str:
    return f"d{i}.example.com" if obj == "companies" else f"u{i}@example.com"


def rows(obj: str, ids: list[int], changed: int | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"k{i}", match(obj, i), "changed" if i == changed else f"v{i}") for i in ids], columns=["k", "m", "v"]
    )


def sync(hook, obj, store, frame, partition=None, siblings=None, **kw):
    config = SyncConfig(
        sync_id="mp", object=obj, mode="mirror", commit_interval=0, partition=partition, **OBJECTS[obj], **kw
    )
    return run_sync([frame], hook, store, config, siblings=siblings)


def live(hubspot, obj: str) -> dict[str, list[str]]:
    """Live records: match value -> the values of every record holding it (duplicates show as two)."""
    field, value = ("domain", "name") if obj == "companies" else ("email", "firstname")
    found: dict[str, list[str]] = {}
    for r in hubspot.emulator.records(obj, include_archived=True):
        if not r["archived"]:
            found.setdefault(r["properties"][field], []).append(r["properties"][value])
    return found


def partition_of(key: str, n: int) -> int:
    return int(fp.key_hashes(np.array([key], dtype=object))[0] % np.uint64(n))


@pytest.mark.parametrize("obj", ["companies", "contacts"])
def test_deletes_and_ids_carry_over_from_one_to_two_partitions(hook, hubspot, obj):
    whole = MemoryCheckpointStore()
    sync(hook, obj, whole, rows(obj, list(range(8))))
    assert len(live(hubspot, obj)) == 8
    # Keys of both slices leave the source; one live row changes.
    gone = [0, 1, 2]
    assert {partition_of(f"k{i}", 2) for i in gone} == {0, 1}
    kept = [i for i in range(8) if i not in gone]
    before = len(hubspot.emulator.requests)
    halves = [MemoryCheckpointStore(), MemoryCheckpointStore()]
    reports = [
        sync(hook, obj, halves[i], rows(obj, kept, changed=5), partition=(i, 2), siblings=lambda: [whole.load()])
        for i in range(2)
    ]
    assert sum(r.deleted for r in reports) == len(gone)
    assert live(hubspot, obj) == {match(obj, i): ["changed" if i == 5 else f"v{i}"] for i in kept}
    # Records the other layout knew are updated by id: no search, no create, no upsert by email.
    paths = [r.path for r in hubspot.emulator.requests[before:]]
    assert not [p for p in paths if "search" in p or "create" in p or "upsert" in p], paths
    # Each slice's checkpoint now holds its keys with the records' ids: the next runs are no-ops.
    again = [
        sync(hook, obj, halves[i], rows(obj, kept, changed=5), partition=(i, 2), siblings=lambda: [whole.load()])
        for i in range(2)
    ]
    assert [len(halves[i].load()) for i in range(2)] == [
        sum(partition_of(f"k{k}", 2) == i for k in kept) for i in (0, 1)
    ]
    assert all(not r.rejects for r in again), [r.rejects for r in again]
    # The layout ran: the other layout's checkpoint is stale now and deletes nothing again.
    assert sum(r.deleted for r in again) == 0
    assert live(hubspot, obj) == {match(obj, i): ["changed" if i == 5 else f"v{i}"] for i in kept}


def test_a_sibling_of_another_destination_deletes_nothing(hook, hubspot):
    other = MemoryCheckpointStore()
    sync(hook, "companies", other, rows("companies", [0, 1, 2]), destination_identity="another-account")
    assert len(live(hubspot, "companies")) == 3
    for i in range(2):
        report = sync(
            hook,
            "companies",
            MemoryCheckpointStore(),
            rows("companies", [1, 2]),
            partition=(i, 2),
            siblings=lambda: [other.load()],
        )
        assert report.deleted == 0
    # Its ids name records of another account: k0's record (here, by chance) stays.
    assert set(live(hubspot, "companies")) == {match("companies", i) for i in range(3)}


def test_a_rekeyed_row_keeps_its_record_across_the_partition_change(hook, hubspot):
    whole = MemoryCheckpointStore()
    sync(hook, "companies", whole, rows("companies", [0, 1, 2, 3]))
    # k0 leaves; a new key in the SAME slice carries its domain: the lookup finds k0's record,
    # which must not then be deleted as k0's.
    slice_of_k0 = partition_of("k0", 2)
    new_key = next(f"n{j}" for j in range(100) if partition_of(f"n{j}", 2) == slice_of_k0)
    frame = pd.concat(
        [rows("companies", [1, 2, 3]), pd.DataFrame([(new_key, match("companies", 0), "v0")], columns=["k", "m", "v"])]
    )
    reports = [
        sync(hook, "companies", MemoryCheckpointStore(), frame, partition=(i, 2), siblings=lambda: [whole.load()])
        for i in range(2)
    ]
    assert sum(r.deleted for r in reports) == 0
    assert live(hubspot, "companies") == {match("companies", i): [f"v{i}"] for i in range(4)}


def test_an_empty_source_after_the_partition_change_deletes_nothing(hook, hubspot):
    from airflow_provider_retl.sync.errors import EmptySourceError

    whole = MemoryCheckpointStore()
    sync(hook, "companies", whole, rows("companies", [0, 1, 2, 3]))
    # A broken upstream table: every slice is empty. The keys the old layout knows must not
    # all be deleted (the empty-source guard covers them as it covers a slice's own).
    for i in range(2):
        with pytest.raises(EmptySourceError):
            sync(
                hook,
                "companies",
                MemoryCheckpointStore(),
                rows("companies", []),
                partition=(i, 2),
                siblings=lambda: [whole.load()],
            )
    assert len(live(hubspot, "companies")) == 4
