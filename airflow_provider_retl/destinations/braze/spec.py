"""Braze: user attributes, custom events and purchases through /users/track."""

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
    name="braze",
    title="Braze",
    conn_type="retl_braze",
    hook_class="airflow_provider_retl.hooks.braze.BrazeHook",
    conn_name_attr="braze_conn_id",
    default_conn_name="braze_default",
    doc_url="https://www.braze.com/docs/api/endpoints/user_data/post_user_track/",
    form=Form(
        hidden=("schema", "login", "port"),
        relabel={"host": "REST endpoint", "password": "REST API key"},
        placeholders={
            "host": "https://rest.iad-01.braze.com (Settings > APIs and Identifiers)",
            "password": "REST API key with users.track (and users.export.ids, users.delete)",
        },
    ),
    knobs=(
        Knob(
            "allow_delete",
            "boolean",
            "Allow deleting users (mirror)",
            False,
            "Mirror mode deletes users whose key left the query, permanently (/users/delete). Off: mirror mode is "
            "refused.",
        ),
        Knob(
            "reconcile_events",
            "boolean",
            "Check interrupted events",
            True,
            "Before re-sending events of an interrupted try, ask /users/export/ids whether they can have landed "
            "(needs users.export.ids). Off: all are reported as in doubt.",
        ),
    ),
    # 75 objects per /users/track array; 3,000 requests per 3 s per REST key.
    limits=Limits(
        batch=75,
        lookup_batch=50,
        concurrency=4,
        rate=3000,
        window=3,
        batch_note=" Set 50 on a Monthly Active Users CY 24-25 plan.",
    ),
    objects=(
        # /users/track upserts by external_id itself: nothing to look up first. Deleting needs allow_delete.
        ObjectSpec(
            "users",
            upsert_by=("external_id",),
            lookup=False,
            delete=True,
            default_match="external_id",
            updates_by_match=True,
            aliases=("user", "attributes"),
        ),
        ObjectSpec(
            "events", lookup=False, events=True, default_match="external_id", aliases=("event", "custom_events")
        ),
        ObjectSpec("purchases", lookup=False, events=True, default_match="external_id", aliases=("purchase",)),
    ),
    vendor_hosts=(".braze.com", ".braze.eu"),
    app_link=AppLink(template="https://dashboard.braze.com/"),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.braze.emulator:BrazeEmulator",
        "Braze REST API (users/track, users/delete, users/export/ids)",
        8088,
    ),
)
