"""The Customer.io Track API emulator over real sockets: auth, v2 batches, limits, dedupe, v1 routes, the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import customerio
import pytest
import requests
from requests.adapters import HTTPAdapter

from airflow_provider_retl.testing.emulators import (
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    RunningEmulator,
    start_emulator,
)
from airflow_provider_retl.testing.emulators.customerio import is_ulid
from tests.vendor_specs import spec_path

AUTH = (CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY)
ULID_A = "01HZX3N9Q8W5K2M7R4T6V8Y0AB"
ULID_B = "01HZX3N9Q8W5K2M7R4T6V8Y0AC"


@pytest.fixture
def cio() -> Iterator[RunningEmulator]:
    with start_emulator("customerio", rate_limit=None) as running:
        yield running


@pytest.fixture
def api(cio: RunningEmulator) -> Iterator[Any]:
    session = requests.Session()
    session.auth = AUTH

    class Api:
        def batch(self, *items: dict[str, Any], **kwargs: Any) -> requests.Response:
            return session.post(cio.url + "/api/v2/batch", json={"batch": list(items)}, timeout=10, **kwargs)

        def __getattr__(self, name: str) -> Any:
            method = getattr(session, name)
            return lambda path, **kw: method(cio.url + path, timeout=10, **kw)

    yield Api()
    session.close()


def person(action: str, identifiers: dict[str, Any] | None = None, **rest: Any) -> dict[str, Any]:
    return {"type": "person", "identifiers": identifiers or {"id": "42"}, "action": action, **rest}


class TestAuth:
    def test_basic_auth_is_required(self, cio):
        assert requests.get(cio.url + "/api/v1/accounts/region", timeout=10).status_code == 401
        wrong = requests.get(cio.url + "/api/v1/accounts/region", auth=(CUSTOMERIO_SITE_ID, "nope"), timeout=10)
        assert wrong.status_code == 401 and wrong.json() == {"meta": {"errors": ["Unauthorized request"]}}
        bearer = requests.post(cio.url + "/api/v2/batch", json={"batch": []}, timeout=10,
                               headers={"Authorization": f"Bearer {CUSTOMERIO_API_KEY}"})
        assert bearer.status_code == 401

    def test_region_tells_the_workspace(self, api):
        assert api.get("/api/v1/accounts/region").json() == {
            "url": "https://track.customer.io", "region": "us", "environment_id": 101,
        }

    def test_any_credentials(self):
        with start_emulator("customerio", any_credentials=True) as cio:
            assert requests.get(cio.url + "/api/v1/accounts/region", auth=("s", "k"), timeout=10).ok
            assert requests.get(cio.url + "/api/v1/accounts/region", auth=("s", ""), timeout=10).status_code == 401


class TestPeople:
    def test_identify_upserts_by_id_and_by_email(self, cio, api):
        response = api.batch(
            person("identify", attributes={"email": "Ann@Acme.io", "plan": "free"}),
            person("identify", {"email": "bob@acme.io"}, attributes={"plan": "pro"}),
        )
        assert response.status_code == 200 and response.json() == {}
        assert api.batch(
            person("identify", {"email": "ann@acme.io"}, attributes={"plan": "pro", "seats": 3}),
            person("identify", {"email": "bob@acme.io"}, attributes={"plan": None, "id": "7"}),
        ).status_code == 200
        people = cio.emulator.people()
        assert len(people) == 2  # emails match without regard to case: no new people
        ann = cio.emulator.person("42")
        assert ann["email"] == "Ann@Acme.io" and ann["attributes"] == {"email": "Ann@Acme.io", "plan": "pro", "seats": 3}
        bob = cio.emulator.person(email="BOB@acme.io")
        assert bob["id"] == "7" and "plan" not in bob["attributes"]  # null removes; the id was set

    def test_update_only_never_creates_and_empty_values_remove(self, cio, api):
        cio.emulator.seed([{"id": "1", "plan": "pro", "city": "Oslo"}])
        api.batch(
            person("identify", {"id": "1"}, attributes={"city": "", "_update": True}),
            person("identify", {"id": "2"}, attributes={"plan": "x", "_update": True}),
        )
        assert [p["id"] for p in cio.emulator.people()] == ["1"]
        assert cio.emulator.person("1")["attributes"] == {"plan": "pro"}

    def test_delete_is_idempotent(self, cio, api):
        cio.emulator.seed([{"id": "1"}, {"id": "2", "email": "two@acme.io"}])
        assert api.batch(person("delete", {"id": "1"}), person("delete", {"email": "two@acme.io"}),
                         person("delete", {"id": "404"})).status_code == 200
        assert cio.emulator.people() == []
        assert [d["id"] for d in cio.emulator.deleted] == ["1", "2"]


class TestBatchErrors:
    def test_207_names_the_refused_operations_by_batch_index(self, cio, api):
        response = api.batch(
            person("identify", attributes={"plan": "pro"}),
            person("identify", {"id": "43"}, attributes={"bio": "x" * 1001}),
            person("event", {"id": "44"}, attributes={"a": 1}),
            {"type": "person", "action": "identify", "attributes": {}},
            person("fly", {"id": "45"}),
            person("identify", {"id": "46"}),
        )
        assert response.status_code == 207
        errors = response.json()["errors"]
        assert [(e["batch_index"], e["reason"], e["field"]) for e in errors] == [
            (1, "invalid", "attributes.bio"),
            (2, "required", "name"),
            (3, "required", "identifiers"),
            (4, "invalid", "action"),
        ]
        assert errors[0]["message"] == "Attribute value too long" and errors[1]["message"] == "Name is required"
        assert sorted(p["id"] for p in cio.emulator.people()) == ["42", "46"]  # the others were applied

    def test_limits_per_operation_and_per_request(self, cio, api):
        big = person("identify", {"id": "9"}, attributes={f"a{i}": "y" * 900 for i in range(40)})
        response = api.batch(person("identify"), big)
        assert response.status_code == 207
        assert response.json()["errors"][0] | {"message": ""} == {"batch_index": 1, "reason": "too_large",
                                                                  "field": "", "message": ""}
        items = [person("identify", {"id": str(i)}, attributes={f"a{j}": "z" * 900 for j in range(30)})
                 for i in range(20)]  # ~560 KB in all, each item under 32 KB
        whole = api.batch(*items)
        assert whole.status_code == 400 and whole.json()["errors"][0]["reason"] == "too_large"
        assert cio.emulator.person("0") is None  # nothing of a refused request is applied
        assert api.batch(*items[:10]).status_code == 200

    def test_malformed_requests_are_400(self, api):
        not_json = api.post("/api/v2/batch", data=b"{nope", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400 and "errors" in not_json.json()
        assert api.post("/api/v2/batch", json={"items": []}).json()["errors"][0]["field"] == "batch"


class TestEvents:
    def test_an_event_id_is_processed_once(self, cio, api):
        first = person("event", name="purchase", id=ULID_A, timestamp=1767225600, attributes={"total": 9.5})
        assert api.batch(first, person("event", name="purchase", id=ULID_B)).status_code == 200
        again = api.batch(first, person("event", {"id": "other"}, name="renamed", id=ULID_A.lower()))
        assert again.status_code == 200  # duplicates are accepted and ignored, not errors
        processed = cio.emulator.events()
        assert [e["id"] for e in processed] == [ULID_A, ULID_B]
        assert processed[0]["timestamp"] == 1767225600 and processed[0]["attributes"] == {"total": 9.5}
        assert cio.emulator.duplicate_events == 2 and len(cio.emulator.events(include_duplicates=True)) == 4
        assert cio.emulator.person("42") is not None  # an event for an unknown person creates them

    def test_event_fields_are_checked(self, api):
        response = api.batch(
            person("event", name="x", id="not-a-ulid"),
            person("event", name="x", timestamp="yesterday"),
            person("event", name="n" * 101),
            person("page", name="/pricing"),
        )
        assert [(e["batch_index"], e["field"]) for e in response.json()["errors"]] == [
            (0, "id"), (1, "timestamp"), (2, "name"),
        ]

    def test_an_event_attaches_to_the_person_its_identifiers_name(self, cio, api):
        ann, bob = cio.emulator.seed([{"id": "c1", "email": "ann@acme.io"}, {"id": "c2", "email": "bob@acme.io"}])
        response = api.batch(
            person("event", {"id": "c1"}, name="ordered", id=ULID_A, attributes={"order_id": "o1"}),
            person("event", {"email": "BOB@acme.io"}, name="ordered", id=ULID_B, attributes={"order_id": "o2"}),
        )
        assert response.status_code == 200
        assert api.post("/api/v2/entity", json=person("event", {"cio_id": ann}, name="viewed")).status_code == 200
        by_order = {e["attributes"].get("order_id"): e["person"] for e in cio.emulator.events()}
        assert by_order == {"o1": ann, "o2": bob, None: ann}
        assert len(cio.emulator.people()) == 2  # nobody created under an event's own id or attributes

    def test_ulid_syntax(self):
        assert is_ulid(ULID_A) and is_ulid(ULID_A.lower())
        assert not is_ulid("81HZX3N9Q8W5K2M7R4T6V8Y0AB") and not is_ulid("01HZX3N9Q8W5K2M7R4T6V8Y0AU")


class TestRateLimitsAndFaults:
    def test_429_over_the_limit_with_retry_after(self):
        with start_emulator("customerio", rate_limit=3, rate_window=60) as cio:
            codes = [requests.get(cio.url + "/api/v1/accounts/region", auth=AUTH, timeout=10) for _ in range(4)]
            assert [r.status_code for r in codes] == [200, 200, 200, 429]
            assert int(codes[-1].headers["Retry-After"]) >= 1 and codes[-1].json()["meta"]["errors"]

    def test_a_lost_response_still_applies_the_batch(self, cio, api):
        cio.faults.fail_next(1, "lost_response")
        with pytest.raises(requests.ConnectionError):
            api.batch(person("event", name="signup", id=ULID_A))
        assert [e["id"] for e in cio.emulator.events()] == [ULID_A]

    def test_admin_state(self, cio, api):
        api.batch(person("identify"), person("event", name="signup", id=ULID_A))
        state = requests.get(cio.url + "/_emulator/state", timeout=10).json()
        assert [p["id"] for p in state["people"]] == ["42"] and state["events"][0]["name"] == "signup"
        assert state["stats"]["operations"] == 2 and state["duplicate_events"] == 0
        requests.post(cio.url + "/_emulator/reset", timeout=10)
        assert cio.emulator.people() == [] and cio.emulator.request_count() == 0


class _PlainHttp(HTTPAdapter):
    """The SDK always builds https:// URLs; the emulator serves plain HTTP on the same host and port."""

    def send(self, request, *args, **kwargs):  # type: ignore[override]
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


SPEC = spec_path("customerio-track-openapi.json")

#: Operations whose validity Customer.io's Track API document decides (schema ``person_operations``).
CORPUS = [
    person("event", name="ordered"),
    person(
        "event",
        {"email": "ann@acme.io"},
        name="ordered",
        id=ULID_A,
        timestamp=1767225600,
        attributes={"total": 9.5, "recipient": "ann@acme.io"},
    ),
    person("event", {"cio_id": "03000001"}, name="ordered"),  # the first person seeded
    person("identify", attributes={"plan": "pro", "_update": False}, timestamp=1767225600),
    person("delete", {"id": "gone"}),
    person("event", {"id": "42", "email": "ann@acme.io"}, name="ordered"),  # two identifiers
    {"type": "person", "identifiers": {}, "action": "event", "name": "ordered"},
    person("event", {"id": 42}, name="ordered"),  # identifiers are strings
    person("event", {"phone_number": "+14155552671"}, name="ordered"),
    person("event"),  # no name
    person("event", name=7),
    person("event", name="ordered", timestamp=1767225600.5),
    person("event", name="ordered", timestamp="2026-01-01"),
    person("event", name="ordered", id=123),
    person("event", name="ordered", attributes=["not", "an", "object"]),
    person("event", name="ordered", attributes={"recipient": 42}),
    person("identify", attributes={"_update": "yes"}),
    person("identify", timestamp=1.5),
    {"type": "person", "action": "event", "name": "ordered"},  # no identifiers
    {"identifiers": {"id": "42"}, "action": "event", "name": "ordered"},  # no type
    {"type": "person", "identifiers": {"id": "42"}},  # no action
]


def document_accepts(body: dict[str, Any]) -> bool:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    if not SPEC.exists():
        pytest.fail(f"Customer.io's Track API document is missing: {SPEC}")
    registry = Registry().with_resource(
        "urn:cio", Resource.from_contents(json.loads(SPEC.read_text()), default_specification=DRAFT202012)
    )
    schema = {"$ref": "urn:cio#/components/schemas/person_operations"}
    return Draft202012Validator(schema, registry=registry).is_valid(body)


class TestTheDocument:
    """What Customer.io's own OpenAPI document of the Track API accepts, the emulator accepts, and no more."""

    def test_the_entity_route_and_each_batch_item_follow_the_document(self, cio, api):
        assert cio.emulator.seed([{"id": "seeded"}]) == ["03000001"]
        verdicts = [document_accepts(body) for body in CORPUS]
        assert verdicts[:5] == [True] * 5 and not any(verdicts[5:])  # the corpus means what it says
        entity = [api.post("/api/v2/entity", json=body).status_code for body in CORPUS]
        assert entity == [200 if ok else 400 for ok in verdicts], list(zip(entity, verdicts, strict=True))
        batch = api.batch(*CORPUS)
        refused = {e["batch_index"] for e in batch.json()["errors"]}
        assert batch.status_code == 207 and refused == {i for i, ok in enumerate(verdicts) if not ok}

    def test_entity_is_one_operation_under_32kb(self, cio, api):
        big = person("event", name="ordered", attributes={f"a{i}": "y" * 900 for i in range(40)})
        response = api.post("/api/v2/entity", json=big)
        assert response.status_code == 400 and response.json()["errors"][0]["reason"] == "too_large"
        assert cio.emulator.events() == []
        wrong = api.post("/api/v2/entity", json=person("event", {"id": "1", "email": "a@acme.io"}, name="x"))
        assert wrong.status_code == 400 and wrong.json()["errors"][0]["field"] == "identifiers"


@pytest.fixture
def sdk(cio: RunningEmulator) -> Iterator[customerio.CustomerIO]:
    port = int(cio.url.rsplit(":", 1)[1])
    client = customerio.CustomerIO(CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY, host="127.0.0.1", port=port, retries=0)
    client.http.mount(f"https://127.0.0.1:{port}", _PlainHttp())
    yield client
    client.close()


class TestOfficialSdk:
    def test_identify_track_delete(self, cio, sdk):
        sdk.identify("5", email="five@acme.io", plan="basic")
        sdk.identify("five@acme.io", plan="pro")  # a path with @ names the person by email
        assert cio.emulator.person("5")["attributes"] == {"email": "five@acme.io", "plan": "pro"}
        sdk.track("5", "purchase", {"total": 12}, id=ULID_A, timestamp=1767225600)
        sdk.track("5", "purchase", {"total": 12}, id=ULID_A)
        sdk.track("5", "page_view")
        assert [(e["name"], e["id"]) for e in cio.emulator.events()] == [("purchase", ULID_A), ("page_view", None)]
        assert cio.emulator.duplicate_events == 1
        sdk.delete("5")
        assert cio.emulator.people() == []
        assert cio.emulator.request_count("PUT /api/v1/customers/5") == 1

    def test_batch_and_errors(self, cio, sdk):
        sdk.batch([person("identify", {"id": "8"}, attributes={"plan": "pro"}),
                   person("event", {"id": "8"}, name="upgraded", id=ULID_B)])
        assert cio.emulator.person("8")["attributes"] == {"plan": "pro"} and cio.emulator.events()[0]["id"] == ULID_B
        with pytest.raises(customerio.CustomerIOException, match="400"):
            sdk.track("8", "")  # Name is required
        bad = customerio.CustomerIO(CUSTOMERIO_SITE_ID, "wrong", host="127.0.0.1", port=sdk.port, retries=0)
        bad.http.mount(f"https://127.0.0.1:{sdk.port}", _PlainHttp())
        with pytest.raises(customerio.CustomerIOException, match="401"):
            bad.identify("9", plan="x")
        bad.close()
