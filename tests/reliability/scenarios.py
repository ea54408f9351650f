"""The destinations the crash suites kill syncs against: one or more scenarios per destination hook
(native upsert, lookup-then-create, bulk jobs, event streams, a signed webhook)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from airflow_provider_retl.testing.emulators import (
    BRAZE_API_KEY,
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    DEFAULT_TOKEN,
    MAILCHIMP_API_KEY,
    MAILCHIMP_LIST_ID,
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    ZENDESK_API_TOKEN,
    ZENDESK_EMAIL,
)

from .crash_support import Scenario

EXTRA = {"rate_limit": 0, "batch_size": 20}


def _versions(make, n1: int = 120, removed: range = range(100, 120), changed: range = range(0, 30), new: int = 40):
    v1 = [make(i, "a") for i in range(n1)]
    v2 = [make(i, "b" if i in changed else "a") for i in range(n1) if i not in removed]
    v2 += [make(i, "a") for i in range(n1, n1 + new)]
    return v1, v2


def _group(items) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for key, dest_id, fields in items:
        found[key].append((dest_id, fields))
    return dict(found)


def hubspot_upsert() -> Scenario:
    """Contacts: native batch upsert by email, mirror mode (deletes too)."""
    v1, v2 = _versions(lambda i, ver: {"email": f"c{i}@example.com", "firstname": f"F{i}{ver}", "lastname": f"L{i}"})
    return Scenario(
        name="hubspot_upsert",
        emulator="hubspot",
        emulator_options={"rate_limit": None},
        hook="hubspot",
        connection=lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": EXTRA},
        config={"sync_id": "crash-contacts", "object": "contacts", "primary_key": "email", "mode": "mirror"},
        key="email",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _group(
            (r["properties"]["email"], r["id"], r["properties"]) for r in emu.records("contacts")
        ),
    )


def hubspot_lookup() -> Scenario:
    """Companies matched on their (non-unique) domain: search lookup, then update or create; mirror."""
    v1, v2 = _versions(lambda i, ver: {"domain": f"d{i}.example.com", "name": f"N{i}{ver}", "city": f"C{i}"})
    return Scenario(
        name="hubspot_lookup",
        emulator="hubspot",
        emulator_options={"rate_limit": None},
        hook="hubspot",
        connection=lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": EXTRA},
        config={"sync_id": "crash-companies", "object": "companies", "primary_key": "domain", "mode": "mirror",
                "match_on": "domain"},
        key="domain",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _group(
            (r["properties"]["domain"], r["id"], r["properties"]) for r in emu.records("companies")
        ),
    )


def _event_versions(person: str):
    def make(i: int, ver: str) -> dict[str, Any]:
        return {"event_key": f"e{i}", person: f"p{i}", "name": "ordered", "amount": i}

    # Events are only ever inserted: version 2 adds events and changes none.
    return _versions(make, removed=range(0), changed=range(0), new=60)


def _customerio_read_back(emu: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Processed events by key; each must have happened to its row's person (``e<i>`` -> ``p<i>``)."""
    events = emu.events()  # processed only
    wrong = [
        (e["attributes"]["event_key"], e["identifiers"])
        for e in events
        if e["identifiers"] != {"id": "p" + e["attributes"]["event_key"][1:]}
    ]
    assert not wrong, f"events attached to the wrong person: {wrong[:5]}"
    return _group((e["attributes"]["event_key"], e["id"], e["attributes"]) for e in events)


def customerio_events() -> Scenario:
    """Customer.io events: ULID dedupe ids, so every event must be processed exactly once, on its person.

    The person is the ``customer`` column (the connection's ``person_field`` extra, so the
    operator-run crash suite uses it too), never the ``event_key`` primary key.
    """
    v1, v2 = _event_versions("customer")
    return Scenario(
        name="customerio_events",
        emulator="customerio",
        emulator_options={"rate_limit": None},
        hook="customerio",
        connection=lambda url: {
            "conn_type": "retl_customerio",
            "host": url,
            "login": CUSTOMERIO_SITE_ID,
            "password": CUSTOMERIO_API_KEY,
            "extra": {**EXTRA, "person_field": "customer"},
        },
        config={"sync_id": "crash-cio-events", "object": "events", "primary_key": "event_key", "mode": "insert"},
        key="event_key",
        v1=v1,
        v2=v2,
        events=True,
        read_back=_customerio_read_back,
    )


def braze_events() -> Scenario:
    """Braze events: no dedupe id. At most once; an event whose answer was lost is reported in doubt."""
    v1, v2 = _event_versions("external_id")
    return Scenario(
        name="braze_events",
        emulator="braze",
        emulator_options={"rate_limit": None, "export_rate_limit": None},
        hook="braze",
        connection=lambda url: {"conn_type": "retl_braze", "host": url, "password": BRAZE_API_KEY, "extra": EXTRA},
        config={"sync_id": "crash-braze-events", "object": "events", "primary_key": "event_key", "mode": "insert"},
        key="event_key",
        v1=v1,
        v2=v2,
        events=True,
        at_most_once=True,
        read_back=lambda emu: _group(
            (e["properties"]["event_key"], e["name"], e["properties"]) for e in emu.events()  # every delivery
        ),
    )


# Zendesk: deleting a user is destructive, so the hook's mirror unsets fields unless told to
# delete; the crash checks need the removed keys gone, hence ``mirror_delete`` (a soft delete).
ZENDESK_EXTRA = {**EXTRA, "job_poll_interval": 0.01, "mirror_delete": True}
ZENDESK_OPTIONS = {"rate_limit": None, "processing_seconds": 0.0, "api_tokens": {ZENDESK_EMAIL: ZENDESK_API_TOKEN}}


def _zendesk_connection(url: str) -> dict[str, Any]:
    return {
        "conn_type": "retl_zendesk",
        "host": url,
        "login": f"{ZENDESK_EMAIL}/token",
        "password": ZENDESK_API_TOKEN,
        "extra": ZENDESK_EXTRA,
    }


def _zendesk_users(emu: Any, key: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    # Active users only: a destroyed (soft-deleted) user is gone for the API.
    return _group((r[key], str(r["id"]), r) for r in emu.users())


def zendesk_users_external_id() -> Scenario:
    """Zendesk users: create_or_update_many jobs matched on external_id; mirror destroys (destroy_many)."""
    v1, v2 = _versions(lambda i, ver: {"external_id": f"ext-{i}", "email": f"u{i}@example.com", "name": f"N{i}{ver}"})
    return Scenario(
        name="zendesk_users_external_id",
        emulator="zendesk",
        emulator_options=ZENDESK_OPTIONS,
        hook="zendesk",
        connection=_zendesk_connection,
        config={
            "sync_id": "crash-zd-users-ext",
            "object": "users",
            "primary_key": "external_id",
            "mode": "mirror",
            "match_on": "external_id",
        },
        key="external_id",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _zendesk_users(emu, "external_id"),
    )


def zendesk_users_email() -> Scenario:
    """Zendesk users: create_or_update_many jobs matched on email; mirror destroys (destroy_many)."""
    v1, v2 = _versions(lambda i, ver: {"email": f"u{i}@example.com", "name": f"N{i}{ver}"})
    return Scenario(
        name="zendesk_users_email",
        emulator="zendesk",
        emulator_options=ZENDESK_OPTIONS,
        hook="zendesk",
        connection=_zendesk_connection,
        config={
            "sync_id": "crash-zd-users-email",
            "object": "users",
            "primary_key": "email",
            "mode": "mirror",
            "match_on": "email",
        },
        key="email",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _zendesk_users(emu, "email"),
    )


def mailchimp_members() -> Scenario:
    """Mailchimp audience members: batch upsert (update_existing) by address; mirror archives."""
    # Mailchimp refuses addresses at domains that do not resolve (example.com among them).
    v1, v2 = _versions(lambda i, ver: {"email_address": f"m{i}@acme.io", "FNAME": f"F{i}{ver}", "LNAME": f"L{i}"})
    return Scenario(
        name="mailchimp_members",
        emulator="mailchimp",
        emulator_options={},
        hook="mailchimp",
        connection=lambda url: {
            "conn_type": "retl_mailchimp",
            "host": url,
            "password": MAILCHIMP_API_KEY,
            "extra": EXTRA,
        },
        config={
            "sync_id": "crash-mc-members",
            "object": MAILCHIMP_LIST_ID,
            "primary_key": "email_address",
            "mode": "mirror",
            "match_on": "email_address",
        },
        key="email_address",
        v1=v1,
        v2=v2,
        # Archived members are what mirror leaves of a removed key: not live, so not read back.
        read_back=lambda emu: _group(
            (m["email_address"], m["id"], {"email_address": m["email_address"], **m["merge_fields"]})
            for m in emu.members(MAILCHIMP_LIST_ID)
        ),
    )


def salesforce_contacts() -> Scenario:
    """Salesforce Contacts: sObject Collections upsert by the External_Id__c field; mirror deletes."""
    v1, v2 = _versions(lambda i, ver: {"External_Id__c": f"ext-{i}", "LastName": f"L{i}{ver}", "FirstName": f"F{i}"})
    return Scenario(
        name="salesforce_contacts",
        emulator="salesforce",
        emulator_options={},
        hook="salesforce",
        connection=lambda url: {
            "conn_type": "retl_salesforce",
            "host": url,
            "login": SALESFORCE_USERNAME,
            "password": SALESFORCE_PASSWORD,
            "extra": {
                **EXTRA,
                "client_id": SALESFORCE_CLIENT_ID,
                "client_secret": SALESFORCE_CLIENT_SECRET,
                "security_token": SALESFORCE_SECURITY_TOKEN,
            },
        },
        config={
            "sync_id": "crash-sf-contacts",
            "object": "Contact",
            "primary_key": "External_Id__c",
            "mode": "mirror",
            "match_on": "External_Id__c",
        },
        key="External_Id__c",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _group((r["External_Id__c"], r["Id"], r) for r in emu.records("Contact")),
    )


WEBHOOK_SECRET = "crash-webhook-secret"


def webhook_upsert() -> Scenario:
    """Webhook: signed upsert batches with a content-hash Idempotency-Key; mirror deletes by the receiver's id."""
    v1, v2 = _versions(lambda i, ver: {"key": f"k{i}", "name": f"N{i}{ver}", "n": i})
    return Scenario(
        name="webhook_upsert",
        emulator="webhook",
        emulator_options={"secret": WEBHOOK_SECRET},
        hook="webhook",
        connection=lambda url: {
            "conn_type": "retl_webhook",
            "host": f"{url}/hooks/crash",
            "password": WEBHOOK_SECRET,
            "extra": EXTRA,
        },
        config={"sync_id": "crash-webhook", "object": "items", "primary_key": "key", "mode": "mirror"},
        key="key",
        v1=v1,
        v2=v2,
        hook_attrs={"sync_id": "crash-webhook"},  # as the operator sets it
        # The receiver keeps one record per key: a duplicate here would be a second key for a row.
        read_back=lambda emu: _group((k, emu.record_id(k, "items"), f) for k, f in emu.records("items").items()),
    )


#: Every scenario, by name: the crash, fault and conformance suites run each of them.
ALL = {
    factory.__name__: factory
    for factory in (
        hubspot_upsert,
        hubspot_lookup,
        customerio_events,
        braze_events,
        zendesk_users_external_id,
        zendesk_users_email,
        mailchimp_members,
        salesforce_contacts,
        webhook_upsert,
    )
}
