"""A local emulator of the HubSpot CRM v3 objects and properties API.

Same paths, bearer-token auth, JSON shapes (those of the SDK models in
``hubspot-api-client``: ``SimplePublicObject``, ``BatchResponseSimplePublicObject``,
``BatchResponseSimplePublicUpsertObject``, ``...WithErrors``, ``StandardError``,
``Error``), batch limits, property validation and rate limits.

The rules that shape a client's error handling, as HubSpot applies them:

- A batch create/update/upsert succeeds *partially* only when EVERY input carries
  an ``objectWriteTraceId``: valid inputs are written and the answer is 207 with
  one error per refused input, whose ``context.objectWriteTraceId`` names it.
  Without trace ids one bad input fails the whole batch and nothing is written:
  400 ``VALIDATION_ERROR`` for invalid values, 409 ``CONFLICT`` ("Contact already
  exists. Existing ID: 123") for a taken unique value, 404 ``OBJECT_NOT_FOUND``
  for an update of an unknown id.
- ``batch/read`` answers 207 with an ``OBJECT_NOT_FOUND`` error listing the ids it
  did not find (``context.ids``) next to the found ones.
- At most 100 inputs per batch call; ``batch/archive`` of unknown ids is a no-op 204.
- A rolling window (``TEN_SECONDLY_ROLLING``, 190 requests per 10 s by default)
  per token's account; over it: 429 with ``Retry-After`` and the
  ``X-HubSpot-RateLimit-*`` headers, which every API response carries.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_retl.destinations.hubspot.emulator_schema import (
    PROPERTY_TYPES,
    ObjectTypeDef,
    PropertyDef,
    PropertyError,
    custom_object_type,
    default_object_types,
    format_timestamp,
    normalize_value,
    sort_key,
    validate_properties,
)
from airflow_provider_retl.testing.emulators.base import (
    ASGIApp,
    BaseEmulator,
    Message,
    Receive,
    Scope,
    Send,
    correlation_id,
    json_response,
)
from airflow_provider_retl.testing.emulators.connection import drain_request_body
from airflow_provider_retl.testing.emulators.faults import Faults
from airflow_provider_retl.testing.emulators.ratelimit import RollingWindowLimiter, RollingWindowRateLimited

DEFAULT_TOKEN = "test-token"
MAX_BATCH_SIZE = 100
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18

ObjectTypeSpec = Sequence[PropertyDef | Mapping[str, Any] | str]


class HubSpotError(Exception):
    """Raised in a handler to answer with HubSpot's error body.

    The body has the fields of the ``Error`` schema of HubSpot's own spec
    (hubspot-contacts.json: required ``category``, ``correlationId`` (a uuid),
    ``message``; optional ``subCategory``, ``context``, ``links``, ``errors[]``), plus
    the ``status: "error"`` HubSpot also sends. ``extra`` adds the optional ones.
    """

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": category,
            **extra,
        }

    def response(self) -> Response:
        """The error as a JSON response."""
        return json_response(self.status, self.body)


@dataclass
class StoredObject:
    """A CRM record as the emulator stores it: property values are strings."""

    id: str
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    archived: bool = False
    archived_at: datetime | None = None


@dataclass
class _Plan:
    """A batch input that passed every check, ready to be written."""

    index: int
    target: StoredObject | None  # None: create
    values: dict[str, str | None]
    trace_id: str | None


@dataclass
class _ItemError:
    """Why one batch input was refused."""

    index: int
    category: str  # VALIDATION_ERROR, CONFLICT or OBJECT_NOT_FOUND
    message: str
    trace_id: str | None
    property_errors: list[PropertyError] = field(default_factory=list)
    context: dict[str, list[str]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)


class HubSpotEmulator(RollingWindowRateLimited, BaseEmulator):
    """State and FastAPI app of a HubSpot CRM v3 emulator (start it with ``start_emulator("hubspot")``).

    ``tokens``: accepted bearer tokens; a mapping gives each token's account,
    and the rate limit is shared per account (by default each token is its own
    account); ``None`` accepts any non-empty token. ``object_types``: extra
    properties for the default types (``contacts``, ``companies``, ``deals``) or
    custom objects, e.g. ``{"p_cars": ["vin", {"name": "serial", "hasUniqueValue": True}]}``
    (a key like ``"2-1234"`` is also a custom object's id), or ``ObjectTypeDef``s.
    ``strict_properties=False`` accepts unknown properties as strings.
    ``search_lag`` hides records from search for that many seconds after a
    write, as HubSpot's search index lags behind writes.
    """

    kind = "hubspot"

    def __init__(
        self,
        tokens: Iterable[str] | Mapping[str, str] | None = (DEFAULT_TOKEN,),
        *,
        rate_limit: int | None = 190,
        rate_window: float = 10.0,
        object_types: Mapping[str, ObjectTypeSpec] | Sequence[ObjectTypeDef] | None = None,
        strict_properties: bool = True,
        faults: Faults | None = None,
        portal_id: int = 12345678,
        max_batch_size: int = MAX_BATCH_SIZE,
        search_lag: float = 0.0,
        keep_requests: int = 1000,
    ) -> None:
        if tokens is None:
            self.tokens: dict[str, str] | None = None
        elif isinstance(tokens, Mapping):
            self.tokens = {str(t): str(a) for t, a in tokens.items()}
        elif isinstance(tokens, str):
            self.tokens = {tokens: tokens}
        else:
            self.tokens = {str(t): str(t) for t in tokens}
        self.portal_id = portal_id
        self.strict_properties = strict_properties
        self.max_batch_size = max_batch_size
        self.search_lag = search_lag
        self.limiter = RollingWindowLimiter(rate_limit, rate_window)
        self._started_at = format_timestamp(datetime.now(UTC))
        self._types: dict[str, ObjectTypeDef] = {}
        self._aliases: dict[str, str] = {}
        self._objects: dict[str, dict[str, StoredObject]] = {}
        self._unique: dict[str, dict[str, dict[str, str]]] = {}
        self._ids = itertools.count(101)
        for type_def in default_object_types().values():
            self.add_object_type(type_def)
        self._configure_types(object_types)
        super().__init__(faults=faults, keep_requests=keep_requests)

    # -- configuration ------------------------------------------------------------

    def add_object_type(self, type_def: ObjectTypeDef) -> None:
        """Register (or replace) an object type; reachable by name, singular and id."""
        with self._lock_or_none():
            type_def = type_def.copy()
            self._types[type_def.name] = type_def
            for alias in (type_def.name, type_def.singular, type_def.object_type_id):
                self._aliases[alias.lower()] = type_def.name
            self._objects.setdefault(type_def.name, {})
            self._unique.setdefault(type_def.name, {})
            for prop in type_def.unique_properties():
                self._unique[type_def.name].setdefault(prop, {})

    def add_property(self, object_type: str, spec: PropertyDef | Mapping[str, Any] | str) -> PropertyDef:
        """Add a property definition to an object type (as ``POST /crm/v3/properties`` does)."""
        prop = PropertyDef.from_spec(spec)
        with self._lock_or_none():
            type_def = self._type(object_type)
            type_def.properties[prop.name] = prop
            if prop.has_unique_value:
                index = self._unique[type_def.name].setdefault(prop.name, {})
                for obj in self._objects[type_def.name].values():
                    value = obj.properties.get(prop.name)
                    if value is not None and not obj.archived:
                        index[_unique_key(prop.name, value)] = obj.id
        return prop

    def _configure_types(self, object_types: Mapping[str, ObjectTypeSpec] | Sequence[ObjectTypeDef] | None) -> None:
        if not object_types:
            return
        if not isinstance(object_types, Mapping):
            for type_def in object_types:
                self.add_object_type(type_def)
            return
        custom_ids = itertools.count(1001)
        for name, specs in object_types.items():
            if name.lower() in self._aliases:
                for spec in specs:
                    self.add_property(name, spec)
                continue
            type_id = name if name.startswith("2-") else f"2-{next(custom_ids)}"
            self.add_object_type(custom_object_type(name, specs, type_id))

    def _lock_or_none(self) -> Any:
        # add_object_type runs during __init__, before BaseEmulator creates the lock.
        lock = getattr(self, "lock", None)
        return lock if lock is not None else _NullLock()

    # -- Python inspection API ----------------------------------------------------

    def object_types(self) -> list[str]:
        """Names of the registered object types."""
        with self._lock_or_none():
            return sorted(self._types)

    def _require_unique(self, type_def: ObjectTypeDef, id_property: str) -> None:
        """HubSpot matches by idProperty only when the property has unique values."""
        prop = type_def.properties.get(id_property)
        if prop is None or not prop.has_unique_value:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Unable to perform update/upsert by non-unique {type_def.object_type_id} property "
                f"{id_property} in portal ID {self.portal_id}",
            )

    def records(self, object_type: str = "contacts", include_archived: bool = False) -> list[dict[str, Any]]:
        """Stored records as ``{"id", "properties", "archived"}`` dicts, oldest first."""
        with self.lock:
            name = self._type(object_type).name
            return [
                {"id": o.id, "properties": dict(o.properties), "archived": o.archived}
                for o in self._objects[name].values()
                if include_archived or not o.archived
            ]

    def get_record(self, object_type: str, record_id: str) -> dict[str, Any] | None:
        """One record (archived ones too) or None."""
        with self.lock:
            obj = self._objects[self._type(object_type).name].get(str(record_id))
            if obj is None:
                return None
            return {"id": obj.id, "properties": dict(obj.properties), "archived": obj.archived}

    def find(self, object_type: str, prop: str, value: str) -> dict[str, Any] | None:
        """The active record whose unique property ``prop`` equals ``value`` (email: any case)."""
        with self.lock:
            type_def = self._type(object_type)
            obj = self._find_by(type_def, prop, value)
            return None if obj is None else self.get_record(type_def.name, obj.id)

    def seed(self, object_type: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store records directly (no HTTP, no rate limit); returns their ids.

        Values are validated like the API does; an invalid value or a taken
        unique value raises ``ValueError``.
        """
        ids = []
        with self.lock:
            type_def = self._type(object_type)
            for props in records:
                values, errors = validate_properties(type_def, props, self.strict_properties)
                if errors:
                    raise ValueError("; ".join(e.message for e in errors))
                for name in type_def.unique_properties():
                    holder = self._holder(type_def, name, values.get(name))
                    if holder is not None:
                        raise ValueError(f"{name}={values[name]} already belongs to record {holder}")
                ids.append(self._write(type_def, None, values).id)
        return ids

    def max_requests_in_window(self, window: float | None = None, account: str | None = None) -> int:
        """The most requests accepted in any rolling window (default: the configured one)."""
        return self.limiter.max_in_window(account, window)

    def state(self) -> dict[str, Any]:
        """Stored records of every object type, for ``GET /_emulator/state``."""
        with self.lock:
            return {
                "portalId": self.portal_id,
                "objects": {
                    name: [self._object_json(self._types[name], o, list(o.properties)) for o in objs.values()]
                    for name, objs in self._objects.items()
                },
                "rateLimit": {"limit": self.limiter.limit, "windowSeconds": self.limiter.window},
            }

    def reset_state(self) -> None:
        """Forget every record and the rate-limit windows (property definitions stay)."""
        with self.lock:
            for name in self._objects:
                self._objects[name] = {}
                self._unique[name] = {p: {} for p in self._types[name].unique_properties()}
            self._ids = itertools.count(101)
            self.limiter.reset()

    def account_for(self, token: str | None) -> str | None:
        """The account a bearer token belongs to, or None when it is not accepted."""
        if not token:
            return None
        if self.tokens is None:
            return token
        return self.tokens.get(token)

    # -- faults in HubSpot's shapes -------------------------------------------------

    def fault_error_body(self, status: int) -> dict[str, Any]:
        """HubSpot-style body of an injected 5xx."""
        return {
            "status": "error",
            "message": "internal error",
            "correlationId": correlation_id(),
            "category": "INTERNAL_ERROR" if status == 500 else "SERVICE_UNAVAILABLE",
        }

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        """An injected 429 looks like the real ten-secondly one."""
        limit = self.limiter.limit or 0
        return self._rate_limit_body(), self._rate_headers(limit, 0)

    def _rate_limit_body(self) -> dict[str, Any]:
        # HubSpot's 429 carries errorType/policyName/groupName; ``category`` (RATE_LIMITS, HubSpot's
        # documented category for 429s) is there too so the body has the spec's Error fields.
        return {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "category": "RATE_LIMITS",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": "TEN_SECONDLY_ROLLING",
            "groupName": f"private-app-api-calls:{self.portal_id}",
        }

    def _rate_headers(self, limit: int | None, remaining: int | None) -> dict[str, str]:
        if limit is None:
            return {}
        return {
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, remaining or 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.limiter.window * 1000)),
        }

    # -- the API app ----------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        """FastAPI routes of the CRM v3 objects and properties API behind auth and rate limiting."""
        app = FastAPI(title="HubSpot CRM v3 emulator", openapi_url=None, docs_url=None, redoc_url=None)

        async def on_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HubSpotError)
            return exc.response()

        async def on_http_error(request: Request, exc: Exception) -> Response:
            # An unknown path or method: HubSpot's Error shape, not FastAPI's {"detail": ...}.
            status = int(getattr(exc, "status_code", 404))
            if status == 405:
                return HubSpotError(405, "VALIDATION_ERROR", f"Method {request.method} is not allowed here").response()
            return HubSpotError(status, "OBJECT_NOT_FOUND", "Resource not found").response()

        app.add_exception_handler(HubSpotError, on_error)
        app.add_exception_handler(StarletteHTTPException, on_http_error)
        base = "/crm/v3/objects/{object_type}"

        @app.post(base + "/batch/create")
        async def batch_create(object_type: str, request: Request) -> Response:
            return self._batch_write(object_type, "create", await _json(request))

        @app.post(base + "/batch/update")
        async def batch_update(object_type: str, request: Request) -> Response:
            return self._batch_write(object_type, "update", await _json(request))

        @app.post(base + "/batch/upsert")
        async def batch_upsert(object_type: str, request: Request) -> Response:
            return self._batch_write(object_type, "upsert", await _json(request))

        @app.post(base + "/batch/read")
        async def batch_read(object_type: str, request: Request) -> Response:
            return self._batch_read(object_type, await _json(request), _flag(request, "archived"))

        @app.post(base + "/batch/archive")
        async def batch_archive(object_type: str, request: Request) -> Response:
            return self._batch_archive(object_type, await _json(request))

        @app.post(base + "/search")
        async def search(object_type: str, request: Request) -> Response:
            return self._search(object_type, await _json(request))

        @app.get(base)
        async def get_page(object_type: str, request: Request) -> Response:
            return self._get_page(object_type, request)

        @app.post(base)
        async def create(object_type: str, request: Request) -> Response:
            return self._single_write(object_type, None, None, await _json(request))

        @app.get(base + "/{object_id}")
        async def get_by_id(object_type: str, object_id: str, request: Request) -> Response:
            return self._get_by_id(object_type, object_id, request)

        @app.patch(base + "/{object_id}")
        async def update(object_type: str, object_id: str, request: Request) -> Response:
            id_property = request.query_params.get("idProperty")
            return self._single_write(object_type, object_id, id_property, await _json(request))

        @app.delete(base + "/{object_id}")
        async def archive(object_type: str, object_id: str) -> Response:
            with self.lock:
                type_def = self._type(object_type)
                obj = self._objects[type_def.name].get(object_id)
                if obj is not None and not obj.archived:
                    self._archive(type_def, obj)
            return Response(status_code=204)

        @app.get("/crm-object-schemas/v3/schemas")
        async def get_schemas() -> Response:
            return json_response(200, {"results": self._schemas_json()})

        @app.get("/crm/v3/properties/{object_type}")
        async def get_properties(object_type: str) -> Response:
            with self.lock:
                type_def = self._type(object_type)
                return json_response(
                    200, {"results": [p.to_json(self._started_at) for p in type_def.properties.values()]}
                )

        @app.get("/crm/v3/properties/{object_type}/{property_name}")
        async def get_property(object_type: str, property_name: str) -> Response:
            with self.lock:
                prop = self._type(object_type).properties.get(property_name)
                if prop is None:
                    raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property {property_name}")
                return json_response(200, prop.to_json(self._started_at))

        @app.post("/crm/v3/properties/{object_type}")
        async def create_property(object_type: str, request: Request) -> Response:
            return self._create_property(object_type, await _json(request))

        return _AuthAndRateLimit(app, self)

    # -- handlers -------------------------------------------------------------------

    def _schemas_json(self) -> list[dict[str, Any]]:
        """Custom object types as ``ObjectSchema``s (hubspot-schemas.json), for ``GET /crm-object-schemas/v3/schemas``."""
        with self.lock:
            out = []
            for type_def in self._types.values():
                if not type_def.object_type_id.startswith("2-"):
                    continue  # standard objects are not listed by the schemas API
                bare = (
                    type_def.name.split("_", 1)[1]
                    if type_def.name.startswith("p") and "_" in type_def.name
                    else type_def.name
                )
                custom = [p for p in type_def.properties.values() if p.group_name not in ("system",)]
                primary = custom[0].name if custom else "hs_object_id"
                out.append(
                    {
                        "id": type_def.object_type_id.split("-", 1)[1],
                        "objectTypeId": type_def.object_type_id,
                        "name": type_def.name,
                        "fullyQualifiedName": f"p{self.portal_id}_{bare}",
                        "labels": {"singular": type_def.singular.title(), "plural": bare.replace("_", " ").title()},
                        "properties": [p.to_json(self._started_at) for p in type_def.properties.values()],
                        "requiredProperties": [],
                        "searchableProperties": [primary],
                        "primaryDisplayProperty": primary,
                        "secondaryDisplayProperties": [],
                        "associations": [],
                        "archived": False,
                        "createdAt": self._started_at,
                        "updatedAt": self._started_at,
                    }
                )
            return out

    def _type(self, object_type: str) -> ObjectTypeDef:
        name = self._aliases.get(object_type.lower())
        if name is None:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")
        return self._types[name]

    def _inputs(self, body: Any) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Invalid input JSON on line 1, column 1: Missing required property 'inputs'"
            )
        inputs = body["inputs"]
        if len(inputs) > self.max_batch_size:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Too many inputs: {len(inputs)}. The maximum number of inputs per batch is {self.max_batch_size}.",
                context={"maxInputs": [str(self.max_batch_size)]},
            )
        for position, item in enumerate(inputs):
            if not isinstance(item, dict):
                raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid input JSON: inputs[{position}] is not an object")
        return inputs

    def _batch_write(self, object_type: str, mode: str, body: Any) -> Response:
        started = datetime.now(UTC)
        with self.lock:
            type_def = self._type(object_type)
            inputs = self._inputs(body)
            _check_wire_types(inputs)
            traced = bool(inputs) and all(_trace_id(i) for i in inputs)
            if mode != "create":
                self._check_ids(type_def, mode, inputs)
            plans, item_errors = self._plan(type_def, mode, inputs)
            if item_errors and not traced:
                raise _whole_batch_error(type_def, item_errors)
            results = []
            for plan in plans:
                obj, new = self._write(type_def, plan.target, plan.values), plan.target is None
                result = self._object_json(type_def, obj, list(obj.properties))
                if plan.trace_id:
                    result["objectWriteTraceId"] = plan.trace_id
                if mode == "upsert":
                    result["new"] = new
                results.append(result)
        body_out = _batch_body(results, [_standard_error(e) for e in item_errors], started)
        if item_errors:
            return json_response(207, body_out)
        return json_response(201 if mode == "create" else 200, body_out)

    def _check_ids(self, type_def: ObjectTypeDef, mode: str, inputs: list[dict[str, Any]]) -> None:
        """Request-level checks of update/upsert inputs; any failure fails the whole call."""
        seen: dict[str, str] = {}
        duplicates: list[str] = []
        for position, item in enumerate(inputs):
            raw_id = item.get("id")
            if raw_id is None or isinstance(raw_id, dict | list) or str(raw_id) == "":
                raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid input JSON: inputs[{position}].id is required")
            id_property = item.get("idProperty")
            if mode == "upsert" and not id_property:
                raise HubSpotError(
                    400, "VALIDATION_ERROR", f"Invalid input JSON: inputs[{position}].idProperty is required for upsert"
                )
            if id_property and id_property != "hs_object_id":
                self._require_unique(type_def, id_property)
            key = _unique_key(id_property or "", str(raw_id))
            if key in seen:
                duplicates.append(str(raw_id))
            seen[key] = str(raw_id)
        if duplicates:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
                context={"ids": duplicates},
            )

    def _plan(
        self, type_def: ObjectTypeDef, mode: str, inputs: list[dict[str, Any]]
    ) -> tuple[list[_Plan], list[_ItemError]]:
        """Check every input against the stored data (and the other inputs) without writing."""
        plans: list[_Plan] = []
        errors: list[_ItemError] = []
        # Unique values taken by earlier inputs of this batch: (property, key) -> owner.
        claims: dict[tuple[str, str], str] = {}
        for index, item in enumerate(inputs):
            trace = _trace_id(item)
            raw_props = item.get("properties")
            if raw_props is None:
                raw_props = {}
            if not isinstance(raw_props, dict):
                errors.append(_ItemError(index, "VALIDATION_ERROR", "properties must be an object", trace))
                continue
            values, prop_errors = validate_properties(type_def, raw_props, self.strict_properties)
            target: StoredObject | None = None
            if mode in ("update", "upsert"):
                raw_id, id_property = str(item["id"]), item.get("idProperty")
                if mode == "upsert" and id_property not in (None, "hs_object_id"):
                    # The id is the value of the unique property: it is validated and written too.
                    id_value, id_error = normalize_value(type_def, type_def.properties[id_property], raw_id)
                    if id_error is not None:
                        prop_errors.append(id_error)
                    else:
                        values[id_property] = id_value
                target = self._find_by(type_def, id_property, raw_id)
                by_record_id = id_property in (None, "hs_object_id")
                if target is None and (mode == "update" or by_record_id) and not prop_errors:
                    # Only a unique property value can name a record that does not exist yet.
                    errors.append(_not_found(type_def, [raw_id], trace, index))
                    continue
            if prop_errors:
                errors.append(_validation_error(index, trace, prop_errors))
                continue
            owner = target.id if target is not None else f"#new{index}"
            conflict = self._conflict(type_def, values, owner, claims, index, trace)
            if conflict is not None:
                errors.append(conflict)
                continue
            for name in type_def.unique_properties():
                if values.get(name):
                    claims[(name, _unique_key(name, values[name] or ""))] = owner
            plans.append(_Plan(index, target, values, trace))
        return plans, errors

    def _conflict(
        self,
        type_def: ObjectTypeDef,
        values: Mapping[str, str | None],
        owner: str,
        claims: Mapping[tuple[str, str], str],
        index: int,
        trace: str | None,
    ) -> _ItemError | None:
        for name in type_def.unique_properties():
            value = values.get(name)
            if not value:
                continue
            holder = self._holder(type_def, name, value)
            if holder is not None and holder != owner:
                message = f"{type_def.singular.capitalize()} already exists. Existing ID: {holder}"
                detail = {
                    "message": f"A {type_def.singular} with {name} {value} already exists. Existing ID: {holder}",
                    "in": name,
                    "code": "CONFLICT",
                }
                return _ItemError(index, "CONFLICT", message, trace, context={"id": [holder]}, details=[detail])
            claimed = claims.get((name, _unique_key(name, value)))
            if claimed is not None and claimed != owner:
                message = f"Duplicate value for unique property {name} in batch input: {value}"
                return _ItemError(
                    index, "CONFLICT", message, trace, details=[{"message": message, "in": name, "code": "CONFLICT"}]
                )
        return None

    def _single_write(self, object_type: str, object_id: str | None, id_property: str | None, body: Any) -> Response:
        """``POST /objects/{type}`` (create, 201) and ``PATCH /objects/{type}/{id}`` (update, 200)."""
        if not isinstance(body, dict) or not isinstance(body.get("properties", {}), dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
        _check_property_strings(body.get("properties") or {}, "properties")
        with self.lock:
            type_def = self._type(object_type)
            target = None
            if object_id is not None:
                if id_property and id_property != "hs_object_id":
                    self._require_unique(type_def, id_property)
                target = self._find_by(type_def, id_property, object_id)
                if target is None:
                    raise HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")
            plans, errors = self._plan(
                type_def,
                "create" if target is None else "update",
                [{"id": target.id if target else None, "properties": body.get("properties") or {}}],
            )
            if errors:
                raise _whole_batch_error(type_def, errors)
            obj = self._write(type_def, target, plans[0].values)
            payload = self._object_json(type_def, obj, list(obj.properties))
        return json_response(201 if object_id is None else 200, payload)

    def _batch_read(self, object_type: str, body: Any, archived: bool) -> Response:
        started = datetime.now(UTC)
        with self.lock:
            type_def = self._type(object_type)
            inputs = self._inputs(body)
            id_property = body.get("idProperty")
            if id_property and id_property != "hs_object_id":
                prop = type_def.properties.get(id_property)
                if prop is None or not prop.has_unique_value:
                    raise HubSpotError(
                        400, "VALIDATION_ERROR", f"{id_property} is not a unique property of {type_def.name}"
                    )
            wanted = _property_list(body.get("properties"))
            results, missing, seen = [], [], set()
            for item in inputs:
                raw_id = str(item.get("id", ""))
                obj = self._find_by(type_def, id_property, raw_id, archived=archived)
                if obj is None:
                    missing.append(raw_id)
                elif obj.id not in seen:
                    seen.add(obj.id)
                    results.append(self._object_json(type_def, obj, wanted or list(type_def.default_read)))
        errors = []
        if missing:
            errors.append(_standard_error(_not_found(type_def, missing, None, 0)))
        return json_response(207 if errors else 200, _batch_body(results, errors, started))

    def _batch_archive(self, object_type: str, body: Any) -> Response:
        with self.lock:
            type_def = self._type(object_type)
            for item in self._inputs(body):
                obj = self._objects[type_def.name].get(str(item.get("id", "")))
                if obj is not None and not obj.archived:
                    self._archive(type_def, obj)
        return Response(status_code=204)

    def _get_by_id(self, object_type: str, object_id: str, request: Request) -> Response:
        with self.lock:
            type_def = self._type(object_type)
            id_property = request.query_params.get("idProperty")
            obj = self._find_by(type_def, id_property, object_id, archived=_flag(request, "archived"))
            if obj is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")
            wanted = _query_properties(request) or list(type_def.default_read)
            return json_response(200, self._object_json(type_def, obj, wanted))

    def _get_page(self, object_type: str, request: Request) -> Response:
        limit = _int_param(request.query_params.get("limit"), 10, "limit")
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        after = _int_param(request.query_params.get("after"), 0, "after")
        archived = _flag(request, "archived")
        with self.lock:
            type_def = self._type(object_type)
            wanted = _query_properties(request) or list(type_def.default_read)
            ordered = sorted(
                (o for o in self._objects[type_def.name].values() if o.archived == archived and int(o.id) >= after),
                key=lambda o: int(o.id),
            )
            page = ordered[:limit]
            payload: dict[str, Any] = {"results": [self._object_json(type_def, o, wanted) for o in page]}
            if len(ordered) > limit:
                next_after = str(int(ordered[limit].id))
                link = f"{str(request.base_url).rstrip('/')}{request.url.path}?after={next_after}"
                payload["paging"] = {"next": {"after": next_after, "link": link}}
        return json_response(200, payload)

    def _search(self, object_type: str, body: Any) -> Response:
        body = body or {}
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        groups = body.get("filterGroups") or []
        if len(groups) > MAX_FILTER_GROUPS or any(len(g.get("filters") or []) > MAX_FILTERS_PER_GROUP for g in groups):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Too many filters: at most 5 filterGroups of at most 6 filters each"
            )
        if sum(len(g.get("filters") or []) for g in groups) > MAX_FILTERS:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Too many filters: at most {MAX_FILTERS} in total")
        limit = _int_param(body.get("limit"), 10, "limit")
        if limit > MAX_SEARCH_LIMIT or limit < 0:
            raise HubSpotError(400, "VALIDATION_ERROR", f"limit must be between 0 and {MAX_SEARCH_LIMIT}")
        offset = _int_param(body.get("after"), 0, "after")
        query = str(body.get("query") or "").lower()
        now = datetime.now(UTC)
        with self.lock:
            type_def = self._type(object_type)
            for group in groups:
                for flt in group.get("filters") or []:
                    if flt.get("propertyName") not in type_def.properties:
                        raise HubSpotError(
                            400, "VALIDATION_ERROR", f'Property "{flt.get("propertyName")}" does not exist'
                        )
            visible_before = now - timedelta(seconds=self.search_lag)
            matches = [
                o
                for o in self._objects[type_def.name].values()
                if not o.archived
                and (self.search_lag <= 0 or o.updated_at <= visible_before)
                and (not groups or any(_group_matches(type_def, o, g) for g in groups))
                and (not query or any(query in v.lower() for v in o.properties.values()))
            ]
            matches = _sorted(type_def, matches, body.get("sorts") or [])
            page = matches[offset : offset + limit]
            wanted = _property_list(body.get("properties")) or list(type_def.default_read)
            payload: dict[str, Any] = {
                "total": len(matches),
                "results": [self._object_json(type_def, o, wanted) for o in page],
            }
            if offset + limit < len(matches):
                payload["paging"] = {"next": {"after": str(offset + limit)}}
        return json_response(200, payload)

    def _create_property(self, object_type: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Missing required field(s): {', '.join(missing)}")
        if body["type"] not in PROPERTY_TYPES:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"type must be one of {', '.join(PROPERTY_TYPES)}, got {body['type']}"
            )
        with self.lock:
            type_def = self._type(object_type)
            if body["name"] in type_def.properties:
                raise HubSpotError(409, "OBJECT_ALREADY_EXISTS", f"Property named '{body['name']}' already exists.")
            prop = self.add_property(type_def.name, body)
        return json_response(201, prop.to_json(format_timestamp(datetime.now(UTC))))

    # -- storage --------------------------------------------------------------------

    def _find_by(
        self, type_def: ObjectTypeDef, id_property: str | None, value: str, archived: bool = False
    ) -> StoredObject | None:
        objects = self._objects[type_def.name]
        if not id_property or id_property == "hs_object_id":
            obj = objects.get(str(value).strip())
        else:
            if archived:
                key = _unique_key(id_property, value)
                return next(
                    (
                        o
                        for o in objects.values()
                        if o.archived and _unique_key(id_property, o.properties.get(id_property) or "") == key
                    ),
                    None,
                )
            holder = self._unique[type_def.name].get(id_property, {}).get(_unique_key(id_property, value))
            obj = objects.get(holder) if holder else None
        if obj is None or obj.archived != archived:
            return None
        return obj

    def _holder(self, type_def: ObjectTypeDef, name: str, value: str | None) -> str | None:
        if not value:
            return None
        return self._unique[type_def.name].get(name, {}).get(_unique_key(name, value))

    def _write(
        self, type_def: ObjectTypeDef, target: StoredObject | None, values: Mapping[str, str | None]
    ) -> StoredObject:
        now = datetime.now(UTC)
        stamp = format_timestamp(now)
        if target is None:
            object_id = str(next(self._ids))
            props = {k: v for k, v in values.items() if v is not None}
            props.update(
                {"hs_object_id": object_id, type_def.created_property: stamp, type_def.modified_property: stamp}
            )
            target = StoredObject(object_id, props, now, now)
            self._objects[type_def.name][object_id] = target
        else:
            self._unindex(type_def, target)
            for name, value in values.items():
                if value is None:
                    target.properties.pop(name, None)
                else:
                    target.properties[name] = value
            target.properties[type_def.modified_property] = stamp
            target.updated_at = now
        self._index(type_def, target)
        return target

    def _archive(self, type_def: ObjectTypeDef, obj: StoredObject) -> None:
        self._unindex(type_def, obj)
        obj.archived = True
        obj.archived_at = datetime.now(UTC)

    def _index(self, type_def: ObjectTypeDef, obj: StoredObject) -> None:
        for name in type_def.unique_properties():
            value = obj.properties.get(name)
            if value:
                self._unique[type_def.name].setdefault(name, {})[_unique_key(name, value)] = obj.id

    def _unindex(self, type_def: ObjectTypeDef, obj: StoredObject) -> None:
        for name in type_def.unique_properties():
            value = obj.properties.get(name)
            index = self._unique[type_def.name].get(name, {})
            if value and index.get(_unique_key(name, value)) == obj.id:
                del index[_unique_key(name, value)]

    def _object_json(self, type_def: ObjectTypeDef, obj: StoredObject, wanted: Sequence[str]) -> dict[str, Any]:
        """``SimplePublicObject``: requested properties that exist come back, unset ones as null."""
        props = {
            name: obj.properties.get(name) for name in wanted if name in obj.properties or name in type_def.properties
        }
        result: dict[str, Any] = {
            "id": obj.id,
            "properties": props,
            "createdAt": format_timestamp(obj.created_at),
            "updatedAt": format_timestamp(obj.updated_at),
            "archived": obj.archived,
        }
        if obj.archived_at is not None:
            result["archivedAt"] = format_timestamp(obj.archived_at)
        return result


class _AuthAndRateLimit:
    """ASGI layer in front of the API routes: bearer token, then the rolling window.

    Requests refused here (401, 429) never reach the routes; every answer that
    passes gets the ``X-HubSpot-RateLimit-*`` headers.
    """

    def __init__(self, app: ASGIApp, emulator: HubSpotEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        account = self.emulator.account_for(token)
        if account is None:
            await drain_request_body(receive)
            error = HubSpotError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
            await error.response()(scope, receive, send)
            return
        decision = self.emulator.limiter.acquire(account)
        extra = self.emulator._rate_headers(decision.limit, decision.remaining)
        if not decision.allowed:
            await drain_request_body(receive)
            extra["Retry-After"] = decision.retry_after_header
            await json_response(429, self.emulator._rate_limit_body(), extra)(scope, receive, send)
            return
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *raw_headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- helpers ----------------------------------------------------------------------------


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HubSpotError(
            400, "VALIDATION_ERROR", f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _check_property_strings(properties: Mapping[str, Any], where: str) -> None:
    """Every property value must be a JSON string: the spec's ``properties`` are ``{type: string}`` maps.

    (SimplePublicObjectInput, ...InputForCreate, ...BatchInput, ...BatchInputUpsert in
    hubspot-contacts.json.) A number, boolean, null, object or array fails the whole call
    with 400 VALIDATION_ERROR before anything is written, as a body that does not match
    the schema does; clear a property with "".
    """
    wrong = {name: value for name, value in properties.items() if not isinstance(value, str)}
    if wrong:
        name, value = next(iter(wrong.items()))
        raise HubSpotError(
            400,
            "VALIDATION_ERROR",
            f"Invalid input JSON: {where}.{name} must be a string, got {_json_type(value)} ({value!r}); "
            'HubSpot takes every property value as a string (clear a property with "")',
            context={"properties": list(wrong)},
        )


def _check_wire_types(inputs: Sequence[Mapping[str, Any]]) -> None:
    """Types the spec gives batch write inputs: string ids, idProperty, trace ids and property values."""
    for position, item in enumerate(inputs):
        for key in ("id", "idProperty", "objectWriteTraceId"):
            if key in item and not isinstance(item[key], str):
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"Invalid input JSON: inputs[{position}].{key} must be a string, got {_json_type(item[key])}",
                )
        properties = item.get("properties")
        if isinstance(properties, dict):
            _check_property_strings(properties, f"inputs[{position}].properties")


def _trace_id(item: Mapping[str, Any]) -> str | None:
    trace = item.get("objectWriteTraceId")
    return trace if isinstance(trace, str) and trace else None


def _unique_key(name: str, value: str) -> str:
    # Emails are matched without regard to case (HubSpot stores them lower-cased).
    return value.strip().lower() if name == "email" else value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def _int_param(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HubSpotError(400, "VALIDATION_ERROR", f"{name} must be an integer, got {value!r}") from None


def _property_list(value: Any) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def _query_properties(request: Request) -> list[str]:
    # The SDK repeats the parameter (properties=a&properties=b); people also write a,b.
    return _property_list(request.query_params.getlist("properties"))


def _validation_error(index: int, trace: str | None, errors: list[PropertyError]) -> _ItemError:
    return _ItemError(
        index,
        "VALIDATION_ERROR",
        _invalid_properties_message(errors),
        trace,
        property_errors=errors,
        details=[_detail(e) for e in errors],
    )


def _invalid_properties_message(errors: Sequence[PropertyError]) -> str:
    listed = [
        {"isValid": False, "message": e.message, "error": e.code, "name": e.name, "localizedErrorMessage": e.message}
        for e in errors
    ]
    return "Property values were not valid: " + json.dumps(listed, separators=(",", ":"))


def _detail(error: PropertyError) -> dict[str, Any]:
    return {"message": error.message, "code": error.code, "in": error.name, "context": {"propertyName": [error.name]}}


def _not_found(type_def: ObjectTypeDef, ids: list[str], trace: str | None, index: int) -> _ItemError:
    message = (
        f"Could not get some {type_def.singular.upper()} objects, they may be deleted or not exist. "
        "Check that ids are valid."
    )
    return _ItemError(index, "OBJECT_NOT_FOUND", message, trace, context={"ids": ids})


def _standard_error(error: _ItemError) -> dict[str, Any]:
    """One entry of ``errors`` in a 207 (SDK model ``StandardError``)."""
    context = dict(error.context)
    if error.trace_id:
        context["objectWriteTraceId"] = [error.trace_id]
    # StandardError requires status, category, message, context, errors and links.
    return {
        "status": "error",
        "category": error.category,
        "message": error.message,
        "context": context,
        "errors": error.details,
        "links": {},
    }


def _whole_batch_error(type_def: ObjectTypeDef, errors: list[_ItemError]) -> HubSpotError:
    """Without trace ids one bad input fails the call: validation first, then not-found, then conflict."""
    invalid = [e for e in errors if e.category == "VALIDATION_ERROR"]
    if invalid:
        prop_errors = [p for e in invalid for p in e.property_errors]
        if not prop_errors:
            return HubSpotError(400, "VALIDATION_ERROR", invalid[0].message)
        return HubSpotError(
            400,
            "VALIDATION_ERROR",
            _invalid_properties_message(prop_errors),
            errors=[_detail(p) for p in prop_errors],
        )
    not_found = [e for e in errors if e.category == "OBJECT_NOT_FOUND"]
    if not_found:
        ids = [i for e in not_found for i in e.context.get("ids", [])]
        return HubSpotError(404, "OBJECT_NOT_FOUND", not_found[0].message, context={"ids": ids})
    first = errors[0]
    return HubSpotError(409, first.category, first.message, **({"errors": first.details} if first.details else {}))


def _batch_body(results: list[dict[str, Any]], errors: list[dict[str, Any]], started: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": format_timestamp(started),
        "completedAt": format_timestamp(datetime.now(UTC)),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return body


def _group_matches(type_def: ObjectTypeDef, obj: StoredObject, group: Mapping[str, Any]) -> bool:
    return all(_filter_matches(type_def, obj, f) for f in group.get("filters") or [])


def _filter_matches(type_def: ObjectTypeDef, obj: StoredObject, flt: Mapping[str, Any]) -> bool:
    name = str(flt.get("propertyName"))
    operator = str(flt.get("operator", "EQ")).upper()
    prop = type_def.properties.get(name)
    stored = obj.properties.get(name)
    if operator == "HAS_PROPERTY":
        return stored is not None
    if operator == "NOT_HAS_PROPERTY":
        return stored is None
    if operator in ("IN", "NOT_IN"):
        keys = {sort_key(prop, _filter_text(v)) for v in flt.get("values") or []}
        found = stored is not None and sort_key(prop, stored) in keys
        return found if operator == "IN" else not found
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(flt.get("value", "")).lower().replace("*", "")
        found = stored is not None and token in stored.lower()
        return found if operator == "CONTAINS_TOKEN" else not found
    if operator == "NEQ":
        return stored is None or sort_key(prop, stored) != sort_key(prop, _filter_text(flt.get("value")))
    if stored is None:
        return False
    mine = sort_key(prop, stored)
    value = sort_key(prop, _filter_text(flt.get("value")))
    if operator == "EQ":
        return mine == value
    if operator == "BETWEEN":
        return value <= mine <= sort_key(prop, _filter_text(flt.get("highValue")))
    comparisons = {"LT": mine < value, "LTE": mine <= value, "GT": mine > value, "GTE": mine >= value}
    if operator not in comparisons:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unsupported filter operator {operator}")
    return comparisons[operator]


def _filter_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sorted(type_def: ObjectTypeDef, objects: list[StoredObject], sorts: Sequence[Any]) -> list[StoredObject]:
    ordered = sorted(objects, key=lambda o: int(o.id))
    # Accept both {"propertyName": ..., "direction": "DESCENDING"} and the SDK's plain strings ("-name").
    for spec in reversed(list(sorts)):
        if isinstance(spec, Mapping):
            name = str(spec.get("propertyName", ""))
            descending = str(spec.get("direction", "ASCENDING")).upper() == "DESCENDING"
        else:
            text = str(spec)
            name, descending = text.lstrip("-"), text.startswith("-")
        prop = type_def.properties.get(name)
        ordered.sort(key=lambda o: sort_key(prop, o.properties.get(name)), reverse=descending)
    return ordered
