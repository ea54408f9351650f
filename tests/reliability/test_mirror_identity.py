"""Mirror never deletes a record that a live source row maps to; two live keys never share a record.

The real engine, the HubSpot hook and its emulator: companies matched on their non-unique
``domain`` (search lookup, then update or create), in mirror mode, over the file and the
in-memory checkpoint stores. The keys are customer ids; the domain is only the match value,
so a re-keyed row (new id, same domain) is looked up onto the company its old key created.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_provider_retl.sync import fingerprint as fp
from airflow_provider_retl.sync.checkpoint import Checkpoint, FileCheckpointStore, MemoryCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.diff import ReplacedIdentityError
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.plan import SKIP_REMOVED_ADOPTED
from airflow_provider_retl.sync.push import MATCH_COLLISION
from airflow_provider_retl.testing.emulators import start_emulator


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    return FileCheckpointStore(tmp_path / "ck.parquet") if request.param == "file" else MemoryCheckpointStore()


def sync(hook, store, rows, **kw):
    config = SyncConfig(
        **{
            "sync_id": "companies",
            "object": "companies",
            "primary_key": "customer_id",
            "match_on": "domain",
            "mapping": {"domain": "domain", "name": "name"},
            "mode": "mirror",
            "commit_interval": 0,
            "max_reject_ratio": 1.0,
            **kw,
        }
    )
    return run_sync([pd.DataFrame(rows, columns=["customer_id", "domain", "name"])], hook, store, config)


def companies(hubspot, archived: bool = False) -> dict[str, dict]:
    """Live (or archived) companies: id -> properties."""
    return {
        r["id"]: r["properties"]
        for r in hubspot.emulator.records("companies", include_archived=True)
        if r["archived"] == archived
    }


def by_domain(hubspot) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for props in companies(hubspot).values():
        found.setdefault(props["domain"], []).append(props["name"])
    return found


def base_rows() -> list[tuple[str, str, str]]:
    return [(f"c{i}", f"d{i}.example.com", f"Co {i}") for i in range(5)]


def collision_rejects(report) -> list:
    return [r for r in report.rejects if r.code == MATCH_COLLISION]


def test_a_rekeyed_row_keeps_its_record(hook, hubspot, store):
    sync(hook, store, base_rows())
    [(company_id, props)] = [(i, p) for i, p in companies(hubspot).items() if p["domain"] == "d0.example.com"]
    rekeyed = [("c0-new", "d0.example.com", "Co 0 renamed"), *base_rows()[1:]]
    report = sync(hook, store, rekeyed)
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
    assert report.skipped.get(SKIP_REMOVED_ADOPTED) == 1
    assert companies(hubspot)[company_id]["name"] == "Co 0 renamed"  # looked up onto the same company
    # Later runs stay consistent: unchanged now, and removing the new key archives that company.
    report = sync(hook, store, rekeyed)
    assert report.unchanged == 5 and report.pushed == 0
    report = sync(hook, store, base_rows()[1:])
    assert report.deleted == 1 and list(companies(hubspot, archived=True)) == [company_id]


def test_two_new_keys_on_one_match_value_are_a_collision_naming_both(hook, hubspot, store):
    rows = [*base_rows(), ("c9", "d0.example.com", "Other 0")]
    report = sync(hook, store, rows)
    rejects = collision_rejects(report)
    assert sorted(r.key for r in rejects) == ["c0", "c9"]
    for reject in rejects:
        assert "'c0'" in reject.reason and "'c9'" in reject.reason and "collision" in reject.reason
    assert "d0.example.com" not in by_domain(hubspot)  # neither wins: no silent merge
    assert len(companies(hubspot)) == 4


def test_a_lookup_onto_a_record_held_by_a_live_key_is_rejected_the_holder_keeps_it(hook, hubspot, store):
    sync(hook, store, base_rows())
    before = companies(hubspot)
    report = sync(hook, store, [*base_rows(), ("c9", "d0.example.com", "Intruder")])
    [reject] = collision_rejects(report)
    assert reject.key == "c9" and "'c0'" in reject.reason
    assert companies(hubspot) == before  # the holder's record was not overwritten by the intruder
    # The holder leaves while the other key stays: that live key's lookup finds the company, so it
    # takes it over, and mirror does not archive it.
    report = sync(hook, store, [*base_rows()[1:], ("c9", "d0.example.com", "Intruder")])
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
    assert by_domain(hubspot)["d0.example.com"] == ["Intruder"]


def test_a_revived_key_does_not_take_the_record_of_the_key_that_replaced_it(hook, hubspot, store):
    """F4: c0 removed, c0-new adopts its company, then c0 comes back with the same domain."""
    sync(hook, store, base_rows())
    rekeyed = [("c0-new", "d0.example.com", "New owner"), *base_rows()[1:]]
    sync(hook, store, rekeyed)
    report = sync(hook, store, [*rekeyed, ("c0", "d0.example.com", "Revived")])
    [reject] = collision_rejects(report)
    assert reject.key == "c0" and "'c0-new'" in reject.reason
    assert by_domain(hubspot)["d0.example.com"] == ["New owner"]
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
    # The replacing key leaves: now the revived key is the only live row on that domain.
    report = sync(hook, store, [("c0", "d0.example.com", "Revived"), *base_rows()[1:]])
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
    assert by_domain(hubspot)["d0.example.com"] == ["Revived"]


def test_two_rows_swapping_keys_end_with_the_source_state(hook, hubspot, store):
    """F3: c0 and c1 swap domains (and names): mirror deletes nothing and the destination equals the source."""
    sync(hook, store, base_rows())
    swapped = [("c0", "d1.example.com", "Co 1"), ("c1", "d0.example.com", "Co 0"), *base_rows()[2:]]
    report = sync(hook, store, swapped)
    assert report.deleted == 0 and report.rejected == 0 and companies(hubspot, archived=True) == {}
    assert by_domain(hubspot) == {d: [n] for _, d, n in base_rows()}
    assert sync(hook, store, swapped).pushed == 0


def test_a_replaced_identity_stops_before_sending(hook, hubspot, store):
    rows = [(f"c{i}", f"d{i}.example.com", f"Co {i}") for i in range(20)]
    sync(hook, store, rows)
    before, requests = companies(hubspot), hook.request_count
    retyped = [(f"{i}.00", d, n) for i, (_, d, n) in enumerate(rows)]  # the key column became numeric(12,2)
    with pytest.raises(ReplacedIdentityError, match="allow_identity_change=True") as caught:
        sync(hook, store, retyped)
    assert "remove 20 of the 20" in str(caught.value)
    assert companies(hubspot) == before and companies(hubspot, archived=True) == {}
    assert hook.request_count == requests  # not even a lookup
    # On purpose: the new keys are looked up onto the same companies, which are kept, not archived.
    report = sync(hook, store, retyped, allow_identity_change=True)
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
    assert sorted(p["domain"] for p in companies(hubspot).values()) == sorted(d for _, d, _ in rows)


# ---------------------------------------------------------------------- Salesforce: lookup, then create
@pytest.fixture(scope="module")
def salesforce():
    with start_emulator("salesforce", bulk_processing_seconds=0.05) as running:
        yield running


@pytest.fixture
def sf_hook(salesforce, monkeypatch):
    from airflow_provider_retl.hooks.salesforce import SalesforceHook
    from airflow_provider_retl.testing.emulators import (
        SALESFORCE_CLIENT_ID,
        SALESFORCE_CLIENT_SECRET,
        SALESFORCE_PASSWORD,
        SALESFORCE_SECURITY_TOKEN,
        SALESFORCE_USERNAME,
    )

    salesforce.emulator.reset_state()
    extra = {
        "client_id": SALESFORCE_CLIENT_ID,
        "client_secret": SALESFORCE_CLIENT_SECRET,
        "security_token": SALESFORCE_SECURITY_TOKEN,
        "rate_limit": 0,
    }
    doc = {
        "conn_type": "retl_salesforce",
        "host": salesforce.url,
        "login": SALESFORCE_USERNAME,
        "password": SALESFORCE_PASSWORD,
        "extra": extra,
    }
    monkeypatch.setenv("AIRFLOW_CONN_MIRROR_IDENTITY_SF", json.dumps(doc))
    return SalesforceHook("mirror_identity_sf", sleep=lambda s: None)


def sf_sync(hook, store, rows, **kw):
    config = SyncConfig(
        sync_id="contacts",
        object="Contact",
        primary_key="customer_id",
        match_on="Email",
        mapping={"Email": "email", "LastName": "last"},
        mode="mirror",
        commit_interval=0,
        max_reject_ratio=1.0,
        **kw,
    )
    return run_sync([pd.DataFrame(rows, columns=["customer_id", "email", "last"])], hook, store, config)


def contacts(salesforce, deleted: bool = False) -> dict[str, dict]:
    return {
        r["Id"]: r
        for r in salesforce.emulator.records("Contact", include_deleted=True)
        if bool(r.get("IsDeleted")) == deleted
    }


def test_salesforce_rekeyed_row_keeps_its_contact_and_shared_emails_collide(sf_hook, salesforce, store):
    rows = [(f"c{i}", f"p{i}@example.com", f"L{i}") for i in range(4)]
    sf_sync(sf_hook, store, rows)
    [contact_id] = [i for i, r in contacts(salesforce).items() if r["Email"] == "p0@example.com"]
    rekeyed = [("c0-new", "P0@example.com", "L0 renamed"), *rows[1:]]  # emails match case-insensitively
    report = sf_sync(sf_hook, store, rekeyed)
    assert report.deleted == 0 and contacts(salesforce, deleted=True) == {}
    assert contacts(salesforce)[contact_id]["LastName"] == "L0 renamed"
    # A new key on an email another live key holds: rejected, the holder's contact untouched.
    report = sf_sync(sf_hook, store, [*rekeyed, ("c9", "p1@example.com", "Intruder")])
    [reject] = collision_rejects(report)
    assert reject.key == "c9" and "'c1'" in reject.reason
    assert sorted(r["LastName"] for r in contacts(salesforce).values()) == ["L0 renamed", "L1", "L2", "L3"]


def test_swapped_unique_emails_move_the_records_with_the_email_not_the_key(hook, hubspot, store):
    """F3 where the match field is unique (HubSpot contact emails): updating by the old ids collides."""
    config = {"object": "contacts", "match_on": "email", "mapping": {"email": "domain", "firstname": "name"}}
    sync(hook, store, [("k1", "a@example.com", "Ann"), ("k2", "b@example.com", "Bob")], **config)
    ids = {r["properties"]["email"]: r["id"] for r in hubspot.emulator.records("contacts")}
    swapped = [("k1", "b@example.com", "Bob"), ("k2", "a@example.com", "Ann")]
    report = sync(hook, store, swapped, **config)
    assert report.rejected == 0 and report.updated == 2 and report.deleted == 0
    assert sync(hook, store, swapped, **config).pushed == 0  # the checkpoint now has k1 -> b's record
    # k1 leaves: the record its email is on (b's) is archived, not the one k2 holds now.
    report = sync(hook, store, swapped[1:], **config)
    archived = [r for r in hubspot.emulator.records("contacts", include_archived=True) if r["archived"]]
    assert report.deleted == 1 and [r["id"] for r in archived] == [ids["b@example.com"]]
    assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["a@example.com"]


def test_two_live_keys_holding_one_id_in_the_checkpoint_do_not_update_it(hook, hubspot, store):
    """A checkpoint where two live keys hold one id (left by an older version): updates by that id are collisions."""
    sync(hook, store, base_rows())
    loaded = store.load()
    c0, c1 = (int(h) for h in fp.key_hashes(np.array(["c0", "c1"], dtype=object)))
    positions = {int(k): i for i, k in enumerate(loaded.key_hashes)}
    ids = loaded.dest_ids.copy()
    shared_id, orphan_id = ids[positions[c0]], ids[positions[c1]]
    ids[positions[c1]] = shared_id
    store.finalize(
        Checkpoint(loaded.target_fingerprint, loaded.payload_fingerprint, loaded.key_hashes, loaded.row_hashes, ids)
    )
    before = companies(hubspot)
    changed = [("c0", "d0.example.com", "Zero v2"), ("c1", "d1.example.com", "One v2"), *base_rows()[2:]]
    report = sync(hook, store, changed)
    rejects = collision_rejects(report)
    assert sorted(r.key for r in rejects) == ["c0", "c1"]
    assert {r.key: r.reason for r in rejects}["c0"].count("'c1'") == 1
    assert companies(hubspot)[shared_id] == before[shared_id] and companies(hubspot)[orphan_id] == before[orphan_id]
    assert report.deleted == 0 and companies(hubspot, archived=True) == {}
