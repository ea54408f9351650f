"""Salesforce: any sObject through sObject Collections, SOQL lookups and Bulk API 2.0."""

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
    name="salesforce",
    title="Salesforce",
    conn_type="retl_salesforce",
    hook_class="airflow_provider_retl.hooks.salesforce.SalesforceHook",
    conn_name_attr="salesforce_conn_id",
    default_conn_name="salesforce_default",
    default_host="https://login.salesforce.com",
    doc_url="https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/",
    form=Form(
        hidden=("schema", "port"),
        relabel={"host": "Login URL", "login": "Username (password flow)", "password": "Password (password flow)"},
        placeholders={
            "host": "https://login.salesforce.com (sandbox: https://test.salesforce.com, or My Domain)",
            "login": "integration.user@example.com (empty for the client credentials flow)",
            "password": "the user's password, without the security token",
        },
    ),
    knobs=(
        Knob(
            "client_id",
            "string",
            "Client id (consumer key)",
            help="Consumer key of the connected app used for OAuth 2.0.",
        ),
        Knob("client_secret", "string", "Client secret (consumer secret)", secret=True),
        Knob(
            "security_token",
            "string",
            "Security token (password flow)",
            help="Appended to the password, as Salesforce requires outside trusted IP ranges.",
            secret=True,
        ),
        Knob(
            "grant_type",
            "string",
            "OAuth flow",
            help="password (username + password + token) or client_credentials; default: password when a username "
            "is set.",
            enum=("password", "client_credentials"),
        ),
        Knob(
            "instance_url",
            "string",
            "Instance URL",
            help="Where API calls go, e.g. https://acme.my.salesforce.com; empty: the instance_url of the login "
            "answer (the usual case).",
        ),
        Knob("api_version", "string", "API version", "62.0", examples=("62.0", "63.0", "64.0")),
        Knob(
            "bulk_threshold",
            "integer",
            "Bulk API 2.0 from (upserts)",
            10_000,
            "Upserts from which one Bulk API 2.0 job replaces sObject Collections calls; 0 never uses bulk.",
            minimum=0,
        ),
        # Tuning read from the extra JSON only.
        Knob("bulk_batch_size", "integer", "Records per Bulk API 2.0 job", 100_000, minimum=1, in_form=False),
        Knob(
            "bulk_poll_interval", "number", "Bulk job poll interval (seconds)", 2.0, exclusive_minimum=0, in_form=False
        ),
        Knob("bulk_timeout", "number", "Bulk job timeout (seconds)", 3600.0, exclusive_minimum=0, in_form=False),
        Knob("lock_retries", "integer", "Retries of UNABLE_TO_LOCK_ROW records", 3, minimum=0, in_form=False),
        Knob(
            "api_usage_warning",
            "number",
            "Warn above this share of the daily API allowance",
            0.8,
            exclusive_minimum=0,
            in_form=False,
        ),
    ),
    # 200 records per sObject Collections call; SOQL IN lists of 1,000 values; the org's daily
    # API allowance is watched from the Sforce-Limit-Info header rather than rate-limited.
    limits=Limits(batch=200, lookup_batch=1000, concurrency=4, rate=None, window=1, bulk_batch=100_000),
    # Upsert by any External ID field (checked with describe at run time).
    objects=(ObjectSpec("*", upsert_by=("*",), delete=True),),
    vendor_hosts=(".salesforce.com", ".force.com"),
    app_link=AppLink(
        template="{instance_url}/lightning/o/{object}/list",
        fallback="{instance_url}/",
        login_hosts=("login.salesforce.com", "test.salesforce.com"),
    ),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.salesforce.emulator:SalesforceEmulator",
        "Salesforce REST API (OAuth, collections, SOQL, Bulk 2.0)",
        8084,
    ),
)
