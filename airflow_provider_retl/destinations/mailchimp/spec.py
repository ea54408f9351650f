"""Mailchimp Marketing: members of one audience (list), upserted in batches."""

from __future__ import annotations

from airflow_provider_retl.destinations.kit import (
    AppLink,
    DestinationSpec,
    EmulatorSpec,
    Form,
    Knob,
    Limits,
    ObjectSpec,
)

SPEC = DestinationSpec(
    name="mailchimp",
    title="Mailchimp",
    conn_type="retl_mailchimp",
    hook_class="airflow_provider_retl.hooks.mailchimp.MailchimpHook",
    conn_name_attr="mailchimp_conn_id",
    default_conn_name="mailchimp_default",
    doc_url="https://mailchimp.com/developer/marketing/api/list-members/",
    form=Form(
        hidden=("schema", "login", "port"),
        relabel={"host": "Server prefix or API URL", "password": "API key"},
        placeholders={
            "host": "us6; empty: the key's -us6 suffix (https://us6.api.mailchimp.com)",
            "password": "0123456789abcdef0123456789abcdef-us6",
        },
    ),
    knobs=(
        Knob(
            "status_if_new",
            "string",
            "Status of new members",
            "subscribed",
            "subscribed, pending (Mailchimp sends a confirmation email) or transactional. Existing members always "
            "keep their status.",
            enum=("subscribed", "pending", "transactional", "unsubscribed", "cleaned"),
        ),
        Knob(
            "delete_permanently",
            "boolean",
            "Delete permanently (mirror)",
            False,
            "Mirror mode archives members whose key left the query; on: deletes them permanently, and Mailchimp "
            "will never let the address be re-imported.",
        ),
        Knob(
            "sync_tags",
            "boolean",
            "Replace tags",
            False,
            "A mapped 'tags' field replaces the member's tags instead of adding to them.",
        ),
        Knob(
            "skip_merge_validation",
            "boolean",
            "Skip merge field validation",
            False,
            "Let Mailchimp accept members whose required merge fields are empty.",
        ),
    ),
    # 500 members per batch subscribe; Mailchimp allows 10 simultaneous connections and no rate.
    limits=Limits(batch=500, lookup_batch=50, concurrency=10, concurrency_max=10, rate=None, window=1),
    # The object is the audience (list) id; members upsert by email address.
    objects=(
        ObjectSpec(
            "*",
            upsert_by=("email_address", "email"),
            delete=True,
            default_match="email_address",
            match_aliases=("email",),
        ),
    ),
    vendor_hosts=(".mailchimp.com",),
    app_link=AppLink(template="https://{dc}.admin.mailchimp.com/audience/contacts/"),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.mailchimp.emulator:MailchimpEmulator", "Mailchimp Marketing API v3", 8083
    ),
)
