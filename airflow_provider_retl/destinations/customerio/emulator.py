"""A local emulator of the Customer.io Track API (people and events of one workspace).

Same paths, auth, JSON shapes, limits and error documents, as far as Customer.io's own
OpenAPI document of the Track API, its official Python SDK (``customerio``) and the
answers quoted by integrations built on it (Segment's Customer.io destination) show them:

- Auth: HTTP basic auth, the workspace's *Site ID* as user name and its Track API key as
  password; anything else is 401.
- ``POST /api/v2/batch`` takes ``{"batch": [entity operation, ...]}`` and ``POST /api/v2/entity``
  one operation (under 32 KB; refused with 400 ``{"errors": [...]}``). A person operation is
  ``{"type": "person", "identifiers": {"id" | "email" | "cio_id": ...}, "action": ...}``
  with ``action`` ``identify`` (``attributes``; an upsert, ``attributes._update: true``
  only updates), ``delete``, ``event`` / ``page`` / ``screen`` (``name``, optional ``id``,
  ``timestamp``, ``attributes``), ``suppress`` / ``unsuppress``. The request must be under
  500 KB (else 400 for the whole batch) and each operation at most 32 KB. Answers: 200
  ``{}`` when every operation was accepted; 207 ``{"errors": [{"batch_index", "reason",
  "field", "message"}]}`` when some were refused (the others are applied); 400
  ``{"errors": [...]}`` when the request as a whole is malformed.
- Operations are checked against the document's schemas (``person_common``,
  ``identify_person``, ``person_event``): ``type`` and ``identifiers`` required, exactly one
  identifier whose value is a string, ``action`` required, an event's ``name`` required,
  ``timestamp`` an integer, ``id`` a ULID string, ``attributes`` an object whose
  ``recipient``/``from_address``/``reply_to`` are emails, ``_update`` a boolean. An event
  attaches to the person its ``identifiers`` name (created when unknown, except by cio_id).
- An event's ``id`` is a ULID that Customer.io uses to deduplicate: an event whose id was
  already received is accepted (no error) and ignored. The emulator keeps every received
  event, duplicates included (``duplicate: true``), and counts them in ``duplicate_events``.
- The v1 routes the official SDK uses: ``PUT /api/v1/customers/{identifier}`` (identify),
  ``DELETE /api/v1/customers/{identifier}``, ``POST /api/v1/customers/{identifier}/events``
  (``name``, ``data``, ``id``, ``timestamp``, ``type``), plus ``GET /api/v1/accounts/region``
  (``url``, ``region``, ``environment_id``: the cheap authenticated call). A v1 path
  identifier is a ``cio_id`` with the ``cio_`` prefix, an email when it contains ``@``,
  else an ``id``. v1 errors are ``{"meta": {"errors": [...]}}``.
- Documented limits enforced per operation: id at most 150 bytes, attribute names at most
  150 bytes, attribute values at most 1000 bytes, at most 300 attributes per identify, event
  names at most 100 bytes, event data at most 100,000 bytes.
- Rate limit: the emulator answers 429 above ``rate_limit`` requests per ``rate_window``
  seconds per workspace (default 100/s, the figure older docs gave; current docs say 1000/s,
  "not strictly enforced").

Guesses (not found in the documentation, kept plausible): the wording and ``reason`` codes
of item errors (``required``, ``invalid``, ``too_large``, ``not_found``, ``unsupported``),
the bodies of 401/429 (``{"meta": {"errors": [...]}}``) and whether a 429 carries
``Retry-After`` (here: yes); 400 (not 413) for a request over 500 KB; emails matched without
regard to case; an event for an unknown person creates that person; ``null`` or ``""``
removes an attribute; a duplicate event id is ignored whatever its person or name.
Objects, deliveries, devices, relationships and merges are not emulated (an operation of
those kinds gets an ``unsupported`` item error).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_retl.testing.emulators.base import ASGIApp, BaseEmulator, Receive, Scope, Send, json_response
from airflow_provider_retl.testing.emulators.connection import drain_request_body
from airflow_provider_retl.testing.emulators.faults import Faults
from airflow_provider_retl.testing.emulators.ratelimit import RollingWindowLimiter, RollingWindowRateLimited

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SITE_ID",
    "MAX_ITEM_BYTES",
    "MAX_REQUEST_BYTES",
    "CustomerIoEmulator",
    "is_ulid",
]

DEFAULT_SITE_ID = "0123456789abcdef0123"
DEFAULT_API_KEY = "fedcba9876543210fedc"
#: "Your batch request must be smaller than 500kb. Each of the requests within the batch must
#: also be 32kb or smaller." (binary kilobytes here; the hook stays below the decimal figures).
MAX_REQUEST_BYTES = 500 * 1024
MAX_ITEM_BYTES = 32 * 1024
MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_ATTRIBUTES = 300
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
REGIONS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
IDENTIFIER_KINDS = ("id", "email", "cio_id")
EVENT_ACTIONS = ("event", "page", "screen")

_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", re.IGNORECASE)
_NOT_EMULATED = (
    "add_relationships",
    "delete_relationships",
    "add_device",
    "delete_device",
    "merge",
)


def is_ulid(value: Any) -> bool:
    """True for a 26-character Crockford base32 ULID (case-insensitive)."""
    return isinstance(value, str) and _ULID.match(value) is not None


def _bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return len(orjson.dumps(value))


class _ItemError(Exception):
    """One operation refused: becomes an ``errors[]`` item (v2) or a 400 (v1)."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def as_json(self, index: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {} if index is None else {"batch_index": index}
        body.update({"reason": self.reason, "field": self.field, "message": self.message})
        return body


@dataclass
class _Person:
    cio_id: str
    id: str | None = None
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    suppressed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "cio_id": self.cio_id,
            "id": self.id,
            "email": self.email,
            "attributes": dict(self.attributes),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "suppressed": self.suppressed,
        }


def meta_errors(status: int, *messages: str, headers: Mapping[str, str] | None = None) -> Response:
    """The v1-style error document ``{"meta": {"errors": [...]}}``."""
    return json_response(status, {"meta": {"errors": list(messages)}}, headers)


class CustomerIoEmulator(RollingWindowRateLimited, BaseEmulator):
    """State and FastAPI app of a Customer.io Track API emulator (``start_emulator("customerio")``).

    ``credentials``: ``{site_id: track_api_key}`` accepted (one workspace; default the
    ``DEFAULT_SITE_ID``/``DEFAULT_API_KEY`` pair); ``any_credentials`` accepts any non-empty
    pair instead. ``identifiers``: person identifier kinds the workspace allows
    (``id``, ``email``; ``cio_id`` always works for existing people). ``region``: ``us`` or
    ``eu`` (what ``/api/v1/accounts/region`` reports). ``rate_limit``/``rate_window``:
    requests per rolling window per workspace before 429 (``None`` disables).
    """

    kind = "customerio"

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        *,
        any_credentials: bool = False,
        identifiers: Iterable[str] = ("id", "email"),
        region: str = "us",
        environment_id: int = 101,
        rate_limit: int | None = 100,
        rate_window: float = 1.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_item_bytes: int = MAX_ITEM_BYTES,
        faults: Faults | None = None,
        keep_requests: int = 1000,
    ) -> None:
        if region not in REGIONS:
            raise ValueError(f"region must be one of {', '.join(REGIONS)}; got {region!r}")
        self.credentials: dict[str, str] = (
            {DEFAULT_SITE_ID: DEFAULT_API_KEY} if credentials is None else dict(credentials)
        )
        self.any_credentials = any_credentials
        self.identifiers = tuple(identifiers)
        self.region = region
        self.environment_id = environment_id
        self.max_request_bytes = max_request_bytes
        self.max_item_bytes = max_item_bytes
        self.limiter = RollingWindowLimiter(rate_limit, rate_window)
        self._people: dict[str, _Person] = {}
        self._by_id: dict[str, str] = {}
        self._by_email: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()
        self._deleted: list[dict[str, Any]] = []
        self._seq = itertools.count(1)
        self.stats: Counter[str] = Counter()
        super().__init__(faults=faults, keep_requests=keep_requests)

    # -- Python inspection API -----------------------------------------------------------

    def people(self) -> list[dict[str, Any]]:
        """Stored people (``cio_id``, ``id``, ``email``, ``attributes`` ...), oldest first."""
        with self.lock:
            return [p.as_json() for p in self._people.values()]

    def person(
        self, id: str | None = None, *, email: str | None = None, cio_id: str | None = None
    ) -> dict[str, Any] | None:
        """One person by id, email (any case) or cio_id; None when there is none."""
        given = [(k, v) for k, v in (("id", id), ("email", email), ("cio_id", cio_id)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of id, email, cio_id")
        with self.lock:
            found = self._find(given[0][0], str(given[0][1]))
            return None if found is None else found.as_json()

    def events(self, *, include_duplicates: bool = False, name: str | None = None) -> list[dict[str, Any]]:
        """Events in the order received: processed ones, or every one received (``include_duplicates``)."""
        with self.lock:
            return [
                dict(e)
                for e in self._events
                if (include_duplicates or not e["duplicate"]) and (name is None or e["name"] == name)
            ]

    @property
    def duplicate_events(self) -> int:
        """Events received with an id seen before, and ignored."""
        with self.lock:
            return sum(1 for e in self._events if e["duplicate"])

    @property
    def deleted(self) -> list[dict[str, Any]]:
        """People deleted so far (their identifiers at the time), in order."""
        with self.lock:
            return [dict(d) for d in self._deleted]

    def seed(self, people: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store people directly (``{"id": ..., "email": ..., **attributes}``); returns their cio_ids."""
        ids = []
        with self.lock:
            for spec in people:
                attributes = {k: v for k, v in spec.items() if k not in ("id", "cio_id")}
                person = self._create(str(spec["id"]) if spec.get("id") is not None else None, spec.get("email"))
                self._set_attributes(person, attributes)
                ids.append(person.cio_id)
        return ids

    def state(self) -> dict[str, Any]:
        """People, events and counters, for ``GET /_emulator/state``."""
        with self.lock:
            return {
                "region": self.region,
                "environment_id": self.environment_id,
                "people": [p.as_json() for p in self._people.values()],
                "events": [dict(e) for e in self._events],
                "duplicate_events": sum(1 for e in self._events if e["duplicate"]),
                "deleted": [dict(d) for d in self._deleted],
                "stats": dict(self.stats),
            }

    def reset_state(self) -> None:
        """Forget people, events, processed event ids, counters and rate-limit windows."""
        with self.lock:
            self._people.clear()
            self._by_id.clear()
            self._by_email.clear()
            self._events.clear()
            self._event_ids.clear()
            self._deleted.clear()
            self.stats.clear()
            self.limiter.reset()

    def workspace_for(self, authorization: str) -> str | None:
        """The site id of a valid ``Authorization: Basic`` header value, else None."""
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "basic" or not credentials.strip():
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        site_id, sep, api_key = decoded.partition(":")
        if not sep or not site_id or not api_key:
            return None
        if self.any_credentials:
            return site_id
        return site_id if self.credentials.get(site_id) == api_key else None

    # -- faults in Customer.io's shapes --------------------------------------------------

    def fault_error_body(self, status: int) -> dict[str, Any]:
        return {"meta": {"errors": ["internal server error"]}}

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        return {"meta": {"errors": ["rate limit exceeded"]}}, {}

    # -- the API app ---------------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        app = FastAPI(title="Customer.io Track API emulator", openapi_url=None, docs_url=None, redoc_url=None)

        async def on_http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, StarletteHTTPException)
            if exc.status_code == 405:
                return meta_errors(405, "method not allowed")
            return meta_errors(404, "not found")

        app.add_exception_handler(StarletteHTTPException, on_http_error)

        @app.get("/api/v1/accounts/region")
        async def region() -> Response:
            return json_response(
                200, {"url": REGIONS[self.region], "region": self.region, "environment_id": self.environment_id}
            )

        @app.post("/api/v2/batch")
        async def batch(request: Request) -> Response:
            raw = await request.body()
            if len(raw) >= self.max_request_bytes:
                self.stats["batches_refused"] += 1
                return _batch_error(
                    "too_large", "batch", f"request body is {len(raw):,} bytes; batches must be smaller than 500kb"
                )
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return _batch_error("invalid", "", "request body is not valid JSON")
            items = body.get("batch") if isinstance(body, dict) else None
            if not isinstance(items, list):
                return _batch_error("required", "batch", "batch is required and must be an array")
            errors = []
            with self.lock:
                self.stats["batches"] += 1
                for index, item in enumerate(items):
                    self.stats["operations"] += 1
                    try:
                        self._apply_operation(item)
                    except _ItemError as exc:
                        self.stats["operations_refused"] += 1
                        errors.append(exc.as_json(index))
            if errors:
                return json_response(207, {"errors": errors})
            return json_response(200, {})

        @app.post("/api/v2/entity")
        async def entity(request: Request) -> Response:
            # One operation: "Your request must be smaller than 32kb"; a refusal is a 400 {"errors": [...]}.
            raw = await request.body()
            if len(raw) >= self.max_item_bytes:
                return _batch_error(
                    "too_large", "", f"request body is {len(raw):,} bytes; it must be smaller than 32kb"
                )
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return _batch_error("invalid", "", "request body is not valid JSON")
            with self.lock:
                self.stats["operations"] += 1
                try:
                    self._apply_operation(item)
                except _ItemError as exc:
                    self.stats["operations_refused"] += 1
                    return json_response(400, {"errors": [exc.as_json()]})
            return json_response(200, {})

        @app.put("/api/v1/customers/{identifier}")
        async def identify(identifier: str, request: Request) -> Response:
            body = await _v1_json(request)
            if isinstance(body, Response):
                return body
            with self.lock:
                try:
                    kind, value = self._path_identifier(identifier)
                    self._identify(kind, value, body, source="v1")
                except _ItemError as exc:
                    return meta_errors(400, exc.message)
            return json_response(200, {})

        @app.delete("/api/v1/customers/{identifier}")
        async def delete(identifier: str) -> Response:
            with self.lock:
                try:
                    kind, value = self._path_identifier(identifier)
                except _ItemError as exc:
                    return meta_errors(400, exc.message)
                self._delete(kind, value)
            return json_response(200, {})

        @app.post("/api/v1/customers/{identifier}/events")
        async def track(identifier: str, request: Request) -> Response:
            body = await _v1_json(request)
            if isinstance(body, Response):
                return body
            with self.lock:
                try:
                    kind, value = self._path_identifier(identifier)
                    data = body.get("data")
                    if data is not None and not isinstance(data, dict):
                        raise _ItemError("invalid", "data", "data must be an object")
                    etype = body.get("type") or "event"
                    if etype not in EVENT_ACTIONS:
                        raise _ItemError("invalid", "type", f"type must be one of {', '.join(EVENT_ACTIONS)}")
                    self._event(
                        kind,
                        value,
                        etype,
                        body.get("name"),
                        body.get("id"),
                        body.get("timestamp"),
                        data or {},
                        source="v1",
                    )
                except _ItemError as exc:
                    return meta_errors(400, exc.message)
            return json_response(200, {})

        return _AuthAndRateLimit(app, self)

    # -- operations (hold self.lock) -----------------------------------------------------

    def _apply_operation(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise _ItemError("invalid", "", "each batch entry must be an object")
        size = len(orjson.dumps(item))
        if size > self.max_item_bytes:
            raise _ItemError("too_large", "", f"operation is {size:,} bytes; each must be 32kb or smaller")
        entity = item.get("type")
        if entity != "person":
            if entity in ("object", "delivery"):
                raise _ItemError("unsupported", "type", f"{entity} operations are not emulated")
            raise _ItemError("invalid", "type", "type must be one of person, object, delivery")
        action = item.get("action")
        if not isinstance(action, str) or not action:
            raise _ItemError("required", "action", "action is required")
        kind, value = self._identifiers(item.get("identifiers"))
        if action == "identify":
            attributes = item.get("attributes") or {}
            if not isinstance(attributes, dict):
                raise _ItemError("invalid", "attributes", "attributes must be an object")
            if "_update" in attributes and not isinstance(attributes["_update"], bool):
                raise _ItemError("invalid", "attributes._update", "_update must be a boolean")
            stamp = item.get("timestamp")
            if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int)):
                raise _ItemError("invalid", "timestamp", "timestamp must be an integer unix timestamp (seconds)")
            self._identify(kind, value, attributes, source="v2")
        elif action == "delete":
            self._delete(kind, value)
        elif action in EVENT_ACTIONS:
            data = item.get("attributes") or {}
            if not isinstance(data, dict):
                raise _ItemError("invalid", "attributes", "attributes must be an object")
            self._event(kind, value, action, item.get("name"), item.get("id"), item.get("timestamp"), data, source="v2")
        elif action in ("suppress", "unsuppress"):
            person = self._find(kind, value)
            if person is None:
                raise _ItemError("not_found", "identifiers", "no person matches the identifiers")
            person.suppressed = action == "suppress"
            person.updated_at = int(time.time())
        elif action in _NOT_EMULATED:
            raise _ItemError("unsupported", "action", f"action {action!r} is not emulated")
        else:
            raise _ItemError("invalid", "action", f"unknown action {action!r}")

    def _identifiers(self, identifiers: Any) -> tuple[str, str]:
        if not isinstance(identifiers, dict) or not identifiers:
            raise _ItemError("required", "identifiers", "identifiers is required (one of id, email, cio_id)")
        given = [(k, v) for k, v in identifiers.items() if v not in (None, "")]
        if len(given) != 1 or len(identifiers) != 1:
            raise _ItemError("invalid", "identifiers", "identifiers must hold exactly one of id, email, cio_id")
        kind, value = given[0]
        if kind not in IDENTIFIER_KINDS and kind != "phone":
            raise _ItemError("invalid", "identifiers", f"unknown identifier {kind!r}")
        if kind != "cio_id" and kind not in self.identifiers:
            raise _ItemError("invalid", f"identifiers.{kind}", f"{kind} is not an identifier in this workspace")
        # person_common.identifiers: every identifier is "type": "string" in the document.
        if not isinstance(value, str):
            raise _ItemError("invalid", f"identifiers.{kind}", f"{kind} must be a string")
        text = str(value)
        if kind == "id" and _bytes(text) > MAX_ID_BYTES:
            raise _ItemError("invalid", "identifiers.id", f"id is longer than {MAX_ID_BYTES} bytes")
        if kind == "email" and "@" not in text:
            raise _ItemError("invalid", "identifiers.email", f"{text!r} is not an email address")
        return kind, text

    def _path_identifier(self, identifier: str) -> tuple[str, str]:
        if identifier.startswith("cio_"):
            return "cio_id", identifier[4:]
        if "@" in identifier and "email" in self.identifiers:
            return "email", identifier
        if _bytes(identifier) > MAX_ID_BYTES:
            raise _ItemError("invalid", "id", f"id is longer than {MAX_ID_BYTES} bytes")
        return "id", identifier

    def _find(self, kind: str, value: str) -> _Person | None:
        if kind == "cio_id":
            return self._people.get(value)
        if kind == "email":
            cio_id = self._by_email.get(value.strip().lower())
        else:
            cio_id = self._by_id.get(value)
        return self._people.get(cio_id) if cio_id is not None else None

    def _create(self, id: str | None, email: str | None) -> _Person:
        now = int(time.time())
        person = _Person(cio_id=f"{0x3000000 + next(self._seq):08x}", created_at=now, updated_at=now)
        self._people[person.cio_id] = person
        if id is not None:
            person.id = id
            self._by_id[id] = person.cio_id
        if email:
            self._set_email(person, email)
        self.stats["people_created"] += 1
        return person

    def _set_email(self, person: _Person, email: str | None) -> None:
        if person.email:
            self._by_email.pop(person.email.strip().lower(), None)
        person.email = email or None
        if email:
            self._by_email[email.strip().lower()] = person.cio_id
            person.attributes["email"] = email
        else:
            person.attributes.pop("email", None)

    def _check_attributes(self, attributes: Mapping[str, Any]) -> None:
        if len(attributes) > MAX_ATTRIBUTES:
            raise _ItemError("invalid", "attributes", f"at most {MAX_ATTRIBUTES} attributes per call")
        for name, value in attributes.items():
            if _bytes(name) > MAX_ATTRIBUTE_NAME_BYTES:
                raise _ItemError("invalid", f"attributes.{name[:40]}", "Attribute name too long")
            if value is not None and _bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES:
                raise _ItemError("invalid", f"attributes.{name}", "Attribute value too long")

    def _identify(self, kind: str, value: str, attributes: Mapping[str, Any], *, source: str) -> None:
        self._check_attributes(attributes)
        new_id = attributes.get("id")
        if new_id not in (None, "") and kind != "id":
            owner = self._by_id.get(str(new_id))
            current = self._find(kind, value)
            if owner is not None and (current is None or owner != current.cio_id):
                raise _ItemError("invalid", "attributes.id", f"id {new_id!r} belongs to another person")
        person = self._find(kind, value)
        if person is None:
            if attributes.get("_update") is True:
                self.stats["updates_without_person"] += 1
                return  # "_update: true": never creates a person
            if kind == "cio_id":
                raise _ItemError("not_found", "identifiers.cio_id", "no person has this cio_id")
            person = self._create(value if kind == "id" else None, value if kind == "email" else None)
        self._set_attributes(person, attributes)
        self.stats[f"identify_{source}"] += 1

    def _set_attributes(self, person: _Person, attributes: Mapping[str, Any]) -> None:
        for name, value in attributes.items():
            if name in ("_update", "_timestamp", "cio_id"):
                continue
            if name == "id":
                if value not in (None, "") and person.id is None:
                    person.id = str(value)
                    self._by_id[person.id] = person.cio_id
                continue
            if name == "email":
                self._set_email(person, None if value in (None, "") else str(value))
                continue
            if value is None or value == "":
                person.attributes.pop(name, None)  # an empty value removes the attribute
            else:
                person.attributes[name] = value
        person.updated_at = int(time.time())

    def _delete(self, kind: str, value: str) -> None:
        person = self._find(kind, value)
        self.stats["deletes"] += 1
        if person is None:
            return  # deleting someone who is not there is not an error
        del self._people[person.cio_id]
        if person.id is not None:
            self._by_id.pop(person.id, None)
        if person.email:
            self._by_email.pop(person.email.strip().lower(), None)
        self._deleted.append({"cio_id": person.cio_id, "id": person.id, "email": person.email})

    def _event(
        self,
        kind: str,
        value: str,
        etype: str,
        name: Any,
        event_id: Any,
        timestamp: Any,
        data: Mapping[str, Any],
        *,
        source: str,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise _ItemError("required", "name", "Name is required")
        name = name.strip()
        if _bytes(name) > MAX_EVENT_NAME_BYTES:
            raise _ItemError("invalid", "name", f"event name is longer than {MAX_EVENT_NAME_BYTES} bytes")
        if event_id is not None and not is_ulid(event_id):
            raise _ItemError("invalid", "id", "id must be a valid ULID")
        # person_event.timestamp and eventsRequest.timestamp are "type": "integer" (unix seconds).
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
            raise _ItemError("invalid", "timestamp", "timestamp must be an integer unix timestamp (seconds)")
        if event_id is not None and not isinstance(event_id, str):
            raise _ItemError("invalid", "id", "id must be a string (a ULID)")
        for reserved in ("recipient", "from_address", "reply_to"):  # "format": "email" in the document
            address = data.get(reserved)
            if address is not None and (not isinstance(address, str) or "@" not in address):
                raise _ItemError("invalid", f"attributes.{reserved}", f"{reserved} must be an email address")
        if _bytes(data) > MAX_EVENT_DATA_BYTES:
            raise _ItemError("too_large", "attributes", f"event data is larger than {MAX_EVENT_DATA_BYTES:,} bytes")
        person = self._find(kind, value)
        if person is None:
            if kind == "cio_id":
                raise _ItemError("not_found", "identifiers.cio_id", "no person has this cio_id")
            person = self._create(value if kind == "id" else None, value if kind == "email" else None)
        dedupe_key = event_id.upper() if isinstance(event_id, str) else None
        duplicate = dedupe_key is not None and dedupe_key in self._event_ids
        if dedupe_key is not None:
            self._event_ids.add(dedupe_key)
        self._events.append(
            {
                "type": etype,
                "name": name,
                "id": event_id,
                "timestamp": timestamp,
                "attributes": dict(data),
                "person": person.cio_id,
                "identifiers": {kind: value},
                "received_at": time.time(),
                "via": source,
                "duplicate": duplicate,
            }
        )
        self.stats["events_duplicate" if duplicate else "events_processed"] += 1


def _batch_error(reason: str, field: str, message: str) -> Response:
    return json_response(400, {"errors": [{"reason": reason, "field": field, "message": message}]})


async def _v1_json(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return meta_errors(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return meta_errors(400, "request body must be a JSON object")
    return body


class _AuthAndRateLimit:
    """ASGI layer in front of the routes: basic auth, then the per-workspace rate limit."""

    def __init__(self, app: ASGIApp, emulator: CustomerIoEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        workspace = self.emulator.workspace_for(headers.get(b"authorization", b"").decode("latin-1"))
        if workspace is None:
            await drain_request_body(receive)
            await meta_errors(401, "Unauthorized request")(scope, receive, send)
            return
        decision = self.emulator.limiter.acquire(workspace)
        if not decision.allowed:
            await drain_request_body(receive)
            response = meta_errors(429, "rate limit exceeded", headers={"Retry-After": decision.retry_after_header})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
