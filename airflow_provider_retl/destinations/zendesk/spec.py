"""Zendesk Support: users and organizations through bulk jobs."""

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
    name="zendesk",
    title="Zendesk",
    form_title="Zendesk Support (Reverse ETL)",
    conn_type="retl_zendesk",
    hook_class="airflow_provider_retl.hooks.zendesk.ZendeskHook",
    conn_name_attr="zendesk_conn_id",
    default_conn_name="zendesk_default",
    doc_url="https://developer.zendesk.com/api-reference/ticketing/users/users/",
    form=Form(
        hidden=("schema", "port"),
        relabel={"host": "Subdomain or base URL", "login": "Agent email", "password": "API token"},
        placeholders={
            "host": "acme (for https://acme.zendesk.com) or a full URL",
            "login": "agent@example.com (API token auth; empty for OAuth)",
            "password": "API token, or an OAuth access token with auth_type oauth",
        },
    ),
    knobs=(
        Knob(
            "auth_type",
            "string",
            "Auth type",
            "token",
            "token: {email}/token basic auth with the API token; oauth: the password is an OAuth access token "
            "(Bearer).",
            enum=("token", "oauth"),
        ),
        Knob(
            "default_region",
            "string",
            "Default phone region",
            help="Region code (US, GB ...) for phone numbers written without a country code; numbers are sent in "
            "E.164.",
            examples=("US", "GB", "DE", "FR", "AU"),
        ),
        Knob(
            "mirror_delete",
            "boolean",
            "Mirror deletes records",
            False,
            "Off (default): mirror unsets the synced fields of records whose key left the query. On: mirror "
            "deletes them (destroy_many).",
        ),
        Knob(
            "mirror_unset_fields",
            "string",
            "Fields mirror unsets",
            help="Comma-separated fields to clear on records whose key left the query; empty: the fields sent "
            "this run.",
        ),
        # Zendesk allows 30 queued or running background jobs per account; keep headroom for others.
        Knob(
            "max_jobs_in_flight",
            "integer",
            "Jobs in flight per account",
            25,
            "Zendesk allows 30 queued or running jobs per account.",
            minimum=1,
            maximum=30,
            cap_at_maximum=True,
        ),
        Knob(
            "job_timeout",
            "number",
            "Job timeout (seconds)",
            900,
            "How long a background job (create_many, update_many ...) may take before its records count as in doubt.",
            exclusive_minimum=0,
        ),
        Knob("job_poll_interval", "number", "Job poll interval (seconds)", 0.5, exclusive_minimum=0, in_form=False),
    ),
    # 100 records per *_many job; 400 requests a minute on Team plans (the lowest documented).
    limits=Limits(batch=100, lookup_batch=100, concurrency=5, rate=400, window=60),
    objects=(
        ObjectSpec(
            "users",
            upsert_by=("external_id", "email"),
            delete=True,
            default_match="external_id",
            aliases=("user",),
            # create_or_update_many finds a user by external_id or by email (Zendesk "Create Or Update Many Users").
            identities=("external_id", "email"),
            app_page="users",
        ),
        ObjectSpec(
            "organizations",
            upsert_by=("external_id", "name"),
            delete=True,
            default_match="external_id",
            aliases=("organization",),
            app_page="organizations",
        ),
    ),
    vendor_hosts=(".zendesk.com",),
    app_link=AppLink(template="{origin}/agent/{page}"),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.zendesk.emulator:ZendeskEmulator",
        "Zendesk Support API (users, organizations, bulk jobs)",
        8085,
    ),
)
