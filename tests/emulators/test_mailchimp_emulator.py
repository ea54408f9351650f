"""The Mailchimp emulator over real HTTP: auth, shapes, batch subscribe rules, members, limits, CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import (
    MAILCHIMP_API_KEY,
    MAILCHIMP_LIST_ID,
    RunningEmulator,
    start_emulator,
    subscriber_hash,
)

REPO = Path(__file__).resolve().parents[2]
LIST = MAILCHIMP_LIST_ID
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")
COMPLIANCE = "is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed."


class Client:
    """A requests session pointed at a Mailchimp emulator, API key as basic-auth password."""

    def __init__(self, base_url: str, key: str | None = MAILCHIMP_API_KEY) -> None:
        self.base = base_url + "/3.0"
        self.session = requests.Session()
        if key is not None:
            self.session.auth = ("anystring", key)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base + path, json=body, **kwargs)

    def batch(self, members: list[dict[str, Any]], **options: Any) -> requests.Response:
        return self.call("POST", f"/lists/{LIST}", {"members": members, **options})


def member(email: str, status: str | None = "subscribed", **fields: Any) -> dict[str, Any]:
    """A batch member (Add_List_Members): ``status`` is required there, so it is sent unless None."""
    item: dict[str, Any] = {"email_address": email, **fields}
    if status:
        item["status"] = status
    return item


@pytest.fixture
def mailchimp() -> Iterator[RunningEmulator]:
    with start_emulator(
        "mailchimp",
        merge_fields=[
            {"tag": "PLAN", "type": "dropdown", "options": {"choices": ["free", "pro"]}},
            {"tag": "SEATS", "type": "number"},
            {"tag": "SIGNUP", "type": "date"},
        ],
    ) as running:
        yield running


@pytest.fixture
def client(mailchimp: RunningEmulator) -> Iterator[Client]:
    api = Client(mailchimp.url)
    yield api
    api.session.close()


def assert_problem(response: requests.Response, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] == title
    assert body["type"].startswith("https://mailchimp.com/developer/") and body["instance"] and body["detail"]
    return body


class TestAuth:
    def test_missing_and_wrong_keys_are_401(self, mailchimp) -> None:
        assert_problem(Client(mailchimp.url, None).call("GET", "/ping"), 401, "API Key Missing")
        body = assert_problem(Client(mailchimp.url, "f" * 32 + "-us6").call("GET", "/ping"), 401, "API Key Invalid")
        assert "wrong datacenter" in body["detail"]

    def test_a_key_of_another_data_centre_is_refused(self) -> None:
        with start_emulator("mailchimp", api_keys=None, datacenter="us6") as mc:
            assert Client(mc.url, "a" * 32 + "-us6").call("GET", "/ping").status_code == 200
            assert_problem(Client(mc.url, "a" * 32 + "-us1").call("GET", "/ping"), 401, "API Key Invalid")

    def test_apikey_scheme_and_oauth_bearer(self) -> None:
        with start_emulator("mailchimp", access_tokens=["oauth-token"]) as mc:
            ping = mc.url + "/3.0/ping"
            assert requests.get(ping, headers={"Authorization": f"apikey {MAILCHIMP_API_KEY}"}, timeout=5).ok
            assert requests.get(ping, headers={"Authorization": "Bearer oauth-token"}, timeout=5).ok
            assert requests.get(ping, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401

    def test_refused_requests_write_nothing(self, mailchimp) -> None:
        Client(mailchimp.url, "x-us6").batch([member("a@acme.io")])
        assert mailchimp.emulator.members(LIST) == []


class TestResources:
    def test_ping_root_and_list(self, client) -> None:
        assert client.call("GET", "/ping").json() == {"health_status": "Everything's Chimpy!"}
        root = client.call("GET", "/")
        assert root.headers["Content-Type"].startswith("application/json") and root.json()["account_name"]
        audience = client.call("GET", f"/lists/{LIST}").json()
        assert audience["id"] == LIST and audience["stats"]["member_count"] == 0
        assert_problem(client.call("GET", "/lists/nope"), 404, "Resource Not Found")
        assert_problem(client.call("GET", "/no/such/path"), 404, "Resource Not Found")
        assert_problem(client.call("DELETE", f"/lists/{LIST}/merge-fields"), 405, "Method Not Allowed")

    def test_merge_fields_page_by_ten_by_default(self, client) -> None:
        for i in range(5):
            client.call("POST", f"/lists/{LIST}/merge-fields", {"name": f"Extra {i}", "tag": f"EXTRA{i}", "type": "text"})
        first = client.call("GET", f"/lists/{LIST}/merge-fields").json()
        assert first["total_items"] == 13 and len(first["merge_fields"]) == 10
        everything = client.call("GET", f"/lists/{LIST}/merge-fields", params={"count": 1000}).json()
        tags = [f["tag"] for f in everything["merge_fields"]]
        assert tags[:5] == ["FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY"] and "EXTRA4" in tags
        plan = next(f for f in everything["merge_fields"] if f["tag"] == "PLAN")
        assert plan["type"] == "dropdown" and plan["options"]["choices"] == ["free", "pro"]
        assert plan["required"] is False and plan["list_id"] == LIST and isinstance(plan["merge_id"], int)

    def test_bad_json_is_a_parse_error(self, client) -> None:
        response = client.session.post(client.base + f"/lists/{LIST}", data=b"{nope", timeout=5,
                                       headers={"Content-Type": "application/json"})
        assert_problem(response, 400, "JSON Parse Error")


class TestBatchSubscribe:
    def test_shape_new_then_updated(self, client, mailchimp) -> None:
        first = client.batch([member("Ann@Acme.io", merge_fields={"FNAME": "Ann", "SEATS": "3"})], update_existing=True)
        assert first.status_code == 200
        body = first.json()
        assert set(body) >= {"new_members", "updated_members", "errors", "total_created", "total_updated", "error_count"}
        (new,) = body["new_members"]
        assert new["id"] == subscriber_hash("ann@acme.io") == subscriber_hash("Ann@Acme.io")
        assert new["status"] == "subscribed" and new["list_id"] == LIST and ISO.match(new["last_changed"])
        assert new["merge_fields"]["FNAME"] == "Ann" and new["merge_fields"]["SEATS"] == 3
        assert (body["total_created"], body["total_updated"], body["error_count"]) == (1, 0, 0)

        again = client.batch([member("ann@acme.io", merge_fields={"LNAME": "Lee"})], update_existing=True).json()
        assert (again["total_created"], again["total_updated"]) == (0, 1)
        stored = mailchimp.emulator.member(LIST, "ann@acme.io")
        assert stored["merge_fields"]["FNAME"] == "Ann" and stored["merge_fields"]["LNAME"] == "Lee"

    def test_existing_members_without_update_existing_are_contact_exists(self, client) -> None:
        client.batch([member("a@acme.io")])
        body = client.batch([member("a@acme.io"), member("b@acme.io")]).json()
        (error,) = body["errors"]
        assert error["error_code"] == "ERROR_CONTACT_EXISTS" and error["email_address"] == "a@acme.io"
        assert "update_existing" in error["error"]
        assert body["total_created"] == 1

    def test_more_than_500_members_is_400_and_writes_nothing(self, client, mailchimp) -> None:
        response = client.batch([member(f"u{i}@acme.io") for i in range(501)], update_existing=True)
        body = assert_problem(response, 400, "Invalid Resource")
        assert body["errors"][0]["field"] == "members" and "500" in body["errors"][0]["message"]
        assert mailchimp.emulator.members(LIST) == []
        assert client.batch([member(f"u{i}@acme.io") for i in range(500)]).json()["total_created"] == 500

    def test_fake_and_malformed_addresses_fail_alone(self, client, mailchimp) -> None:
        body = client.batch(
            [member("ok@acme.io"), member("someone@example.com"), member("x@test.com"), member("a@b.test"),
             member("not-an-email")],
            update_existing=True,
        ).json()
        errors = {e["email_address"]: e for e in body["errors"]}
        assert errors["someone@example.com"]["error"] == (
            "someone@example.com looks fake or invalid, please enter a real email address."
        )
        assert {e["error_code"] for e in body["errors"]} == {"ERROR_GENERIC"}
        assert set(errors) == {"someone@example.com", "x@test.com", "a@b.test", "not-an-email"}
        assert errors["not-an-email"]["error"] == "Please provide a valid email address."
        assert [m["email_address"] for m in mailchimp.emulator.members(LIST)] == ["ok@acme.io"]

    def test_status_applies_to_existing_members_with_update_existing(self, client, mailchimp) -> None:
        """``status`` is the member's status, new or existing: sending the current one keeps it."""
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"},
                                       {"email_address": "bounced@acme.io", "status": "cleaned"},
                                       {"email_address": "sub@acme.io", "status": "subscribed"}])
        body = client.batch(
            [member("gone@acme.io", "unsubscribed", merge_fields={"FNAME": "G"}),
             member("bounced@acme.io", "cleaned"),
             member("sub@acme.io", "unsubscribed")],
            update_existing=True,
        ).json()
        assert body["total_updated"] == 3 and body["errors"] == []
        assert mailchimp.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"
        assert mailchimp.emulator.member(LIST, "gone@acme.io")["merge_fields"]["FNAME"] == "G"
        assert mailchimp.emulator.member(LIST, "bounced@acme.io")["status"] == "cleaned"
        assert mailchimp.emulator.member(LIST, "sub@acme.io")["status"] == "unsubscribed"  # applied

    def test_status_if_new_is_not_a_batch_member_field(self, client, mailchimp) -> None:
        """Add_List_Members has no status_if_new: it is ignored, and it does not stand in for status."""
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        body = client.batch([member("gone@acme.io", "pending", status_if_new="subscribed")], update_existing=True)
        assert body.json()["total_updated"] == 1
        assert mailchimp.emulator.member(LIST, "gone@acme.io")["status"] == "pending"
        response = client.batch([member("new@acme.io", None, status_if_new="subscribed")])
        body = assert_problem(response, 400, "Invalid Resource")
        assert body["errors"] == [{"field": "members.item:0", "message": "Required fields were not provided: status"}]
        assert mailchimp.emulator.member(LIST, "new@acme.io") is None

    def test_a_cleaned_member_keeps_its_status(self, client, mailchimp) -> None:
        mailchimp.emulator.seed(LIST, [{"email_address": "bounced@acme.io", "status": "cleaned"}])
        body = client.batch([member("bounced@acme.io", "unsubscribed")], update_existing=True).json()
        (error,) = body["errors"]
        assert error["email_address"] == "bounced@acme.io" and "cleaned" in error["error"]
        assert mailchimp.emulator.member(LIST, "bounced@acme.io")["status"] == "cleaned"

    def test_unsubscribed_and_cleaned_members_cannot_be_resubscribed(self, client, mailchimp) -> None:
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"},
                                       {"email_address": "bounced@acme.io", "status": "cleaned"}])
        body = client.batch(
            [member("gone@acme.io", status="subscribed"), member("bounced@acme.io", status="pending")],
            update_existing=True,
        ).json()
        assert {e["email_address"]: e["error"] for e in body["errors"]} == {
            "gone@acme.io": f"gone@acme.io {COMPLIANCE}",
            "bounced@acme.io": f"bounced@acme.io {COMPLIANCE}",
        }
        # An unsubscribed address may be asked again (pending sends a confirmation email).
        again = client.batch([member("gone@acme.io", status="pending")], update_existing=True).json()
        assert again["total_updated"] == 1
        assert mailchimp.emulator.member(LIST, "gone@acme.io")["status"] == "pending"

    def test_new_member_status_and_a_missing_or_bad_status_fails_the_call(self, client, mailchimp) -> None:
        client.batch([member("p@acme.io", "pending"), member("t@acme.io", "transactional")])
        assert mailchimp.emulator.member(LIST, "p@acme.io")["status"] == "pending"
        assert mailchimp.emulator.member(LIST, "t@acme.io")["status"] == "transactional"
        # Schema validation: one member without a (valid) status fails the whole call, nothing is written.
        response = client.batch([member("ok@acme.io"), member("none@acme.io", None), member("bad@acme.io", "maybe")])
        body = assert_problem(response, 400, "Invalid Resource")
        assert [e["field"] for e in body["errors"]] == ["members.item:1", "members.item:2.status"]
        assert mailchimp.emulator.member(LIST, "ok@acme.io") is None

    def test_merge_field_values_are_checked(self, client, mailchimp) -> None:
        mailchimp.emulator.add_merge_field(LIST, {"tag": "COMPANY", "type": "text", "required": True})
        body = client.batch(
            [
                member("ok@acme.io", merge_fields={"COMPANY": "Acme", "PLAN": "pro", "SIGNUP": "2026-03-01",
                                                   "BIRTHDAY": "07/14", "UNKNOWN": "ignored"}),
                member("seats@acme.io", merge_fields={"COMPANY": "Acme", "SEATS": "many"}),
                member("plan@acme.io", merge_fields={"COMPANY": "Acme", "PLAN": "gold"}),
                member("missing@acme.io", merge_fields={"FNAME": "M"}),
                member("addr@acme.io", merge_fields={"COMPANY": "Acme", "ADDRESS": {"addr1": "1 Main St"}}),
            ],
            update_existing=True,
        ).json()
        errors = {e["email_address"]: e for e in body["errors"]}
        assert set(errors) == {"seats@acme.io", "plan@acme.io", "missing@acme.io", "addr@acme.io"}
        assert errors["missing@acme.io"]["error"] == "Your merge fields were invalid."
        assert (errors["missing@acme.io"]["field"], errors["missing@acme.io"]["field_message"]) == (
            "COMPANY", "Please enter a value")
        assert errors["addr@acme.io"]["field_message"] == "Please enter a complete address"
        assert errors["seats@acme.io"]["field"] == "SEATS"
        ok = mailchimp.emulator.member(LIST, "ok@acme.io")["merge_fields"]
        assert ok["SIGNUP"] == "2026-03-01" and ok["BIRTHDAY"] == "07/14" and "UNKNOWN" not in ok
        skipped = client.call("POST", f"/lists/{LIST}", {"members": [member("m2@acme.io")]},
                              params={"skip_merge_validation": "true"}).json()
        assert skipped["total_created"] == 1

    def test_tags_are_added_or_synced(self, client, mailchimp) -> None:
        client.batch([member("t@acme.io", tags=["vip", "beta"])])
        client.batch([member("t@acme.io", tags=["beta", "new"])], update_existing=True)
        assert [t["name"] for t in mailchimp.emulator.member(LIST, "t@acme.io")["tags"]] == ["vip", "beta", "new"]
        client.batch([member("t@acme.io", tags=["only"])], update_existing=True, sync_tags=True)
        assert [t["name"] for t in mailchimp.emulator.member(LIST, "t@acme.io")["tags"]] == ["only"]

    def test_archived_members_come_back_as_new_and_forgotten_ones_never(self, client, mailchimp) -> None:
        client.batch([member("a@acme.io"), member("f@acme.io")])
        assert client.call("DELETE", f"/lists/{LIST}/members/{subscriber_hash('a@acme.io')}").status_code == 204
        assert client.call("POST", f"/lists/{LIST}/members/f@acme.io/actions/delete-permanent").status_code == 204
        body = client.batch([member("a@acme.io"), member("f@acme.io")], update_existing=True).json()
        assert [m["email_address"] for m in body["new_members"]] == ["a@acme.io"]
        assert body["errors"][0]["error"].startswith("f@acme.io was permanently deleted and cannot be re-imported")
        put = client.call("PUT", f"/lists/{LIST}/members/{subscriber_hash('f@acme.io')}", member("f@acme.io"))
        assert_problem(put, 400, "Forgotten Email Not Subscribed")


class TestMembers:
    def test_put_get_patch_delete(self, client, mailchimp) -> None:
        path = f"/lists/{LIST}/members/{subscriber_hash('ann@acme.io')}"
        created = client.call("PUT", path, member("Ann@acme.io", merge_fields={"FNAME": "Ann"}))
        assert created.status_code == 200 and created.json()["status"] == "subscribed"
        assert client.call("GET", f"/lists/{LIST}/members/ANN@acme.io").json()["id"] == subscriber_hash("ann@acme.io")
        only = client.call("GET", path, params={"fields": "id,status"}).json()
        assert only == {"id": subscriber_hash("ann@acme.io"), "status": "subscribed"}

        renamed = client.call("PATCH", path, {"email_address": "ann.lee@acme.io"}).json()
        assert renamed["id"] == subscriber_hash("ann.lee@acme.io") and renamed["merge_fields"]["FNAME"] == "Ann"
        assert_problem(client.call("GET", path), 404, "Resource Not Found")
        client.batch([member("bob@acme.io")])
        taken = client.call("PATCH", f"/lists/{LIST}/members/bob@acme.io", {"email_address": "ann.lee@acme.io"})
        body = assert_problem(taken, 400, "Invalid Resource")
        assert body["errors"][0]["message"] == '"ann.lee@acme.io" is already in this list with a status of "Subscribed".'

        new_path = f"/lists/{LIST}/members/{renamed['id']}"
        assert client.call("DELETE", new_path).status_code == 204
        assert client.call("DELETE", new_path).status_code == 204
        assert client.call("GET", new_path).json()["status"] == "archived"
        assert [m["email_address"] for m in mailchimp.emulator.members(LIST)] == ["bob@acme.io"]
        assert_problem(client.call("DELETE", f"/lists/{LIST}/members/{'0' * 32}"), 404, "Resource Not Found")

    def test_put_rules(self, client, mailchimp) -> None:
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        path = f"/lists/{LIST}/members/{subscriber_hash('gone@acme.io')}"
        refused = client.call("PUT", path, {"email_address": "gone@acme.io", "status": "subscribed"})
        assert assert_problem(refused, 400, "Member In Compliance State")["detail"] == f"gone@acme.io {COMPLIANCE}"
        mismatch = client.call("PUT", path, member("other@acme.io"))
        assert_problem(mismatch, 400, "Invalid Resource")
        fake = client.call("PUT", f"/lists/{LIST}/members/{subscriber_hash('a@example.com')}", member("a@example.com"))
        assert assert_problem(fake, 400, "Invalid Resource")["detail"].endswith("please enter a real email address.")
        merge = client.call("PUT", f"/lists/{LIST}/members/{subscriber_hash('n@acme.io')}",
                            member("n@acme.io", merge_fields={"SEATS": "x"}))
        body = assert_problem(merge, 400, "Invalid Resource")
        assert body["detail"] == "Your merge fields were invalid." and body["errors"][0]["field"] == "SEATS"
        exists = client.call("POST", f"/lists/{LIST}/members", {"email_address": "gone@acme.io", "status": "pending"})
        assert assert_problem(exists, 400, "Member Exists")["detail"].endswith("Use PUT to insert or update list members.")

    def test_listing_pages_and_filters_by_status(self, client, mailchimp) -> None:
        client.batch([member(f"u{i}@acme.io") for i in range(25)])
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        page = client.call("GET", f"/lists/{LIST}/members").json()
        assert page["total_items"] == 26 and len(page["members"]) == 10
        last = client.call("GET", f"/lists/{LIST}/members", params={"count": 10, "offset": 20}).json()
        assert len(last["members"]) == 6
        unsub = client.call("GET", f"/lists/{LIST}/members", params={"status": "unsubscribed"}).json()
        assert [m["email_address"] for m in unsub["members"]] == ["gone@acme.io"]

    def test_member_tags(self, client, mailchimp) -> None:
        client.batch([member("t@acme.io")])
        path = f"/lists/{LIST}/members/{subscriber_hash('t@acme.io')}/tags"
        body = {"tags": [{"name": "vip", "status": "active"}, {"name": "beta", "status": "active"}]}
        assert client.call("POST", path, body).status_code == 204
        assert client.call("POST", path, {"tags": [{"name": "beta", "status": "inactive"}]}).status_code == 204
        assert [t["name"] for t in client.call("GET", path).json()["tags"]] == ["vip"]


class TestLimits:
    def test_the_connection_over_the_limit_gets_429(self) -> None:
        with start_emulator("mailchimp", max_connections=2, processing_seconds=0.3) as mc:
            barrier = threading.Barrier(4)
            statuses: list[int] = []

            def ping() -> None:
                api = Client(mc.url)
                barrier.wait()
                statuses.append(api.call("GET", "/ping").status_code)

            threads = [threading.Thread(target=ping) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(statuses) == [200, 200, 429, 429]
            assert mc.emulator.max_concurrent_requests() == 2
            late = Client(mc.url).call("GET", "/ping")  # slots free again once answered
            assert late.status_code == 200

    def test_429_shape(self) -> None:
        with start_emulator("mailchimp", max_connections=0) as mc:
            body = assert_problem(Client(mc.url).call("GET", "/ping"), 429, "Too Many Requests")
            assert body["detail"] == "You have exceeded the limit of 10 simultaneous connections."

    def test_optional_rolling_rate_limit(self) -> None:
        with start_emulator("mailchimp", rate_limit=2, rate_window=60) as mc:
            api = Client(mc.url)
            assert [api.call("GET", "/ping").status_code for _ in range(3)] == [200, 200, 429]
            assert int(api.call("GET", "/ping").headers["Retry-After"]) >= 1

    def test_injected_faults_use_mailchimps_shapes(self, client, mailchimp) -> None:
        mailchimp.faults.fail_next(1, "error")
        response = client.call("GET", "/ping")
        assert response.status_code in (500, 502, 503) and response.json()["title"]
        mailchimp.faults.burst_429 = 1
        assert client.call("GET", "/ping").json()["title"] == "Too Many Requests"
        assert client.call("GET", "/ping").status_code == 200

    def test_state_and_reset(self, client, mailchimp) -> None:
        client.batch([member("a@acme.io")])
        state = requests.get(mailchimp.url + "/_emulator/state", timeout=5).json()
        assert state["lists"][LIST]["members"][0]["email_address"] == "a@acme.io"
        assert mailchimp.emulator.request_count(f"POST /3.0/lists/{LIST}") == 1
        mailchimp.emulator.reset()
        assert mailchimp.emulator.members(LIST) == [] and mailchimp.emulator.request_count() == 0


def test_cli_serves_mailchimp_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_retl.testing.emulators", "mailchimp", "--port", "0",
         "--api-key", "k" * 32 + "-us6", "--list", "aud1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            match = re.match(r"mailchimp emulator listening on (http://\S+)", process.stdout.readline())
            url = match.group(1) if match else None
        assert url, process.stderr.read() if process.stderr else ""
        api = Client(url, "k" * 32 + "-us6")
        assert api.call("POST", "/lists/aud1", {"members": [member("a@acme.io")]}).json()["total_created"] == 1
        assert Client(url).call("GET", "/ping").status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
