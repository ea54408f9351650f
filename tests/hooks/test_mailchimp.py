"""MailchimpHook against the Mailchimp emulator (a real local HTTP server)."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_retl.hooks.destination import EXISTS
from airflow_provider_retl.hooks.mailchimp import MailchimpHook, subscriber_hash
from airflow_provider_retl.hooks.retrying import RetryPolicy
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import ConfigurationError, FatalDestinationError
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import MAILCHIMP_API_KEY, MAILCHIMP_LIST_ID, start_emulator

from .support import SleepRecorder, closed_port_url, eventually, no_sleep

LIST = MAILCHIMP_LIST_ID
KEY = MAILCHIMP_API_KEY
BATCH = f"POST /3.0/lists/{LIST}"
COMPLIANCE = "is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed."


def person(key: str, email: str | None, **fields) -> Record:
    return Record(key=key, fields={"email_address": email, **fields}, match_value=email)


@pytest.fixture
def start_mailchimp(add_connection):
    """Start a Mailchimp emulator and point ``mailchimp_default`` at it."""
    running = []

    def start(*, extra: dict | None = None, conn_key: str = KEY, **options):
        emulator = start_emulator("mailchimp", **options)
        running.append(emulator)
        add_connection("mailchimp_default", "retl_mailchimp", emulator.url, conn_key, **(extra or {}))
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def mc(start_mailchimp):
    return start_mailchimp(merge_fields=[{"tag": "PLAN", "type": "dropdown", "options": {"choices": ["free", "pro"]}},
                                         {"tag": "SEATS", "type": "number"}])


@pytest.fixture
def hook(mc):
    return MailchimpHook(sleep=no_sleep)


class TestIdentity:
    def test_airflow_attributes_and_protocol(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", None, KEY)
        assert (MailchimpHook.conn_name_attr, MailchimpHook.default_conn_name, MailchimpHook.conn_type) == (
            "mailchimp_conn_id", "mailchimp_default", "retl_mailchimp")
        assert MailchimpHook(mailchimp_conn_id="other").mailchimp_conn_id == "other"
        assert isinstance(MailchimpHook(), Destination)

    def test_the_key_picks_the_data_centre(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", None, "a" * 32 + "-us21")
        hook = MailchimpHook()
        hook.get_conn()
        assert hook.base_url == "https://us21.api.mailchimp.com"
        assert (hook.max_batch_size, hook.max_concurrency, hook.limiter) == (500, 10, None)
        assert hook.default_match_field(LIST) == "email_address" and hook.supports_upsert(LIST, "EMAIL")

    def test_host_overrides_and_its_version_suffix_is_dropped(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", "https://proxy.local/mc/3.0/", KEY)
        hook = MailchimpHook()
        hook.get_conn()
        assert hook.base_url == "https://proxy.local/mc"

    def test_a_key_without_data_centre_needs_a_host(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", None, "a" * 32)
        with pytest.raises(ConfigurationError, match="data-centre suffix"):
            MailchimpHook().get_conn()

    def test_limits_and_options_from_extras(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", None, KEY, max_concurrency=25, batch_size=800,
                       status_if_new="pending", delete_permanently="true")
        hook = MailchimpHook()
        assert (hook.max_concurrency, hook.max_batch_size) == (10, 500)
        assert (hook.status_if_new, hook.delete_permanently, hook.sync_tags) == ("pending", True, False)
        caller = MailchimpHook(status_if_new="transactional")  # the caller beats the extras
        caller.get_conn()
        assert caller.status_if_new == "transactional"
        with pytest.raises(ConfigurationError, match="status_if_new"):
            MailchimpHook(status_if_new="maybe").get_conn()


class TestUpsert:
    def test_creates_then_updates_mapped_by_address_not_order(self, mc, hook):
        first = hook.upsert(LIST, [person("1", "Ann@Acme.io", FNAME="Ann"), person("2", "bob@acme.io")], "email_address")
        assert [(o.ok, o.created, o.dest_id) for o in first] == [
            (True, True, subscriber_hash("ann@acme.io")), (True, True, subscriber_hash("bob@acme.io"))]
        # Mailchimp lists new members before updated ones: the outcomes still follow the inputs.
        mixed = hook.upsert(LIST, [person("2", "BOB@acme.io", fname="Robert"), person("3", "cy@acme.io"),
                                   person("1", "ann@acme.io", FNAME=None)], "email_address")
        assert [(o.ok, o.created) for o in mixed] == [(True, False), (True, True), (True, False)]
        assert mixed[0].dest_id == first[1].dest_id
        assert mc.emulator.member(LIST, "bob@acme.io")["merge_fields"]["FNAME"] == "Robert"
        assert mc.emulator.member(LIST, "ann@acme.io")["merge_fields"]["FNAME"] == ""  # None cleared it
        # Each batch write remembers the statuses it saw, so the second upsert sends Bob and Ann their
        # current status straight away; only Cy, unknown, is probed (update_existing false) first.
        assert mc.emulator.request_count(BATCH) == 3

    def test_500_members_per_call(self, mc, hook):
        records = [person(str(i), f"user{i}@acme.io", SEATS=i) for i in range(1200)]
        # The engine hands the hook batches of max_batch_size (500): one batch call each.
        assert hook.max_batch_size == 500
        outcomes = [
            o for start in range(0, 1200, 500) for o in hook.upsert(LIST, records[start : start + 500], "email_address")
        ]
        assert len(outcomes) == 1200 and all(o.ok and o.created for o in outcomes)
        assert mc.emulator.request_count(BATCH) == 3 and len(mc.emulator.members(LIST)) == 1200

    def test_fields_become_merge_fields_member_fields_and_tags(self, mc, hook):
        record = person("1", "a@acme.io", fname="A", **{"merge_fields.LNAME": "Lee", "PLAN": "pro", "user_id": 7,
                                                        "language": "fr", "tags": "vip, beta"})
        assert hook.upsert(LIST, [record], "email_address")[0].ok
        stored = mc.emulator.member(LIST, "a@acme.io")
        assert (stored["merge_fields"]["FNAME"], stored["merge_fields"]["LNAME"], stored["merge_fields"]["PLAN"]) == (
            "A", "Lee", "pro")
        assert stored["language"] == "fr" and [t["name"] for t in stored["tags"]] == ["vip", "beta"]
        assert hook.member_body(LIST, record).keys() == {
            "email_address", "status_if_new", "merge_fields", "language", "tags"}  # user_id is not sent
        assert hook.field_plan(LIST, record.fields).ignored == ("user_id",)
        assert mc.emulator.request_count(f"GET /3.0/lists/{LIST}/merge-fields") == 1

    def test_an_unknown_explicit_merge_tag_is_a_configuration_error(self, hook):
        with pytest.raises(ConfigurationError, match="no merge field 'NOPE'"):
            hook.validate(LIST, {"email_address": "a@acme.io", "merge_fields.nope": 1})

    def test_an_unknown_audience_is_fatal(self, hook):
        with pytest.raises(FatalDestinationError, match="no audience"):
            hook.upsert("nolist", [person("1", "a@acme.io")], "email_address")

    def test_missing_address_is_rejected_before_sending(self, mc, hook):
        [outcome] = hook.upsert(LIST, [Record("1", {"email_address": None, "FNAME": "x"})], "email_address")
        assert not outcome.ok and outcome.code == "MISSING_EMAIL"
        assert mc.emulator.request_count(BATCH) == 0

    def test_a_field_named_email_works_too(self, mc, hook):
        [outcome] = hook.upsert(LIST, [Record("1", {"email": "e@acme.io", "FNAME": "E"}, match_value="e@acme.io")],
                                "email")
        assert outcome.ok and mc.emulator.member(LIST, "e@acme.io")["merge_fields"]["FNAME"] == "E"


class TestPerRecordOutcomes:
    def test_fake_domains_and_bad_merge_values_fail_alone(self, mc, hook):
        records = [person("1", "ok@acme.io"), person("2", "someone@example.com"), person("3", "x@acme.io", SEATS="lots"),
                   person("4", "y@acme.io", PLAN="gold")]
        outcomes = hook.upsert(LIST, records, "email_address")
        assert [o.ok for o in outcomes] == [True, False, False, False]
        assert outcomes[1].reason == "someone@example.com looks fake or invalid, please enter a real email address."
        assert outcomes[1].code == "ERROR_GENERIC"
        assert "SEATS" in outcomes[2].reason and "PLAN" in outcomes[3].reason
        assert mc.emulator.request_count(BATCH) == 1

    def test_unsubscribed_members_are_updated_but_never_resubscribed(self, mc, hook):
        mc.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"},
                                {"email_address": "bounced@acme.io", "status": "cleaned"}])
        outcomes = hook.upsert(LIST, [person("1", "gone@acme.io", FNAME="G"), person("2", "bounced@acme.io")],
                               "email_address")
        assert [(o.ok, o.created) for o in outcomes] == [(True, False), (True, False)]
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"
        assert mc.emulator.member(LIST, "gone@acme.io")["merge_fields"]["FNAME"] == "G"
        assert mc.emulator.member(LIST, "bounced@acme.io")["status"] == "cleaned"

    def test_an_explicit_status_that_resubscribes_is_rejected(self, mc, hook):
        mc.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        [outcome] = hook.upsert(LIST, [person("1", "gone@acme.io", status="subscribed")], "email_address")
        assert not outcome.ok and outcome.reason == f"gone@acme.io {COMPLIANCE}"
        assert mc.emulator.member(LIST, "gone@acme.io")["status"] == "unsubscribed"

    def test_status_if_new_from_the_connection_and_the_row(self, start_mailchimp):
        mc = start_mailchimp(extra={"status_if_new": "pending"})
        hook = MailchimpHook(sleep=no_sleep)
        hook.upsert(LIST, [person("1", "p@acme.io"), person("2", "t@acme.io", status_if_new="transactional")],
                    "email_address")
        assert mc.emulator.member(LIST, "p@acme.io")["status"] == "pending"
        assert mc.emulator.member(LIST, "t@acme.io")["status"] == "transactional"

    def test_create_of_an_existing_member_says_exists_with_its_hash(self, mc, hook):
        mc.emulator.seed(LIST, [{"email_address": "taken@acme.io"}])
        outcomes = hook.create(LIST, [person("1", "new@acme.io"), person("2", "TAKEN@acme.io")])
        assert outcomes[0].ok and outcomes[0].created
        assert (outcomes[1].ok, outcomes[1].code, outcomes[1].dest_id) == (False, EXISTS, subscriber_hash("taken@acme.io"))

    def test_a_member_missing_from_the_answer_is_not_a_success(self, server, add_connection):
        answer = {"new_members": [{"id": subscriber_hash("a@acme.io"), "email_address": "a@acme.io"}],
                  "updated_members": [], "errors": [], "total_created": 1, "total_updated": 0, "error_count": 0}
        server.then((200, {}, {"merge_fields": []}), (200, {}, answer))
        add_connection("mailchimp_default", "retl_mailchimp", server.url, KEY)
        outcomes = MailchimpHook(sleep=no_sleep).upsert(LIST, [person("1", "a@acme.io"), person("2", "b@acme.io")],
                                                        "email_address")
        assert outcomes[0].ok and (outcomes[1].ok, outcomes[1].code) == (False, "NO_RESULT")

    def test_validate_locally(self, hook):
        assert hook.validate(LIST, {"email_address": "ok@acme.io", "FNAME": "A", "SEATS": "3"}) == []
        [(field, reason)] = hook.validate(LIST, {"email_address": "not-an-email"})
        assert field == "email_address" and "invalid email" in reason
        assert hook.validate(LIST, {"email_address": None})[0][1] == "value is required"
        problems = dict(hook.validate(LIST, {"email_address": "a@acme.io", "SEATS": "many", "PLAN": "gold",
                                             "status": "maybe", "ADDRESS": "somewhere"}))
        assert set(problems) == {"SEATS", "PLAN", "status", "ADDRESS"}
        assert hook.validate(LIST, {"user_id": 1})[0][0] is None


class TestUpdateLookupDelete:
    def test_update_by_hash_and_rename_when_the_address_changed(self, mc, hook):
        [ann] = hook.upsert(LIST, [person("1", "ann@acme.io", FNAME="Ann")], "email_address")
        # The key's address changed: the same member gets the new address (no second member).
        [renamed] = hook.update(LIST, [Record("1", {"email_address": "ann.lee@acme.io", "LNAME": "Lee"},
                                              dest_id=ann.dest_id)])
        assert renamed.ok and renamed.dest_id == subscriber_hash("ann.lee@acme.io") and renamed.created is False
        members = mc.emulator.members(LIST)
        assert [(m["email_address"], m["merge_fields"]["FNAME"], m["merge_fields"]["LNAME"]) for m in members] == [
            ("ann.lee@acme.io", "Ann", "Lee")]
        assert mc.emulator.request_count(f"PATCH /3.0/lists/{LIST}/members/{ann.dest_id}") == 1

    def test_rename_onto_a_taken_address_is_a_reject_and_onto_a_gone_member_an_add(self, mc, hook):
        ids = mc.emulator.seed(LIST, [{"email_address": "a@acme.io"}, {"email_address": "b@acme.io"}])
        taken, gone = hook.update(LIST, [Record("1", {"email_address": "b@acme.io"}, dest_id=ids[0]),
                                         Record("2", {"email_address": "c@acme.io"}, dest_id="0" * 32)])
        assert not taken.ok and "already in this list" in taken.reason
        assert gone.ok and gone.created is True and gone.dest_id == subscriber_hash("c@acme.io")

    def test_lookup_finds_members_but_not_archived_ones(self, mc, hook):
        ids = mc.emulator.seed(LIST, [{"email_address": "a@acme.io"}, {"email_address": "old@acme.io",
                                                                        "status": "archived"}])
        found = hook.lookup(LIST, "email_address", ["A@acme.io", "old@acme.io", "nobody@acme.io", "broken@", None])
        assert found == {"A@acme.io": ids[0]}

    def test_delete_archives_and_is_idempotent(self, mc, hook):
        ids = mc.emulator.seed(LIST, [{"email_address": f"u{i}@acme.io"} for i in range(3)])
        outcomes = hook.delete(LIST, [ids[0], ids[0], "0" * 32, None, ids[2]])
        assert [o.ok for o in outcomes] == [True, True, True, False, True] and outcomes[3].code == "NO_ID"
        assert [m["email_address"] for m in mc.emulator.members(LIST)] == ["u1@acme.io"]
        assert mc.emulator.member(LIST, ids[0])["status"] == "archived"

    def test_permanent_delete_only_when_asked(self, start_mailchimp):
        mc = start_mailchimp(extra={"delete_permanently": True})
        ids = mc.emulator.seed(LIST, [{"email_address": "a@acme.io"}])
        assert MailchimpHook(sleep=no_sleep).delete(LIST, ids)[0].ok
        assert mc.emulator.member(LIST, ids[0]) is None
        assert mc.emulator.request_count(f"POST /3.0/lists/{LIST}/members/{ids[0]}/actions/delete-permanent") == 1


class TestConnectionsAndFaults:
    def test_ten_connections_at_most_and_no_429(self, start_mailchimp):
        mc = start_mailchimp(processing_seconds=0.05)
        ids = mc.emulator.seed(LIST, [{"email_address": f"u{i}@acme.io"} for i in range(40)])
        hook = MailchimpHook(sleep=no_sleep)
        errors: list[Exception] = []

        def lookups() -> None:
            try:
                hook.lookup(LIST, "email_address", [f"u{i}@acme.io" for i in range(5)])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        # 15 callers at once on one hook, plus a parallel archive: the hook's slots keep it at 10.
        threads = [threading.Thread(target=lookups) for _ in range(15)]
        for t in threads:
            t.start()
        assert all(o.ok for o in hook.delete(LIST, ids))
        for t in threads:
            t.join()
        assert errors == []
        assert mc.emulator.request_count(status=429) == 0
        assert mc.emulator.max_concurrent_requests() == 10

    def test_429_from_the_connection_limit_is_retried(self, start_mailchimp):
        mc = start_mailchimp(max_connections=2, processing_seconds=0.05)
        ids = mc.emulator.seed(LIST, [{"email_address": f"u{i}@acme.io"} for i in range(8)])
        policy = RetryPolicy(max_attempts=30, initial_wait=0.01, max_wait=0.05, jitter=0.02)
        assert all(o.ok for o in MailchimpHook(retry_policy=policy).delete(LIST, ids))
        assert mc.emulator.request_count(status=429) > 0 and mc.emulator.max_concurrent_requests() == 2
        assert len(mc.emulator.members(LIST)) == 0

    def test_injected_429_and_5xx_are_retried(self, mc):
        sleep = SleepRecorder()
        hook = MailchimpHook(sleep=sleep)
        hook.field_plan(LIST, ["email_address"])
        mc.faults.burst_429 = 2
        assert hook.upsert(LIST, [person("1", "a@acme.io")], "email_address")[0].ok
        mc.faults.fail_next(2, "error")
        assert hook.upsert(LIST, [person("1", "a@acme.io", FNAME="B")], "email_address")[0].ok
        assert hook.retry_count == 4 and len(sleep.calls) == 4
        assert mc.emulator.request_count(BATCH, status=429) == 2

    @pytest.mark.parametrize("fault", ["lost_response", "reset", "malformed"])
    def test_a_lost_answer_is_resent_without_duplicates(self, mc, hook, fault):
        hook.field_plan(LIST, ["email_address"])
        mc.faults.fail_next(1, fault)
        [outcome] = hook.upsert(LIST, [person("1", "once@acme.io")], "email_address")
        assert outcome.ok and outcome.dest_id == subscriber_hash("once@acme.io")
        assert len(mc.emulator.members(LIST)) == 1
        assert mc.emulator.member(LIST, "once@acme.io")["status"] == "subscribed"
        # The probe (update_existing false) was resent; if the lost one had landed, the resend finds
        # the member existing, reads its status and updates it with that status: 2 or 3 batch calls.
        assert eventually(lambda: mc.emulator.request_count(BATCH) in (2, 3))

    def test_401_is_fatal_and_the_key_is_never_in_messages(self, start_mailchimp):
        bad_key = "badbadbadbadbadbadbadbadbadbad00-us6"
        start_mailchimp(conn_key=bad_key)
        hook = MailchimpHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError) as info:
            hook.upsert(LIST, [person("1", "a@acme.io")], "email_address")
        assert info.value.status == 401 and "API Key Invalid" in str(info.value)
        assert bad_key not in str(info.value) + repr(info.value) + repr(hook)
        assert info.value.response.request.headers["Authorization"] == "***"
        ok, message = hook.test_connection()
        assert not ok and "401" in message and bad_key not in message


class TestConnectionTest:
    def test_works(self, mc, hook):
        assert hook.test_connection() == (True, f"Connected to Mailchimp at {mc.url}")
        assert mc.emulator.request_count("GET /3.0/ping") == 1

    def test_nobody_listening(self, add_connection):
        add_connection("mailchimp_default", "retl_mailchimp", closed_port_url(), KEY)
        ok, message = MailchimpHook().test_connection()
        assert not ok and "could not connect" in message
