"""HubSpotHook against the HubSpot emulator (a real local HTTP server)."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_retl.hooks import hubspot as hubspot_module
from airflow_provider_retl.hooks.destination import EXISTS
from airflow_provider_retl.hooks.hubspot import HubSpotHook
from airflow_provider_retl.hooks.ratelimit import RollingWindowLimiter
from airflow_provider_retl.sync.batching import isolate
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    ConfigurationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
)
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import start_emulator

from .support import TOKEN, SleepRecorder, closed_port_url, eventually, no_sleep

UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
CREATE = "POST /crm/v3/objects/contacts/batch/create"


def contact(key: str, email: str | None, **fields) -> Record:
    return Record(key=key, fields={"email": email, **fields}, match_value=email)


@pytest.fixture
def start_hubspot(add_connection):
    """Start a HubSpot emulator and point ``hubspot_default`` at it (no client-side limit unless asked)."""
    running = []

    def start(*, extra: dict | None = None, conn_token: str = TOKEN, **options):
        options.setdefault("tokens", [TOKEN])
        emulator = start_emulator("hubspot", **options)
        running.append(emulator)
        extras = {"rate_limit": 0, **(extra or {})}
        add_connection("hubspot_default", "retl_hubspot", emulator.url, conn_token, **extras)
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def hs(start_hubspot):
    return start_hubspot()


@pytest.fixture
def hook(hs):
    return HubSpotHook(sleep=no_sleep)


class TestIdentity:
    def test_airflow_attributes_and_protocol(self, add_connection):
        add_connection("hubspot_default", "retl_hubspot", None)
        assert HubSpotHook.conn_name_attr == "hubspot_conn_id"
        assert HubSpotHook.default_conn_name == "hubspot_default"
        assert HubSpotHook.conn_type == "retl_hubspot"
        assert HubSpotHook.default_host == "https://api.hubapi.com"
        assert HubSpotHook(hubspot_conn_id="other").hubspot_conn_id == "other"
        assert isinstance(HubSpotHook(), Destination)

    def test_defaults_from_a_bare_connection(self, add_connection):
        add_connection("hubspot_default", "retl_hubspot", None)
        hook = HubSpotHook()
        assert hook.max_batch_size == 100 and hook.lookup_batch_size == 100
        assert hook.base_url == "https://api.hubapi.com"
        assert (hook.limiter.limit, hook.limiter.window) == (100, 10.0)

    def test_rate_limit_from_extras(self, add_connection):
        add_connection("hubspot_default", "retl_hubspot", None, rate_limit=190)
        assert HubSpotHook().limiter.limit == 190


class TestRoundTrips:
    def test_upsert_creates_then_updates_by_email_in_any_case(self, hs, hook):
        first = hook.upsert("contacts", [contact("1", "Ann@Example.com", firstname="Ann"),
                                         contact("2", "bob@example.com", firstname="Bob")], "email")
        assert [(o.ok, o.created) for o in first] == [(True, True), (True, True)]
        again = hook.upsert("contacts", [contact("2", "BOB@example.com", firstname="Robert"),
                                         contact("1", "ann@example.com", firstname=None)], "email")
        assert [(o.ok, o.created) for o in again] == [(True, False), (True, False)]
        assert [o.dest_id for o in again] == [first[1].dest_id, first[0].dest_id]  # mapped, not by order
        bob = hs.emulator.find("contacts", "email", "bob@example.com")
        assert bob["properties"]["firstname"] == "Robert"
        ann = hs.emulator.get_record("contacts", first[0].dest_id)
        assert "firstname" not in ann["properties"]  # None cleared it
        assert hs.emulator.request_count(UPSERT) == 2

    def test_create_lookup_update_archive(self, hs, hook):
        created = hook.create("contacts", [contact("1", "a@example.com", firstname="A"),
                                           contact("2", "b@example.com", firstname="B")])
        assert all(o.ok and o.created for o in created)
        ids = [o.dest_id for o in created]

        found = hook.lookup("contacts", "email", ["A@example.com", "b@example.com", "nobody@example.com"])
        assert found == {"A@example.com": ids[0], "b@example.com": ids[1]}

        updates = [
            Record("1", {"firstname": "Alice"}, dest_id=ids[0]),
            Record("9", {"firstname": "X"}, dest_id="999999"),
        ]
        outcomes = hook.update("contacts", updates)
        assert outcomes[0].ok and outcomes[0].dest_id == ids[0] and outcomes[0].created is False
        assert not outcomes[1].ok and outcomes[1].code == "OBJECT_NOT_FOUND"
        assert hs.emulator.get_record("contacts", ids[0])["properties"]["firstname"] == "Alice"

        deleted = hook.delete("contacts", [ids[0], ids[0], "999999", None])
        assert [o.ok for o in deleted] == [True, True, True, False]
        assert deleted[3].code == "NO_ID"
        assert hs.emulator.get_record("contacts", ids[0])["archived"] is True
        assert hook.lookup("contacts", "email", ["a@example.com"]) == {}

    def test_lookup_by_id_and_by_a_non_unique_property(self, hs, hook):
        ids = hs.emulator.seed("companies", [{"name": "Acme", "domain": "acme.com"},
                                             {"name": "Acme 2", "domain": "acme.com"},
                                             {"name": "Beta", "domain": "beta.io"}])
        assert hook.supports_upsert("companies", "domain") is False
        assert hook.lookup("companies", "domain", ["acme.com", "beta.io", "gone.org"]) == {
            "acme.com": ids[0],  # the oldest of two with the same domain
            "beta.io": ids[2],
        }
        assert hook.lookup("companies", "hs_object_id", [ids[2], "424242"]) == {ids[2]: ids[2]}

    def test_custom_object_upsert_by_a_unique_property(self, start_hubspot):
        hs = start_hubspot(object_types={"p_cars": [{"name": "vin", "hasUniqueValue": True}, "model"]})
        hook = HubSpotHook(sleep=no_sleep)
        assert hook.supports_upsert("p_cars", "vin") is True
        assert hook.supports_upsert("p_cars", "model") is False
        assert hook.default_match_field("p_cars") is None
        cars = [Record("1", {"vin": "V1", "model": "T"}, match_value="V1"), Record("2", {"vin": "V2", "model": "S"})]
        assert all(o.ok for o in hook.upsert("p_cars", cars, "vin"))
        type_id = "2-1001"  # the emulator numbers custom objects from 2-1001
        assert hook.lookup(type_id, "vin", ["V2"]) == {"V2": hs.emulator.find("p_cars", "vin", "V2")["id"]}
        with pytest.raises(ConfigurationError, match="unique property"):
            hook.upsert("p_cars", cars, "model")

    def test_property_definitions_are_read_once_per_object(self, hs, hook):
        for _ in range(3):
            hook.supports_upsert("companies", "name")
        assert hs.emulator.request_count("GET /crm/v3/properties/companies") == 1

    def test_unknown_object_is_a_configuration_error_without_bisecting(self, hs, hook):
        with pytest.raises(ConfigurationError, match="does not know the object type"):
            hook.supports_upsert("spaceships", "serial")
        records = [Record(str(i), {"name": "x"}) for i in range(8)]
        with pytest.raises(FatalDestinationError, match="Unable to infer object type"):
            hook.create("spaceships", records)
        assert hs.emulator.request_count("POST /crm/v3/objects/spaceships/batch/create") == 1

    def test_upsert_without_a_match_value_is_rejected_before_sending(self, hs, hook):
        outcomes = hook.upsert("contacts", [contact("1", None, firstname="X")], "email")
        assert not outcomes[0].ok and "email" in outcomes[0].reason
        assert hs.emulator.request_count() == 0


class TestPerRecordOutcomes:
    def test_207_partial_failure_gives_each_record_its_reason(self, hs, hook):
        records = [contact(str(i), f"user{i}@example.com", firstname=f"U{i}") for i in range(10)]
        records[3].fields["lifecyclestage"] = "royalty"
        records[7].fields["phone_typo"] = "123"
        outcomes = hook.upsert("contacts", records, "email")
        assert [o.ok for o in outcomes] == [i not in (3, 7) for i in range(10)]
        assert outcomes[3].code == "INVALID_OPTION" and "lifecyclestage: royalty" in outcomes[3].reason
        assert outcomes[7].code == "PROPERTY_DOESNT_EXIST" and "phone_typo" in outcomes[7].reason
        assert len(hs.emulator.records("contacts")) == 8
        assert hs.emulator.request_count(UPSERT) == 1  # trace ids: one call, no bisect

    def test_create_of_an_existing_contact_says_exists_with_its_id(self, hs, hook):
        [existing] = hs.emulator.seed("contacts", [{"email": "taken@example.com"}])
        outcomes = hook.create("contacts", [contact("1", "new@example.com"), contact("2", "TAKEN@example.com")])
        assert outcomes[0].ok and outcomes[0].created
        assert (outcomes[1].ok, outcomes[1].code, outcomes[1].dest_id) == (False, EXISTS, existing)

    def test_whole_batch_400_and_409_are_bisected(self, hs, hook, monkeypatch):
        # Without trace ids HubSpot fails the whole batch for one bad input (400) or one conflict (409).
        # The hook raises a record-level BatchRejectedError; the engine's isolate (as Pusher uses it) splits.
        monkeypatch.setattr(hubspot_module, "_trace_id", lambda position: "")
        [existing] = hs.emulator.seed("contacts", [{"email": "taken@example.com"}])
        records = [contact(str(i), f"user{i}@example.com") for i in range(8)]
        records[2].fields["lifecyclestage"] = "royalty"
        records[5] = contact("5", "taken@example.com")
        with pytest.raises(BatchRejectedError) as refused:
            hook.create("contacts", records)
        assert refused.value.record_level
        outcomes = isolate(records, lambda part: hook.create("contacts", part))
        assert [o.ok for o in outcomes] == [i not in (2, 5) for i in range(8)]
        assert outcomes[2].code == "INVALID_OPTION"
        assert (outcomes[5].code, outcomes[5].dest_id) == (EXISTS, existing)
        assert len(hs.emulator.records("contacts")) == 7
        assert 3 < hs.emulator.request_count(CREATE) < 17

    def test_duplicate_ids_in_one_batch_are_split_and_both_applied(self, hs, hook):
        [dest_id] = hs.emulator.seed("contacts", [{"email": "a@example.com"}])
        records = [Record("1", {"firstname": "First"}, dest_id=dest_id),
                   Record("1", {"firstname": "Second"}, dest_id=dest_id)]
        # HubSpot refuses the pair as one batch; the engine's isolate sends them one by one, in order.
        assert all(o.ok for o in isolate(records, lambda part: hook.update("contacts", part)))
        assert hs.emulator.get_record("contacts", dest_id)["properties"]["firstname"] == "Second"

    def test_validate_locally(self, hook):
        assert hook.validate("contacts", {"email": "ok@example.com", "firstname": "A"}) == []
        [(field, reason)] = hook.validate("contacts", {"email": "not-an-email"})
        assert field == "email" and "invalid email" in reason
        [(field, reason)] = hook.validate("companies", {"description": "x" * 65_537})
        assert field == "description" and "65,536" in reason
        assert hook.validate("companies", {"email": "not-an-email"}) == []


class TestFaults:
    def test_rate_limit_respected_by_hooks_sharing_the_account(self, start_hubspot):
        hs = start_hubspot(rate_limit=5, rate_window=0.5, extra={"rate_limit": 5, "rate_window": 0.5})
        hs.emulator.seed("contacts", [{"email": f"u{i}@example.com"} for i in range(4)])
        errors = []

        def worker(n: int) -> None:
            hook = HubSpotHook(sleep=no_sleep)  # one hook per task; the limiter is shared
            try:
                for _ in range(4):
                    assert hook.lookup("contacts", "email", [f"u{n}@example.com"])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert hs.emulator.request_count() == 16
        assert hs.emulator.request_count(status=429) == 0
        assert hs.emulator.max_requests_in_window() <= 5

    def test_429_burst_and_5xx_are_retried(self, hs):
        sleep = SleepRecorder()
        clock = [0.0]
        limiter = RollingWindowLimiter(1000, 10.0, clock=lambda: clock[0],
                                       sleep=lambda s: clock.__setitem__(0, clock[0] + s))
        hook = HubSpotHook(sleep=sleep, limiter=limiter)
        hs.faults.burst_429 = 2
        assert all(o.ok for o in hook.upsert("contacts", [contact("1", "a@example.com")], "email"))
        assert sleep.calls == [1, 1]  # Retry-After of the 429s
        hs.faults.fail_next(2, "error")
        assert hook.update("contacts", [Record("1", {"firstname": "B"}, dest_id=hook.lookup(
            "contacts", "email", ["a@example.com"])["a@example.com"])])[0].ok
        assert hook.retry_count == 4
        assert hs.emulator.request_count(status=429) == 2
        assert sum(hs.emulator.request_count(status=s) for s in (500, 502, 503)) == 2

    def test_lost_response_on_create_is_outcome_unknown_and_lookup_reconciles(self, hs, hook):
        hs.faults.fail_next(1, "lost_response")
        with pytest.raises(OutcomeUnknownError):
            hook.create("contacts", [contact("1", "lost@example.com")])
        assert eventually(lambda: hs.emulator.request_count(CREATE) == 1)  # sent once, not resent blindly
        assert hook.lookup("contacts", "email", ["lost@example.com"]) == {
            "lost@example.com": hs.emulator.find("contacts", "email", "lost@example.com")["id"]
        }

    @pytest.mark.parametrize("fault", ["lost_response", "reset", "malformed"])
    def test_upsert_is_resent_after_a_lost_or_garbled_answer_without_duplicates(self, hs, hook, fault):
        hs.faults.fail_next(1, fault)
        [outcome] = hook.upsert("contacts", [contact("1", "once@example.com")], "email")
        assert outcome.ok
        assert len(hs.emulator.records("contacts")) == 1
        assert eventually(lambda: hs.emulator.request_count(UPSERT) == 2)

    def test_garbled_answer_to_a_create_is_outcome_unknown(self, hs, hook):
        hs.faults.fail_next(1, "malformed")
        with pytest.raises(OutcomeUnknownError):
            hook.create("contacts", [contact("1", "x@example.com")])

    def test_persistent_5xx_gives_up_after_max_retries(self, start_hubspot):
        hs = start_hubspot(extra={"max_retries": 2})
        hs.faults.error_rate = 1.0
        with pytest.raises(RetryableDestinationError):
            HubSpotHook(sleep=no_sleep).lookup("contacts", "email", ["a@example.com"])
        assert hs.emulator.request_count() == 3

    def test_401_is_fatal_without_the_token_in_the_message(self, start_hubspot):
        hs = start_hubspot(conn_token="pat-na1-wrong-token-987654")
        hook = HubSpotHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError) as info:
            hook.upsert("contacts", [contact("1", "a@example.com")], "email")
        assert info.value.status == 401 and info.value.response is not None
        assert "INVALID_AUTHENTICATION" in str(info.value)
        assert "pat-na1-wrong-token-987654" not in str(info.value) + repr(info.value) + repr(hook)
        assert "wrong-token" not in str(info.value.response.request.headers)
        assert hs.emulator.request_count() == 1


class TestConnectionTest:
    def test_works(self, hs, hook):
        assert hook.test_connection() == (True, f"Connected to HubSpot at {hs.url}")
        assert hs.emulator.request_count("GET /crm/v3/objects/contacts") == 1

    def test_wrong_token(self, start_hubspot):
        start_hubspot(conn_token="pat-na1-wrong-token-987654")
        ok, message = HubSpotHook().test_connection()
        assert not ok and "401" in message and "wrong-token" not in message

    def test_nobody_listening(self, add_connection):
        add_connection("hubspot_default", "retl_hubspot", closed_port_url())
        ok, message = HubSpotHook().test_connection()
        assert not ok and "could not connect" in message


def test_a_daily_quota_429_surfaces_at_once_naming_its_policy(server, add_connection):
    body = {"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
            "policyName": "DAILY"}
    server.then((429, {}, body))
    add_connection("hubspot_default", "retl_hubspot", server.url)
    hook = HubSpotHook(sleep=no_sleep)
    with pytest.raises(RetryableDestinationError, match=r"\[policy DAILY\]") as info:
        hook.lookup("contacts", "email", ["a@example.com"])
    assert info.value.retry_after > 120 and len(server.seen) == 1
    assert hook.limiter.in_use <= 1  # the shared limiter was not paused for hours
    assert hook.limiter._paused_until == 0.0
