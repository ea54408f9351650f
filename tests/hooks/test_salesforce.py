"""SalesforceHook against the Salesforce emulator (a real local HTTP server)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from airflow_provider_retl.hooks.destination import EXISTS
from airflow_provider_retl.hooks.salesforce import DEFAULT_BULK_THRESHOLD, SalesforceHook
from airflow_provider_retl.sync.destination import Destination
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
    OutcomeUnknownError,
)
from airflow_provider_retl.sync.records import Record
from airflow_provider_retl.testing.emulators import (
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    start_emulator,
)

from .support import SleepRecorder, eventually, no_sleep

V = "/services/data/v62.0"
UPSERT = f"PATCH {V}/composite/sobjects/Contact/External_Id__c"
TOKEN_ROUTE = "POST /services/oauth2/token"
SECRETS = (SALESFORCE_PASSWORD, SALESFORCE_SECURITY_TOKEN, SALESFORCE_CLIENT_SECRET)


def person(key: str, last: str | None = "Last", **fields) -> Record:
    """A Contact upserted by External_Id__c = key."""
    return Record(key=key, fields={"External_Id__c": key, "LastName": last, **fields}, match_value=key)


@pytest.fixture
def connect(monkeypatch):
    """Point ``salesforce_default`` at a URL: password flow unless told otherwise."""

    def connect(url: str | None, *, login: str | None = SALESFORCE_USERNAME, password: str | None = SALESFORCE_PASSWORD,
                **extra):
        extras = {"client_id": SALESFORCE_CLIENT_ID, "client_secret": SALESFORCE_CLIENT_SECRET,
                  "security_token": SALESFORCE_SECURITY_TOKEN, "bulk_poll_interval": 0.02, **extra}
        doc = {"conn_type": "retl_salesforce", "host": url, "login": login, "password": password,
               "extra": {k: v for k, v in extras.items() if v is not None}}
        monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(doc))

    return connect


@pytest.fixture
def start_salesforce(connect):
    running = []

    def start(*, extra: dict | None = None, **options):
        options.setdefault("bulk_processing_seconds", 0.05)
        emulator = start_emulator("salesforce", **options)
        running.append(emulator)
        connect(emulator.url, **(extra or {}))
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def sf(start_salesforce):
    return start_salesforce()


@pytest.fixture
def hook(sf):
    return SalesforceHook(sleep=no_sleep)


class TestIdentity:
    def test_airflow_attributes_and_defaults(self, connect):
        connect(None)
        hook = SalesforceHook()
        assert (hook.conn_name_attr, hook.default_conn_name, hook.conn_type) == (
            "salesforce_conn_id", "salesforce_default", "retl_salesforce")
        assert SalesforceHook(salesforce_conn_id="other").salesforce_conn_id == "other"
        assert isinstance(hook, Destination)
        assert hook.base_url == "https://login.salesforce.com" and hook.api_version == "62.0"
        assert hook.max_batch_size == 200 and hook.bulk_threshold("Contact") == DEFAULT_BULK_THRESHOLD
        assert hook.limiter is None  # Salesforce counts per day, not per second

    def test_extras(self, connect):
        connect("https://test.salesforce.com", api_version="v59.0", bulk_threshold=0, batch_size=50)
        hook = SalesforceHook()
        assert hook.api_version == "59.0" and hook.bulk_threshold("Contact") is None and hook.max_batch_size == 50
        with pytest.raises(ConfigurationError, match="api_version"):
            connect(None, api_version="latest")
            SalesforceHook().get_conn()

    def test_form_fields(self):
        behaviour = SalesforceHook.get_ui_field_behaviour()
        assert behaviour["relabeling"]["host"] == "Login URL"
        assert behaviour["relabeling"]["login"] == "Username (password flow)"


class TestAuth:
    def test_password_flow_logs_in_once_and_calls_the_instance(self, sf, hook):
        assert hook.supports_upsert("Contact", "External_Id__c")
        assert hook.lookup("Contact", "Email", ["a@example.com"]) == {}
        assert sf.emulator.request_count(TOKEN_ROUTE) == 1
        assert hook.instance_url == sf.url and hook.request_count == 3  # login, describe, query

    def test_client_credentials_flow(self, start_salesforce):
        sf = start_salesforce(extra={"login": None, "password": None, "security_token": None})
        hook = SalesforceHook(sleep=no_sleep)
        assert hook.test_connection()[0] is True
        assert sf.emulator.token_subject(hook._access_token) == SALESFORCE_CLIENT_ID

    def test_expired_session_is_renewed_once_and_the_call_repeated(self, sf, hook):
        [outcome] = hook.upsert("Contact", [person("k1")], "External_Id__c")
        sf.emulator.expire_tokens()
        [again] = hook.upsert("Contact", [person("k1", "Changed")], "External_Id__c")
        assert outcome.created is True and (again.ok, again.created) == (True, False)
        assert sf.emulator.request_count(TOKEN_ROUTE) == 2
        assert sf.emulator.request_count(UPSERT, status=401) == 1 and sf.emulator.request_count(UPSERT) == 3

    def test_a_session_refused_right_after_login_fails_without_looping(self, start_salesforce):
        sf = start_salesforce(token_lifetime=0)  # every token is dead on arrival
        hook = SalesforceHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError, match="again with a fresh access token") as info:
            hook.describe("Contact")
        assert info.value.status == 401
        assert sf.emulator.request_count(TOKEN_ROUTE) == 2 and sf.emulator.request_count(status=401) == 2

    def test_refused_login_is_fatal_and_leaks_nothing(self, start_salesforce):
        start_salesforce(extra={"security_token": "WrongToken123"})
        hook = SalesforceHook(sleep=no_sleep)
        with pytest.raises(FatalDestinationError, match="invalid_grant: authentication failure") as info:
            hook.describe("Contact")
        text = str(info.value) + repr(info.value) + repr(hook)
        assert not any(secret in text for secret in (*SECRETS, "WrongToken123"))
        assert info.value.request is None and info.value.response is None
        ok, message = hook.test_connection()
        assert not ok and "invalid_grant" in message and SALESFORCE_PASSWORD not in message

    def test_missing_credentials_are_a_configuration_error(self, start_salesforce):
        start_salesforce(extra={"client_id": None})
        with pytest.raises(ConfigurationError, match="client_id"):
            SalesforceHook().describe("Contact")

    def test_api_errors_carry_no_token(self, sf, hook):
        hook.describe("Contact")
        with pytest.raises(ConfigurationError):
            hook.describe("Spaceship__c")
        sf.emulator.daily_limit = 1
        with pytest.raises(FatalDestinationError) as info:
            hook.lookup("Contact", "Email", ["a@example.com"])
        assert hook._access_token not in str(info.value) + repr(info.value)
        assert info.value.request.headers["Authorization"] == "***"

    def test_salesforce_error_arrays_from_any_route_are_parsed(self, sf, hook):
        """Unknown routes and single-record calls answer Salesforce's [{message, errorCode}], which the hook
        turns into "CODE: message" (never a FastAPI {"detail": ...} body)."""
        with pytest.raises(DestinationError) as no_route:
            hook.request("GET", "no/such/resource", retry=False)
        assert "NOT_FOUND: The requested resource does not exist" in str(no_route.value)
        with pytest.raises(DestinationError) as malformed:
            hook.request("PATCH", "sobjects/Contact/not-an-id", json={"LastName": "x"}, retry=False)
        assert "MALFORMED_ID: Contact ID: id value of incorrect type: not-an-id" in str(malformed.value)
        assert "detail" not in str(no_route.value) + str(malformed.value)


class TestUpsert:
    def test_created_then_updated_in_input_order(self, sf, hook):
        first = hook.upsert("Contact", [person("a", Email="a@example.com"), person("b")], "External_Id__c")
        assert [(o.ok, o.created) for o in first] == [(True, True), (True, True)]
        again = hook.upsert("Contact", [person("B", "Bee"), person("c"), person("a", Email=None)], "external_id__c")
        assert [(o.ok, o.created) for o in again] == [(True, False), (True, True), (True, False)]
        assert again[0].dest_id == first[1].dest_id and again[2].dest_id == first[0].dest_id
        assert "Email" not in sf.emulator.get_record("Contact", first[0].dest_id)  # None clears a field
        assert sf.emulator.request_count(UPSERT) == 2

    def test_upsert_needs_an_external_id_field_and_describe_is_read_once(self, sf, hook):
        assert hook.supports_upsert("Contact", "external_id__c") is True
        assert hook.supports_upsert("Contact", "Email") is False
        assert hook.supports_upsert("Contact", None) is False
        assert sf.emulator.request_count(f"GET {V}/sobjects/Contact/describe") == 1
        with pytest.raises(ConfigurationError, match="External ID"):
            hook.upsert("Contact", [person("a")], "Email")
        with pytest.raises(ConfigurationError, match="does not know the sObject"):
            hook.supports_upsert("Spaceship__c", "Key__c")

    def test_200_records_per_call(self, sf, hook):
        # The engine hands the hook batches of max_batch_size (200, the sObject Collections limit): one call each.
        assert hook.max_batch_size == 200
        records = [person(f"k{i}") for i in range(450)]
        outcomes = [
            o for at in range(0, 450, 200) for o in hook.upsert("Contact", records[at : at + 200], "External_Id__c")
        ]
        assert all(o.ok and o.created for o in outcomes) and len(outcomes) == 450
        assert sf.emulator.request_count(UPSERT) == 3
        assert len(sf.emulator.records("Contact")) == 450

    def test_per_record_errors_by_name_with_fields(self, start_salesforce):
        sf = start_salesforce(sobjects={"Contact": [{"name": "Badge__c", "unique": True}]})
        sf.emulator.seed("Contact", [{"LastName": "Holder", "Badge__c": "B-1"}])
        hook = SalesforceHook(sleep=no_sleep)
        outcomes = hook.upsert("Contact", [
            person("ok"),
            person("long", "x" * 81),
            person("mail", Email="not-an-email"),
            person("nolast", None),
            person("dup", Badge__c="B-1"),
            Record("nokey", {"LastName": "x"}),
        ], "External_Id__c")
        assert [o.code for o in outcomes] == [None, "STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS",
                                              "REQUIRED_FIELD_MISSING", "DUPLICATE_VALUE", "MISSING_ARGUMENT"]
        assert "[fields: LastName]" in outcomes[1].reason and "max length=80" in outcomes[1].reason
        assert "Badge__c" in outcomes[4].reason
        assert sf.emulator.request_count(UPSERT) == 1

    def test_locked_rows_are_sent_again_then_rejected(self, start_salesforce):
        sf = start_salesforce(extra={"lock_retries": 2})
        sleep = SleepRecorder()
        hook = SalesforceHook(sleep=sleep)
        sf.emulator.lock_next(2)
        outcomes = hook.upsert("Contact", [person(f"k{i}") for i in range(5)], "External_Id__c")
        assert all(o.ok for o in outcomes) and sleep.calls == [0.5]
        assert sf.emulator.request_count(UPSERT) == 2 and len(sf.emulator.records("Contact")) == 5
        sf.emulator.lock_next(100)
        [outcome] = hook.upsert("Contact", [person("stuck")], "External_Id__c")
        assert (outcome.ok, outcome.code) == (False, "UNABLE_TO_LOCK_ROW")
        assert sleep.calls == [0.5, 0.5, 1.0] and sf.emulator.request_count(UPSERT) == 5
        assert hook.retry_count == 3

    def test_a_value_of_the_wrong_type_is_isolated(self, sf, hook):
        records = [Record(str(i), {"External_Key__c": str(i), "Name": f"N{i}", "Amount__c": i}, match_value=str(i))
                   for i in range(8)]
        records[5].fields["Amount__c"] = "lots"
        outcomes = hook.upsert("Custom__c", records, "External_Key__c")
        assert [o.ok for o in outcomes] == [i != 5 for i in range(8)]
        assert outcomes[5].code == "JSON_PARSER_ERROR"
        assert len(sf.emulator.records("Custom__c")) == 7

    def test_an_unknown_field_rejects_the_batch_in_one_call(self, sf, hook):
        outcomes = hook.upsert("Contact", [person("a", Shoe__c=1), person("b", Shoe__c=2)], "External_Id__c")
        assert {(o.ok, o.code) for o in outcomes} == {(False, "INVALID_FIELD")}
        assert "Shoe__c" in outcomes[0].reason and sf.emulator.request_count(UPSERT) == 1

    def test_validate_locally_from_describe(self, sf, hook):
        assert hook.validate("Contact", {"LastName": "A", "Email": "a@example.com", "External_Id__c": "k"}) == []
        problems = dict(hook.validate("Contact", {"LastName": "x" * 81, "Email": "nope", "Shoe__c": 1,
                                                  "CreatedDate": "2026-01-01"}))
        assert problems["LastName"].startswith("STRING_TOO_LONG") and "80" in problems["LastName"]
        assert problems["Email"].startswith("INVALID_EMAIL_ADDRESS")
        assert problems["Shoe__c"].startswith("INVALID_FIELD")
        assert problems["CreatedDate"].startswith("INVALID_FIELD_FOR_INSERT_UPDATE")
        assert hook.validate("Contact", {"LastName": None})[0][1].startswith("REQUIRED_FIELD_MISSING")
        assert hook.validate("Custom__c", {"Amount__c": "lots"})[0][1].startswith("INVALID_TYPE")


class TestLookupCreateUpdate:
    def test_lookup_by_a_text_field_with_quotes_and_backslashes(self, sf, hook):
        ids = sf.emulator.seed("Contact", [{"LastName": "O'Brien"}, {"LastName": "Back\\slash"},
                                           {"LastName": "Dup"}, {"LastName": "dup"}])
        found = hook.lookup("Contact", "lastname", ["o'brien", "Back\\slash", "DUP", "Nobody", None, ""])
        assert found == {"o'brien": ids[0], "Back\\slash": ids[1], "DUP": min(ids[2], ids[3])}

    def test_lookups_are_split_to_stay_under_the_uri_limit(self, sf, hook):
        names = [f"Name'{i:04d}-" + "q" * 60 for i in range(500)]
        sf.emulator.seed("Contact", [{"LastName": n[:80]} for n in names[::7]])
        found = hook.lookup("Contact", "LastName", names)
        assert set(found) == set(names[::7])
        queries = [r for r in sf.emulator.requests if r.path.endswith("/query")]
        assert len(queries) >= 3 and all(r.status == 200 for r in queries)
        assert sf.emulator.request_count(status=414) == 0

    def test_soql_batches_fill_the_uri_budget(self, sf, hook):
        hook.get_conn()
        hook._ensure_token()
        literals = [f"'{i:05d}'" for i in range(5000)]
        batches = hook._soql_batches("SELECT Id, Email FROM Contact WHERE Email IN (", literals)
        assert len(batches) > 1
        path = urlsplit(hook.api_url("query")).path
        from urllib.parse import urlencode
        sizes = [len(path) + 1 + len(urlencode({"q": b})) for b in batches]
        assert max(sizes) <= 16_384 and min(sizes[:-1]) > 16_384 - 300

    def test_create_update_and_existing_unique_values(self, sf, hook):
        [taken] = sf.emulator.seed("Contact", [{"LastName": "Old", "External_Id__c": "taken"}])
        created = hook.create("Contact", [Record("1", {"LastName": "New", "Email": "n@example.com"}),
                                          Record("2", {"LastName": "Dup", "External_Id__c": "TAKEN"})])
        assert (created[0].ok, created[0].created) == (True, True)
        assert (created[1].ok, created[1].code, created[1].dest_id) == (False, EXISTS, taken)
        sf.emulator.seed("Contact", [{"LastName": "Gone"}])
        gone = sf.emulator.records("Contact")[-1]["Id"]
        hook.delete("Contact", [gone])
        updated = hook.update("Contact", [Record("1", {"Title": "CEO"}, dest_id=created[0].dest_id),
                                          Record("3", {"Title": "x"}, dest_id=gone), Record("4", {"Title": "x"})])
        assert (updated[0].ok, updated[0].created) == (True, False)
        assert updated[1].code == "ENTITY_IS_DELETED" and updated[2].code == "NO_ID"
        assert sf.emulator.get_record("Contact", created[0].dest_id)["Title"] == "CEO"

    def test_a_lost_create_answer_is_outcome_unknown_and_not_resent(self, sf, hook):
        hook.describe("Contact")
        sf.faults.fail_next(1, "lost_response")
        with pytest.raises(OutcomeUnknownError):
            hook.create("Contact", [Record("1", {"LastName": "Ghost"})])
        assert eventually(lambda: sf.emulator.request_count(f"POST {V}/composite/sobjects") == 1)
        assert len(sf.emulator.records("Contact")) == 1

    def test_upserts_are_resent_after_a_lost_answer(self, sf, hook):
        hook.describe("Contact")
        sf.faults.fail_next(1, "lost_response")
        [outcome] = hook.upsert("Contact", [person("once")], "External_Id__c")
        assert outcome.ok and len(sf.emulator.records("Contact")) == 1


class TestDelete:
    def test_delete_counts_gone_records_as_deleted_200_a_call(self, sf, hook):
        ids = sf.emulator.seed("Contact", [{"LastName": str(i)} for i in range(250)])
        doomed = [*ids, ids[0], "003Hs00000000zzIAA", None]
        # API-sized batches (200 ids a call), as the engine sends them.
        outcomes = hook.delete("Contact", doomed[:200]) + hook.delete("Contact", doomed[200:])
        assert [o.ok for o in outcomes] == [True] * 252 + [False]
        assert outcomes[-1].code == "NO_ID"
        assert sf.emulator.records("Contact") == []
        assert sf.emulator.request_count(f"DELETE {V}/composite/sobjects") == 2

    def test_locked_deletes_are_retried(self, sf, hook):
        ids = sf.emulator.seed("Contact", [{"LastName": "A"}, {"LastName": "B"}])
        sf.emulator.lock_next(1)
        assert all(o.ok for o in hook.delete("Contact", ids))
        assert sf.emulator.records("Contact") == []


class TestLimits:
    def test_spent_allowance_fails_at_once_with_the_usage(self, sf, hook):
        hook.describe("Contact")
        sf.emulator.daily_limit = 50
        sf.emulator.set_api_usage(50)
        before = sf.emulator.request_count()
        with pytest.raises(FatalDestinationError, match=r"api-usage=50/50") as info:
            hook.upsert("Contact", [person("a")], "External_Id__c")
        assert "REQUEST_LIMIT_EXCEEDED" in str(info.value) and "TotalRequests" in str(info.value)
        assert sf.emulator.request_count() == before + 1  # no retries, no relogin

    def test_usage_is_read_from_every_response_and_warned_about_once(self, sf, hook):
        sf.emulator.daily_limit = 100
        sf.emulator.set_api_usage(78)
        with capture_logs() as logs:
            hook.describe("Contact")
            hook.lookup("Contact", "Email", ["a@example.com"])
            hook.lookup("Contact", "Email", ["b@example.com"])
        assert hook.api_usage == (81, 100)
        warnings = [e for e in logs if e.get("log_level") == "warning"]
        assert len(warnings) == 1 and "API usage" in str(warnings[0]["event"])

    def test_concurrent_request_limit_is_retried(self, server, connect):
        token = {"access_token": "00Dx!tok", "instance_url": server.url, "id": "x", "token_type": "Bearer",
                 "issued_at": "1", "signature": "s"}
        limited = [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                    "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        server.then((200, {}, token), (403, {"Sforce-Limit-Info": "api-usage=5/100"}, limited),
                    (200, {"Sforce-Limit-Info": "api-usage=6/100"}, {"DailyApiRequests": {}}))
        connect(server.url)
        hook = SalesforceHook(sleep=no_sleep)
        assert hook.request("GET", "limits").status_code == 200
        assert [s.path for s in server.seen] == ["/services/oauth2/token", f"{V}/limits", f"{V}/limits"]
        assert hook.retry_count == 1 and hook.api_usage == (6, 100)
        assert "Authorization" not in server.seen[0].headers
        assert SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN in server.seen[0].body.decode().replace("%21", "!")


class TestBulk:
    def test_upsert_job_maps_results_back_in_input_order(self, sf, hook):
        [existing] = sf.emulator.seed("Contact", [{"LastName": "Old", "External_Id__c": "k3", "Title": "keep"}])
        records = [person(f"k{i}", f"L{i}") for i in range(40)]
        records[7].fields["LastName"] = None  # a new record without LastName: refused
        records[9].fields["Email"] = "not-an-email"
        records[11].fields["Title"] = 'Quote "Q", comma\nnewline'
        outcomes = hook.bulk_upsert("Contact", records, "External_Id__c")
        assert [o.ok for o in outcomes] == [i not in (7, 9) for i in range(40)]
        assert outcomes[3].dest_id == existing and outcomes[3].created is False
        assert all(o.created for i, o in enumerate(outcomes) if o.ok and i != 3)
        assert outcomes[7].code == "REQUIRED_FIELD_MISSING" and "[fields: LastName]" in outcomes[7].reason
        assert outcomes[9].code == "INVALID_EMAIL_ADDRESS"
        assert sf.emulator.find("Contact", "External_Id__c", "k11")["Title"] == 'Quote "Q", comma\nnewline'
        assert sf.emulator.get_record("Contact", existing)["Title"] == "keep"  # a column it did not carry
        for i, outcome in enumerate(outcomes):
            if outcome.ok:
                assert sf.emulator.get_record("Contact", outcome.dest_id)["External_Id__c"] == f"k{i}"
        [job] = sf.emulator.jobs()
        assert job["state"] == "JobComplete" and job["numberRecordsProcessed"] == 40

    def test_a_lost_upload_answer_starts_a_new_job(self, sf, hook):
        hook.describe("Contact")
        sf.faults.fail_next(1, "lost_response", after=1)  # job created, upload lands unseen
        outcomes = hook.bulk_upsert("Contact", [person(f"k{i}") for i in range(5)], "External_Id__c")
        assert all(o.ok for o in outcomes)
        assert [j["state"] for j in sf.emulator.jobs()] == ["Aborted", "JobComplete"]
        assert len(sf.emulator.records("Contact")) == 5

    def test_a_failed_job_rejects_its_records(self, sf, hook):
        outcomes = hook.bulk_upsert("Contact", [person("a", Shoe__c="x")], "External_Id__c")
        assert (outcomes[0].ok, outcomes[0].code) == (False, "InvalidBatch")
        assert "Field name not found" in outcomes[0].reason

    def test_locked_rows_go_through_collections(self, sf, hook):
        sf.emulator.lock_next(2)
        outcomes = hook.bulk_upsert("Contact", [person(f"k{i}") for i in range(6)], "External_Id__c")
        assert all(o.ok for o in outcomes) and len(sf.emulator.records("Contact")) == 6
        assert sf.emulator.request_count(UPSERT) == 1
