"""Braze user attributes, custom events and purchases over ``/users/track``.

How the real API behaves, and what this hook does about it:

* ``/users/track`` always upserts: an attributes object for an unknown
  ``external_id`` creates the user. ``update`` sends ``_update_existing_only:
  true`` so it never creates one; Braze then skips unknown users *silently* (the
  answer does not say which), so such records count as updated.
* Modes for ``users``: there is no lookup (``needs_lookup`` is False), so ``upsert``
  and ``mirror`` send every new or changed row as an upsert; ``update`` mode updates
  rows whose user an earlier run synced and skips keys it never sent; ``insert``
  mode upserts keys new to the sync (Braze has no create-only call).
* Event rows: ``external_id`` names the user; the name is the ``event_name``
  parameter, else a ``name`` column; the time is the ``event_time_field`` column,
  else a ``time`` column, else now; every other non-NULL field becomes a property
  (purchases also take ``product_id``, ``currency``, ``price``, ``quantity``).
* At most 75 objects per array per call (``batch_size`` 50 for accounts on the
  "Monthly Active Users CY 24-25" plans, which allow 50 across arrays). Invalid
  objects are skipped and listed in ``errors[]`` by ``input_array`` + ``index``;
  the rest are applied (201). A call in which no object is valid is a 400 with
  the same ``errors[]``. Both become per-record outcomes. A 202 ``queued``
  (maintenance) means accepted: Braze applies it later.
* Braze has **no idempotency key for events or purchases**: each object is a new
  occurrence. Events are therefore sent with ``idempotent=False`` (a lost answer
  or a 5xx is never retried blindly), and ``reconcile_events`` answers only what
  ``/users/export/ids`` can prove: an event did *not* land when its user does not
  exist or has no event (or purchase of the product) of that name at all. Whether
  one more occurrence of an event the user already has landed cannot be told
  (the export only counts per name): those are ``None``, reported as in doubt
  and never re-sent. Braze processes ``/users/track`` asynchronously (usually in
  well under a second; Braze advises up to 5 minutes between dependent calls),
  so keep the task's ``retry_delay`` at its default of minutes, or turn the check
  off with ``reconcile_events: false`` (every in-doubt event is then reported).
* Mirror mode deletes users for good (``/users/delete``, 50 external ids a call);
  it is refused unless ``allow_delete`` is set in the extras or hook params.
* Rate limit: 3,000 requests per 3 s on ``/users/track``. A 429 carries
  ``X-RateLimit-Reset`` (epoch seconds), not ``Retry-After``: the wait comes from it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from airflow_provider_retl.destinations.braze.spec import SPEC
from airflow_provider_retl.hooks.destination import DestinationHook, chunked
from airflow_provider_retl.sync import validate as validators
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
    RetryableDestinationError,
)
from airflow_provider_retl.sync.records import Outcome, Record

__all__ = ["BrazeHook"]

USERS, EVENTS, PURCHASES = "users", "events", "purchases"
_OBJECTS = {
    "users": USERS,
    "user": USERS,
    "attributes": USERS,
    "events": EVENTS,
    "event": EVENTS,
    "custom_events": EVENTS,
    "purchases": PURCHASES,
    "purchase": PURCHASES,
}
#: The /users/track array each object is sent in.
_ARRAY = {USERS: "attributes", EVENTS: "events", PURCHASES: "purchases"}

#: External ids per /users/delete and /users/export/ids call.
IDS_PER_CALL = 50
#: Longest event property string and property name Braze keeps.
MAX_PROPERTY_CHARS = 255

_SUBSCRIPTION_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
_GENDERS = frozenset({"M", "F", "O", "N", "P"})
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COLON_MILLIS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}):(\d{3})([+-]\d{2}:?\d{2}|Z)$")
#: Fields of an event or purchase row that are not properties.
_EVENT_KEYS = frozenset({"external_id", "app_id", "_update_existing_only"})
_PURCHASE_KEYS = frozenset({"product_id", "currency", "price", "quantity"})


def braze_time(value: Any) -> str:
    """An ISO 8601 UTC time Braze accepts (``...T10:00:00.000Z``); no offset means UTC.

    Raises ``ValueError`` for anything that is not a date-time.
    """
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        colon = _COLON_MILLIS.match(text)
        if colon:
            text = f"{colon.group(1)}.{colon.group(2)}{colon.group(3)}"
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    else:
        raise ValueError(f"{value!r} is not a date-time")
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class BrazeHook(DestinationHook):
    """Braze ``users`` (attributes), ``events`` (custom events) and ``purchases``.

    :param braze_conn_id: connection with the REST API key in ``password`` and the
        instance's REST endpoint in ``host`` (e.g. ``https://rest.iad-01.braze.com``).
    :param allow_delete: let mirror mode delete users that left the query (for good).
    :param reconcile_events: check ``/users/export/ids`` before re-sending events of an
        interrupted try (default True; False reports every such event as in doubt).
    """

    spec = SPEC

    def __init__(
        self,
        braze_conn_id: str = SPEC.default_conn_name,
        *,
        allow_delete: bool | None = None,
        reconcile_events: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(braze_conn_id, **kwargs)
        mine = {"allow_delete": allow_delete, "reconcile_events": reconcile_events}
        self._options.update({k: v for k, v in mine.items() if v is not None})
        self.allow_delete = False
        self.reconcile_with_export = True

    def _configure_base_url(self, conn: Any) -> None:
        if not (conn.host or "").strip():
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r} has no host: put your Braze instance's REST endpoint "
                "in it (e.g. https://rest.iad-01.braze.com; see Settings > APIs and Identifiers)"
            )
        super()._configure_base_url(conn)

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        super()._configure_from_extra(session, extra)
        self.allow_delete = self.knob(extra, "allow_delete")
        self.reconcile_with_export = self.knob(extra, "reconcile_events")

    # ------------------------------------------------------------------ capabilities

    def kind(self, object: str) -> str:
        """``users``, ``events`` or ``purchases`` for ``object`` (a few spellings are accepted)."""
        kind = _OBJECTS.get(str(object).strip().lower())
        if kind is None:
            raise ConfigurationError(
                f"Braze has no object {object!r}; use 'users' (attributes), 'events' (custom events) or 'purchases'"
            )
        return kind

    def supports_delete(self, object: str) -> bool:
        if self.kind(object) != USERS:
            return False
        self.get_conn()
        if not self.allow_delete:
            self.log.warning(
                "Braze deletes users permanently (with their history); mirror mode needs allow_delete=true "
                "in the connection extras or destination_params"
            )
        return self.allow_delete

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Checks Braze would fail the object for, with the field to blame."""
        kind = self.kind(object)
        problems: list[tuple[str | None, str]] = []
        external_id = fields.get("external_id")
        if external_id is None or (isinstance(external_id, str) and not external_id.strip()):
            problems.append(("external_id", "external_id is required: Braze identifies users by it"))
        elif not isinstance(external_id, str | int) or isinstance(external_id, bool):
            problems.append(("external_id", f"external_id must be text, got {type(external_id).__name__}"))
        if kind == USERS:
            problems += self._attribute_problems(fields)
        else:
            problems += self._event_problems(kind, fields)
        return problems

    @staticmethod
    def _attribute_problems(fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        problems: list[tuple[str | None, str]] = []
        reason = validators.email(fields.get("email"))
        if reason:
            problems.append(("email", reason))
        gender = fields.get("gender")
        if gender is not None and str(gender).upper() not in _GENDERS:
            problems.append(("gender", f"gender must be one of M, F, O, N, P or empty; got {gender!r}"))
        for name in ("email_subscribe", "push_subscribe"):
            value = fields.get(name)
            if value is not None and value not in _SUBSCRIPTION_STATES:
                problems.append((name, f"{name} must be opted_in, subscribed or unsubscribed; got {value!r}"))
        dob = fields.get("dob")
        if dob is not None and not (isinstance(dob, str) and _DOB.match(dob[:10])):
            problems.append(("dob", f"dob must be a date (YYYY-MM-DD); got {dob!r}"))
        for name in fields:
            if not name or name.startswith("$") or len(name) > MAX_PROPERTY_CHARS:
                problems.append((name, "attribute names must be 1-255 characters without a leading '$'"))
        return problems

    def _event_problems(self, kind: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        problems: list[tuple[str | None, str]] = []
        if kind == EVENTS and not self.event_name:
            name = fields.get("name")
            if not isinstance(name, str) or not name.strip():
                problems.append(("name", "no event name: set event_name, or send a 'name' column"))
        if kind == PURCHASES:
            product = fields.get("product_id")
            if not isinstance(product, str) or not product or len(product) > MAX_PROPERTY_CHARS:
                problems.append(("product_id", "product_id is required (text of at most 255 characters)"))
            currency = fields.get("currency")
            if not isinstance(currency, str) or not _CURRENCY.match(currency):
                problems.append(("currency", f"currency must be an ISO 4217 code like 'USD'; got {currency!r}"))
            price = fields.get("price")
            if isinstance(price, bool) or not isinstance(price, int | float | str) or not _is_number(price):
                problems.append(("price", f"price must be a number; got {price!r}"))
            quantity = fields.get("quantity")
            if quantity is not None and not (_is_whole(quantity) and 1 <= int(float(quantity)) <= 100):
                problems.append(("quantity", f"quantity must be a whole number from 1 to 100; got {quantity!r}"))
        time_field = self.event_time_field or "time"
        if self.event_time_field and fields.get(time_field) is None:
            problems.append((time_field, f"no time in {time_field!r} (event_time_field)"))
        elif fields.get(time_field) is not None:
            try:
                braze_time(fields[time_field])
            except ValueError as exc:
                problems.append((time_field, str(exc)))
        for name, value in self._properties(kind, fields).items():
            if not name or name.startswith("$") or len(name) > MAX_PROPERTY_CHARS:
                problems.append((name, "property names must be 1-255 characters without a leading '$'"))
            elif isinstance(value, str) and len(value) > MAX_PROPERTY_CHARS:
                problems.append((name, f"property value is {len(value):,} characters long; Braze keeps 255"))
        return problems

    # ------------------------------------------------------------------ users

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """Attributes through ``/users/track``: creates unknown users; idempotent."""
        self._require_users(object, match_field)
        return self._track_users(records, update_only=False)

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Attributes with ``_update_existing_only``: never creates a user; idempotent."""
        self._require_users(object, None)
        return self._track_users(records, update_only=True)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """``/users/delete`` by external id, 50 a call; idempotent (an unknown id is already gone)."""
        if self.kind(object) != USERS or not self.supports_delete(object):
            raise ConfigurationError("Braze deletes users only when allow_delete is set (deletes are permanent)")
        outcomes: list[Outcome | None] = [None] * len(dest_ids)
        positions = [i for i, dest_id in enumerate(dest_ids) if dest_id not in (None, "")]
        for i in set(range(len(dest_ids))) - set(positions):
            outcomes[i] = Outcome.failure("no external_id known for this user; it cannot be deleted", "NO_ID")
        # /users/delete takes at most IDS_PER_CALL (50) external ids, fewer than a /users/track batch (75).
        for part in chunked(positions, IDS_PER_CALL):
            ids = list(dict.fromkeys(str(dest_ids[i]) for i in part))
            self.request("POST", "/users/delete", json={"external_ids": ids}, idempotent=True)
            for i in part:
                outcomes[i] = Outcome.success(str(dest_ids[i]))
        return [o for o in outcomes if o is not None]

    def _require_users(self, object: str, match_field: str | None) -> None:
        if self.kind(object) != USERS:
            raise ConfigurationError(f"Braze {object!r} is an event stream: events are only ever inserted")
        if match_field not in (None, "external_id"):
            raise ConfigurationError(
                f"Braze users are matched by external_id, not {match_field!r}: send the key as 'external_id' "
                "(alias the column in the query, or map it)"
            )

    def _track_users(self, records: Sequence[Record], *, update_only: bool) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(records)
        objects: list[tuple[int, dict[str, Any]]] = []
        for i, record in enumerate(records):
            external_id = _text(record.fields.get("external_id"))
            if update_only and record.dest_id and external_id and external_id != record.dest_id:
                outcomes[i] = Outcome.failure(
                    f"external_id changed from the one synced before ({record.dest_id!r}); /users/track cannot "
                    "rename a user (Braze's /users/external_ids/rename can)",
                    "EXTERNAL_ID_CHANGED",
                )
                continue
            target = record.dest_id if update_only and record.dest_id else external_id
            if not target:
                outcomes[i] = Outcome.failure("external_id is required: Braze identifies users by it", "NO_ID")
                continue
            attributes = {k: v for k, v in record.fields.items() if k != "external_id"}
            body = {"external_id": target, **attributes}
            if update_only:
                body["_update_existing_only"] = True
            objects.append((i, body))
        created = False if update_only else None  # /users/track does not say whether it created the user
        results = self._track("attributes", [body for _, body in objects], True) if objects else []
        for (i, body), outcome in zip(objects, results, strict=True):
            outcomes[i] = Outcome.success(body["external_id"], created=created) if outcome.ok else outcome
        return [o for o in outcomes if o is not None]

    # ------------------------------------------------------------------ events

    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Custom events or purchases through ``/users/track``; NOT idempotent (Braze has no dedupe id)."""
        kind = self.kind(object)
        outcomes: list[Outcome | None] = [None] * len(records)
        objects: list[tuple[int, dict[str, Any]]] = []
        sent_at = braze_time(dt.datetime.now(dt.UTC))
        for i, record in enumerate(records):
            try:
                objects.append((i, self.event_object(kind, record.fields, default_time=sent_at)))
            except ValueError as exc:
                outcomes[i] = Outcome.failure(str(exc), "INVALID_EVENT")
        results = self._track(_ARRAY[kind], [o for _, o in objects], False) if objects else []
        for (i, _), outcome in zip(objects, results, strict=True):
            outcomes[i] = Outcome.success(records[i].event_id) if outcome.ok else outcome
        return [o for o in outcomes if o is not None]

    def event_object(self, kind: str, fields: Mapping[str, Any], *, default_time: str | None = None) -> dict[str, Any]:
        """The /users/track object of one event or purchase row (``ValueError`` when it cannot be built)."""
        external_id = _text(fields.get("external_id"))
        if not external_id:
            raise ValueError("external_id is required: Braze identifies users by it")
        body: dict[str, Any] = {"external_id": external_id}
        if fields.get("app_id") is not None:
            body["app_id"] = str(fields["app_id"])
        if kind == EVENTS:
            name = self.event_name or fields.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError("no event name: set event_name, or send a 'name' column")
            body["name"] = name
        else:
            body["product_id"] = fields.get("product_id")
            body["currency"] = fields.get("currency")
            body["price"] = float(fields["price"]) if isinstance(fields.get("price"), str) else fields.get("price")
            if fields.get("quantity") is not None:
                body["quantity"] = int(float(fields["quantity"]))
        raw_time = fields.get(self.event_time_field or "time")
        if raw_time is None and default_time is None:
            raise ValueError("no event time")
        # Rows without a time are events happening now (Braze requires a time).
        body["time"] = braze_time(raw_time) if raw_time is not None else default_time
        properties = self._properties(kind, fields)
        if properties:
            body["properties"] = properties
        return body

    def _properties(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Every field that is not part of the event object itself; NULLs are left out."""
        consumed = set(_EVENT_KEYS) | {self.event_time_field or "time"}
        if kind == EVENTS and not self.event_name:
            consumed.add("name")
        if kind == PURCHASES:
            consumed |= _PURCHASE_KEYS
        return {k: v for k, v in fields.items() if k not in consumed and v is not None}

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        """False where ``/users/export/ids`` proves the event did not land; None where it cannot tell.

        Never True: the export counts occurrences per event name, so one more occurrence of
        a name the user already has cannot be told from an earlier one (no dedupe id).
        """
        kind = self.kind(object)
        answers: list[bool | None] = [None] * len(records)
        self.get_conn()  # reads the reconcile_events extra
        if not self.reconcile_with_export:
            return answers
        wanted: list[tuple[int, str, str]] = []  # (position, external_id, event name or product id)
        for i, record in enumerate(records):
            try:
                body = self.event_object(kind, record.fields, default_time="")
            except ValueError:
                continue
            wanted.append((i, body["external_id"], body["name"] if kind == EVENTS else str(body["product_id"])))
        summary_field = "custom_events" if kind == EVENTS else "purchases"
        profiles: dict[str, set[str] | None] = {}  # external_id -> names it has (None: no such user)
        external_ids = list(dict.fromkeys(external_id for _, external_id, _ in wanted))
        # /users/export/ids takes at most IDS_PER_CALL (50) external ids, fewer than a /users/track batch (75).
        for part in chunked(external_ids, IDS_PER_CALL):
            response = self.request(
                "POST",
                "/users/export/ids",
                json={"external_ids": list(part), "fields_to_export": ["external_id", summary_field]},
                idempotent=True,
            )
            data = self.response_json(response) or {}
            found = {}
            for user in data.get("users") or []:
                if user.get("external_id") is not None:
                    found[str(user["external_id"])] = {
                        str(entry.get("name")) for entry in user.get(summary_field) or [] if entry.get("count")
                    }
            for external_id in part:
                profiles[external_id] = found.get(external_id)
        for i, external_id, name in wanted:
            names = profiles.get(external_id)
            if names is None or name not in names:
                answers[i] = False  # no such user, or none of its events has this name: it did not land
        return answers

    # ------------------------------------------------------------------ the /users/track call

    def _track(self, array: str, objects: list[dict[str, Any]], idempotent: bool) -> list[Outcome]:
        """One ``/users/track`` call for the engine's batch; one outcome per object, in order."""
        response = self.request("POST", "/users/track", json={array: objects}, idempotent=idempotent, accept=(400,))
        body = self.response_json(response) or {}
        if response.status_code == 202:
            return [Outcome.success() for _ in objects]  # queued during maintenance: Braze applies it later
        failed: dict[int, Outcome] = {}
        errors = body.get("errors") if isinstance(body, Mapping) else None
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, Mapping) or error.get("input_array") not in (array, None):
                continue
            index = error.get("index")
            if isinstance(index, int) and 0 <= index < len(objects):
                reason = self.redact(str(error.get("type") or "invalid object"))
                failed[index] = Outcome.failure(reason, "INVALID_OBJECT")
        if response.status_code == 400:
            if not failed:
                # About the call, not one object (too many inputs, bad JSON): bisect or surface it.
                raise self._error_for(response, idempotent=idempotent, what=f"{self.hook_name} POST /users/track")
            # Every object was refused (Braze answers 400 when none is valid), each with its reason.
            default = Outcome.failure(self.describe_error(response), "INVALID_OBJECT")
            return [failed.get(i, default) for i in range(len(objects))]
        return [failed.get(i, Outcome.success()) for i in range(len(objects))]

    # ------------------------------------------------------------------ errors and the UI test

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        error = super()._error_for(response, idempotent=idempotent, what=what)
        if response.status_code == 429 and isinstance(error, RetryableDestinationError) and error.retry_after is None:
            # Braze says when the window resets (X-RateLimit-Reset, epoch seconds), not how long to wait.
            reset = response.headers.get("X-RateLimit-Reset")
            try:
                error.retry_after = max(0.0, math.ceil(float(reset)) - time.time()) if reset else None
            except ValueError:
                pass
        return error

    def _test_call(self) -> None:
        # An empty /users/track writes nothing: Braze checks the key (401) before it finds no data (400).
        response = self.request("POST", "/users/track", json={"attributes": []}, retry=False, accept=(400,))
        if response.status_code == 400 and "valid data" not in self.describe_error(response).lower():
            raise FatalDestinationError(f"unexpected answer from {self.display_url}: {self.describe_error(response)}")

    def test_connection(self) -> tuple[bool, str]:
        ok, message = super().test_connection()
        if not ok:
            return ok, message
        try:
            self.request(
                "POST",
                "/users/export/ids",
                retry=False,
                json={"external_ids": ["retl-connection-test"], "fields_to_export": ["external_id"]},
            )
        except FatalDestinationError:
            return True, (
                f"{message}; the key cannot read /users/export/ids, so events of an interrupted try "
                "cannot be checked and are reported as in doubt"
            )
        except DestinationError:
            pass
        return ok, message


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _is_number(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number)


def _is_whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number == int(number)
