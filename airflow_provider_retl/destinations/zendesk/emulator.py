"""A local emulator of the Zendesk Support (Ticketing) API v2: users, organizations, their custom
field definitions and the asynchronous bulk jobs that write them.

Same paths (with or without ``.json``), auth, JSON shapes and limits, as far as the public
documentation, the ``zenpy`` SDK and answers quoted by Zendesk's own staff show them:

- Auth: basic auth ``{email}/token:{api_token}`` (API token) or ``Authorization: Bearer
  <oauth token>``; anything else is 401 ``{"error": "Couldn't authenticate you"}``.
- ``POST /api/v2/users/create_or_update_many`` takes up to 100 records (more: 400
  ``TooManyValues``) and answers 200 ``{"job_status": {id, url, status: "queued", total,
  progress, results: null}}``; the work happens later, in the background. Users match on
  ``external_id`` first, then ``email`` (case-insensitive). Zendesk's document
  (``zendesk-support-oas.yaml``) has no ``/organizations/create_or_update_many``: that path
  answers the unknown-endpoint 404 ``{"error": "InvalidEndpoint", "description": "Not
  found"}``; organizations have ``create_many``, ``update_many`` (``{"organizations": [{id,
  ...}]}`` batch, or ``?ids=`` / ``?external_ids=`` with one ``{"organization": {...}}``),
  ``show_many?ids=|external_ids=``, ``search?external_id=|name=``, ``destroy_many`` and the
  single-record ``create_or_update`` (external id or id, never name). ``GET
  /api/v2/job_statuses/{id}`` goes ``queued`` -> ``working`` -> ``completed`` (or ``failed``
  / ``killed``) and then lists ``results[]`` in request order (``JobStatusResultObject``):
  ``{"id": 245, "action": "create" | "update", "success": true, "status": "Created" |
  "Updated", "email"/"external_id": ...}``, and for a refused record exactly the
  ``FailedResult`` fields ``{"id": <input index>, "action", "success": false, "error": "...",
  "details": "Email: x is not properly formatted"}`` (the id rule quoted by Zendesk staff on
  their forum; no ``"status": "Failed"``, which would also match ``UpdateResourceResult`` and
  break the document's ``oneOf``). ``create_many`` results are ``{"id", "index"}``
  (``CreateResourceResult``); ``update_many`` and ``destroy_many`` results are ``{"id",
  "action", "status", "success"}`` (``UpdateResourceResult``).
- At most 30 jobs queued or working per account: the 31st job request is 429. Job statuses
  can be read for an hour (``job_ttl``), then 404.
- ``GET /api/v2/users/show_many?ids=`` / ``?external_ids=`` (up to 100), ``GET
  /api/v2/users/search?query=`` / ``?external_id=``, ``GET|PUT /api/v2/users/{id}``,
  ``GET /api/v2/users/me``, ``DELETE /api/v2/users/destroy_many?ids=`` (a job), and the same
  for organizations (``search?name=``). ``GET /api/v2/user_fields`` and
  ``/organization_fields`` list custom field definitions; values live in the record's
  ``user_fields`` / ``organization_fields`` object.
- A rolling window of requests per minute per account (700 by default, Enterprise): over it,
  429 ``APIRateLimitExceeded`` with ``Retry-After`` in whole seconds; every answer carries
  ``X-Rate-Limit`` and ``X-Rate-Limit-Remaining``.

Guesses (not found in the documentation, kept plausible): the body of the 31st-job 429
(``TooManyJobs``) and its ``Retry-After``; the body of a bulk call over 100 records; the
``error`` names and ``details`` wording of invalid phones, custom field values, taken
emails/external ids and unknown ids in jobs; that unknown custom field keys are ignored
(``unknown_custom_fields="ignore"``, switchable to ``"reject"``); the shape of ``failed``
jobs (no results). Agents that authenticate are not part of the users the API lists.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from airflow_provider_retl.testing.emulators.ratelimit import RollingWindowLimiter, RollingWindowRateLimited

__all__ = [
    "DEFAULT_API_TOKEN",
    "DEFAULT_EMAIL",
    "DEFAULT_OAUTH_TOKEN",
    "DEFAULT_SUBDOMAIN",
    "CustomFieldDef",
    "ZendeskEmulator",
]

DEFAULT_SUBDOMAIN = "acme"
DEFAULT_EMAIL = "agent@example.com"
DEFAULT_API_TOKEN = "zd-api-token-0123456789abcdef"
DEFAULT_OAUTH_TOKEN = "zd-oauth-token-0123456789abcdef"
MAX_BULK = 100
MAX_SHOW_MANY = 100
MAX_ACTIVE_JOBS = 30
JOB_TTL_SECONDS = 3600.0
#: Job statuses ``GET /api/v2/job_statuses`` lists ("Zendesk only logs the last 100 jobs").
MAX_LISTED_JOBS = 100

FIELD_TYPES = ("text", "textarea", "integer", "decimal", "checkbox", "date", "dropdown", "regexp", "multiselect")
ROLES = ("end-user", "agent", "admin")

#: Writable standard attributes (anything else in a record is ignored, as Zendesk does).
USER_ATTRIBUTES = frozenset(
    {
        "name",
        "email",
        "external_id",
        "alias",
        "details",
        "notes",
        "phone",
        "shared_phone_number",
        "role",
        "locale",
        "locale_id",
        "time_zone",
        "organization_id",
        "tags",
        "verified",
        "signature",
        "moderator",
        "ticket_restriction",
        "only_private_comments",
        "restricted_agent",
        "suspended",
        "custom_role_id",
        "default_group_id",
        "remote_photo_url",
        "skip_verify_email",
        "identities",
        "organization",
    }
)
ORGANIZATION_ATTRIBUTES = frozenset(
    {"name", "external_id", "details", "notes", "domain_names", "group_id", "shared_tickets", "shared_comments", "tags"}
)
MAX_NAME_CHARS = 255
MAX_EXTERNAL_ID_CHARS = 255

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


#: UserObject attributes the document declares nullable (its first anyOf branch).
_USER_NULLABLE = frozenset(
    {
        "custom_role_id",
        "external_id",
        "organization_id",
        "phone",
        "photo",
        "role_type",
        "shared_phone_number",
        "suspension_details",
        "ticket_restriction",
        "two_factor_auth_enabled",
    }
)


class ZendeskError(Exception):
    """Raised in a handler to answer with Zendesk's error body ``{"error", "description", "details"}``."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description or error)
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if description is not None:
            self.body["description"] = description
        if details is not None:
            self.body["details"] = dict(details)
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return json_response(self.status, self.body, self.headers)


def _not_found() -> ZendeskError:
    return ZendeskError(404, "RecordNotFound", "Not found")


@dataclass
class CustomFieldDef:
    """A custom user or organization field: ``key``, ``type`` and, for dropdowns, option values."""

    key: str
    type: str = "text"
    title: str | None = None
    options: tuple[str, ...] = ()
    regexp: str | None = None
    active: bool = True
    id: int = 0

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"custom field type must be one of {', '.join(FIELD_TYPES)}; got {self.type!r}")
        self.options = tuple(str(o) for o in self.options)
        if self.title is None:
            self.title = self.key.replace("_", " ").capitalize()

    @classmethod
    def from_spec(cls, key: str, spec: Any) -> CustomFieldDef:
        """``"integer"``, ``{"type": "dropdown", "options": [...]}`` or a ``CustomFieldDef``."""
        if isinstance(spec, CustomFieldDef):
            return spec
        if isinstance(spec, str):
            return cls(key=key, type=spec)
        if isinstance(spec, Mapping):
            return cls(
                key=key,
                type=str(spec.get("type", "text")),
                title=spec.get("title"),
                options=tuple(spec.get("options") or ()),
                regexp=spec.get("regexp") or spec.get("regexp_for_validation"),
                active=bool(spec.get("active", True)),
            )
        raise TypeError(f"custom field {key!r}: expected a type name, a dict or a CustomFieldDef; got {spec!r}")

    def to_json(self, base_url: str, kind: str) -> dict[str, Any]:
        stamp = "2024-01-01T00:00:00Z"
        body: dict[str, Any] = {
            "url": f"{base_url}/api/v2/{kind}/{self.id}.json",
            "id": self.id,
            "type": self.type,
            "key": self.key,
            "title": self.title,
            "raw_title": self.title,
            "description": "",
            "raw_description": "",
            "position": 0,
            "active": self.active,
            "system": False,
            "regexp_for_validation": self.regexp,
            "created_at": stamp,
            "updated_at": stamp,
        }
        if self.type in ("dropdown", "multiselect"):
            body["custom_field_options"] = [
                {"id": self.id * 1000 + n, "name": o.replace("_", " ").title(), "raw_name": o, "value": o}
                for n, o in enumerate(self.options, 1)
            ]
        return body

    def coerce(self, value: Any) -> tuple[Any, str | None]:
        """The stored value, or an error detail (guessed wording)."""
        if value is None or value == "":
            return None, None
        bad = f"{self.title}: {value!r} is not a valid {self.type} value"
        kind = self.type
        if kind == "integer":
            if isinstance(value, bool):
                return None, bad
            try:
                number = int(str(value).strip())
            except ValueError:
                return None, bad
            return number, None
        if kind == "decimal":
            if isinstance(value, bool):
                return None, bad
            try:
                return float(str(value).strip()), None
            except ValueError:
                return None, bad
        if kind == "checkbox":
            if isinstance(value, bool):
                return value, None
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True, None
            if text in ("false", "0", "no"):
                return False, None
            return None, bad
        if kind == "date":
            text = str(value).strip()[:10]
            try:
                date.fromisoformat(text)
            except ValueError:
                return None, bad
            return text, None
        if kind == "dropdown":
            if str(value) not in self.options:
                return None, f"{self.title}: {value!r} is not one of the field's options"
            return str(value), None
        if kind == "multiselect":
            values = value if isinstance(value, list) else [value]
            unknown = [v for v in values if str(v) not in self.options]
            if unknown:
                return None, f"{self.title}: {unknown[0]!r} is not one of the field's options"
            return [str(v) for v in values], None
        if kind == "regexp" and self.regexp and not re.fullmatch(self.regexp, str(value)):
            return None, f"{self.title}: {value!r} does not match the field's pattern"
        return str(value), None


@dataclass
class Job:
    """A background job and what it returns when polled."""

    id: str
    job_type: str
    total: int
    account: str
    work: Callable[[], list[dict[str, Any]]] | None
    created: float  # time.time()
    status: str = "queued"
    progress: int = 0
    results: list[dict[str, Any]] | None = None
    message: str | None = None
    outcome: str | None = None  # an injected final status ("failed" / "killed")
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "working")

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"{base_url}/api/v2/job_statuses/{self.id}.json",
            "job_type": self.job_type,
            "total": self.total,
            "progress": self.progress,
            "status": self.status,
            "message": self.message,
            "results": self.results,
        }


@dataclass
class _Kind:
    """What differs between users and organizations."""

    plural: str  # users / organizations
    singular: str  # user / organization
    fields_key: str  # user_fields / organization_fields
    fields_path: str  # user_fields / organization_fields (definitions endpoint)
    attributes: frozenset[str]
    second_key: str  # email / name: matched after external_id
    error: str  # the error name of a refused record in a job result
    label: str  # "User" / "Organization" in messages


USERS = _Kind("users", "user", "user_fields", "user_fields", USER_ATTRIBUTES, "email", "UserUpdateError", "User")
ORGANIZATIONS = _Kind(
    "organizations",
    "organization",
    "organization_fields",
    "organization_fields",
    ORGANIZATION_ATTRIBUTES,
    "name",
    "OrganizationUpdateError",
    "Organization",
)
KINDS = {"users": USERS, "organizations": ORGANIZATIONS}


@dataclass
class _Store:
    """Records of one kind, with their case-insensitive unique indexes."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_external_id: dict[str, int] = field(default_factory=dict)
    by_second: dict[str, int] = field(default_factory=dict)  # email (users) / name (organizations)
    fields: dict[str, CustomFieldDef] = field(default_factory=dict)


class ZendeskEmulator(RollingWindowRateLimited, BaseEmulator):
    """State and FastAPI app of a Zendesk Support emulator (``start_emulator("zendesk")``).

    ``api_tokens``: ``{agent email: API token}`` accepted with ``{email}/token`` basic auth;
    ``oauth_tokens``: accepted bearer tokens. ``user_fields`` / ``organization_fields``:
    custom field definitions, ``{key: type or {"type", "options", "regexp"}}``.
    ``processing_seconds``: how long a job takes (queued for the first half, working for the
    second). ``max_active_jobs`` (30) and ``job_ttl`` (an hour) as in Zendesk; ``rate_limit``
    requests per ``rate_window`` seconds per account (None: no limit).
    """

    kind = "zendesk"

    def __init__(
        self,
        api_tokens: Mapping[str, str] | None = None,
        *,
        oauth_tokens: Iterable[str] = (DEFAULT_OAUTH_TOKEN,),
        subdomain: str = DEFAULT_SUBDOMAIN,
        user_fields: Mapping[str, Any] | None = None,
        organization_fields: Mapping[str, Any] | None = None,
        unknown_custom_fields: str = "ignore",
        processing_seconds: float = 0.05,
        max_active_jobs: int = MAX_ACTIVE_JOBS,
        job_ttl: float = JOB_TTL_SECONDS,
        max_bulk: int = MAX_BULK,
        rate_limit: int | None = 700,
        rate_window: float = 60.0,
        faults: Faults | None = None,
        keep_requests: int = 1000,
    ) -> None:
        if unknown_custom_fields not in ("ignore", "reject"):
            raise ValueError("unknown_custom_fields must be 'ignore' or 'reject'")
        tokens = {DEFAULT_EMAIL: DEFAULT_API_TOKEN} if api_tokens is None else api_tokens
        self.api_tokens = {str(e).lower(): str(t) for e, t in tokens.items()}
        self.oauth_tokens = set(oauth_tokens)
        self.subdomain = subdomain
        self.unknown_custom_fields = unknown_custom_fields
        self.processing_seconds = float(processing_seconds)
        self.max_active_jobs = int(max_active_jobs)
        self.job_ttl = float(job_ttl)
        self.max_bulk = int(max_bulk)
        self.limiter = RollingWindowLimiter(rate_limit, rate_window)
        self._ids = itertools.count(360_000_001)
        self._field_ids = itertools.count(9_000_001)
        self._stores: dict[str, _Store] = {"users": _Store(), "organizations": _Store()}
        self._jobs: dict[str, Job] = {}
        self._job_outcomes: list[tuple[str, str]] = []  # injected (status, message) for the next jobs
        self._jobs_held = False
        self._held: list[Job] = []
        self.peak_active_jobs = 0
        self.rejected_jobs = 0
        super().__init__(faults=faults, keep_requests=keep_requests)
        for key, spec in (user_fields or {}).items():
            self.add_custom_field("users", key, spec)
        for key, spec in (organization_fields or {}).items():
            self.add_custom_field("organizations", key, spec)

    # -- configuration and inspection (Python API) -------------------------------------

    def add_custom_field(self, object_type: str, key: str, spec: Any = "text") -> CustomFieldDef:
        """Define a custom user or organization field (as an admin does in Zendesk)."""
        definition = CustomFieldDef.from_spec(key, spec)
        with self.lock:
            definition.id = next(self._field_ids)
            self._store(object_type).fields[definition.key] = definition
        return definition

    def users(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Stored users as the API returns them, oldest first."""
        return self.records("users", include_deleted)

    def organizations(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        return self.records("organizations", include_deleted)

    def records(self, object_type: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            store = self._store(object_type)
            found = [self._record_json(KINDS[_plural(object_type)], r) for r in store.records.values()]
            if include_deleted:
                found += [self._record_json(KINDS[_plural(object_type)], r) for r in store.deleted.values()]
            return sorted(found, key=lambda r: r["id"])

    def find(
        self, object_type: str, *, external_id: str | None = None, email: str | None = None, name: str | None = None
    ) -> dict[str, Any] | None:
        """The active record with this external id (or email / name), or None."""
        with self.lock:
            kind = KINDS[_plural(object_type)]
            store = self._store(object_type)
            record_id = None
            if external_id is not None:
                record_id = store.by_external_id.get(str(external_id).lower())
            elif email is not None or name is not None:
                record_id = store.by_second.get(str(email if email is not None else name).strip().lower())
            record = store.records.get(record_id) if record_id is not None else None
            return self._record_json(kind, record) if record is not None else None

    def seed(self, object_type: str, records: Iterable[Mapping[str, Any]]) -> list[int]:
        """Store records directly (no HTTP, no job); invalid ones raise ``ValueError``."""
        kind = KINDS[_plural(object_type)]
        ids = []
        with self.lock:
            for item in records:
                target = self._match(kind, item)
                values, errors = self._check(kind, item, target)
                if errors:
                    raise ValueError("; ".join(errors))
                ids.append(self._write(kind, target, values)["id"])
        return ids

    def jobs(self) -> list[dict[str, Any]]:
        """Every job still known, oldest first (status, total, results)."""
        with self.lock:
            return [j.to_json(self._base_url) for j in sorted(self._jobs.values(), key=lambda j: j.created)]

    @property
    def active_jobs(self) -> int:
        with self.lock:
            return sum(1 for j in self._jobs.values() if j.active)

    def fail_next_jobs(self, n: int = 1, status: str = "failed", message: str | None = None) -> None:
        """Make the next ``n`` jobs end ``failed`` or ``killed`` without doing their work."""
        if status not in ("failed", "killed"):
            raise ValueError("status must be 'failed' or 'killed'")
        with self.lock:
            self._job_outcomes.extend([(status, message or f"{status.capitalize()} (injected)")] * int(n))

    def hold_jobs(self) -> None:
        """Keep new jobs queued until ``release_jobs()`` (to fill the job queue on purpose)."""
        with self.lock:
            self._jobs_held = True

    def release_jobs(self) -> None:
        with self.lock:
            self._jobs_held = False
            held, self._held = self._held, []
        for job in held:
            self._schedule(job, self.processing_seconds / 2, self._start_job)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "subdomain": self.subdomain,
                "users": self.users(),
                "organizations": self.organizations(),
                "deleted": {
                    "users": sorted(self._store("users").deleted),
                    "organizations": sorted(self._store("organizations").deleted),
                },
                "user_fields": sorted(self._store("users").fields),
                "organization_fields": sorted(self._store("organizations").fields),
                "jobs": self.jobs(),
                "active_jobs": self.active_jobs,
                "peak_active_jobs": self.peak_active_jobs,
                "rejected_jobs": self.rejected_jobs,
                "rateLimit": {"limit": self.limiter.limit, "windowSeconds": self.limiter.window},
            }

    def reset_state(self) -> None:
        """Forget records, jobs and rate-limit windows (custom field definitions stay)."""
        with self.lock:
            for store in self._stores.values():
                store.records.clear()
                store.deleted.clear()
                store.by_external_id.clear()
                store.by_second.clear()
            self._jobs.clear()
            self._job_outcomes.clear()
            self._held.clear()
            self._jobs_held = False
            self.peak_active_jobs = 0
            self.rejected_jobs = 0
            self.limiter.reset()

    # -- auth ----------------------------------------------------------------------------

    def account_for(self, authorization: str) -> str | None:
        """The account an Authorization header authenticates, or None (401)."""
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return self.subdomain if value and value in self.oauth_tokens else None
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user, _, secret = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        email, slash, token_word = user.rpartition("/")
        if not slash or token_word != "token":
            return None  # password auth is switched off (Zendesk deprecated it)
        expected = self.api_tokens.get(email.strip().lower())
        return self.subdomain if expected is not None and secrets.compare_digest(expected, secret) else None

    # -- faults in Zendesk's shapes --------------------------------------------------------

    def fault_error_body(self, status: int) -> dict[str, Any]:
        if status == 503:
            return {"error": "ServiceUnavailable", "description": "Service temporarily unavailable"}
        return {"error": "InternalError", "description": "Something went wrong (injected fault)"}

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        return _rate_limit_body(), {"X-Rate-Limit": str(self.limiter.limit or 0), "X-Rate-Limit-Remaining": "0"}

    # -- the API app ---------------------------------------------------------------------

    @property
    def _base_url(self) -> str:
        return getattr(self, "_seen_base_url", f"https://{self.subdomain}.zendesk.com")

    def build_api(self) -> ASGIApp:
        app = FastAPI(title="Zendesk Support emulator", openapi_url=None, docs_url=None, redoc_url=None)

        async def on_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, ZendeskError)
            return exc.response()

        async def on_http_error(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            if status == 405:
                return json_response(405, {"error": "MethodNotAllowed"})
            return json_response(404, {"error": "InvalidEndpoint", "description": "Not found"})

        async def on_validation_error(request: Request, exc: Exception) -> Response:
            return json_response(400, {"error": "InvalidValue", "description": str(exc)[:200]})

        app.add_exception_handler(ZendeskError, on_error)
        app.add_exception_handler(StarletteHTTPException, on_http_error)
        app.add_exception_handler(RequestValidationError, on_validation_error)

        @app.get("/api/v2/users/me")
        async def me(request: Request) -> Response:
            return json_response(200, {"user": self._agent_json(request)})

        @app.get("/api/v2/user_fields")
        async def user_fields() -> Response:
            return self._field_definitions(USERS)

        @app.get("/api/v2/organization_fields")
        async def organization_fields() -> Response:
            return self._field_definitions(ORGANIZATIONS)

        @app.get("/api/v2/job_statuses")
        async def list_jobs() -> Response:
            with self.lock:
                self._expire_jobs()
                jobs = sorted(self._jobs.values(), key=lambda j: j.created)[-MAX_LISTED_JOBS:]
                return json_response(200, {"job_statuses": [j.to_json(self._base_url) for j in jobs]})

        @app.get("/api/v2/job_statuses/show_many")
        async def show_jobs(request: Request) -> Response:
            ids = _csv(request.query_params.get("ids"))
            with self.lock:
                self._expire_jobs()
                found = [self._jobs[i].to_json(self._base_url) for i in ids if i in self._jobs]
            return json_response(200, {"job_statuses": found})

        @app.get("/api/v2/job_statuses/{job_id}")
        async def show_job(job_id: str) -> Response:
            with self.lock:
                self._expire_jobs()
                job = self._jobs.get(job_id)
                if job is None:
                    raise _not_found()
                return json_response(200, {"job_status": job.to_json(self._base_url)})

        for kind in (USERS, ORGANIZATIONS):
            self._add_kind_routes(app, kind)

        return _ZendeskFront(app, self)

    def _add_kind_routes(self, app: FastAPI, kind: _Kind) -> None:
        base = f"/api/v2/{kind.plural}"

        if kind is ORGANIZATIONS:
            # Documented for users only. Without this route the path would hit PUT/GET {record_id} and
            # answer 405; Zendesk answers its unknown-endpoint 404.
            @app.post(base + "/create_or_update_many")
            async def no_create_or_update_many() -> Response:
                return json_response(404, {"error": "InvalidEndpoint", "description": "Not found"})

        else:

            @app.post(base + "/create_or_update_many")
            async def create_or_update_many(request: Request) -> Response:
                items = self._bulk_items(kind, await _json(request))
                return self._submit(
                    kind,
                    f"bulk_create_or_update_{kind.plural}",
                    items,
                    lambda: [self._upsert_one(kind, i, item) for i, item in enumerate(items)],
                )

        @app.post(base + "/create_many")
        async def create_many(request: Request) -> Response:
            items = self._bulk_items(kind, await _json(request))
            return self._submit(
                kind,
                f"bulk_create_{kind.plural}",
                items,
                lambda: [self._create_one(kind, i, item) for i, item in enumerate(items)],
            )

        @app.put(base + "/update_many")
        async def update_many(request: Request) -> Response:
            body = await _json(request)
            ids = _csv(request.query_params.get("ids"))
            external_ids = _csv(request.query_params.get("external_ids"))
            if (ids or external_ids) and isinstance(body, dict) and isinstance(body.get(kind.singular), dict):
                change = body[kind.singular]
                targets: list[Any] = [("id", v) for v in ids] + [("external_id", v) for v in external_ids]
                items = [{**change, "__target": t} for t in targets]
                self._check_count(len(items))
            else:
                items = self._bulk_items(kind, body)
            return self._submit(
                kind, f"bulk_update_{kind.plural}", items, lambda: [self._update_one(kind, item) for item in items]
            )

        @app.delete(base + "/destroy_many")
        async def destroy_many(request: Request) -> Response:
            ids = _csv(request.query_params.get("ids"))
            external_ids = _csv(request.query_params.get("external_ids"))
            targets = [("id", v) for v in ids] + [("external_id", v) for v in external_ids]
            if not targets:
                raise ZendeskError(400, "InvalidValue", "ids or external_ids parameter is required")
            self._check_count(len(targets))
            return self._submit(
                kind, f"bulk_delete_{kind.plural}", targets, lambda: [self._destroy_one(kind, t) for t in targets]
            )

        @app.get(base + "/show_many")
        async def show_many(request: Request) -> Response:
            ids = _csv(request.query_params.get("ids"))
            external_ids = _csv(request.query_params.get("external_ids"))
            if not ids and not external_ids:
                raise ZendeskError(400, "InvalidValue", "ids or external_ids parameter is required")
            self._check_count(len(ids) + len(external_ids), MAX_SHOW_MANY)
            with self.lock:
                store = self._stores[kind.plural]
                found: dict[int, dict[str, Any]] = {}
                for value in ids:
                    record = store.records.get(_int_or_none(value) or -1)
                    if record is not None:
                        found[record["id"]] = record
                for value in external_ids:
                    record_id = store.by_external_id.get(value.lower())
                    if record_id is not None:
                        found[record_id] = store.records[record_id]
                records = [self._record_json(kind, r) for r in found.values()]
            return json_response(200, _page(kind.plural, records))

        @app.get(base + "/search")
        async def search(request: Request) -> Response:
            return self._search(kind, request)

        @app.post(base + "/create_or_update")
        async def create_or_update_one(request: Request) -> Response:
            body = await _json(request)
            item = body.get(kind.singular) if isinstance(body, dict) else None
            if not isinstance(item, dict):
                raise ZendeskError(400, "InvalidValue", f"{kind.singular} parameter is required")
            with self.lock:
                target = self._match(kind, item)
                values, errors = self._check(kind, item, target)
                if errors:
                    raise _record_invalid(errors)
                record = self._write(kind, target, values)
                payload = {kind.singular: self._record_json(kind, record)}
            return json_response(200 if target is not None else 201, payload)

        @app.get(base)
        async def list_all() -> Response:
            with self.lock:
                records = [self._record_json(kind, r) for r in self._stores[kind.plural].records.values()]
            return json_response(200, _page(kind.plural, records))

        @app.get(base + "/{record_id}")
        async def show_one(record_id: str) -> Response:
            with self.lock:
                record = self._stores[kind.plural].records.get(_int_or_none(record_id) or -1)
                if record is None:
                    raise _not_found()
                return json_response(200, {kind.singular: self._record_json(kind, record)})

        @app.put(base + "/{record_id}")
        async def update_one(record_id: str, request: Request) -> Response:
            body = await _json(request)
            item = body.get(kind.singular) if isinstance(body, dict) else None
            if not isinstance(item, dict):
                raise ZendeskError(400, "InvalidValue", f"{kind.singular} parameter is required")
            with self.lock:
                target = self._stores[kind.plural].records.get(_int_or_none(record_id) or -1)
                if target is None:
                    raise _not_found()
                values, errors = self._check(kind, item, target)
                if errors:
                    raise _record_invalid(errors)
                record = self._write(kind, target, values)
                return json_response(200, {kind.singular: self._record_json(kind, record)})

        @app.delete(base + "/{record_id}")
        async def delete_one(record_id: str) -> Response:
            with self.lock:
                target = self._stores[kind.plural].records.get(_int_or_none(record_id) or -1)
                if target is None:
                    raise _not_found()
                self._delete(kind, target)
            return Response(status_code=204)

    # -- handlers ------------------------------------------------------------------------

    def _store(self, object_type: str) -> _Store:
        return self._stores[_plural(object_type)]

    def _check_count(self, count: int, limit: int | None = None) -> None:
        limit = self.max_bulk if limit is None else limit
        if count > limit:
            raise ZendeskError(
                400, "TooManyValues", f"You have exceeded the limit of {limit} records per request ({count} given)"
            )

    def _bulk_items(self, kind: _Kind, body: Any) -> list[Any]:
        items = body.get(kind.plural) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ZendeskError(400, "InvalidValue", f"{kind.plural} parameter is required and must be an array")
        self._check_count(len(items))
        return items

    def _field_definitions(self, kind: _Kind) -> Response:
        with self.lock:
            fields = [d.to_json(self._base_url, kind.fields_path) for d in self._stores[kind.plural].fields.values()]
        return json_response(
            200, {kind.fields_path: fields, "next_page": None, "previous_page": None, "count": len(fields)}
        )

    def _search(self, kind: _Kind, request: Request) -> Response:
        params = request.query_params
        with self.lock:
            store = self._stores[kind.plural]
            matches: list[dict[str, Any]] = []
            if params.get("external_id") is not None:
                record_id = store.by_external_id.get(params["external_id"].lower())
                matches = [store.records[record_id]] if record_id is not None else []
            elif kind is ORGANIZATIONS and params.get("name") is not None:
                record_id = store.by_second.get(params["name"].strip().lower())
                matches = [store.records[record_id]] if record_id is not None else []
            elif params.get("query") is not None:
                matches = self._query(kind, store, params["query"])
            else:
                raise ZendeskError(400, "InvalidValue", "query, external_id or name parameter is required")
            records = [self._record_json(kind, r) for r in matches]
        return json_response(200, _page(kind.plural, records))

    @staticmethod
    def _query(kind: _Kind, store: _Store, query: str) -> list[dict[str, Any]]:
        text = query.strip()
        prefix, colon, rest = text.partition(":")
        value = rest.strip().strip('"').lower() if colon else text.strip('"').lower()
        if colon and prefix in ("email", "external_id", "name"):
            index = store.by_external_id if prefix == "external_id" else store.by_second
            record_id = index.get(value)
            return [store.records[record_id]] if record_id is not None else []
        # A bare query: an exact email, or a part of the name.
        return [
            r
            for r in store.records.values()
            if str(r.get(kind.second_key) or "").lower() == value or value in str(r.get("name") or "").lower()
        ]

    def _agent_json(self, request: Request) -> dict[str, Any]:
        auth = request.headers.get("authorization", "")
        email = DEFAULT_EMAIL
        if auth.lower().startswith("basic "):
            try:
                email = base64.b64decode(auth[6:].strip()).decode().partition(":")[0].rpartition("/")[0]
            except (ValueError, UnicodeDecodeError):
                pass
        return {
            "id": 1,
            "url": f"{self._base_url}/api/v2/users/1.json",
            "name": "Emulator Agent",
            "email": email,
            "role": "admin",
            "active": True,
            "verified": True,
            "time_zone": "UTC",
            "locale": "en-US",
        }

    # -- jobs ----------------------------------------------------------------------------

    def _submit(
        self, kind: _Kind, job_type: str, items: Sequence[Any], work: Callable[[], list[dict[str, Any]]]
    ) -> Response:
        with self.lock:
            self._expire_jobs()
            active = [j for j in self._jobs.values() if j.active]
            if len(active) >= self.max_active_jobs:
                self.rejected_jobs += 1
                raise ZendeskError(
                    429,
                    "TooManyJobs",
                    f"Number of allowed background jobs exceeded: {self.max_active_jobs} jobs are already queued "
                    "or running for this account. Wait for some to finish and try again.",
                    headers={"Retry-After": str(max(1, math.ceil(self.processing_seconds)))},
                )
            job = Job(
                id=secrets.token_hex(16),
                job_type=job_type,
                total=len(items),
                account=self.subdomain,
                work=work,
                created=time.time(),
            )
            if self._job_outcomes:
                job.outcome, job.message = self._job_outcomes.pop(0)
            self._jobs[job.id] = job
            self.peak_active_jobs = max(self.peak_active_jobs, len(active) + 1)
            held = self._jobs_held
            if held:
                self._held.append(job)
            payload = {"job_status": job.to_json(self._base_url)}
        if not held:
            self._schedule(job, self.processing_seconds / 2, self._start_job)
        return json_response(200, payload)

    @staticmethod
    def _schedule(job: Job, delay: float, step: Callable[[Job], None]) -> None:
        timer = threading.Timer(max(0.0, delay), step, args=(job,))
        timer.daemon = True
        timer.start()

    def _start_job(self, job: Job) -> None:
        with self.lock:
            if job.id not in self._jobs or job.status != "queued":
                return
            job.status = "working"
            job.progress = job.total // 2 if job.outcome is None else 0
        self._schedule(job, self.processing_seconds / 2, self._finish_job)

    def _finish_job(self, job: Job) -> None:
        with self.lock:
            if job.id not in self._jobs or job.status != "working":
                return
            job.finished_at = time.time()
            if job.outcome is not None:
                job.status = job.outcome
                job.results = None
                return
            assert job.work is not None
            job.results = job.work()
            job.work = None
            job.progress = job.total
            job.status = "completed"
            job.message = f"Completed at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S +0000')}"

    def _expire_jobs(self) -> None:
        cutoff = time.time() - self.job_ttl
        for job_id in [j.id for j in self._jobs.values() if j.created < cutoff and not j.active]:
            del self._jobs[job_id]

    # -- per-record work (runs under the lock, inside a job) ---------------------------------

    def _match(self, kind: _Kind, item: Mapping[str, Any]) -> dict[str, Any] | None:
        store = self._stores[kind.plural]
        external_id = item.get("external_id")
        if external_id not in (None, ""):
            record_id = store.by_external_id.get(str(external_id).lower())
            if record_id is not None:
                return store.records[record_id]
        second = item.get(kind.second_key)
        if second not in (None, ""):
            record_id = store.by_second.get(str(second).strip().lower())
            if record_id is not None:
                return store.records[record_id]
        return None

    def _upsert_one(self, kind: _Kind, index: int, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return _failed(index, kind.error, f"{kind.label} must be an object")
        target = self._match(kind, item)
        values, errors = self._check(kind, item, target)
        if errors:
            return _failed(index, kind.error, " ".join(errors), action="update" if target is not None else "upsert")
        record = self._write(kind, target, values)
        # UpdateResourceResult: id, action, success and status ("Created" / "Updated").
        result: dict[str, Any] = {
            "id": record["id"],
            "action": "update" if target is not None else "create",
            "success": True,
            "status": "Updated" if target is not None else "Created",
        }
        for key in ("external_id", kind.second_key):
            if item.get(key) not in (None, ""):
                result[key] = item[key]
        return result

    def _create_one(self, kind: _Kind, index: int, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return _failed(index, kind.error.replace("Update", "Create"), "not an object", action="create")
        values, errors = self._check(kind, item, None)
        if errors:
            return _failed(index, kind.error.replace("Update", "Create"), " ".join(errors), action="create")
        record = self._write(kind, None, values)
        return {"id": record["id"], "index": index}

    def _update_one(self, kind: _Kind, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return {
                "id": None,
                "action": "update",
                "success": False,
                "error": "InvalidValue",
                "details": f"{kind.label} must be an object",
            }
        store = self._stores[kind.plural]
        how, value = item.pop("__target", ("id", item.get("id")))
        if how == "id":
            target = store.records.get(_int_or_none(value) or -1)
        else:
            record_id = store.by_external_id.get(str(value).lower())
            target = store.records.get(record_id) if record_id is not None else None
        ident = _int_or_none(value) if how == "id" else value
        if target is None:
            return {
                "id": ident,
                "action": "update",
                "success": False,
                "error": "RecordNotFound",
                "details": f"{kind.label} {value} not found",
            }
        values, errors = self._check(kind, {k: v for k, v in item.items() if k != "id"}, target)
        if errors:
            return {
                "id": target["id"],
                "action": "update",
                "success": False,
                "error": kind.error,
                "details": " ".join(errors),
            }
        self._write(kind, target, values)
        return {"id": target["id"], "action": "update", "success": True, "status": "Updated"}

    def _destroy_one(self, kind: _Kind, target_spec: tuple[str, str]) -> dict[str, Any]:
        how, value = target_spec
        store = self._stores[kind.plural]
        if how == "id":
            target = store.records.get(_int_or_none(value) or -1)
        else:
            record_id = store.by_external_id.get(value.lower())
            target = store.records.get(record_id) if record_id is not None else None
        ident = _int_or_none(value) if how == "id" else value
        if target is None:
            return {
                "id": ident,
                "action": "delete",
                "success": False,
                "error": "RecordNotFound",
                "details": f"{kind.label} {value} not found",
            }
        self._delete(kind, target)
        return {"id": target["id"], "action": "delete", "success": True, "status": "Deleted"}

    def _check(
        self, kind: _Kind, item: Mapping[str, Any], target: dict[str, Any] | None
    ) -> tuple[dict[str, Any], list[str]]:
        """Validated values of one input (standard attributes and custom fields) and error details."""
        store = self._stores[kind.plural]
        errors: list[str] = []
        values: dict[str, Any] = {}
        for name, value in item.items():
            if name == kind.fields_key:
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    errors.append(f"{kind.label} fields: must be an object")
                    continue
                custom: dict[str, Any] = {}
                for key, raw in value.items():
                    definition = store.fields.get(key)
                    if definition is None:
                        if self.unknown_custom_fields == "reject":
                            errors.append(f"{kind.label} fields: {key} is not a valid {kind.singular} field")
                        continue
                    stored, problem = definition.coerce(raw)
                    if problem:
                        errors.append(problem)
                    else:
                        custom[key] = stored
                values[kind.fields_key] = custom
            elif name in kind.attributes:
                values[name] = value
        owner = target["id"] if target is not None else None

        record_name = values.get("name", target.get("name") if target else None)
        if target is None and (record_name is None or not str(record_name).strip()):
            errors.append("Name: is too short (minimum is 1 character)")
        elif record_name is not None and len(str(record_name)) > MAX_NAME_CHARS:
            errors.append(f"Name: is too long (maximum is {MAX_NAME_CHARS} characters)")
        external_id = values.get("external_id")
        if external_id not in (None, ""):
            if len(str(external_id)) > MAX_EXTERNAL_ID_CHARS:
                errors.append(f"External: is too long (maximum is {MAX_EXTERNAL_ID_CHARS} characters)")
            holder = store.by_external_id.get(str(external_id).lower())
            if holder is not None and holder != owner:
                errors.append(f"External: {external_id} has already been taken")
        second = values.get(kind.second_key)
        if second not in (None, ""):
            if kind is USERS and not _EMAIL.match(str(second).strip()):
                errors.append(f"Email: {second} is not properly formatted")
            else:
                holder = store.by_second.get(str(second).strip().lower())
                if holder is not None and holder != owner:
                    if kind is USERS:
                        errors.append(f"Email: {second} is already being used by another user")
                    else:
                        errors.append(f"Name: {second} has already been taken")
        if kind is USERS:
            phone = values.get("phone")
            if phone not in (None, "") and not _valid_phone(phone):
                errors.append(f"Phone: {phone} is not a valid phone number")
            role = values.get("role")
            if role is not None and role not in ROLES:
                errors.append(f"Role: {role} is not valid")
        for list_key in ("tags", "domain_names"):
            if list_key in values and values[list_key] is not None and not isinstance(values[list_key], list):
                errors.append(f"{list_key.replace('_', ' ').capitalize()}: must be an array")
        return values, errors

    def _write(self, kind: _Kind, target: dict[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
        store = self._stores[kind.plural]
        stamp = _now()
        if target is None:
            target = {"id": next(self._ids), "created_at": stamp, kind.fields_key: {}}
            if kind is USERS:
                target.update({"role": "end-user", "active": True, "verified": False, "tags": []})
            else:
                target.update({"tags": [], "domain_names": [], "shared_tickets": False, "shared_comments": False})
            store.records[target["id"]] = target
        self._unindex(kind, target)
        for name, value in values.items():
            if name == kind.fields_key:
                target[kind.fields_key].update(value)
            elif name in ("tags", "domain_names"):
                target[name] = list(value or [])
            else:
                target[name] = value
        target["updated_at"] = stamp
        self._index(kind, target)
        return target

    def _delete(self, kind: _Kind, target: dict[str, Any]) -> None:
        store = self._stores[kind.plural]
        self._unindex(kind, target)
        del store.records[target["id"]]
        target["active"] = False
        store.deleted[target["id"]] = target

    def _index(self, kind: _Kind, record: Mapping[str, Any]) -> None:
        store = self._stores[kind.plural]
        if record.get("external_id") not in (None, ""):
            store.by_external_id[str(record["external_id"]).lower()] = record["id"]
        if record.get(kind.second_key) not in (None, ""):
            store.by_second[str(record[kind.second_key]).strip().lower()] = record["id"]

    def _unindex(self, kind: _Kind, record: Mapping[str, Any]) -> None:
        store = self._stores[kind.plural]
        for index, key in ((store.by_external_id, "external_id"), (store.by_second, kind.second_key)):
            value = record.get(key)
            if value not in (None, "") and index.get(str(value).strip().lower()) == record["id"]:
                del index[str(value).strip().lower()]

    def _record_json(self, kind: _Kind, record: Mapping[str, Any]) -> dict[str, Any]:
        store = self._stores[kind.plural]
        body = {k: v for k, v in record.items() if k != kind.fields_key}
        body["url"] = f"{self._base_url}/api/v2/{kind.plural}/{record['id']}.json"
        if kind is USERS:
            # UserObject (Zendesk OAS): external_id, phone and organization_id are nullable; the other
            # attributes are not, so an unset one is left out rather than sent as null, and locale and
            # time zone carry the account's defaults as Zendesk's do.
            for key in ("external_id", "phone", "organization_id"):
                body.setdefault(key, None)
            for key, default in (("locale", "en-US"), ("locale_id", 1), ("time_zone", "UTC"), ("role", "end-user")):
                if body.get(key) is None:
                    body[key] = default
            for key in [k for k, v in body.items() if v is None and k not in _USER_NULLABLE]:
                del body[key]
        else:
            for key in ("external_id", "details", "notes", "group_id"):
                body.setdefault(key, None)
        stored = record.get(kind.fields_key) or {}
        body[kind.fields_key] = {key: stored.get(key) for key in store.fields} | {
            k: v for k, v in stored.items() if k not in store.fields
        }
        return body


class _ZendeskFront:
    """ASGI layer in front of the routes: ``.json`` suffixes, auth, then the per-minute rate limit."""

    def __init__(self, app: ASGIApp, emulator: ZendeskEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path.endswith(".json"):
            scope = {**scope, "path": path[: -len(".json")], "raw_path": path[: -len(".json")].encode()}
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if host and "_seen_base_url" not in self.emulator.__dict__:
            self.emulator._seen_base_url = f"{scope.get('scheme', 'http')}://{host}"  # type: ignore[attr-defined]
        account = self.emulator.account_for(headers.get(b"authorization", b"").decode("latin-1"))
        if account is None:
            await drain_request_body(receive)
            await json_response(401, {"error": "Couldn't authenticate you"})(scope, receive, send)
            return
        decision = self.emulator.limiter.acquire(account)
        extra: dict[str, str] = {}
        if decision.limit is not None:
            extra = {
                "X-Rate-Limit": str(decision.limit),
                "X-Rate-Limit-Remaining": str(max(0, decision.remaining or 0)),
            }
        if not decision.allowed:
            await drain_request_body(receive)
            extra["Retry-After"] = decision.retry_after_header
            await json_response(429, _rate_limit_body(), extra)(scope, receive, send)
            return
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *raw_headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- helpers ----------------------------------------------------------------------------------


def _rate_limit_body() -> dict[str, Any]:
    return {"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"}


def _record_invalid(errors: Sequence[str]) -> ZendeskError:
    details: dict[str, list[dict[str, str]]] = {}
    for text in errors:
        field_name = text.partition(":")[0].strip().lower().replace(" ", "_") or "base"
        details.setdefault(field_name, []).append({"description": text, "error": "InvalidValue"})
    return ZendeskError(422, "RecordInvalid", "Record validation errors", details=details)


def _failed(index: int, error: str, details: str, *, action: str = "update") -> dict[str, Any]:
    # FailedResult (Zendesk OAS): id, action, success, error, details. "On failure id is the input index"
    # (Zendesk's answer on their developer forum). No "status"/"index": JobStatusResultObject is a oneOf, and
    # either would make the result match UpdateResourceResult / CreateResourceResult as well.
    return {"id": index, "action": action, "success": False, "error": error, "details": details}


def _valid_phone(value: Any) -> bool:
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    return bool(_PHONE_CHARS.match(text)) and 7 <= len(digits) <= 15


def _plural(object_type: str) -> str:
    name = object_type.lower()
    if name in ("users", "user"):
        return "users"
    if name in ("organizations", "organization", "orgs"):
        return "organizations"
    raise KeyError(f"unknown Zendesk object {object_type!r}; expected users or organizations")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _page(key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: records, "next_page": None, "previous_page": None, "count": len(records)}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ZendeskError(400, "InvalidJSON", f"The request body is not valid JSON: {exc.msg}") from None
