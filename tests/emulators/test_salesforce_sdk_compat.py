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
from simple_salesforce.exceptions import SalesforceMalformedRequest

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
