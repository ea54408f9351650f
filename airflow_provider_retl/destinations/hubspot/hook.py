"""HubSpot CRM v3 objects: contacts, companies and custom objects, 100 records a call.

How the real API behaves, and what this hook does about it:

* ``batch/create``, ``batch/update`` and ``batch/upsert`` succeed *partially*
  (207 with ``errors[]``) only when every input carries an ``objectWriteTraceId``;
  each error names the trace ids it concerns in ``context.objectWriteTraceId``.
  We always send trace ids (``"<position in the call>"``), so one bad input
  fails alone. Without them, or for some errors even with them, one invalid
  input fails the whole batch (400 VALIDATION_ERROR, or 409 CONFLICT "Contact
  already exists. Existing ID: N"); then the batch is bisected until each bad
  input is alone and gets its own reason.
* Results are not promised in input order: they are mapped back by trace id,
  then by object id (update) or by the match property (case-insensitive for
  email), and only as a last resort by order.
* Upsert needs a *unique* property as ``idProperty``: email for contacts, or a
  property with ``hasUniqueValue`` (checked once per object via the properties API).
* The default rate limit is 100 requests per rolling 10 seconds (private apps
  on most tiers); set ``rate_limit``/``rate_window`` in the extras for others
  (e.g. 190). A 429 names its ``policyName``; a DAILY one is not waited for.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import requests

from airflow_provider_retl.destinations.hubspot.spec import SPEC
from airflow_provider_retl.hooks.destination import (
    EXISTS,
    DestinationHook,
    _json_or_none,
    chunked,
    excerpt,
)
from airflow_provider_retl.sync import validate as validators
from airflow_provider_retl.sync.errors import (
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
)
from airflow_provider_retl.sync.records import Outcome, Record

__all__ = ["HubSpotHook", "wire_value"]

#: Longest property value HubSpot stores.
MAX_VALUE_CHARS = 65_536

#: Objects whose API name is fixed (no schema lookup needed).
STANDARD_OBJECTS = frozenset(
    {
        "contacts",
        "companies",
        "deals",
        "tickets",
        "products",
        "line_items",
        "quotes",
        "calls",
        "emails",
        "meetings",
        "notes",
        "tasks",
        "communications",
        "postal_mail",
        "leads",
    }
)
_OBJECT_TYPE_ID = re.compile(r"^(\d+-\d+|p\d*_\w+)$")
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)", re.IGNORECASE)

#: Values per search filter (HubSpot's IN operator) and results per search page.
SEARCH_IN_VALUES = 100
SEARCH_PAGE = 100

#: 400s about the call rather than one input (bisecting cannot help; they are configuration errors).
_CALL_LEVEL = re.compile(
    r"Unable to infer object type|non-unique .* property|is not a unique property|Invalid input JSON"
    r"|Too many filters",
    re.IGNORECASE,
)

#: Error categories that mean "this record is not there" (fine for an archive).
_NOT_FOUND = frozenset({"OBJECT_NOT_FOUND", "NOT_FOUND"})


_OBJECT_RULES: dict[str, list[validators.Validator]] = {"*": [validators.max_length(MAX_VALUE_CHARS)]}
_CONTACT_RULES: dict[str, list[validators.Validator]] = {**_OBJECT_RULES, "email": [validators.email]}


def _trace_id(position: int) -> str:
    # The position of the input in the hook call; never the record key (it may be an email).
    return str(position)


def _listed(value: Any) -> list[str]:
    """A context entry of a HubSpot error: a list of strings, or now and then a bare string."""
    if value is None:
        return []
    if isinstance(value, list | tuple | set):
        return [str(v) for v in value]
    return [str(value)]


class HubSpotHook(DestinationHook):
    """HubSpot CRM objects over the v3 batch API.

    :param hubspot_conn_id: connection with a private app token in ``password``;
        ``host`` defaults to https://api.hubapi.com (point it at an emulator or a proxy).
    """

    spec = SPEC

    def __init__(self, hubspot_conn_id: str = SPEC.default_conn_name, **kwargs: Any) -> None:
        super().__init__(hubspot_conn_id, **kwargs)
        self._cache_lock = threading.Lock()
        self._unique: dict[str, frozenset[str]] = {}
        self._object_paths: dict[str, str] = {}

    # ------------------------------------------------------------------ capabilities

    def supports_upsert(self, object: str, match_field: str | None) -> bool:
        field = match_field or self.default_match_field(object)
        return field is not None and self._is_unique(object, field)

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Malformed contact emails (syntax only, no DNS), values longer than HubSpot stores, NaN/infinity."""
        problems = validators.run_validators(fields, _CONTACT_RULES if self._is_contacts(object) else _OBJECT_RULES)
        return problems + [(name, reason) for name, reason in _unwritable(fields)]

    # ------------------------------------------------------------------ writes

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """``batch/upsert`` with ``idProperty`` = the match field (must be unique); idempotent."""
        field = match_field or self.default_match_field(object)
        if not field or not self._is_unique(object, field):
            raise ConfigurationError(
                f"HubSpot cannot upsert {object!r} by {field!r}: upsert needs a unique property "
                "(email for contacts, or a property with 'hasUniqueValue'); use lookup + create/update"
            )

        def check(record: Record) -> str | None:
            if self._match_value(record, field) in (None, ""):
                return f"no value for {field!r}, which upsert matches on"
            return None

        def build(record: Record, trace: str) -> dict[str, Any]:
            value = self._match_value(record, field)
            properties = self.wire_properties(record.fields)
            properties[field] = wire_value(value)  # echoed back in the result, so results map to inputs by it
            return {
                "idProperty": field,
                "id": wire_value(value),
                "properties": properties,
                "objectWriteTraceId": trace,
            }

        return self._write(object, records, "upsert", check, build, idempotent=True, match_field=field)

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``batch/create``; not idempotent (a lost response raises ``OutcomeUnknownError``).

        A record that already exists (409 "Existing ID: N") comes back as a failed
        outcome with ``code=EXISTS`` and ``dest_id=N``: update it by that id.
        """

        def build(record: Record, trace: str) -> dict[str, Any]:
            # SimplePublicObjectBatchInputForCreate requires ``associations`` (hubspot-contacts.json);
            # a sync links nothing, so it is an empty list.
            return {"associations": [], "properties": self.wire_properties(record.fields), "objectWriteTraceId": trace}

        field = self.default_match_field(object)
        return self._write(object, records, "create", lambda r: None, build, idempotent=False, match_field=field)

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``batch/update`` by destination id; idempotent."""

        def check(record: Record) -> str | None:
            return None if record.dest_id else "no HubSpot id known for this record; it cannot be updated"

        def build(record: Record, trace: str) -> dict[str, Any]:
            return {
                "id": str(record.dest_id),
                "properties": self.wire_properties(record.fields),
                "objectWriteTraceId": trace,
            }

        return self._write(object, records, "update", check, build, idempotent=True, match_field=None)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """``batch/archive`` by id; idempotent: an id that is already gone counts as deleted."""
        outcomes: list[Outcome | None] = [None] * len(dest_ids)
        positions = [i for i, dest_id in enumerate(dest_ids) if dest_id not in (None, "")]
        for i in set(range(len(dest_ids))) - set(positions):
            outcomes[i] = Outcome.failure("no HubSpot id known for this record; it cannot be archived", "NO_ID")
        path = f"/crm/v3/objects/{self.object_path(object)}/batch/archive"

        def send(part: Sequence[int]) -> list[Outcome]:
            response = self.request(
                "POST",
                path,
                json={"inputs": [{"id": str(dest_ids[i])} for i in part]},
                idempotent=True,
                accept=(404,),
            )
            if response.status_code == 404:
                return [Outcome.success(str(dest_ids[i])) for i in part]
            failed: dict[str, Outcome] = {}
            for error in (self.response_json(response) or {}).get("errors", []):
                if error.get("category") in _NOT_FOUND:
                    continue
                for dest_id in _listed((error.get("context") or {}).get("ids")):
                    failed[dest_id] = self._error_outcome(error)
            return [failed.get(str(dest_ids[i]), Outcome.success(str(dest_ids[i]))) for i in part]

        if positions:
            for i, outcome in zip(positions, send(positions), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    # ------------------------------------------------------------------ reads

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        """``batch/read`` by ``idProperty``: {value: HubSpot id} for the values that exist."""
        field = match_field or self.default_match_field(object) or "hs_object_id"
        by_id = field in ("id", "hs_object_id")
        if not by_id and not self._is_unique(object, field):
            return self._search_lookup(object, field, values)
        norm = self._normalizer(object, field)
        path = f"/crm/v3/objects/{self.object_path(object)}/batch/read"
        found: dict[Any, str] = {}
        wanted = {norm(wire_value(v)): v for v in values if v not in (None, "")}
        if not wanted:
            return found
        body: dict[str, Any] = {
            "inputs": [{"id": wire_value(v)} for v in wanted.values()],
            "properties": [] if by_id else [field],
            "propertiesWithHistory": [],
        }
        if not by_id:
            body["idProperty"] = field
        response = self.request("POST", path, json=body, idempotent=True, accept=(404,))
        if response.status_code == 404:
            return found
        for result in (self.response_json(response) or {}).get("results", []):
            value = result.get("id") if by_id else (result.get("properties") or {}).get(field)
            original = wanted.get(norm(value)) if value is not None else None
            if original is not None and result.get("id") is not None:
                found[original] = str(result["id"])
        return found

    def _search_lookup(self, object: str, field: str, values: Sequence[Any]) -> dict[Any, str]:
        """Look up by a property that is not unique (e.g. a company's domain) with the search API.

        Where several records share a value, the oldest (lowest id) wins and a
        warning says so. HubSpot's search index lags a few seconds behind writes.
        """
        path = f"/crm/v3/objects/{self.object_path(object)}/search"
        found: dict[Any, str] = {}
        ambiguous = 0
        wanted_values = [v for v in values if v not in (None, "")]
        # HubSpot search: an IN filter takes at most SEARCH_IN_VALUES values (its own limit, not batch/read's).
        for chunk in chunked(wanted_values, SEARCH_IN_VALUES):
            wanted = {wire_value(v): v for v in chunk}
            # PublicObjectSearchRequest requires after, filterGroups, limit, properties and sorts, and
            # types ``sorts`` as an array of strings (a property name, ascending); "0" is the first page.
            after = "0"
            while True:
                body: dict[str, Any] = {
                    "filterGroups": [{"filters": [{"propertyName": field, "operator": "IN", "values": list(wanted)}]}],
                    "properties": [field],
                    "sorts": ["hs_object_id"],
                    "limit": SEARCH_PAGE,
                    "after": after,
                }
                data = self.response_json(self.request("POST", path, json=body, idempotent=True)) or {}
                for result in data.get("results", []):
                    original = wanted.get(str((result.get("properties") or {}).get(field)))
                    if original is None or result.get("id") is None:
                        continue
                    if original in found:
                        ambiguous += 1
                    else:
                        found[original] = str(result["id"])
                next_after = ((data.get("paging") or {}).get("next") or {}).get("after")
                if not next_after:
                    break
                after = str(next_after)
        if ambiguous:
            self.log.warning(
                "%d HubSpot %s share a %s value with an older record; the oldest is used", ambiguous, object, field
            )
        return found

    def object_path(self, object: str) -> str:
        """The API name of ``object``: standard names and type ids as given, custom objects by name."""
        if object in STANDARD_OBJECTS or _OBJECT_TYPE_ID.match(object):
            return object
        with self._cache_lock:
            if object in self._object_paths:
                return self._object_paths[object]
        path = self._resolve_custom_object(object)
        with self._cache_lock:
            self._object_paths[object] = path
        return path

    def _resolve_custom_object(self, name: str) -> str:
        # The schemas API as HubSpot's document places it (hubspot-schemas.json: GET /crm-object-schemas/v3/schemas).
        response = self.request("GET", "/crm-object-schemas/v3/schemas", accept=(400, 403, 404, 405))
        if response.status_code >= 400:
            return name  # no schema API (or no scope for it): use the name as given
        wanted = name.lower()
        for schema in (self.response_json(response) or {}).get("results", []):
            labels = schema.get("labels") or {}
            names = {str(schema.get(k, "")).lower() for k in ("name", "fullyQualifiedName", "objectTypeId")} | {
                str(labels.get(k, "")).lower() for k in ("singular", "plural")
            }
            if wanted in names and schema.get("objectTypeId"):
                return str(schema["objectTypeId"])
        return name

    def unique_properties(self, object: str) -> frozenset[str]:
        """Names of the object's properties with ``hasUniqueValue`` (one call per object, cached)."""
        with self._cache_lock:
            if object in self._unique:
                return self._unique[object]
        response = self.request("GET", f"/crm/v3/properties/{self.object_path(object)}", accept=(400, 404))
        if response.status_code >= 400:
            raise ConfigurationError(
                f"HubSpot does not know the object type {object!r} ({self.describe_error(response)})"
            )
        names = frozenset(
            str(p["name"])
            for p in (self.response_json(response) or {}).get("results", [])
            if p.get("hasUniqueValue") and p.get("name")
        )
        with self._cache_lock:
            self._unique[object] = names
        return names

    def _is_unique(self, object: str, field: str) -> bool:
        if self._is_contacts(object) and field == "email":
            return True
        return field in self.unique_properties(object)

    # ------------------------------------------------------------------ the batch machinery

    def _write(
        self,
        object: str,
        records: Sequence[Record],
        action: str,
        check: Callable[[Record], str | None],
        build: Callable[[Record, str], dict[str, Any]],
        *,
        idempotent: bool,
        match_field: str | None,
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(records)
        positions: list[int] = []
        for i, record in enumerate(records):
            problem = check(record)
            unwritable = _unwritable(record.fields)
            if problem:
                outcomes[i] = Outcome.failure(problem, "MISSING_ID")
            elif unwritable:
                outcomes[i] = Outcome.failure("; ".join(f"{n}: {r}" for n, r in unwritable), "INVALID_VALUE")
            else:
                positions.append(i)
        path = f"/crm/v3/objects/{self.object_path(object)}/batch/{action}"

        def send(part: Sequence[int]) -> list[Outcome]:
            inputs = [build(records[i], _trace_id(i)) for i in part]
            response = self.request("POST", path, json={"inputs": inputs}, idempotent=idempotent)
            body = self.response_json(response) or {}
            return self._map_results(action, part, records, inputs, body, match_field, object)

        if positions:
            for i, outcome in zip(positions, send(positions), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _map_results(
        self,
        action: str,
        part: Sequence[int],
        records: Sequence[Record],
        inputs: Sequence[Mapping[str, Any]],
        body: Mapping[str, Any],
        match_field: str | None,
        object: str,
    ) -> list[Outcome]:
        """Per-input outcomes from a 200/201/207 body, whatever order HubSpot answered in."""
        slot = {_trace_id(i): n for n, i in enumerate(part)}
        outcomes: list[Outcome | None] = [None] * len(part)
        norm = self._normalizer(object, match_field) if match_field else str

        by_key: dict[str, int] = {}
        for n, item in enumerate(inputs):
            if action == "update":
                by_key[str(item["id"])] = n
            elif match_field and (item.get("properties") or {}).get(match_field) not in (None, ""):
                by_key[norm(item["properties"][match_field])] = n

        unplaced_errors: list[Mapping[str, Any]] = []
        unknown: dict[int, set[str]] = {}  # input -> properties HubSpot does not have
        for error in body.get("errors") or []:
            context = error.get("context") or {}
            targets = [slot[t] for t in _listed(context.get("objectWriteTraceId")) if t in slot]
            if not targets:
                # context.ids names inputs (not-found ids); context.id of a CONFLICT is the *existing* record.
                keys = [k if action == "update" else norm(k) for k in _listed(context.get("ids"))]
                targets = [by_key[k] for k in keys if k in by_key]
            for n in targets:
                outcomes[n] = self._error_outcome(error)
                unknown.setdefault(n, set()).update(_unknown_properties(error))
            if not targets:
                unplaced_errors.append(error)
        everywhere = set.intersection(*unknown.values()) if len(unknown) == len(part) else set()
        if everywhere:
            # A property no input of the batch could write is the mapping's fault, not the data's:
            # every later batch and every retry would fail the same way.
            raise FatalDestinationError(
                f"HubSpot {object} has no property {', '.join(map(repr, sorted(everywhere)))}: fix the mapping "
                "or create the property in HubSpot; a retry cannot fix this"
            )

        leftovers: list[Mapping[str, Any]] = []
        for result in body.get("results") or []:
            position = self._result_slot(result, slot, by_key, action, match_field, norm)
            if position is not None and outcomes[position] is None:
                outcomes[position] = self._success(action, result)
            else:
                leftovers.append(result)

        missing = [n for n, o in enumerate(outcomes) if o is None]
        if missing and len(leftovers) == len(missing) and not unplaced_errors:
            for n, result in zip(missing, leftovers, strict=True):  # last resort: input order
                outcomes[n] = self._success(action, result)
        elif missing:
            if action == "create" and leftovers:
                # Records were created but we cannot tell which: the engine reconciles by lookup.
                raise OutcomeUnknownError(
                    f"HubSpot created {len(leftovers)} records in a batch of {len(part)} but its answer "
                    "cannot be matched to the inputs",
                )
            reason = (
                self._error_outcome(unplaced_errors[0])
                if len(unplaced_errors) == 1
                else Outcome.failure("HubSpot returned no result for this record", "NO_RESULT")
            )
            for n in missing:
                outcomes[n] = reason
        return [o for o in outcomes if o is not None]

    @staticmethod
    def _result_slot(
        result: Mapping[str, Any],
        slot: Mapping[str, int],
        by_key: Mapping[str, int],
        action: str,
        match_field: str | None,
        norm: Callable[[Any], str],
    ) -> int | None:
        trace = result.get("objectWriteTraceId")
        if trace is not None and str(trace) in slot:
            return slot[str(trace)]
        if action == "update":
            return by_key.get(str(result.get("id")))
        value = (result.get("properties") or {}).get(match_field) if match_field else None
        return by_key.get(norm(value)) if value not in (None, "") else None

    @staticmethod
    def _success(action: str, result: Mapping[str, Any]) -> Outcome:
        created = {"create": True, "update": False}.get(action, result.get("new"))
        dest_id = result.get("id")
        return Outcome.success(str(dest_id) if dest_id is not None else None, created=created)

    def _error_outcome(self, error: Mapping[str, Any]) -> Outcome:
        """One HubSpot error object (207 ``errors[]`` item, or a whole-batch error body) as an outcome."""
        category = str(error.get("category") or error.get("subCategory") or "ERROR")
        message = str(error.get("message") or category)
        existing = _EXISTING_ID.search(message)
        if existing:
            return Outcome(ok=False, dest_id=existing.group(1), reason=self.redact(message), code=EXISTS)
        # "Property values were not valid: [...json...]" reads better from its details.
        details = [d for d in error.get("errors") or [] if isinstance(d, Mapping) and d.get("message")]
        if details:
            lines = [f"{d['in']}: {d['message']}" if d.get("in") else str(d["message"]) for d in details]
            message = "; ".join(dict.fromkeys(lines))  # HubSpot may repeat one problem (e.g. upsert id + property)
            codes = {str(d["code"]) for d in details if d.get("code")}
            if len(codes) == 1:
                category = codes.pop()
        return Outcome.failure(self.redact(message), category)

    def is_record_level(self, err: Any) -> bool:
        if err.status == 404:  # a whole-batch OBJECT_NOT_FOUND (update of unknown ids): find the missing ones
            body = _json_or_none(err.response)
            return isinstance(body, Mapping) and body.get("category") == "OBJECT_NOT_FOUND"
        return super().is_record_level(err)

    def rejection_outcome(self, err: Any) -> Outcome:
        body = _json_or_none(err.response)
        if isinstance(body, Mapping) and (body.get("message") or body.get("category")):
            return self._error_outcome(body)
        return super().rejection_outcome(err)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def wire_properties(fields: Mapping[str, Any]) -> dict[str, str]:
        """Property values as HubSpot takes them: every value a string (see ``wire_value``)."""
        return {name: wire_value(value) for name, value in fields.items()}

    @staticmethod
    def _match_value(record: Record, field: str) -> Any:
        return record.match_value if record.match_value not in (None, "") else record.fields.get(field)

    def _normalizer(self, object: str, field: str | None) -> Callable[[Any], str]:
        if field == "email":
            return lambda v: str(v).strip().lower()  # HubSpot matches emails case-insensitively
        return str

    @staticmethod
    def _is_contacts(object: str) -> bool:
        return object.lower() in ("contacts", "contact", "0-1")

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        error = super()._error_for(response, idempotent=idempotent, what=what)
        if response.status_code == 400:
            body = _json_or_none(response)
            if isinstance(body, Mapping) and _CALL_LEVEL.search(str(body.get("message") or "")):
                # About the call (unknown object, non-unique idProperty), not one input: no retry, no bisect.
                return FatalDestinationError(error.args[0], status=400, response=response, request=response.request)
            unknown = _unknown_properties(body)
            if unknown:
                # Every record carries the mapped fields, so an unknown property fails them all, on every try.
                return FatalDestinationError(
                    f"{error.args[0]} (HubSpot has no property {', '.join(map(repr, unknown))}: "
                    "fix the mapping or create the property; a retry cannot fix this)",
                    status=400,
                    response=response,
                    request=response.request,
                )
        if response.status_code == 429 and isinstance(error, RetryableDestinationError):
            body = _json_or_none(response) or {}
            policy = str(body.get("policyName") or "") if isinstance(body, Mapping) else ""
            if policy:
                error.args = (f"{error.args[0]} [policy {policy}]",)
            if policy.upper() == "DAILY":
                # The daily quota resets at midnight; waiting inside the task is pointless.
                error.retry_after = 86_400 - (time.time() % 86_400)
        return error

    def _test_call(self) -> None:
        self.request("GET", "/crm/v3/objects/contacts", params={"limit": 1}, retry=False)


def wire_value(value: Any) -> str:
    """One property value as the string HubSpot's API takes.

    hubspot-contacts.json types every property value as a string
    (``SimplePublicObjectInput*`` / ``SimplePublicObjectBatchInput*``: ``properties`` has
    ``additionalProperties: {type: string}``). None clears the property, which HubSpot does
    with ""; booleans are "true"/"false" (checkbox values); numbers are plain decimal text
    (the shortest text that round-trips a float, never "1e-05" or "17.0"); datetimes are
    ISO 8601 UTC with milliseconds (a naive one is taken as UTC, as warehouses store them);
    dates are YYYY-MM-DD; a list is a multi-checkbox value, its items joined with ";".
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        text = format(number.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(wire_value(v) for v in value)
    if isinstance(value, Mapping):
        # Refused before sending (``_unwritable``); text here only so that nothing raises.
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _unwritable(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Fields whose value has no text HubSpot would take: per-record rejects.

    NaN and infinity; and nested data (an object, or a list holding objects or lists): a HubSpot
    property holds one value (a list of plain values is a multi-checkbox value, joined with ";").
    """
    problems = []
    for name, value in fields.items():
        if (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, Decimal) and not value.is_finite()
        ):
            problems.append((name, f"{value!r} is not a finite number; HubSpot takes numbers as decimal text"))
        elif isinstance(value, Mapping) or (
            isinstance(value, list | tuple | set | frozenset)
            and any(isinstance(v, Mapping | list | tuple | set | frozenset) for v in value)
        ):
            problems.append((name, f"{excerpt(repr(value))} is not a valid value for a HubSpot property (nested data)"))
    return problems


def _unknown_properties(body: Any) -> list[str]:
    """Names in a 400's ``PROPERTY_DOESNT_EXIST`` details (HubSpot's "Property values were not valid")."""
    if not isinstance(body, Mapping):
        return []
    names = [
        str(detail.get("in") or "?")
        for detail in body.get("errors") or []
        if isinstance(detail, Mapping) and detail.get("code") == "PROPERTY_DOESNT_EXIST"
    ]
    return list(dict.fromkeys(names))
