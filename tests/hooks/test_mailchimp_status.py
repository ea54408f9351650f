"""Batch subscribe statuses: every member carries ``status``, and a re-sync never re-subscribes anyone.

Mailchimp's POST /lists/{list_id} takes ``members`` items of the document's ``Add_List_Members``
(/work/shared/vendor-specs/mailchimp-marketing-openapi.yaml): ``status`` (required by Mailchimp's
reference; applied to existing members with ``update_existing``), no ``status_if_new``. The hook
runs against the emulator; every request its session sends is validated with openapi-core.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest
from openapi_core.exceptions import OpenAPIError

from airflow_provider_retl.hooks.mailchimp import MailchimpHook, subscriber_hash
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import start_emulator
from tests.vendor_specs import spec_path

from .support import no_sleep

SPEC = spec_path("mailchimp-marketing-openapi.yaml")
LIST = "a1b2c3d4e5"
KEY = "0123456789abcdef0123456789abcdef-us6"
BATCH = f"POST /3.0/lists/{LIST}"


@pytest.fixture(scope="module")
def document() -> OpenAPI:
    spec = yaml.safe_load(SPEC.read_text())
    # Normalisation in memory (the file stays as it is): this rendering dropped the ``required`` list
    # of the batch members' schema; Mailchimp's reference marks email_address and status required.
    members = spec["components"]["schemas"]["Add_List_Members"]
    members["required"] = ["email_address", "status"]
    # Same file, known slip of Mailchimp's spec: merge_fields values are typed ``object`` while a
    # text merge field takes a string (Mailchimp's merge-field docs); any JSON value is allowed here.
    members["properties"]["merge_fields"]["additionalProperties"] = {}
    return OpenAPI.from_dict(spec)


class Wire:
    def __init__(self) -> None:
        self.sent: list[requests.PreparedRequest] = []

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.sent.append(response.request)

    def batches(self) -> list[dict[str, Any]]:
        return [
            json.loads(r.body)
            for r in self.sent
            if r.method == "POST" and r.path_url.split("?")[0] == f"/3.0/lists/{LIST}"
        ]

    def assert_conforms(self, document: OpenAPI) -> None:
        problems = []
        for sent in self.sent:
            # The hook masks the key in the request it keeps; any basic credentials satisfy the scheme.
            headers = {**dict(sent.headers), "Authorization": "Basic " + base64.b64encode(b"retl:key").decode()}
            as_mailchimp = requests.Request(
                sent.method, "https://server.api.mailchimp.com" + sent.path_url, data=sent.body, headers=headers
            ).prepare()
            try:
                document.validate_request(RequestsOpenAPIRequest(as_mailchimp))
            except OpenAPIError as exc:
                problems.append(f"{sent.method} {sent.path_url}: {exc} {exc.__cause__ or ''}")
        assert not problems, "\n".join(problems)


@pytest.fixture
def mc(add_connection):
    with start_emulator("mailchimp") as running:
        add_connection("mailchimp_default", "retl_mailchimp", running.url, KEY)
        yield running


@pytest.fixture
def wire() -> Wire:
    return Wire()


def new_hook(wire: Wire) -> MailchimpHook:
    hook = MailchimpHook(sleep=no_sleep)
    hook.get_conn().hooks["response"].append(wire)
    return hook


def person(key: str, email: str, **fields: Any) -> Record:
    return Record(key=key, fields={"email_address": email, **fields}, match_value=email)


SEEDED = [
    {"email_address": "gone@acme.io", "status": "unsubscribed"},
    {"email_address": "bounced@acme.io", "status": "cleaned"},
    {"email_address": "waiting@acme.io", "status": "pending"},
    {"email_address": "sub@acme.io", "status": "subscribed"},
]


class TestResync:
    def test_upsert_keeps_every_existing_status_and_subscribes_new_members(self, mc, wire, document) -> None:
        mc.emulator.seed(LIST, SEEDED)
        hook = new_hook(wire)
        rows = [person(str(i), m["email_address"], FNAME=f"N{i}") for i, m in enumerate(SEEDED)]
        rows.append(person("9", "new@acme.io", FNAME="New"))
        outcomes = hook.upsert(LIST, rows, "email_address")
        assert all(o.ok for o in outcomes), outcomes
        assert [o.created for o in outcomes] == [False, False, False, False, True]
        statuses = {m["email_address"]: m["status"] for m in mc.emulator.members(LIST)}
        assert statuses == {
            "gone@acme.io": "unsubscribed",  # not re-subscribed
            "bounced@acme.io": "cleaned",
            "waiting@acme.io": "pending",
            "sub@acme.io": "subscribed",
            "new@acme.io": "subscribed",
        }
        assert mc.emulator.member(LIST, "gone@acme.io")["merge_fields"]["FNAME"] == "N0"  # the data did go
        for batch in wire.batches():
            for member in batch["members"]:
                assert member["status"] and "status_if_new" not in member
        wire.assert_conforms(document)

        # A second sync through a fresh hook (nothing cached): still nobody re-subscribed, no rejects.
        again = new_hook(wire).upsert(LIST, rows, "email_address")
        assert all(o.ok and o.created is False for o in again), again
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"
        assert mc.emulator.member(LIST, "bounced@acme.io")["status"] == "cleaned"
        wire.assert_conforms(document)

    def test_update_after_lookup_sends_the_status_the_lookup_read(self, mc, wire, document) -> None:
        mc.emulator.seed(LIST, SEEDED[:1])
        hook = new_hook(wire)
        found = hook.lookup(LIST, "email_address", ["gone@acme.io"])
        assert found == {"gone@acme.io": subscriber_hash("gone@acme.io")}
        before = mc.emulator.request_count()
        [outcome] = hook.update(
            LIST, [Record("1", {"email_address": "gone@acme.io", "FNAME": "G"}, dest_id=found["gone@acme.io"])]
        )
        assert outcome.ok and outcome.created is False
        routes = [r.route for r in mc.emulator.requests[before:]]
        assert routes == [f"GET /3.0/lists/{LIST}/merge-fields", BATCH]  # no second status read, no probe
        ((member,),) = [b["members"] for b in wire.batches()]
        assert member["status"] == "unsubscribed"
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"
        wire.assert_conforms(document)

    def test_a_mapped_status_is_sent_as_is_and_mailchimp_refuses_resubscribing(self, mc, wire) -> None:
        mc.emulator.seed(LIST, SEEDED[:2])
        outcomes = new_hook(wire).upsert(
            LIST,
            [person("1", "gone@acme.io", status="subscribed"), person("2", "x@acme.io", status="transactional")],
            "email_address",
        )
        assert not outcomes[0].ok and "compliance state" in outcomes[0].reason
        assert outcomes[1].ok and mc.emulator.member(LIST, "x@acme.io")["status"] == "transactional"
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"

    def test_create_sends_the_new_member_status_and_existing_ones_are_refused_untouched(
        self, mc, wire, document
    ) -> None:
        mc.emulator.seed(LIST, SEEDED[:1])
        hook = MailchimpHook(sleep=no_sleep, status_if_new="pending")
        hook.get_conn().hooks["response"].append(wire)
        outcomes = hook.create(LIST, [person("1", "gone@acme.io"), person("2", "p@acme.io")])
        assert (outcomes[0].ok, outcomes[0].code) == (False, "EXISTS")
        assert outcomes[1].ok and mc.emulator.member(LIST, "p@acme.io")["status"] == "pending"
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"
        assert mc.emulator.request_count(BATCH) == 1
        wire.assert_conforms(document)

    def test_the_document_check_is_live(self, mc, wire, document) -> None:
        hook = new_hook(wire)
        hook.get_conn().post(
            f"{hook.base_url}/3.0/lists/{LIST}",
            json={"members": [{"email_address": "a@acme.io", "status_if_new": "subscribed"}]},
        )
        with pytest.raises(AssertionError, match="status"):
            wire.assert_conforms(document)
