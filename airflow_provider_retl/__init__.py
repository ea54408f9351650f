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
    "partitions": "airflow_provider_retl.operators.reverse_etl",
    "run_sync": "airflow_provider_retl.sync.engine",
    "VariableCheckpointStore": "airflow_provider_retl.checkpoints",
    "XComCheckpointStore": "airflow_provider_retl.checkpoints",
}

__all__ = ["__version__", "get_provider_info", *_EXPORTS]  # noqa: PLE0604 - lazy exports


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _knob_fields(
    *,
    rate_limit: int | None,
    rate_window: float,
    batch_default: int,
    batch_max: int,
    concurrency: int,
    rate_note: str = "",
    batch_note: str = "",
) -> dict[str, Any]:
    """``conn-fields`` of the extras every destination understands (see DestinationHook).

    Each default equals the hook's own, because the form writes the defaults into the extra
    when a connection is saved; a test builds hooks both ways and compares them.
    """
    return {
        "rate_limit": {
            "label": "Rate limit (requests per window)",
            "schema": {"type": ["integer", "null"], "minimum": 0, "default": rate_limit},
            "description": "At most this many requests in any rolling window, shared by every task "
            "of a worker that uses the same account. 0 turns client-side limiting off." + rate_note,
        },
        "rate_window": {
            "label": "Rate window (seconds)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": rate_window},
        },
        "rate_limit_redis_url": {
            "label": "Shared rate limit (Redis URL)",
            "schema": {"type": ["string", "null"], "format": "password"},
            "description": "redis://host:6379/0: keep the rate window in Redis so the tasks of every "
            "worker together stay under the limit (pip extra 'redis'). Empty: shared per worker process.",
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
            "description": f"At most {batch_max}.{batch_note}",
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "description": "Seconds to wait for a connection and for each answer. Empty: 10 s to connect, "
            "60 s per answer; connect_timeout and read_timeout in the extra JSON set them apart.",
        },
        "verify": {
            "label": "Verify TLS certificates",
            "schema": {"type": ["boolean", "null"], "default": True},
            "description": "Turn off only against a test server. For a private CA, put the path of its "
            'bundle in the extra JSON instead: "verify": "/etc/ssl/private-ca.pem".',
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
                "integration-name": "Zendesk",
                "external-doc-url": "https://developer.zendesk.com/api-reference/ticketing/users/users/",
                "tags": ["software"],
            },
            {
                "integration-name": "Braze",
                "external-doc-url": "https://www.braze.com/docs/api/endpoints/user_data/post_user_track/",
                "tags": ["software"],
            },
            {
                "integration-name": "Mailchimp",
                "external-doc-url": "https://mailchimp.com/developer/marketing/api/list-members/",
                "tags": ["software"],
            },
            {
                "integration-name": "Customer.io",
                "external-doc-url": "https://docs.customer.io/integrations/api/track/",
                "tags": ["software"],
            },
            {
                "integration-name": "Salesforce",
                "external-doc-url": "https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/",
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
            {"integration-name": "Zendesk", "python-modules": ["airflow_provider_retl.hooks.zendesk"]},
            {"integration-name": "Braze", "python-modules": ["airflow_provider_retl.hooks.braze"]},
            {"integration-name": "Webhook", "python-modules": ["airflow_provider_retl.hooks.webhook"]},
            {"integration-name": "Mailchimp", "python-modules": ["airflow_provider_retl.hooks.mailchimp"]},
            {"integration-name": "Customer.io", "python-modules": ["airflow_provider_retl.hooks.customerio"]},
            {"integration-name": "Salesforce", "python-modules": ["airflow_provider_retl.hooks.salesforce"]},
        ],
        "connection-types": [
            {
                "connection-type": "retl_zendesk",
                "hook-class-name": "airflow_provider_retl.hooks.zendesk.ZendeskHook",
                "hook-name": "Zendesk Support (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Subdomain or base URL", "login": "Agent email", "password": "API token"},
                    "placeholders": {
                        "host": "acme (for https://acme.zendesk.com) or a full URL",
                        "login": "agent@example.com (API token auth; empty for OAuth)",
                        "password": "API token, or an OAuth access token with auth_type oauth",
                    },
                },
                "conn-fields": {
                    "auth_type": {
                        "label": "Auth type",
                        "schema": {"type": ["string", "null"], "enum": ["token", "oauth", None], "default": "token"},
                        "description": "token: {email}/token basic auth with the API token; oauth: the password is "
                        "an OAuth access token (Bearer).",
                    },
                    "default_region": {
                        "label": "Default phone region",
                        "schema": {"type": ["string", "null"], "examples": ["US", "GB", "DE", "FR", "AU"]},
                        "description": "Region code (US, GB ...) for phone numbers written without a country "
                        "code; numbers are sent in E.164.",
                    },
                    "mirror_delete": {
                        "label": "Mirror deletes records",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Off (default): mirror unsets the synced fields of records whose key left "
                        "the query. On: mirror deletes them (destroy_many).",
                    },
                    "mirror_unset_fields": {
                        "label": "Fields mirror unsets",
                        "schema": {"type": ["string", "null"]},
                        "description": "Comma-separated fields to clear on records whose key left the query; "
                        "empty: the fields sent this run.",
                    },
                    "max_jobs_in_flight": {
                        "label": "Jobs in flight per account",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 30, "default": 25},
                        "description": "Zendesk allows 30 queued or running jobs per account.",
                    },
                    "job_timeout": {
                        "label": "Job timeout (seconds)",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 900},
                        "description": "How long a background job (create_or_update_many ...) may take before its "
                        "records count as in doubt.",
                    },
                    **_knob_fields(rate_limit=400, rate_window=60, batch_default=100, batch_max=100, concurrency=5),
                },
            },
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
                    },
                },
                "conn-fields": _knob_fields(
                    rate_limit=100,
                    rate_window=10,
                    batch_default=100,
                    batch_max=100,
                    concurrency=4,
                    rate_note=" HubSpot allows 100 per 10 s per private app, 190 on Professional and Enterprise.",
                ),
            },
            {
                "connection-type": "retl_braze",
                "hook-class-name": "airflow_provider_retl.hooks.braze.BrazeHook",
                "hook-name": "Braze (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "REST endpoint", "password": "REST API key"},
                    "placeholders": {
                        "host": "https://rest.iad-01.braze.com (Settings > APIs and Identifiers)",
                        "password": "REST API key with users.track (and users.export.ids, users.delete)",
                    },
                },
                "conn-fields": {
                    "allow_delete": {
                        "label": "Allow deleting users (mirror)",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Mirror mode deletes users whose key left the query, permanently "
                        "(/users/delete). Off: mirror mode is refused.",
                    },
                    "reconcile_events": {
                        "label": "Check interrupted events",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Before re-sending events of an interrupted try, ask /users/export/ids "
                        "whether they can have landed (needs users.export.ids). Off: all are reported as in doubt.",
                    },
                    **_knob_fields(
                        rate_limit=3000,
                        rate_window=3,
                        batch_default=75,
                        batch_max=75,
                        concurrency=4,
                        batch_note=" Set 50 on a Monthly Active Users CY 24-25 plan.",
                    ),
                },
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
                "connection-type": "retl_customerio",
                "hook-class-name": "airflow_provider_retl.hooks.customerio.CustomerIoHook",
                "hook-name": "Customer.io (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Region or Track API URL", "login": "Site ID", "password": "Track API key"},
                    "placeholders": {
                        "host": "us (default) or eu, or a URL like https://track-eu.customer.io",
                        "login": "Site ID from Settings > API Credentials > Track API keys",
                        "password": "the Track API key of that Site ID (not an App API key)",
                    },
                },
                "conn-fields": _knob_fields(
                    rate_limit=100, rate_window=1, batch_default=1000, batch_max=1000, concurrency=4
                ),
            },
            {
                "connection-type": "retl_mailchimp",
                "hook-class-name": "airflow_provider_retl.hooks.mailchimp.MailchimpHook",
                "hook-name": "Mailchimp (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Server prefix or API URL", "password": "API key"},
                    "placeholders": {
                        "host": "us6; empty: the key's -us6 suffix (https://us6.api.mailchimp.com)",
                        "password": "0123456789abcdef0123456789abcdef-us6",
                    },
                },
                "conn-fields": {
                    "status_if_new": {
                        "label": "Status of new members",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["subscribed", "pending", "transactional", "unsubscribed", "cleaned", None],
                            "default": "subscribed",
                        },
                        "description": "subscribed, pending (Mailchimp sends a confirmation email) or transactional. "
                        "Existing members always keep their status.",
                    },
                    "delete_permanently": {
                        "label": "Delete permanently (mirror)",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Mirror mode archives members whose key left the query; on: deletes them "
                        "permanently, and Mailchimp will never let the address be re-imported.",
                    },
                    "sync_tags": {
                        "label": "Replace tags",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "A mapped 'tags' field replaces the member's tags instead of adding to them.",
                    },
                    "skip_merge_validation": {
                        "label": "Skip merge field validation",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Let Mailchimp accept members whose required merge fields are empty.",
                    },
                    **_knob_fields(rate_limit=None, rate_window=1, batch_default=500, batch_max=500, concurrency=10),
                },
            },
            {
                "connection-type": "retl_salesforce",
                "hook-class-name": "airflow_provider_retl.hooks.salesforce.SalesforceHook",
                "hook-name": "Salesforce (Reverse ETL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Login URL",
                        "login": "Username (password flow)",
                        "password": "Password (password flow)",
                    },
                    "placeholders": {
                        "host": "https://login.salesforce.com (sandbox: https://test.salesforce.com, or My Domain)",
                        "login": "integration.user@example.com (empty for the client credentials flow)",
                        "password": "the user's password, without the security token",
                    },
                },
                "conn-fields": {
                    "client_id": {
                        "label": "Client id (consumer key)",
                        "schema": {"type": ["string", "null"]},
                        "description": "Consumer key of the connected app used for OAuth 2.0.",
                    },
                    "client_secret": {
                        "label": "Client secret (consumer secret)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "security_token": {
                        "label": "Security token (password flow)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                        "description": "Appended to the password, as Salesforce requires outside trusted IP ranges.",
                    },
                    "grant_type": {
                        "label": "OAuth flow",
                        "schema": {"type": ["string", "null"], "enum": ["password", "client_credentials", None]},
                        "description": "password (username + password + token) or client_credentials; default: "
                        "password when a username is set.",
                    },
                    "instance_url": {
                        "label": "Instance URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Where API calls go, e.g. https://acme.my.salesforce.com; empty: the "
                        "instance_url of the login answer (the usual case).",
                    },
                    "api_version": {
                        "label": "API version",
                        "schema": {"type": ["string", "null"], "default": "62.0", "examples": ["62.0", "63.0", "64.0"]},
                    },
                    "bulk_threshold": {
                        "label": "Bulk API 2.0 from (upserts)",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 10000},
                        "description": "Upserts from which one Bulk API 2.0 job replaces sObject Collections calls; "
                        "0 never uses bulk.",
                    },
                    **_knob_fields(rate_limit=None, rate_window=1, batch_default=200, batch_max=200, concurrency=4),
                },
            },
        ],
    }
