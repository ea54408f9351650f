"""The Braze emulator over real HTTP: auth, /users/track shapes and limits, delete, export, rate limits, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import (
    BRAZE_API_KEY,
    RunningEmulator,
    start_emulator,
)
from airflow_provider_retl.testing.emulators.braze import (
    IDENTIFIER_REQUIRED,
    NO_VALID_DATA,
)
from airflow_provider_retl.testing.emulators.cli import _braze_options, build_parser


class BrazeClient:
    def __init__(self, base_url: str, key: str | None = BRAZE_API_KEY) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.session.post(self.base_url + path, json=body, timeout=10)

    def track(self, **arrays: Any) -> requests.Response:
        return self.post("/users/track", arrays)

    def export(self, *external_ids: str, **extra: Any) -> dict[str, Any]:
        response = self.post("/users/export/ids", {"external_ids": list(external_ids), **extra})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def braze() -> Iterator[RunningEmulator]:
    with start_emulator("braze", rate_limit=None, export_rate_limit=None) as running:
        yield running


@pytest.fixture
def api(braze) -> Iterator[BrazeClient]:
    client = BrazeClient(braze.url)
    yield client
    client.session.close()


def event(external_id: str, name: str = "welcome", time: str = "2026-01-02T10:00:00Z", **properties: Any) -> dict:
    body: dict[str, Any] = {"external_id": external_id, "name": name, "time": time}
    if properties:
        body["properties"] = properties
    return body


def purchase(external_id: str, **overrides: Any) -> dict:
    return {"external_id": external_id, "product_id": "plan", "currency": "USD", "price": 9.5,
            "time": "2026-01-02T10:00:00Z", **overrides}


class TestAuth:
    @pytest.mark.parametrize("key", [None, "wrong-key"])
    def test_missing_or_unknown_key_is_401(self, braze, key):
        response = BrazeClient(braze.url, key).track(attributes=[{"external_id": "u1"}])
        assert response.status_code == 401 and response.json() == {"message": "Invalid API Key"}
        assert braze.emulator.users() == []

    def test_any_key_mode_and_workspaces(self):
        with start_emulator("braze", api_keys={"k1": "ws1", "k2": "ws2"}) as running:
            assert BrazeClient(running.url, "k1").track(attributes=[{"external_id": "a"}]).status_code == 201
            assert [u["external_id"] for u in running.emulator.users("ws1")] == ["a"]
            assert running.emulator.users("ws2") == []
        with start_emulator("braze", api_keys=None) as running:
            assert BrazeClient(running.url, "anything").track(attributes=[{"external_id": "a"}]).status_code == 201


class TestTrack:
    def test_attributes_events_and_purchases_in_one_call(self, braze, api):
        response = api.track(
            attributes=[{"external_id": "u1", "first_name": "Ann", "email": "ann@example.com", "plan": "pro"}],
            events=[event("u1", plan="pro"), event("u2", "trial_started")],
            purchases=[purchase("u1", quantity=2)],
        )
        assert response.status_code == 201
        assert response.json() == {"message": "success", "attributes_processed": 1, "events_processed": 2,
                                   "purchases_processed": 1}
        u1 = braze.emulator.user("u1")
        assert u1["attributes"] == {"first_name": "Ann", "email": "ann@example.com", "plan": "pro"}
        assert [e["name"] for e in u1["events"]] == ["welcome"] and u1["events"][0]["properties"] == {"plan": "pro"}
        assert braze.emulator.user("u2") is not None  # an event creates its user
        assert braze.emulator.purchases()[0]["quantity"] == 2

    def test_partial_failure_lists_errors_by_array_and_index(self, braze, api):
        response = api.track(
            attributes=[{"first_name": "no id"}, {"external_id": "u1", "email": "not-an-email"},
                        {"external_id": "u2", "first_name": "ok"}],
            events=[event("u1"), {"external_id": "u1", "name": 5, "time": "2026-01-01T00:00:00Z"},
                    event("u1", time="yesterday"), {"external_id": "u1", "time": "2026-01-01T00:00:00Z"}],
            purchases=[purchase("u2", quantity=101), purchase("u2", currency="dollars")],
        )
        assert response.status_code == 201
        body = response.json()
        assert body["message"] == "success"
        assert body["attributes_processed"] == 1 and body["events_processed"] == 1
        assert "purchases_processed" not in body  # no valid purchase: no count, as Braze answers
        assert body["errors"] == [
            {"type": IDENTIFIER_REQUIRED, "input_array": "attributes", "index": 0},
            {"type": "'email' is not valid", "input_array": "attributes", "index": 1},
            {"type": "'name' is not valid", "input_array": "events", "index": 1},
            {"type": "'time' is not valid", "input_array": "events", "index": 2},
            {"type": "'name' is required", "input_array": "events", "index": 3},
            {"type": "'quantity' is not valid", "input_array": "purchases", "index": 0},
            {"type": "'currency' is not valid", "input_array": "purchases", "index": 1},
        ]
        assert braze.emulator.user("u1")["attributes"] == {}  # its invalid attributes object was skipped
        assert len(braze.emulator.events()) == 1

    def test_nothing_valid_is_a_400_with_the_errors(self, braze, api):
        response = api.track(events=[{"name": "x", "time": "2026-01-01T00:00:00Z"}])
        assert response.status_code == 400
        assert response.json() == {"message": NO_VALID_DATA,
                                   "errors": [{"type": IDENTIFIER_REQUIRED, "input_array": "events", "index": 0}]}
        assert api.track().status_code == 400

    def test_75_objects_per_array(self, braze, api):
        ok = api.track(attributes=[{"external_id": f"a{i}"} for i in range(75)],
                       events=[event(f"e{i}") for i in range(75)], purchases=[purchase(f"p{i}") for i in range(75)])
        assert ok.status_code == 201 and len(braze.emulator.users()) == 225
        too_many = api.track(events=[event(f"x{i}") for i in range(76)])
        assert too_many.status_code == 400 and too_many.json()["message"] == "Max Input Length Exceeded"
        assert len(braze.emulator.events()) == 75  # nothing of the refused call was applied

    def test_a_combined_limit_across_arrays(self):
        with start_emulator("braze", max_per_request=50) as running:
            api = BrazeClient(running.url)
            response = api.track(attributes=[{"external_id": f"a{i}"} for i in range(30)],
                                 events=[event(f"e{i}") for i in range(21)])
            assert response.status_code == 400 and response.json()["message"] == "Max Input Length Exceeded"
            assert api.track(attributes=[{"external_id": "a"}] * 25, events=[event("e")] * 25).status_code == 201

    def test_update_existing_only_never_creates(self, braze, api):
        braze.emulator.seed_user("known", plan="free")
        response = api.track(attributes=[{"external_id": "known", "plan": "pro", "_update_existing_only": True},
                                         {"external_id": "unknown", "plan": "pro", "_update_existing_only": True}])
        assert response.status_code == 201 and response.json()["attributes_processed"] == 2  # accepted silently
        assert braze.emulator.user("known")["attributes"] == {"plan": "pro"}
        assert braze.emulator.user("unknown") is None and braze.emulator.update_only_skips() == 1

    def test_alias_only_users_need_the_flag_false(self, braze, api):
        alias = {"alias_name": "device-1", "alias_label": "device"}
        api.track(attributes=[{"user_alias": alias, "first_name": "A"}])
        assert braze.emulator.users() == []  # update-only by default for aliases
        api.track(attributes=[{"user_alias": alias, "first_name": "A", "_update_existing_only": False}])
        assert braze.emulator.users()[0]["user_aliases"] == [alias]

    def test_null_removes_and_inc_add_remove(self, braze, api):
        api.track(attributes=[{"external_id": "u", "a": 1, "visits": 1, "tags": ["x", "y"]}])
        api.track(attributes=[{"external_id": "u", "a": None, "visits": {"inc": 2},
                               "tags": {"add": ["z", "x"], "remove": ["y"]}}])
        assert braze.emulator.user("u")["attributes"] == {"visits": 3, "tags": ["z", "x"]}

    def test_every_event_is_kept_duplicates_included_and_times_normalised(self, braze, api):
        api.track(events=[event("u", time="2026-01-02T11:00:00+01:00"),
                          event("u", time="2026-01-02T11:00:00:000+0100")])
        api.track(events=[event("u", time="2999-01-01T00:00:00Z")])
        times = [e["time"] for e in braze.emulator.events()]
        assert times[:2] == ["2026-01-02T10:00:00.000Z"] * 2
        assert times[2] < "2999"  # a future time becomes "now"

    def test_maintenance_queues_then_applies(self, braze, api):
        braze.emulator.set_maintenance(True)
        response = api.track(events=[event("u")])
        assert response.status_code == 202 and response.json() == {"message": "queued"}
        assert braze.emulator.events() == [] and braze.emulator.queued() == 1
        off = requests.post(braze.url + "/_emulator/maintenance", json={"on": False}, timeout=10).json()
        assert off == {"maintenance": False, "applied": 1}
        assert len(braze.emulator.events()) == 1


class TestDeleteAndExport:
    def test_delete_by_external_id(self, braze, api):
        api.track(attributes=[{"external_id": "a"}, {"external_id": "b"}], events=[event("a")])
        response = api.post("/users/delete", {"external_ids": ["a", "never-existed"]})
        assert response.status_code == 201 and response.json() == {"deleted": 1, "message": "success"}
        assert [u["external_id"] for u in braze.emulator.users()] == ["b"]
        assert braze.emulator.deleted() == ["a"] and len(braze.emulator.events()) == 1  # history outlives the user
        assert api.export("a")["invalid_user_ids"] == ["a"]

    def test_delete_limits(self, api):
        too_many = api.post("/users/delete", {"external_ids": [str(i) for i in range(51)]})
        assert too_many.status_code == 400
        assert too_many.json()["message"] == "The max number of external_ids and aliases per request was exceeded"
        assert api.post("/users/delete", {"external_ids": ["a"], "braze_ids": ["b"]}).status_code == 400
        assert api.post("/users/delete", {}).status_code == 400

    def test_export_summarises_events_and_purchases(self, braze, api):
        api.track(attributes=[{"external_id": "u", "first_name": "Ann", "plan": "pro"}],
                  events=[event("u", time="2026-01-01T00:00:00Z"), event("u", time="2026-02-01T00:00:00Z"),
                          event("u", "churned", time="2026-03-01T00:00:00Z")],
                  purchases=[purchase("u", quantity=3)])
        data = api.export("u", "nobody")
        assert data["message"] == "success" and data["invalid_user_ids"] == ["nobody"]
        user = data["users"][0]
        assert user["external_id"] == "u" and user["first_name"] == "Ann"
        assert user["custom_attributes"] == {"plan": "pro"}
        assert user["custom_events"] == [
            {"name": "welcome", "first": "2026-01-01T00:00:00.000Z", "last": "2026-02-01T00:00:00.000Z", "count": 2},
            {"name": "churned", "first": "2026-03-01T00:00:00.000Z", "last": "2026-03-01T00:00:00.000Z", "count": 1},
        ]
        assert user["purchases"] == [{"name": "plan", "first": "2026-01-02T10:00:00.000Z",
                                      "last": "2026-01-02T10:00:00.000Z", "count": 3}]
        only = api.export("u", fields_to_export=["external_id", "custom_events"])["users"][0]
        assert set(only) == {"external_id", "custom_events"}

    def test_export_limits(self, api):
        assert api.post("/users/export/ids", {"external_ids": [str(i) for i in range(51)]}).status_code == 400
        assert api.post("/users/export/ids", {"external_ids": ["a"], "fields_to_export": ["nope"]}).status_code == 400
        assert api.post("/users/export/ids", {}).status_code == 400


class TestRateLimitsAndFaults:
    def test_rate_limit_headers_and_429(self):
        with start_emulator("braze", rate_limit=2, rate_window=60) as running:
            api = BrazeClient(running.url)
            first = api.track(attributes=[{"external_id": "a"}])
            second = api.track(attributes=[{"external_id": "b"}])
            third = api.track(attributes=[{"external_id": "c"}])
            assert first.headers["X-RateLimit-Limit"] == "2"
            assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
            assert third.status_code == 429 and "Retry-After" not in third.headers
            reset = int(third.headers["X-RateLimit-Reset"])
            assert time.time() <= reset <= time.time() + 61
            assert running.emulator.user("c") is None
            assert running.emulator.track_limiter.max_in_window() == 2
            # Export has its own quota.
            assert api.post("/users/export/ids", {"external_ids": ["a"]}).headers["X-RateLimit-Limit"] == "250"

    def test_injected_error_applies_nothing_and_lost_response_applies(self, braze, api):
        braze.faults.fail_next(1, "error")
        response = api.track(events=[event("u")])
        assert response.status_code >= 500 and "message" in response.json()
        assert braze.emulator.events() == []
        braze.faults.fail_next(1, "lost_response")
        with pytest.raises(requests.ConnectionError):
            api.track(events=[event("u")])
        assert len(braze.emulator.events()) == 1

    def test_admin_state_and_requests(self, braze, api):
        api.track(events=[event("u")])
        state = requests.get(braze.url + "/_emulator/state", timeout=10).json()
        assert state["workspaces"]["workspace"]["events_received"] == 1
        assert braze.emulator.request_count("POST /users/track") == 1


def test_cli_subcommand():
    args = build_parser().parse_args(["braze", "--port", "0", "--api-key", "k", "--max-per-request", "50"])
    options = _braze_options(args)
    assert options["api_keys"] == ["k"] and options["max_per_request"] == 50 and options["rate_limit"] == 3000
