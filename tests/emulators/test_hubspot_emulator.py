"""The HubSpot emulator over real HTTP: shapes, validation, partial success, limits."""

from __future__ import annotations

import json
import re
import time

import pytest

from airflow_provider_retl.testing.emulators import RunningEmulator, start_emulator

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def contact(email: str, trace: str | None = None, **props: str) -> dict:
    item: dict = {"properties": {"email": email, **props}}
    if trace is not None:
        item["objectWriteTraceId"] = trace
    return item


class TestAuth:
    """Bearer-token auth: 401 INVALID_AUTHENTICATION when missing or wrong."""

    def test_missing_token_is_401(self, hubspot: RunningEmulator, make_client) -> None:
        response = make_client(hubspot.url, token=None).get("/crm/v3/objects/contacts")
        assert response.status_code == 401
        body = response.json()
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["status"] == "error" and body["correlationId"]

    def test_wrong_token_is_401_and_writes_nothing(self, hubspot: RunningEmulator, make_client) -> None:
        response = make_client(hubspot.url, token="nope").batch("contacts", "create", [contact("a@x.com")])
        assert response.status_code == 401
        assert hubspot.emulator.records("contacts") == []

    def test_configured_tokens_are_accepted(self, make_client) -> None:
        with start_emulator("hubspot", tokens=["one", "two"], rate_limit=None) as hs:
            assert make_client(hs.url, "one").get("/crm/v3/objects/contacts").status_code == 200
            assert make_client(hs.url, "two").get("/crm/v3/objects/contacts").status_code == 200
            assert make_client(hs.url, "test-token").get("/crm/v3/objects/contacts").status_code == 401


class TestBatchCreate:
    """batch/create: shapes, the 100 limit, trace ids and all-or-nothing."""

    def test_success_shape(self, client) -> None:
        response = client.batch("contacts", "create", [contact("Ann@Example.com", firstname="Ann")])
        assert response.status_code == 201
        body = response.json()
        assert body["status"] == "COMPLETE"
        assert ISO.match(body["startedAt"]) and ISO.match(body["completedAt"])
        assert "errors" not in body and "numErrors" not in body
        (result,) = body["results"]
        assert result["id"].isdigit()
        assert ISO.match(result["createdAt"]) and ISO.match(result["updatedAt"])
        assert result["archived"] is False
        # Emails are stored lower-cased; every value is a string.
        assert result["properties"]["email"] == "ann@example.com"
        assert result["properties"]["hs_object_id"] == result["id"]
        assert all(isinstance(v, str) for v in result["properties"].values())

    def test_more_than_100_inputs_is_400_and_writes_nothing(self, hubspot, client) -> None:
        inputs = [contact(f"u{i}@x.com") for i in range(101)]
        response = client.batch("contacts", "create", inputs)
        assert response.status_code == 400
        assert response.json()["category"] == "VALIDATION_ERROR"
        assert hubspot.emulator.records("contacts") == []
        assert client.batch("contacts", "create", inputs[:100]).status_code == 201
        assert len(hubspot.emulator.records("contacts")) == 100

    def test_partial_success_needs_a_trace_id_on_every_input(self, hubspot, client) -> None:
        inputs = [
            contact("good@x.com", trace="t-good"),
            contact("not-an-email", trace="t-bad-email"),
            {"properties": {"email": "x@x.com", "no_such_prop": "1"}, "objectWriteTraceId": "t-unknown"},
        ]
        response = client.batch("contacts", "create", inputs)
        assert response.status_code == 207
        body = response.json()
        assert body["status"] == "COMPLETE" and body["numErrors"] == 2
        assert [r["objectWriteTraceId"] for r in body["results"]] == ["t-good"]
        by_trace = {e["context"]["objectWriteTraceId"][0]: e for e in body["errors"]}
        assert set(by_trace) == {"t-bad-email", "t-unknown"}
        assert by_trace["t-bad-email"]["category"] == "VALIDATION_ERROR"
        assert by_trace["t-bad-email"]["errors"][0]["code"] == "INVALID_EMAIL"
        assert by_trace["t-unknown"]["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
        assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["good@x.com"]

    def test_without_trace_ids_one_bad_input_fails_the_batch(self, hubspot, client) -> None:
        response = client.batch("contacts", "create", [contact("good@x.com"), contact("bad-email")])
        assert response.status_code == 400
        body = response.json()
        assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR" and body["correlationId"]
        assert "INVALID_EMAIL" in body["message"]
        assert body["errors"][0]["code"] == "INVALID_EMAIL"
        assert hubspot.emulator.records("contacts") == []

    def test_some_trace_ids_missing_is_still_all_or_nothing(self, hubspot, client) -> None:
        response = client.batch("contacts", "create", [contact("good@x.com", trace="t1"), contact("bad")])
        assert response.status_code == 400
        assert hubspot.emulator.records("contacts") == []

    def test_existing_email_is_409_without_trace_ids(self, hubspot, client) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "taken@x.com"}])
        response = client.batch("contacts", "create", [contact("new@x.com"), contact("TAKEN@x.com")])
        assert response.status_code == 409
        body = response.json()
        assert body["category"] == "CONFLICT"
        assert body["message"] == f"Contact already exists. Existing ID: {existing}"
        assert body["correlationId"]
        assert len(hubspot.emulator.records("contacts")) == 1

    def test_existing_email_is_a_per_input_conflict_with_trace_ids(self, hubspot, client) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "taken@x.com"}])
        response = client.batch("contacts", "create", [contact("new@x.com", "t1"), contact("taken@x.com", "t2")])
        assert response.status_code == 207
        (error,) = response.json()["errors"]
        assert error["category"] == "CONFLICT"
        assert error["context"]["objectWriteTraceId"] == ["t2"]
        assert existing in error["message"]
        assert len(hubspot.emulator.records("contacts")) == 2

    def test_same_email_twice_in_one_batch_conflicts(self, hubspot, client) -> None:
        response = client.batch("contacts", "create", [contact("dup@x.com", "t1"), contact("DUP@x.com", "t2")])
        assert response.status_code == 207
        assert response.json()["errors"][0]["context"]["objectWriteTraceId"] == ["t2"]
        assert len(hubspot.emulator.records("contacts")) == 1

    def test_unknown_object_type_is_400(self, client) -> None:
        response = client.batch("nopes", "create", [{"properties": {}}])
        assert response.status_code == 400
        assert "Unable to infer object type" in response.json()["message"]

    def test_invalid_json_is_400(self, client) -> None:
        response = client.session.post(
            client.base_url + "/crm/v3/objects/contacts/batch/create",
            data=b'{"inputs": [',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["category"] == "VALIDATION_ERROR"


class TestBatchUpdate:
    """batch/update by id or unique property; unknown ids; conflicts."""

    def test_update_by_id_and_by_email(self, hubspot, client) -> None:
        first, second = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}, {"email": "b@x.com", "phone": "1"}])
        response = client.batch(
            "contacts",
            "update",
            [
                {"id": first, "properties": {"firstname": "Ann"}},
                {"id": "B@X.com", "idProperty": "email", "properties": {"phone": ""}},
            ],
        )
        assert response.status_code == 200
        assert [r["id"] for r in response.json()["results"]] == [first, second]
        assert hubspot.emulator.get_record("contacts", first)["properties"]["firstname"] == "Ann"
        # An empty string clears the property.
        assert "phone" not in hubspot.emulator.get_record("contacts", second)["properties"]

    def test_unknown_id_with_trace_ids_is_a_per_input_error(self, hubspot, client) -> None:
        (known,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.batch(
            "contacts",
            "update",
            [
                {"id": known, "properties": {"firstname": "A"}, "objectWriteTraceId": "t1"},
                {"id": "999999", "properties": {"firstname": "B"}, "objectWriteTraceId": "t2"},
            ],
        )
        assert response.status_code == 207
        (error,) = response.json()["errors"]
        assert error["category"] == "OBJECT_NOT_FOUND"
        assert error["context"]["ids"] == ["999999"] and error["context"]["objectWriteTraceId"] == ["t2"]
        assert hubspot.emulator.get_record("contacts", known)["properties"]["firstname"] == "A"

    def test_unknown_id_without_trace_ids_fails_the_batch(self, hubspot, client) -> None:
        (known,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.batch(
            "contacts", "update", [{"id": known, "properties": {"firstname": "A"}}, {"id": "999999", "properties": {}}]
        )
        assert response.status_code == 404
        assert response.json()["category"] == "OBJECT_NOT_FOUND"
        assert "firstname" not in hubspot.emulator.get_record("contacts", known)["properties"]

    def test_duplicate_ids_are_400(self, hubspot, client) -> None:
        (known,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.batch("contacts", "update", [{"id": known, "properties": {}}] * 2)
        assert response.status_code == 400
        assert "Duplicate IDs" in response.json()["message"]

    def test_changing_email_to_a_taken_one_conflicts(self, hubspot, client) -> None:
        first, second = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}, {"email": "b@x.com"}])
        response = client.batch("contacts", "update", [{"id": second, "properties": {"email": "A@x.com"}}])
        assert response.status_code == 409
        assert response.json()["message"] == f"Contact already exists. Existing ID: {first}"


class TestBatchUpsert:
    """batch/upsert by a unique property, with the new flag."""

    def test_new_and_existing_with_the_new_flag(self, hubspot, client) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "old@x.com", "firstname": "Old"}])
        response = client.batch(
            "contacts",
            "upsert",
            [
                {"id": "OLD@x.com", "idProperty": "email", "properties": {"lastname": "Still"}},
                {"id": "fresh@x.com", "idProperty": "email", "properties": {"firstname": "Fresh"}},
            ],
        )
        assert response.status_code == 200
        results = response.json()["results"]
        assert [(r["id"] == existing, r["new"]) for r in results] == [(True, False), (False, True)]
        assert results[1]["properties"]["email"] == "fresh@x.com"
        stored = {r["properties"]["email"]: r["properties"] for r in hubspot.emulator.records("contacts")}
        assert stored["old@x.com"]["firstname"] == "Old" and stored["old@x.com"]["lastname"] == "Still"

    def test_upsert_twice_is_idempotent(self, hubspot, client) -> None:
        inputs = [{"id": "a@x.com", "idProperty": "email", "properties": {"firstname": "A"}}]
        first = client.batch("contacts", "upsert", inputs).json()["results"][0]
        second = client.batch("contacts", "upsert", inputs).json()["results"][0]
        assert (first["new"], second["new"]) == (True, False)
        assert first["id"] == second["id"]
        assert len(hubspot.emulator.records("contacts")) == 1

    def test_non_unique_id_property_is_400(self, client) -> None:
        response = client.batch("contacts", "upsert", [{"id": "Ann", "idProperty": "firstname", "properties": {}}])
        assert response.status_code == 400
        assert "non-unique" in response.json()["message"]

    def test_unknown_record_id_is_not_created(self, hubspot, client) -> None:
        response = client.batch(
            "contacts", "upsert", [{"id": "424242", "idProperty": "hs_object_id", "properties": {}}]
        )
        assert response.status_code == 404
        assert hubspot.emulator.records("contacts") == []

    def test_invalid_email_as_id_with_trace_ids(self, hubspot, client) -> None:
        response = client.batch(
            "contacts",
            "upsert",
            [
                {"id": "ok@x.com", "idProperty": "email", "properties": {}, "objectWriteTraceId": "a"},
                {"id": "broken", "idProperty": "email", "properties": {}, "objectWriteTraceId": "b"},
            ],
        )
        assert response.status_code == 207
        body = response.json()
        assert [r["new"] for r in body["results"]] == [True]
        assert body["errors"][0]["errors"][0]["code"] == "INVALID_EMAIL"
        assert body["errors"][0]["context"]["objectWriteTraceId"] == ["b"]


class TestBatchReadAndArchive:
    """batch/read (207 for missing ids) and archiving."""

    def test_read_by_email_reports_missing_ids(self, hubspot, client) -> None:
        hubspot.emulator.seed("contacts", [{"email": "a@x.com", "firstname": "A"}, {"email": "b@x.com"}])
        response = client.post(
            "/crm/v3/objects/contacts/batch/read",
            {
                "idProperty": "email",
                "properties": ["email", "firstname"],
                "inputs": [{"id": "A@x.com"}, {"id": "missing@x.com"}, {"id": "b@x.com"}],
            },
        )
        assert response.status_code == 207
        body = response.json()
        assert [r["properties"]["email"] for r in body["results"]] == ["a@x.com", "b@x.com"]
        # Requested properties that are not set come back as null.
        assert body["results"][1]["properties"] == {"email": "b@x.com", "firstname": None}
        (error,) = body["errors"]
        assert error["category"] == "OBJECT_NOT_FOUND" and error["context"]["ids"] == ["missing@x.com"]
        assert body["numErrors"] == 1

    def test_read_all_found_is_200(self, hubspot, client) -> None:
        ids = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.post("/crm/v3/objects/contacts/batch/read", {"inputs": [{"id": ids[0]}], "properties": []})
        assert response.status_code == 200
        assert set(response.json()["results"][0]["properties"]) >= {"email", "hs_object_id", "createdate"}

    def test_archive_hides_records_and_frees_the_email(self, hubspot, client) -> None:
        (gone,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.post("/crm/v3/objects/contacts/batch/archive", {"inputs": [{"id": gone}, {"id": "424242"}]})
        assert response.status_code == 204 and response.content == b""
        read = client.post(
            "/crm/v3/objects/contacts/batch/read",
            {"idProperty": "email", "inputs": [{"id": "a@x.com"}], "properties": []},
        )
        assert read.status_code == 207 and read.json()["results"] == []
        assert client.get(f"/crm/v3/objects/contacts/{gone}").status_code == 404
        assert client.batch("contacts", "create", [contact("a@x.com")]).status_code == 201
        assert hubspot.emulator.get_record("contacts", gone)["archived"] is True

    def test_update_of_archived_record_is_not_found(self, hubspot, client) -> None:
        (gone,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        assert client.delete(f"/crm/v3/objects/contacts/{gone}").status_code == 204
        response = client.batch("contacts", "update", [{"id": gone, "properties": {"firstname": "x"}}])
        assert response.status_code == 404


class TestPropertyValidation:
    """Property values are checked by type and normalised to strings."""

    @pytest.fixture
    def typed(self, client) -> None:
        for name, kind in (("score", "number"), ("signup", "date"), ("seen_at", "datetime"), ("vip", "bool")):
            response = client.post(
                "/crm/v3/properties/contacts",
                {"name": name, "label": name, "type": kind, "fieldType": "text", "groupName": "contactinformation"},
            )
            assert response.status_code == 201, response.text

    @pytest.mark.parametrize(
        ("prop", "value", "code"),
        [
            ("score", "twelve", "INVALID_INTEGER"),
            ("signup", "31/12/2024", "INVALID_DATE"),
            ("seen_at", "yesterday", "INVALID_DATE"),
            ("vip", "maybe", "INVALID_OPTION"),
            ("lifecyclestage", "not-a-stage", "INVALID_OPTION"),
            ("firstname", "x" * 65_537, "INVALID_LONG_STRING"),
        ],
    )
    def test_invalid_values(self, client, typed, prop: str, value: str, code: str) -> None:
        response = client.batch("contacts", "create", [contact("a@x.com", **{prop: value})])
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == code

    def test_values_are_normalised_to_hubspot_strings(self, client, typed) -> None:
        props_in = {
            "email": "a@x.com",
            "score": "42.0",
            "signup": "2024-03-01",
            "seen_at": "0000000000000",
            "vip": "TRUE",
        }
        response = client.batch("contacts", "create", [{"properties": props_in}])
        assert response.status_code == 201, response.text
        props = response.json()["results"][0]["properties"]
        assert props["score"] == "42"
        assert props["signup"] == "2024-03-01"
        assert props["seen_at"] == "1970-01-01T00:00:00.000Z"
        assert props["vip"] == "true"

    @pytest.mark.parametrize(
        ("value", "json_type"),
        [(42, "number"), (4.5, "number"), (True, "boolean"), (None, "null"), ({"a": "1"}, "object"), (["a"], "array")],
    )
    @pytest.mark.parametrize("action", ["create", "update", "upsert"])
    def test_non_string_values_are_refused(self, hubspot, client, typed, action: str, value, json_type: str) -> None:
        """The spec types every property value as a string; anything else fails the call, traced or not."""
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        item: dict = {"properties": {"email": "a@x.com", "score": value}, "objectWriteTraceId": "t0"}
        if action == "update":
            item["id"] = existing
        elif action == "upsert":
            item.update(id="a@x.com", idProperty="email")
        response = client.batch("contacts", action, [item, contact("b@x.com", trace="t1")])
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["category"] == "VALIDATION_ERROR"
        assert f"inputs[0].properties.score must be a string, got {json_type}" in body["message"]
        assert body["context"] == {"properties": ["score"]}
        assert [r["properties"]["email"] for r in hubspot.emulator.records("contacts")] == ["a@x.com"]

    def test_single_object_routes_refuse_non_strings_too(self, hubspot, client, typed) -> None:
        created = client.post("/crm/v3/objects/contacts", {"properties": {"email": "a@x.com", "vip": False}})
        assert created.status_code == 400 and created.json()["category"] == "VALIDATION_ERROR"
        assert hubspot.emulator.records("contacts") == []

    def test_empty_string_clears_a_property(self, hubspot, client, typed) -> None:
        (existing,) = hubspot.emulator.seed("contacts", [{"email": "a@x.com", "score": "7"}])
        response = client.batch("contacts", "update", [{"id": existing, "properties": {"score": ""}}])
        assert response.status_code == 200, response.text
        assert "score" not in hubspot.emulator.get_record("contacts", existing)["properties"]

    def test_non_strict_accepts_unknown_properties(self, make_client) -> None:
        with start_emulator("hubspot", strict_properties=False, rate_limit=None) as hs:
            response = make_client(hs.url).batch("contacts", "create", [contact("a@x.com", anything="ok")])
            assert response.status_code == 201
            assert hs.emulator.records("contacts")[0]["properties"]["anything"] == "ok"


class TestSingleObjectRoutes:
    """The one-object routes the SDK uses."""

    def test_create_get_patch_delete(self, hubspot, client) -> None:
        created = client.post("/crm/v3/objects/contacts", {"properties": {"email": "a@x.com"}})
        assert created.status_code == 201
        object_id = created.json()["id"]
        assert client.patch(f"/crm/v3/objects/contacts/{object_id}", {"properties": {"phone": "5"}}).status_code == 200
        got = client.get("/crm/v3/objects/contacts/a@x.com?idProperty=email&properties=phone,email")
        assert got.status_code == 200 and got.json()["properties"] == {"phone": "5", "email": "a@x.com"}
        assert client.delete(f"/crm/v3/objects/contacts/{object_id}").status_code == 204
        assert client.get(f"/crm/v3/objects/contacts/{object_id}").status_code == 404

    def test_create_conflict_is_409(self, hubspot, client) -> None:
        hubspot.emulator.seed("contacts", [{"email": "a@x.com"}])
        response = client.post("/crm/v3/objects/contacts", {"properties": {"email": "a@x.com"}})
        assert response.status_code == 409 and response.json()["category"] == "CONFLICT"

    def test_list_pages_with_after(self, hubspot, client) -> None:
        ids = hubspot.emulator.seed("contacts", [{"email": f"u{i}@x.com"} for i in range(5)])
        seen, after = [], None
        while True:
            params = {"limit": 2, "properties": "email"} | ({"after": after} if after else {})
            body = client.get("/crm/v3/objects/contacts", params=params).json()
            seen += [r["id"] for r in body["results"]]
            after = body.get("paging", {}).get("next", {}).get("after")
            if not after:
                break
        assert seen == ids


class TestSearch:
    """Search filters, paging and the search-index lag."""

    def test_eq_and_in_filters_with_paging(self, hubspot, client) -> None:
        hubspot.emulator.seed(
            "contacts",
            [{"email": f"u{i}@x.com", "lifecyclestage": "lead" if i % 2 else "customer"} for i in range(6)],
        )
        eq = client.post(
            "/crm/v3/objects/contacts/search",
            {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "U3@x.com"}]}]},
        ).json()
        assert eq["total"] == 1 and eq["results"][0]["properties"]["email"] == "u3@x.com"
        leads = client.post(
            "/crm/v3/objects/contacts/search",
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead"]}]}
                ],
                "properties": ["email"],
                "limit": 2,
            },
        ).json()
        assert leads["total"] == 3 and len(leads["results"]) == 2
        assert leads["paging"]["next"]["after"] == "2"

    def test_search_lag_hides_fresh_writes(self, make_client) -> None:
        with start_emulator("hubspot", rate_limit=None, search_lag=0.3) as hs:
            api = make_client(hs.url)
            api.batch("contacts", "create", [contact("a@x.com")])
            search = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "a@x.com"}]}]}
            assert api.post("/crm/v3/objects/contacts/search", search).json()["total"] == 0
            time.sleep(0.35)
            assert api.post("/crm/v3/objects/contacts/search", search).json()["total"] == 1


class TestPropertiesAndObjectTypes:
    """Property definitions and custom object types."""

    def test_email_is_a_unique_property(self, client) -> None:
        results = client.get("/crm/v3/properties/contacts").json()["results"]
        email = next(p for p in results if p["name"] == "email")
        assert email["hasUniqueValue"] is True and email["type"] == "string"

    def test_create_property_twice_is_409(self, client) -> None:
        spec = {"name": "tier", "label": "Tier", "type": "string", "fieldType": "text", "groupName": "x"}
        assert client.post("/crm/v3/properties/contacts", spec).status_code == 201
        assert client.post("/crm/v3/properties/contacts", spec).status_code == 409

    def test_custom_object_by_name_and_id(self, make_client) -> None:
        object_types = {"p_cars": ["model", {"name": "vin", "hasUniqueValue": True}]}
        with start_emulator("hubspot", rate_limit=None, object_types=object_types) as hs:
            api = make_client(hs.url)
            created = api.batch("p_cars", "create", [{"properties": {"vin": "V1", "model": "T"}}])
            assert created.status_code == 201
            type_id = next(t.object_type_id for t in hs.emulator._types.values() if t.name == "p_cars")
            upsert = api.batch(type_id, "upsert", [{"id": "V1", "idProperty": "vin", "properties": {"model": "S"}}])
            assert upsert.json()["results"][0]["new"] is False
            assert hs.emulator.records("p_cars")[0]["properties"]["model"] == "S"
            assert api.batch("p_cars", "create", [{"properties": {"vin": "V1"}}]).status_code == 409


class TestRateLimit:
    """The rolling-window rate limit per account."""

    def test_rolling_window_429_with_retry_after(self, make_client) -> None:
        with start_emulator("hubspot", rate_limit=5, rate_window=0.6) as hs:
            api = make_client(hs.url)
            answers = [api.get("/crm/v3/objects/contacts") for _ in range(7)]
            assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
            ok, limited = answers[0], answers[5]
            assert ok.headers["X-HubSpot-RateLimit-Max"] == "5"
            assert ok.headers["X-HubSpot-RateLimit-Remaining"] == "4"
            assert ok.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "600"
            body = limited.json()
            assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
            assert body["message"] == "You have reached your ten_secondly_rolling limit."
            assert body["correlationId"] and "groupName" in body
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
            time.sleep(0.65)
            assert api.get("/crm/v3/objects/contacts").status_code == 200
            assert hs.emulator.max_requests_in_window() == 5
            events = hs.emulator.rate_events
            assert [e.allowed for e in events] == [True] * 5 + [False] * 2 + [True]

    def test_limit_is_shared_per_account(self, make_client) -> None:
        tokens = {"tok-a": "acme", "tok-b": "acme", "tok-c": "other"}
        with start_emulator("hubspot", tokens=tokens, rate_limit=2, rate_window=5) as hs:
            assert make_client(hs.url, "tok-a").get("/crm/v3/objects/contacts").status_code == 200
            assert make_client(hs.url, "tok-b").get("/crm/v3/objects/contacts").status_code == 200
            assert make_client(hs.url, "tok-a").get("/crm/v3/objects/contacts").status_code == 429
            assert make_client(hs.url, "tok-c").get("/crm/v3/objects/contacts").status_code == 200

    def test_unauthenticated_requests_do_not_count(self, make_client) -> None:
        with start_emulator("hubspot", rate_limit=1, rate_window=5) as hs:
            assert make_client(hs.url, "bad").get("/crm/v3/objects/contacts").status_code == 401
            assert make_client(hs.url).get("/crm/v3/objects/contacts").status_code == 200

    def test_error_bodies_are_json(self, client) -> None:
        # Every error answer parses as JSON with HubSpot's keys (clients log them).
        response = client.batch("contacts", "create", [contact("bad")])
        assert json.loads(response.text)["status"] == "error"
