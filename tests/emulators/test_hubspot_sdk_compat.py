"""HubSpot's official Python SDK (hubspot-api-client) against the emulator.

The SDK must be able to send everything it sends to HubSpot and parse every
answer into its models; if it cannot, the emulator has drifted from the API.
"""

from __future__ import annotations

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    BatchResponseSimplePublicObject,
    BatchResponseSimplePublicObjectWithErrors,
    BatchResponseSimplePublicUpsertObject,
    CollectionResponseSimplePublicObjectWithAssociationsForwardPaging,
    CollectionResponseWithTotalSimplePublicObjectForwardPaging,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObject,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
    SimplePublicObjectWithAssociations,
)
from hubspot.crm.properties import PropertyCreate

from airflow_provider_retl.testing.emulators import DEFAULT_TOKEN, RunningEmulator


@pytest.fixture
def sdk(hubspot: RunningEmulator) -> HubSpot:
    # Extra keyword arguments become attributes of every API's Configuration;
    # "host" replaces https://api.hubapi.com.
    return HubSpot(access_token=DEFAULT_TOKEN, host=hubspot.url)


class TestOfficialSdk:
    """hubspot-api-client talks to the emulator and parses every answer."""

    def test_contact_lifecycle(self, sdk: HubSpot, hubspot: RunningEmulator) -> None:
        contacts = sdk.crm.contacts
        created = contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": "ann@x.com", "firstname": "Ann"})
        )
        assert isinstance(created, SimplePublicObject) and created.id.isdigit()
        assert created.created_at is not None and created.properties["email"] == "ann@x.com"

        batch = contacts.batch_api.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[SimplePublicObjectBatchInputForCreate(properties={"email": f"u{i}@x.com"}) for i in range(3)]
            )
        )
        assert isinstance(batch, BatchResponseSimplePublicObject) and batch.status == "COMPLETE"
        assert len(batch.results) == 3 and batch.started_at <= batch.completed_at

        upserted = contacts.batch_api.upsert(
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[
                    SimplePublicObjectBatchInputUpsert(id="ANN@x.com", id_property="email", properties={"lastname": "A"}),
                    SimplePublicObjectBatchInputUpsert(id="new@x.com", id_property="email", properties={"lastname": "N"}),
                ]
            )
        )
        assert isinstance(upserted, BatchResponseSimplePublicUpsertObject)
        assert [(r.id == created.id, r.new) for r in upserted.results] == [(True, False), (False, True)]

        read = contacts.batch_api.read(
            BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id="ann@x.com"), SimplePublicObjectId(id="ghost@x.com")],
                id_property="email",
                properties=["email", "lastname"],
                properties_with_history=[],
            )
        )
        assert isinstance(read, BatchResponseSimplePublicObjectWithErrors)
        assert read.results[0].properties == {"email": "ann@x.com", "lastname": "A"}
        assert read.num_errors == 1 and read.errors[0].category == "OBJECT_NOT_FOUND"
        assert read.errors[0].context == {"ids": ["ghost@x.com"]}

        found = contacts.search_api.do_search(
            PublicObjectSearchRequest(
                filter_groups=[FilterGroup(filters=[Filter(property_name="email", operator="EQ", value="new@x.com")])],
                properties=["email"],
                limit=10,
            )
        )
        assert isinstance(found, CollectionResponseWithTotalSimplePublicObjectForwardPaging)
        assert found.total == 1 and found.results[0].properties["email"] == "new@x.com"

        updated = contacts.basic_api.update(created.id, SimplePublicObjectInput(properties={"phone": "555"}))
        assert updated.properties["phone"] == "555"
        contacts.batch_api.update(
            BatchInputSimplePublicObjectBatchInput(
                inputs=[SimplePublicObjectBatchInput(id=created.id, properties={"jobtitle": "CTO"})]
            )
        )
        fetched = contacts.basic_api.get_by_id(created.id, properties=["phone", "jobtitle"])
        assert isinstance(fetched, SimplePublicObjectWithAssociations)
        assert fetched.properties == {"phone": "555", "jobtitle": "CTO"}
        by_email = contacts.basic_api.get_by_id("ann@x.com", id_property="email")
        assert by_email.id == created.id

        page = contacts.basic_api.get_page(limit=2, properties=["email"])
        assert isinstance(page, CollectionResponseSimplePublicObjectWithAssociationsForwardPaging)
        assert len(page.results) == 2 and page.paging.next.after
        everything = sdk.crm.contacts.get_all()
        assert len(everything) == 5

        contacts.batch_api.archive(BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=created.id)]))
        contacts.basic_api.archive(upserted.results[1].id)
        assert len(hubspot.emulator.records("contacts")) == 3
        with pytest.raises(ApiException) as missing:
            contacts.basic_api.get_by_id(created.id)
        assert missing.value.status == 404

    def test_partial_success_and_errors_parse(self, sdk: HubSpot, hubspot: RunningEmulator) -> None:
        hubspot.emulator.seed("contacts", [{"email": "taken@x.com"}])
        partial = sdk.crm.contacts.batch_api.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[
                    SimplePublicObjectBatchInputForCreate(properties={"email": "ok@x.com"}, object_write_trace_id="1"),
                    SimplePublicObjectBatchInputForCreate(properties={"email": "nope"}, object_write_trace_id="2"),
                    SimplePublicObjectBatchInputForCreate(properties={"email": "taken@x.com"}, object_write_trace_id="3"),
                ]
            )
        )
        assert isinstance(partial, BatchResponseSimplePublicObjectWithErrors)
        assert [r.object_write_trace_id for r in partial.results] == ["1"]
        assert sorted(e.context["objectWriteTraceId"][0] for e in partial.errors) == ["2", "3"]
        assert {e.category for e in partial.errors} == {"VALIDATION_ERROR", "CONFLICT"}

        with pytest.raises(ApiException) as conflict:
            sdk.crm.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties={"email": "taken@x.com"}))
        assert conflict.value.status == 409 and "Existing ID" in conflict.value.body

    def test_properties_api(self, sdk: HubSpot) -> None:
        created = sdk.crm.properties.core_api.create(
            "contacts",
            PropertyCreate(name="tier", label="Tier", type="enumeration", field_type="select", group_name="x",
                           options=[{"label": "Gold", "value": "gold", "hidden": False}]),
        )
        assert created.name == "tier" and created.options[0].value == "gold"
        names = {p.name: p for p in sdk.crm.properties.core_api.get_all("contacts").results}
        assert names["email"].has_unique_value is True and "tier" in names
