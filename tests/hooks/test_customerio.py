"""CustomerIoHook against the Customer.io emulator (a real local HTTP server)."""

from __future__ import annotations

import base64
import json
import math
from collections import Counter

import pytest

from airflow_provider_retl.hooks.customerio import (
    MAX_REQUEST_BYTES,
    CustomerIoHook,
    event_ulid,
    unix_seconds,
)
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import ConfigurationError, FatalDestinationError, RetryableDestinationError
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import CUSTOMERIO_API_KEY, CUSTOMERIO_SITE_ID, start_emulator
from airflow_provider_retl.testing.emulators.customerio import is_ulid
from tests.vendor_specs import spec_path

from .support import SleepRecorder, eventually, no_sleep

BATCH = "POST /api/v2/batch"


def add_cio_connection(monkeypatch, host, *, login=CUSTOMERIO_SITE_ID, password=CUSTOMERIO_API_KEY, **extra):
    conn = {"conn_type": "retl_customerio", "host": host, "login": login, "password": password, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_CUSTOMERIO_DEFAULT", json.dumps(conn))


@pytest.fixture
def start_cio(monkeypatch):
    """Start an emulator and point ``customerio_default`` at it (no client-side rate limit unless asked)."""
    running = []

    def start(*, extra: dict | None = None, password: str = CUSTOMERIO_API_KEY, **options):
        options.setdefault("rate_limit", None)
        emulator = start_emulator("customerio", **options)
        running.append(emulator)
        add_cio_connection(monkeypatch, emulator.url, password=password, **{"rate_limit": 0, **(extra or {})})
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def cio(start_cio):
    return start_cio()


@pytest.fixture
def hook(cio):
    return CustomerIoHook(sleep=no_sleep)


def someone(key: str, **fields) -> Record:
    fields = {"id": key, **fields}
    return Record(key=key, fields=fields, match_value=fields["id"])


def event(key: str, person: str = "u1", **fields) -> Record:
    return Record(key=key, fields={"id": person, **fields}, event_id=f"retl-abc-{key}")


class TestIdentity:
    def test_airflow_attributes_and_defaults(self, monkeypatch):
        add_cio_connection(monkeypatch, None)
        assert CustomerIoHook.conn_type == "retl_customerio"
        assert CustomerIoHook.default_conn_name == "customerio_default"
        assert CustomerIoHook(customerio_conn_id="other").customerio_conn_id == "other"
        hook = CustomerIoHook()
        assert isinstance(hook, Destination)
        assert hook.max_batch_size == 1000 and hook.max_concurrency == 4
        assert hook.base_url == "https://track.customer.io"
        assert (hook.limiter.limit, hook.limiter.window) == (100, 1.0)

    def test_region_shorthand(self, monkeypatch):
        add_cio_connection(monkeypatch, "eu")
        hook = CustomerIoHook()
        hook.get_conn()
        assert hook.base_url == "https://track-eu.customer.io"

    def test_capabilities(self, monkeypatch):
        add_cio_connection(monkeypatch, None)
        hook = CustomerIoHook()
        assert hook.supports_upsert("people", "id") and hook.supports_upsert("people", "email")
        assert not hook.supports_upsert("people", "customer_id") and not hook.supports_upsert("events", None)
        assert hook.supports_delete("people") and not hook.supports_delete("events")
        assert hook.supports_events("events") and not hook.supports_events("people")
        assert not hook.needs_lookup("people") and hook.default_match_field("people") == "id"
        with pytest.raises(ConfigurationError, match="it syncs 'people', 'events'"):
            hook.supports_events("contacts")


class TestAuthAndConnection:
    def test_test_connection(self, cio, hook):
        ok, message = hook.test_connection()
        assert ok and "workspace 101" in message and "region us" in message
        assert cio.emulator.request_count("GET /api/v1/accounts/region") == 1

    def test_bad_key_fails_fast_and_stays_secret(self, start_cio):
        secret = "wrong-key-0123456789"
        cio = start_cio(password=secret)
        hook = CustomerIoHook(sleep=no_sleep)
        ok, message = hook.test_connection()
        assert not ok and "401" in message and "Unauthorized request" in message
        with pytest.raises(FatalDestinationError) as caught:
            hook.upsert("people", [someone("1")], "id")
        token = base64.b64encode(f"{CUSTOMERIO_SITE_ID}:{secret}".encode()).decode()
        for text in (message, str(caught.value), repr(caught.value.request.headers)):
            assert secret not in text and token not in text
        assert cio.emulator.request_count(BATCH) == 1  # auth errors are never retried


class TestPeople:
    def test_upsert_by_id_then_by_email(self, cio, hook):
        out = hook.upsert("people", [someone("1", email="ann@acme.io", plan="free"), someone("2", plan=None)], "id")
        assert [(o.ok, o.dest_id) for o in out] == [(True, "id:1"), (True, "id:2")]
        out = hook.upsert("people", [Record("ann@acme.io", {"email": "ann@acme.io", "plan": "pro"},
                                            match_value="ann@acme.io")], "email")
        assert out[0].ok and out[0].dest_id.startswith("email-sha256:") and "acme" not in out[0].dest_id
        assert cio.emulator.person("1")["attributes"] == {"email": "ann@acme.io", "plan": "pro"}
        assert cio.emulator.request_count(BATCH) == 2
        with pytest.raises(ConfigurationError, match="id, email or cio_id"):
            hook.upsert("people", [someone("3")], "customer_id")

    def test_update_never_creates_and_delete_by_checkpoint_id(self, cio, hook):
        cio.emulator.seed([{"id": "1", "plan": "free"}])
        out = hook.update("people", [Record("1", {"id": "1", "plan": "pro"}, dest_id="id:1"),
                                     Record("2", {"id": "2", "plan": "pro"}, dest_id="id:2"),
                                     Record("3", {"id": "3"}, dest_id=None)])
        assert [o.ok for o in out] == [True, True, False] and out[2].code == "NO_ID"
        assert [p["id"] for p in cio.emulator.people()] == ["1"]
        assert cio.emulator.person("1")["attributes"] == {"plan": "pro"}
        out = hook.delete("people", ["id:1", "id:gone", "email-sha256:ab12"])
        assert [o.ok for o in out] == [True, True, False] and "match people on 'id'" in out[2].reason
        assert cio.emulator.people() == [] and cio.emulator.request_count(BATCH) == 2

    def test_batches_are_sized_by_bytes(self, start_cio):
        cio = start_cio(max_request_bytes=MAX_REQUEST_BYTES)  # the emulator refuses anything of 500,000 bytes or more
        hook = CustomerIoHook(sleep=no_sleep)
        wide = {f"attr{j}": "v" * 900 for j in range(30)}  # ~28 KB per operation
        records = [someone(str(i), **wide) for i in range(40)]
        out = hook.upsert("people", records, "id")
        assert all(o.ok for o in out) and len(cio.emulator.people()) == 40
        per_item = len(json.dumps({"type": "person", "identifiers": {"id": "10"}, "action": "identify",
                                   "attributes": wide}, separators=(",", ":")))
        assert cio.emulator.request_count(BATCH) == math.ceil(40 / (MAX_REQUEST_BYTES // (per_item + 1)))

    def test_an_operation_over_32_kb_is_rejected_locally(self, cio, hook):
        huge = someone("big", **{f"attr{j}": "v" * 900 for j in range(40)})
        out = hook.upsert("people", [someone("1"), huge], "id")
        assert out[0].ok and not out[1].ok and out[1].code == "ITEM_TOO_LARGE" and "32,000" in out[1].reason
        assert cio.emulator.person("big") is None and cio.emulator.request_count(BATCH) == 1

    def test_207_errors_map_to_records_by_batch_index(self, cio, hook):
        records = [someone("1"), someone("2", bio="x" * 1200), someone("3"), someone("4", **{"n" * 151: 1})]
        out = hook.upsert("people", records, "id")
        assert [o.ok for o in out] == [True, False, True, False]
        assert out[1].reason == "attributes.bio: Attribute value too long" and out[1].code == "invalid"
        assert "Attribute name too long" in out[3].reason
        assert sorted(p["id"] for p in cio.emulator.people()) == ["1", "3"]
        assert cio.emulator.request_count(BATCH) == 1 and hook.request_count == 1

    def test_a_whole_batch_400_is_bisected(self, start_cio):
        cio = start_cio(max_request_bytes=5_000)  # the emulator refuses requests the hook thinks fine
        hook = CustomerIoHook(sleep=no_sleep)
        records = [someone(str(i), note="n" * 900) for i in range(10)]
        out = hook.upsert("people", records, "id")
        assert all(o.ok for o in out) and len(cio.emulator.people()) == 10
        assert cio.emulator.request_count(BATCH, 400) >= 1 and cio.emulator.request_count(BATCH, 200) >= 2

    def test_a_single_record_400_is_its_reject(self, server, monkeypatch):
        add_cio_connection(monkeypatch, server.url, rate_limit=0)
        refusal = (400, {}, {"errors": [{"reason": "invalid", "field": "batch", "message": "bad operation"}]})
        server.then(refusal, (200, {}, {}), refusal)
        out = CustomerIoHook(sleep=no_sleep).upsert("people", [someone("1"), someone("2")], "id")
        assert out[0].ok and not out[1].ok and out[1].reason == "batch: bad operation" and out[1].code == "400"

    def test_local_validation(self, monkeypatch):
        add_cio_connection(monkeypatch, None)
        hook = CustomerIoHook()
        assert hook.validate("people", {"id": "1", "email": "ann@acme.io", "plan": "pro"}) == []
        assert hook.validate("people", {"id": "1", "email": "broken@"})[0][0] == "email"
        assert "1,000" in hook.validate("people", {"id": "1", "bio": "x" * 1001})[0][1]
        assert "150" in hook.validate("people", {"id": "i" * 151})[0][1]
        wide = {f"attr{j}": "v" * 900 for j in range(40)}  # every value allowed, the operation too large
        assert "32,000 bytes per operation" in hook.validate("people", {"id": "1", **wide})[0][1]
        assert "32,000 bytes per operation" in hook.validate("events", {"id": "1", "name": "x", **wide})[0][1]


SPEC = spec_path("customerio-track-openapi.json")


def assert_conforms(schema: str, body: dict) -> None:
    """``body`` is valid under ``components.schemas[schema]`` of Customer.io's Track API document."""
    if not SPEC.exists():
        pytest.fail(f"Customer.io's Track API document is missing: {SPEC}")
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:cio", Resource.from_contents(json.loads(SPEC.read_text()), default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"urn:cio#/components/schemas/{schema}"}, registry=registry)
    errors = [e.message for e in validator.iter_errors(body)]
    assert not errors, (body, errors)


def as_operation(event: dict) -> dict:
    """The v2 operation the emulator received for one of its stored events."""
    op = {
        "type": "person",
        "identifiers": event["identifiers"],
        "action": event["type"],
        "name": event["name"],
        "id": event["id"],
        "attributes": event["attributes"],
    }
    return op if event["timestamp"] is None else {**op, "timestamp": event["timestamp"]}


class TestEvents:
    def test_event_operations(self, cio, hook):
        hook.event_name, hook.event_time_field = "repurchase_due", "occurred_at"
        records = [
            event("o1", occurred_at="2026-01-01T00:00:00+00:00", total=9.5),
            event("o2", person="u2", name="refund", occurred_at=1767225600000),
            Record("o3", {"email": "c@acme.io", "total": 1}, event_id="retl-abc-o3"),
            # The engine's match_value of an events sync is the primary key: it never names the person.
            Record(
                "o4", {"event_key": "o4", "id": "c4", "email": "d@acme.io"}, match_value="o4", event_id="retl-abc-o4"
            ),
        ]
        out = hook.send_events("events", records)
        assert all(o.ok and is_ulid(o.dest_id) for o in out)
        first, second, third, fourth = cio.emulator.events()
        assert (first["name"], first["timestamp"], first["attributes"]) == ("repurchase_due", 1767225600, {"total": 9.5})
        assert first["id"] == event_ulid("retl-abc-o1") == out[0].dest_id
        assert (second["name"], second["timestamp"], second["identifiers"]) == ("refund", 1767225600, {"id": "u2"})
        assert third["identifiers"] == {"email": "c@acme.io"} and third["timestamp"] is None
        assert fourth["identifiers"] == {"id": "c4"} and fourth["attributes"] == {"event_key": "o4"}
        assert cio.emulator.person("o4") is None  # no person named after an event key
        for sent in cio.emulator.events():  # the operation as Customer.io's document describes it
            assert_conforms("person_event", as_operation(sent))

    def test_person_field_names_the_person_and_the_key_stays_the_event_id(self, cio, monkeypatch):
        add_cio_connection(monkeypatch, cio.url, rate_limit=0, person_field="buyer")  # the connection extra
        hook = CustomerIoHook(sleep=no_sleep)
        hook.event_name = "ordered"
        hook.sync_fields("events", ["event_key", "buyer", "id", "total"])
        out = hook.send_events(
            "events",
            [
                Record(
                    "o1",
                    {"event_key": "o1", "buyer": "c1", "id": "o1", "total": 3},
                    match_value="o1",
                    event_id="retl-0000000000000001",
                ),
            ],
        )
        [sent] = cio.emulator.events()
        assert out[0].ok and sent["identifiers"] == {"id": "c1"}
        assert sent["id"] == event_ulid("retl-0000000000000001") and is_ulid(sent["id"])
        assert sent["attributes"] == {"event_key": "o1", "id": "o1", "total": 3}  # "id" is only data here
        assert cio.emulator.person("c1") is not None and cio.emulator.person("o1") is None
        # The hook's own keyword arguments (an operator's destination_params) beat the extras.
        by_email = CustomerIoHook(person_field="buyer_email", person_identifier="email", sleep=no_sleep)
        by_email.event_name = "ordered"
        by_email.sync_fields("events", ["event_key", "buyer_email"])
        assert by_email.send_events(
            "events",
            [Record("o2", {"event_key": "o2", "buyer_email": "ann@acme.io"}, event_id="retl-0000000000000002")],
        )[0].ok
        assert cio.emulator.events()[-1]["identifiers"] == {"email": "ann@acme.io"}
        assert cio.emulator.person(email="ann@acme.io") is not None

    def test_a_sync_naming_no_person_fails_before_any_request(self, cio, hook):
        hook.event_name = "ordered"
        with pytest.raises(ConfigurationError, match="needs a person column, separate from the event's key"):
            hook.sync_fields("events", ["event_key", "customer_id", "total"])
        with pytest.raises(ConfigurationError, match="needs a person column"):
            hook.send_events("events", [Record("o1", {"event_key": "o1", "customer_id": "c1"}, event_id="retl-1")])
        hook.person_field = "buyer"
        with pytest.raises(ConfigurationError, match="person_field 'buyer' is not among the fields"):
            hook.sync_fields("events", ["event_key", "customer_id"])
        hook.person_field, hook.person_identifier = "customer_id", "phone"
        with pytest.raises(ConfigurationError, match="person_identifier must be one of id, email, cio_id"):
            hook.sync_fields("events", ["event_key", "customer_id"])
        hook.sync_fields("people", ["plan"])  # people syncs are not concerned
        assert cio.emulator.request_count() == 0

    @pytest.mark.parametrize("person_field", [None, "customer_id"])
    def test_an_events_sync_whose_key_is_its_person_column_fails_before_any_request(self, cio, hook, person_field):
        import pandas as pd

        from airflow_provider_retl.sync.checkpoint import MemoryCheckpointStore
        from airflow_provider_retl.sync.engine import SyncConfig, run_sync

        hook.event_name = "ordered"
        hook.person_field = person_field
        key = person_field or "id"
        frame = pd.DataFrame({key: ["c1", "c2"], "total": [1, 2]})
        config = SyncConfig(sync_id="cio-key-person", object="events", primary_key=key, mode="insert")
        with pytest.raises(ConfigurationError, match="is the key of this events sync"):
            run_sync([frame], hook, MemoryCheckpointStore(), config)
        assert cio.emulator.request_count() == 0

    def test_an_event_without_a_person_is_a_reject(self, cio, hook):
        hook.event_name = "ordered"
        hook.person_field = "customer_id"
        hook.sync_fields("events", ["event_key", "customer_id"])
        rows = [
            {"event_key": "o1", "customer_id": "c1"},
            {"event_key": "o2", "customer_id": None},
            {"event_key": "o3", "customer_id": "  "},
            {"event_key": "o4", "customer_id": 7.0},
        ]
        assert "no person for this event: 'customer_id' is empty" in hook.validate("events", rows[1])[0][1]
        out = hook.send_events("events", [Record(r["event_key"], r, event_id=f"retl-{i}") for i, r in enumerate(rows)])
        assert [o.ok for o in out] == [True, False, False, True]
        assert out[1].code == out[2].code == "MISSING_PERSON" and "'customer_id' is empty" in out[1].reason
        assert sorted(e["identifiers"]["id"] for e in cio.emulator.events()) == ["7", "c1"]
        assert cio.emulator.request_count(BATCH) == 1

    def test_ulid_is_stable_per_event_key(self):
        ids = [event_ulid(f"retl-abc-{i}") for i in range(200)]
        assert all(is_ulid(u) for u in ids) and len(set(ids)) == 200
        assert ids == [event_ulid(f"retl-abc-{i}") for i in range(200)]
        assert event_ulid("retl-abc-0") != event_ulid("retl-abd-0")
        millis = []
        for ulid in ids:  # the 48-bit time field: the first 10 Crockford characters
            value = 0
            for char in ulid[:10]:
                value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
            millis.append(value)
        assert 1_577_836_800_000 <= min(millis) and max(millis) < 2_208_988_800_000  # 2020 .. 2040

    def test_resending_is_deduplicated_by_the_emulator(self, cio, hook):
        hook.event_name = "signup"
        records = [event(f"e{i}") for i in range(5)]
        assert all(o.ok for o in hook.send_events("events", records))
        assert hook.reconcile_events("events", records) == [False] * 5
        assert all(o.ok for o in hook.send_events("events", records))  # what a retry after a lost answer does
        assert len(cio.emulator.events()) == 5 and cio.emulator.duplicate_events == 5

    def test_lost_response_is_retried_and_counted_once(self, cio, hook):
        hook.event_name = "signup"
        cio.faults.fail_next(1, "lost_response")
        out = hook.send_events("events", [event(f"e{i}") for i in range(3)])
        assert all(o.ok for o in out) and hook.retry_count == 1
        assert Counter(e["id"] for e in cio.emulator.events()).most_common(1)[0][1] == 1
        assert eventually(lambda: cio.emulator.duplicate_events == 3)

    def test_refused_events_are_rejects(self, cio, hook):
        out = hook.send_events("events", [event("e1", name="ok"), event("e2"), event("e3", name="n" * 101)])
        assert out[0].ok
        assert out[1].code == "MISSING_NAME" and out[2].code == "INVALID"
        assert hook.validate("events", {"id": "u1"}) and not hook.validate("events", {"id": "u1", "name": "x"})
        hook.event_time_field = "at"
        assert "at:" in hook.validate("events", {"id": "u1", "name": "x", "at": "yesterday"})[0][1]
        assert cio.emulator.request_count(BATCH) == 1

    def test_unix_seconds(self):
        assert unix_seconds("2026-01-01T00:00:00Z") == unix_seconds("2026-01-01 00:00:00") == 1767225600
        assert unix_seconds(1767225600) == unix_seconds(1767225600123) == unix_seconds("1767225600") == 1767225600
        with pytest.raises(ValueError):
            unix_seconds("soon")


class TestRateLimits:
    def test_429_is_retried_with_backoff(self, cio):
        sleeps = SleepRecorder()
        hook = CustomerIoHook(sleep=sleeps)
        cio.faults.update(burst_429=2, retry_after=1)
        out = hook.upsert("people", [someone("1")], "id")
        assert out[0].ok and hook.retry_count == 2 and len(sleeps.calls) == 2
        assert cio.emulator.request_count(BATCH, 429) == 2 and cio.emulator.request_count(BATCH, 200) == 1

    def test_retries_give_up_as_retryable(self, start_cio):
        cio = start_cio(extra={"max_retries": 1})
        cio.faults.update(burst_429=5)
        with pytest.raises(RetryableDestinationError):
            CustomerIoHook(sleep=no_sleep).upsert("people", [someone("1")], "id")
        assert cio.emulator.request_count(BATCH, 429) == 2
