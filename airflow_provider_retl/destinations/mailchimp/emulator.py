"""A local emulator of the Mailchimp Marketing API v3 (audiences, merge fields, members).

Same paths (under ``/3.0``), auth, JSON shapes and error documents, as far as the public
documentation, the official SDK (``mailchimp-marketing``) and answers quoted by its users
show them:

- Auth: HTTP basic auth with any user name and the API key as password, or
  ``Authorization: apikey <key>``; ``Bearer <token>`` for OAuth access tokens. Keys end
  in their data centre (``<32 hex>-us6``). Errors are RFC 7807 problem documents
  (``application/problem+json``: ``type``, ``title``, ``status``, ``detail``,
  ``instance``, sometimes ``errors[]`` of ``{field, message}``): 401 "API Key Missing" /
  "API Key Invalid", 404 "Resource Not Found", 400 "Invalid Resource", "Member Exists",
  "Member In Compliance State", "Forgotten Email Not Subscribed".
- ``POST /3.0/lists/{list_id}`` (batch subscribe) takes up to 500 ``members`` and answers
  200 even when members fail: ``new_members``, ``updated_members``, ``errors[]``
  (``email_address``, ``error``, ``error_code`` = ``ERROR_CONTACT_EXISTS`` or
  ``ERROR_GENERIC``, ``field``, ``field_message``), ``total_created``,
  ``total_updated``, ``error_count``. Without ``update_existing: true`` an existing member
  is an ``ERROR_CONTACT_EXISTS``; an archived member comes back as a new member.
- Batch subscribe members are the document's ``Add_List_Members``: ``status`` is required on
  every member (Mailchimp's reference marks ``members[].status`` required; a member without
  a valid one fails the whole call with 400 "Invalid Resource", the error naming
  ``members.item:N.status``, as Mailchimp's schema validation answers), and with
  ``update_existing`` it is applied to existing members too. ``status_if_new`` is not a
  batch member field (it belongs to ``PUT .../members/{hash}``) and is ignored there.
- On ``PUT``, ``status_if_new`` applies to new members only; an existing member keeps its
  status unless ``status`` is given. A member that unsubscribed or was cleaned cannot be
  subscribed again ("... is in a compliance state ..."); an unsubscribed one may be set
  to ``pending`` (a confirmation email); a cleaned one's status cannot be changed at all. Addresses on fake or reserved domains are
  refused ("... looks fake or invalid, please enter a real email address."), and a
  permanently deleted address cannot be re-imported.
- Members are keyed by the subscriber hash, the MD5 of the lower-cased address; member
  paths also accept the address itself. ``DELETE`` archives, ``actions/delete-permanent``
  forgets. Merge fields have types (text, number, address, phone, date, birthday,
  dropdown, radio, url, imageurl, zip) and may be required ("Your merge fields were
  invalid." with ``errors[{field, message}]``, unless ``skip_merge_validation=true``).
- At most 10 simultaneous connections per account: the 11th request in flight gets 429
  "Too Many Requests" ("You have exceeded the limit of 10 simultaneous connections.").
  ``processing_seconds`` keeps each request in flight that long so a client's
  concurrency can be observed; an optional rolling rate limit adds 429s with Retry-After.

Guesses (not found in the documentation, kept plausible): the wording of type errors of
merge field values, of a missing status, and of a batch over 500 members; whether a
second DELETE of an archived member is 204 (here: yes) and whether unknown merge tags
are ignored (here: yes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_retl.testing.emulators.base import ASGIApp, BaseEmulator, Receive, Scope, Send, correlation_id
from airflow_provider_retl.testing.emulators.connection import drain_request_body
from airflow_provider_retl.testing.emulators.faults import Faults
from airflow_provider_retl.testing.emulators.ratelimit import RollingWindowLimiter, RollingWindowRateLimited

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_LIST_ID",
    "FAKE_DOMAINS",
    "MailchimpEmulator",
    "MergeFieldDef",
    "subscriber_hash",
]

DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us6"
DEFAULT_LIST_ID = "a1b2c3d4e5"
MAX_BATCH_MEMBERS = 500
MAX_CONNECTIONS = 10
MAX_COUNT = 1000
DEFAULT_COUNT = 10
ERROR_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
MERGE_TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip")

#: Domains Mailchimp refuses as fake or reserved (RFC 2606 names and common test domains).
FAKE_DOMAINS = frozenset(
    {
        "example.com",
        "example.net",
        "example.org",
        "test.com",
        "test.net",
        "test.org",
        "domain.com",
        "email.com",
        "mailinator.com",
        "yopmail.com",
    }
)
_RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local")
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_KEY_DC = re.compile(r"-([a-z]{2}\d+)$")

_MSG_INVALID_RESOURCE = (
    "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 hex digest of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _looks_fake(email: str, fake_domains: frozenset[str]) -> bool:
    domain = email.rsplit("@", 1)[-1].lower().rstrip(".")
    return domain in fake_domains or domain.rsplit(".", 1)[-1] in _RESERVED_TLDS


class MailchimpError(Exception):
    """Raised in a handler to answer with a Mailchimp problem document."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_DOC,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": correlation_id(),
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        return problem_response(self.status, self.body(), headers)


def problem_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json; charset=utf-8",
        headers=dict(headers or {}),
    )


def ok_response(body: Any, status: int = 200) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, media_type="application/json; charset=utf-8")


def _not_found() -> MailchimpError:
    return MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")


class _MemberError(Exception):
    """Why one member write was refused: a problem document for single calls, an errors[] item for batches."""

    def __init__(
        self,
        title: str,
        detail: str,
        *,
        code: str = "ERROR_GENERIC",
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.code = code
        self.errors = errors

    def problem(self) -> MailchimpError:
        return MailchimpError(400, self.title, self.detail, self.errors)

    def batch_item(self, email: Any) -> dict[str, Any]:
        first = (self.errors or [{}])[0]
        return {
            "email_address": email if isinstance(email, str) else "",
            "error": self.detail,
            "error_code": self.code,
            "field": first.get("field", ""),
            "field_message": first.get("message", ""),
        }


# -- merge fields ---------------------------------------------------------------------------


@dataclass
class MergeFieldDef:
    """One merge field of an audience (``tag`` like ``FNAME``; ``type`` one of MERGE_TYPES)."""

    tag: str
    name: str = ""
    type: str = "text"
    required: bool = False
    default_value: str = ""
    public: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    help_text: str = ""
    merge_id: int = 0
    display_order: int = 0

    @classmethod
    def from_spec(cls, spec: MergeFieldDef | Mapping[str, Any] | str) -> MergeFieldDef:
        if isinstance(spec, MergeFieldDef):
            return MergeFieldDef(**{f: getattr(spec, f) for f in cls.__dataclass_fields__})
        if isinstance(spec, str):
            spec = {"tag": spec}
        data = dict(spec)
        tag = str(data.pop("tag")).upper()
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,9}", tag):
            raise ValueError(f"merge tag {tag!r} must be 1-10 letters, digits or underscores, starting with a letter")
        kind = str(data.pop("type", "text"))
        if kind not in MERGE_TYPES:
            raise ValueError(f"merge field type must be one of {', '.join(MERGE_TYPES)}; got {kind!r}")
        return cls(tag=tag, name=str(data.pop("name", tag.title())), type=kind, **data)

    def to_json(self, list_id: str) -> dict[str, Any]:
        options = dict(self.options)
        if self.type in ("date", "birthday"):
            options.setdefault("date_format", "MM/DD/YYYY" if self.type == "date" else "MM/DD")
        if self.type == "address":
            options.setdefault("default_country", 164)
        if self.type == "phone":
            options.setdefault("phone_format", "none")
        if self.type == "text":
            options.setdefault("size", 25)
        return {
            "merge_id": self.merge_id,
            "tag": self.tag,
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default_value": self.default_value,
            "public": self.public,
            "display_order": self.display_order,
            "options": options,
            "help_text": self.help_text,
            "list_id": list_id,
            "_links": [],
        }

    def clean(self, value: Any) -> tuple[Any, str | None]:
        """(stored value, error message or None); "" and None clear the field."""
        if value is None or value == "":
            return "", None
        kind = self.type
        if kind == "number":
            if isinstance(value, bool):
                return value, "Please enter a number"
            if isinstance(value, int | float):
                return value, None
            try:
                number = float(str(value).strip())
            except ValueError:
                return value, "Please enter a number"
            return (int(number) if number.is_integer() else number), None
        if kind == "address":
            if not isinstance(value, Mapping):
                return value, "Please enter a complete address"
            address = {k: str(value.get(k) or "") for k in ("addr1", "addr2", "city", "state", "zip", "country")}
            if not all(address[k].strip() for k in ("addr1", "city", "state", "zip")):
                return value, "Please enter a complete address"
            address["country"] = address["country"] or "US"
            return address, None
        if isinstance(value, Mapping | list):
            return value, "Please enter a value of text"
        text = str(value).strip()
        if kind == "date":
            parsed = _parse_date(text, str(self.options.get("date_format", "MM/DD/YYYY")))
            return (parsed, None) if parsed else (value, "Please enter a valid date")
        if kind == "birthday":
            birthday = _parse_birthday(text, str(self.options.get("date_format", "MM/DD")))
            return (birthday, None) if birthday else (value, "Please enter a month (01-12) and a day (01-31)")
        if kind in ("dropdown", "radio"):
            choices = [str(c) for c in self.options.get("choices", [])]
            if choices and text not in choices:
                return value, "Please choose one of the listed options"
        return text, None


def _parse_date(text: str, fmt: str) -> str | None:
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        pass
    parts = re.split(r"[/.-]", text)
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    order = {"MM/DD/YYYY": (2, 0, 1), "DD/MM/YYYY": (2, 1, 0)}.get(fmt.upper(), (2, 0, 1))
    try:
        return date(int(parts[order[0]]), int(parts[order[1]]), int(parts[order[2]])).isoformat()
    except ValueError:
        return None


def _parse_birthday(text: str, fmt: str) -> str | None:
    parts = re.split(r"[/.-]", text)
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    month, day = (int(parts[0]), int(parts[1])) if fmt.upper().startswith("MM") else (int(parts[1]), int(parts[0]))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{month:02d}/{day:02d}" if fmt.upper().startswith("MM") else f"{day:02d}/{month:02d}"


def default_merge_fields() -> list[MergeFieldDef]:
    """The merge fields of a new audience."""
    return [
        MergeFieldDef("FNAME", "First Name", "text"),
        MergeFieldDef("LNAME", "Last Name", "text"),
        MergeFieldDef("ADDRESS", "Address", "address"),
        MergeFieldDef("PHONE", "Phone Number", "phone"),
        MergeFieldDef("BIRTHDAY", "Birthday", "birthday"),
    ]


# -- stored data --------------------------------------------------------------------------------


@dataclass
class StoredMember:
    id: str
    email_address: str
    status: str
    merge_fields: dict[str, Any]
    unique_email_id: str
    contact_id: str
    web_id: int
    timestamp_signup: str
    last_changed: str
    tags: list[str] = field(default_factory=list)
    email_type: str = "html"
    language: str = ""
    vip: bool = False
    interests: dict[str, bool] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)
    ip_signup: str = ""
    ip_opt: str = ""
    timestamp_opt: str = ""
    #: Status before it was archived (compliance survives archiving).
    status_before_archive: str | None = None


@dataclass
class Audience:
    id: str
    name: str
    web_id: int
    date_created: str
    merge_fields: dict[str, MergeFieldDef] = field(default_factory=dict)
    members: dict[str, StoredMember] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    tag_ids: dict[str, int] = field(default_factory=dict)


_MEMBER_SCALARS = ("email_type", "language", "ip_signup", "ip_opt", "timestamp_opt")


class MailchimpEmulator(RollingWindowRateLimited, BaseEmulator):
    """State and FastAPI app of a Mailchimp Marketing API emulator (``start_emulator("mailchimp")``).

    ``api_keys``: accepted keys; a mapping gives each key's account (the connection limit
    is per account; by default each key is its own account); ``None`` accepts any key
    ending in ``-<datacenter>``. ``access_tokens``: OAuth tokens accepted as ``Bearer``.
    ``lists``: audience ids (or ``{id: name}``), each with the default merge fields plus
    ``merge_fields`` (``MergeFieldDef``, mappings like ``{"tag": "PLAN", "type":
    "dropdown", "options": {"choices": ["free", "pro"]}, "required": True}``, or tags).
    ``max_connections``: requests in flight per account before 429 (None: unlimited).
    ``processing_seconds``: how long each API request stays in flight.
    ``rate_limit``/``rate_window``: an optional rolling limit per account.
    """

    kind = "mailchimp"

    def __init__(
        self,
        api_keys: Iterable[str] | Mapping[str, str] | None = (DEFAULT_API_KEY,),
        *,
        datacenter: str = "us6",
        access_tokens: Iterable[str] | Mapping[str, str] = (),
        lists: Iterable[str] | Mapping[str, str] = (DEFAULT_LIST_ID,),
        merge_fields: Sequence[MergeFieldDef | Mapping[str, Any] | str] = (),
        max_connections: int | None = MAX_CONNECTIONS,
        processing_seconds: float = 0.0,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
        fake_domains: Iterable[str] = FAKE_DOMAINS,
        max_batch_size: int = MAX_BATCH_MEMBERS,
        account_name: str = "Reverse ETL Test Account",
        faults: Faults | None = None,
        keep_requests: int = 1000,
    ) -> None:
        self.datacenter = datacenter
        if api_keys is None:
            self.api_keys: dict[str, str] | None = None
        elif isinstance(api_keys, Mapping):
            self.api_keys = {str(k): str(a) for k, a in api_keys.items()}
        elif isinstance(api_keys, str):
            self.api_keys = {api_keys: api_keys}
        else:
            self.api_keys = {str(k): str(k) for k in api_keys}
        tokens = access_tokens if isinstance(access_tokens, Mapping) else {t: t for t in access_tokens}
        self.access_tokens = {str(t): str(a) for t, a in tokens.items()}
        self.max_connections = max_connections
        self.processing_seconds = float(processing_seconds)
        self.fake_domains = frozenset(d.lower() for d in fake_domains)
        self.max_batch_size = max_batch_size
        self.account_name = account_name
        self.limiter = RollingWindowLimiter(rate_limit, rate_window)
        self._extra_merge_fields = [MergeFieldDef.from_spec(s) for s in merge_fields]
        self._audiences: dict[str, Audience] = {}
        self._web_ids = itertools.count(100001)
        self._merge_ids = itertools.count(1)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._peak: dict[str, int] = defaultdict(int)
        self._flight_lock = threading.Lock()
        super().__init__(faults=faults, keep_requests=keep_requests)
        names = lists if isinstance(lists, Mapping) else {str(i): f"Audience {i}" for i in lists}
        for list_id, name in names.items():
            self.add_list(str(list_id), str(name))

    # -- configuration -------------------------------------------------------------------

    def add_list(
        self,
        list_id: str,
        name: str | None = None,
        merge_fields: Sequence[MergeFieldDef | Mapping[str, Any] | str] = (),
    ) -> None:
        """Create an audience with the default merge fields, the emulator's extra ones and ``merge_fields``."""
        with self.lock:
            audience = Audience(list_id, name or f"Audience {list_id}", next(self._web_ids), _now())
            self._audiences[list_id] = audience
            for spec in [*default_merge_fields(), *self._extra_merge_fields, *merge_fields]:
                self._add_merge_field(audience, spec)

    def add_merge_field(self, list_id: str, spec: MergeFieldDef | Mapping[str, Any] | str) -> MergeFieldDef:
        """Add a merge field to an audience (as ``POST /lists/{id}/merge-fields`` does)."""
        with self.lock:
            return self._add_merge_field(self._audience(list_id), spec)

    def _add_merge_field(self, audience: Audience, spec: MergeFieldDef | Mapping[str, Any] | str) -> MergeFieldDef:
        definition = MergeFieldDef.from_spec(spec)
        definition.merge_id = next(self._merge_ids)
        definition.display_order = len(audience.merge_fields) + 2  # EMAIL is 1
        audience.merge_fields[definition.tag] = definition
        return definition

    # -- Python inspection API -----------------------------------------------------------

    def members(self, list_id: str = DEFAULT_LIST_ID, include_archived: bool = False) -> list[dict[str, Any]]:
        """Stored members as the API shows them (without ``_links``), oldest first."""
        with self.lock:
            audience = self._audience(list_id)
            return [
                self._member_json(audience, m, links=False)
                for m in audience.members.values()
                if include_archived or m.status != "archived"
            ]

    def member(self, list_id: str, email_or_hash: str) -> dict[str, Any] | None:
        """One member (archived too) by address or subscriber hash, or None."""
        with self.lock:
            audience = self._audience(list_id)
            stored = audience.members.get(_hash_of(email_or_hash))
            return None if stored is None else self._member_json(audience, stored, links=False)

    def seed(self, list_id: str, members: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store members directly (any status, no fake-domain check); returns their subscriber hashes."""
        ids = []
        with self.lock:
            audience = self._audience(list_id)
            for spec in members:
                email = str(spec["email_address"]).strip()
                status = str(spec.get("status", "subscribed"))
                if status not in (*STATUSES, "archived"):
                    raise ValueError(f"unknown status {status!r}")
                values: dict[str, Any] = {}
                for tag, value in dict(spec.get("merge_fields") or {}).items():
                    definition = audience.merge_fields.get(str(tag).upper())
                    if definition is None:
                        raise ValueError(f"audience {list_id} has no merge field {tag!r}")
                    cleaned, error = definition.clean(value)
                    if error:
                        raise ValueError(f"{tag}: {error}")
                    values[definition.tag] = cleaned
                member = self._new_member(audience, email, "archived" if status == "archived" else status, values)
                member.tags = [str(t) for t in spec.get("tags", [])]
                ids.append(member.id)
        return ids

    def max_concurrent_requests(self, account: str | None = None) -> int:
        """The most API requests seen in flight at once (for one account, or any)."""
        with self._flight_lock:
            if account is not None:
                return self._peak.get(account, 0)
            return max(self._peak.values(), default=0)

    def state(self) -> dict[str, Any]:
        """Audiences with their merge fields and members, for ``GET /_emulator/state``."""
        with self.lock:
            return {
                "datacenter": self.datacenter,
                "lists": {
                    a.id: {
                        "name": a.name,
                        "merge_fields": [m.to_json(a.id) for m in a.merge_fields.values()],
                        "members": [self._member_json(a, m, links=False) for m in a.members.values()],
                        "forgotten": sorted(a.forgotten),
                    }
                    for a in self._audiences.values()
                },
                "maxConnections": self.max_connections,
                "peakConnections": self._peaks(),
            }

    def _peaks(self) -> dict[str, int]:
        with self._flight_lock:
            return dict(self._peak)

    def reset_state(self) -> None:
        """Forget members, forgotten addresses and counters (audiences and merge fields stay)."""
        with self.lock:
            for audience in self._audiences.values():
                audience.members.clear()
                audience.forgotten.clear()
                audience.tag_ids.clear()
            self.limiter.reset()
        with self._flight_lock:
            self._peak.clear()

    def account_for(self, authorization: str) -> tuple[str | None, str]:
        """(account, reason) for an Authorization header value; account None when refused."""
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and credentials:
            account = self.access_tokens.get(credentials)
            return account, "invalid"
        key = None
        if scheme == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None, "invalid"
            key = decoded.partition(":")[2]
        elif scheme == "apikey" and credentials:
            key = credentials
        if not key:
            return None, "missing"
        match = _KEY_DC.search(key)
        if match is None or match.group(1) != self.datacenter:
            return None, "invalid"
        if self.api_keys is None:
            return key, "ok"
        account = self.api_keys.get(key)
        return account, "ok" if account else "invalid"

    # -- faults in Mailchimp's shapes ----------------------------------------------------------

    def fault_error_body(self, status: int) -> dict[str, Any]:
        titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        return {
            "type": ERROR_DOC,
            "title": titles.get(status, "Internal Server Error"),
            "status": status,
            "detail": "An unexpected internal error has occurred. Please contact Support for more information.",
            "instance": correlation_id(),
        }

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        return self._too_many_connections().body(), {}

    def _too_many_connections(self) -> MailchimpError:
        return MailchimpError(
            429,
            "Too Many Requests",
            f"You have exceeded the limit of {self.max_connections or MAX_CONNECTIONS} simultaneous connections.",
        )

    # -- connection accounting ------------------------------------------------------------------

    def _enter(self, account: str) -> bool:
        with self._flight_lock:
            if self.max_connections is not None and self._in_flight[account] >= self.max_connections:
                return False
            self._in_flight[account] += 1
            self._peak[account] = max(self._peak[account], self._in_flight[account])
            return True

    def _leave(self, account: str) -> None:
        with self._flight_lock:
            self._in_flight[account] = max(0, self._in_flight[account] - 1)

    # -- the API app ----------------------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        """FastAPI routes of /3.0 behind auth and the connection limit."""
        app = FastAPI(title="Mailchimp Marketing API emulator", openapi_url=None, docs_url=None, redoc_url=None)

        async def on_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, MailchimpError)
            return exc.response()

        async def on_http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, StarletteHTTPException)
            if exc.status_code == 405:
                return MailchimpError(
                    405,
                    "Method Not Allowed",
                    "The requested method and resource are not compatible. See the Allow header for this "
                    "resource's available methods.",
                ).response()
            return _not_found().response()

        async def on_validation_error(request: Request, exc: Exception) -> Response:
            return MailchimpError(400, "Invalid Resource", _MSG_INVALID_RESOURCE, []).response()

        app.add_exception_handler(MailchimpError, on_error)
        app.add_exception_handler(StarletteHTTPException, on_http_error)
        app.add_exception_handler(RequestValidationError, on_validation_error)
        member = "/3.0/lists/{list_id}/members/{subscriber_hash}"

        @app.get("/3.0/")
        @app.get("/3.0")
        async def root() -> Response:
            return ok_response(self._root_json())

        @app.get("/3.0/ping")
        async def ping() -> Response:
            return ok_response({"health_status": "Everything's Chimpy!"})

        @app.get("/3.0/lists")
        async def get_lists(request: Request) -> Response:
            count, offset = _paging(request)
            with self.lock:
                audiences = list(self._audiences.values())
                page = [self._list_json(a) for a in audiences[offset : offset + count]]
            return ok_response({"lists": page, "total_items": len(audiences), "_links": []})

        @app.get("/3.0/lists/{list_id}")
        async def get_list(list_id: str) -> Response:
            with self.lock:
                return ok_response(self._list_json(self._audience_or_404(list_id)))

        @app.post("/3.0/lists/{list_id}")
        async def batch_subscribe(list_id: str, request: Request) -> Response:
            body = await _json(request)
            return self._batch(list_id, body, skip_merge_validation=_flag(request, "skip_merge_validation"))

        @app.get("/3.0/lists/{list_id}/merge-fields")
        async def get_merge_fields(list_id: str, request: Request) -> Response:
            count, offset = _paging(request)
            with self.lock:
                audience = self._audience_or_404(list_id)
                fields_ = list(audience.merge_fields.values())
                wanted_type = request.query_params.get("type")
                if wanted_type:
                    fields_ = [f for f in fields_ if f.type == wanted_type]
                if "required" in request.query_params:
                    fields_ = [f for f in fields_ if f.required == _flag(request, "required")]
                page = [f.to_json(list_id) for f in fields_[offset : offset + count]]
            return ok_response({"merge_fields": page, "list_id": list_id, "total_items": len(fields_), "_links": []})

        @app.post("/3.0/lists/{list_id}/merge-fields")
        async def add_merge_field(list_id: str, request: Request) -> Response:
            body = await _json(request)
            with self.lock:
                audience = self._audience_or_404(list_id)
                if not isinstance(body, Mapping) or not body.get("name") or not body.get("type"):
                    raise MailchimpError(
                        400,
                        "Invalid Resource",
                        _MSG_INVALID_RESOURCE,
                        [{"field": "name", "message": "This value should not be blank."}],
                    )
                spec = dict(body)
                spec.setdefault("tag", re.sub(r"[^A-Z0-9_]", "", str(body["name"]).upper())[:10] or "MMERGE")
                try:
                    definition = self._add_merge_field(audience, spec)
                except (ValueError, TypeError) as exc:
                    raise MailchimpError(400, "Invalid Resource", str(exc)) from None
                return ok_response(definition.to_json(list_id))

        @app.get("/3.0/lists/{list_id}/members")
        async def get_members(list_id: str, request: Request) -> Response:
            count, offset = _paging(request)
            status = request.query_params.get("status")
            with self.lock:
                audience = self._audience_or_404(list_id)
                chosen = [
                    m for m in audience.members.values() if (m.status == status if status else m.status != "archived")
                ]
                page = [self._member_json(audience, m) for m in chosen[offset : offset + count]]
            body = {"members": page, "list_id": list_id, "total_items": len(chosen), "_links": []}
            return ok_response(_select_fields(body, request))

        @app.post("/3.0/lists/{list_id}/members")
        async def add_member(list_id: str, request: Request) -> Response:
            body = await _json(request)
            return self._single_write(list_id, None, body, "post", _flag(request, "skip_merge_validation"))

        @app.get(member)
        async def get_member(list_id: str, subscriber_hash: str, request: Request) -> Response:
            with self.lock:
                audience = self._audience_or_404(list_id)
                stored = audience.members.get(_hash_of(subscriber_hash))
                if stored is None:
                    raise _not_found()
                return ok_response(_select_fields(self._member_json(audience, stored), request))

        @app.put(member)
        async def put_member(list_id: str, subscriber_hash: str, request: Request) -> Response:
            body = await _json(request)
            return self._single_write(list_id, subscriber_hash, body, "put", _flag(request, "skip_merge_validation"))

        @app.patch(member)
        async def patch_member(list_id: str, subscriber_hash: str, request: Request) -> Response:
            body = await _json(request)
            return self._single_write(list_id, subscriber_hash, body, "patch", _flag(request, "skip_merge_validation"))

        @app.delete(member)
        async def archive_member(list_id: str, subscriber_hash: str) -> Response:
            with self.lock:
                audience = self._audience_or_404(list_id)
                stored = audience.members.get(_hash_of(subscriber_hash))
                if stored is None:
                    raise _not_found()
                if stored.status != "archived":
                    stored.status_before_archive = stored.status
                    stored.status = "archived"
                    stored.last_changed = _now()
            return Response(status_code=204)

        @app.post(member + "/actions/delete-permanent")
        async def delete_permanent(list_id: str, subscriber_hash: str) -> Response:
            with self.lock:
                audience = self._audience_or_404(list_id)
                key = _hash_of(subscriber_hash)
                if audience.members.pop(key, None) is None:
                    raise _not_found()
                audience.forgotten.add(key)
            return Response(status_code=204)

        @app.get(member + "/tags")
        async def get_tags(list_id: str, subscriber_hash: str) -> Response:
            with self.lock:
                audience = self._audience_or_404(list_id)
                stored = audience.members.get(_hash_of(subscriber_hash))
                if stored is None:
                    raise _not_found()
                tags = [{"id": audience.tag_ids[t], "name": t, "date_added": stored.last_changed} for t in stored.tags]
            return ok_response({"tags": tags, "total_items": len(tags), "_links": []})

        @app.post(member + "/tags")
        async def post_tags(list_id: str, subscriber_hash: str, request: Request) -> Response:
            body = await _json(request)
            with self.lock:
                audience = self._audience_or_404(list_id)
                stored = audience.members.get(_hash_of(subscriber_hash))
                if stored is None:
                    raise _not_found()
                items = body.get("tags") if isinstance(body, Mapping) else None
                if not isinstance(items, list):
                    raise MailchimpError(
                        400,
                        "Invalid Resource",
                        _MSG_INVALID_RESOURCE,
                        [{"field": "tags", "message": "Schema describes array, NULL found instead"}],
                    )
                for item in items:
                    name = str((item or {}).get("name", "")).strip() if isinstance(item, Mapping) else ""
                    if not name:
                        continue
                    if str(item.get("status", "active")) == "inactive":
                        stored.tags = [t for t in stored.tags if t != name]
                    elif name not in stored.tags:
                        self._tag_id(audience, name)
                        stored.tags.append(name)
                stored.last_changed = _now()
            return Response(status_code=204)

        return _AuthAndConnections(app, self)

    # -- handlers -----------------------------------------------------------------------------

    def _audience(self, list_id: str) -> Audience:
        audience = self._audiences.get(list_id)
        if audience is None:
            raise KeyError(f"no audience {list_id!r}; the emulator has {sorted(self._audiences)}")
        return audience

    def _audience_or_404(self, list_id: str) -> Audience:
        audience = self._audiences.get(list_id)
        if audience is None:
            raise _not_found()
        return audience

    def _batch(self, list_id: str, body: Any, *, skip_merge_validation: bool) -> Response:
        with self.lock:
            audience = self._audience_or_404(list_id)
            if not isinstance(body, Mapping) or not isinstance(body.get("members"), list):
                raise MailchimpError(
                    400,
                    "Invalid Resource",
                    _MSG_INVALID_RESOURCE,
                    [{"field": "members", "message": "Schema describes array, NULL found instead"}],
                )
            members = body["members"]
            if len(members) > self.max_batch_size:
                raise MailchimpError(
                    400,
                    "Invalid Resource",
                    _MSG_INVALID_RESOURCE,
                    [
                        {
                            "field": "members",
                            "message": f"Schema describes array, must contain at most {self.max_batch_size} items",
                        }
                    ],
                )
            _check_batch_statuses(members)
            update_existing = body.get("update_existing") is True
            sync_tags = body.get("sync_tags") is True
            created: list[dict[str, Any]] = []
            updated: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for item in members:
                if not isinstance(item, Mapping):
                    errors.append(
                        _MemberError("Invalid Resource", "Please provide a valid email address.").batch_item("")
                    )
                    continue
                try:
                    stored, is_new = self._write(
                        audience,
                        item,
                        mode="batch",
                        update_existing=update_existing,
                        skip_merge_validation=skip_merge_validation,
                        sync_tags=sync_tags,
                    )
                except _MemberError as err:
                    errors.append(err.batch_item(item.get("email_address")))
                    continue
                (created if is_new else updated).append(self._member_json(audience, stored))
            return ok_response(
                {
                    "new_members": created,
                    "updated_members": updated,
                    "errors": errors,
                    "total_created": len(created),
                    "total_updated": len(updated),
                    "error_count": len(errors),
                    "_links": [],
                }
            )

    def _single_write(
        self, list_id: str, path_hash: str | None, body: Any, mode: str, skip_merge_validation: bool
    ) -> Response:
        with self.lock:
            audience = self._audience_or_404(list_id)
            if not isinstance(body, Mapping):
                raise MailchimpError(
                    400,
                    "Invalid Resource",
                    _MSG_INVALID_RESOURCE,
                    [{"field": "", "message": "Schema describes object, NULL found instead"}],
                )
            try:
                if mode == "patch":
                    stored = self._patch(audience, _hash_of(path_hash or ""), body, skip_merge_validation)
                else:
                    if mode == "put":
                        email = body.get("email_address")
                        if (
                            isinstance(email, str)
                            and email.strip()
                            and subscriber_hash(email) != _hash_of(path_hash or "")
                        ):
                            raise _MemberError(
                                "Invalid Resource",
                                "The email address and the subscriber hash in the URL do not match.",
                            )
                    stored, _ = self._write(
                        audience, body, mode=mode, update_existing=True, skip_merge_validation=skip_merge_validation
                    )
            except _MemberError as err:
                raise err.problem() from None
            return ok_response(self._member_json(audience, stored))

    def _write(
        self,
        audience: Audience,
        body: Mapping[str, Any],
        *,
        mode: str,
        update_existing: bool,
        skip_merge_validation: bool,
        sync_tags: bool = False,
    ) -> tuple[StoredMember, bool]:
        """Add or update one member (batch item, PUT or POST); (member, created)."""
        email = body.get("email_address")
        if not isinstance(email, str) or not _EMAIL.match(email.strip()):
            raise _MemberError("Invalid Resource", "Please provide a valid email address.")
        email = email.strip()
        key = subscriber_hash(email)
        if key in audience.forgotten:
            raise _MemberError(
                "Forgotten Email Not Subscribed",
                f"{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get "
                "back on the list.",
            )
        existing = audience.members.get(key)
        active = existing is not None and existing.status != "archived"
        if not active and _looks_fake(email, self.fake_domains):
            raise _MemberError("Invalid Resource", f"{email} looks fake or invalid, please enter a real email address.")
        if active and mode == "post":
            raise _MemberError(
                "Member Exists", f"{email} is already a list member. Use PUT to insert or update list members."
            )
        if active and mode == "batch" and not update_existing:
            raise _MemberError(
                "Member Exists",
                f"{email} is already a list member, do you want to update? please provide update_existing:true in "
                "the request body",
                code="ERROR_CONTACT_EXISTS",
            )
        status = _status(body, "status")
        # Batch members have no status_if_new (Add_List_Members): their ``status`` is required and
        # is what new and existing members get alike.
        status_if_new = None if mode == "batch" else _status(body, "status_if_new")
        if active:
            assert existing is not None
            new_status = status or existing.status
            previous: str | None = existing.status
        else:
            requested = (status_if_new or status) if mode != "post" else (status or status_if_new)
            if not requested:
                field_name = "status" if mode in ("post", "batch") else "status_if_new"
                raise _MemberError(
                    "Invalid Resource",
                    f"{email} must have a status",
                    errors=[{"field": field_name, "message": "This value should not be blank."}],
                )
            new_status = requested
            previous = existing.status_before_archive if existing is not None else None
        _check_compliance(email, previous, new_status)
        values = self._merge_values(audience, existing, body.get("merge_fields"), skip_merge_validation)

        now = _now()
        if existing is None:
            stored = self._new_member(audience, email, new_status, values)
        else:
            stored = existing
            stored.email_address = email
            stored.status = new_status
            stored.merge_fields = values
            stored.status_before_archive = None
            stored.last_changed = now
        self._apply_extras(audience, stored, body, sync_tags=sync_tags, tags_allowed=mode in ("batch", "post"))
        return stored, not active

    def _patch(
        self, audience: Audience, key: str, body: Mapping[str, Any], skip_merge_validation: bool
    ) -> StoredMember:
        stored = audience.members.get(key)
        if stored is None or stored.status == "archived":
            raise _not_found()
        email = body.get("email_address")
        new_key = key
        if email is not None:
            if not isinstance(email, str) or not _EMAIL.match(email.strip()):
                raise _MemberError("Invalid Resource", "Please provide a valid email address.")
            email = email.strip()
            new_key = subscriber_hash(email)
            if new_key != key:
                if new_key in audience.forgotten:
                    raise _MemberError(
                        "Forgotten Email Not Subscribed",
                        f"{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe "
                        "to get back on the list.",
                    )
                holder = audience.members.get(new_key)
                if holder is not None:
                    raise _MemberError(
                        "Invalid Resource",
                        _MSG_INVALID_RESOURCE,
                        errors=[
                            {
                                "field": "email address",
                                "message": f'"{email}" is already in this list with a status of "{holder.status.title()}".',
                            }
                        ],
                    )
                if _looks_fake(email, self.fake_domains):
                    raise _MemberError(
                        "Invalid Resource", f"{email} looks fake or invalid, please enter a real email address."
                    )
        status = _status(body, "status")
        if status:
            _check_compliance(email or stored.email_address, stored.status, status)
        values = self._merge_values(audience, stored, body.get("merge_fields"), skip_merge_validation)
        if new_key != key:
            del audience.members[key]
            stored.id = new_key
            audience.members[new_key] = stored
        if email is not None:
            stored.email_address = email
        if status:
            stored.status = status
        stored.merge_fields = values
        stored.last_changed = _now()
        self._apply_extras(audience, stored, body, sync_tags=False, tags_allowed=False)
        return stored

    def _merge_values(
        self, audience: Audience, existing: StoredMember | None, incoming: Any, skip_validation: bool
    ) -> dict[str, Any]:
        if incoming is None:
            incoming = {}
        if not isinstance(incoming, Mapping):
            raise _MemberError(
                "Invalid Resource",
                _MSG_INVALID_RESOURCE,
                errors=[{"field": "merge_fields", "message": "Schema describes object, array found instead"}],
            )
        values = dict(existing.merge_fields) if existing is not None else {}
        problems: list[dict[str, str]] = []
        for tag, value in incoming.items():
            definition = audience.merge_fields.get(str(tag).upper())
            if definition is None:
                continue  # unknown merge tags are ignored
            cleaned, error = definition.clean(value)
            if error:
                problems.append({"field": definition.tag, "message": error})
            else:
                values[definition.tag] = cleaned
        if not skip_validation:
            for definition in audience.merge_fields.values():
                if (
                    definition.required
                    and values.get(definition.tag) in (None, "")
                    and not any(p["field"] == definition.tag for p in problems)
                ):
                    problems.append({"field": definition.tag, "message": "Please enter a value"})
        if problems:
            raise _MemberError("Invalid Resource", "Your merge fields were invalid.", errors=problems)
        return values

    def _apply_extras(
        self, audience: Audience, stored: StoredMember, body: Mapping[str, Any], *, sync_tags: bool, tags_allowed: bool
    ) -> None:
        for name in _MEMBER_SCALARS:
            if isinstance(body.get(name), str):
                setattr(stored, name, body[name])
        if isinstance(body.get("vip"), bool):
            stored.vip = body["vip"]
        if isinstance(body.get("interests"), Mapping):
            stored.interests.update({str(k): bool(v) for k, v in body["interests"].items()})
        if isinstance(body.get("location"), Mapping):
            stored.location.update(dict(body["location"]))
        if isinstance(body.get("timestamp_signup"), str):
            stored.timestamp_signup = body["timestamp_signup"]
        tags = body.get("tags")
        if tags_allowed and isinstance(tags, list):
            names = [str(t.get("name") if isinstance(t, Mapping) else t).strip() for t in tags]
            names = [n for n in dict.fromkeys(names) if n]
            if sync_tags:
                stored.tags = []
            for name in names:
                self._tag_id(audience, name)
                if name not in stored.tags:
                    stored.tags.append(name)

    def _new_member(self, audience: Audience, email: str, status: str, values: dict[str, Any]) -> StoredMember:
        now = _now()
        member = StoredMember(
            id=subscriber_hash(email),
            email_address=email,
            status=status,
            merge_fields=values,
            unique_email_id=secrets.token_hex(5),
            contact_id=secrets.token_hex(16),
            web_id=next(self._web_ids),
            timestamp_signup=now,
            last_changed=now,
            timestamp_opt=now if status == "subscribed" else "",
        )
        audience.members[member.id] = member
        return member

    def _tag_id(self, audience: Audience, name: str) -> int:
        if name not in audience.tag_ids:
            audience.tag_ids[name] = len(audience.tag_ids) + 1001
        return audience.tag_ids[name]

    # -- JSON shapes --------------------------------------------------------------------------

    def _member_json(self, audience: Audience, m: StoredMember, links: bool = True) -> dict[str, Any]:
        merge = {tag: m.merge_fields.get(tag, "") for tag in audience.merge_fields}
        full_name = " ".join(str(merge.get(t) or "") for t in ("FNAME", "LNAME")).strip()
        body: dict[str, Any] = {
            "id": m.id,
            "email_address": m.email_address,
            "unique_email_id": m.unique_email_id,
            "contact_id": m.contact_id,
            "full_name": full_name,
            "web_id": m.web_id,
            "email_type": m.email_type,
            "status": m.status,
            "consents_to_one_to_one_messaging": True,
            "sms_phone_number": "",
            "sms_subscription_status": "",
            "sms_subscription_last_updated": "",
            "merge_fields": merge,
            "interests": dict(m.interests),
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": m.ip_signup,
            "timestamp_signup": m.timestamp_signup,
            "ip_opt": m.ip_opt,
            "timestamp_opt": m.timestamp_opt,
            "member_rating": 2,
            "last_changed": m.last_changed,
            "language": m.language,
            "vip": m.vip,
            "email_client": "",
            "location": {
                "latitude": 0,
                "longitude": 0,
                "gmtoff": 0,
                "dstoff": 0,
                "country_code": "",
                "timezone": "",
                "region": "",
                **m.location,
            },
            "marketing_permissions": [],
            "source": "API - Generic",
            "tags_count": len(m.tags),
            "tags": [{"id": audience.tag_ids.get(t, 0), "name": t} for t in m.tags],
            "list_id": audience.id,
        }
        if links:
            base = f"https://{self.datacenter}.api.mailchimp.com/3.0/lists/{audience.id}/members/{m.id}"
            body["_links"] = [
                {
                    "rel": "self",
                    "href": base,
                    "method": "GET",
                    "targetSchema": "https://api.mailchimp.com/schema/3.0/Definitions/Lists/Members/Response.json",
                }
            ]
        return body

    def _list_json(self, audience: Audience) -> dict[str, Any]:
        statuses = [m.status for m in audience.members.values()]
        return {
            "id": audience.id,
            "web_id": audience.web_id,
            "name": audience.name,
            "contact": {
                "company": self.account_name,
                "address1": "675 Ponce de Leon Ave NE",
                "address2": "",
                "city": "Atlanta",
                "state": "GA",
                "zip": "30308",
                "country": "US",
                "phone": "",
            },
            "permission_reminder": "You signed up for updates on our website.",
            "use_archive_bar": True,
            "campaign_defaults": {
                "from_name": self.account_name,
                "from_email": "news@retl.dev",
                "subject": "",
                "language": "en",
            },
            "notify_on_subscribe": "",
            "notify_on_unsubscribe": "",
            "date_created": audience.date_created,
            "list_rating": 0,
            "email_type_option": False,
            "subscribe_url_short": f"https://eepurl.com/{audience.id[:6]}",
            "subscribe_url_long": f"https://retl.{self.datacenter}.list-manage.com/subscribe?id={audience.id}",
            "beamer_address": f"{audience.id}@inbound.mailchimp.com",
            "visibility": "pub",
            "double_optin": False,
            "has_welcome": False,
            "marketing_permissions": False,
            "modules": [],
            "stats": {
                "member_count": statuses.count("subscribed"),
                "unsubscribe_count": statuses.count("unsubscribed"),
                "cleaned_count": statuses.count("cleaned"),
                "member_count_since_send": statuses.count("subscribed"),
                "unsubscribe_count_since_send": 0,
                "cleaned_count_since_send": 0,
                "campaign_count": 0,
                "merge_field_count": len(audience.merge_fields) + 1,
                "avg_sub_rate": 0,
                "avg_unsub_rate": 0,
                "target_sub_rate": 0,
                "open_rate": 0,
                "click_rate": 0,
                "total_contacts": len(statuses),
            },
            "_links": [],
        }

    def _root_json(self) -> dict[str, Any]:
        return {
            "account_id": "8d3a3db4d97663a9074efcc16",
            "login_id": "123456789",
            "account_name": self.account_name,
            "email": "owner@retl.dev",
            "first_name": "Reverse",
            "last_name": "ETL",
            "username": "retl",
            "avatar_url": "",
            "role": "owner",
            "member_since": "2026-01-01T00:00:00+00:00",
            "pricing_plan_type": "monthly",
            "first_payment": "",
            "account_timezone": "UTC",
            "account_industry": "Software",
            "contact": {
                "company": self.account_name,
                "addr1": "",
                "addr2": "",
                "city": "",
                "state": "",
                "zip": "",
                "country": "US",
            },
            "pro_enabled": False,
            "last_login": _now(),
            "total_subscribers": sum(
                1 for a in self._audiences.values() for m in a.members.values() if m.status == "subscribed"
            ),
            "industry_stats": {"open_rate": 0, "bounce_rate": 0, "click_rate": 0},
            "_links": [],
        }


def _status(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    if value not in STATUSES:
        raise _MemberError(
            "Invalid Resource",
            _MSG_INVALID_RESOURCE,
            errors=[
                {
                    "field": name,
                    "message": f"Data did not match any of the schemas described in anyOf. "
                    f"Allowed values: {', '.join(STATUSES)}",
                }
            ],
        )
    return str(value)


def _check_batch_statuses(members: Sequence[Any]) -> None:
    """Schema check of batch members: each needs a ``status`` of the enum, or the whole call is a 400.

    The document's ``Add_List_Members`` (the ``members`` items of POST /lists/{list_id}) has
    ``status`` (enum subscribed, unsubscribed, cleaned, pending, transactional), and Mailchimp's
    reference marks it required. Mailchimp validates the body against that schema before it
    touches a member: a bad ``members[0].status`` comes back as 400 "Invalid Resource" with
    ``errors[{field: "members.item:0.status", ...}]`` (an answer quoted in MailChimp.Net issue
    #567). The wording for a missing one follows the "Required fields were not provided" answers.
    """
    problems: list[dict[str, str]] = []
    for position, item in enumerate(members):
        if not isinstance(item, Mapping):
            continue  # reported per member, as before
        value = item.get("status")
        if value is None:
            problems.append(
                {"field": f"members.item:{position}", "message": "Required fields were not provided: status"}
            )
        elif value not in STATUSES:
            problems.append(
                {
                    "field": f"members.item:{position}.status",
                    "message": f"Data presented is not one of the accepted values: {', '.join(STATUSES)}.",
                }
            )
    if problems:
        raise MailchimpError(400, "Invalid Resource", _MSG_INVALID_RESOURCE, problems)


def _check_compliance(email: str, previous: str | None, wanted: str) -> None:
    """Unsubscribed or cleaned addresses are never subscribed by an API call (pending re-asks an unsubscribe).

    A cleaned address (hard bounce) keeps that status: any other status is refused.
    """
    if (
        wanted == "subscribed"
        and previous in ("unsubscribed", "cleaned")
        or (previous, wanted) == ("cleaned", "pending")
    ):
        raise _MemberError(
            "Member In Compliance State",
            f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be "
            "subscribed.",
        )
    if previous == "cleaned" and wanted != "cleaned":
        raise _MemberError(
            "Member In Compliance State",
            f"{email} was cleaned (its address bounced) and its status cannot be changed to {wanted}.",
        )


def _hash_of(email_or_hash: str) -> str:
    # Member paths take the subscriber hash, or the address itself.
    return subscriber_hash(email_or_hash) if "@" in email_or_hash else email_or_hash.lower()


class _AuthAndConnections:
    """ASGI layer in front of the routes: the API key, then the connection limit, then the rate limit."""

    def __init__(self, app: ASGIApp, emulator: MailchimpEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        account, reason = self.emulator.account_for(headers.get(b"authorization", b"").decode("latin-1"))
        if account is None:
            await drain_request_body(receive)
            if reason == "missing":
                error = MailchimpError(401, "API Key Missing", "Your request did not include an API key.")
            else:
                error = MailchimpError(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
                )
            await error.response()(scope, receive, send)
            return
        if not self.emulator._enter(account):
            await drain_request_body(receive)
            await self.emulator._too_many_connections().response()(scope, receive, send)
            return
        try:
            if self.emulator.processing_seconds > 0:
                await asyncio.sleep(self.emulator.processing_seconds)
            decision = self.emulator.limiter.acquire(account)
            if not decision.allowed:
                await drain_request_body(receive)
                error = MailchimpError(
                    429,
                    "Too Many Requests",
                    f"You have exceeded the limit of {decision.limit} requests per "
                    f"{self.emulator.limiter.window:g} seconds.",
                )
                await error.response({"Retry-After": decision.retry_after_header})(scope, receive, send)
                return
            await self.app(scope, receive, send)
        finally:
            self.emulator._leave(account)


# -- helpers ----------------------------------------------------------------------------------------


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MailchimpError(400, "JSON Parse Error", "We encountered an unspecified JSON parsing error.") from None


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def _paging(request: Request) -> tuple[int, int]:
    try:
        count = int(request.query_params.get("count", DEFAULT_COUNT))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise MailchimpError(400, "Invalid Resource", "count and offset must be integers") from None
    return max(0, min(count, MAX_COUNT)), max(0, offset)


def _select_fields(body: dict[str, Any], request: Request) -> dict[str, Any]:
    """``fields`` / ``exclude_fields``: comma-separated, dotted for nested (``members.id``)."""
    wanted = [f.strip() for f in request.query_params.get("fields", "").split(",") if f.strip()]
    excluded = [f.strip() for f in request.query_params.get("exclude_fields", "").split(",") if f.strip()]
    if wanted:
        body = _keep(body, [f.split(".") for f in wanted])
    for path in excluded:
        _drop(body, path.split("."))
    return body


def _keep(value: Any, paths: list[list[str]]) -> Any:
    if isinstance(value, list):
        return [_keep(v, paths) for v in value]
    if not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for head in dict.fromkeys(p[0] for p in paths):
        if head not in value:
            continue
        rest = [p[1:] for p in paths if p[0] == head]
        kept[head] = value[head] if any(not r for r in rest) else _keep(value[head], [r for r in rest if r])
    return kept


def _drop(value: Any, path: list[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _drop(item, path)
    elif isinstance(value, dict) and path and path[0] in value:
        if len(path) == 1:
            del value[path[0]]
        else:
            _drop(value[path[0]], path[1:])
