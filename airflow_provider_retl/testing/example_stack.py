"""The emulators and connections the example DAGs (``dags/shop_*.py``) expect.

One place says how each destination of the shop example is set up (custom HubSpot
properties, Mailchimp merge fields, the Zendesk ``plan`` user field, credentials), so
the example test, ``make airflow`` and docker-compose all run the same thing::

    python -m airflow_provider_retl.testing.example_stack --host 0.0.0.0 --print-env

starts every emulator on its fixed port and prints the ``AIRFLOW_CONN_*`` lines that
point the example connections at them.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Mapping
from typing import Any

from airflow_provider_retl.destinations import REGISTRY
from airflow_provider_retl.testing.emulators import (
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    MAILCHIMP_API_KEY,
    MAILCHIMP_LIST_ID,
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    SALESFORCE_PASSWORD,
    SALESFORCE_SECURITY_TOKEN,
    SALESFORCE_USERNAME,
    ZENDESK_API_TOKEN,
    ZENDESK_EMAIL,
    HubSpotEmulator,
    RunningEmulator,
    start_emulator,
)

HUBSPOT_TOKEN = "pat-example-0000-token"

#: The destinations of the shop example.
EXAMPLE_DESTINATIONS = ("hubspot", "mailchimp", "salesforce", "zendesk", "customerio")

#: Port of each example emulator when not picked at random (the emulator CLI's defaults, from the specs).
PORTS = {name: emulator.port for name in EXAMPLE_DESTINATIONS if (emulator := REGISTRY[name].emulator) is not None}

#: Connection id of each destination in the example DAGs (each hook's default connection).
CONN_IDS = {name: REGISTRY[name].default_conn_name for name in EXAMPLE_DESTINATIONS}

HUBSPOT_PROPERTIES = {
    "contacts": {
        "lifetime_value": "number",
        "orders_count": "number",
        "logins_count": "number",
        "reports_count": "number",
        "plan": "string",
    },
    "companies": {
        "customers_count": "number",
        "lifetime_value": "number",
        "logins_count": "number",
        "reports_count": "number",
        "exports_count": "number",
    },
}
MAILCHIMP_MERGE_FIELDS = [
    {"tag": "LTV", "type": "number"},
    {"tag": "ORDERS", "type": "number"},
    {"tag": "LASTORDER", "type": "date"},
]
ZENDESK_USER_FIELDS = {"plan": "text"}


def emulator_options(kind: str) -> dict[str, Any]:
    """Constructor options of the ``kind`` emulator as the example needs it."""
    options: dict[str, dict[str, Any]] = {
        "hubspot": {"tokens": [HUBSPOT_TOKEN], "rate_limit": None},
        "mailchimp": {"merge_fields": MAILCHIMP_MERGE_FIELDS},
        "salesforce": {"bulk_processing_seconds": 0.05},
        "zendesk": {"user_fields": ZENDESK_USER_FIELDS, "processing_seconds": 0.02, "rate_limit": None},
        "customerio": {"rate_limit": None},
    }
    return options[kind]


def start_example_emulators(host: str = "127.0.0.1", *, fixed_ports: bool = False) -> dict[str, RunningEmulator]:
    """Start every destination of the example; stop them with ``stop_all``."""
    running: dict[str, RunningEmulator] = {}
    try:
        for kind, fixed_port in PORTS.items():
            port = fixed_port if fixed_ports else 0
            running[kind] = start_emulator(kind, host=host, port=port, **emulator_options(kind))
        hubspot = running["hubspot"].emulator
        # RunningEmulator holds any BaseEmulator; start_emulator("hubspot") built a HubSpotEmulator.
        if not isinstance(hubspot, HubSpotEmulator):
            raise TypeError(f"expected a HubSpotEmulator, got {type(hubspot).__name__}")
        for object_type, properties in HUBSPOT_PROPERTIES.items():
            for name, type_ in properties.items():
                hubspot.add_property(object_type, {"name": name, "type": type_})
    except BaseException:
        stop_all(running)
        raise
    return running


def stop_all(running: Mapping[str, RunningEmulator]) -> None:
    for emulator in running.values():
        emulator.stop()


#: The example DAGs' sync history (``history="conn:retl_history"``): a SQLite file of its own, since
#: their DuckDB warehouses are opened read-only (many sync tasks read them at once).
HISTORY_CONN_ID = "retl_history"


def connections(
    urls: Mapping[str, str], *, warehouse_path: str | None = None, history_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """Connection id -> Connection fields (JSON form) for the example DAGs, given each emulator's URL."""
    conns: dict[str, dict[str, Any]] = {
        CONN_IDS["hubspot"]: {
            "conn_type": REGISTRY["hubspot"].conn_type,
            "host": urls["hubspot"],
            "password": HUBSPOT_TOKEN,
        },
        CONN_IDS["mailchimp"]: {
            "conn_type": REGISTRY["mailchimp"].conn_type,
            "host": urls["mailchimp"],
            "password": MAILCHIMP_API_KEY,
        },
        CONN_IDS["salesforce"]: {
            "conn_type": REGISTRY["salesforce"].conn_type,
            "host": urls["salesforce"],
            "login": SALESFORCE_USERNAME,
            "password": SALESFORCE_PASSWORD,
            "extra": {
                "client_id": SALESFORCE_CLIENT_ID,
                "client_secret": SALESFORCE_CLIENT_SECRET,
                "security_token": SALESFORCE_SECURITY_TOKEN,
                "bulk_poll_interval": 0.05,
            },
        },
        CONN_IDS["zendesk"]: {
            "conn_type": REGISTRY["zendesk"].conn_type,
            "host": urls["zendesk"],
            "login": ZENDESK_EMAIL,
            "password": ZENDESK_API_TOKEN,
            "extra": {"job_poll_interval": 0.02, "default_region": "US"},
        },
        CONN_IDS["customerio"]: {
            "conn_type": REGISTRY["customerio"].conn_type,
            "host": urls["customerio"],
            "login": CUSTOMERIO_SITE_ID,
            "password": CUSTOMERIO_API_KEY,
        },
    }
    if warehouse_path is not None:
        # Read-only: the syncs of a run read the file in parallel, and DuckDB lets many processes
        # read a file but only one write it. dbt (cosmos) takes only the path from this connection.
        conns["warehouse"] = {"conn_type": "duckdb", "host": warehouse_path, "extra": {"read_only": True}}
    if history_path is not None:
        conns[HISTORY_CONN_ID] = {"conn_type": "sqlite", "host": history_path}
    return conns


def connection_env(
    urls: Mapping[str, str], *, warehouse_path: str | None = None, history_path: str | None = None
) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` environment variables for ``connections(...)``."""
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)
        for conn_id, fields in connections(urls, warehouse_path=warehouse_path, history_path=history_path).items()
    }


#: The Mailchimp audience the marketing sync writes to.
MAILCHIMP_AUDIENCE = MAILCHIMP_LIST_ID


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--public-host", default=None, help="host name the connections use (default: --host)")
    parser.add_argument("--print-env", action="store_true", help="print the AIRFLOW_CONN_* lines")
    args = parser.parse_args(argv)
    running = start_example_emulators(args.host, fixed_ports=True)
    public = args.public_host or args.host
    for kind, emulator in running.items():
        print(f"{kind} emulator listening on {emulator.url}", flush=True)
    if args.print_env:
        urls = {kind: f"http://{public}:{PORTS[kind]}" for kind in running}
        for name, value in connection_env(urls).items():
            print(f"{name}='{value}'", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_all(running)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
