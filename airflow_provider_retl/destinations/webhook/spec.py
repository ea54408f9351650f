"""Any HTTPS endpoint: batches of signed JSON records (upserts, deletes, events)."""

from __future__ import annotations

from airflow_provider_retl.destinations.kit import DestinationSpec, EmulatorSpec, Form, Limits, ObjectSpec

SPEC = DestinationSpec(
    name="webhook",
    title="Webhook",
    conn_type="retl_webhook",
    hook_class="airflow_provider_retl.hooks.webhook.WebhookHook",
    conn_name_attr="webhook_conn_id",
    default_conn_name="webhook_default",
    tags=("protocol",),
    form=Form(
        hidden=("schema", "login", "port"),
        relabel={"host": "Endpoint URL", "password": "Signing secret"},
        placeholders={
            "host": "https://example.com/hooks/retl",
            "password": "shared secret for the X-Retl-Signature HMAC",
        },
    ),
    limits=Limits(batch=500, lookup_batch=500, concurrency=4, rate=None, window=1, batch_default=100),
    # A receiver has no notion of existing records: every record is an upsert it applies by key.
    objects=(ObjectSpec("*", upsert_by=("*",), lookup=False, delete=True),),
    emulator=EmulatorSpec(
        "airflow_provider_retl.destinations.webhook.emulator:WebhookReceiver", "signed webhook receiver", 8082
    ),
)
