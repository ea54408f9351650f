"""BrazeHook against the Braze emulator (a real local HTTP server)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from airflow_provider_retl.hooks.braze import BrazeHook, braze_time
from airflow_provider_retl.sync.batching import isolate
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    FatalDestinationError,
    OutcomeUnknownError,
)
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import start_emulator

from .support import SleepRecorder, eventually, no_sleep

KEY = "braze-test-rest-key-5f3a9c"
TRACK = "POST /users/track"
EXPORT = "POST /users/export/ids"


def user(external_id, **fields) -> Record:
    return Record(key=str(external_id), fields={"external_id": external_id, **fields}, match_value=external_id)


def row(key, external_id, **fields) -> Record:
    return Record(key=key, fields={"event_key": key, "external_id": external_id, **fields}, event_id=f"retl-{key}")


@pytest.fixture
def start_braze(add_connection):
    """Start a Braze emulator and point ``braze_default`` at it (no client-side limit unless asked)."""
    running = []

    def start(*, extra: dict | None = None, conn_key: str = KEY, **options):
        options.setdefault("api_keys", [KEY])
        options.setdefault("rate_limit", None)
        emulator = start_emulator("braze", **options)
        running.append(emulator)
        add_connection("braze_default", "retl_braze", emulator.url, conn_key, **{"rate_limit": 0, **(extra or {})})
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def bz(start_braze):
    return start_braze()


@pytest.fixture
def hook(bz):
    return BrazeHook(sleep=no_sleep)


class TestIdentity:
    def test_airflow_attributes_protocol_and_defaults(self, add_connection):
        add_connection("braze_default", "retl_braze", "rest.iad-01.braze.com", KEY)
        assert (BrazeHook.conn_name_attr, BrazeHook.default_conn_name, BrazeHook.conn_type, BrazeHook.hook_name) == (
            "braze_conn_id", "braze_default", "retl_braze", "Braze")
        hook = BrazeHook()
        assert isinstance(hook, Destination)
        assert hook.base_url == "https://rest.iad-01.braze.com"
        assert hook.max_batch_size == 75 and (hook.limiter.limit, hook.limiter.window) == (3000, 3.0)
        assert BrazeHook(braze_conn_id="other").braze_conn_id == "other"

    def test_a_host_is_required(self, add_connection):
        add_connection("braze_default", "retl_braze", None, KEY)
        with pytest.raises(ConfigurationError, match="REST endpoint"):
            BrazeHook().get_conn()

    def test_capabilities(self, hook):
        assert hook.default_match_field("users") == "external_id" and not hook.needs_lookup("users")
        assert hook.supports_upsert("users", "external_id") and not hook.supports_upsert("users", "email")
        assert hook.supports_events("events") and hook.supports_events("purchases")
        assert not hook.supports_events("users") and not hook.supports_delete("users")
        with pytest.raises(ConfigurationError, match="'users'.*'events'.*'purchases'"):
            hook.supports_events("contacts")


class TestUsers:
    def test_upsert_creates_then_updates_and_null_removes(self, bz, hook):
        outcomes = hook.upsert("users", [user("u1", first_name="Ann", plan="pro"), user(42, first_name="Bob")],
                               "external_id")
        assert [(o.ok, o.dest_id, o.created) for o in outcomes] == [(True, "u1", None), (True, "42", None)]
        hook.upsert("users", [user("u1", first_name="Ann", plan=None)], "external_id")
        assert bz.emulator.user("u1")["attributes"] == {"first_name": "Ann"}
        assert bz.emulator.user("42")["attributes"] == {"first_name": "Bob"}

    def test_update_sends_update_existing_only(self, bz, hook):
        bz.emulator.seed_user("known", plan="free")
        records = [Record("known", {"external_id": "known", "plan": "pro"}, dest_id="known"),
                   Record("gone", {"external_id": "gone", "plan": "pro"}, dest_id="gone")]
        outcomes = hook.update("users", records)
        assert [(o.ok, o.dest_id, o.created) for o in outcomes] == [(True, "known", False), (True, "gone", False)]
        assert bz.emulator.user("known")["attributes"] == {"plan": "pro"}
        assert bz.emulator.user("gone") is None and bz.emulator.update_only_skips() == 1  # never created

    def test_update_refuses_a_renamed_external_id(self, bz, hook):
        outcomes = hook.update("users", [Record("k", {"external_id": "new"}, dest_id="old")])
        assert not outcomes[0].ok and outcomes[0].code == "EXTERNAL_ID_CHANGED"
        assert bz.emulator.request_count() == 0

    def test_75_objects_per_call(self, bz, hook):
        # The engine hands the hook batches of max_batch_size; one such batch is one /users/track call.
        assert hook.max_batch_size == 75
        assert all(o.ok for o in hook.upsert("users", [user(f"u{i}") for i in range(75)], "external_id"))
        assert bz.emulator.request_count(TRACK) == 1 and len(bz.emulator.users()) == 75

    def test_a_combined_limit_of_50_is_met_by_batch_size_or_by_splitting(self, start_braze):
        bz = start_braze(max_per_request=50)
        hook = BrazeHook(sleep=no_sleep)
        records = [user(f"u{i}") for i in range(75)]
        # 75 is refused whole (400 Max Input Length Exceeded, nothing applied); the engine's isolate sends halves.
        assert all(o.ok for o in isolate(records, lambda part: hook.upsert("users", part, "external_id")))
        assert bz.emulator.request_count(TRACK, 400) == 1 and bz.emulator.request_count(TRACK, 201) == 2
        assert len(bz.emulator.users()) == 75
        bz2 = start_braze(max_per_request=50, extra={"batch_size": 50})
        hook2 = BrazeHook(sleep=no_sleep)
        assert hook2.max_batch_size == 50  # the engine then sends batches of 50: none is refused
        for start in (0, 50):
            hook2.upsert("users", [user(f"v{i}") for i in range(start, min(start + 50, 75))], "external_id")
        assert bz2.emulator.request_count(TRACK, 400) == 0 and bz2.emulator.request_count(TRACK) == 2

    def test_partial_201_errors_become_outcomes_by_index(self, bz, hook):
        outcomes = hook.upsert("users", [user("a"), user("b", email="not-an-email"), user("c", gender="X")],
                               "external_id")
        assert [o.ok for o in outcomes] == [True, False, False]
        assert outcomes[1].reason == "'email' is not valid" and outcomes[2].reason == "'gender' is not valid"
        assert [u["external_id"] for u in bz.emulator.users()] == ["a"]

    def test_a_400_where_nothing_is_valid_rejects_each_record(self, bz, hook):
        outcomes = hook.upsert("users", [user("a", email="bad"), user("b", email="worse")], "external_id")
        assert [(o.ok, o.reason) for o in outcomes] == [(False, "'email' is not valid")] * 2
        assert bz.emulator.request_count(TRACK) == 1  # per-object errors: no bisecting

    def test_202_queued_is_accepted(self, bz, hook):
        bz.emulator.set_maintenance(True)
        outcomes = hook.upsert("users", [user("a", plan="pro")], "external_id")
        assert outcomes[0].ok and bz.emulator.users() == []
        bz.emulator.set_maintenance(False)
        assert bz.emulator.user("a")["attributes"] == {"plan": "pro"}

    def test_validate_locally(self, hook):
        assert hook.validate("users", {"external_id": "a", "email": "a@example.com"}) == []
        problems = dict(hook.validate("users", {"external_id": None, "email": "nope", "email_subscribe": "yes"}))
        assert set(problems) == {"external_id", "email", "email_subscribe"}


class TestDelete:
    def test_refused_unless_allowed(self, bz, hook):
        assert hook.supports_delete("users") is False
        with pytest.raises(ConfigurationError, match="allow_delete"):
            hook.delete("users", ["a"])

    @pytest.mark.parametrize("how", ["extra", "param"])
    def test_deletes_50_per_call_when_allowed(self, start_braze, how):
        bz = start_braze(extra={"allow_delete": True} if how == "extra" else {})
        hook = BrazeHook(sleep=no_sleep, **({"allow_delete": True} if how == "param" else {}))
        for start in (0, 75):  # API-sized batches, as the engine sends them
            hook.upsert("users", [user(f"u{i}") for i in range(start, min(start + 75, 110))], "external_id")
        assert hook.supports_delete("users") and not hook.supports_delete("events")
        # One batch of max_batch_size (75) ids; /users/delete takes 50 a call.
        outcomes = hook.delete("users", [f"u{i}" for i in range(73)] + ["never-there", None])
        assert all(o.ok for o in outcomes[:-1]) and outcomes[-1].code == "NO_ID"
        assert bz.emulator.request_count("POST /users/delete") == 2
        assert sorted(u["external_id"] for u in bz.emulator.users()) == sorted(f"u{i}" for i in range(73, 110))


class TestEvents:
    def test_event_objects_from_rows(self, bz, hook):
        hook.event_name = "repurchase_due"
        hook.event_time_field = "due_at"
        outcomes = hook.send_events("events", [
            row("e1", "u1", due_at="2026-03-01T09:00:00+01:00", sku="A", note=None),
            row("e2", 7, due_at="2026-03-02 10:00:00"),
        ])
        assert [(o.ok, o.dest_id) for o in outcomes] == [(True, "retl-e1"), (True, "retl-e2")]
        events = bz.emulator.events()
        assert [(e["external_id"], e["name"], e["time"]) for e in events] == [
            ("u1", "repurchase_due", "2026-03-01T08:00:00.000Z"), ("7", "repurchase_due", "2026-03-02T10:00:00.000Z")]
        assert events[0]["properties"] == {"event_key": "e1", "sku": "A"}  # NULLs left out

    def test_name_and_time_columns_and_a_missing_time_means_now(self, bz, hook):
        before = braze_time(dt.datetime.now(dt.UTC))
        hook.send_events("events", [row("e1", "u1", name="signed_up", time="2026-01-01T00:00:00Z"),
                                    row("e2", "u1", name="welcome")])
        first, second = bz.emulator.events()
        assert (first["name"], first["time"], first["properties"]) == ("signed_up", "2026-01-01T00:00:00.000Z",
                                                                      {"event_key": "e1"})
        assert second["name"] == "welcome" and second["time"] >= before[:19]

    def test_purchases(self, bz, hook):
        outcomes = hook.send_events("purchases", [
            row("o1", "u1", product_id="plan-pro", currency="EUR", price="19.90", quantity=2,
                time="2026-01-01T00:00:00Z"),
            row("o2", "u1", product_id="plan-pro", currency="EUR", price=5, quantity=500, time="2026-01-01T00:00:00Z"),
        ])
        assert [o.ok for o in outcomes] == [True, False] and outcomes[1].reason == "'quantity' is not valid"
        [bought] = bz.emulator.purchases()
        assert (bought["product_id"], bought["currency"], bought["price"], bought["quantity"]) == (
            "plan-pro", "EUR", 19.9, 2)
        assert bought["properties"] == {"event_key": "o1"}

    def test_75_per_call_and_errors_by_index(self, bz, hook):
        hook.event_name = "ping"
        records = [row(f"e{i}", f"u{i}", time="2026-01-01T00:00:00Z") for i in range(80)]
        records[76].fields["$bad"] = 1  # validate() catches this in a sync; here Braze does
        # Two API-sized batches, as the engine sends them; errors map back by index within each call.
        outcomes = hook.send_events("events", records[:75]) + hook.send_events("events", records[75:])
        assert bz.emulator.request_count(TRACK) == 2
        assert [i for i, o in enumerate(outcomes) if not o.ok] == [76]
        assert outcomes[76].reason.startswith("'properties' is not valid")
        assert len(bz.emulator.events()) == 79

    def test_validate_events_and_purchases(self, hook):
        assert dict(hook.validate("events", {"external_id": "u"})) == {
            "name": "no event name: set event_name, or send a 'name' column"}
        hook.event_name = "x"
        hook.event_time_field = "at"
        problems = dict(hook.validate("events", {"external_id": "u", "at": "soon", "long": "y" * 300}))
        assert set(problems) == {"at", "long"}
        problems = dict(hook.validate("purchases", {"external_id": "u", "at": "2026-01-01", "product_id": "p",
                                                     "currency": "usd", "price": "abc", "quantity": 0}))
        assert set(problems) == {"currency", "price", "quantity"}

    def test_lost_answer_or_5xx_is_outcome_unknown_and_never_resent(self, bz, hook):
        hook.event_name = "welcome"
        for fault in ("lost_response", "error"):
            bz.faults.fail_next(1, fault)
            with pytest.raises(OutcomeUnknownError):
                hook.send_events("events", [row("e1", "u1", time="2026-01-01T00:00:00Z")])
        assert bz.emulator.request_count(TRACK) == 2  # one attempt each
        assert eventually(lambda: len(bz.emulator.events()) == 1)  # the lost answer's event landed, once

    def test_5xx_on_attributes_is_retried(self, bz, hook):
        bz.faults.fail_next(2, "error")
        assert hook.upsert("users", [user("a")], "external_id")[0].ok
        assert bz.emulator.request_count(TRACK) == 3 and hook.retry_count == 2


class TestReconcile:
    def test_false_only_where_the_export_proves_it(self, bz, hook):
        hook.event_name = "welcome"
        bz.emulator.seed_user("exists-without-it")
        hook.send_events("events", [row("e0", "has-it", time="2026-01-01T00:00:00Z")])
        records = [row("e1", "no-such-user"), row("e2", "exists-without-it"), row("e3", "has-it")]
        assert hook.reconcile_events("events", records) == [False, False, None]
        assert bz.emulator.request_count(EXPORT) == 1

    def test_purchases_by_product(self, bz, hook):
        fields = {"currency": "USD", "price": 1, "time": "2026-01-01T00:00:00Z"}
        hook.send_events("purchases", [row("o0", "u", product_id="a", **fields)])
        answers = hook.reconcile_events("purchases", [row("o1", "u", product_id="a", **fields),
                                                      row("o2", "u", product_id="b", **fields)])
        assert answers == [None, False]

    def test_many_users_are_asked_50_at_a_time(self, bz, hook):
        hook.event_name = "welcome"
        assert hook.reconcile_events("events", [row(f"e{i}", f"u{i}") for i in range(120)]) == [False] * 120
        assert bz.emulator.request_count(EXPORT) == 3

    def test_can_be_switched_off(self, start_braze):
        bz = start_braze(extra={"reconcile_events": False})
        hook = BrazeHook(sleep=no_sleep)
        hook.event_name = "welcome"
        assert hook.reconcile_events("events", [row("e1", "u1")]) == [None]
        assert bz.emulator.request_count() == 0


class TestRateLimit:
    def test_429_waits_for_the_window_reset_and_retries(self, start_braze):
        bz = start_braze(rate_limit=2, rate_window=1.0)
        sleep = SleepRecorder()
        hook = BrazeHook(sleep=lambda s: (sleep(s), time.sleep(s)))
        for i in range(3):
            hook.upsert("users", [user(f"u{i}")], "external_id")
        assert len(bz.emulator.users()) == 3
        assert bz.emulator.request_count(TRACK, 429) >= 1 and hook.retry_count >= 1
        assert all(0 <= s <= 1.0 for s in sleep.calls)  # from X-RateLimit-Reset, not a blind backoff

    def test_the_client_limiter_keeps_under_the_quota(self, start_braze):
        bz = start_braze(rate_limit=3, rate_window=0.5, extra={"rate_limit": 3, "rate_window": 0.5})
        hook = BrazeHook(sleep=no_sleep)
        for i in range(7):
            hook.upsert("users", [user(f"u{i}")], "external_id")
        assert bz.emulator.request_count(TRACK, 429) == 0
        assert bz.emulator.track_limiter.max_in_window() <= 3

    def test_burst_429_is_retried(self, bz, hook):
        bz.faults.burst_429 = 2
        assert hook.upsert("users", [user("a")], "external_id")[0].ok
        assert hook.retry_count == 2 and bz.emulator.request_count(TRACK) == 3


class TestSecretsAndConnectionTest:
    def test_wrong_key_is_fatal_and_never_shown(self, start_braze):
        start_braze(conn_key="wrong-secret-key-123456")
        hook = BrazeHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError) as info:
            hook.upsert("users", [user("a")], "external_id")
        assert info.value.status == 401 and "Invalid API Key" in str(info.value)
        text = str(info.value) + repr(info.value) + repr(hook) + str(info.value.response.request.headers)
        assert "wrong-secret-key-123456" not in text

    def test_a_key_echoed_by_the_server_is_redacted(self, server, add_connection):
        server.then((401, {}, {"message": f"Invalid API key: {KEY}"}))
        add_connection("braze_default", "retl_braze", server.url, KEY)
        with pytest.raises(FatalDestinationError) as info:
            BrazeHook(sleep=no_sleep).upsert("users", [user("a")], "external_id")
        assert KEY not in str(info.value) and "***" in str(info.value)

    def test_connection_test_writes_nothing(self, bz, hook):
        assert hook.test_connection() == (True, f"Connected to Braze at {bz.url}")
        assert bz.emulator.users() == [] and bz.emulator.request_count(TRACK, 400) == 1

    def test_connection_test_with_a_wrong_key(self, start_braze):
        start_braze(conn_key="wrong-secret-key-123456")
        ok, message = BrazeHook().test_connection()
        assert not ok and "401" in message and "wrong-secret" not in message

    def test_connection_test_notes_a_key_without_export(self, server, add_connection):
        server.then((400, {}, {"message": "Valid data must be provided in the 'attributes', 'events', or "
                                          "'purchases' fields."}),
                    (401, {}, {"message": "Invalid API Key"}))
        add_connection("braze_default", "retl_braze", server.url, KEY)
        ok, message = BrazeHook().test_connection()
        assert ok and "cannot read /users/export/ids" in message
