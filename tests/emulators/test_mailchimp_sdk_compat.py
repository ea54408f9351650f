"""Mailchimp's official Python SDK (mailchimp-marketing) against the emulator.

The SDK builds ``https://<server>.api.mailchimp.com/3.0`` from its config; pointing
``client.api_client.host`` at the emulator (plus ``/3.0``) is all it takes. It sends basic
auth (``user``, api key) or a Bearer token, and returns parsed JSON dicts.
"""

from __future__ import annotations

from collections.abc import Iterator

import mailchimp_marketing
import pytest
from mailchimp_marketing.api_client import ApiClientError

from airflow_provider_retl.testing.emulators import (
    MAILCHIMP_API_KEY,
    MAILCHIMP_LIST_ID,
    RunningEmulator,
    start_emulator,
    subscriber_hash,
)

LIST = MAILCHIMP_LIST_ID


@pytest.fixture
def mailchimp() -> Iterator[RunningEmulator]:
    with start_emulator("mailchimp", access_tokens=["oauth-access-token"]) as running:
        yield running


def sdk_client(url: str, **config: str) -> mailchimp_marketing.Client:
    client = mailchimp_marketing.Client()
    client.set_config(config)
    client.api_client.host = url + "/3.0"
    return client


@pytest.fixture
def sdk(mailchimp: RunningEmulator) -> mailchimp_marketing.Client:
    client = sdk_client(mailchimp.url, api_key=MAILCHIMP_API_KEY)
    assert client.api_client.server == "us6"  # taken from the key, as against Mailchimp itself
    return client


class TestOfficialSdk:
    def test_ping_and_oauth(self, sdk, mailchimp) -> None:
        assert sdk.ping.get() == {"health_status": "Everything's Chimpy!"}
        oauth = sdk_client(mailchimp.url, access_token="oauth-access-token", server="us6")
        assert oauth.ping.get()["health_status"]
        assert oauth.root.get_root()["account_name"]

    def test_batch_list_members(self, sdk, mailchimp) -> None:
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        # Batch members take ``status`` (required; applied to existing members with update_existing):
        # the unsubscribed member is sent its current status so that it stays unsubscribed.
        body = {
            "members": [
                {"email_address": "ann@acme.io", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}},
                {"email_address": "gone@acme.io", "status": "unsubscribed", "merge_fields": {"FNAME": "G"}},
                {"email_address": "fake@example.com", "status": "subscribed"},
            ],
            "update_existing": True,
        }
        result = sdk.lists.batch_list_members(LIST, body)
        assert [m["email_address"] for m in result["new_members"]] == ["ann@acme.io"]
        assert [m["status"] for m in result["updated_members"]] == ["unsubscribed"]
        assert result["errors"][0]["email_address"] == "fake@example.com"
        assert (result["total_created"], result["total_updated"], result["error_count"]) == (1, 1, 1)
        again = sdk.lists.batch_list_members(LIST, {"members": body["members"][:1]}, skip_merge_validation=True)
        assert again["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
        with pytest.raises(ApiClientError) as refused:  # a member without status: the whole call is refused
            sdk.lists.batch_list_members(LIST, {"members": [{"email_address": "x@acme.io", "status_if_new": "subscribed"}]})
        assert refused.value.status_code == 400 and "members.item:0" in refused.value.text

    def test_set_get_update_and_delete_a_member(self, sdk, mailchimp) -> None:
        h = subscriber_hash("Bob@Acme.io")
        created = sdk.lists.set_list_member(
            LIST, h, {"email_address": "Bob@Acme.io", "status_if_new": "pending", "merge_fields": {"LNAME": "B"}}
        )
        assert created["id"] == h and created["status"] == "pending"
        assert sdk.lists.get_list_member(LIST, h, fields=["id", "status"]) == {"id": h, "status": "pending"}
        updated = sdk.lists.update_list_member(LIST, h, {"merge_fields": {"FNAME": "Bob"}})
        assert updated["full_name"] == "Bob B"
        page = sdk.lists.get_list_members_info(LIST, count=5)
        assert page["total_items"] == 1 and page["members"][0]["email_address"] == "Bob@Acme.io"
        fields = sdk.lists.get_list_merge_fields(LIST, count=100)
        assert {f["tag"] for f in fields["merge_fields"]} >= {"FNAME", "LNAME"}
        sdk.lists.delete_list_member(LIST, h)
        assert mailchimp.emulator.member(LIST, h)["status"] == "archived"
        sdk.lists.delete_list_member_permanent(LIST, h)
        assert mailchimp.emulator.member(LIST, h) is None

    def test_errors_surface_as_api_client_errors(self, sdk, mailchimp) -> None:
        mailchimp.emulator.seed(LIST, [{"email_address": "gone@acme.io", "status": "unsubscribed"}])
        with pytest.raises(ApiClientError) as info:
            sdk.lists.set_list_member(LIST, "gone@acme.io", {"email_address": "gone@acme.io", "status": "subscribed"})
        assert info.value.status_code == 400 and "Member In Compliance State" in info.value.text
        with pytest.raises(ApiClientError) as info:
            sdk.lists.get_list(LIST + "x")
        assert info.value.status_code == 404
        wrong = sdk_client(mailchimp.url, api_key="f" * 32 + "-us6")
        with pytest.raises(ApiClientError) as info:
            wrong.lists.get_list(LIST)
        assert info.value.status_code == 401 and "API Key Invalid" in info.value.text
