"""Salesforce sObjects (Contact, Lead, Account, any custom object) over the REST API.

How the real API behaves, and what this hook does about it:

* **Auth.** OAuth 2.0 against ``<login URL>/services/oauth2/token``: the
  username-password flow (password + security token, with a connected app's
  client id and secret) or the client-credentials flow. Calls go to the
  ``instance_url`` of the token response. Access tokens expire with the
  session; a 401 ``INVALID_SESSION_ID`` makes the hook log in again once and
  repeat the call.
* **Cheapest write path.** When the match field (the field the primary key is
  sent as) is an External ID field per ``describe`` (read once per object),
  records are upserted with ``PATCH /composite/sobjects/{SObject}/{Field}``,
  200 per call. Otherwise the engine looks keys up with SOQL
  (``SELECT Id, f FROM o WHERE f IN (...)``, as many values per query as fit the
  16,384-byte URI limit) and creates (``POST /composite/sobjects``) or updates
  (``PATCH /composite/sobjects``) by id. Deletes use ``DELETE
  /composite/sobjects?ids=`` (200 per call). Large upserts go through one Bulk
  API 2.0 ingest job (``bulk_upsert``) from ``bulk_threshold`` records on.
* **Per-record results.** Collections answer 200 even when records fail; each
  ``{success: false, errors: [{statusCode, message, fields}]}`` becomes a
  rejected outcome with ``code=statusCode`` (``STRING_TOO_LONG``,
  ``INVALID_EMAIL_ADDRESS``, ``REQUIRED_FIELD_MISSING``, ``DUPLICATE_VALUE`` ...).
  ``UNABLE_TO_LOCK_ROW`` records are sent again (``lock_retries`` times, with
  backoff) before they are rejected. A whole-request 400 ``JSON_PARSER_ERROR``
  (one value of the wrong type) is bisected down to the bad record.
* **Limits.** Every response's ``Sforce-Limit-Info: api-usage=n/N`` is read;
  the hook warns once usage passes ``api_usage_warning`` (80 %). A 403
  ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests" (the org's 24-hour allowance is
  spent; no Retry-After) fails the task at once with the usage; the
  "ConcurrentRequests" kind is retried.

Bulk threshold: ``DEFAULT_BULK_THRESHOLD`` (10,000) comes from
``benchmarks/salesforce_bulk_threshold.py`` (collections, 4 in flight, vs one bulk job on
the emulator with latencies modelled on real orgs): collections are faster at every size,
but from 10,000 records a bulk job needs ~10 calls instead of 50+ (80 % fewer against the
daily allowance) for ~20 s more. Override it with the ``bulk_threshold`` extra (0 disables).
"""

from __future__ import annotations

import csv
import io
import math
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlencode, urlsplit

import orjson
import requests
from airflow.sdk.log import mask_secret

from airflow_provider_retl.destinations.salesforce.spec import SPEC
from airflow_provider_retl.hooks.destination import (
    EXISTS,
    IDEMPOTENT_METHODS,
    DestinationHook,
    _json_or_none,
    dumps,
)
from airflow_provider_retl.sync import validate as validators
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
    OutcomeUnknownError,
    RetryableDestinationError,
    RetryableSyncError,
)
from airflow_provider_retl.sync.records import Outcome, Record
from airflow_provider_retl.sync.redaction import REDACTOR

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["SalesforceHook"]

# Defaults declared once, as knobs of the spec.
DEFAULT_API_VERSION: str = SPEC.knob("api_version").default
#: Upserts from which one Bulk API 2.0 job beats sObject Collections (see benchmarks/salesforce_bulk_threshold.py).
DEFAULT_BULK_THRESHOLD: int = SPEC.knob("bulk_threshold").default
#: Records per Bulk API 2.0 job (the engine splits larger syncs into several jobs).
DEFAULT_BULK_BATCH_SIZE: int = SPEC.knob("bulk_batch_size").default
#: Bulk API 2.0 takes at most 150 MB of base64 per job; stay well below with raw CSV.
MAX_BULK_UPLOAD_BYTES = 100 * 1024 * 1024
#: Longest request URI Salesforce accepts (HTTP 414 beyond it).
MAX_URI_BYTES = 16_384
#: Bytes of the URI kept free for proxies that add to the query string.
URI_MARGIN = 256
#: Bulk CSV value that sets a field to null (an empty cell leaves it unchanged).
BULK_NULL = "#N/A"

_TEXT_TYPES = frozenset(
    {
        "string",
        "email",
        "phone",
        "url",
        "textarea",
        "picklist",
        "multipicklist",
        "combobox",
        "encryptedstring",
        "id",
        "reference",
    }
)
_NUMBER_TYPES = frozenset({"int", "double", "currency", "percent", "long"})
_UNQUOTED_TYPES = frozenset({"date", "datetime", "time"})
#: Codes of a delete whose record is gone already: the goal of a delete is reached.
_ALREADY_GONE = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
#: Whole-request 400s that one bad record can cause (worth bisecting).
_RECORD_LEVEL_400 = frozenset({"JSON_PARSER_ERROR"})
_LOCKED = "UNABLE_TO_LOCK_ROW"
_EXISTING_ID = re.compile(r"record with id:\s*([a-zA-Z0-9]{15,18})")
_VERSION = re.compile(r"^v?(\d{2,3})(?:\.(\d))?$")
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
_SOQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


class _Described:
    """The part of an sObject's describe the hook uses: its name and fields by lower-cased name."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.name = str(body.get("name"))
        self.fields: dict[str, Mapping[str, Any]] = {
            str(f["name"]).lower(): f for f in body.get("fields") or [] if f.get("name")
        }

    def field(self, name: str | None) -> Mapping[str, Any] | None:
        return self.fields.get(str(name).lower()) if name else None


class SalesforceHook(DestinationHook):
    """Salesforce sObjects over the REST API (sObject Collections, SOQL, Bulk API 2.0).

    :param salesforce_conn_id: connection with the login URL in ``host`` (default
        https://login.salesforce.com; https://test.salesforce.com for sandboxes, a My
        Domain URL, or an emulator), the username in ``login``, the password in
        ``password``, and in the extras ``client_id`` and ``client_secret`` of the
        connected app, ``security_token``, ``grant_type`` (``password`` |
        ``client_credentials``; default ``password`` when a username is set; the
        client-credentials flow needs the org's My Domain URL as host),
        ``api_version`` (default 62.0), ``instance_url`` (overrides the token's),
        ``bulk_threshold``, ``bulk_batch_size``, ``bulk_poll_interval``,
        ``bulk_timeout``, ``lock_retries`` and ``api_usage_warning``.
    """

    spec = SPEC

    def __init__(
        self,
        salesforce_conn_id: str = SPEC.default_conn_name,
        *,
        bulk_threshold: int | None = None,
        bulk_batch_size: int | None = None,
        bulk_poll_interval: float | None = None,
        bulk_timeout: float | None = None,
        lock_retries: int | None = None,
        api_version: str | None = None,
        poll_sleep: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(salesforce_conn_id, **kwargs)
        own = {
            "bulk_threshold": bulk_threshold,
            "bulk_batch_size": bulk_batch_size,
            "bulk_poll_interval": bulk_poll_interval,
            "bulk_timeout": bulk_timeout,
            "lock_retries": lock_retries,
            "api_version": api_version,
        }
        self._options.update({k: v for k, v in own.items() if v is not None})
        self._poll_sleep = poll_sleep or time.sleep
        self._auth_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._described: dict[str, _Described] = {}
        self._describe_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._secrets: list[str] = []
        self._access_token: str | None = None
        self._instance_url: str | None = None
        self._instance_override: str | None = None
        self._grant_type = "password"
        self._client_id: str | None = None
        self._client_secret: str | None = None
        self._security_token: str | None = None
        self._api_version = DEFAULT_API_VERSION
        self._bulk_threshold: int | None = DEFAULT_BULK_THRESHOLD
        self._bulk_batch_size = DEFAULT_BULK_BATCH_SIZE
        self._bulk_poll_interval = 2.0
        self._bulk_timeout = 3600.0
        self._lock_retries = 3
        self._usage_warning = 0.8
        self._usage_warned = False
        #: (used, allowance) from the last ``Sforce-Limit-Info`` header; None before the first call.
        self.api_usage: tuple[int, int] | None = None

    # ------------------------------------------------------------------ connection

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """No bearer token yet: it comes from the OAuth token endpoint on the first call."""
        extra = dict(conn.extra_dejson)

        def pick(*names: str) -> str | None:
            for name in names:
                for key in (name, f"extra__{self.conn_type}__{name}"):
                    value = extra.get(key)
                    if value not in (None, ""):
                        return str(value)
            return None

        self._client_id = pick("client_id", "consumer_key")
        self._client_secret = pick("client_secret", "consumer_secret")
        self._security_token = pick("security_token")
        grant = pick("grant_type") or ("password" if conn.login else "client_credentials")
        if grant not in ("password", "client_credentials"):
            raise ConfigurationError(f"extra 'grant_type' must be 'password' or 'client_credentials'; got {grant!r}")
        self._grant_type = grant
        self._instance_override = (pick("instance_url") or "").rstrip("/") or None
        main = self._client_secret or conn.password
        if main:
            self._register_secret(main)
        for secret in (conn.password, self._security_token, self._client_secret):
            self._remember_secret(secret)
        if conn.password and self._security_token:
            self._remember_secret(conn.password + self._security_token)

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        super()._configure_from_extra(session, extra)
        version = self._option(extra, "api_version")
        if version is not None:
            match = _VERSION.match(str(version).strip())
            if not match:
                raise ConfigurationError(f"api_version must look like 62.0; got {version!r}")
            self._api_version = f"{match.group(1)}.{match.group(2) or '0'}"
        threshold = self._option(extra, "bulk_threshold")
        if threshold is not None:
            off = str(threshold).strip().lower() in ("off", "none", "false")
            self._bulk_threshold = None if off else (self.knob(extra, "bulk_threshold") or None)
        self._bulk_batch_size = self.knob(extra, "bulk_batch_size")
        self._bulk_poll_interval = self.knob(extra, "bulk_poll_interval")
        self._bulk_timeout = self.knob(extra, "bulk_timeout")
        self._lock_retries = self.knob(extra, "lock_retries")
        warning = self.knob(extra, "api_usage_warning")
        self._usage_warning = warning / 100 if warning > 1 else warning

    def _remember_secret(self, secret: str | None) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            mask_secret(secret)
            REDACTOR.add(secret)  # the process-wide redactor: reports, rejects and exceptions too

    def redact(self, text: str) -> str:
        text = super().redact(text)
        for secret in sorted(self._secrets, key=len, reverse=True):  # password+token before password
            if secret in text:
                text = text.replace(secret, "***")
        return text

    @property
    def api_version(self) -> str:
        """The REST API version of every call, e.g. ``62.0`` (extra ``api_version``)."""
        self.get_conn()
        return self._api_version

    # ------------------------------------------------------------------ OAuth

    @property
    def instance_url(self) -> str:
        """Where API calls go: the token response's ``instance_url`` (logs in when needed)."""
        self._ensure_token()
        assert self._instance_url is not None
        return self._instance_url

    def _ensure_token(self) -> str:
        self.get_conn()
        with self._auth_lock:
            if self._access_token is None:
                self._login()
            assert self._access_token is not None
            return self._access_token

    def _relogin(self, stale: str) -> None:
        """Log in again unless another thread already replaced the ``stale`` token."""
        with self._auth_lock:
            if self._access_token == stale:
                self.log.info("Salesforce session expired (INVALID_SESSION_ID); logging in again")
                self._access_token = None
                self._login()

    def _login(self) -> None:
        conn = self.connection
        form: dict[str, str] = {"grant_type": self._grant_type}
        missing = [
            name
            for name, value in (("extra client_id", self._client_id), ("extra client_secret", self._client_secret))
            if not value
        ]
        if self._grant_type == "password":
            missing += [
                name for name, value in (("login (username)", conn.login), ("password", conn.password)) if not value
            ]
        if missing:
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r} lacks {', '.join(missing)} for the Salesforce "
                f"{self._grant_type} flow"
            )
        form["client_id"] = str(self._client_id)
        form["client_secret"] = str(self._client_secret)
        if self._grant_type == "password":
            form["username"] = str(conn.login)
            form["password"] = str(conn.password) + (self._security_token or "")
        url = f"{self.base_url}/services/oauth2/token"
        what = f"Salesforce login ({self._grant_type} flow) at {self.base_url}"
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": None}
        session = self.get_conn()
        try:
            for attempt in self._retry_policy.retrying(self._stats, on_retry=self._log_retry):
                with attempt:
                    response = self._send(session, "POST", url, body, None, headers, True, what, (400, 401, 403))
        except DestinationError as err:
            # The request body holds the password: never let it ride along on the error.
            err.request = None
            if err.response is not None:
                err.response.request = None
            raise
        response.request = None  # type: ignore[assignment]
        data = _json_or_none(response) or {}
        if response.status_code >= 400 or not data.get("access_token"):
            reason = f"{data.get('error', response.status_code)}: {data.get('error_description', '')}".strip(": ")
            raise FatalDestinationError(self.redact(f"{what} failed: {reason}"), status=response.status_code)
        token = str(data["access_token"])
        self._remember_secret(token)
        instance = self._instance_override or str(data.get("instance_url") or "").rstrip("/")
        if not instance:
            raise FatalDestinationError(f"{what}: the token response has no instance_url")
        self._instance_url = instance
        self._access_token = token
        session.headers["Authorization"] = f"Bearer {token}"

    # ------------------------------------------------------------------ sending

    def api_url(self, path: str) -> str:
        """Full URL of an API path: ``sobjects/...`` is under ``/services/data/vXX.X/``."""
        if "://" in path:
            return path
        base = self.instance_url
        if path.startswith("/services/"):
            return base + path
        return f"{base}/services/data/v{self.api_version}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retry: bool = True,
        accept: Collection[int] = (),
    ) -> requests.Response:
        """One API call at the instance; a 401 INVALID_SESSION_ID logs in again once and repeats it."""
        body = None if json is None else dumps(json)
        return self._call(
            method, path, body, params=params, headers=headers, idempotent=idempotent, retry=retry, accept=accept
        )

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retry: bool = True,
        accept: Collection[int] = (),
    ) -> requests.Response:
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        token = self._ensure_token()
        try:
            return self._attempts(method, self.api_url(path), body, params, headers, idempotent, retry, accept)
        except FatalDestinationError as err:
            if not _invalid_session(err):
                raise
        self._relogin(token)
        try:
            return self._attempts(method, self.api_url(path), body, params, headers, idempotent, retry, accept)
        except FatalDestinationError as err:
            if _invalid_session(err):
                raise FatalDestinationError(
                    f"{err} (again with a fresh access token: check the connected app's session policies)",
                    status=err.status,
                    response=err.response,
                    request=err.request,
                ) from err
            raise

    def _send(
        self,
        session: requests.Session,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str | None] | None,  # None drops a session header (requests' merge)
        idempotent: bool,
        what: str,
        accept: Collection[int],
    ) -> requests.Response:
        try:
            response = super()._send(session, method, url, body, params, headers, idempotent, what, accept)
        except DestinationError as err:
            if err.response is not None:
                self._note_usage(err.response)
            raise
        self._note_usage(response)
        return response

    def _note_usage(self, response: requests.Response) -> None:
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if not match:
            return
        used, allowance = int(match.group(1)), int(match.group(2))
        self.api_usage = (used, allowance)
        if allowance and used / allowance >= self._usage_warning and not self._usage_warned:
            self._usage_warned = True
            self.log.warning(
                "Salesforce API usage is at %d of %d requests (%.0f%% of the org's 24-hour allowance); "
                "at 100%% every integration of the org is refused until the window rolls over",
                used,
                allowance,
                100 * used / allowance,
            )

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        errors = _errors(response)
        code = str(errors[0].get("errorCode") or "") if errors else ""
        if response.status_code == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            message = str(errors[0].get("message") or "")
            kwargs: dict[str, Any] = {"status": 403, "response": response, "request": response.request}
            if "concurrent" in message.lower():
                return RetryableDestinationError(f"{what} -> 403 REQUEST_LIMIT_EXCEEDED: {message}", **kwargs)
            usage = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
            spent = f"api-usage={usage.group(1)}/{usage.group(2)}" if usage else "usage unknown"
            return FatalDestinationError(
                f"{what} -> 403 REQUEST_LIMIT_EXCEEDED: the Salesforce org has spent its API request allowance "
                f"({spent}): {message} The allowance is counted over a rolling 24 hours; retrying now cannot "
                "succeed. Lower the sync's frequency, use bulk (extra bulk_threshold) or buy more API calls.",
                **kwargs,
            )
        return super()._error_for(response, idempotent=idempotent, what=what)

    def describe_error(self, response: requests.Response) -> str:
        errors = _errors(response)
        if errors:
            text = "; ".join(
                f"{e.get('errorCode')}: {' '.join(str(e.get('message') or '').split())}" for e in errors[:3]
            )
            return self.redact(text)[:300]
        data = _json_or_none(response)
        if isinstance(data, Mapping) and data.get("error"):
            return self.redact(f"{data['error']}: {data.get('error_description', '')}")[:300]
        return super().describe_error(response)

    def is_record_level(self, err: BatchRejectedError) -> bool:
        # Collections report bad records one by one; a whole-request 400 is about the request,
        # except a value JSON could not turn into its field's type (one record can cause that).
        errors = _errors(err.response) if err.response is not None else []
        return err.status == 400 and bool(errors) and str(errors[0].get("errorCode")) in _RECORD_LEVEL_400

    def rejection_outcome(self, err: BatchRejectedError) -> Outcome:
        errors = _errors(err.response) if err.response is not None else []
        if errors:
            return Outcome.failure(self.describe_error(err.response), str(errors[0].get("errorCode")))
        return super().rejection_outcome(err)

    def _test_call(self) -> None:
        self.request("GET", "limits", retry=False)

    def test_connection(self) -> tuple[bool, str]:
        ok, message = super().test_connection()
        if ok and self.api_usage:
            message += f" (instance {self._instance_url}, API usage {self.api_usage[0]}/{self.api_usage[1]})"
        return ok, message

    # ------------------------------------------------------------------ describe

    def describe(self, object: str) -> _Described:
        """The sObject's describe (fields, types, lengths, External ID flags); one call per object."""
        key = object.lower()
        with self._cache_lock:
            if key in self._described:
                return self._described[key]
            lock = self._describe_locks[key]
        with lock:
            with self._cache_lock:
                if key in self._described:
                    return self._described[key]
            response = self.request("GET", f"sobjects/{object}/describe", accept=(404,))
            if response.status_code == 404:
                raise ConfigurationError(
                    f"Salesforce does not know the sObject {object!r} (or this user cannot see it); use its API "
                    "name, e.g. Contact, Lead, Account or My_Object__c"
                )
            described = _Described(self.response_json(response) or {})
            with self._cache_lock:
                self._described[key] = described
            return described

    def _field(self, object: str, name: str) -> Mapping[str, Any]:
        described = self.describe(object)
        found = described.field(name)
        if found is None:
            raise ConfigurationError(f"Salesforce {described.name} has no field {name!r}")
        return found

    def _external_id_field(self, object: str, match_field: str | None) -> str:
        found = self.describe(object).field(match_field)
        if not match_field or found is None or not found.get("externalId"):
            raise ConfigurationError(
                f"Salesforce cannot upsert {object!r} by {match_field!r}: upsert needs an External ID field; "
                "mark the field as External ID in Setup, or the records are looked up and created/updated"
            )
        return str(found["name"])

    # ------------------------------------------------------------------ capabilities

    def supports_upsert(self, object: str, match_field: str | None) -> bool:
        found = self.describe(object).field(match_field)
        return bool(found and found.get("externalId"))

    def bulk_threshold(self, object: str) -> int | None:
        self.get_conn()
        return self._bulk_threshold

    @property
    def bulk_batch_size(self) -> int:
        self.get_conn()
        return self._bulk_batch_size

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Unknown and read-only fields, lengths, emails, numbers and cleared required fields, per describe."""
        described = self.describe(object)
        problems: list[tuple[str | None, str]] = []
        for name, value in fields.items():
            if name.lower() == "id":
                continue
            spec = described.field(name)
            if spec is None:
                problems.append((name, f"INVALID_FIELD: {described.name} has no field {name!r}"))
                continue
            if not spec.get("createable") and not spec.get("updateable"):
                problems.append((name, f"INVALID_FIELD_FOR_INSERT_UPDATE: {spec['name']} is read-only"))
                continue
            kind = str(spec.get("type"))
            if value is None or value == "":
                if not spec.get("nillable", True) and not spec.get("defaultedOnCreate") and kind != "boolean":
                    problems.append((name, f"REQUIRED_FIELD_MISSING: {spec['name']} is required and cannot be empty"))
                continue
            length = int(spec.get("length") or 0)
            if kind in _TEXT_TYPES and isinstance(value, str) and length and len(value) > length:
                reason = (
                    f"STRING_TOO_LONG: {spec['name']} holds at most {length:,} characters; the value has {len(value):,}"
                )
                problems.append((name, reason))
            elif kind == "email":
                problem = validators.email(value)
                if problem:
                    problems.append((name, f"INVALID_EMAIL_ADDRESS: {problem}"))
            elif kind in _NUMBER_TYPES and not _is_number(value):
                problems.append((name, f"INVALID_TYPE: {spec['name']} is a number field; got {value!r}"))
            elif kind == "boolean" and not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
                problems.append((name, f"INVALID_TYPE: {spec['name']} is a checkbox; got {value!r}"))
        return problems

    # ------------------------------------------------------------------ writes (sObject Collections)

    def upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        """``PATCH /composite/sobjects/{SObject}/{ExternalIdField}``, 200 records a call; idempotent."""
        field = self._external_id_field(object, match_field)
        name = self.describe(object).name

        def build(record: Record) -> dict[str, Any] | Outcome:
            value = _match_value(record, field)
            if value in (None, ""):
                return Outcome.failure(f"no value for {field}, which upsert matches on", "MISSING_ARGUMENT")
            payload = self._payload(name, record.fields)
            payload[field] = value
            return payload

        return self._write("upsert", "PATCH", f"composite/sobjects/{name}/{field}", records, build, idempotent=True)

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``POST /composite/sobjects``; not idempotent (a lost answer raises ``OutcomeUnknownError``).

        A record refused as ``DUPLICATE_VALUE`` of a unique field comes back with
        ``code=EXISTS`` and the existing record's id: the engine updates that one.
        """
        name = self.describe(object).name
        return self._write(
            "create", "POST", "composite/sobjects", records, lambda r: self._payload(name, r.fields), idempotent=False
        )

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``PATCH /composite/sobjects`` by id; idempotent."""
        name = self.describe(object).name

        def build(record: Record) -> dict[str, Any] | Outcome:
            if not record.dest_id:
                return Outcome.failure("no Salesforce id known for this record; it cannot be updated", "NO_ID")
            return {**self._payload(name, record.fields), "id": record.dest_id}

        return self._write("update", "PATCH", "composite/sobjects", records, build, idempotent=True)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """``DELETE /composite/sobjects?ids=`` (200 a call); an id that is gone already counts as deleted."""
        outcomes: list[Outcome | None] = [None] * len(dest_ids)
        todo = []
        for i, dest_id in enumerate(dest_ids):
            if dest_id in (None, ""):
                outcomes[i] = Outcome.failure("no Salesforce id known for this record; it cannot be deleted", "NO_ID")
            else:
                todo.append(i)
        for attempt in range(self._lock_retries + 1):
            if not todo:
                break
            locked = []
            ids = [str(dest_ids[i]) for i in todo]
            response = self.request("DELETE", "composite/sobjects", params={"ids": ",".join(ids), "allOrNone": "false"})
            results = self.response_json(response)
            if not isinstance(results, list) or len(results) != len(todo):
                raise RetryableDestinationError(
                    f"Salesforce answered a delete of {len(todo)} ids with "
                    f"{len(results) if isinstance(results, list) else 'no'} results"
                )
            for i, result in zip(todo, results, strict=True):
                errors = result.get("errors") or []
                codes = {str(e.get("statusCode")) for e in errors}
                if result.get("success") or (codes and codes <= _ALREADY_GONE):
                    outcomes[i] = Outcome.success(str(dest_ids[i]))
                elif _LOCKED in codes and attempt < self._lock_retries:
                    locked.append(i)
                else:
                    outcomes[i] = self._error_outcome(errors, "delete")
            if not locked:
                break
            self._lock_backoff(attempt, len(locked))
            todo = locked
        return [o for o in outcomes if o is not None]

    def _payload(self, sobject: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        # The record id travels as "id" (update) or not at all; a mapped Id column would clash with it.
        return {"attributes": {"type": sobject}, **{k: v for k, v in fields.items() if k.lower() != "id"}}

    def _write(
        self,
        action: str,
        method: str,
        path: str,
        records: Sequence[Record],
        build: Callable[[Record], dict[str, Any] | Outcome],
        *,
        idempotent: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(records)
        payloads: dict[int, dict[str, Any]] = {}
        for i, record in enumerate(records):
            built = build(record)
            if isinstance(built, Outcome):
                outcomes[i] = built
            else:
                payloads[i] = built

        def send(part: Sequence[int]) -> list[Outcome]:
            body = {"allOrNone": False, "records": [payloads[i] for i in part]}
            response = self.request(method, path, json=body, idempotent=idempotent)
            results = self.response_json(response)
            if not isinstance(results, list) or len(results) != len(part):
                message = (
                    f"Salesforce answered a {action} of {len(part)} records with "
                    f"{len(results) if isinstance(results, list) else 'no'} results"
                )
                raise OutcomeUnknownError(message) if not idempotent else RetryableDestinationError(message)
            return [self._result_outcome(result, action) for result in results]

        todo = sorted(payloads)
        for attempt in range(self._lock_retries + 1):
            if not todo:
                break
            locked = []
            try:
                # Bisected here, not by the engine: a retry sends only the locked records of this call, and an
                # engine split of the whole batch would send again the records already written (creates twice).
                results = self.bisect(todo, send)
            except BatchRejectedError as err:
                # About the request, not one record (e.g. INVALID_FIELD: a mapped field does not exist).
                outcome = self.rejection_outcome(err)
                results = [outcome] * len(todo)
            for i, outcome in zip(todo, results, strict=True):
                if outcome.code == _LOCKED and attempt < self._lock_retries:
                    locked.append(i)  # nothing was written for it: safe to send again, creates included
                else:
                    outcomes[i] = outcome
            if not locked:
                break
            self._lock_backoff(attempt, len(locked))
            todo = locked
        return [o for o in outcomes if o is not None]

    def _lock_backoff(self, attempt: int, count: int) -> None:
        wait = min(8.0, 0.5 * 2**attempt)
        self.log.info(
            "%d Salesforce records were locked by another transaction (UNABLE_TO_LOCK_ROW); "
            "sending them again in %.1fs",
            count,
            wait,
        )
        self._stats.add_retry(wait)
        (self._sleep or time.sleep)(wait)

    def _result_outcome(self, result: Mapping[str, Any], action: str) -> Outcome:
        if result.get("success"):
            dest_id = result.get("id")
            created = {"create": True, "update": False}.get(action, result.get("created"))
            return Outcome.success(str(dest_id) if dest_id else None, created=created)
        return self._error_outcome(result.get("errors") or [], action)

    def _error_outcome(self, errors: Sequence[Mapping[str, Any]], action: str) -> Outcome:
        if not errors:
            return Outcome.failure("Salesforce refused the record without saying why", "UNKNOWN")
        code = str(errors[0].get("statusCode") or errors[0].get("errorCode") or "UNKNOWN")
        parts = []
        for error in errors:
            text = f"{error.get('statusCode') or error.get('errorCode')}: {error.get('message')}"
            fields = [str(f) for f in error.get("fields") or []]
            parts.append(text + (f" [fields: {', '.join(fields)}]" if fields else ""))
        reason = self.redact("; ".join(parts))
        existing = _EXISTING_ID.search(str(errors[0].get("message") or ""))
        if action == "create" and code == "DUPLICATE_VALUE" and existing:
            return Outcome(ok=False, dest_id=existing.group(1), reason=reason, code=EXISTS)
        return Outcome.failure(reason, code)

    # ------------------------------------------------------------------ reads (SOQL)

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        """``SELECT Id, f FROM o WHERE f IN (...)``: {value: Id} for the values that exist.

        As many values go into one query as keep the request URI under 16,384
        bytes; text matches ignore case (as SOQL does). Where several records share
        a value, the oldest (lowest Id) wins and a warning says so.
        """
        described = self.describe(object)
        spec = self._field(object, match_field)
        name = str(spec["name"])
        kind = str(spec.get("type"))
        exact = kind in ("id", "reference") or bool(spec.get("caseSensitive"))

        def norm(value: Any) -> str:
            text = _text(value)
            return text[:15] if kind in ("id", "reference") else (text if exact else text.lower())

        wanted: dict[str, list[Any]] = {}
        for value in values:
            if value not in (None, ""):
                wanted.setdefault(norm(value), []).append(value)
        prefix = f"SELECT Id, {name} FROM {described.name} WHERE {name} IN ("
        found: dict[Any, str] = {}
        ambiguous = 0
        for soql in self._soql_batches(prefix, [_soql_literal(kind, v[0]) for v in wanted.values()]):
            for row in self.query(soql):
                key = norm(row.get(name))
                record_id = str(row.get("Id"))
                for original in wanted.get(key, []):
                    if original in found and found[original] != record_id:
                        ambiguous += 1
                        found[original] = min(found[original], record_id)
                    else:
                        found[original] = record_id
        if ambiguous:
            self.log.warning(
                "%d Salesforce %s records share a %s value with another record; the oldest is used",
                ambiguous,
                described.name,
                name,
            )
        return found

    def query(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following ``nextRecordsUrl``."""
        response = self.request("GET", "query", params={"q": soql})
        rows: list[dict[str, Any]] = []
        while True:
            data = self.response_json(response) or {}
            rows.extend(data.get("records") or [])
            next_url = data.get("nextRecordsUrl")
            if data.get("done", True) or not next_url:
                return rows
            response = self.request("GET", str(next_url))

    def _soql_batches(self, prefix: str, literals: Sequence[str]) -> list[str]:
        """``prefix + "lit,lit,...)"`` queries whose encoded request URI stays under the limit."""
        path_length = len(urlsplit(self.api_url("query")).path) + len("?q=")
        budget = MAX_URI_BYTES - URI_MARGIN - path_length - len(quote_plus(prefix)) - len(quote_plus(")"))
        comma = len(quote_plus(","))
        batches: list[str] = []
        current: list[str] = []
        used = 0
        for literal in literals:
            size = len(quote_plus(literal)) + (comma if current else 0)
            if current and used + size > budget:
                batches.append(prefix + ",".join(current) + ")")
                current, used = [], 0
                size = len(quote_plus(literal))
            if size > budget:
                raise ConfigurationError(f"a lookup value is too long for a SOQL query ({size:,} encoded bytes)")
            current.append(literal)
            used += size
        if current:
            batches.append(prefix + ",".join(current) + ")")
        return batches

    # ------------------------------------------------------------------ Bulk API 2.0

    def bulk_upsert(self, object: str, records: Sequence[Record], match_field: str) -> list[Outcome]:
        """Upsert in Bulk API 2.0 ingest jobs: create, upload CSV, UploadComplete, poll, read the results.

        Results come back in no particular order; they are mapped to the inputs by
        the External ID value. ``UNABLE_TO_LOCK_ROW`` rows are sent again through
        sObject Collections.
        """
        field = self._external_id_field(object, match_field)
        described = self.describe(object)
        outcomes: list[Outcome | None] = [None] * len(records)
        usable = []
        for i, record in enumerate(records):
            if _match_value(record, field) in (None, ""):
                outcomes[i] = Outcome.failure(f"no value for {field}, which upsert matches on", "MISSING_ARGUMENT")
            else:
                usable.append(i)
        for part in self._bulk_parts(records, usable, field, described):
            for i, outcome in zip(part, self._bulk_job(described, records, part, field), strict=True):
                outcomes[i] = outcome
        locked = [i for i, o in enumerate(outcomes) if o is not None and o.code == _LOCKED]
        if locked:
            self.log.info("%d rows of the bulk job were locked (UNABLE_TO_LOCK_ROW); upserting them again", len(locked))
            for i, outcome in zip(locked, self.upsert(object, [records[i] for i in locked], field), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _bulk_parts(
        self, records: Sequence[Record], positions: list[int], field: str, described: _Described
    ) -> list[list[int]]:
        """Split so that each job's CSV stays under the upload limit."""
        if not positions:
            return []
        size = len(self._bulk_csv(described, records, positions, field))
        if size <= MAX_BULK_UPLOAD_BYTES or len(positions) == 1:
            return [positions]
        middle = len(positions) // 2
        return self._bulk_parts(records, positions[:middle], field, described) + self._bulk_parts(
            records, positions[middle:], field, described
        )

    def _bulk_csv(
        self, described: _Described, records: Sequence[Record], positions: Sequence[int], field: str
    ) -> bytes:
        columns = [field]
        canonical = {field.lower(): field}
        for i in positions:
            for name in records[i].fields:
                if name.lower() == "id" or name.lower() in canonical:
                    continue
                spec = described.field(name)
                canonical[name.lower()] = str(spec["name"]) if spec else name
                columns.append(canonical[name.lower()])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for i in positions:
            values = {canonical.get(k.lower(), k): v for k, v in records[i].fields.items() if k.lower() != "id"}
            values[field] = _match_value(records[i], field)
            # A column the record does not carry stays empty: Bulk API leaves such a field as it is.
            writer.writerow([_csv_value(values[c]) if c in values else "" for c in columns])
        return out.getvalue().encode("utf-8")

    def _bulk_job(self, described: _Described, records: Sequence[Record], part: list[int], field: str) -> list[Outcome]:
        data = self._bulk_csv(described, records, part, field)
        job_id = ""
        for attempt in range(3):
            job = (
                self.response_json(
                    self.request(
                        "POST",
                        "jobs/ingest",
                        idempotent=True,
                        json={
                            "object": described.name,
                            "operation": "upsert",
                            "externalIdFieldName": field,
                            "contentType": "CSV",
                            "columnDelimiter": "COMMA",
                            "lineEnding": "LF",
                        },
                    )
                )
                or {}
            )
            job_id = str(job.get("id") or "")
            if not job_id:
                raise RetryableDestinationError("Salesforce created a bulk job without an id")
            try:
                self._call(
                    "PUT", f"jobs/ingest/{job_id}/batches", data, idempotent=False, headers={"Content-Type": "text/csv"}
                )
                self._close_job(job_id)
                break
            except RetryableSyncError as err:
                # An upload whose answer was lost may have landed; Salesforce takes one upload per job,
                # so start over with a fresh job (upserts are idempotent).
                self._abort_job(job_id)
                if attempt == 2:
                    raise
                self.log.warning("Bulk job %s: upload failed (%s); starting a new job", job_id, err)
        self.log.info("Bulk API 2.0 job %s: upserting %d %s records by %s", job_id, len(part), described.name, field)
        info = self._wait_for_job(job_id)
        state = str(info.get("state"))
        by_value: dict[str, deque[int]] = defaultdict(deque)
        for i in part:
            by_value[_csv_value(_match_value(records[i], field))].append(i)
        results: dict[int, Outcome] = {}
        for row in self._bulk_rows(job_id, "successfulResults"):
            slot = _take(by_value, row.get(field))
            if slot is not None:
                results[slot] = Outcome.success(
                    row.get("sf__Id") or None, created=str(row.get("sf__Created")).lower() == "true"
                )
        for row in self._bulk_rows(job_id, "failedResults"):
            slot = _take(by_value, row.get(field))
            if slot is not None:
                results[slot] = self._bulk_error(str(row.get("sf__Error") or ""))
        missing = [i for i in part if i not in results]
        if missing:
            message = str(info.get("errorMessage") or f"job ended {state}")
            if state == "Failed" and message.startswith("InvalidBatch"):
                for i in missing:
                    results[i] = Outcome.failure(self.redact(f"bulk job {job_id} failed: {message}"), "InvalidBatch")
            else:
                raise RetryableDestinationError(
                    f"Salesforce bulk job {job_id} ended {state} ({message}); {len(missing)} of {len(part)} records "
                    "were not processed (upserts are idempotent: a retry sends them again)"
                )
        self.log.info(
            "Bulk API 2.0 job %s %s: %s processed, %s failed",
            job_id,
            state,
            info.get("numberRecordsProcessed"),
            info.get("numberRecordsFailed"),
        )
        return [results[i] for i in part]

    def _close_job(self, job_id: str) -> None:
        response = self.request(
            "PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"}, idempotent=True, accept=(409,)
        )
        if response.status_code == 409:
            # A lost answer to an earlier UploadComplete: fine when the job has moved on.
            state = (self.response_json(self.request("GET", f"jobs/ingest/{job_id}")) or {}).get("state")
            if state == "Open":
                raise RetryableDestinationError(f"Salesforce bulk job {job_id} refused UploadComplete")

    def _abort_job(self, job_id: str) -> None:
        try:
            self.request(
                "PATCH",
                f"jobs/ingest/{job_id}",
                json={"state": "Aborted"},
                idempotent=True,
                accept=(400, 404, 409),
                retry=False,
            )
        except DestinationError as err:  # best effort: an Open job without data expires on its own
            self.log.warning("could not abort Salesforce bulk job %s: %s", job_id, err)

    def _wait_for_job(self, job_id: str) -> dict[str, Any]:
        started = time.monotonic()
        wait = self._bulk_poll_interval
        while True:
            self._poll_sleep(wait)
            info = self.response_json(self.request("GET", f"jobs/ingest/{job_id}")) or {}
            if info.get("state") in _TERMINAL:
                return info
            if time.monotonic() - started > self._bulk_timeout:
                self._abort_job(job_id)
                raise RetryableDestinationError(
                    f"Salesforce bulk job {job_id} still {info.get('state')} after {self._bulk_timeout:.0f}s; "
                    "aborted (raise the bulk_timeout extra for slow orgs)"
                )
            wait = min(30.0, wait * 1.5)

    def _bulk_rows(self, job_id: str, kind: str) -> list[dict[str, str]]:
        response = self._call("GET", f"jobs/ingest/{job_id}/{kind}/", None, headers={"Accept": "text/csv"})
        text = response.content.decode("utf-8-sig")
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def _bulk_error(self, text: str) -> Outcome:
        """``sf__Error`` is ``CODE:message:field,field --``."""
        code, _, rest = text.partition(":")
        body = rest.rstrip()
        if body.endswith("--"):
            body = body[:-2].rstrip()
        message, _, fields = body.rpartition(":")
        if not message:
            message, fields = body, ""
        reason = f"{code}: {message}" + (f" [fields: {fields}]" if fields.strip() else "")
        return Outcome.failure(self.redact(reason), code or "UNKNOWN")


# -- helpers ---------------------------------------------------------------------------------


def _errors(response: requests.Response | None) -> list[Mapping[str, Any]]:
    """Salesforce's error array (``[{"message", "errorCode"}]``), or [] for other bodies."""
    data = _json_or_none(response)
    if isinstance(data, list):
        return [e for e in data if isinstance(e, Mapping)]
    return []


def _invalid_session(err: FatalDestinationError) -> bool:
    if err.status != 401 or err.response is None:
        return False
    return any(e.get("errorCode") == "INVALID_SESSION_ID" for e in _errors(err.response))


def _match_value(record: Record, field: str) -> Any:
    if record.match_value not in (None, ""):
        return record.match_value
    return next((v for k, v in record.fields.items() if k.lower() == field.lower()), None)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        return not (isinstance(value, float) and not math.isfinite(value))
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _soql_literal(kind: str, value: Any) -> str:
    """A SOQL literal of ``value`` for a field of type ``kind``; text is quoted with every escape SOQL needs."""
    if kind in _NUMBER_TYPES and _is_number(value):
        return _text(value) if not isinstance(value, float) else format(Decimal(repr(value)), "f")
    if kind == "boolean":
        return "true" if str(value).lower() in ("true", "1") else "false"
    if kind in _UNQUOTED_TYPES:
        return str(value)
    text = _text(value)
    return "'" + "".join(_SOQL_ESCAPES.get(ch, ch) for ch in text) + "'"


def _csv_value(value: Any) -> str:
    """A Bulk API CSV cell: ``#N/A`` clears a field (an empty cell would leave it unchanged)."""
    if value is None or value == "":
        return BULK_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text or "E" in text else text
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _take(by_value: dict[str, deque[int]], value: Any) -> int | None:
    slots = by_value.get(str(value)) if value is not None else None
    return slots.popleft() if slots else None
