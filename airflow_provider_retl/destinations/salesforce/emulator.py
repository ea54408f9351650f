"""A local emulator of the Salesforce REST API: OAuth, sObject Collections, SOQL, Bulk API 2.0 ingest.

Same paths (``/services/oauth2/token``, ``/services/data/vXX.X/...``, any API
version), auth, JSON shapes, limits and error codes as Salesforce, so that both
our hook and ``simple-salesforce`` run against it unchanged:

- **Auth.** OAuth 2.0 ``password`` (username + password + security token, client
  id and secret) and ``client_credentials`` grants, client credentials in the
  form or as HTTP Basic; the SOAP ``login()`` call too (simple-salesforce's
  default for username/password/token). Access tokens expire after
  ``token_lifetime`` seconds; then every call answers 401
  ``[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]``.
- **Limits.** Every API response carries ``Sforce-Limit-Info: api-usage=n/N``.
  Past the org's allowance (``daily_limit``) calls answer 403
  ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests Limit exceeded." without
  Retry-After; more than ``max_concurrent`` calls in flight answer 403
  ``REQUEST_LIMIT_EXCEEDED`` "ConcurrentRequests ...". A request URI longer than
  16,384 bytes answers 414. Collections take at most 200 records.
- **sObject Collections.** ``POST|PATCH|DELETE /composite/sobjects`` and
  ``PATCH /composite/sobjects/{SObject}/{ExternalIdField}`` answer 200 with one
  result per record, in input order: ``{id, success, errors[, created]}``;
  ``allOrNone`` rolls everything back on one failure
  (``ALL_OR_NONE_OPERATION_ROLLED_BACK``). Problems with the request itself (an
  unknown field, a value of the wrong JSON type) fail it whole with 400.
- **sObject Rows.** ``POST /sobjects/{SObject}`` (201 ``{id, success, errors}``), ``GET|PATCH|DELETE
  /sobjects/{SObject}/{id}`` (200 record / 204 / 204; ``?fields=`` on GET), and by External ID ``GET|PATCH
  /sobjects/{SObject}/{field}/{value}``: upsert answers 201 ``{id, success, errors, created: true}`` on
  create and, on update, 200 ``{..., created: false}`` from API 46.0 on (204 before); more than one
  match is 300 with the matching records' URLs. They share the record store of the collections,
  SOQL and Bulk routes. Guesses: PATCH/DELETE with a malformed id answer 400 ``MALFORMED_ID`` (fields
  ``["Id"]``), GET with one non-id segment 404 "Provided external ID field does not exist or is not
  accessible", a deleted record 404 ``ENTITY_IS_DELETED``.
- **Errors.** Every error, the framework's own included (no route: 404 ``NOT_FOUND`` "The requested
  resource does not exist"; wrong method: 405 ``METHOD_NOT_ALLOWED``), is Salesforce's JSON array
  ``[{"message", "errorCode"[, "fields"]}]``.
- **SOQL** (``salesforce_soql``) with ``nextRecordsUrl`` paging (2,000 per page,
  or ``Sforce-Query-Options: batchSize=``).
- **Bulk API 2.0 ingest.** Jobs go Open -> UploadComplete -> InProgress ->
  JobComplete (or Failed/Aborted); processing takes ``bulk_processing_seconds``
  (+ ``bulk_seconds_per_record``) after UploadComplete, so clients must poll.
  Results are CSV (``sf__Id,sf__Created,...`` / ``sf__Id,sf__Error,...``) in an
  order that is not the input's.
- **Faults.** The shared ``Faults`` switches, plus ``lock_next(n)``: the next n
  record writes fail with ``UNABLE_TO_LOCK_ROW``.

What the emulator does not model: triggers, validation rules, sharing, record
types, duplicate rules, relationships in SOQL, the 100,000-character SOQL limit.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import csv
import hashlib
import hmac
import io
import itertools
import random
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from airflow_provider_retl.destinations.salesforce.emulator_schema import (
    FieldDef,
    IdFactory,
    RequestError,
    SObjectDef,
    check_value,
    coerce,
    custom_sobject,
    default_sobjects,
    format_value,
    id18,
    looks_like_id,
    record_error,
)
from airflow_provider_retl.destinations.salesforce.emulator_soql import parse as parse_soql
from airflow_provider_retl.testing.emulators.base import (
    ASGIApp,
    BaseEmulator,
    Message,
    Receive,
    Scope,
    Send,
    json_response,
)
from airflow_provider_retl.testing.emulators.connection import drain_request_body
from airflow_provider_retl.testing.emulators.faults import Faults

DEFAULT_USERNAME = "integration@example.com"
DEFAULT_PASSWORD = "emulator-password"
DEFAULT_SECURITY_TOKEN = "EmulatorSecurityToken42"
DEFAULT_CLIENT_ID = "3MVG9emulator.client.id"
DEFAULT_CLIENT_SECRET = "emulator-client-secret-0123456789"
DEFAULT_API_VERSION = "v62.0"
MAX_COLLECTION_SIZE = 200
MAX_URI_LENGTH = 16_384
QUERY_BATCH_SIZE = 2_000
NULL_MARKER = "#N/A"

_VERSION = re.compile(r"^v\d{2,3}\.\d$")
_UNAUTHENTICATED = ("/services/oauth2/", "/services/Soap/u/")
_JOB_STATES = ("Open", "UploadComplete", "InProgress", "JobComplete", "Failed", "Aborted")
_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
_ROLLED_BACK = record_error(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)

SObjectSpec = Sequence[FieldDef | Mapping[str, Any] | str]


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class StoredRecord:
    """A record as the emulator keeps it: values by canonical field name."""

    id: str
    values: dict[str, Any]
    created: str
    modified: str
    deleted: bool = False


@dataclass
class _Token:
    subject: str  # username or client id
    expires_at: float


@dataclass
class BulkJob:
    """A Bulk API 2.0 ingest job and what became of its rows."""

    id: str
    object: str
    operation: str
    external_id_field: str | None
    column_delimiter: str
    line_ending: str
    api_version: str
    created_date: str
    state: str = "Open"
    content: bytes | None = None
    due_at: float | None = None
    error_message: str | None = None
    header: list[str] = field(default_factory=list)
    successes: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Created, *row
    failures: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Error, *row
    unprocessed: list[list[str]] = field(default_factory=list)
    modstamp: str = ""

    def info(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": "005Hs00000ABCDEIA1",
            "createdDate": self.created_date,
            "systemModstamp": self.modstamp or self.created_date,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version.lstrip("v")),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/{self.api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        if self.external_id_field:
            body["externalIdFieldName"] = self.external_id_field
        if self.state in ("UploadComplete", "InProgress", "JobComplete", "Failed", "Aborted"):
            body.update(
                numberRecordsProcessed=len(self.successes) + len(self.failures),
                numberRecordsFailed=len(self.failures),
                retries=0,
                totalProcessingTime=0,
                apiActiveProcessingTime=0,
                apexProcessingTime=0,
            )
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


class SalesforceEmulator(BaseEmulator):
    """State and FastAPI app of a Salesforce emulator (start it with ``start_emulator("salesforce")``).

    ``users``: username -> password; with ``security_token`` set, logins must
    send password + token (as Salesforce requires outside trusted IP ranges).
    ``clients``: connected apps, client id -> client secret. ``sobjects``: extra
    fields for the default objects (Account, Contact, Lead, Custom__c) or new
    custom objects, e.g. ``{"Car__c": [{"name": "VIN__c", "externalId": True,
    "unique": True}, "Model__c"]}``. ``instance_url`` defaults to the URL the
    client reached the emulator at.
    """

    kind = "salesforce"

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        security_token: str | None = DEFAULT_SECURITY_TOKEN,
        clients: Mapping[str, str] | None = None,
        token_lifetime: float = 7200.0,
        daily_limit: int = 100_000,
        max_concurrent: int | None = None,
        sobjects: Mapping[str, SObjectSpec] | Sequence[SObjectDef] | None = None,
        max_batch_size: int = MAX_COLLECTION_SIZE,
        query_batch_size: int = QUERY_BATCH_SIZE,
        max_uri_length: int = MAX_URI_LENGTH,
        bulk_processing_seconds: float = 0.2,
        bulk_seconds_per_record: float = 0.0,
        request_latency: float = 0.0,
        latency_per_record: float = 0.0,
        shuffle_bulk_results: bool = True,
        instance_url: str | None = None,
        org_id: str = "00DHs000000EmuLMAS",
        faults: Faults | None = None,
        keep_requests: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = dict(users) if users is not None else {DEFAULT_USERNAME: DEFAULT_PASSWORD}
        self.security_token = security_token
        self.clients = dict(clients) if clients is not None else {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
        self.token_lifetime = float(token_lifetime)
        self.daily_limit = int(daily_limit)
        self.max_concurrent = max_concurrent
        self.max_batch_size = int(max_batch_size)
        self.query_batch_size = int(query_batch_size)
        self.max_uri_length = int(max_uri_length)
        self.bulk_processing_seconds = float(bulk_processing_seconds)
        self.bulk_seconds_per_record = float(bulk_seconds_per_record)
        self.request_latency = float(request_latency)
        self.latency_per_record = float(latency_per_record)
        self.shuffle_bulk_results = shuffle_bulk_results
        self.instance_url = instance_url.rstrip("/") if instance_url else None
        self.org_id = org_id
        self._clock = clock
        self._ids = IdFactory()
        self._types: dict[str, SObjectDef] = {}
        self._by_prefix: dict[str, str] = {}
        self._records: dict[str, dict[str, StoredRecord]] = {}
        self._unique: dict[str, dict[str, dict[str, str]]] = {}
        self._tokens: dict[str, _Token] = {}
        self._jobs: dict[str, BulkJob] = {}
        self._api_usage = 0
        self._in_flight = 0
        self._lock_next = 0
        self._rng = random.Random(0)
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self.tokens_issued = 0
        for definition in default_sobjects().values():
            self.add_sobject(definition)
        self._configure_sobjects(sobjects)
        super().__init__(faults=faults, keep_requests=keep_requests)

    # -- configuration -------------------------------------------------------------

    def add_sobject(self, definition: SObjectDef) -> None:
        """Register (or replace) an sObject type."""
        with self._lock_or_null():
            definition = definition.copy()
            definition.__post_init__()
            self._types[definition.name] = definition
            self._by_prefix[definition.key_prefix] = definition.name
            self._records.setdefault(definition.name, {})
            self._unique.setdefault(definition.name, {})
            for f in definition.indexed_fields():
                self._unique[definition.name].setdefault(f.name, {})

    def add_field(self, sobject: str, spec: FieldDef | Mapping[str, Any] | str) -> FieldDef:
        """Add a field to an sObject (as creating a custom field in Setup does)."""
        with self._lock_or_null():
            definition = self._sobject(sobject)
            added = definition.add_field(spec)
            if added.unique:
                index = self._unique[definition.name].setdefault(added.name, {})
                for record in self._records[definition.name].values():
                    value = record.values.get(added.name)
                    if value is not None and not record.deleted:
                        index[added.key(value)] = record.id
            return added

    def _configure_sobjects(self, sobjects: Mapping[str, SObjectSpec] | Sequence[SObjectDef] | None) -> None:
        if not sobjects:
            return
        if not isinstance(sobjects, Mapping):
            for definition in sobjects:
                self.add_sobject(definition)
            return
        prefixes = (f"a{n:02d}" for n in itertools.count(1))
        for name, specs in sobjects.items():
            if self._find_sobject(name) is not None:
                for spec in specs:
                    self.add_field(name, spec)
            else:
                self.add_sobject(custom_sobject(name, specs, next(prefixes)))

    def _lock_or_null(self) -> Any:
        lock = getattr(self, "lock", None)  # add_sobject runs in __init__, before BaseEmulator makes the lock
        return lock if lock is not None else _NullLock()

    # -- Python inspection API -----------------------------------------------------

    def sobjects(self) -> list[str]:
        """Names of the registered sObject types."""
        return sorted(self._types)

    def records(self, sobject: str = "Contact", include_deleted: bool = False) -> list[dict[str, Any]]:
        """Stored records as ``{"Id": ..., <field>: value}`` dicts, oldest first."""
        with self.lock:
            self._advance_jobs()
            name = self._sobject(sobject).name
            return [
                {"Id": r.id, **r.values, **({"IsDeleted": True} if r.deleted else {})}
                for r in self._records[name].values()
                if include_deleted or not r.deleted
            ]

    def get_record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """One record by id (deleted ones too) or None."""
        with self.lock:
            self._advance_jobs()
            record = self._records[self._sobject(sobject).name].get(id18(record_id))
            if record is None:
                return None
            return {"Id": record.id, **record.values, "IsDeleted": record.deleted}

    def find(self, sobject: str, field_name: str, value: Any) -> dict[str, Any] | None:
        """The first live record whose ``field_name`` matches ``value`` (text: any case), or None."""
        with self.lock:
            self._advance_jobs()
            definition = self._sobject(sobject)
            f = definition.field(field_name)
            if f is None:
                raise KeyError(f"{definition.name} has no field {field_name!r}")
            wanted = f.key(value)
            for record in self._records[definition.name].values():
                stored = record.values.get(f.name)
                if not record.deleted and stored is not None and f.key(stored) == wanted:
                    return {"Id": record.id, **record.values}
            return None

    def seed(self, sobject: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store records directly (no HTTP, no API usage), validated as a create; returns their ids."""
        ids = []
        with self.lock:
            definition = self._sobject(sobject)
            for raw in records:
                values = self._coerce_fields(definition, raw, source="json")
                error = self._check_write(definition, None, values)
                if error is not None:
                    raise ValueError(f"{error['statusCode']}: {error['message']}")
                ids.append(self._write(definition, None, values).id)
        return ids

    def lock_next(self, n: int = 1) -> None:
        """Make the next ``n`` record writes fail with UNABLE_TO_LOCK_ROW (a retryable per-record error)."""
        with self.lock:
            self._lock_next += int(n)

    def expire_tokens(self) -> None:
        """Expire every access token issued so far (the next API call answers 401 INVALID_SESSION_ID)."""
        with self.lock:
            for token in self._tokens.values():
                token.expires_at = float("-inf")

    @property
    def api_usage(self) -> int:
        """API requests counted against the org's daily allowance."""
        return self._api_usage

    def set_api_usage(self, used: int) -> None:
        """Pretend ``used`` requests were already made today."""
        with self.lock:
            self._api_usage = int(used)

    def jobs(self) -> list[dict[str, Any]]:
        """Bulk API 2.0 ingest jobs, oldest first, as ``GET /jobs/ingest/{id}`` describes them."""
        with self.lock:
            self._advance_jobs()
            return [job.info() for job in self._jobs.values()]

    def state(self) -> dict[str, Any]:
        """Records of every sObject, API usage and jobs, for ``GET /_emulator/state``."""
        with self.lock:
            self._advance_jobs()
            return {
                "orgId": self.org_id,
                "apiUsage": {"used": self._api_usage, "limit": self.daily_limit},
                "objects": {name: self.records(name) for name in self._types},
                "jobs": [job.info() for job in self._jobs.values()],
            }

    def reset_state(self) -> None:
        """Forget records, tokens, jobs and API usage (sObject definitions stay)."""
        with self.lock:
            for name, definition in self._types.items():
                self._records[name] = {}
                self._unique[name] = {f.name: {} for f in definition.indexed_fields()}
            self._tokens.clear()
            self._jobs.clear()
            self._cursors.clear()
            self._ids.reset()
            self._api_usage = 0
            self._lock_next = 0
            self.tokens_issued = 0

    # -- faults in Salesforce's shapes ------------------------------------------------

    def fault_error_body(self, status: int) -> Any:
        if status == 503:
            return [
                {
                    "message": "Server temporarily unavailable. Please try again later.",
                    "errorCode": "SERVER_UNAVAILABLE",
                }
            ]
        return [
            {
                "message": "An unexpected error occurred. Please include this ErrorId if you contact support: "
                f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**5)} (-{secrets.randbelow(10**9)})",
                "errorCode": "UNKNOWN_EXCEPTION",
            }
        ]

    def fault_rate_limit(self, retry_after: float) -> tuple[Any, dict[str, str]]:
        return [{"message": "Too many requests (injected fault)", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], {
            "Sforce-Limit-Info": self.limit_info()
        }

    def limit_info(self) -> str:
        return f"api-usage={self._api_usage}/{self.daily_limit}"

    # -- the API app -----------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        app = FastAPI(title="Salesforce emulator", openapi_url=None, docs_url=None, redoc_url=None)

        @app.exception_handler(RequestError)
        async def request_error(request: Request, exc: RequestError) -> Response:
            return json_response(exc.status, exc.body())

        # Every answer, including the framework's own (no route, wrong method, unparsable parameters), has
        # Salesforce's shape: a JSON array of {message, errorCode}, never FastAPI's {"detail": ...}.
        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if exc.status_code == 405:
                # Salesforce lists every method the resource takes; Starlette's Allow names only one route's.
                allowed = sorted(
                    {
                        m
                        for route in app.routes
                        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE
                        for m in route.methods
                    }
                )
                return json_response(
                    405,
                    [
                        {
                            "message": f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(allowed)}",
                            "errorCode": "METHOD_NOT_ALLOWED",
                        }
                    ],
                )
            if exc.status_code == 404:
                return json_response(
                    404, RequestError(404, "NOT_FOUND", "The requested resource does not exist").body()
                )
            return json_response(exc.status_code, [{"message": str(exc.detail), "errorCode": "UNKNOWN_EXCEPTION"}])

        @app.exception_handler(RequestValidationError)
        async def validation_error(request: Request, exc: RequestValidationError) -> Response:
            return json_response(400, [{"message": "The request could not be parsed", "errorCode": "MALFORMED_QUERY"}])

        # -- login
        @app.post("/services/oauth2/token")
        async def oauth_token(request: Request) -> Response:
            form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
            return self._oauth(form, request.headers.get("authorization", ""), self._instance(request))

        @app.post("/services/Soap/u/{version}")
        async def soap_login(version: str, request: Request) -> Response:
            return self._soap_login(await request.body(), version, self._instance(request))

        @app.get("/services/data")
        async def versions() -> Response:
            return json_response(
                200,
                [
                    {
                        "label": "Emulator",
                        "url": f"/services/data/{DEFAULT_API_VERSION}",
                        "version": DEFAULT_API_VERSION.lstrip("v"),
                    }
                ],
            )

        # -- metadata and limits
        @app.get("/services/data/{version}/limits")
        async def limits(version: str) -> Response:
            _check_version(version)
            remaining = max(0, self.daily_limit - self._api_usage)
            return json_response(
                200,
                {
                    "DailyApiRequests": {"Max": self.daily_limit, "Remaining": remaining},
                    "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                },
            )

        @app.get("/services/data/{version}/sobjects")
        async def global_describe(version: str) -> Response:
            _check_version(version)
            with self.lock:
                objects = [d.global_describe(version) for d in self._types.values()]
            return json_response(200, {"encoding": "UTF-8", "maxBatchSize": self.max_batch_size, "sobjects": objects})

        @app.get("/services/data/{version}/sobjects/{sobject}/describe")
        async def describe(version: str, sobject: str) -> Response:
            _check_version(version)
            with self.lock:
                return json_response(200, self._resource_sobject(sobject).describe(version))

        # -- sObject Rows (one record by id) and sObject Rows by External ID
        @app.get("/services/data/{version}/sobjects/{sobject}/{record_id}")
        async def get_record(version: str, sobject: str, record_id: str, request: Request) -> Response:
            _check_version(version)
            with self.lock:
                definition = self._resource_sobject(sobject)
                if not looks_like_id(record_id):
                    # One path segment that is not an id: Salesforce reads it as an external id field name.
                    raise RequestError(
                        404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}"
                    )
                record = self._records[definition.name].get(id18(record_id))
                if record is None or record.deleted:
                    raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
                fields = self._requested_fields(definition, request)
                return json_response(200, self._record_json(definition, record, fields, version))

        @app.patch("/services/data/{version}/sobjects/{sobject}/{record_id}")
        async def update_record(version: str, sobject: str, record_id: str, request: Request) -> Response:
            _check_version(version)
            body = _record_body(await _json(request))
            with self.lock:
                definition = self._resource_sobject(sobject)
                values = self._coerce_fields(definition, body)
                target = self._row(definition, record_id)
                result = self._update(definition, target.id, values)
            if not result["success"]:
                return _row_errors(400, result["errors"])
            return Response(status_code=204)

        @app.delete("/services/data/{version}/sobjects/{sobject}/{record_id}")
        async def delete_record(version: str, sobject: str, record_id: str) -> Response:
            _check_version(version)
            with self.lock:
                definition = self._resource_sobject(sobject)
                target = self._row(definition, record_id)
                [result] = self._delete([target.id], all_or_none=False)
            if not result["success"]:
                return _row_errors(400, result["errors"])
            return Response(status_code=204)

        @app.get("/services/data/{version}/sobjects/{sobject}/{field_name}/{value:path}")
        async def get_by_external_id(
            version: str, sobject: str, field_name: str, value: str, request: Request
        ) -> Response:
            _check_version(version)
            with self.lock:
                definition = self._resource_sobject(sobject)
                external = self._external_field(definition, field_name)
                matches = self._matches(definition, external, value)
                if not matches:
                    raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
                if len(matches) > 1:
                    return _multiple_choices(definition, matches, version)
                fields = self._requested_fields(definition, request)
                return json_response(200, self._record_json(definition, matches[0], fields, version))

        @app.patch("/services/data/{version}/sobjects/{sobject}/{field_name}/{value:path}")
        async def upsert_record(version: str, sobject: str, field_name: str, value: str, request: Request) -> Response:
            _check_version(version)
            body = _record_body(await _json(request))
            with self.lock:
                definition = self._resource_sobject(sobject)
                external = self._external_field(definition, field_name)
                values = self._coerce_fields(definition, body, skip=("id",))
                record_id: Any = None
                if external.name == "Id":
                    record_id = value
                else:
                    try:
                        # The URL's value is text whatever the field's type (as in Bulk API CSV).
                        values[external.name] = coerce(external, value, source="csv")
                    except ValueError:
                        raise RequestError(
                            400, "MALFORMED_QUERY", f"{external.name}: invalid value {value!r} in the request URI"
                        ) from None
                matches = self._matches(definition, external, value)
                if len(matches) > 1:
                    return _multiple_choices(definition, matches, version)
                result = self._upsert(definition, external, values, record_id, set())
            if not result["success"]:
                status = 404 if result["errors"][0]["statusCode"] == "NOT_FOUND" else 400
                return _row_errors(status, result["errors"])
            if result["created"]:
                return json_response(201, result)
            # "In API version 46.0 and later, 200 with the record's id; earlier versions answer 204."
            if float(version.lstrip("v")) >= 46.0:
                return json_response(200, result)
            return Response(status_code=204)

        @app.post("/services/data/{version}/sobjects/{sobject}")
        async def create_one(version: str, sobject: str, request: Request) -> Response:
            _check_version(version)
            body = await _json(request)
            if not isinstance(body, dict):
                raise RequestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
            with self.lock:
                definition = self._resource_sobject(sobject)
                values = self._coerce_fields(definition, {k: v for k, v in body.items() if k != "attributes"})
                result = self._create(definition, values)
            if not result["success"]:
                return json_response(
                    400,
                    [
                        {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
                        for e in result["errors"]
                    ],
                )
            return json_response(201, result)

        # -- sObject Collections
        @app.post("/services/data/{version}/composite/sobjects")
        async def collection_create(version: str, request: Request) -> Response:
            _check_version(version)
            all_or_none, records = _collection_body(await _json(request), self.max_batch_size)
            await self._record_latency(len(records))
            with self.lock:
                return json_response(200, self._collection(records, "create", all_or_none))

        @app.patch("/services/data/{version}/composite/sobjects")
        async def collection_update(version: str, request: Request) -> Response:
            _check_version(version)
            all_or_none, records = _collection_body(await _json(request), self.max_batch_size)
            await self._record_latency(len(records))
            with self.lock:
                return json_response(200, self._collection(records, "update", all_or_none))

        @app.patch("/services/data/{version}/composite/sobjects/{sobject}/{external_field}")
        async def collection_upsert(version: str, sobject: str, external_field: str, request: Request) -> Response:
            _check_version(version)
            all_or_none, records = _collection_body(await _json(request), self.max_batch_size)
            await self._record_latency(len(records))
            with self.lock:
                definition = self._resource_sobject(sobject)
                ext = definition.field(external_field)
                if ext is None:
                    raise RequestError(
                        404,
                        "NOT_FOUND",
                        f"Provided external ID field does not exist or is not accessible: {external_field}",
                    )
                if not ext.external_id and ext.name != "Id":
                    raise RequestError(
                        400,
                        "INVALID_FIELD",
                        f"Field {ext.name} is not an External ID or indexed field for {definition.name}",
                    )
                return json_response(200, self._collection(records, "upsert", all_or_none, definition, ext))

        @app.delete("/services/data/{version}/composite/sobjects")
        async def collection_delete(version: str, request: Request) -> Response:
            _check_version(version)
            raw_ids = request.query_params.get("ids") or ""
            ids = [i.strip() for i in raw_ids.split(",") if i.strip()]
            if not ids:
                raise RequestError(400, "MISSING_ARGUMENT", "ids parameter is required")
            if len(ids) > self.max_batch_size:
                raise RequestError(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    f"record limit reached. cannot submit more than {self.max_batch_size} records into this call",
                )
            all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
            await self._record_latency(len(ids))
            with self.lock:
                return json_response(200, self._delete(ids, all_or_none))

        # -- SOQL
        @app.get("/services/data/{version}/query")
        async def query(version: str, request: Request) -> Response:
            _check_version(version)
            return self._query(request, version, include_deleted=False)

        @app.get("/services/data/{version}/queryAll")
        async def query_all(version: str, request: Request) -> Response:
            _check_version(version)
            return self._query(request, version, include_deleted=True)

        @app.get("/services/data/{version}/query/{locator}")
        async def query_more(version: str, locator: str) -> Response:
            _check_version(version)
            return self._query_more(locator, version)

        @app.get("/services/data/{version}/queryAll/{locator}")
        async def query_all_more(version: str, locator: str) -> Response:
            _check_version(version)
            return self._query_more(locator, version)

        # -- Bulk API 2.0 ingest
        @app.post("/services/data/{version}/jobs/ingest")
        async def create_job(version: str, request: Request) -> Response:
            _check_version(version)
            body = await _json(request)
            with self.lock:
                return json_response(200, self._create_job(body, version).info())

        @app.get("/services/data/{version}/jobs/ingest")
        async def list_jobs(version: str) -> Response:
            _check_version(version)
            with self.lock:
                self._advance_jobs()
                return json_response(
                    200, {"done": True, "records": [j.info() for j in self._jobs.values()], "nextRecordsUrl": None}
                )

        @app.put("/services/data/{version}/jobs/ingest/{job_id}/batches")
        async def upload_job_data(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            content = await request.body()
            with self.lock:
                job = self._job(job_id)
                if job.state != "Open":
                    raise RequestError(409, "INVALIDJOB", f"Job {job.id} is not in the Open state: {job.state}")
                if job.content is not None:
                    raise RequestError(
                        400,
                        "BULK_API_ERROR",
                        f"Found multiple contents for job: <{job.id}>, please 'Close' / 'Abort' / 'Delete' the "
                        "current Job then create a new Job and make sure you only do 'PUT' once on a given Job.",
                    )
                job.content = content
            return Response(status_code=201)

        @app.patch("/services/data/{version}/jobs/ingest/{job_id}")
        async def set_job_state(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            body = await _json(request)
            with self.lock:
                return json_response(200, self._set_job_state(self._job(job_id), body).info())

        @app.get("/services/data/{version}/jobs/ingest/{job_id}")
        async def get_job(version: str, job_id: str) -> Response:
            _check_version(version)
            with self.lock:
                job = self._job(job_id)
                self._advance_jobs(observed=job)
                return json_response(200, job.info())

        @app.delete("/services/data/{version}/jobs/ingest/{job_id}")
        async def delete_job(version: str, job_id: str) -> Response:
            _check_version(version)
            with self.lock:
                job = self._job(job_id)
                if job.state not in ("UploadComplete", "JobComplete", "Aborted", "Failed"):
                    raise RequestError(400, "INVALIDJOB", f"Job {job.id} cannot be deleted in state {job.state}")
                del self._jobs[job.id]
            return Response(status_code=204)

        @app.get("/services/data/{version}/jobs/ingest/{job_id}/{results}")
        async def job_results(version: str, job_id: str, results: str) -> Response:
            _check_version(version)
            with self.lock:
                job = self._job(job_id)
                self._advance_jobs(observed=job)
                return self._job_results(job, results)

        return _Gate(app, self)

    # -- auth ---------------------------------------------------------------------------

    def _instance(self, request: Request) -> str:
        if self.instance_url:
            return self.instance_url
        host = request.headers.get("host") or "127.0.0.1"
        return f"http://{host}"

    def _issue_token(self, subject: str) -> str:
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        with self.lock:
            self._tokens[token] = _Token(subject, self._clock() + self.token_lifetime)
            self.tokens_issued += 1
        return token

    def token_subject(self, token: str | None) -> str | None:
        """Who an access token belongs to, or None when it is unknown or expired."""
        if not token:
            return None
        with self.lock:
            info = self._tokens.get(token)
            if info is None or info.expires_at <= self._clock():
                return None
            return info.subject

    def _password_ok(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        if expected is None:
            return False
        wanted = expected + (self.security_token or "")
        return hmac.compare_digest(password.encode(), wanted.encode())

    def _oauth(self, form: Mapping[str, str], authorization: str, instance: str) -> Response:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
                client_id, _, client_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                return _oauth_error("invalid_client", "invalid client credentials")
        grant = form.get("grant_type")
        if grant not in ("password", "client_credentials"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if not client_id or client_id not in self.clients:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not client_secret or not hmac.compare_digest(client_secret.encode(), self.clients[client_id].encode()):
            return _oauth_error("invalid_client", "invalid client credentials")
        if grant == "password":
            username = form.get("username") or ""
            if not self._password_ok(username, form.get("password") or ""):
                return _oauth_error("invalid_grant", "authentication failure")
            subject = username
        else:
            subject = client_id
        token = self._issue_token(subject)
        issued_at = str(int(time.time() * 1000))
        identity = f"https://login.salesforce.com/id/{self.org_id}/005Hs00000ABCDEIA1"
        signature = base64.b64encode(
            hmac.new(self.clients[client_id].encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        return json_response(
            200,
            {
                "access_token": token,
                "instance_url": instance,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": signature,
            },
        )

    def _soap_login(self, body: bytes, version: str, instance: str) -> Response:
        try:
            root = ET.fromstring(body)
            username = next((e.text or "" for e in root.iter() if e.tag.endswith("}username")), "")
            password = next((e.text or "" for e in root.iter() if e.tag.endswith("}password")), "")
        except ET.ParseError:
            return _soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
        if not self._password_ok(username, password):
            return _soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
        token = self._issue_token(username)
        server_url = f"{instance}/services/Soap/u/{version}/{self.org_id[:15]}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{xml_escape(instance)}/services/Soap/m/{version}/{self.org_id[:15]}"
            "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{xml_escape(server_url)}</serverUrl><sessionId>{xml_escape(token)}</sessionId>"
            f"<userId>005Hs00000ABCDEIA1</userId><userInfo><organizationId>{self.org_id}</organizationId>"
            f"<userName>{xml_escape(username)}</userName></userInfo></result></loginResponse></soapenv:Body>"
            "</soapenv:Envelope>"
        )
        return Response(content=xml, status_code=200, media_type="text/xml")

    # -- records --------------------------------------------------------------------------

    def _find_sobject(self, name: str) -> SObjectDef | None:
        wanted = str(name).lower()
        return next((d for n, d in self._types.items() if n.lower() == wanted), None)

    def _sobject(self, name: str) -> SObjectDef:
        definition = self._find_sobject(name)
        if definition is None:
            raise KeyError(f"unknown sObject {name!r}; known: {', '.join(sorted(self._types))}")
        return definition

    def _resource_sobject(self, name: str) -> SObjectDef:
        definition = self._find_sobject(name)
        if definition is None:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        return definition

    def _row(self, definition: SObjectDef, record_id: str) -> StoredRecord:
        """The live record ``record_id`` of this sObject, or the error Salesforce answers for it."""
        if not looks_like_id(record_id):
            raise RequestError(
                400, "MALFORMED_ID", f"{definition.name} ID: id value of incorrect type: {record_id}", ["Id"]
            )
        record = self._records[definition.name].get(id18(record_id))
        if record is None:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        if record.deleted:
            raise RequestError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _external_field(self, definition: SObjectDef, name: str) -> FieldDef:
        f = definition.field(name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise RequestError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}"
            )
        return f

    def _matches(self, definition: SObjectDef, f: FieldDef, value: Any) -> list[StoredRecord]:
        """Every live record whose ``f`` equals ``value`` (an external id need not be unique)."""
        if f.name == "Id" or f.unique:
            record = self._lookup(definition, f, value)
            return [record] if record is not None else []
        try:
            wanted = f.key(coerce(f, value, source="csv"))
        except ValueError:
            return []
        return [
            r
            for r in self._records[definition.name].values()
            if not r.deleted and r.values.get(f.name) is not None and f.key(r.values[f.name]) == wanted
        ]

    def _requested_fields(self, definition: SObjectDef, request: Request) -> list[str]:
        wanted = [n.strip() for n in (request.query_params.get("fields") or "").split(",") if n.strip()]
        if not wanted:
            return list(definition.fields)
        names = []
        for name in wanted:
            f = definition.field(name)
            if f is None:
                raise RequestError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{definition.name}'. If you are attempting to use a custom "
                    "field, be sure to append the '__c' after the custom field name.",
                )
            names.append(f.name)
        return names

    def _typed_sobject(self, record: Mapping[str, Any]) -> SObjectDef:
        attributes = record.get("attributes")
        kind = attributes.get("type") if isinstance(attributes, Mapping) else None
        if not kind:
            raise RequestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        definition = self._find_sobject(str(kind))
        if definition is None:
            raise RequestError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.")
        return definition

    def _coerce_fields(
        self, definition: SObjectDef, raw: Mapping[str, Any], *, source: str = "json", skip: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Field values by canonical name; an unknown field or a value of the wrong type fails the request."""
        skipped = {s.lower() for s in skip}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name.lower() in skipped:
                continue
            f = definition.field(name)
            if f is None:
                raise RequestError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {definition.name}"
                )
            try:
                values[f.name] = coerce(f, value, source=source)
            except ValueError:
                kind = {
                    "int": "int",
                    "double": "double",
                    "currency": "double",
                    "percent": "double",
                    "boolean": "boolean",
                    "date": "Date",
                    "datetime": "DateTime",
                }.get(f.type, "String")
                token = "VALUE_STRING" if isinstance(value, str) else f"VALUE_{type(value).__name__.upper()}"
                raise RequestError(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {kind} from {token} "
                    f"value {value} or request may be missing a required field at [line:1, "
                    "column:1]",
                ) from None
        return values

    def _check_write(
        self, definition: SObjectDef, target: StoredRecord | None, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first per-record error of writing ``values`` (create when ``target`` is None), or None."""
        if self._lock_next > 0:
            self._lock_next -= 1
            suffix = f": {target.id}" if target is not None else ""
            return record_error(
                "UNABLE_TO_LOCK_ROW", f"unable to obtain exclusive access to this record or 1 records{suffix}"
            )
        creating = target is None
        for name in values:
            f = definition.fields[name]
            if (creating and not f.createable) or (not creating and not f.updateable):
                verb = "create" if creating else "update"
                return record_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to {verb} fields: {name}. Please check the security settings of this field and verify "
                    "that it is read/write for your profile or permission set.",
                    [name],
                )
        if creating:
            missing = [
                f.name for f in definition.fields.values() if f.required_on_create and values.get(f.name) in (None, "")
            ]
            if missing:
                return record_error(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
                )
        for name, value in values.items():
            f = definition.fields[name]
            if f.type == "reference" and value not in (None, "") and not looks_like_id(value):
                return record_error("MALFORMED_ID", f"{f.display_label}: id value of incorrect type: {value}", [name])
            error = check_value(f, value, creating=creating)
            if error is not None:
                return error
        for f in definition.indexed_fields():
            value = values.get(f.name)
            if value in (None, ""):
                continue
            holder = self._unique[definition.name][f.name].get(f.key(value))
            if holder is not None and (target is None or holder != target.id):
                return record_error(
                    "DUPLICATE_VALUE", f"duplicate value found: {f.name} duplicates value on record with id: {holder}"
                )
        return None

    def _write(self, definition: SObjectDef, target: StoredRecord | None, values: Mapping[str, Any]) -> StoredRecord:
        stamp = _now_text()
        creating = target is None
        if target is None:
            target = StoredRecord(self._ids.new(definition.key_prefix), {}, stamp, stamp)
            self._records[definition.name][target.id] = target
        else:
            self._unindex(definition, target)
        for name, value in values.items():
            if value is None or value == "":
                target.values.pop(name, None)
            else:
                target.values[name] = value
        if creating:
            for f in definition.fields.values():
                if f.type == "boolean" and f.createable and f.name not in target.values:
                    target.values[f.name] = False
        target.modified = stamp
        self._index(definition, target)
        return target

    def _index(self, definition: SObjectDef, record: StoredRecord) -> None:
        for f in definition.indexed_fields():
            value = record.values.get(f.name)
            if value not in (None, ""):
                self._unique[definition.name].setdefault(f.name, {})[f.key(value)] = record.id

    def _unindex(self, definition: SObjectDef, record: StoredRecord) -> None:
        for f in definition.indexed_fields():
            value = record.values.get(f.name)
            index = self._unique[definition.name].get(f.name, {})
            if value not in (None, "") and index.get(f.key(value)) == record.id:
                del index[f.key(value)]

    def _lookup(self, definition: SObjectDef, f: FieldDef, value: Any) -> StoredRecord | None:
        if f.name == "Id":
            record = self._records[definition.name].get(id18(str(value))) if looks_like_id(value) else None
            return record if record is not None and not record.deleted else None
        if f.unique:
            holder = self._unique[definition.name].get(f.name, {}).get(f.key(value))
            return self._records[definition.name].get(holder) if holder else None
        wanted = f.key(value)
        return next(
            (
                r
                for r in self._records[definition.name].values()
                if not r.deleted and r.values.get(f.name) is not None and f.key(r.values[f.name]) == wanted
            ),
            None,
        )

    def _create(self, definition: SObjectDef, values: Mapping[str, Any]) -> dict[str, Any]:
        error = self._check_write(definition, None, values)
        if error is not None:
            return {"success": False, "errors": [error]}
        return {"id": self._write(definition, None, values).id, "success": True, "errors": []}

    def _collection(
        self,
        records: list[Any],
        action: str,
        all_or_none: bool,
        upsert_type: SObjectDef | None = None,
        external: FieldDef | None = None,
    ) -> list[dict[str, Any]]:
        """Apply a collections call record by record, in order; roll back everything on request."""
        parsed: list[tuple[SObjectDef, dict[str, Any], Any]] = []
        for record in records:
            if not isinstance(record, dict):
                raise RequestError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
            definition = self._typed_sobject(record)
            if upsert_type is not None and definition.name != upsert_type.name:
                raise RequestError(
                    400,
                    "INVALID_TYPE",
                    f"sObject type '{definition.name}' does not match {upsert_type.name} in the request URI",
                )
            raw = {k: v for k, v in record.items() if k != "attributes"}
            record_id = next((v for k, v in raw.items() if k.lower() == "id"), None)
            values = self._coerce_fields(definition, raw, skip=("id",))
            parsed.append((definition, values, record_id))

        snapshot = self._snapshot({d.name for d, _, _ in parsed}) if all_or_none else None
        duplicates: set[str] = set()
        if action == "upsert" and external is not None:
            seen: dict[str, int] = {}
            for _, values, record_id in parsed:
                value = values.get(external.name, record_id if external.name == "Id" else None)
                if value not in (None, ""):
                    key = external.key(value)
                    seen[key] = seen.get(key, 0) + 1
            duplicates = {k for k, n in seen.items() if n > 1}

        results = []
        for definition, values, record_id in parsed:
            if action == "create":
                if record_id is not None:
                    results.append(
                        {
                            "success": False,
                            "errors": [record_error("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])],
                        }
                    )
                    continue
                results.append(self._create(definition, values))
            elif action == "update":
                results.append(self._update(definition, record_id, values))
            else:
                assert external is not None
                results.append(self._upsert(definition, external, values, record_id, duplicates))
        if snapshot is not None and any(not r["success"] for r in results):
            self._restore(snapshot)
            results = [
                {
                    **({"id": r["id"]} if "id" in r and action != "create" else {}),
                    "success": False,
                    "errors": r["errors"] if not r["success"] else [dict(_ROLLED_BACK)],
                }
                for r in results
            ]
        return results

    def _update(self, definition: SObjectDef, record_id: Any, values: Mapping[str, Any]) -> dict[str, Any]:
        if record_id in (None, ""):
            return {
                "success": False,
                "errors": [record_error("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])],
            }
        if not looks_like_id(record_id):
            return {
                "success": False,
                "errors": [
                    record_error(
                        "MALFORMED_ID", f"{definition.name} ID: id value of incorrect type: {record_id}", ["Id"]
                    )
                ],
            }
        target = self._records[definition.name].get(id18(str(record_id)))
        if target is None:
            return {
                "id": record_id,
                "success": False,
                "errors": [record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")],
            }
        if target.deleted:
            return {
                "id": target.id,
                "success": False,
                "errors": [record_error("ENTITY_IS_DELETED", "entity is deleted")],
            }
        error = self._check_write(definition, target, values)
        if error is not None:
            return {"id": target.id, "success": False, "errors": [error]}
        self._write(definition, target, values)
        return {"id": target.id, "success": True, "errors": []}

    def _upsert(
        self,
        definition: SObjectDef,
        external: FieldDef,
        values: Mapping[str, Any],
        record_id: Any,
        duplicates: set[str],
    ) -> dict[str, Any]:
        value = record_id if external.name == "Id" else values.get(external.name)
        if value in (None, ""):
            return {
                "success": False,
                "errors": [record_error("MISSING_ARGUMENT", f"{external.name} not specified", [external.name])],
            }
        if external.key(value) in duplicates:
            return {
                "success": False,
                "errors": [
                    record_error("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [external.name])
                ],
            }
        target = self._lookup(definition, external, value)
        if target is None and external.name == "Id":
            return {
                "success": False,
                "errors": [
                    record_error("NOT_FOUND", "Provided external ID field does not exist or is not accessible: Id")
                ],
            }
        error = self._check_write(definition, target, values)
        if error is not None:
            return {"success": False, "errors": [error]}
        written = self._write(definition, target, values)
        return {"id": written.id, "success": True, "errors": [], "created": target is None}

    def _delete(self, ids: list[str], all_or_none: bool) -> list[dict[str, Any]]:
        touched = {self._by_prefix.get(i[:3], "") for i in ids} - {""}
        snapshot = self._snapshot(touched) if all_or_none else None
        results = []
        for raw in ids:
            if not looks_like_id(raw):
                results.append({"id": raw, "success": False, "errors": [record_error("MALFORMED_ID", f"bad id {raw}")]})
                continue
            name = self._by_prefix.get(raw[:3])
            record = self._records[name].get(id18(raw)) if name else None
            if record is None:
                results.append(
                    {
                        "id": raw,
                        "success": False,
                        "errors": [record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")],
                    }
                )
                continue
            if record.deleted:
                results.append(
                    {
                        "id": record.id,
                        "success": False,
                        "errors": [record_error("ENTITY_IS_DELETED", "entity is deleted")],
                    }
                )
                continue
            if self._lock_next > 0:
                self._lock_next -= 1
                results.append(
                    {
                        "id": record.id,
                        "success": False,
                        "errors": [
                            record_error(
                                "UNABLE_TO_LOCK_ROW",
                                f"unable to obtain exclusive access to this record or 1 records: {record.id}",
                            )
                        ],
                    }
                )
                continue
            assert name is not None
            self._unindex(self._types[name], record)
            record.deleted = True
            record.modified = _now_text()
            results.append({"id": record.id, "success": True, "errors": []})
        if snapshot is not None and any(not r["success"] for r in results):
            self._restore(snapshot)
            results = [
                {"id": r["id"], "success": False, "errors": r["errors"] if not r["success"] else [dict(_ROLLED_BACK)]}
                for r in results
            ]
        return results

    def _snapshot(self, names: Iterable[str]) -> dict[str, Any]:
        return {n: (copy.deepcopy(self._records[n]), copy.deepcopy(self._unique[n])) for n in names}

    def _restore(self, snapshot: Mapping[str, Any]) -> None:
        for name, (records, unique) in snapshot.items():
            self._records[name] = records
            self._unique[name] = unique

    async def _record_latency(self, n: int) -> None:
        if self.latency_per_record > 0 and n:
            await asyncio.sleep(self.latency_per_record * n)

    # -- SOQL -------------------------------------------------------------------------------

    def _record_json(
        self, definition: SObjectDef, record: StoredRecord, fields: Sequence[str], version: str
    ) -> dict[str, Any]:
        system = {
            "Id": record.id,
            "IsDeleted": record.deleted,
            "CreatedDate": record.created,
            "LastModifiedDate": record.modified,
            "SystemModstamp": record.modified,
        }
        out: dict[str, Any] = {
            "attributes": {
                "type": definition.name,
                "url": f"/services/data/{version}/sobjects/{definition.name}/{record.id}",
            }
        }
        for name in fields:
            out[name] = system[name] if name in system else record.values.get(name)
        return out

    def _query(self, request: Request, version: str, *, include_deleted: bool) -> Response:
        soql = request.query_params.get("q")
        if not soql:
            raise RequestError(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch = self.query_batch_size
        options = request.headers.get("sforce-query-options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        if match:
            batch = max(200, min(2000, int(match.group(1))))
        with self.lock:
            query = parse_soql(soql, self._types)
            definition = query.sobject
            stored = [r for r in self._records[definition.name].values() if include_deleted or not r.deleted]
            views = []
            for r in stored:
                view = dict(r.values)
                view.update(
                    Id=r.id,
                    IsDeleted=r.deleted,
                    CreatedDate=r.created,
                    LastModifiedDate=r.modified,
                    SystemModstamp=r.modified,
                )
                views.append(view)
            rows = query.run(views)
            if query.count_only:
                return json_response(200, {"totalSize": len(rows), "done": True, "records": []})
            by_id = {r.id: r for r in stored}
            records = [self._record_json(definition, by_id[row["Id"]], query.fields, version) for row in rows]
        return self._query_page(records, 0, batch, version, secrets.token_hex(7))

    def _query_page(self, records: list[dict[str, Any]], start: int, batch: int, version: str, cursor: str) -> Response:
        page = records[start : start + batch]
        body: dict[str, Any] = {"totalSize": len(records), "done": start + batch >= len(records), "records": page}
        if not body["done"]:
            locator = f"01g{cursor}-{start + batch}"
            with self.lock:
                self._cursors[cursor] = (records, batch)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}"
        return json_response(200, body)

    def _query_more(self, locator: str, version: str) -> Response:
        match = re.match(r"^01g([0-9a-f]+)-(\d+)$", locator)
        with self.lock:
            cursor = self._cursors.get(match.group(1)) if match else None
        if match is None or cursor is None:
            raise RequestError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, batch = cursor
        return self._query_page(records, int(match.group(2)), batch, version, match.group(1))

    # -- Bulk API 2.0 ---------------------------------------------------------------------------

    def _job(self, job_id: str) -> BulkJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _create_job(self, body: Any, version: str) -> BulkJob:
        if not isinstance(body, dict):
            raise RequestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation = body.get("operation")
        if operation not in ("insert", "update", "upsert", "delete", "hardDelete"):
            raise RequestError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        definition = self._find_sobject(str(body.get("object") or ""))
        if definition is None:
            raise RequestError(400, "INVALIDJOB", f"InvalidJob : Invalid sObject type: {body.get('object')}")
        external = body.get("externalIdFieldName")
        if operation == "upsert":
            if not external:
                raise RequestError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : External ID was blank for {definition.name}. "
                    "An External ID must be specified for upsert.",
                )
            ext = definition.field(str(external))
            if ext is None or (not ext.external_id and ext.name != "Id"):
                raise RequestError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {external} is not an "
                    f"External ID or indexed field for {definition.name}",
                )
            external = ext.name
        if body.get("contentType", "CSV") != "CSV":
            raise RequestError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in _DELIMITERS or line_ending not in ("LF", "CRLF"):
            raise RequestError(400, "INVALIDJOB", "InvalidJob : invalid columnDelimiter or lineEnding")
        job = BulkJob(
            id=self._ids.new("750"),
            object=definition.name,
            operation=operation,
            external_id_field=external if operation == "upsert" else None,
            column_delimiter=delimiter,
            line_ending=line_ending,
            api_version=version,
            created_date=_now_text(),
        )
        self._jobs[job.id] = job
        return job

    def _set_job_state(self, job: BulkJob, body: Any) -> BulkJob:
        wanted = body.get("state") if isinstance(body, dict) else None
        if wanted == "UploadComplete":
            if job.state != "Open":
                raise RequestError(409, "INVALIDJOB", f"Job {job.id} is not Open: {job.state}")
            job.state = "UploadComplete"
            rows = job.content.count(b"\n") if job.content else 0
            job.due_at = self._clock() + self.bulk_processing_seconds + rows * self.bulk_seconds_per_record
        elif wanted == "Aborted":
            if job.state not in ("Open", "UploadComplete", "InProgress"):
                raise RequestError(409, "INVALIDJOB", f"Job {job.id} cannot be aborted in state {job.state}")
            job.state = "Aborted"
            self._mark_unprocessed(job)
        else:
            raise RequestError(400, "INVALIDJOB", f"InvalidJob : invalid state: {wanted}")
        job.modstamp = _now_text()
        return job

    def _advance_jobs(self, observed: BulkJob | None = None) -> None:
        """Process jobs whose time has come; a job seen UploadComplete is seen InProgress next."""
        now = self._clock()
        for job in self._jobs.values():
            if job.state in ("UploadComplete", "InProgress") and job.due_at is not None and now >= job.due_at:
                self._process(job)
            elif job is observed and job.state == "UploadComplete":
                job.state = "InProgress"

    def _parse_job_rows(self, job: BulkJob) -> tuple[list[str], list[list[str]]]:
        text = (job.content or b"").decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DELIMITERS[job.column_delimiter])
        rows = [r for r in reader if r != []]
        if not rows:
            return [], []
        return rows[0], rows[1:]

    def _mark_unprocessed(self, job: BulkJob) -> None:
        header, rows = self._parse_job_rows(job)
        done = len(job.successes) + len(job.failures)
        job.header = header
        job.unprocessed = rows[done:]

    def _process(self, job: BulkJob) -> None:
        definition = self._types[job.object]
        header, rows = self._parse_job_rows(job)
        job.header = header
        job.modstamp = _now_text()
        if job.content is None or not header:
            job.state, job.error_message = "Failed", "InvalidBatch : Failed to process query: no data uploaded"
            return
        columns: list[FieldDef] = []
        for name in header:
            f = definition.field(name)
            if f is None:
                job.state = "Failed"
                job.error_message = f"InvalidBatch : InvalidBatch : Field name not found : {name}"
                job.unprocessed = rows
                return
            columns.append(f)
        external = definition.field(job.external_id_field) if job.external_id_field else None
        seen: dict[str, int] = {}
        if external is not None and external.name in [c.name for c in columns]:
            position = [c.name for c in columns].index(external.name)
            for row in rows:
                if position < len(row) and row[position]:
                    key = external.key(row[position])
                    seen[key] = seen.get(key, 0) + 1
        duplicates = {k for k, n in seen.items() if n > 1}
        for row in rows:
            self._process_row(job, definition, columns, row, external, duplicates)
        if self.shuffle_bulk_results:
            self._rng.shuffle(job.successes)
        job.state = "JobComplete"

    def _process_row(
        self,
        job: BulkJob,
        definition: SObjectDef,
        columns: list[FieldDef],
        row: list[str],
        external: FieldDef | None,
        duplicates: set[str],
    ) -> None:
        def fail(code: str, message: str, fields: Sequence[str] = (), record_id: str = "") -> None:
            job.failures.append([record_id, f"{code}:{message}:{','.join(fields)} --", *row])

        if len(row) != len(columns):
            fail("INVALID_FIELD", f"Number of values ({len(row)}) does not match the header ({len(columns)})")
            return
        raw: dict[str, Any] = {}
        for f, cell in zip(columns, row, strict=True):
            if cell == "":
                continue  # an empty cell leaves the field as it is
            raw[f.name] = None if cell == NULL_MARKER else cell
        record_id = raw.pop("Id", None)
        values: dict[str, Any] = {}
        for name, cell in raw.items():
            f = definition.fields[name]
            try:
                values[name] = coerce(f, cell, source="csv")
            except ValueError:
                fail(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.display_label}: value not of required type: {cell}", [name]
                )
                return
        if job.operation in ("delete", "hardDelete"):
            result = self._delete([str(record_id or "")], False)[0]
        elif job.operation == "insert":
            result = self._create(definition, values)
        elif job.operation == "update":
            result = self._update(definition, record_id, values)
        else:
            assert external is not None
            result = self._upsert(definition, external, values, record_id, duplicates)
        if result["success"]:
            created = result.get("created", job.operation == "insert")
            job.successes.append([result["id"], "true" if created else "false", *row])
        else:
            error = result["errors"][0]
            fail(error["statusCode"], error["message"], error["fields"], result.get("id", ""))

    def _job_results(self, job: BulkJob, kind: str) -> Response:
        if kind not in ("successfulResults", "failedResults", "unprocessedrecords"):
            raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        if kind != "unprocessedrecords" and job.state not in ("JobComplete", "Failed", "Aborted"):
            raise RequestError(400, "INVALIDJOB", f"Job {job.id} is not in a terminal state: {job.state}")
        header, rows = job.header, []
        if kind == "successfulResults":
            header, rows = ["sf__Id", "sf__Created", *job.header], job.successes
        elif kind == "failedResults":
            header, rows = ["sf__Id", "sf__Error", *job.header], job.failures
        else:
            if not job.header:
                job.header, _ = self._parse_job_rows(job)
            header, rows = job.header, job.unprocessed
        out = io.StringIO()
        writer = csv.writer(
            out,
            quoting=csv.QUOTE_ALL,
            lineterminator="\n" if job.line_ending == "LF" else "\r\n",
            delimiter=_DELIMITERS[job.column_delimiter],
        )
        if header:
            writer.writerow(header)
        writer.writerows(rows)
        return Response(
            content=out.getvalue().encode("utf-8"),
            status_code=200,
            media_type="text/csv",
            headers={"Sforce-NumberOfRecords": str(len(rows)), "Sforce-Locator": "null"},
        )


class _Gate:
    """ASGI layer in front of the routes: URI length, auth, concurrency and daily limits, usage header."""

    def __init__(self, app: ASGIApp, emulator: SalesforceEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        emulator = self.emulator
        raw_uri = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        if len(raw_uri) + (len(query) + 1 if query else 0) > emulator.max_uri_length:
            await drain_request_body(receive)
            body = (
                b"<html><head><title>414 Request-URI Too Large</title></head><body><h1>Request-URI Too Large"
                b"</h1><p>The request URI exceeds the 16384 byte limit.</p></body></html>"
            )
            await Response(content=body, status_code=414, media_type="text/html")(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/")}
            path = scope["path"]
        if path.startswith(_UNAUTHENTICATED) or path == "/services/data":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if emulator.token_subject(token) is None:
            await drain_request_body(receive)
            errors = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            await json_response(401, errors)(scope, receive, send)
            return
        with emulator.lock:
            concurrent = emulator.max_concurrent is not None and emulator._in_flight >= emulator.max_concurrent
            over = not concurrent and emulator._api_usage >= emulator.daily_limit
            if not concurrent and not over:
                emulator._api_usage += 1
                emulator._in_flight += 1
            info = emulator.limit_info()
        if concurrent or over:
            await drain_request_body(receive)
            message = (
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded."
                if concurrent
                else "TotalRequests Limit exceeded."
            )
            await json_response(
                403, [{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}], {"Sforce-Limit-Info": info}
            )(scope, receive, send)
            return
        extra = [(b"sforce-limit-info", info.encode())]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            if emulator.request_latency > 0:
                await asyncio.sleep(emulator.request_latency)
            await self.app(scope, receive, send_with_headers)
        finally:
            with emulator.lock:
                emulator._in_flight -= 1


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- helpers ----------------------------------------------------------------------------------


def _check_version(version: str) -> None:
    if not _VERSION.match(version):
        raise RequestError(404, "NOT_FOUND", "The requested resource does not exist")


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400, "JSON_PARSER_ERROR", f"Unexpected character at [line:{exc.lineno}, column:{exc.colno}]: {exc.msg}"
        ) from None


def _record_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    return {k: v for k, v in body.items() if k != "attributes"}


def _row_errors(status: int, errors: Sequence[Mapping[str, Any]]) -> Response:
    """Record errors (``statusCode``) as a single-record call answers them: ``[{message, errorCode, fields}]``."""
    return json_response(
        status,
        [
            {"message": e["message"], "errorCode": e["statusCode"], "fields": list(e.get("fields") or [])}
            for e in errors
        ],
    )


def _multiple_choices(definition: SObjectDef, records: Sequence[StoredRecord], version: str) -> Response:
    # 300 Multiple Choices: "the external ID exists in more than one record"; the body lists their URLs.
    return json_response(300, [f"/services/data/{version}/sobjects/{definition.name}/{r.id}" for r in records])


def _collection_body(body: Any, limit: int) -> tuple[bool, list[Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise RequestError(400, "JSON_PARSER_ERROR", 'The request body must be {"allOrNone": ..., "records": [...]}')
    records = body["records"]
    if len(records) > limit:
        raise RequestError(
            400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {limit} records into this call"
        )
    return bool(body.get("allOrNone", False)), records


def _oauth_error(error: str, description: str) -> Response:
    return json_response(400, {"error": error, "error_description": description})


def _soap_fault(code: str, message: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {xml_escape(message)}</faultstring><detail>"
        f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{xml_escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(content=xml, status_code=500, media_type="text/xml")


__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_PASSWORD",
    "DEFAULT_SECURITY_TOKEN",
    "DEFAULT_USERNAME",
    "BulkJob",
    "SalesforceEmulator",
    "format_value",
]
