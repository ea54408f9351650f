"""The destinations the crash suites kill syncs against: upsert, lookup-then-create, two event streams."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from airflow_provider_retl.testing.emulators import (
    BRAZE_API_KEY,
    CUSTOMERIO_API_KEY,
    CUSTOMERIO_SITE_ID,
    DEFAULT_TOKEN,
)

from .crash_support import Scenario

EXTRA = {"rate_limit": 0, "batch_size": 20}


def _versions(make, n1: int = 120, removed: range = range(100, 120), changed: range = range(0, 30), new: int = 40):
    v1 = [make(i, "a") for i in range(n1)]
    v2 = [make(i, "b" if i in changed else "a") for i in range(n1) if i not in removed]
    v2 += [make(i, "a") for i in range(n1, n1 + new)]
    return v1, v2


def _group(items) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for key, dest_id, fields in items:
        found[key].append((dest_id, fields))
    return dict(found)


def hubspot_upsert() -> Scenario:
    """Contacts: native batch upsert by email, mirror mode (deletes too)."""
    v1, v2 = _versions(lambda i, ver: {"email": f"c{i}@example.com", "firstname": f"F{i}{ver}", "lastname": f"L{i}"})
    return Scenario(
        name="hubspot_upsert",
        emulator="hubspot",
        emulator_options={"rate_limit": None},
        hook="hubspot",
        connection=lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": EXTRA},
        config={"sync_id": "crash-contacts", "object": "contacts", "primary_key": "email", "mode": "mirror"},
        key="email",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _group(
            (r["properties"]["email"], r["id"], r["properties"]) for r in emu.records("contacts")
        ),
    )


def hubspot_lookup() -> Scenario:
    """Companies matched on their (non-unique) domain: search lookup, then update or create; mirror."""
    v1, v2 = _versions(lambda i, ver: {"domain": f"d{i}.example.com", "name": f"N{i}{ver}", "city": f"C{i}"})
    return Scenario(
        name="hubspot_lookup",
        emulator="hubspot",
        emulator_options={"rate_limit": None},
        hook="hubspot",
        connection=lambda url: {"conn_type": "retl_hubspot", "host": url, "password": DEFAULT_TOKEN, "extra": EXTRA},
        config={"sync_id": "crash-companies", "object": "companies", "primary_key": "domain", "mode": "mirror",
                "match_on": "domain"},
        key="domain",
        v1=v1,
        v2=v2,
        read_back=lambda emu: _group(
            (r["properties"]["domain"], r["id"], r["properties"]) for r in emu.records("companies")
        ),
    )


def _event_versions(person: str):
    def make(i: int, ver: str) -> dict[str, Any]:
        return {"event_key": f"e{i}", person: f"p{i}", "name": "ordered", "amount": i}

    # Events are only ever inserted: version 2 adds events and changes none.
    return _versions(make, removed=range(0), changed=range(0), new=60)


def _customerio_read_back(emu: Any) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Processed events by key; each must have happened to its row's person (``e<i>`` -> ``p<i>``)."""
    events = emu.events()  # processed only
    wrong = [
        (e["attributes"]["event_key"], e["identifiers"])
        for e in events
        if e["identifiers"] != {"id": "p" + e["attributes"]["event_key"][1:]}
    ]
    assert not wrong, f"events attached to the wrong person: {wrong[:5]}"
    return _group((e["attributes"]["event_key"], e["id"], e["attributes"]) for e in events)


def customerio_events() -> Scenario:
    """Customer.io events: ULID dedupe ids, so every event must be processed exactly once, on its person.

    The person is the ``customer`` column (the connection's ``person_field`` extra, so the
    operator-run crash suite uses it too), never the ``event_key`` primary key.
    """
    v1, v2 = _event_versions("customer")
    return Scenario(
        name="customerio_events",
        emulator="customerio",
        emulator_options={"rate_limit": None},
        hook="customerio",
        connection=lambda url: {
            "conn_type": "retl_customerio",
            "host": url,
            "login": CUSTOMERIO_SITE_ID,
            "password": CUSTOMERIO_API_KEY,
            "extra": {**EXTRA, "person_field": "customer"},
        },
        config={"sync_id": "crash-cio-events", "object": "events", "primary_key": "event_key", "mode": "insert"},
        key="event_key",
        v1=v1,
        v2=v2,
        events=True,
        read_back=_customerio_read_back,
    )


def braze_events() -> Scenario:
    """Braze events: no dedupe id. At most once; an event whose answer was lost is reported in doubt."""
    v1, v2 = _event_versions("external_id")
    return Scenario(
        name="braze_events",
        emulator="braze",
        emulator_options={"rate_limit": None, "export_rate_limit": None},
        hook="braze",
        connection=lambda url: {"conn_type": "retl_braze", "host": url, "password": BRAZE_API_KEY, "extra": EXTRA},
        config={"sync_id": "crash-braze-events", "object": "events", "primary_key": "event_key", "mode": "insert"},
        key="event_key",
        v1=v1,
        v2=v2,
        events=True,
        at_most_once=True,
        read_back=lambda emu: _group(
            (e["properties"]["event_key"], e["name"], e["properties"]) for e in emu.events()  # every delivery
        ),
    )
