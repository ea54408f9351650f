"""HubSpot CRM v3: contacts, companies, deals, tickets and custom objects."""

from __future__ import annotations

from airflow_provider_retl.destinations.kit import AppLink, DestinationSpec, EmulatorSpec, Form, Limits, ObjectSpec

SPEC = DestinationSpec(
    name="hubspot",
    title="HubSpot",
    conn_type="retl_hubspot",
    hook_class="airflow_provider_retl.hooks.hubspot.HubSpotHook",
    conn_name_attr="hubspot_conn_id",
    default_conn_name="hubspot_default",
    default_host="https://api.hubapi.com",
    doc_url="https://developers.hubspot.com/docs/api/crm/understanding-the-crm",
    form=Form(
        hidden=("schema", "login", "port"),
        relabel={"host": "API base URL", "password": "Private app access token"},
        placeholders={"host": "https://api.hubapi.com (leave empty for HubSpot itself)", "password": "pat-na1-..."},
    ),
    # 100 inputs per batch call; 100 requests per 10 s per private app (190 on Pro/Enterprise).
    limits=Limits(
        batch=100,
        lookup_batch=100,
        concurrency=4,
        rate=100,
        window=10,
        rate_note=" HubSpot allows 100 per 10 s per private app, 190 on Professional and Enterprise.",
    ),
    # Upsert by any property HubSpot holds unique (email for contacts; checked against the
    # properties API at run time), search lookups, archive by id.
    objects=(
        ObjectSpec(
            "contacts", upsert_by=("*",), delete=True, default_match="email", aliases=("contact", "0-1"), app_page="0-1"
        ),
        ObjectSpec("companies", upsert_by=("*",), delete=True, app_page="0-2"),
        ObjectSpec("deals", upsert_by=("*",), delete=True, app_page="0-3"),
        ObjectSpec("tickets", upsert_by=("*",), delete=True, app_page="0-5"),
        ObjectSpec("*", upsert_by=("*",), delete=True),
    ),
    vendor_hosts=(".hubapi.com", ".hubspot.com"),
    app_link=AppLink(
        template="https://app.hubspot.com/contacts/{portal_id}/objects/{page}/views/all/list",
        fallback="https://app.hubspot.com/",
    ),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.hubspot.emulator:HubSpotEmulator", "HubSpot CRM v3", 8081
    ),
)
