"""Customer.io Track API: people (identify) and their events, through /api/v2/batch."""

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
    name="customerio",
    title="Customer.io",
    conn_type="retl_customerio",
    hook_class="airflow_provider_retl.hooks.customerio.CustomerIoHook",
    conn_name_attr="customerio_conn_id",
    default_conn_name="customerio_default",
    default_host="https://track.customer.io",
    doc_url="https://docs.customer.io/integrations/api/track/",
    form=Form(
        hidden=("schema", "port"),
        relabel={"host": "Region or Track API URL", "login": "Site ID", "password": "Track API key"},
        placeholders={
            "host": "us (default) or eu, or a URL like https://track-eu.customer.io",
            "login": "Site ID from Settings > API Credentials > Track API keys",
            "password": "the Track API key of that Site ID (not an App API key)",
        },
    ),
    knobs=(
        Knob(
            "person_field",
            "string",
            "Event person column",
            help="Events: the column naming each event's person (its Customer.io id, email or cio_id), separate "
            "from the event's own key. Empty: the query's id, email or cio_id column.",
        ),
        Knob(
            "person_identifier",
            "string",
            "Event person identifier",
            help="Which identifier the person column holds: id, email or cio_id (default: the column's own name "
            "when it is one of those, else id).",
            enum=("id", "email", "cio_id"),
        ),
    ),
    # Records per engine batch (each goes out in requests of < 500 KB); 100 requests a second.
    limits=Limits(batch=1000, lookup_batch=100, concurrency=4, rate=100, window=1),
    objects=(
        ObjectSpec(
            "people",
            upsert_by=("id", "email", "cio_id"),
            lookup=False,
            delete=True,
            default_match="id",
            aliases=("person", "customers", "customer"),
            app_page="people",
        ),
        ObjectSpec("events", lookup=False, events=True, aliases=("event",), app_page="activity"),
    ),
    vendor_hosts=(".customer.io",),
    app_link=AppLink(
        template="{app}/{page}",
        app_hosts={
            "track.customer.io": "https://fly.customer.io",
            "track-eu.customer.io": "https://fly-eu.customer.io",
        },
        default_app="https://fly.customer.io",
    ),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.customerio.emulator:CustomerIoEmulator",
        "Customer.io Track API (v2 batch, v1 customers/events)",
        8087,
    ),
)
