"""Destination hooks. Imported lazily: ``from airflow_provider_retl.hooks import HubSpotHook``."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BrazeHook": "airflow_provider_retl.hooks.braze",
    "DestinationHook": "airflow_provider_retl.hooks.destination",
    "CustomerIoHook": "airflow_provider_retl.hooks.customerio",
    "HubSpotHook": "airflow_provider_retl.hooks.hubspot",
    "MailchimpHook": "airflow_provider_retl.hooks.mailchimp",
    "SalesforceHook": "airflow_provider_retl.hooks.salesforce",
    "WebhookHook": "airflow_provider_retl.hooks.webhook",
    "ZendeskHook": "airflow_provider_retl.hooks.zendesk",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
