"""The wire against the vendors' own API documents.

For each destination with a published OpenAPI document, real syncs run through the engine with
the real hook against its emulator (served behind an ``ExchangeRecorder``): a first sync that
creates, a second one with updates, mirror deletes, lookups, event streams where the
destination has them, rows the API rejects, and error answers (401 wrong credentials, 404, a
429 injected by the emulator's faults). Every recorded request is then validated with
openapi-core against the document that has its path, and every response too.

The test fails on any request violation, on any response violation not in
``vendor_allowlist.ALLOWED``, on an allow-list entry that no longer matches anything, and when
an expected route was never recorded (an empty recording cannot pass).

The documents are read from the shared vendor-specs folder (``$RETL_VENDOR_SPECS``, else
``../shared/vendor-specs`` next to the repository); they are never copied into it. Outside CI a
missing folder skips; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pandas as pd
import pytest

from airflow_provider_retl.sync.checkpoint import FileCheckpointStore
from airflow_provider_retl.sync.config import SyncConfig
from airflow_provider_retl.sync.engine import run_sync
from airflow_provider_retl.sync.errors import FatalSyncError, SyncError
from airflow_provider_retl.testing.emulators import (
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    DEFAULT_TOKEN,
    MAILCHIMP_API_KEY,
    MAILCHIMP_LIST_ID,
    ZENDESK_API_TOKEN,
    ZENDESK_EMAIL,
    RunningEmulator,
    custom_object_type,
)

from . import wire
from .vendor_allowlist import ALLOWED

#: (tmp dir, monkeypatch, problems) -> the recorded exchanges; a driver appends to ``problems``
#: what it finds wrong on the wire that no document can tell (reported with the violations).
Driver = Callable[[Path, pytest.MonkeyPatch, list[str]], list[wire.Exchange]]


def no_sleep(seconds: float) -> None:
    """Retries (after a 429's Retry-After) run at once."""


@pytest.fixture(scope="module", autouse=True)
def vendor_specs() -> Path:
    try:
        return wire.specs_dir()
    except wire.SpecsMissingError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"vendor documents missing in CI: {exc}")
        pytest.skip(str(exc))


def sync(hook: Any, store: Path, rows: list[dict[str, Any]], **config: Any) -> Any:
    """One run of the real engine (no Airflow), committing after every batch."""
    cfg = SyncConfig(**{"commit_interval": 0, "max_reject_ratio": 1.0, **config})
    return run_sync([pd.DataFrame(rows)], hook, FileCheckpointStore(store), cfg)


def connect(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_type: str, host: str, **fields: Any) -> str:
    extra = {"rate_limit": 0, **fields.pop("extra", {})}
    doc = {"conn_type": conn_type, "host": host, **fields, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))
    return conn_id


def rejected_keys(report: Any) -> set[str]:
    return {str(r.key) for r in report.rejects}


def statuses(recorder: wire.ExchangeRecorder) -> set[int]:
    return {e.status for e in recorder.exchanges}


def seen(recorder: wire.ExchangeRecorder) -> list[tuple[str, int]]:
    """(route, status) of every recorded exchange, for assertion messages."""
    return [(e.route, e.status) for e in recorder.exchanges]


class Recorded:
    """A recorded emulator that is stopped at the end of the driver."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.running: RunningEmulator
        self.running, self.recorder = wire.start_recorded(kind, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.stop()


# --------------------------------------------------------------------------------------- HubSpot


def drive_hubspot(tmp: Path, monkeypatch: pytest.MonkeyPatch, problems: list[str]) -> list[wire.Exchange]:
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    with Recorded("hubspot", rate_limit=None) as rec:
        emu = rec.running.emulator
        emu.add_object_type(
            custom_object_type(
                "p_cars",
                [
                    {"name": "vin", "has_unique_value": True},
                    "model",
                    {"name": "year", "type": "number"},
                    {"name": "electric", "type": "bool"},
                ],
                "2-1234567",
            )
        )
        conn = connect(monkeypatch, "wire_hubspot", "retl_hubspot", rec.running.url, password=DEFAULT_TOKEN)
        with HubSpotHook(conn, sleep=no_sleep) as hook:
            # Contacts: batch upsert by email, typed values (numbers, booleans), mirror deletes.
            def contact(i: int, ver: str) -> dict[str, Any]:
                # zip typed as an integer, as a warehouse column often is.
                return {"email": f"c{i}@example.com", "firstname": f"F{i}{ver}", "lastname": f"L{i}", "zip": 75000 + i}

            v1 = [contact(i, "a") for i in range(12)]
            # A wrong enumeration value is refused by the API (per-record error), not by the hook.
            v1.append(
                {"email": "bad@example.com", "firstname": "B", "lastname": "B", "zip": 1, "lifecyclestage": "astronaut"}
            )
            first = sync(
                hook,
                tmp / "contacts.parquet",
                v1,
                sync_id="w-contacts",
                object="contacts",
                primary_key="email",
                mode="mirror",
            )
            assert first.created >= 12 and "bad@example.com" in rejected_keys(first), first.rejects
            v2 = [contact(i, "b" if i < 4 else "a") for i in range(8)]
            second = sync(
                hook,
                tmp / "contacts.parquet",
                v2,
                sync_id="w-contacts",
                object="contacts",
                primary_key="email",
                mode="mirror",
            )
            assert second.deleted == 4 and second.updated + second.upserted >= 4, second

            # Companies: matched on the non-unique domain (search lookup), then create / update.
            def company(i: int, ver: str) -> dict[str, Any]:
                return {"domain": f"d{i}.example.com", "name": f"N{i}{ver}", "numberofemployees": 10 + i}

            v1 = [company(i, "a") for i in range(6)]
            sync(
                hook,
                tmp / "companies.parquet",
                v1,
                sync_id="w-companies",
                object="companies",
                primary_key="domain",
                match_on="domain",
                mode="mirror",
            )
            v2 = [company(i, "b") for i in range(5)]
            report = sync(
                hook,
                tmp / "companies.parquet",
                v2,
                sync_id="w-companies",
                object="companies",
                primary_key="domain",
                match_on="domain",
                mode="mirror",
            )
            assert report.deleted == 1 and report.updated == 5, report

            # A custom object by name: schemas, its properties (unique vin), batch/read lookup.
            cars = [{"vin": f"VIN{i}", "model": f"M{i}", "year": 2000 + i, "electric": i % 2 == 0} for i in range(4)]
            report = sync(
                hook,
                tmp / "cars.parquet",
                cars,
                sync_id="w-cars",
                object="p_cars",
                primary_key="vin",
                match_on="vin",
                mode="insert",
            )
            assert report.created == 4, report

            # 404: a record that does not exist, read by id (the answer must be HubSpot's Error shape).
            response = hook.request("GET", "/crm/v3/objects/contacts/999999999", accept=(404,))
            assert response.status_code == 404

            # A custom object by an unknown label: the hook asks the schemas API, finds none, falls back
            # to the name as given, which the properties API refuses (400).
            with pytest.raises(SyncError):
                sync(
                    hook,
                    tmp / "nothing.parquet",
                    [{"x": "1"}],
                    sync_id="w-404",
                    object="cars",
                    primary_key="x",
                    match_on="x",
                    mode="insert",
                )

            # 429 injected on the next request, answered by a retry.
            rec.running.faults.update(burst_429=1)
            report = sync(
                hook,
                tmp / "contacts.parquet",
                [contact(i, "c") for i in range(8)],
                sync_id="w-contacts",
                object="contacts",
                primary_key="email",
                mode="mirror",
            )
            assert report.rejected == 0, report.rejects

        wrong = connect(monkeypatch, "wire_hubspot_401", "retl_hubspot", rec.running.url, password="pat-na1-wrong")
        with HubSpotHook(wrong, sleep=no_sleep) as hook, pytest.raises(FatalSyncError):
            sync(hook, tmp / "401.parquet", [contact(0, "a")], sync_id="w-401", object="contacts", primary_key="email")
        assert {401, 404, 429} <= statuses(rec.recorder), "\n".join(map(str, seen(rec.recorder)))
        return rec.recorder.exchanges


HUBSPOT_ROUTES = {
    "POST /crm/v3/objects/contacts/batch/upsert",
    "POST /crm/v3/objects/contacts/batch/archive",
    "POST /crm/v3/objects/companies/search",
    "POST /crm/v3/objects/companies/batch/create",
    "POST /crm/v3/objects/companies/batch/update",
    "POST /crm/v3/objects/companies/batch/archive",
    "GET /crm-object-schemas/v3/schemas",
    "GET /crm/v3/properties/{objectType}",
    "POST /crm/v3/objects/{objectType}/batch/read",
    "POST /crm/v3/objects/{objectType}/batch/create",
}


# --------------------------------------------------------------------------------------- Mailchimp


def drive_mailchimp(tmp: Path, monkeypatch: pytest.MonkeyPatch, problems: list[str]) -> list[wire.Exchange]:
    from airflow_provider_retl.hooks.mailchimp import MailchimpHook

    merge_fields = [
        {"tag": "PLAN", "type": "dropdown", "options": {"choices": ["free", "pro"]}},
        {"tag": "SEATS", "type": "number"},
        {"tag": "FNAME", "type": "text"},
    ]
    with Recorded("mailchimp", rate_limit=None, merge_fields=merge_fields) as rec:
        conn = connect(monkeypatch, "wire_mailchimp", "retl_mailchimp", rec.running.url, password=MAILCHIMP_API_KEY)
        hook = MailchimpHook(mailchimp_conn_id=conn, sleep=no_sleep)

        def member(i: int, ver: str) -> dict[str, Any]:
            return {
                "email_address": f"m{i}@acme-mail.io",
                "FNAME": f"F{i}{ver}",
                "PLAN": "pro" if i % 2 else "free",
                "SEATS": i,
                "status": "subscribed",
            }

        v1 = [member(i, "a") for i in range(10)]
        # Rows without a status column (the hook must still send the member's status).
        v1 += [{"email_address": f"n{i}@acme-mail.io", "FNAME": f"N{i}"} for i in range(2)]
        # A throwaway-mail domain the hook accepts and Mailchimp refuses ("looks fake or invalid").
        v1.append({"email_address": "someone@mailinator.com", "FNAME": "X", "status": "subscribed"})
        first = sync(
            hook,
            tmp / "mc.parquet",
            v1,
            sync_id="w-mc",
            object=MAILCHIMP_LIST_ID,
            primary_key="email_address",
            mode="mirror",
        )
        assert first.created + first.upserted >= 10 and "someone@mailinator.com" in rejected_keys(first), first
        v2 = [member(i, "b" if i < 3 else "a") for i in range(7)]
        v2 += [{"email_address": f"n{i}@acme-mail.io", "FNAME": f"N{i}"} for i in range(2)]
        second = sync(
            hook,
            tmp / "mc.parquet",
            v2,
            sync_id="w-mc",
            object=MAILCHIMP_LIST_ID,
            primary_key="email_address",
            mode="mirror",
        )
        assert second.deleted == 3, second
        # insert mode looks members up one by one (GET members/{subscriber_hash}).
        report = sync(
            hook,
            tmp / "mc-insert.parquet",
            [member(i, "a") for i in range(3, 12)],
            sync_id="w-mc-ins",
            object=MAILCHIMP_LIST_ID,
            primary_key="email_address",
            mode="insert",
        )
        assert report.created == 5, report  # m7..m11: m7..m9 were mirror-deleted (archived)
        # 429 injected, answered by a retry.
        rec.running.faults.update(burst_429=1)
        report = sync(
            hook,
            tmp / "mc.parquet",
            [member(i, "c") for i in range(7)],
            sync_id="w-mc",
            object=MAILCHIMP_LIST_ID,
            primary_key="email_address",
            mode="mirror",
        )
        assert report.rejected == 0, report.rejects
        # 404: a list that does not exist.
        with pytest.raises(SyncError):
            sync(hook, tmp / "mc404.parquet", v2, sync_id="w-mc404", object="nolist404", primary_key="email_address")
        hook.close()
        wrong = connect(
            monkeypatch, "wire_mailchimp_401", "retl_mailchimp", rec.running.url, password="0" * 32 + "-us1"
        )
        hook = MailchimpHook(mailchimp_conn_id=wrong, sleep=no_sleep)
        with pytest.raises(FatalSyncError):
            sync(
                hook,
                tmp / "mc401.parquet",
                v2,
                sync_id="w-mc401",
                object=MAILCHIMP_LIST_ID,
                primary_key="email_address",
            )
        hook.close()
        assert {401, 404, 429} <= statuses(rec.recorder), "\n".join(map(str, seen(rec.recorder)))
        # Not caught by the schema (additionalProperties are open and the batch item schema of this
        # rendering lists no ``required``), so checked here: a batch item (Add_List_Members) has
        # ``status`` and no ``status_if_new`` (that is the PUT member's field, Add_List_Members_2);
        # the single-member POST (Add_List_Members_1) requires status. Every member needs one.
        members = [
            m
            for e in rec.recorder.exchanges
            if e.method == "POST" and e.path == f"/3.0/lists/{MAILCHIMP_LIST_ID}"
            for m in json.loads(e.body).get("members", [])
        ]
        bare = sorted({m.get("email_address") for m in members if not m.get("status")})
        assert members, "no batch member recorded"
        if bare:
            problems.append(
                f"mailchimp: POST /3.0/lists/{{list_id}}: {len(bare)} batch members sent without "
                f"'status' (status_if_new is not a batch member field): {bare[:5]}"
            )
        return rec.recorder.exchanges


MAILCHIMP_ROUTES = {
    "POST /3.0/lists/{list_id}",
    "GET /3.0/lists/{list_id}/merge-fields",
    "GET /3.0/lists/{list_id}/members/{subscriber_hash}",
    "DELETE /3.0/lists/{list_id}/members/{subscriber_hash}",
}


# --------------------------------------------------------------------------------------- Zendesk


def drive_zendesk(tmp: Path, monkeypatch: pytest.MonkeyPatch, problems: list[str]) -> list[wire.Exchange]:
    from airflow_provider_retl.hooks.zendesk import ZendeskHook, clear_job_gates

    clear_job_gates()
    fields = {"plan": "text", "seats": "integer", "tier": {"type": "dropdown", "options": ["gold", "silver"]}}
    with Recorded(
        "zendesk", rate_limit=None, processing_seconds=0.01, user_fields=fields, organization_fields={"region": "text"}
    ) as rec:
        conn = connect(
            monkeypatch,
            "wire_zendesk",
            "retl_zendesk",
            rec.running.url,
            login=ZENDESK_EMAIL,
            password=ZENDESK_API_TOKEN,
            extra={"job_poll_interval": 0.01},
        )
        hook = ZendeskHook(zendesk_conn_id=conn, sleep=no_sleep)

        def user(i: int, ver: str) -> dict[str, Any]:
            # plan, seats and tier are custom user fields (user_fields), the rest standard attributes.
            return {
                "external_id": f"u{i}",
                "name": f"User {i}{ver}",
                "email": f"u{i}@acme-mail.io",
                "phone": f"+1415555{i:04d}",
                "verified": True,
                "plan": f"p{ver}",
                "seats": i,
                "tier": "gold" if i % 2 else "silver",
            }

        v1 = [user(i, "a") for i in range(8)]
        # Refused by the API in the job results ("Role: wizard is not valid").
        v1.append({**user(99, "a"), "external_id": "bad", "role": "wizard"})
        first = sync(
            hook, tmp / "users.parquet", v1, sync_id="w-users", object="users", primary_key="external_id", mode="mirror"
        )
        assert first.created + first.upserted >= 8 and "bad" in rejected_keys(first), first.reject_reasons
        v2 = [user(i, "b" if i < 3 else "a") for i in range(6)]
        second = sync(
            hook, tmp / "users.parquet", v2, sync_id="w-users", object="users", primary_key="external_id", mode="mirror"
        )
        assert second.deleted == 2, second
        # Lookups: insert mode by email (search) and by external_id (show_many).
        report = sync(
            hook,
            tmp / "users-ins.parquet",
            [user(i, "a") for i in range(4, 9)],
            sync_id="w-users-ins",
            object="users",
            primary_key="email",
            match_on="email",
            mode="insert",
        )
        assert report.created + report.updated >= 1, report
        report = sync(
            hook,
            tmp / "users-ins2.parquet",
            [user(i, "a") for i in range(6, 11)],
            sync_id="w-users-in2",
            object="users",
            primary_key="external_id",
            match_on="external_id",
            mode="insert",
        )
        assert report.created + report.updated >= 1, report

        # Organizations, upsert by external_id (mirror deletes with destroy_many), then by name lookup.
        orgs = [{"external_id": f"o{i}", "name": f"Org {i}", "notes": "n", "region": "eu"} for i in range(4)]
        destroying = ZendeskHook(zendesk_conn_id=conn, sleep=no_sleep, mirror_delete=True)
        sync(
            destroying,
            tmp / "orgs.parquet",
            orgs,
            sync_id="w-orgs",
            object="organizations",
            primary_key="external_id",
            mode="mirror",
        )
        report = sync(
            destroying,
            tmp / "orgs.parquet",
            orgs[:2],
            sync_id="w-orgs",
            object="organizations",
            primary_key="external_id",
            mode="mirror",
        )
        assert report.deleted == 2, report
        destroying.close()
        report = sync(
            hook,
            tmp / "orgs-name.parquet",
            [{"name": f"Org {i}", "notes": "m"} for i in range(2, 6)],
            sync_id="w-orgs-name",
            object="organizations",
            primary_key="name",
            match_on="name",
            mode="insert",
        )
        assert report.created == 4, report  # Org 2 and Org 3 were destroyed above

        rec.running.faults.update(burst_429=1)
        report = sync(
            hook,
            tmp / "users.parquet",
            [user(i, "c") for i in range(6)],
            sync_id="w-users",
            object="users",
            primary_key="external_id",
            mode="mirror",
        )
        assert report.rejected == 0, report.rejects
        hook.close()
        wrong = connect(
            monkeypatch,
            "wire_zendesk_401",
            "retl_zendesk",
            rec.running.url,
            login=ZENDESK_EMAIL,
            password="wrong-token",
            extra={"job_poll_interval": 0.01},
        )
        hook = ZendeskHook(zendesk_conn_id=wrong, sleep=no_sleep)
        with pytest.raises(FatalSyncError):
            sync(hook, tmp / "401.parquet", v2, sync_id="w-401", object="users", primary_key="external_id")
        hook.close()
        # 404: a job status that does not exist (Zendesk forgets finished jobs after a while).
        hook = ZendeskHook(zendesk_conn_id=conn, sleep=no_sleep)
        response = hook.request("GET", "/api/v2/job_statuses/0000000000000000.json", accept=(404,))
        assert response.status_code == 404
        hook.close()
        assert {401, 404, 429} <= statuses(rec.recorder), "\n".join(map(str, seen(rec.recorder)))
        return rec.recorder.exchanges


ZENDESK_ROUTES = {
    "POST /api/v2/users/create_or_update_many",
    "GET /api/v2/job_statuses/{job_status_id}",
    "PUT /api/v2/users/update_many",
    "DELETE /api/v2/organizations/destroy_many",
    "GET /api/v2/users/show_many",
    "GET /api/v2/users/search",
    "POST /api/v2/users/create_many",
    "GET /api/v2/user_fields",
    "GET /api/v2/organization_fields",
    "GET /api/v2/organizations/search",
    "POST /api/v2/organizations/create_many",
}


# --------------------------------------------------------------------------------------- Customer.io


def drive_customerio(tmp: Path, monkeypatch: pytest.MonkeyPatch, problems: list[str]) -> list[wire.Exchange]:
    from airflow_provider_retl.hooks.customerio import CustomerIoHook

    with Recorded("customerio", rate_limit=None) as rec:
        conn = connect(
            monkeypatch,
            "wire_cio",
            "retl_customerio",
            rec.running.url,
            login=CUSTOMERIO_SITE_ID,
            password=CUSTOMERIO_API_KEY,
        )
        hook = CustomerIoHook(customerio_conn_id=conn, sleep=no_sleep)

        def person(i: int, ver: str) -> dict[str, Any]:
            return {"id": f"p{i}", "email": f"p{i}@acme-mail.io", "plan": f"plan-{ver}", "seats": i, "vip": i % 2 == 0}

        v1 = [person(i, "a") for i in range(10)]
        # An attribute value over Customer.io's documented 1000-byte limit: a 207 item error.
        v1.append({"id": "big", "email": "big@acme-mail.io", "plan": "x" * 1500})
        first = sync(
            hook, tmp / "people.parquet", v1, sync_id="w-people", object="people", primary_key="id", mode="mirror"
        )
        assert first.upserted + first.created >= 10 and "big" in rejected_keys(first), first
        v2 = [person(i, "b" if i < 3 else "a") for i in range(7)]
        second = sync(
            hook, tmp / "people.parquet", v2, sync_id="w-people", object="people", primary_key="id", mode="mirror"
        )
        assert second.deleted == 3, second

        events = [{"event_key": f"e{i}", "id": f"p{i % 4}", "name": "ordered", "amount": i} for i in range(12)]
        report = sync(
            hook,
            tmp / "events.parquet",
            events,
            sync_id="w-events",
            object="events",
            primary_key="event_key",
            mode="insert",
        )
        assert report.rejected == 0 and report.created + report.pushed >= 12, report
        # Not a question of shape (the document cannot tell): each event is an operation of the
        # row's person ("id"), never of its event key.
        people = {row["event_key"]: row["id"] for row in events}
        sent = [
            op
            for e in rec.recorder.exchanges
            if e.path == "/api/v2/batch" and e.status == 200
            for op in json.loads(e.body).get("batch", [])
            if op.get("action") == "event"
        ]
        wrong = sorted(
            {
                (op["attributes"].get("event_key"), op["identifiers"].get("id"))
                for op in sent
                if op["identifiers"].get("id") != people.get(op["attributes"].get("event_key"))
            }
        )
        assert sent, "no event operation recorded"
        if wrong:
            problems.append(
                f"customerio: {len(wrong)} events sent as operations of the wrong person "
                f"(event key, identifiers.id sent): {wrong[:5]}; the rows' person is their 'id' column"
            )

        rec.running.faults.update(burst_429=1)
        report = sync(
            hook,
            tmp / "people.parquet",
            [person(i, "c") for i in range(7)],
            sync_id="w-people",
            object="people",
            primary_key="id",
            mode="mirror",
        )
        assert report.rejected == 0, report.rejects
        hook.close()
        wrong = connect(
            monkeypatch,
            "wire_cio_401",
            "retl_customerio",
            rec.running.url,
            login=CUSTOMERIO_SITE_ID,
            password="wrong-key",
        )
        hook = CustomerIoHook(customerio_conn_id=wrong, sleep=no_sleep)
        with pytest.raises(FatalSyncError):
            sync(hook, tmp / "401.parquet", v2, sync_id="w-401", object="people", primary_key="id")
        hook.close()
        assert {401, 429} <= statuses(rec.recorder), seen(rec.recorder)
        return rec.recorder.exchanges


CUSTOMERIO_ROUTES = {"POST /api/v2/batch"}


# --------------------------------------------------------------------------------------- the check

DRIVERS: dict[str, tuple[Driver, set[str]]] = {
    "hubspot": (drive_hubspot, HUBSPOT_ROUTES),
    "mailchimp": (drive_mailchimp, MAILCHIMP_ROUTES),
    "zendesk": (drive_zendesk, ZENDESK_ROUTES),
    "customerio": (drive_customerio, CUSTOMERIO_ROUTES),
}


def split(violations: list[wire.Violation]) -> tuple[list[wire.Violation], set[int]]:
    """(violations not allow-listed, indexes of the ALLOWED entries that matched one)."""
    used: set[int] = set()
    left = []
    for v in violations:
        hits = [i for i, a in enumerate(ALLOWED) if a.matches(v.destination, v.route, v.direction, v.status, v.message)]
        used.update(hits)
        if not hits or v.direction == "request":
            left.append(v)
    return left, used


@pytest.mark.parametrize("destination", sorted(DRIVERS))
def test_wire_matches_vendor_documents(destination: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recorded request and response of ``destination`` against its documents (see the module doc)."""
    drive, expected_routes = DRIVERS[destination]
    problems: list[str] = []
    exchanges = drive(tmp_path, monkeypatch, problems)
    violations, routes = wire.validate(destination, exchanges)
    missing = expected_routes - routes
    assert not missing, f"{destination}: routes never recorded: {sorted(missing)} (recorded: {sorted(routes)})"
    left, used = split(violations)
    stale = [a for i, a in enumerate(ALLOWED) if a.destination == destination and i not in used]
    if left:
        n_req = sum(v.direction == "request" for v in left)
        problems.append(
            f"{n_req} request and {len(left) - n_req} response violations of the vendor documents "
            f"in {len(exchanges)} exchanges:\n{wire.report(left)}"
        )
    if stale:
        problems.append("allow-list entries no longer needed:\n" + "\n".join(f"  {a}" for a in stale))
    assert not problems, "\n\n".join(problems)


def test_recorded_exchanges_never_hold_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    with Recorded("hubspot", rate_limit=None) as rec:
        conn = connect(monkeypatch, "wire_secret", "retl_hubspot", rec.running.url, password=DEFAULT_TOKEN)
        with HubSpotHook(conn, sleep=no_sleep) as hook:
            sync(
                hook,
                tmp_path / "s.parquet",
                [{"email": "s@example.com", "firstname": "S"}],
                sync_id="w-s",
                object="contacts",
                primary_key="email",
            )
    [exchange] = rec.recorder.exchanges
    assert exchange.headers["authorization"] == f"Bearer {wire.REDACTED}"
    assert DEFAULT_TOKEN not in repr(exchange)


def test_validator_reports_what_the_document_forbids() -> None:
    """A hand-made exchange the HubSpot document forbids (so a silent validator cannot pass)."""
    body = json.dumps({"inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {"email": 5}}]})
    bad = wire.Exchange(
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        "",
        {"content-type": "application/json", "authorization": f"Bearer {wire.REDACTED}"},
        body.encode(),
        200,
        {"content-type": "application/json"},
        b'{"results": 1}',
    )
    violations, routes = wire.validate("hubspot", [bad])
    assert routes == {"POST /crm/v3/objects/contacts/batch/upsert"}
    found = {(v.direction, v.message) for v in violations}
    assert ("request", "InvalidRequestBody: inputs/*/properties/email: int is not of type 'string'") in found
    assert any(d == "response" for d, _ in found), found
    [unknown] = wire.validate("hubspot", [bad.__class__(**{**vars(bad), "path": "/crm/v9/nowhere"})])[0]
    assert unknown.message == "no document has this path"


def test_allow_list_entries_are_response_entries_with_reasons() -> None:
    for entry in ALLOWED:
        assert entry.direction == "response", f"requests are never allow-listed: {entry}"
        assert entry.destination in DRIVERS and len(entry.reason) > 40, entry
