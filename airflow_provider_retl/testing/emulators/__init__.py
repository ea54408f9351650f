"""Faithful local emulators of destination APIs, for tests, the demo and benchmarks.

One call starts one on a free port and returns a handle::

    with start_emulator("hubspot", rate_limit=100, rate_window=1.0) as hs:
        hs.url          # "http://127.0.0.1:54321": point a Connection's host at it
        hs.faults.fail_next(2, "reset")
        ...
        hs.emulator.records("contacts")

Every emulator also answers admin routes (no auth, never faulted):
``GET /_emulator/state``, ``GET /_emulator/requests``, ``POST /_emulator/reset``,
``GET|POST /_emulator/faults``, ``GET /_emulator/health``.
From a shell: ``python -m airflow_provider_retl.testing.emulators --help``.
"""

from __future__ import annotations

import importlib
from types import TracebackType
from typing import Any, Self

from airflow_provider_retl.destinations import REGISTRY
from airflow_provider_retl.destinations.braze.emulator import DEFAULT_API_KEY as BRAZE_API_KEY
from airflow_provider_retl.destinations.braze.emulator import BrazeEmulator
from airflow_provider_retl.destinations.customerio.emulator import (
    DEFAULT_API_KEY as CUSTOMERIO_API_KEY,
)
from airflow_provider_retl.destinations.customerio.emulator import (
    DEFAULT_SITE_ID as CUSTOMERIO_SITE_ID,
)
from airflow_provider_retl.destinations.customerio.emulator import (
    CustomerIoEmulator,
)
from airflow_provider_retl.destinations.hubspot.emulator import DEFAULT_TOKEN, HubSpotEmulator
from airflow_provider_retl.destinations.hubspot.emulator_schema import ObjectTypeDef, PropertyDef, custom_object_type
from airflow_provider_retl.destinations.mailchimp.emulator import (
    DEFAULT_API_KEY as MAILCHIMP_API_KEY,
)
from airflow_provider_retl.destinations.mailchimp.emulator import (
    DEFAULT_LIST_ID as MAILCHIMP_LIST_ID,
)
from airflow_provider_retl.destinations.mailchimp.emulator import (
    MailchimpEmulator,
    MergeFieldDef,
    subscriber_hash,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    DEFAULT_CLIENT_ID as SALESFORCE_CLIENT_ID,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    DEFAULT_CLIENT_SECRET as SALESFORCE_CLIENT_SECRET,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    DEFAULT_PASSWORD as SALESFORCE_PASSWORD,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    DEFAULT_SECURITY_TOKEN as SALESFORCE_SECURITY_TOKEN,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    DEFAULT_USERNAME as SALESFORCE_USERNAME,
)
from airflow_provider_retl.destinations.salesforce.emulator import (
    SalesforceEmulator,
)
from airflow_provider_retl.destinations.salesforce.emulator_schema import FieldDef, SObjectDef
from airflow_provider_retl.destinations.webhook.emulator import WebhookReceiver, sign, signed_headers
from airflow_provider_retl.destinations.zendesk.emulator import (
    DEFAULT_API_TOKEN as ZENDESK_API_TOKEN,
)
from airflow_provider_retl.destinations.zendesk.emulator import (
    DEFAULT_EMAIL as ZENDESK_EMAIL,
)
from airflow_provider_retl.destinations.zendesk.emulator import (
    DEFAULT_OAUTH_TOKEN as ZENDESK_OAUTH_TOKEN,
)
from airflow_provider_retl.destinations.zendesk.emulator import (
    CustomFieldDef,
    ZendeskEmulator,
)
from airflow_provider_retl.testing.emulators.base import BaseEmulator
from airflow_provider_retl.testing.emulators.faults import FAULT_KINDS, FaultDecision, Faults
from airflow_provider_retl.testing.emulators.server import EmulatorServer

__all__ = [
    "BRAZE_API_KEY",
    "CUSTOMERIO_API_KEY",
    "CUSTOMERIO_SITE_ID",
    "DEFAULT_TOKEN",
    "FAULT_KINDS",
    "MAILCHIMP_API_KEY",
    "MAILCHIMP_LIST_ID",
    "SALESFORCE_CLIENT_ID",
    "SALESFORCE_CLIENT_SECRET",
    "SALESFORCE_PASSWORD",
    "SALESFORCE_SECURITY_TOKEN",
    "SALESFORCE_USERNAME",
    "ZENDESK_API_TOKEN",
    "ZENDESK_EMAIL",
    "ZENDESK_OAUTH_TOKEN",
    "BaseEmulator",
    "BrazeEmulator",
    "CustomFieldDef",
    "CustomerIoEmulator",
    "EmulatorServer",
    "FaultDecision",
    "Faults",
    "FieldDef",
    "HubSpotEmulator",
    "MailchimpEmulator",
    "MergeFieldDef",
    "ObjectTypeDef",
    "PropertyDef",
    "RunningEmulator",
    "SObjectDef",
    "SalesforceEmulator",
    "WebhookReceiver",
    "ZendeskEmulator",
    "custom_object_type",
    "sign",
    "signed_headers",
    "start_emulator",
    "subscriber_hash",
]


def _emulator_class(path: str) -> type[BaseEmulator]:
    module, _, name = path.partition(":")
    cls: type[BaseEmulator] = getattr(importlib.import_module(module), name)
    return cls


#: Destination name -> emulator class, from the registry of destination specs.
EMULATORS: dict[str, type[BaseEmulator]] = {
    name: _emulator_class(spec.emulator.cls) for name, spec in REGISTRY.items() if spec.emulator is not None
}


class RunningEmulator:
    """An emulator serving on a socket: ``.url``, ``.emulator`` (its state), ``.faults``, ``.stop()``."""

    def __init__(self, emulator: BaseEmulator, server: EmulatorServer) -> None:
        self.emulator = emulator
        self.server = server

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return self.server.url

    @property
    def faults(self) -> Faults:
        """The emulator's fault switches (changes apply to the next request)."""
        return self.emulator.faults

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningEmulator({self.emulator.kind}, {self.url})"


def start_emulator(kind: str, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningEmulator:
    """Start the emulator of destination ``kind`` (a name in the registry) in a background thread.

    ``options`` go to the emulator's constructor (e.g. ``HubSpotEmulator``); ``port=0``
    picks a free port.
    """
    try:
        cls = EMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown emulator {kind!r}; expected one of {', '.join(EMULATORS)}") from None
    emulator = cls(**options)
    server = EmulatorServer(emulator, host=host, port=port).start()
    return RunningEmulator(emulator, server)
