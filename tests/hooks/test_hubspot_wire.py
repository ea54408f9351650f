"""What HubSpotHook puts on the wire, checked against HubSpot's own OpenAPI documents.

The hook runs against the emulator (real HTTP); every request its session sends is
also validated with openapi-core against the vendor document that describes its path
(read from /work/shared/vendor-specs at test time, never copied here). The emulator
and the hook agreeing is not enough: both once sent and accepted JSON numbers and
booleans where the document says every property value is a string.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.exceptions import OpenAPIError

from airflow_provider_retl.hooks.hubspot import HubSpotHook, wire_value
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import start_emulator
from tests.vendor_specs import spec_path

from .support import TOKEN, no_sleep

SPECS = spec_path("hubspot-contacts.json").parent
#: The HubSpot base URL the documents' ``servers`` name; requests are checked as if sent there.
HUBSPOT = "https://api.hubapi.com"


def _spec_for(path: str) -> str:
    if path.startswith("/crm/v3/objects/contacts"):
        return "hubspot-contacts.json"
    if path.startswith("/crm/v3/objects/companies"):
        return "hubspot-companies.json"
    if path.startswith("/crm/v3/objects/"):
        return "hubspot-objects.json"
    if path.startswith("/crm/v3/properties/"):
        return "hubspot-properties.json"
    if path.startswith("/crm-object-schemas/v3/"):
        return "hubspot-schemas.json"
    raise AssertionError(f"no HubSpot document describes {path}")


_loaded: dict[str, OpenAPI] = {}


def _openapi(name: str) -> OpenAPI:
    if name not in _loaded:
        document = json.loads((SPECS / name).read_text())
        # Normalisation in memory (the file stays as it is): the shared ``Error`` response is
        # declared for "*/*", which openapi-core does not parse as JSON; HubSpot sends JSON.
        error = document.get("components", {}).get("responses", {}).get("Error")
        if error and "*/*" in error.get("content", {}):
            error["content"] = {"application/json": error["content"].pop("*/*")}
        _loaded[name] = OpenAPI.from_dict(document)
    return _loaded[name]


class Wire:
    """The requests one hook's session sent, with a check of each against the vendor document."""

    def __init__(self) -> None:
        self.sent: list[requests.PreparedRequest] = []
        self.answers: list[requests.Response] = []

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.sent.append(response.request)
        self.answers.append(response)

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        """JSON bodies of the requests whose path ends with ``suffix``."""
        return [json.loads(r.body) for r in self.sent if r.path_url.split("?")[0].endswith(suffix) and r.body]

    def assert_conforms(self, *, answers: bool = True) -> None:
        """Every request (and, with ``answers``, every emulator answer) matches the vendor document."""
        assert self.sent, "the hook sent nothing"
        problems = []
        for sent, answer in zip(self.sent, self.answers, strict=True):
            path_url = sent.path_url
            as_sent_to_hubspot = requests.Request(
                sent.method, HUBSPOT + path_url, data=sent.body, headers=dict(sent.headers)
            ).prepare()
            with warnings.catch_warnings():
                # openapi-core warns that it cannot check the oauth2 scheme; the bearer token is there.
                warnings.simplefilter("ignore", UserWarning)
                spec = _openapi(_spec_for(path_url.split("?")[0]))
                try:
                    spec.validate_request(RequestsOpenAPIRequest(as_sent_to_hubspot))
                except OpenAPIError as exc:  # every problem, not just the first, in the failure message
                    problems.append(f"{sent.method} {path_url}: {exc} {getattr(exc, '__cause__', '') or ''}")
                # A 204's ``content: {}`` reads to openapi-core as "a body is due" ("Missing response
                # data"); the document means no content, which is what the emulator sends.
                if answers and not (answer.status_code == 204 and not answer.content):
                    try:
                        spec.validate_response(
                            RequestsOpenAPIRequest(as_sent_to_hubspot), RequestsOpenAPIResponse(answer)
                        )
                    except OpenAPIError as exc:
                        problems.append(f"answer {answer.status_code} to {sent.method} {path_url}: {exc}")
        assert not problems, "\n".join(problems)


@pytest.fixture
def hs(add_connection):
    emulator = start_emulator(
        "hubspot",
        tokens=[TOKEN],
        rate_limit=None,
        object_types={
            "contacts": [
                {"name": "score", "type": "number"},
                {"name": "vip", "type": "bool"},
                {"name": "signup", "type": "date"},
                {"name": "seen_at", "type": "datetime"},
                {"name": "colours", "type": "enumeration", "options": ["red", "green", "blue"]},
            ]
        },
    )
    add_connection("hubspot_default", "retl_hubspot", emulator.url, TOKEN, rate_limit=0)
    yield emulator
    emulator.stop()


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def hook(hs, wire) -> HubSpotHook:
    hook = HubSpotHook(sleep=no_sleep)
    hook.get_conn().hooks["response"].append(wire)
    return hook


class TestWireValue:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (None, ""),
            ("as is", "as is"),
            (True, "true"),
            (False, "false"),
            (17, "17"),
            (-3, "-3"),
            (17.0, "17"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),  # the float's own shortest text: what the warehouse holds
            (1e-05, "0.00001"),
            (1e20, "100000000000000000000"),
            (-0.0, "0"),
            (Decimal("12.500"), "12.5"),
            (Decimal("1E+3"), "1000"),
            (date(2024, 3, 1), "2024-03-01"),
            (datetime(2024, 3, 1, 12, 30, 5, 123456), "2024-03-01T12:30:05.123Z"),
            (datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T12:00:00.000Z"),
            (["red", "blue"], "red;blue"),
        ],
    )
    def test_values_become_hubspot_strings(self, value: Any, text: str) -> None:
        assert wire_value(value) == text

    def test_non_finite_numbers_are_per_record_rejects(self, hs, hook, wire) -> None:
        outcomes = hook.upsert(
            "contacts",
            [
                Record("1", {"email": "a@x.com", "score": float("nan")}, match_value="a@x.com"),
                Record("2", {"email": "b@x.com", "score": 2.5}, match_value="b@x.com"),
            ],
            "email",
        )
        assert (outcomes[0].ok, outcomes[0].code) == (False, "INVALID_VALUE")
        assert "score" in outcomes[0].reason and "finite" in outcomes[0].reason
        assert outcomes[1].ok
        assert hook.validate("contacts", {"email": "c@x.com", "score": float("inf")})[0][0] == "score"
        [(field, reason)] = hook.validate("contacts", {"email": "c@x.com", "firstname": {"a": [1]}})
        assert field == "firstname" and "not a valid value" in reason
        assert hook.validate("contacts", {"email": "c@x.com", "colours": ["red", "blue"]}) == []
        assert [len(b["inputs"]) for b in wire.bodies("/batch/upsert")] == [1]


class TestPropertyValuesAreStrings:
    FIELDS: dict[str, Any] = {  # noqa: RUF012
        "firstname": "Ann",
        "score": 42,
        "vip": True,
        "signup": date(2024, 3, 1),
        "seen_at": datetime(2024, 3, 1, 9, 15, tzinfo=UTC),
        "colours": ["red", "blue"],
        "phone": None,
    }

    def test_upsert_create_update_send_only_strings_and_conform(self, hs, hook, wire) -> None:
        upserted = hook.upsert("contacts", [Record("1", {"email": "a@x.com", **self.FIELDS}, match_value="a@x.com")])
        created = hook.create("contacts", [Record("2", {"email": "b@x.com", "score": 0.5, "vip": False})])
        assert upserted[0].ok and created[0].ok, (upserted, created)
        updated = hook.update(
            "contacts", [Record("2", {"score": Decimal("7.250"), "vip": None}, dest_id=created[0].dest_id)]
        )
        assert updated[0].ok, updated

        for suffix in ("/batch/upsert", "/batch/create", "/batch/update"):
            (body,) = wire.bodies(suffix)
            for item in body["inputs"]:
                assert all(isinstance(v, str) for v in item["properties"].values()), item
        (upsert,) = wire.bodies("/batch/upsert")
        assert upsert["inputs"][0]["properties"] == {
            "email": "a@x.com",
            "firstname": "Ann",
            "score": "42",
            "vip": "true",
            "signup": "2024-03-01",
            "seen_at": "2024-03-01T09:15:00.000Z",
            "colours": "red;blue",
            "phone": "",
        }
        (create,) = wire.bodies("/batch/create")
        assert create["inputs"][0]["associations"] == []  # required by SimplePublicObjectBatchInputForCreate
        wire.assert_conforms()

        ann = hs.emulator.find("contacts", "email", "a@x.com")["properties"]
        assert (ann["score"], ann["vip"], ann["signup"], ann["seen_at"], ann["colours"]) == (
            "42",
            "true",
            "2024-03-01",
            "2024-03-01T09:15:00.000Z",
            "red;blue",
        )
        assert "phone" not in ann
        bob = hs.emulator.get_record("contacts", created[0].dest_id)["properties"]
        assert bob["score"] == "7.25" and "vip" not in bob  # None cleared it with ""

    def test_lookups_and_archive_conform(self, hs, hook, wire) -> None:
        ids = hs.emulator.seed(
            "companies", [{"name": "Acme", "domain": "acme.com"}, {"name": "Beta", "domain": "beta.io"}]
        )
        hs.emulator.seed("contacts", [{"email": "a@x.com"}])
        assert hook.lookup("companies", "domain", ["acme.com", "nope.org"]) == {"acme.com": ids[0]}
        assert set(hook.lookup("contacts", "email", ["A@x.com", "b@x.com"])) == {"A@x.com"}
        assert hook.lookup("companies", "hs_object_id", [int(ids[1])]) == {int(ids[1]): ids[1]}
        assert all(o.ok for o in hook.delete("companies", [ids[0]]))
        (search,) = wire.bodies("/companies/search")
        # PublicObjectSearchRequest: after, filterGroups, limit, properties and sorts are required.
        assert {"after", "filterGroups", "limit", "properties", "sorts"} <= set(search)
        assert all(isinstance(s, str) for s in search["sorts"])
        wire.assert_conforms()

    def test_search_pages_through_with_after(self, hs, hook, wire, monkeypatch) -> None:
        from airflow_provider_retl.hooks import hubspot as hubspot_module

        monkeypatch.setattr(hubspot_module, "SEARCH_PAGE", 2)
        ids = hs.emulator.seed("companies", [{"name": f"C{i}", "domain": f"d{i}.com"} for i in range(5)])
        found = hook.lookup("companies", "domain", [f"d{i}.com" for i in range(5)])
        assert found == {f"d{i}.com": ids[i] for i in range(5)}
        afters = [b["after"] for b in wire.bodies("/companies/search")]
        assert afters[0] == "0" and len(afters) == 3 and len(set(afters)) == 3
        wire.assert_conforms()

    def test_the_emulator_refuses_what_the_old_hook_sent(self, hs, hook, wire) -> None:
        """A JSON number as a property value is a 400 VALIDATION_ERROR, and the hook does not retry it."""
        session = hook.get_conn()
        response = session.post(
            f"{hook.base_url}/crm/v3/objects/contacts/batch/create",
            json={"inputs": [{"associations": [], "properties": {"email": "a@x.com", "score": 42}}]},
        )
        assert response.status_code == 400
        assert response.json()["category"] == "VALIDATION_ERROR"
        assert hs.emulator.records("contacts") == []
        # And the document check sees it too (it is live, not vacuous).
        with pytest.raises(AssertionError, match="is not of type 'string'"):
            wire.assert_conforms(answers=False)


class TestErrorReasons:
    def test_per_record_reasons_from_207_standard_errors(self, hs, hook) -> None:
        """errors[] items (StandardError with context.objectWriteTraceId and errors[]) become per-record rejects."""
        outcomes = hook.create(
            "contacts",
            [
                Record("1", {"email": "ok@x.com"}),
                Record("2", {"email": "bad"}),
                Record("3", {"email": "z@x.com", "nope": "1"}),
                Record("4", {"email": "w@x.com", "colours": "purple"}),
            ],
        )
        assert [o.ok for o in outcomes] == [True, False, False, False]
        assert (outcomes[1].code, outcomes[1].reason) == ("INVALID_EMAIL", "email: Email address bad is invalid")
        assert outcomes[2].code == "PROPERTY_DOESNT_EXIST" and "nope" in outcomes[2].reason
        assert outcomes[3].code == "INVALID_OPTION" and "colours: purple was not one of" in outcomes[3].reason


class TestCustomObjects:
    def test_a_custom_object_is_found_by_label_through_the_documented_schemas_path(self, add_connection, wire) -> None:
        with start_emulator(
            "hubspot",
            tokens=[TOKEN],
            rate_limit=None,
            object_types={"p_cars": [{"name": "vin", "hasUniqueValue": True}, "model"]},
        ) as running:
            add_connection("hubspot_default", "retl_hubspot", running.url, TOKEN, rate_limit=0)
            hook = HubSpotHook(sleep=no_sleep)
            hook.get_conn().hooks["response"].append(wire)
            type_id = hook.object_path("Car")
            assert type_id.startswith("2-") and hook.object_path("cars") == type_id
            outcomes = hook.upsert("Car", [Record("1", {"vin": "V1", "model": "T"}, match_value="V1")], "vin")
            assert outcomes[0].ok and outcomes[0].created, outcomes
            assert running.emulator.find("p_cars", "vin", "V1")["properties"]["model"] == "T"
            assert running.emulator.request_count("GET /crm-object-schemas/v3/schemas") == 2  # once per name
            wire.assert_conforms()
