"""Mirror deletes the record of a removed key on every destination that can delete.

The real engine, each real hook and its emulator, the file checkpoint store: two rows are
synced in mirror mode, one is deleted from the source, the next run must remove that row's
record (HubSpot archives, Salesforce and Customer.io delete, Mailchimp archives, Zendesk
destroys with a ``destroy_many`` job) and keep the other. Zendesk used to keep the record and report it
"deleted" (its mirror unset fields by default, and with only identity fields synced unset
nothing at all): a green run that left a record no live row holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from airflow_provider_retl.hooks.zendesk import clear_job_gates
from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.testing.emulators import (
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
    start_emulator,
)


@dataclass
class Dest:
    """One mirror-capable destination: how to connect, what to sync, how to read live match values back."""

    emulator: str
    hook: str
    connection: Callable[[str], dict[str, Any]]
    config: dict[str, Any]
    live: Callable[[Any], set[str]]
    options: dict[str, Any] = field(default_factory=dict)
    #: Values per row: (match value, other value); the match value is what `live` reads back.
    values: Callable[[int], tuple[str, str]] = lambda i: (f"u{i}@example.com", f"Name {i}")


def _zendesk_conn(url: str) -> dict[str, Any]:
    return {
        "conn_type": "retl_zendesk",
        "host": url,
        "login": f"{ZENDESK_EMAIL}/token",
        "password": ZENDESK_API_TOKEN,
        # Zendesk's mirror unsets fields unless asked to delete (the documented default); this test is about deleting.
        "extra": {"rate_limit": 0, "job_poll_interval": 0.01, "mirror_delete": True},
    }


_ZENDESK_OPTIONS = {"rate_limit": None, "processing_seconds": 0.0, "api_tokens": {ZENDESK_EMAIL: ZENDESK_API_TOKEN}}

DESTS = {
    "customerio_people": Dest(
        "customerio",
        "airflow_provider_retl.hooks.customerio:CustomerIoHook",
        lambda url: {
            "conn_type": "retl_customerio",
            "host": url,
            "login": CUSTOMERIO_SITE_ID,
            "password": CUSTOMERIO_API_KEY,
            "extra": {"rate_limit": 0},
        },
        {"object": "people", "match_on": "id", "mapping": {"id": "m", "first_name": "v"}},
        lambda emu: {p.get("id") for p in emu.people()},
        {"rate_limit": None},
        lambda i: (f"person-{i}", f"First {i}"),
    ),
    "hubspot_contacts": Dest(
        "hubspot",
        "airflow_provider_retl.hooks.hubspot:HubSpotHook",
        lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": {"rate_limit": 0}},
        {"object": "contacts", "match_on": "email", "mapping": {"email": "m", "firstname": "v"}},
        lambda emu: {r["properties"].get("email") for r in emu.records("contacts")},
        {"rate_limit": None},
    ),
    "hubspot_companies": Dest(
        "hubspot",
        "airflow_provider_retl.hooks.hubspot:HubSpotHook",
        lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": {"rate_limit": 0}},
        {"object": "companies", "match_on": "domain", "mapping": {"domain": "m", "name": "v"}},
        lambda emu: {r["properties"].get("domain") for r in emu.records("companies")},
        {"rate_limit": None},
        lambda i: (f"d{i}.example.com", f"Company {i}"),
    ),
    "salesforce_contacts": Dest(
        "salesforce",
        "airflow_provider_retl.hooks.salesforce:SalesforceHook",
        lambda url: {
            "conn_type": "retl_salesforce",
            "host": url,
            "login": SALESFORCE_USERNAME,
            "password": SALESFORCE_PASSWORD,
            "extra": {
                "client_id": SALESFORCE_CLIENT_ID,
                "client_secret": SALESFORCE_CLIENT_SECRET,
                "security_token": SALESFORCE_SECURITY_TOKEN,
                "rate_limit": 0,
            },
        },
        {"object": "Contact", "match_on": "External_Id__c", "mapping": {"External_Id__c": "m", "LastName": "v"}},
        lambda emu: {r.get("External_Id__c") for r in emu.records("Contact")},
        {},
        lambda i: (f"ext-{i}", f"Last {i}"),
    ),
    "mailchimp_members": Dest(
        "mailchimp",
        "airflow_provider_retl.hooks.mailchimp:MailchimpHook",
        lambda url: {"conn_type": "retl_mailchimp", "host": url, "password": MAILCHIMP_API_KEY, "extra": {}},
        {"object": MAILCHIMP_LIST_ID, "match_on": "email_address", "mapping": {"email_address": "m"}},
        lambda emu: {r.get("email_address") for r in emu.members()},
        {},
        # Mailchimp checks that an address's domain resolves: example.com is refused like any fake domain.
        lambda i: (f"u{i}@acme.io", ""),
    ),
    "zendesk_users": Dest(
        "zendesk",
        "airflow_provider_retl.hooks.zendesk:ZendeskHook",
        _zendesk_conn,
        {"object": "users", "match_on": "email", "mapping": {"email": "m", "name": "v"}},
        lambda emu: {r.get("email") for r in emu.users()},
        _ZENDESK_OPTIONS,
    ),
    "zendesk_organizations": Dest(
        "zendesk",
        "airflow_provider_retl.hooks.zendesk:ZendeskHook",
        _zendesk_conn,
        {"object": "organizations", "match_on": "external_id", "mapping": {"external_id": "m", "name": "v"}},
        lambda emu: {r.get("external_id") for r in emu.organizations()},
        _ZENDESK_OPTIONS,
        lambda i: (f"org-{i}", f"Org {i}"),
    ),
}


@pytest.fixture(autouse=True)
def _fresh_job_gates():
    clear_job_gates()
    yield
    clear_job_gates()


def _hook(dest: Dest, conn_id: str) -> Any:
    module, _, name = dest.hook.partition(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return cls(conn_id, sleep=lambda s: None)


@pytest.mark.parametrize("name", sorted(DESTS))
def test_mirror_deletes_the_record_of_a_removed_key(name, tmp_path, monkeypatch):
    dest = DESTS[name]
    conn_id = f"mirror_all_{name}"
    with start_emulator(dest.emulator, **dest.options) as running:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(dest.connection(running.url)))
        store = FileCheckpointStore(tmp_path / "ck.parquet")
        config = SyncConfig(
            sync_id=f"mirror_all_{name}",
            primary_key="k",
            mode="mirror",
            commit_interval=0,
            **dest.config,
        )
        rows = {k: dest.values(k) for k in (1, 2)}

        def run() -> Any:
            frame = pd.DataFrame([(k, m, v) for k, (m, v) in rows.items()], columns=["k", "m", "v"])
            with _hook(dest, conn_id) as hook:
                return run_sync([frame], hook, store, config)

        first = run()
        assert dest.live(running.emulator) == {rows[1][0], rows[2][0]}, first
        removed = rows.pop(1)
        report = run()
        live = dest.live(running.emulator)
        assert removed[0] not in live, f"{name}: mirror left the removed key's record: {report}"
        assert live == {rows[2][0]}
        assert report.deleted == 1 and report.rejected == 0
