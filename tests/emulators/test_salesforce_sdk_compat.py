"""simple-salesforce (the community SDK most Python shops use) against the Salesforce emulator.

simple-salesforce always builds ``https://{domain}.salesforce.com`` login URLs and
``https://{instance}`` API URLs. Its ``session=`` argument is the seam: a transport
adapter sends those requests to the emulator over plain HTTP, the way a proxy
would. Nothing else about the SDK is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from airflow_provider_retl.testing.emulators import (
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    RunningEmulator,
    start_emulator,
)


class ToEmulator(HTTPAdapter):
    """Send https://*.salesforce.com and https://<emulator host> requests to the emulator over http."""

    def __init__(self, emulator_url: str) -> None:
        super().__init__()
        self.target = emulator_url
        self.netloc = urlsplit(emulator_url).netloc

    def send(self, request, **kwargs):  # type: ignore[override]
        parts = urlsplit(request.url)
        if parts.hostname and (parts.hostname.endswith(".salesforce.com") or parts.netloc == self.netloc):
            request.url = self.target + request.url[len(f"{parts.scheme}://{parts.netloc}"):]
        return super().send(request, **kwargs)


@pytest.fixture
def salesforce() -> Iterator[RunningEmulator]:
    with start_emulator("salesforce", bulk_processing_seconds=0.05, query_batch_size=3) as running:
        yield running


@pytest.fixture
def session(salesforce: RunningEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount("https://", ToEmulator(salesforce.url))
    yield session
    session.close()


@pytest.fixture
def sdk(session: requests.Session) -> Salesforce:
    """The OAuth 2.0 username-password flow with a connected app."""
    return Salesforce(
        username=SALESFORCE_USERNAME,
        password=SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN,
        consumer_key=SALESFORCE_CLIENT_ID,
        consumer_secret=SALESFORCE_CLIENT_SECRET,
        session=session,
        version="62.0",
    )


class TestSimpleSalesforce:
    def test_logins(self, salesforce, session, sdk):
        assert sdk.session_id and sdk.sf_instance == urlsplit(salesforce.url).netloc
        soap = Salesforce(username=SALESFORCE_USERNAME, password=SALESFORCE_PASSWORD,
                          security_token=SALESFORCE_SECURITY_TOKEN, session=session, version="62.0")
        client = Salesforce(consumer_key=SALESFORCE_CLIENT_ID, consumer_secret=SALESFORCE_CLIENT_SECRET,
                            domain="acme.my", session=session, version="62.0")
        assert soap.session_id != sdk.session_id != client.session_id
        assert soap.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
        assert client.limits()["DailyApiRequests"]["Max"] == 100000

    def test_describe_create_get_query_and_paging(self, salesforce, sdk):
        fields = {f["name"]: f for f in sdk.Contact.describe()["fields"]}
        assert fields["External_Id__c"]["externalId"] is True
        created = sdk.Contact.create({"LastName": "O'Hara", "Email": "ohara@example.com"})
        assert created["success"] and sdk.Contact.get(created["id"])["LastName"] == "O'Hara"
        salesforce.emulator.seed("Contact", [{"LastName": f"L{i}"} for i in range(6)])
        page = sdk.query("SELECT Id, LastName FROM Contact")
        assert page["totalSize"] == 7 and page["done"] is False and page["nextRecordsUrl"]
        assert len(sdk.query_all("SELECT Id, LastName FROM Contact")["records"]) == 7
        found = sdk.query("SELECT Id FROM Contact WHERE LastName = 'o\\'hara'")
        assert found["records"][0]["Id"] == created["id"]
        assert sdk.api_usage["api-usage"].used > 0
        with pytest.raises(SalesforceMalformedRequest):
            sdk.query("SELECT Id FROM Contact WHERE")

    def test_collections_upsert_through_restful(self, salesforce, sdk):
        body = {"allOrNone": False, "records": [
            {"attributes": {"type": "Contact"}, "External_Id__c": "x1", "LastName": "One"},
            {"attributes": {"type": "Contact"}, "External_Id__c": "x2", "LastName": "y" * 81},
        ]}
        results = sdk.restful("composite/sobjects/Contact/External_Id__c", method="PATCH", json=body)
        assert results[0]["success"] and results[0]["created"] is True
        assert results[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
        deleted = sdk.restful("composite/sobjects", method="DELETE", params={"ids": results[0]["id"]})
        assert deleted == [{"id": results[0]["id"], "success": True, "errors": []}]

    def test_bulk2_upsert(self, salesforce, sdk):
        records = [{"External_Id__c": f"b{i}", "LastName": f"Bulk {i}"} for i in range(5)]
        records.append({"External_Id__c": "bad", "LastName": ""})
        [result] = sdk.bulk2.Contact.upsert(records=records, external_id_field="External_Id__c", wait=1)
        assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (6, 1)
        failed = sdk.bulk2.Contact.get_failed_records(result["job_id"])
        assert "REQUIRED_FIELD_MISSING" in failed
        assert len(salesforce.emulator.records("Contact")) == 5

    def test_expired_session_is_renewed_by_the_sdk(self, salesforce, sdk):
        before = salesforce.emulator.tokens_issued
        salesforce.emulator.expire_tokens()
        assert sdk.query("SELECT COUNT() FROM Lead")["totalSize"] == 0
        assert salesforce.emulator.tokens_issued == before + 1


NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]


class TestSingleRecordCalls:
    """simple-salesforce's SFType calls: sObject Rows and sObject Rows by External ID (REST API Developer Guide)."""

    def test_create_get_update_delete(self, salesforce, sdk):
        created = sdk.Contact.create({"LastName": "Ng", "Email": "ng@example.com"})
        assert created == {"id": created["id"], "success": True, "errors": []}
        assert created["id"].startswith("003") and len(created["id"]) == 18
        got = sdk.Contact.get(created["id"])
        assert (got["LastName"], got["Email"], got["attributes"]["type"]) == ("Ng", "ng@example.com", "Contact")
        assert got["attributes"]["url"] == f"/services/data/v62.0/sobjects/Contact/{created['id']}"
        some = sdk.Contact.get(created["id"], params={"fields": "lastname,Id"})
        assert some == {"attributes": got["attributes"], "LastName": "Ng", "Id": created["id"]}
        assert sdk.Contact.update(created["id"], {"FirstName": "Ann", "Email": None}) == 204
        stored = salesforce.emulator.get_record("Contact", created["id"])
        assert stored["FirstName"] == "Ann" and stored.get("Email") is None
        # The collections and SOQL routes see the same record store.
        [row] = sdk.query(f"SELECT Id, FirstName FROM Contact WHERE Id = '{created['id']}'")["records"]
        assert row["FirstName"] == "Ann"
        assert sdk.Contact.delete(created["id"]) == 204
        assert salesforce.emulator.records("Contact") == []
        with pytest.raises(SalesforceResourceNotFound) as gone:
            sdk.Contact.get(created["id"])
        assert gone.value.content == NOT_FOUND
        with pytest.raises(SalesforceResourceNotFound) as deleted:
            sdk.Contact.delete(created["id"])
        assert deleted.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"

    def test_record_written_by_collections_is_read_and_changed_one_by_one(self, salesforce, sdk):
        body = {"records": [{"attributes": {"type": "Contact"}, "LastName": "Coll", "External_Id__c": "c-1"}]}
        [result] = sdk.restful("composite/sobjects", method="POST", json=body)
        assert sdk.Contact.get_by_custom_id("External_Id__c", "C-1")["Id"] == result["id"]  # case-insensitive
        assert sdk.Contact.update(result["id"], {"LastName": "Changed"}) == 204
        assert salesforce.emulator.find("Contact", "External_Id__c", "c-1")["LastName"] == "Changed"

    def test_upsert_by_external_id(self, salesforce, sdk):
        created = sdk.Contact.upsert("External_Id__c/ext-1", {"LastName": "One"}, raw_response=True)
        assert created.status_code == 201
        body = created.json()
        assert body == {"id": body["id"], "success": True, "errors": [], "created": True}
        updated = sdk.Contact.upsert("External_Id__c/EXT-1", {"Email": "one@example.com"}, raw_response=True)
        assert updated.status_code == 200  # API 46.0 and later; 204 before
        assert updated.json() == {"id": body["id"], "success": True, "errors": [], "created": False}
        record = sdk.Contact.get_by_custom_id("External_Id__c", "ext-1")
        assert (record["Id"], record["LastName"], record["Email"]) == (body["id"], "One", "one@example.com")
        assert len(salesforce.emulator.records("Contact")) == 1

    def test_upsert_answers_204_on_update_before_api_46(self, salesforce, session):
        old = Salesforce(consumer_key=SALESFORCE_CLIENT_ID, consumer_secret=SALESFORCE_CLIENT_SECRET,
                         domain="acme.my", session=session, version="45.0")
        assert old.Contact.upsert("External_Id__c/v45", {"LastName": "Old"}) == 201
        assert old.Contact.upsert("External_Id__c/v45", {"LastName": "Older"}) == 204
        assert salesforce.emulator.find("Contact", "External_Id__c", "v45")["LastName"] == "Older"

    def test_more_than_one_match_is_300(self, salesforce, sdk):
        salesforce.emulator.add_field("Contact", {"name": "Legacy_Id__c", "external_id": True})
        ids = salesforce.emulator.seed("Contact", [{"LastName": n, "Legacy_Id__c": "L1"} for n in "ab"])
        with pytest.raises(SalesforceMoreThanOneRecord) as many:
            sdk.Contact.get_by_custom_id("Legacy_Id__c", "L1")
        assert many.value.content == [f"/services/data/v62.0/sobjects/Contact/{i}" for i in ids]
        with pytest.raises(SalesforceMoreThanOneRecord):
            sdk.Contact.upsert("Legacy_Id__c/L1", {"LastName": "c"})
        assert sorted(r["LastName"] for r in salesforce.emulator.records("Contact")) == ["a", "b"]

    def test_errors_have_salesforces_shape(self, salesforce, sdk):
        created = sdk.Contact.create({"LastName": "E"})["id"]
        with pytest.raises(SalesforceResourceNotFound) as no_route:
            sdk.restful("no/such/resource")
        assert no_route.value.content == NOT_FOUND
        with pytest.raises(SalesforceResourceNotFound) as no_sobject:
            sdk.Nope__c.get(created)
        assert no_sobject.value.content == NOT_FOUND
        with pytest.raises(SalesforceResourceNotFound) as not_external:
            sdk.Contact.get_by_custom_id("LastName", "E")
        assert not_external.value.content == [{
            "message": "Provided external ID field does not exist or is not accessible: LastName",
            "errorCode": "NOT_FOUND"}]
        with pytest.raises(SalesforceResourceNotFound) as no_match:
            sdk.Contact.get_by_custom_id("External_Id__c", "nobody")
        assert no_match.value.content == NOT_FOUND
        with pytest.raises(SalesforceMalformedRequest) as malformed:
            sdk.Contact.update("not-an-id", {"LastName": "x"})
        assert malformed.value.content == [{"message": "Contact ID: id value of incorrect type: not-an-id",
                                             "errorCode": "MALFORMED_ID", "fields": ["Id"]}]
        with pytest.raises(SalesforceMalformedRequest) as bad_field:
            sdk.Contact.create({"LastName": "x", "Nope__c": 1})
        assert bad_field.value.content == [{"message": "No such column 'Nope__c' on sobject of type Contact",
                                            "errorCode": "INVALID_FIELD"}]
        with pytest.raises(SalesforceMalformedRequest) as too_long:
            sdk.Contact.update(created, {"LastName": "y" * 81})
        [error] = too_long.value.content
        assert error["errorCode"] == "STRING_TOO_LONG" and error["fields"] == ["LastName"]
        with pytest.raises(SalesforceMalformedRequest) as missing:
            sdk.Contact.upsert("External_Id__c/new-one", {"FirstName": "no last name"})
        assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
        with pytest.raises(SalesforceGeneralError) as wrong_method:
            sdk.restful(f"sobjects/Contact/{created}", method="PUT", json={})
        assert wrong_method.value.status == 405
        assert wrong_method.value.content == [{"message": "HTTP Method 'PUT' not allowed. Allowed are DELETE,GET,PATCH",
                                               "errorCode": "METHOD_NOT_ALLOWED"}]
        with pytest.raises(SalesforceMalformedRequest) as bad_select:
            sdk.Contact.get(created, params={"fields": "LastName,Shoe__c"})
        assert bad_select.value.content[0]["errorCode"] == "INVALID_FIELD"
        for error in [no_route, no_sobject, not_external, malformed, bad_field, wrong_method]:
            assert isinstance(error.value.content, list) and "detail" not in str(error.value.content)
