"""Reverse ETL for Apache Airflow: push what changed in a warehouse query into business apps.

This module stays light: Airflow reads ``get_provider_info()`` (the
``apache_airflow_provider`` entry point) in every process, so nothing heavy is
imported here. The public classes load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DestinationHook": "airflow_provider_retl.hooks.destination",
    "ReverseETLOperator": "airflow_provider_retl.operators.reverse_etl",
    "run_sync": "airflow_provider_retl.sync.engine",
    "VariableCheckpointStore": "airflow_provider_retl.checkpoints",
    "XComCheckpointStore": "airflow_provider_retl.checkpoints",
}

__all__ = ["__version__", "get_provider_info", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _knob_fields(
    *, rate_limit: int | None, rate_window: float, batch_default: int, batch_max: int, concurrency: int
) -> dict[str, Any]:
    """``conn-fields`` of the extras every destination understands (see DestinationHook)."""
    return {
        "rate_limit": {
            "label": "Rate limit (requests per window)",
            "schema": {"type": ["integer", "null"], "minimum": 0, "default": rate_limit},
            "description": "At most this many requests in any rolling window, shared by every task "
            "of a worker that uses the same account. 0 turns client-side limiting off.",
        },
        "rate_window": {
            "label": "Rate window (seconds)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": rate_window},
        },
        "max_retries": {
            "label": "Max retries",
            "schema": {"type": ["integer", "null"], "minimum": 0, "default": 5},
            "description": "Retries of a call after 429, 5xx or a network error (non-idempotent "
            "calls are only retried when the request surely did not arrive).",
        },
        "retry_deadline": {
            "label": "Retry deadline (seconds)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 300},
        },
        "max_concurrency": {
            "label": "Max concurrent calls",
            "schema": {"type": ["integer", "null"], "minimum": 1, "default": concurrency},
        },
        "batch_size": {
            "label": "Records per call",
            "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": batch_max, "default": batch_default},
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 60},
            "description": "Seconds to wait for a connection and for each answer; set connect_timeout "
            "and read_timeout in the extra JSON to tell them apart.",
        },
        "verify": {
            "label": "Verify TLS certificates",
            "schema": {"type": ["boolean", "null"], "default": True},
        },
    }


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow (the keys of provider.yaml)."""
    hubspot_hook = "airflow_provider_retl.hooks.hubspot.HubSpotHook"
    webhook_hook = "airflow_provider_retl.hooks.webhook.WebhookHook"
    return {
        "package-name": "airflow-provider-retl",
        "name": "Reverse ETL",
        "description": "Reverse ETL for Apache Airflow: sync warehouse query results into HubSpot, webhooks "
        "and more, pushing only what changed.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Reverse ETL", "tags": ["software"]},
            {
                "integration-name": "HubSpot",
                "external-doc-url": "https://developers.hubspot.com/docs/api/crm/understanding-the-crm",
                "tags": ["software"],
            },
            {"integration-name": "Webhook", "tags": ["protocol"]},
            {
                "integration-name": "Mailchimp",
                "external-doc-url": "https://mailchimp.com/developer/marketing/api/list-members/",
                "tags": ["software"],
            },
        ],
        "operators": [
            {
                "integration-name": "Reverse ETL",
                "python-modules": ["airflow_provider_retl.operators.reverse_etl"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Reverse ETL",
                "python-modules": ["airflow_provider_retl.hooks.destination"],
            },
            {"integration-name": "HubSpot", "python-modules": ["airflow_provider_retl.hooks.hubspot"]},
            {"integration-name": "Webhook", "python-modules": ["airflow_provider_retl.hooks.webhook"]},
            {"integration-name": "Mailchimp", "python-modules": ["airflow_provider_retl.hooks.mailchimp"]},
        ],
        "connection-types": [
            {
                "connection-type": "retl_hubspot",
                "hook-class-name": hubspot_hook,
                "hook-name": "HubSpot (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "API base URL", "password": "Private app access token"},
                    "placeholders": {
                        "host": "https://api.hubapi.com (leave empty for HubSpot itself)",
                        "password": "pat-na1-...",
                        "rate_limit": "100 (190 on Professional/Enterprise)",
                    },
                },
                "conn-fields": _knob_fields(
                    rate_limit=100, rate_window=10, batch_default=100, batch_max=100, concurrency=4
                ),
            },
            {
                "connection-type": "retl_webhook",
                "hook-class-name": webhook_hook,
                "hook-name": "Webhook (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Endpoint URL", "password": "Signing secret"},
                    "placeholders": {
                        "host": "https://example.com/hooks/retl",
                        "password": "shared secret for the X-Retl-Signature HMAC",
                    },
                },
                "conn-fields": _knob_fields(
                    rate_limit=None, rate_window=1, batch_default=100, batch_max=500, concurrency=4
                ),
            },
            {
                "connection-type": "retl_mailchimp",
                "hook-class-name": "airflow_provider_retl.hooks.mailchimp.MailchimpHook",
                "hook-name": "Mailchimp (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {
                        "host": "leave empty: https://<dc>.api.mailchimp.com from the key's -usN suffix",
                        "password": "0123456789abcdef0123456789abcdef-us6",
                        "extra": '{"status_if_new": "subscribed", "delete_permanently": false}',
                    },
                },
                "conn-fields": _knob_fields(
                    rate_limit=None, rate_window=1, batch_default=500, batch_max=500, concurrency=10
                ),
            },
        ],
    }
