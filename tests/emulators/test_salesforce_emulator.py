"""The Salesforce emulator over real HTTP: auth, limits, collections, SOQL, Bulk API 2.0, faults."""

from __future__ import annotations

import base64
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_retl.testing.emulators import (
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    RunningEmulator,
    start_emulator,
)
from airflow_provider_retl.testing.emulators.salesforce_schema import id_suffix
from tests.emulators import test_emulator_cli as cli

V = "/services/data/v62.0"


def password_grant(**overrides: str) -> dict[str, str]:
    return {
        "grant_type": "password",
        "client_id": SALESFORCE_CLIENT_ID,
        "client_secret": SALESFORCE_CLIENT_SECRET,
        "username": SALESFORCE_USERNAME,
        "password": SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN,
        **overrides,
    }


class Client:
    """A requests session logged in to a Salesforce emulator (OAuth password flow)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        token = requests.post(url + "/services/oauth2/token", data=password_grant(), timeout=10).json()
        self.token = token["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url + (path if path.startswith("/services") else V + path), **kwargs)

    def records(self, method: str, path: str, records: list[dict], all_or_none: bool = False) -> requests.Response:
        return self.call(method, path, json={"allOrNone": all_or_none, "records": records})

    def query(self, soql: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", "/query", params={"q": soql}, **kwargs)


def contact(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, **fields}


@pytest.fixture
def salesforce() -> Iterator[RunningEmulator]:
    with start_emulator("salesforce", bulk_processing_seconds=0.05) as running:
        yield running


@pytest.fixture
def sf(salesforce: RunningEmulator) -> Iterator[Client]:
    client = Client(salesforce.url)
    yield client
    client.session.close()


class TestAuth:
    def test_password_grant_shape(self, salesforce):
        body = requests.post(salesforce.url + "/services/oauth2/token", data=password_grant(), timeout=10).json()
        assert set(body) == {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
        assert body["token_type"] == "Bearer" and body["instance_url"] == salesforce.url
        assert body["issued_at"].isdigit() and body["id"].startswith("https://login.salesforce.com/id/00D")

    @pytest.mark.parametrize(
        "overrides, error",
        [
            ({"password": SALESFORCE_PASSWORD}, "invalid_grant"),  # the security token is missing
            ({"username": "nobody@example.com"}, "invalid_grant"),
            ({"client_id": "unknown"}, "invalid_client_id"),
            ({"client_secret": "wrong"}, "invalid_client"),
            ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ],
    )
    def test_refused_logins(self, salesforce, overrides, error):
        response = requests.post(salesforce.url + "/services/oauth2/token", data=password_grant(**overrides),
                                 timeout=10)
        assert response.status_code == 400 and response.json()["error"] == error
        assert response.json()["error_description"]

    def test_client_credentials_in_the_form_or_basic_auth(self, salesforce):
        form = {"grant_type": "client_credentials", "client_id": SALESFORCE_CLIENT_ID,
                "client_secret": SALESFORCE_CLIENT_SECRET}
        assert requests.post(salesforce.url + "/services/oauth2/token", data=form, timeout=10).status_code == 200
        basic = base64.b64encode(f"{SALESFORCE_CLIENT_ID}:{SALESFORCE_CLIENT_SECRET}".encode()).decode()
        response = requests.post(salesforce.url + "/services/oauth2/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"}, timeout=10)
        assert response.status_code == 200 and response.json()["access_token"]

    def test_missing_wrong_and_expired_tokens_are_invalid_session(self):
        with start_emulator("salesforce", token_lifetime=0.3) as salesforce:
            assert requests.get(salesforce.url + V + "/limits", timeout=10).status_code == 401
            wrong = requests.get(salesforce.url + V + "/limits", headers={"Authorization": "Bearer x"}, timeout=10)
            assert wrong.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            client = Client(salesforce.url)
            assert client.call("GET", "/limits").status_code == 200
            time.sleep(0.35)
            assert client.call("GET", "/limits").status_code == 401
            client = Client(salesforce.url)
            salesforce.emulator.expire_tokens()
            assert client.call("GET", "/limits").status_code == 401

    def test_soap_login(self, salesforce):
        envelope = (
            '<?xml version="1.0" encoding="utf-8" ?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns:urn="urn:partner.soap.sforce.com"><env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
            f"<n1:username>{SALESFORCE_USERNAME}</n1:username><n1:password>{{}}</n1:password></n1:login></env:Body>"
            "</env:Envelope>"
        )
        ok = requests.post(salesforce.url + "/services/Soap/u/62.0",
                           data=envelope.format(SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN), timeout=10)
        assert ok.status_code == 200 and "<sessionId>" in ok.text and f"<serverUrl>{salesforce.url}" in ok.text
        refused = requests.post(salesforce.url + "/services/Soap/u/62.0", data=envelope.format("nope"), timeout=10)
        assert refused.status_code == 500 and "INVALID_LOGIN" in refused.text


class TestLimits:
    def test_every_api_response_reports_usage(self, salesforce, sf):
        first = sf.call("GET", "/limits")
        second = sf.call("GET", "/sobjects/Contact/describe")
        assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
        assert second.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
        assert first.json()["DailyApiRequests"] == {"Max": 100000, "Remaining": 99999}

    def test_spent_allowance_is_403_without_retry_after(self, salesforce, sf):
        salesforce.emulator.daily_limit = 5
        salesforce.emulator.set_api_usage(5)
        response = sf.call("GET", "/limits")
        assert response.status_code == 403 and "Retry-After" not in response.headers
        assert response.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        assert response.headers["Sforce-Limit-Info"] == "api-usage=5/5"

    def test_too_many_concurrent_requests_are_refused(self):
        with start_emulator("salesforce", max_concurrent=1, request_latency=0.3) as salesforce:
            client = Client(salesforce.url)
            statuses: list[int] = []
            threads = [threading.Thread(target=lambda: statuses.append(client.call("GET", "/limits").status_code))
                       for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(statuses) == [200, 403, 403]

    def test_uri_longer_than_16384_bytes_is_414(self, sf):
        soql = "SELECT Id FROM Contact WHERE Email IN ('" + "a" * 16_400 + "')"
        assert sf.query(soql).status_code == 414
        assert sf.query("SELECT Id FROM Contact WHERE Email IN ('" + "a" * 100 + "')").status_code == 200


class TestDescribe:
    def test_fields(self, sf):
        body = sf.call("GET", "/sobjects/contact/describe/").json()  # any case, trailing slash
        fields = {f["name"]: f for f in body["fields"]}
        assert body["name"] == "Contact" and body["keyPrefix"] == "003"
        assert fields["External_Id__c"]["externalId"] and fields["External_Id__c"]["unique"]
        assert fields["LastName"]["nillable"] is False and fields["LastName"]["length"] == 80
        assert fields["Email"]["type"] == "email" and not fields["Email"]["externalId"]
        assert fields["Id"]["createable"] is False and fields["Id"]["type"] == "id"

    def test_unknown_object_is_404(self, sf):
        response = sf.call("GET", "/sobjects/Spaceship__c/describe")
        assert response.status_code == 404 and response.json()[0]["errorCode"] == "NOT_FOUND"

    def test_custom_objects_and_fields_are_configurable(self):
        with start_emulator("salesforce", sobjects={"Car__c": [{"name": "VIN__c", "externalId": True,
                                                               "unique": True}], "Lead": ["Score__c"]}) as s:
            client = Client(s.url)
            fields = {f["name"] for f in client.call("GET", "/sobjects/Car__c/describe").json()["fields"]}
            assert {"Name", "VIN__c"} <= fields
            assert "Score__c" in {f["name"] for f in client.call("GET", "/sobjects/Lead/describe").json()["fields"]}


class TestCollections:
    def test_create_results_in_order_with_errors_by_name(self, salesforce, sf):
        salesforce.emulator.seed("Contact", [{"LastName": "Old", "External_Id__c": "taken"}])
        response = sf.records("POST", "/composite/sobjects", [
            contact(LastName="Good", Email="good@example.com"),
            contact(LastName="x" * 81),
            contact(LastName="Bad", Email="not-an-email"),
            contact(FirstName="No last name"),
            contact(LastName="Dup", External_Id__c="TAKEN"),
        ])
        assert response.status_code == 200
        results = response.json()
        assert results[0]["success"] and results[0]["id"].startswith("003") and results[0]["errors"] == []
        assert [r["errors"][0]["statusCode"] for r in results[1:]] == [
            "STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS", "REQUIRED_FIELD_MISSING", "DUPLICATE_VALUE"]
        assert all("id" not in r and r["success"] is False for r in results[1:])
        assert results[1]["errors"][0]["fields"] == ["LastName"] and "max length=80" in results[1]["errors"][0]["message"]
        assert "record with id: 003" in results[4]["errors"][0]["message"]
        assert len(salesforce.emulator.records("Contact")) == 2

    def test_ids_are_18_characters_with_the_case_safe_suffix(self, sf):
        record_id = sf.records("POST", "/composite/sobjects", [contact(LastName="A")]).json()[0]["id"]
        assert len(record_id) == 18 and record_id[15:] == id_suffix(record_id[:15])

    def test_upsert_by_external_id_says_created_and_ignores_case(self, salesforce, sf):
        path = "/composite/sobjects/Contact/External_Id__c"
        first = sf.records("PATCH", path, [contact(External_Id__c="abc", LastName="A")]).json()
        again = sf.records("PATCH", path, [contact(External_Id__c="ABC", LastName="B"),
                                           contact(External_Id__c="new", LastName="N")]).json()
        assert first[0]["created"] is True
        assert (again[0]["created"], again[0]["id"]) == (False, first[0]["id"]) and again[1]["created"] is True
        assert salesforce.emulator.find("Contact", "External_Id__c", "abc")["LastName"] == "B"

    def test_upsert_refusals(self, sf):
        path = "/composite/sobjects/Contact/External_Id__c"
        results = sf.records("PATCH", path, [contact(External_Id__c="d", LastName="1"),
                                             contact(External_Id__c="D", LastName="2"),
                                             contact(LastName="no key")]).json()
        assert [r["errors"][0]["statusCode"] for r in results] == [
            "DUPLICATE_EXTERNAL_ID", "DUPLICATE_EXTERNAL_ID", "MISSING_ARGUMENT"]
        not_external = sf.records("PATCH", "/composite/sobjects/Contact/Email", [contact(Email="a@example.com")])
        assert not_external.status_code == 400 and not_external.json()[0]["errorCode"] == "INVALID_FIELD"

    def test_update_by_id(self, salesforce, sf):
        [live, gone] = salesforce.emulator.seed("Contact", [{"LastName": "A"}, {"LastName": "B"}])
        sf.call("DELETE", "/composite/sobjects", params={"ids": gone})
        results = sf.records("PATCH", "/composite/sobjects", [
            contact(id=live, Title="CEO", LastName=None),
            contact(id=live, Title="CEO"),
            contact(id=gone, Title="x"),
            contact(id="003Hs0000000zzzIAA", Title="x"),
            contact(id="nope", Title="x"),
            contact(Title="no id"),
        ]).json()
        assert [r["errors"][0]["statusCode"] if r["errors"] else "ok" for r in results] == [
            "REQUIRED_FIELD_MISSING", "ok", "ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID",
            "MISSING_ARGUMENT"]
        assert salesforce.emulator.get_record("Contact", live)["Title"] == "CEO"

    def test_all_or_none_rolls_back(self, salesforce, sf):
        results = sf.records("POST", "/composite/sobjects", [contact(LastName="A"), contact(FirstName="x")],
                             all_or_none=True).json()
        assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
        assert salesforce.emulator.records("Contact") == []

    def test_request_level_refusals(self, salesforce, sf):
        too_many = sf.records("POST", "/composite/sobjects", [contact(LastName=str(i)) for i in range(201)])
        assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
        unknown = sf.records("POST", "/composite/sobjects", [contact(LastName="A"), contact(Shoe_Size__c=42)])
        assert unknown.status_code == 400
        assert unknown.json() == [{"message": "No such column 'Shoe_Size__c' on sobject of type Contact",
                                   "errorCode": "INVALID_FIELD"}]
        wrong_type = sf.records("POST", "/composite/sobjects", [{"attributes": {"type": "Custom__c"}, "Name": "x",
                                                                 "Amount__c": "lots"}])
        assert wrong_type.status_code == 400 and wrong_type.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
        untyped = sf.records("POST", "/composite/sobjects", [{"LastName": "A"}])
        assert untyped.status_code == 400 and untyped.json()[0]["errorCode"] == "INVALID_TYPE"
        assert salesforce.emulator.records("Contact") == []
        assert sf.records("POST", "/composite/sobjects", [contact(LastName=str(i)) for i in range(200)]).ok

    def test_delete(self, salesforce, sf):
        ids = salesforce.emulator.seed("Contact", [{"LastName": "A"}, {"LastName": "B"}])
        results = sf.call("DELETE", "/composite/sobjects",
                          params={"ids": ",".join([*ids, ids[0], "bad"]), "allOrNone": "false"}).json()
        assert [r["success"] for r in results] == [True, True, False, False]
        assert results[2]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED" and results[2]["id"] == ids[0]
        assert results[3]["errors"][0]["statusCode"] == "MALFORMED_ID"
        assert salesforce.emulator.records("Contact") == []
        assert len(salesforce.emulator.records("Contact", include_deleted=True)) == 2

    def test_locked_rows(self, salesforce, sf):
        salesforce.emulator.lock_next(1)
        results = sf.records("POST", "/composite/sobjects", [contact(LastName="A"), contact(LastName="B")]).json()
        assert results[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW" and results[1]["success"]


class TestSoql:
    @pytest.fixture
    def people(self, salesforce):
        return salesforce.emulator.seed("Contact", [
            {"LastName": "O'Brien", "Email": "obrien@example.com", "External_Id__c": "k1"},
            {"LastName": "Back\\slash", "Email": "Mixed@Example.com", "External_Id__c": "k2"},
            {"LastName": "Plain", "Email": "plain@example.com"},
        ])

    def test_in_with_escapes_and_case_insensitive_text(self, sf, people):
        body = sf.query("SELECT Id, LastName FROM Contact WHERE LastName IN ('o\\'brien', 'Back\\\\slash')").json()
        assert body["totalSize"] == 2 and body["done"] is True
        assert {r["LastName"] for r in body["records"]} == {"O'Brien", "Back\\slash"}
        record = body["records"][0]
        assert record["attributes"] == {"type": "Contact", "url": f"{V}/sobjects/Contact/{record['Id']}"}
        assert sf.query("SELECT Id FROM Contact WHERE Email = 'mixed@example.COM'").json()["totalSize"] == 1

    def test_count_order_limit_and_conditions(self, sf, people):
        assert sf.query("SELECT COUNT() FROM Contact").json() == {"totalSize": 3, "done": True, "records": []}
        names = [r["LastName"] for r in sf.query("SELECT LastName FROM Contact ORDER BY LastName DESC LIMIT 2")
                 .json()["records"]]
        assert names == ["Plain", "O'Brien"]
        body = sf.query("SELECT Id FROM Contact WHERE (External_Id__c = null OR Email LIKE 'obr%') AND NOT "
                        "LastName = 'x'").json()
        assert body["totalSize"] == 2

    def test_paging_with_next_records_url(self, salesforce):
        with start_emulator("salesforce", query_batch_size=2) as s:
            s.emulator.seed("Lead", [{"LastName": str(i), "Company": "C"} for i in range(5)])
            client = Client(s.url)
            page = client.query("SELECT Id, LastName FROM Lead").json()
            seen = [r["LastName"] for r in page["records"]]
            while not page["done"]:
                page = client.call("GET", page["nextRecordsUrl"]).json()
                seen += [r["LastName"] for r in page["records"]]
            assert seen == ["0", "1", "2", "3", "4"] and page["totalSize"] == 5

    @pytest.mark.parametrize("soql, code", [
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE LastName = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id, Shoe__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Spaceship__c", "INVALID_TYPE"),
    ])
    def test_errors(self, sf, soql, code):
        response = sf.query(soql)
        assert response.status_code == 400 and response.json()[0]["errorCode"] == code
        assert "ERROR at Row:1:Column:" in response.json()[0]["message"]

    def test_query_all_includes_deleted(self, salesforce, sf, people):
        sf.call("DELETE", "/composite/sobjects", params={"ids": people[0]})
        assert sf.query("SELECT Id FROM Contact").json()["totalSize"] == 2
        body = sf.call("GET", "/queryAll", params={"q": "SELECT Id, IsDeleted FROM Contact"}).json()
        assert body["totalSize"] == 3 and sum(r["IsDeleted"] for r in body["records"]) == 1


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


class TestBulk:
    def job(self, sf: Client, **overrides: Any) -> dict:
        body = {"object": "Contact", "operation": "upsert", "externalIdFieldName": "External_Id__c",
                "contentType": "CSV", "lineEnding": "LF", **overrides}
        response = sf.call("POST", "/jobs/ingest", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, sf: Client, job_id: str) -> tuple[dict, list[str]]:
        states = []
        for _ in range(200):
            info = sf.call("GET", f"/jobs/ingest/{job_id}").json()
            states.append(info["state"])
            if info["state"] in ("JobComplete", "Failed", "Aborted"):
                return info, states
            time.sleep(0.01)
        raise AssertionError(states)

    def test_upsert_lifecycle_and_results(self, salesforce, sf):
        [existing] = salesforce.emulator.seed("Contact", [{"LastName": "Old", "External_Id__c": "e1",
                                                          "Title": "keep"}])
        job = self.job(sf)
        assert job["state"] == "Open" and job["id"].startswith("750") and job["jobType"] == "V2Ingest"
        data = ('External_Id__c,LastName,Title,Email\ne1,New,,#N/A\n"e,2","Quote ""Q"", Jr",T,q@example.com\n'
                "e3,,T,\ne4,X,T,bad-email\n")
        upload = sf.call("PUT", f"/jobs/ingest/{job['id']}/batches", data=data.encode(),
                         headers={"Content-Type": "text/csv"})
        assert upload.status_code == 201
        closed = sf.call("PATCH", f"/jobs/ingest/{job['id']}", json={"state": "UploadComplete"}).json()
        assert closed["state"] == "UploadComplete"
        info, states = self.wait(sf, job["id"])
        assert states[0] == "InProgress" and info["state"] == "JobComplete"
        assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 2)
        ok = parse_csv(sf.call("GET", f"/jobs/ingest/{job['id']}/successfulResults/").text)
        failed = parse_csv(sf.call("GET", f"/jobs/ingest/{job['id']}/failedResults/").text)
        by_key = {r["External_Id__c"]: r for r in ok}
        assert set(by_key) == {"e1", "e,2"}
        assert (by_key["e1"]["sf__Id"], by_key["e1"]["sf__Created"]) == (existing, "false")
        assert by_key["e,2"]["sf__Created"] == "true" and by_key["e,2"]["LastName"] == 'Quote "Q", Jr'
        errors = {r["External_Id__c"]: r["sf__Error"] for r in failed}
        assert errors["e3"] == "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
        assert errors["e4"].startswith("INVALID_EMAIL_ADDRESS:")
        record = salesforce.emulator.get_record("Contact", existing)
        assert (record["LastName"], record["Title"], record.get("Email")) == ("New", "keep", None)

    def test_results_are_not_in_input_order(self, sf):
        job = self.job(sf)
        rows = "".join(f"k{i},L{i}\n" for i in range(30))
        sf.call("PUT", f"/jobs/ingest/{job['id']}/batches", data=("External_Id__c,LastName\n" + rows).encode(),
                headers={"Content-Type": "text/csv"})
        sf.call("PATCH", f"/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        self.wait(sf, job["id"])
        keys = [r["External_Id__c"] for r in parse_csv(sf.call("GET", f"/jobs/ingest/{job['id']}/successfulResults")
                                                         .text)]
        assert sorted(keys) == sorted(f"k{i}" for i in range(30)) and keys != [f"k{i}" for i in range(30)]

    def test_unknown_column_fails_the_job_and_abort_leaves_rows_unprocessed(self, sf):
        job = self.job(sf)
        sf.call("PUT", f"/jobs/ingest/{job['id']}/batches", data=b"External_Id__c,Shoe__c\nk1,42\n",
                headers={"Content-Type": "text/csv"})
        sf.call("PATCH", f"/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        info, _ = self.wait(sf, job["id"])
        assert info["state"] == "Failed" and "Field name not found : Shoe__c" in info["errorMessage"]
        aborted = self.job(sf)
        sf.call("PUT", f"/jobs/ingest/{aborted['id']}/batches", data=b"External_Id__c,LastName\nk1,A\n",
                headers={"Content-Type": "text/csv"})
        assert sf.call("PATCH", f"/jobs/ingest/{aborted['id']}", json={"state": "Aborted"}).json()["state"] == "Aborted"
        unprocessed = sf.call("GET", f"/jobs/ingest/{aborted['id']}/unprocessedrecords/").text
        assert parse_csv(unprocessed) == [{"External_Id__c": "k1", "LastName": "A"}]

    def test_refusals(self, sf):
        missing_ext = sf.call("POST", "/jobs/ingest", json={"object": "Contact", "operation": "upsert"})
        assert missing_ext.status_code == 400 and "External ID was blank" in missing_ext.json()[0]["message"]
        job = self.job(sf)
        first = sf.call("PUT", f"/jobs/ingest/{job['id']}/batches", data=b"External_Id__c,LastName\nk,A\n")
        second = sf.call("PUT", f"/jobs/ingest/{job['id']}/batches", data=b"External_Id__c,LastName\nk,A\n")
        assert first.status_code == 201 and second.status_code == 400
        assert "only do 'PUT' once" in second.json()[0]["message"]
        results_early = sf.call("GET", f"/jobs/ingest/{job['id']}/successfulResults")
        assert results_early.status_code == 400


class TestFaultsAndAdmin:
    def test_injected_errors_have_salesforce_shapes(self, salesforce, sf):
        salesforce.faults.fail_next(1, "error")
        response = sf.call("GET", "/limits")
        assert response.status_code >= 500 and response.json()[0]["errorCode"] in ("UNKNOWN_EXCEPTION",
                                                                                   "SERVER_UNAVAILABLE")

    def test_lost_response_still_applies_the_write(self, salesforce, sf):
        salesforce.faults.fail_next(1, "lost_response")
        with pytest.raises(requests.ConnectionError):
            sf.records("POST", "/composite/sobjects", [contact(LastName="Ghost")])
        assert [r["LastName"] for r in salesforce.emulator.records("Contact")] == ["Ghost"]

    def test_state_and_reset(self, salesforce, sf):
        sf.records("POST", "/composite/sobjects", [contact(LastName="A")])
        state = requests.get(salesforce.url + "/_emulator/state", timeout=10).json()
        assert state["apiUsage"] == {"used": 1, "limit": 100000}
        assert [r["LastName"] for r in state["objects"]["Contact"]] == ["A"]
        assert salesforce.emulator.request_count("POST /services/data/v62.0/composite/sobjects") == 1
        requests.post(salesforce.url + "/_emulator/reset", timeout=10)
        assert salesforce.emulator.records("Contact") == [] and salesforce.emulator.api_usage == 0


def test_cli_serves_salesforce_until_sigterm():
    args = ["salesforce", "--port", "0", "--username", "cli@example.com", "--password", "pw",
            "--security-token", "none", "--daily-limit", "10"]
    env = {**os.environ, "PYTHONPATH": str(cli.REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "airflow_provider_retl.testing.emulators", *args],
                               cwd=cli.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = cli.read_urls(process, 1)["salesforce"]
        token = requests.post(url + "/services/oauth2/token", timeout=5, data=password_grant(
            username="cli@example.com", password="pw")).json()["access_token"]
        limits = requests.get(url + V + "/limits", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert limits.headers["Sforce-Limit-Info"] == "api-usage=1/10"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=5)
