"""The Zendesk Support emulator over real sockets: auth, bulk jobs, limits, validation, zenpy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import (
    ZENDESK_API_TOKEN,
    ZENDESK_EMAIL,
    ZENDESK_OAUTH_TOKEN,
    RunningEmulator,
    start_emulator,
)

from .test_emulator_cli import read_urls, run_cli  # noqa: F401  (the fixture)

USERS_UPSERT = "/api/v2/users/create_or_update_many.json"


class Client:
    """A requests session with Zendesk API token auth, and a job poller."""

    def __init__(self, url: str, auth: Any = (f"{ZENDESK_EMAIL}/token", ZENDESK_API_TOKEN)) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.auth = auth

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url + path, **kwargs)

    def job(self, response: requests.Response, timeout: float = 5.0) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        job = response.json()["job_status"]
        deadline = time.monotonic() + timeout
        while job["status"] in ("queued", "working"):
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
            job = self.call("GET", f"/api/v2/job_statuses/{job['id']}.json").json()["job_status"]
        return job

    def upsert(self, users: list[dict[str, Any]], kind: str = "users") -> list[dict[str, Any]]:
        job = self.job(self.call("POST", f"/api/v2/{kind}/create_or_update_many.json", json={kind: users}))
        assert job["status"] == "completed", job
        return job["results"]


@pytest.fixture
def zendesk() -> Iterator[RunningEmulator]:
    fields = {"plan": "text", "seats": "integer", "tier": {"type": "dropdown", "options": ["gold", "silver"]}}
    with start_emulator("zendesk", user_fields=fields, organization_fields={"region": "text"},
                        processing_seconds=0.02, rate_limit=None) as running:
        yield running


@pytest.fixture
def client(zendesk: RunningEmulator) -> Iterator[Client]:
    api = Client(zendesk.url)
    yield api
    api.session.close()


class TestAuth:
    def test_token_and_oauth_accepted_and_the_rest_refused(self, zendesk, client):
        assert client.call("GET", "/api/v2/users/me.json").json()["user"]["email"] == ZENDESK_EMAIL
        bearer = requests.get(zendesk.url + "/api/v2/users/me", timeout=5,
                              headers={"Authorization": f"Bearer {ZENDESK_OAUTH_TOKEN}"})
        assert bearer.status_code == 200
        for auth in [None, (f"{ZENDESK_EMAIL}/token", "wrong"), (ZENDESK_EMAIL, ZENDESK_API_TOKEN),
                     ("other@example.com/token", ZENDESK_API_TOKEN)]:
            refused = requests.get(zendesk.url + "/api/v2/users/me.json", auth=auth, timeout=5)
            assert refused.status_code == 401
            assert refused.json() == {"error": "Couldn't authenticate you"}
        wrong_bearer = requests.get(zendesk.url + "/api/v2/users/me", timeout=5,
                                    headers={"Authorization": "Bearer nope"})
        assert wrong_bearer.status_code == 401


class TestBulkJobs:
    def test_upsert_is_a_job_with_results_in_request_order(self, zendesk, client):
        response = client.call("POST", USERS_UPSERT, json={"users": [
            {"name": "Ann", "email": "ann@example.com", "external_id": "A1"},
            {"name": "Bob", "email": "bob@", "external_id": "B1"},
            {"name": "Cy", "external_id": "C1", "phone": "+14155550100"},
        ]})
        queued = response.json()["job_status"]
        assert queued["status"] == "queued" and queued["results"] is None and queued["total"] == 3
        assert queued["url"].endswith(f"/api/v2/job_statuses/{queued['id']}.json")
        assert zendesk.emulator.users() == []  # nothing happened yet: the work is asynchronous
        job = client.job(response)
        assert job["status"] == "completed" and job["progress"] == 3
        created, failed, third = job["results"]
        assert created["status"] == "Created" and created["email"] == "ann@example.com"
        assert created["action"] == "create" and created["success"] is True
        assert failed == {"id": 1, "action": "upsert", "success": False,
                          "error": "UserUpdateError", "details": "Email: bob@ is not properly formatted"}
        assert third["status"] == "Created" and third["external_id"] == "C1"

        again = client.upsert([{"external_id": "c1", "name": "Cyrus"}, {"email": "ANN@example.com", "notes": "x"}])
        assert [r["status"] for r in again] == ["Updated", "Updated"]
        assert [r["id"] for r in again] == [third["id"], created["id"]]
        assert zendesk.emulator.find("users", external_id="C1")["name"] == "Cyrus"
        assert zendesk.emulator.find("users", email="ann@example.com")["notes"] == "x"

    def test_external_id_is_matched_before_email(self, zendesk, client):
        first = client.upsert([{"name": "A", "email": "a@example.com", "external_id": "X"}])[0]
        result = client.upsert([{"external_id": "X", "email": "new@example.com"}])[0]
        assert result["id"] == first["id"] and result["status"] == "Updated"
        # No user has external id Y: the email matches, and the user gets Y.
        adopted = client.upsert([{"external_id": "Y", "email": "NEW@example.com"}])[0]
        assert adopted["id"] == first["id"] and zendesk.emulator.find("users", external_id="y") is not None
        client.upsert([{"name": "Z", "email": "z@example.com", "external_id": "Z"}])
        taken = client.upsert([{"external_id": "Z", "email": "new@example.com"}])[0]
        assert taken["success"] is False and "already being used by another user" in taken["details"]

    def test_more_than_100_records_is_refused_before_any_job(self, zendesk, client):
        users = [{"name": f"u{i}", "external_id": str(i)} for i in range(101)]
        response = client.call("POST", USERS_UPSERT, json={"users": users})
        assert response.status_code == 400 and response.json()["error"] == "TooManyValues"
        assert zendesk.emulator.jobs() == []

    def test_organizations_have_no_create_or_update_many(self, zendesk, client):
        """Zendesk documents create_or_update_many for users only: for organizations it is the 404 of any
        unknown endpoint, and nothing is queued."""
        response = client.call("POST", "/api/v2/organizations/create_or_update_many.json",
                               json={"organizations": [{"name": "Acme", "external_id": "org-1"}]})
        assert response.status_code == 404
        assert response.json() == {"error": "InvalidEndpoint", "description": "Not found"}
        assert zendesk.emulator.jobs() == [] and zendesk.emulator.organizations() == []

    def test_organizations_create_many_update_many_and_lookups(self, zendesk, client):
        job = client.job(client.call("POST", "/api/v2/organizations/create_many.json", json={"organizations": [
            {"name": "Acme", "external_id": "org-1", "organization_fields": {"region": "EU"}},
            {"external_id": "org-2"},
            {"name": "acme", "external_id": "org-3"},
        ]}))
        assert job["status"] == "completed" and job["total"] == 3
        created, nameless, taken = job["results"]
        assert set(created) == {"id", "index"} and created["index"] == 0  # CreateResourceResult
        assert nameless == {"id": 1, "action": "create", "success": False,
                            "error": "OrganizationCreateError", "details": "Name: is too short (minimum is 1 character)"}
        assert taken["success"] is False and taken["details"] == "Name: acme has already been taken"
        shown = client.call("GET", "/api/v2/organizations/show_many.json", params={"external_ids": "ORG-1,org-2"})
        assert [o["id"] for o in shown.json()["organizations"]] == [created["id"]]
        by_ext = client.call("GET", "/api/v2/organizations/search.json", params={"external_id": "org-1"}).json()
        by_name = client.call("GET", "/api/v2/organizations/search.json", params={"name": "ACME"}).json()
        assert [o["id"] for o in by_ext["organizations"]] == [o["id"] for o in by_name["organizations"]] == [
            created["id"]]
        job = client.job(client.call("PUT", "/api/v2/organizations/update_many.json", json={"organizations": [
            {"id": created["id"], "notes": "Priority"}, {"id": 999, "notes": "ghost"}]}))
        ok, missing = job["results"]
        assert ok == {"id": created["id"], "action": "update", "success": True, "status": "Updated"}
        assert missing["id"] == 999 and missing["success"] is False and missing["error"] == "RecordNotFound"
        assert missing["details"] and missing["action"] == "update"
        # The bulk form: one change, targets in the query string (by external id here).
        job = client.job(client.call("PUT", "/api/v2/organizations/update_many.json",
                                     params={"external_ids": "org-1"}, json={"organization": {"details": "d"}}))
        assert [r["status"] for r in job["results"]] == ["Updated"]
        org = zendesk.emulator.find("organizations", external_id="ORG-1")
        assert (org["notes"], org["details"], org["organization_fields"]) == ("Priority", "d", {"region": "EU"})
        # The single-record create_or_update matches on external id (201 created, 200 updated).
        one = client.call("POST", "/api/v2/organizations/create_or_update.json",
                          json={"organization": {"external_id": "org-1", "notes": "again"}})
        assert one.status_code == 200 and one.json()["organization"]["id"] == created["id"]

    def test_update_many_and_destroy_many_by_id(self, zendesk, client):
        ids = [r["id"] for r in client.upsert([{"name": n, "external_id": n} for n in "abc"])]
        job = client.job(client.call("PUT", "/api/v2/users/update_many.json", json={"users": [
            {"id": ids[0], "phone": "+442079460958"}, {"id": 999, "name": "ghost"}]}))
        ok, missing = job["results"]
        assert ok == {"id": ids[0], "action": "update", "success": True, "status": "Updated"}
        assert missing["success"] is False and missing["error"] == "RecordNotFound"
        job = client.job(client.call("DELETE", "/api/v2/users/destroy_many.json",
                                     params={"ids": f"{ids[1]},{ids[2]},999"}))
        assert [r.get("status") for r in job["results"]] == ["Deleted", "Deleted", None]
        assert job["results"][2]["success"] is False and job["results"][2]["error"] == "RecordNotFound"
        shown = client.call("GET", "/api/v2/users/show_many.json", params={"ids": ",".join(map(str, ids))}).json()
        assert [u["id"] for u in shown["users"]] == [ids[0]]
        assert len(zendesk.emulator.users(include_deleted=True)) == 3

    def test_custom_fields_phones_and_unknown_keys(self, zendesk, client):
        definitions = client.call("GET", "/api/v2/user_fields.json").json()["user_fields"]
        assert {d["key"]: d["type"] for d in definitions} == {"plan": "text", "seats": "integer", "tier": "dropdown"}
        tier = next(d for d in definitions if d["key"] == "tier")
        assert [o["value"] for o in tier["custom_field_options"]] == ["gold", "silver"]
        results = client.upsert([
            {"name": "a", "external_id": "a", "user_fields": {"plan": "pro", "seats": "12", "nope": 1}},
            {"name": "b", "external_id": "b", "user_fields": {"seats": "many"}},
            {"name": "c", "external_id": "c", "user_fields": {"tier": "bronze"}},
            {"name": "d", "external_id": "d", "phone": "call me"},
        ])
        assert [(r["success"], r.get("status")) for r in results] == [(True, "Created")] + [(False, None)] * 3
        assert "integer" in results[1]["details"] and "options" in results[2]["details"]
        assert results[3]["details"] == "Phone: call me is not a valid phone number"
        stored = zendesk.emulator.find("users", external_id="a")["user_fields"]
        assert stored == {"plan": "pro", "seats": 12, "tier": None}  # the unknown key was dropped

    def test_unknown_custom_fields_can_be_refused(self):
        with start_emulator("zendesk", unknown_custom_fields="reject", processing_seconds=0, rate_limit=None) as zd:
            result = Client(zd.url).upsert([{"name": "a", "external_id": "a", "user_fields": {"nope": 1}}])[0]
        assert result["success"] is False and "nope" in result["details"]

    def test_failed_and_killed_jobs_have_no_results(self, zendesk, client):
        zendesk.emulator.fail_next_jobs(1, "killed")
        job = client.job(client.call("POST", USERS_UPSERT, json={"users": [{"name": "a", "external_id": "a"}]}))
        assert job["status"] == "killed" and job["results"] is None
        assert zendesk.emulator.users() == []

    def test_jobs_expire(self):
        with start_emulator("zendesk", processing_seconds=0, job_ttl=0.2, rate_limit=None) as zd:
            api = Client(zd.url)
            job = api.job(api.call("POST", USERS_UPSERT, json={"users": [{"name": "a", "external_id": "a"}]}))
            time.sleep(0.3)
            gone = api.call("GET", f"/api/v2/job_statuses/{job['id']}.json")
        assert gone.status_code == 404 and gone.json()["error"] == "RecordNotFound"


class TestLimits:
    def test_the_31st_queued_job_is_429(self, zendesk, client):
        zendesk.emulator.hold_jobs()
        body = {"users": [{"name": "a", "external_id": "a"}]}
        for _ in range(30):
            assert client.call("POST", USERS_UPSERT, json=body).status_code == 200
        refused = client.call("POST", USERS_UPSERT, json=body)
        assert refused.status_code == 429 and refused.json()["error"] == "TooManyJobs"
        assert int(refused.headers["Retry-After"]) >= 1
        assert zendesk.emulator.active_jobs == 30 and zendesk.emulator.rejected_jobs == 1
        zendesk.emulator.release_jobs()
        deadline = time.monotonic() + 5
        while zendesk.emulator.active_jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert zendesk.emulator.active_jobs == 0 and zendesk.emulator.peak_active_jobs == 30
        assert client.call("POST", USERS_UPSERT, json=body).status_code == 200

    def test_requests_per_minute_with_retry_after(self):
        with start_emulator("zendesk", rate_limit=3, rate_window=60) as zd:
            api = Client(zd.url)
            answers = [api.call("GET", "/api/v2/users/me.json") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].headers["X-Rate-Limit"] == "3" and answers[2].headers["X-Rate-Limit-Remaining"] == "0"
        assert answers[3].json()["error"] == "APIRateLimitExceeded"
        assert 50 <= int(answers[3].headers["Retry-After"]) <= 60

    def test_injected_faults_use_zendesk_shapes(self, zendesk, client):
        zendesk.faults.fail_next(1, "error")
        failed = client.call("GET", "/api/v2/users/me.json")
        assert failed.status_code >= 500 and "error" in failed.json()
        zendesk.faults.fail_next(1, "rate_limit")
        limited = client.call("GET", "/api/v2/users/me.json")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"


class TestReads:
    def test_show_many_search_and_single_records(self, zendesk, client):
        ids = [r["id"] for r in client.upsert([
            {"name": "Ann", "email": "ann@example.com", "external_id": "A"},
            {"name": "Bob", "email": "bob@example.com", "external_id": "B"},
        ])]
        shown = client.call("GET", "/api/v2/users/show_many.json", params={"external_ids": "a,B,zz"}).json()
        assert sorted(u["id"] for u in shown["users"]) == sorted(ids)
        too_many = client.call("GET", "/api/v2/users/show_many.json", params={"ids": ",".join(map(str, range(101)))})
        assert too_many.status_code == 400
        by_email = client.call("GET", "/api/v2/users/search.json", params={"query": "email:BOB@example.com"}).json()
        assert [u["id"] for u in by_email["users"]] == [ids[1]]
        by_ext = client.call("GET", "/api/v2/users/search.json", params={"external_id": "a"}).json()
        assert [u["id"] for u in by_ext["users"]] == [ids[0]]
        one = client.call("GET", f"/api/v2/users/{ids[0]}.json").json()["user"]
        assert one["name"] == "Ann" and one["user_fields"] == {"plan": None, "seats": None, "tier": None}
        missing = client.call("GET", "/api/v2/users/424242.json")
        assert missing.status_code == 404 and missing.json() == {"error": "RecordNotFound", "description": "Not found"}
        invalid = client.call("PUT", f"/api/v2/users/{ids[0]}.json", json={"user": {"email": "nope"}})
        assert invalid.status_code == 422
        assert invalid.json()["error"] == "RecordInvalid"
        assert invalid.json()["details"]["email"][0]["description"] == "Email: nope is not properly formatted"
        updated = client.call("PUT", f"/api/v2/users/{ids[0]}", json={"user": {"user_fields": {"plan": "pro"}}})
        assert updated.json()["user"]["user_fields"]["plan"] == "pro"
        org = client.job(client.call("POST", "/api/v2/organizations/create_many.json",
                                     json={"organizations": [{"name": "Acme Inc"}]}))["results"][0]
        found = client.call("GET", "/api/v2/organizations/search.json", params={"name": "acme inc"}).json()
        assert [o["id"] for o in found["organizations"]] == [org["id"]]

    def test_admin_state(self, zendesk, client):
        client.upsert([{"name": "a", "external_id": "a"}])
        state = requests.get(zendesk.url + "/_emulator/state", timeout=5).json()
        assert [u["external_id"] for u in state["users"]] == ["a"]
        assert state["jobs"][0]["status"] == "completed" and state["user_fields"] == ["plan", "seats", "tier"]
        zendesk.emulator.seed("users", [{"name": "s", "email": "s@example.com"}])
        assert zendesk.emulator.find("users", email="S@example.com")["name"] == "s"
        with pytest.raises(ValueError, match="properly formatted"):
            zendesk.emulator.seed("users", [{"name": "x", "email": "broken"}])


class TestZenpy:
    """The community SDK (zenpy) talks to the emulator: bulk upsert, job status, show_many."""

    @pytest.fixture
    def zenpy(self, zendesk, monkeypatch):
        from zenpy import Zenpy

        # zenpy builds https://<subdomain>.zendesk.com; these two switches are its own test hooks.
        monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
        monkeypatch.setenv("ZENPY_FORCE_NETLOC", zendesk.url.removeprefix("http://"))
        return Zenpy(subdomain="acme", email=ZENDESK_EMAIL, token=ZENDESK_API_TOKEN, disable_cache=True)

    def test_create_or_update_many_poll_and_show_many(self, zendesk, zenpy):
        from zenpy.lib.api_objects import User

        users = [User(name=f"User {i}", email=f"u{i}@example.com", external_id=f"ext-{i}",
                      user_fields={"plan": "pro"}) for i in range(3)]
        job = zenpy.users.create_or_update(users)
        assert job.status == "queued" and job.total == 3
        deadline = time.monotonic() + 5
        while job.status in ("queued", "working"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
            job = zenpy.job_status(id=job.id)
        assert job.status == "completed"
        assert [r.status for r in job.results] == ["Created"] * 3
        shown = list(zenpy.users(external_ids=["ext-0", "ext-2"]))
        assert sorted(u.email for u in shown) == ["u0@example.com", "u2@example.com"]
        assert shown[0].user_fields["plan"] == "pro"

    def test_bad_token_raises_with_zendesk_error(self, zendesk, monkeypatch):
        from zenpy import Zenpy
        from zenpy.lib.exception import APIException

        monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
        monkeypatch.setenv("ZENPY_FORCE_NETLOC", zendesk.url.removeprefix("http://"))
        bad = Zenpy(subdomain="acme", email=ZENDESK_EMAIL, token="wrong", disable_cache=True)
        with pytest.raises(APIException, match="Couldn't authenticate you"):
            bad.users.me()


def test_cli_serves_zendesk(run_cli):  # noqa: F811
    process = run_cli("zendesk", "--port", "0", "--api-token", "cli-token", "--user-field", "plan",
                      "--processing-seconds", "0")
    url = read_urls(process, 1)["zendesk"]
    api = Client(url, auth=(f"{ZENDESK_EMAIL}/token", "cli-token"))
    assert api.upsert([{"name": "a", "external_id": "a", "user_fields": {"plan": "x"}}])[0]["status"] == "Created"
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert os.environ.get("ZENPY_FORCE_NETLOC") is None
