"""The HubSpot emulator's error answers, checked against HubSpot's own spec.

Every error response of hubspot-contacts.json is ``default: Error`` (required ``category``,
``correlationId`` (uuid), ``message``); a 207 is ``BatchResponseSimplePublicObjectWithErrors``,
whose ``errors[]`` items are ``StandardError`` (required ``status``, ``category``,
``message``, ``context``, ``errors``, ``links``). The document is read from
/work/shared/vendor-specs at test time and each answer is validated with openapi-core.
"""

from __future__ import annotations

import json
import uuid
import warnings

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from airflow_provider_retl.testing.emulators import RunningEmulator, start_emulator
from tests.vendor_specs import spec_path

SPEC = spec_path("hubspot-contacts.json")
HUBSPOT = "https://api.hubapi.com"


@pytest.fixture(scope="module")
def contacts_spec() -> OpenAPI:
    document = json.loads(SPEC.read_text())
    # Normalisation in memory (the file stays as it is): the shared ``Error`` response is declared
    # for media type "*/*", which openapi-core does not parse as JSON, so it would compare the raw
    # bytes with an object schema. HubSpot sends these bodies as application/json.
    error = document["components"]["responses"]["Error"]
    error["content"] = {"application/json": error["content"].pop("*/*")}
    return OpenAPI.from_dict(document)


def conforms(spec: OpenAPI, response: requests.Response) -> dict:
    """Validate an emulator answer as if HubSpot had sent it; its JSON body."""
    sent = response.request
    as_hubspot = requests.Request(sent.method, HUBSPOT + sent.path_url, data=sent.body, headers=dict(sent.headers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # openapi-core cannot check the oauth2 scheme
        spec.validate_response(RequestsOpenAPIRequest(as_hubspot.prepare()), RequestsOpenAPIResponse(response))
    body = response.json()
    if response.status_code >= 400:
        assert body["category"] and body["message"]
        uuid.UUID(body["correlationId"])
    return body


def item(email: str, trace: str | None = None, **props: str) -> dict:
    out: dict = {"properties": {"email": email, **props}}
    if trace:
        out["objectWriteTraceId"] = trace
    return out


class TestErrorBodies:
    def test_400_validation_error(self, contacts_spec, client) -> None:
        response = client.batch("contacts", "create", [item("not-an-email")])
        assert response.status_code == 400
        body = conforms(contacts_spec, response)
        assert body["category"] == "VALIDATION_ERROR"
        assert body["errors"][0] == {
            "message": "Email address not-an-email is invalid",
            "code": "INVALID_EMAIL",
            "in": "email",
            "context": {"propertyName": ["email"]},
        }

    def test_400_non_string_value(self, contacts_spec, client) -> None:
        response = client.batch("contacts", "create", [{"properties": {"email": "a@x.com", "firstname": 5}}])
        assert response.status_code == 400
        assert conforms(contacts_spec, response)["context"] == {"properties": ["firstname"]}

    def test_401(self, contacts_spec, hubspot: RunningEmulator, make_client) -> None:
        response = make_client(hubspot.url, token=None).get("/crm/v3/objects/contacts/1")
        assert response.status_code == 401
        assert conforms(contacts_spec, response)["category"] == "INVALID_AUTHENTICATION"

    def test_404_object_not_found(self, contacts_spec, client) -> None:
        response = client.get("/crm/v3/objects/contacts/424242")
        assert response.status_code == 404
        assert conforms(contacts_spec, response)["category"] == "OBJECT_NOT_FOUND"

    def test_404_and_405_of_unknown_routes_are_hubspot_errors_too(self, client) -> None:
        for response in (client.get("/crm/v3/nothing-here"), client.delete("/crm/v3/objects/contacts/batch/create")):
            assert response.status_code in (404, 405), response.text
            body = response.json()
            assert set(body) >= {"category", "correlationId", "message"}
            assert "detail" not in body

    def test_409_conflict(self, contacts_spec, hubspot, client) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "taken@x.com"}])
        response = client.batch("contacts", "create", [item("taken@x.com")])
        assert response.status_code == 409
        body = conforms(contacts_spec, response)
        assert body["category"] == "CONFLICT" and f"Existing ID: {existing}" in body["message"]

    def test_429(self, contacts_spec, make_client) -> None:
        with start_emulator("hubspot", rate_limit=1, rate_window=60) as hs:
            client = make_client(hs.url)
            assert client.get("/crm/v3/objects/contacts/1").status_code == 404
            response = client.get("/crm/v3/objects/contacts/1")
            assert response.status_code == 429
            body = conforms(contacts_spec, response)
            assert body["category"] == "RATE_LIMITS" and body["policyName"] == "TEN_SECONDLY_ROLLING"

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx(self, contacts_spec, hubspot, client, status: int) -> None:
        hubspot.emulator.faults.update(error_statuses=(status,))
        hubspot.emulator.faults.fail_next(1, "error")
        response = client.get("/crm/v3/objects/contacts/1")
        assert response.status_code == status
        conforms(contacts_spec, response)


class TestMultiStatus:
    def test_207_write_errors_are_standard_errors(self, contacts_spec, client) -> None:
        response = client.batch(
            "contacts", "create", [item("good@x.com", "t0"), item("bad", "t1"), item("x@x.com", "t2", nope="1")]
        )
        assert response.status_code == 207
        body = conforms(contacts_spec, response)
        assert body["numErrors"] == 2
        for error in body["errors"]:
            assert set(error) >= {"status", "category", "message", "context", "errors", "links"}
        assert {e["context"]["objectWriteTraceId"][0] for e in body["errors"]} == {"t1", "t2"}

    def test_207_read_not_found(self, contacts_spec, hubspot, client) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.post(
            "/crm/v3/objects/contacts/batch/read",
            {"inputs": [{"id": existing}, {"id": "424242"}], "properties": ["email"], "propertiesWithHistory": []},
        )
        assert response.status_code == 207
        (error,) = conforms(contacts_spec, response)["errors"]
        assert error["category"] == "OBJECT_NOT_FOUND" and error["context"] == {"ids": ["424242"]}
