"""ZendeskHook against the Zendesk emulator (a real local HTTP server, real background jobs)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from airflow_provider_retl.hooks.destination import EXISTS
from airflow_provider_retl.hooks.zendesk import ZendeskHook, clear_job_gates
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    FatalDestinationError,
    OutcomeUnknownError,
)
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import ZENDESK_OAUTH_TOKEN, start_emulator

from .support import SleepRecorder, no_sleep

EMAIL = "agent@example.com"
TOKEN = "zd-secret-token-5f3a9c"
UPSERT = "POST /api/v2/users/create_or_update_many.json"
UPDATE_MANY = "PUT /api/v2/users/update_many.json"
FIELDS = {"plan": "text", "seats": "integer", "tier": {"type": "dropdown", "options": ["gold", "silver"]}}


def user(key: str, external_id: str | None = None, **fields) -> Record:
    external_id = key if external_id is None else external_id
    return Record(key=key, fields={"external_id": external_id, **fields}, match_value=external_id)


@pytest.fixture(autouse=True)
def _fresh_job_gates():
    clear_job_gates()
    yield
    clear_job_gates()


@pytest.fixture
def connect(monkeypatch):
    """Register ``zendesk_default`` (login + token by default) for a URL."""

    def connect(host: str, *, login: str | None = EMAIL, password: str | None = TOKEN, conn_id: str = "zendesk_default",
                **extra) -> str:
        extras = {"rate_limit": 0, "job_poll_interval": 0.01, **extra}
        value = {"conn_type": "retl_zendesk", "host": host, "login": login, "password": password, "extra": extras}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    return connect


@pytest.fixture
def start(connect):
    running = []

    def start(*, extra: dict | None = None, **options):
        options.setdefault("api_tokens", {EMAIL: TOKEN})
        options.setdefault("user_fields", FIELDS)
        options.setdefault("processing_seconds", 0.02)
        options.setdefault("rate_limit", None)
        emulator = start_emulator("zendesk", **options)
        running.append(emulator)
        connect(emulator.url, **(extra or {}))
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def zd(start):
    return start()


@pytest.fixture
def hook(zd):
    return ZendeskHook(sleep=no_sleep)


class TestConnection:
    def test_identity_and_protocol(self, connect):
        connect("acme", rate_limit=None)
        hook = ZendeskHook()
        assert (hook.conn_type, hook.default_conn_name, hook.hook_name) == ("retl_zendesk", "zendesk_default", "Zendesk")
        assert ZendeskHook(zendesk_conn_id="other").zendesk_conn_id == "other"
        assert isinstance(hook, Destination)
        hook.get_conn()
        assert hook.base_url == "https://acme.zendesk.com"
        assert (hook.limiter.limit, hook.limiter.window) == (400, 60.0)
        assert hook.max_batch_size == 100 and hook.job_gate.limit == 25

    @pytest.mark.parametrize(
        ("host", "url"),
        [
            ("acme.zendesk.com", "https://acme.zendesk.com"),
            ("https://acme.zendesk.com/api/v2/", "https://acme.zendesk.com"),
            ("http://127.0.0.1:8085", "http://127.0.0.1:8085"),
        ],
    )
    def test_host_forms(self, connect, host, url):
        connect(host)
        hook = ZendeskHook()
        hook.get_conn()
        assert hook.base_url == url

    def test_token_auth_needs_the_agent_email(self, connect):
        connect("acme", login=None)
        with pytest.raises(ConfigurationError, match="agent's email"):
            ZendeskHook().get_conn()

    def test_oauth_bearer_and_test_connection(self, start):
        zd = start(extra={"login": None, "password": ZENDESK_OAUTH_TOKEN, "auth_type": "oauth"})
        ok, message = ZendeskHook().test_connection()
        assert ok, message
        assert zd.emulator.request_count("GET /api/v2/users/me.json") == 1

    def test_wrong_token_is_fatal_and_never_in_messages(self, start):
        start(extra={"password": "wrong-token-8e1f0d"})
        hook = ZendeskHook(sleep=no_sleep)
        ok, message = hook.test_connection()
        assert not ok and "Couldn't authenticate you" in message and "wrong-token-8e1f0d" not in message
        with pytest.raises(FatalDestinationError) as caught:
            hook.upsert("users", [user("a", name="A")], "external_id")
        assert caught.value.status == 401 and "wrong-token-8e1f0d" not in str(caught.value)
        assert caught.value.request.headers["Authorization"] == "***"
        assert hook.retry_count == 0

    def test_unknown_object_is_a_configuration_error(self, hook):
        with pytest.raises(ConfigurationError, match="has no object 'tickets'; it syncs 'users', 'organizations'"):
            hook.default_match_field("tickets")


class TestUpsert:
    def test_creates_then_updates_in_request_order(self, zd, hook):
        first = hook.upsert("users", [user("a", name="Ann", email="ann@example.com"), user("b", name="Bob")],
                            "external_id")
        assert [(o.ok, o.created) for o in first] == [(True, True), (True, True)]
        again = hook.upsert("users", [user("B", name="Robert"), user("a", name="Ann", notes="vip")], "external_id")
        assert [(o.ok, o.created) for o in again] == [(True, False), (True, False)]
        assert [o.dest_id for o in again] == [first[1].dest_id, first[0].dest_id]
        assert zd.emulator.find("users", external_id="b")["name"] == "Robert"
        assert zd.emulator.request_count(UPSERT) == 2
        assert zd.emulator.request_count("/api/v2/job_statuses/" + zd.emulator.jobs()[0]["id"] + ".json") >= 1

    def test_per_record_failures_come_from_the_job_results(self, zd, hook):
        outcomes = hook.upsert("users", [user("a", name="A"), user("b", name="B", email="b@"),
                                         user("c", name="C", user_fields={"seats": "lots"})], "external_id")
        assert [o.ok for o in outcomes] == [True, False, False]
        assert outcomes[1].code == "UserUpdateError"
        assert outcomes[1].reason == "UserUpdateError: Email: b@ is not properly formatted"
        assert "integer" in outcomes[2].reason
        assert [u["external_id"] for u in zd.emulator.users()] == ["a"]

    def test_match_on_email_and_missing_match_values(self, zd, hook):
        records = [Record("1", {"email": "x@example.com", "name": "X"}, match_value="x@example.com"),
                   Record("2", {"email": None, "name": "nobody"})]
        outcomes = hook.upsert("users", records, "email")
        assert outcomes[0].ok and not outcomes[1].ok and outcomes[1].code == "MISSING_MATCH"
        assert hook.upsert("users", [Record("1", {"email": "X@example.com", "notes": "n"},
                                            match_value="X@example.com")], "email")[0].created is False
        with pytest.raises(ConfigurationError, match="match on external_id or email"):
            hook.upsert("users", records, "phone")

    def test_at_most_100_records_per_job(self, zd, hook):
        # The engine hands the hook batches of max_batch_size (Zendesk's 100 per job): one job each.
        assert hook.max_batch_size == 100
        records = [user(f"u{i}", name=f"U{i}") for i in range(150)]
        outcomes = hook.upsert("users", records[:100], "external_id") + hook.upsert("users", records[100:], "external_id")
        assert len(outcomes) == 150 and all(o.ok and o.created for o in outcomes)
        assert zd.emulator.request_count(UPSERT) == 2
        assert sorted(j["total"] for j in zd.emulator.jobs()) == [50, 100]

    def test_organizations_by_name_with_custom_fields(self, start):
        zd = start(organization_fields={"region": "text"})
        hook = ZendeskHook(sleep=no_sleep)
        records = [Record("acme", {"name": "Acme", "region": "EU", "domain_names": "acme.com, acme.io"},
                          match_value="Acme")]
        assert hook.upsert("organizations", records, "name")[0].created is True
        org = zd.emulator.find("organizations", name="ACME")
        assert org["organization_fields"] == {"region": "EU"} and org["domain_names"] == ["acme.com", "acme.io"]


class TestOrganizationUpsert:
    """Zendesk has no organizations/create_or_update_many: lookup, then create_many and update_many."""

    ORG_ROUTES = ("GET /api/v2/organizations/show_many.json", "POST /api/v2/organizations/create_many.json",
                  "PUT /api/v2/organizations/update_many.json")

    def test_existing_updated_new_created_in_three_calls(self, start):
        zd = start(organization_fields={"region": "text"})
        [old_id] = zd.emulator.seed("organizations", [{"name": "Old", "external_id": "ORG-1"}])
        hook = ZendeskHook(sleep=no_sleep)
        records = [Record("1", {"external_id": "org-1", "notes": "kept", "region": "EU"}, match_value="org-1"),
                   Record("2", {"external_id": "org-2", "name": "New"}, match_value="org-2"),
                   Record("3", {"external_id": "org-3"}, match_value="org-3"),  # no name: Zendesk refuses it
                   Record("4", {"external_id": None, "name": "x"})]
        outcomes = hook.upsert("organizations", records, "external_id")
        assert (outcomes[0].ok, outcomes[0].dest_id, outcomes[0].created) == (True, str(old_id), False)
        assert outcomes[1].ok and outcomes[1].created is True
        assert not outcomes[2].ok and outcomes[2].reason.startswith("OrganizationCreateError: Name:")
        assert outcomes[3].code == "MISSING_MATCH"
        assert [zd.emulator.request_count(r) for r in self.ORG_ROUTES] == [1, 1, 1]
        assert zd.emulator.request_count("/api/v2/organizations/create_or_update_many.json") == 0
        old = zd.emulator.find("organizations", external_id="org-1")
        assert (old["name"], old["notes"], old["organization_fields"]) == ("Old", "kept", {"region": "EU"})
        assert zd.emulator.find("organizations", external_id="org-2")["id"] == int(outcomes[1].dest_id)

    def test_same_key_twice_and_a_resubmitted_create_job_make_no_duplicate(self, zd, hook):
        zd.emulator.fail_next_jobs(1, "killed")
        records = [Record("a", {"external_id": "A", "name": "Acme"}, match_value="A"),
                   Record("a2", {"external_id": "a", "notes": "second"}, match_value="a")]
        outcomes = hook.upsert("organizations", records, "external_id")
        assert all(o.ok for o in outcomes) and outcomes[0].dest_id == outcomes[1].dest_id
        assert len(zd.emulator.organizations()) == 1
        assert zd.emulator.find("organizations", external_id="a")["notes"] == "second"
        assert [j["status"] for j in zd.emulator.jobs()][:2] == ["killed", "completed"]

    def test_a_name_taken_by_another_key_is_a_reject_not_a_takeover(self, zd, hook):
        zd.emulator.seed("organizations", [{"name": "Acme", "external_id": "theirs"}])
        [outcome] = hook.upsert("organizations", [Record("m", {"external_id": "mine", "name": "ACME"},
                                                         match_value="mine")], "external_id")
        assert not outcome.ok and "has already been taken" in outcome.reason
        assert zd.emulator.find("organizations", external_id="theirs")["name"] == "Acme"

    def test_every_call_is_a_documented_route_and_job_results_match_the_schemas(self, zd, hook):
        """The wire against Zendesk's own OpenAPI document (shared/vendor-specs/zendesk-support-oas.yaml)."""
        spec = _zendesk_spec()
        zd.emulator.seed("organizations", [{"name": "Old", "external_id": "o1"}])
        hook.upsert("organizations", [Record("1", {"external_id": "o1", "notes": "n"}, match_value="o1"),
                                      Record("2", {"external_id": "o2", "name": "New"}, match_value="o2"),
                                      Record("3", {"external_id": "o3"}, match_value="o3")], "external_id")
        hook.upsert("organizations", [Record("4", {"name": "Named"}, match_value="Named")], "name")
        hook.upsert("users", [user("u1", name="U"), user("u2", name="V", email="bad@")], "external_id")
        hook.lookup("users", "email", ["a@example.com"])
        mirror = ZendeskHook(sleep=no_sleep, mirror_delete=True)
        mirror.delete("organizations", [str(zd.emulator.find("organizations", external_id="o1")["id"])])
        templates = {
            (method.upper(), re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path, item in spec["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        }
        calls = {(r.method, r.path.removesuffix(".json")) for r in zd.emulator.requests}
        assert ("POST", "/api/v2/organizations/create_many") in calls
        for method, path in calls:
            literal = path in spec["paths"]
            documented = (literal and method.lower() in spec["paths"][path]) or (
                not literal and any(m == method and rx.match(path) for m, rx, _ in templates)
            )
            assert documented, f"{method} {path} is not in Zendesk's API document"

        schemas = spec["components"]["schemas"]
        branch = {name: OAS30Validator(schemas[name]) for name in
                  ("CreateResourceResult", "UpdateResourceResult", "FailedResult")}
        envelope = OAS30Validator({**schemas["JobStatusObject"], "properties": {
            k: v for k, v in schemas["JobStatusObject"]["properties"].items() if k != "results"}})
        results = []
        for job in zd.emulator.jobs():
            envelope.validate(job)
            results.extend(job["results"] or [])
        assert {"Created", "Updated"} <= {r.get("status") for r in results}
        assert any(r.get("success") is False for r in results)
        for result in results:
            # JobStatusResultObject is a oneOf: a result must match exactly one of the three.
            matching = [name for name, validator in branch.items() if validator.is_valid(result)]
            assert len(matching) == 1, (result, matching)
            kind = ("FailedResult" if result.get("success") is False
                    else "CreateResourceResult" if "index" in result else "UpdateResourceResult")
            branch[kind].validate(result)


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML, plus the document's bare ``=`` scalars (YAML 1.1's "value" tag) read as text."""


_SpecLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def _zendesk_spec() -> dict:
    """Zendesk's OpenAPI document, read from shared/vendor-specs beside the repository (never copied into it)."""
    from tests.vendor_specs import spec_file

    path = spec_file("zendesk-support-oas.yaml")
    return yaml.load(path.read_text(), Loader=_SpecLoader)  # a SafeLoader subclass


class TestJobs:
    def test_a_killed_upsert_job_is_submitted_again(self, zd, hook):
        zd.emulator.fail_next_jobs(1, "killed")
        outcomes = hook.upsert("users", [user("a", name="A")], "external_id")
        assert outcomes[0].ok and zd.emulator.request_count(UPSERT) == 2
        assert [j["status"] for j in zd.emulator.jobs()] == ["killed", "completed"]

    def test_a_failed_create_job_is_an_unknown_outcome(self, zd, hook):
        zd.emulator.fail_next_jobs(1, "failed")
        with pytest.raises(OutcomeUnknownError, match="ended failed"):
            hook.create("users", [user("a", name="A")])
        assert zd.emulator.request_count("POST /api/v2/users/create_many.json") == 1

    def test_a_create_job_still_running_at_the_deadline_may_land_later(self, zd):
        """The engine must not create again after its lookup: the job can still apply (push.py)."""
        zd.emulator.hold_jobs()
        hook = ZendeskHook(sleep=no_sleep, job_timeout=0.3)
        with pytest.raises(OutcomeUnknownError, match="still queued after 0s") as raised:
            hook.create("users", [user("a", name="A")])
        assert raised.value.may_land_later is True
        zd.emulator.release_jobs()

    def test_a_failed_job_cannot_land_later(self, zd, hook):
        zd.emulator.fail_next_jobs(1, "failed")
        with pytest.raises(OutcomeUnknownError) as raised:
            hook.create("users", [user("a", name="A")])
        assert raised.value.may_land_later is False

    def test_a_lost_create_response_waits_for_the_job_before_reporting(self, zd, hook):
        zd.faults.fail_next(1, "lost_response")
        with pytest.raises(OutcomeUnknownError):
            hook.create("users", [user("a", name="A")])
        # The job the lost answer started has finished: the engine's lookup will find its user.
        assert zd.emulator.active_jobs == 0 and zd.emulator.request_count("GET /api/v2/job_statuses.json") >= 1
        assert list(hook.lookup("users", "external_id", ["a"])) == ["a"]

    def test_jobs_in_flight_stay_under_the_account_limit(self, zd):
        zd.emulator.hold_jobs()  # jobs stay queued: the queue fills up as fast as the hooks allow
        hooks = [ZendeskHook(sleep=no_sleep) for _ in range(40)]  # 40 tasks of one account, one process
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                assert hooks[n].upsert("users", [user(f"u{n}", name="U")], "external_id")[0].ok
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(40)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while zd.emulator.active_jobs < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert zd.emulator.active_jobs == 25 and hooks[0].job_gate.in_flight == 25
        zd.emulator.release_jobs()
        for thread in threads:
            thread.join(20)
        assert not errors
        assert zd.emulator.rejected_jobs == 0 and zd.emulator.peak_active_jobs == 25
        assert hooks[0].job_gate is hooks[39].job_gate and hooks[0].job_gate.peak == 25
        assert len(zd.emulator.users()) == 40

    def test_429_too_many_jobs_waits_retry_after(self, zd):
        zd.emulator.hold_jobs()
        filler = ZendeskHook(sleep=no_sleep)
        for _ in range(30):  # jobs of another tool, queued at Zendesk
            filler.request("POST", "/api/v2/users/create_or_update_many.json",
                           json={"users": [{"name": "x", "external_id": "x"}]}, idempotent=True)
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            zd.emulator.release_jobs()
            time.sleep(0.1)

        hook = ZendeskHook(sleep=sleep)
        assert hook.upsert("users", [user("a", name="A")], "external_id")[0].ok
        assert waits and waits[0] == 1.0 and zd.emulator.rejected_jobs >= 1
        assert hook.retry_count >= 1

    def test_rate_limit_429_is_retried_after_retry_after(self, zd):
        recorder = SleepRecorder()
        hook = ZendeskHook(sleep=recorder)
        zd.faults.fail_next(1, "rate_limit")
        assert hook.upsert("users", [user("a", name="A")], "external_id")[0].ok
        assert recorder.calls == [1.0] and hook.retry_count == 1
        assert zd.emulator.request_count(UPSERT, 429) == 1 and zd.emulator.request_count(UPSERT, 200) == 1


class TestValidate:
    def test_phone_numbers_are_normalised_or_rejected(self, start):
        zd = start()
        hook = ZendeskHook(sleep=no_sleep)
        assert hook.validate("users", {"phone": "+1 (415) 555-2671"}) == []
        problems = hook.validate("users", {"phone": "(415) 555-2671"})
        assert problems[0][0] == "phone" and "default_region" in problems[0][1]
        assert "not a valid number" in hook.validate("users", {"phone": "+1 555"})[0][1]
        assert "did not seem to be a phone number" in hook.validate("users", {"phone": "call me"})[0][1]
        hook.upsert("users", [user("a", name="A", phone="+1 (415) 555-2671")], "external_id")
        assert zd.emulator.find("users", external_id="a")["phone"] == "+14155552671"

    def test_default_region_from_the_extras(self, start):
        zd = start(extra={"default_region": "us"})
        hook = ZendeskHook(sleep=no_sleep)
        assert hook.validate("users", {"phone": "(415) 555-2671"}) == []
        hook.upsert("users", [user("a", name="A", phone="(415) 555-2671")], "external_id")
        assert zd.emulator.find("users", external_id="a")["phone"] == "+14155552671"

    def test_email_and_lengths(self, hook):
        assert hook.validate("users", {"email": "not-an-email", "name": "x" * 256})[0][0] == "email"
        assert [f for f, _ in hook.validate("users", {"name": "x" * 256})] == ["name"]
        assert hook.validate("users", {"email": "ok@example.com", "name": "Ok"}) == []

    def test_custom_fields_checked_against_definitions_once(self, zd, hook):
        assert hook.validate("users", {"plan": "pro", "user_fields.seats": "3", "tier": "gold"}) == []
        problems = dict(hook.validate("users", {"nope": 1, "seats": "many", "user_fields.tier": "bronze"}))
        assert "no active user field 'nope'" in problems["user_fields.nope"]
        assert "whole number" in problems["user_fields.seats"]
        assert "option values" in problems["user_fields.tier"]
        assert zd.emulator.request_count("GET /api/v2/user_fields.json") == 1

    def test_custom_fields_go_into_user_fields(self, zd, hook):
        hook.upsert("users", [user("a", name="A", plan="pro", **{"user_fields.seats": 3})], "external_id")
        stored = zd.emulator.find("users", external_id="a")
        assert stored["user_fields"] == {"plan": "pro", "seats": 3, "tier": None}
        assert "plan" not in stored


class TestReadsAndWritesById:
    def test_lookup_by_external_id_email_and_name(self, zd, hook):
        ids = [o.dest_id for o in hook.upsert("users", [user("a", name="A", email="a@example.com"),
                                                          user("b", name="B")], "external_id")]
        before = zd.emulator.request_count()
        assert hook.lookup("users", "external_id", ["A", "b", "zz"]) == {"A": ids[0], "b": ids[1]}
        assert zd.emulator.request_count() == before + 1  # one show_many for all three
        assert hook.lookup("users", "email", ["A@example.com", "x@example.com"]) == {"A@example.com": ids[0]}
        with pytest.raises(ConfigurationError):
            hook.lookup("users", "phone", ["1"])

    def test_update_by_id_and_unknown_ids(self, zd, hook):
        [created] = hook.upsert("users", [user("a", name="A")], "external_id")
        outcomes = hook.update("users", [Record("a", {"name": "Alice"}, dest_id=created.dest_id),
                                         Record("z", {"name": "Z"}, dest_id="999"),
                                         Record("n", {"name": "N"})])
        assert (outcomes[0].ok, outcomes[0].created) == (True, False)
        assert outcomes[1].code == "NOT_FOUND" and outcomes[2].code == "MISSING_ID"
        assert zd.emulator.find("users", external_id="a")["name"] == "Alice"
        assert zd.emulator.request_count(UPDATE_MANY) == 1

    def test_create_and_taken_emails_point_at_the_existing_user(self, zd, hook):
        [existing] = hook.upsert("users", [user("a", name="A", email="a@example.com")], "external_id")
        outcomes = hook.create("users", [Record("n", {"name": "New", "email": "new@example.com"}),
                                         Record("d", {"name": "Dup", "email": "A@example.com"})])
        assert outcomes[0].ok and outcomes[0].created is True
        assert (outcomes[1].ok, outcomes[1].code, outcomes[1].dest_id) == (False, EXISTS, existing.dest_id)


class TestMirror:
    def test_mirror_delete_false_unsets_the_synced_fields_and_keeps_the_user(self, start):
        zd = start(extra={"mirror_delete": False})
        hook = ZendeskHook(sleep=no_sleep)
        outcomes = hook.upsert("users", [user("a", name="A", email="a@example.com", phone="+14155552671",
                                              plan="pro", tags="vip beta")], "external_id")
        deleted = hook.delete("users", [outcomes[0].dest_id, "999", None])
        assert [o.ok for o in deleted] == [True, True, False]
        kept = zd.emulator.find("users", external_id="a")
        assert kept["name"] == "A" and kept["email"] == "a@example.com"
        assert kept["phone"] is None and kept["tags"] == [] and kept["user_fields"]["plan"] is None
        assert zd.emulator.request_count("DELETE /api/v2/users/destroy_many.json") == 0

    def test_explicit_unset_fields(self, start):
        zd = start(extra={"mirror_delete": False, "mirror_unset_fields": "user_fields.plan"})
        hook = ZendeskHook(sleep=no_sleep)
        [created] = hook.upsert("users", [user("a", name="A", plan="pro", phone="+14155552671")], "external_id")
        hook.delete("users", [created.dest_id])
        kept = zd.emulator.find("users", external_id="a")
        assert kept["user_fields"]["plan"] is None and kept["phone"] == "+14155552671"

    def test_unknown_synced_fields_are_reported_not_guessed(self, start):
        zd = start(extra={"mirror_delete": False})
        zd.emulator.seed("users", [{"name": "A", "external_id": "a", "phone": "+14155552671"}])
        record_id = str(zd.emulator.find("users", external_id="a")["id"])
        before = zd.emulator.request_count()
        [outcome] = ZendeskHook(sleep=no_sleep).delete("users", [record_id])
        assert not outcome.ok and outcome.code == "UNSET_FIELDS_UNKNOWN" and "mirror_unset_fields" in outcome.reason
        assert zd.emulator.request_count() == before
        hook = ZendeskHook(sleep=no_sleep)
        hook.sync_fields("users", ["external_id", "name", "phone"])
        assert hook.delete("users", [record_id])[0].ok
        assert zd.emulator.find("users", external_id="a")["phone"] is None

    def test_only_identity_fields_synced_is_a_reject_not_a_silent_success(self, start):
        # Nothing can be unset, so the record stays as it was: reporting it "deleted" would be silent success.
        zd = start(extra={"mirror_delete": False})
        zd.emulator.seed("users", [{"name": "A", "external_id": "a"}])
        record_id = str(zd.emulator.find("users", external_id="a")["id"])
        hook = ZendeskHook(sleep=no_sleep)
        hook.sync_fields("users", ["external_id", "name", "email"])
        before = zd.emulator.request_count()
        [outcome] = hook.delete("users", [record_id])
        assert not outcome.ok and outcome.code == "NOTHING_TO_UNSET" and "mirror_delete" in outcome.reason
        assert zd.emulator.request_count() == before and zd.emulator.find("users", external_id="a")

    def test_mirror_delete_destroys_only_when_asked(self, start):
        zd = start(extra={"mirror_delete": True})
        hook = ZendeskHook(sleep=no_sleep)
        ids = [o.dest_id for o in hook.upsert("users", [user("a", name="A"), user("b", name="B")], "external_id")]
        assert all(o.ok for o in hook.delete("users", [ids[0], ids[0], "999"]))
        assert [u["external_id"] for u in zd.emulator.users()] == ["b"]
        assert zd.emulator.request_count("DELETE /api/v2/users/destroy_many.json") == 1
