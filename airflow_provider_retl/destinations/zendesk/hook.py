"""Zendesk Support users and organizations, 100 records a background job.

How the real API behaves, and what this hook does about it:

* Writes are *jobs*: ``create_or_update_many`` (user upsert), ``update_many`` (by id),
  ``create_many`` and ``destroy_many`` answer ``{"job_status": {"status": "queued", ...}}``
  at once and do the work later. The hook polls ``GET /api/v2/job_statuses/{id}`` with a
  growing interval until ``completed`` / ``failed`` / ``killed`` and turns ``results[]``
  (request order; ``"id"`` of a ``Failed`` result is the input index) into one outcome per
  record: ``Created`` / ``Updated`` say which, ``Failed`` carries ``error`` and ``details``.
  A job that fails, is killed or expires is submitted again when the call is idempotent
  (upsert, update by id, delete); a create whose job is lost raises ``OutcomeUnknownError``
  so the engine reconciles by lookup before sending anything again.
* At most 30 jobs may be queued or running per Zendesk account (the next one is 429).
  Jobs in flight are bounded by ``max_jobs_in_flight`` (25 by default) per account and
  process, shared by every hook of that account; a 429 from jobs started elsewhere is
  retried after its Retry-After.
* Upserts match on ``external_id`` (the default) or ``email`` for users, ``external_id``
  or ``name`` for organizations; Zendesk itself tries ``external_id`` first when a record
  carries both. External ids and emails are case-insensitive. Zendesk documents
  ``create_or_update_many`` for users only (``/organizations/create_or_update_many`` is a
  404), so an organization upsert looks the keys up (``show_many?external_ids=``, 100 a
  call, or ``search?name=``), then sends ``create_many`` for the new ones and
  ``update_many`` by id for the existing ones; a create refused because the key was taken
  meanwhile is updated instead.
* Fields: Zendesk's standard attributes (``name``, ``email``, ``phone``, ``tags``,
  ``organization_id`` ...) are sent as they are; any other field is a custom field and
  goes into ``user_fields`` / ``organization_fields``. A field may also be named
  explicitly, ``user_fields.plan`` (a mapping key or a quoted SQL alias). Custom fields
  are checked against the account's definitions (unknown keys, dropdown options,
  integer/decimal/checkbox/date/regexp values) before anything is sent: Zendesk would
  silently drop an unknown key.
* Phone numbers are normalised to E.164 with ``phonenumbers`` (Google's libphonenumber
  metadata); a number without a country code needs ``default_region`` (e.g. ``"US"``),
  and one that does not parse or is not a valid number is rejected with the reason.
* Mirror: deleting a Zendesk user is destructive (their tickets lose their requester), so
  by default ``mirror`` does **not** delete. A record whose key left the query has the
  *synced fields* unset instead: its custom fields and clearable attributes (phone, notes,
  details, alias, tags, organization ...) are set to null; identity attributes (name,
  email, external id, role) stay, so the record can be matched again. The synced fields
  are ``mirror_unset_fields`` when given, else the fields this hook sent or checked during
  the run. Only ``mirror_delete=True`` (extra or hook parameter) makes mirror call
  ``destroy_many`` (a soft delete, which Zendesk can restore for 30 days).
  A record with nothing to unset (only identity fields synced) is a reject
  (``NOTHING_TO_UNSET``), never reported as deleted.
* Rate limit: requests per minute per account (200 Team, 400 Growth/Professional, 700
  Enterprise, 2500 High Volume); 429 answers carry Retry-After, which every task of the
  account honours. The default here is 400 per 60 s; set ``rate_limit`` in the extras.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk.log import mask_secret

from airflow_provider_retl.destinations.zendesk.spec import SPEC
from airflow_provider_retl.hooks.destination import (
    DestinationHook,
    _json_or_none,
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
from airflow_provider_retl.sync.records import EXISTS, Outcome, Record

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["JobGate", "ZendeskHook", "clear_job_gates", "job_gate"]

#: Longest wait between two polls of a background job (seconds).
MAX_POLL_INTERVAL = 10.0
#: Extra submissions of an idempotent job that failed, was killed or expired.
JOB_RESUBMITS = 2

OBJECTS = {
    "users": "users",
    "user": "users",
    "organizations": "organizations",
    "organization": "organizations",
    "orgs": "organizations",
}
SINGULAR = {"users": "user", "organizations": "organization"}
FIELDS_KEY = {"users": "user_fields", "organizations": "organization_fields"}
MATCH_FIELDS = {"users": ("external_id", "email"), "organizations": ("external_id", "name")}

#: Standard attributes: sent at the top level of a record (everything else is a custom field).
STANDARD_FIELDS = {
    "users": frozenset(
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
            "organization",
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
        }
    ),
    "organizations": frozenset(
        {
            "name",
            "external_id",
            "details",
            "notes",
            "domain_names",
            "group_id",
            "shared_tickets",
            "shared_comments",
            "tags",
        }
    ),
}
#: Attributes the API document does not let be null in a write (UserCreateInput: email, name, role).
NOT_NULLABLE_INPUT = {"users": frozenset({"email", "name", "role"}), "organizations": frozenset({"name"})}
#: Attributes mirror may set to null (identity and role never: the record must stay matchable).
CLEARABLE_FIELDS = {
    "users": frozenset(
        {
            "alias",
            "details",
            "notes",
            "phone",
            "shared_phone_number",
            "organization_id",
            "tags",
            "signature",
            "time_zone",
            "locale",
            "default_group_id",
            "remote_photo_url",
        }
    ),
    "organizations": frozenset({"details", "notes", "domain_names", "group_id", "tags"}),
}
LIST_FIELDS = frozenset({"tags", "domain_names"})
MAX_LENGTHS = {"name": 255, "external_id": 255, "alias": 255, "details": 65_535, "notes": 65_535}

#: ``details`` of a refused create that mean "someone already has this value".
_TAKEN = re.compile(r"already being used|already been taken|already exists", re.IGNORECASE)
_SPLIT_LIST = re.compile(r"[\s,]+")


class JobGate:
    """At most ``limit`` Zendesk jobs in flight (submitted, not finished) for one account.

    Shared by every hook of the account in the process (``job_gate``): Zendesk refuses
    the 31st queued job of an account with a 429, whoever sent it.
    """

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self.limit = int(limit)
        self.in_flight = 0
        self.peak = 0

    def acquire(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.in_flight >= self.limit:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return True

    def release(self) -> None:
        with self._cond:
            self.in_flight = max(0, self.in_flight - 1)
            self._cond.notify()

    def tighten(self, limit: int) -> None:
        with self._cond:
            self.limit = min(self.limit, int(limit))


_gates: dict[str, JobGate] = {}
_gates_lock = threading.Lock()


def job_gate(account: str, limit: int) -> JobGate:
    """The process-wide job gate of one Zendesk account; the strictest limit asked for wins."""
    with _gates_lock:
        gate = _gates.get(account)
        if gate is None:
            gate = _gates[account] = JobGate(limit)
        elif limit < gate.limit:
            gate.tighten(limit)
        return gate


def clear_job_gates() -> None:
    """Forget every job gate (tests)."""
    with _gates_lock:
        _gates.clear()


class ZendeskHook(DestinationHook):
    """Zendesk Support users and organizations (``object`` = ``users`` or ``organizations``).

    Connection: ``host`` is the subdomain (``acme`` -> https://acme.zendesk.com) or a full
    base URL; ``login`` is the agent's email and ``password`` the API token (``{email}/token``
    basic auth), or extra ``auth_type: "oauth"`` with an OAuth access token in ``password``.

    :param zendesk_conn_id: the Airflow connection.
    :param auth_type: ``"token"`` (default) or ``"oauth"``.
    :param default_region: region for phone numbers written without a country code (``"US"``).
    :param mirror_delete: mirror deletes records (``destroy_many``) instead of unsetting the
        synced fields (the default; see the module docstring).
    :param mirror_unset_fields: the fields mirror unsets (default: those sent this run).
    :param max_jobs_in_flight: jobs queued or running at once per account (at most 30).
    :param job_poll_interval: first wait before polling a job (grows 1.5x up to 10 s).
    :param job_timeout: seconds a job may take before it counts as lost.
    :param poll_sleep: the sleep between polls (tests).
    """

    spec = SPEC

    def __init__(
        self,
        zendesk_conn_id: str = SPEC.default_conn_name,
        *,
        auth_type: str | None = None,
        default_region: str | None = None,
        mirror_delete: bool | None = None,
        mirror_unset_fields: Sequence[str] | str | None = None,
        max_jobs_in_flight: int | None = None,
        job_poll_interval: float | None = None,
        job_timeout: float | None = None,
        poll_sleep: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(zendesk_conn_id, **kwargs)
        mine = {
            "auth_type": auth_type,
            "default_region": default_region,
            "mirror_delete": mirror_delete,
            "mirror_unset_fields": mirror_unset_fields,
            "max_jobs_in_flight": max_jobs_in_flight,
            "job_poll_interval": job_poll_interval,
            "job_timeout": job_timeout,
        }
        self._options.update({k: v for k, v in mine.items() if v is not None})
        self._poll_sleep = poll_sleep or time.sleep
        self.auth_type = "token"
        self.default_region: str | None = None
        self.mirror_delete = False
        self.mirror_unset_fields: tuple[str, ...] | None = None
        self.max_jobs_in_flight: int = SPEC.knob("max_jobs_in_flight").default
        self.job_poll_interval = 0.5
        self.job_timeout = 900.0
        self._gate: JobGate | None = None
        self._cache_lock = threading.Lock()
        self._definitions_lock = threading.Lock()
        self._definitions: dict[str, dict[str, dict[str, Any]] | None] = {}
        self._seen_fields: dict[str, set[str]] = defaultdict(set)

    # ------------------------------------------------------------------ connection

    def _configure_base_url(self, conn: Connection) -> None:
        """A bare subdomain becomes https://<subdomain>.zendesk.com; anything else is a host or URL."""
        host = (conn.host or "").strip()
        if not host:
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r} has no host; put the Zendesk subdomain (acme) "
                "or the base URL (https://acme.zendesk.com) in the connection's host"
            )
        if "://" not in host and "." not in host and ":" not in host and host != "localhost":
            host = f"{host}.zendesk.com"
        if "://" not in host:
            host = f"https://{host}"
        parts = urlsplit(host)
        if conn.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
        # People paste the API root; the hook adds /api/v2 itself.
        path = re.sub(r"/api/v2/?$", "", parts.path.rstrip("/"))
        self.base_url = urlunsplit(parts._replace(path=path, query="", fragment="")).rstrip("/")

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """``{email}/token`` + API token (basic auth), or an OAuth bearer token."""
        auth_type = str(self._option(dict(conn.extra_dejson), "auth_type") or "token").strip().lower()
        if auth_type in ("api_token", "basic"):
            auth_type = "token"
        if auth_type not in ("token", "oauth"):
            raise ConfigurationError(f"auth_type must be 'token' or 'oauth'; got {auth_type!r}")
        self.auth_type = auth_type
        secret = (conn.password or "").strip()
        if not secret:
            return  # Zendesk answers 401, which names the problem
        self._register_secret(secret)
        if auth_type == "oauth":
            session.headers["Authorization"] = f"Bearer {secret}"
            return
        login = (conn.login or "").strip()
        if not login:
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r}: API token auth needs the agent's email in login "
                "(or set extra auth_type to 'oauth' for an OAuth access token)"
            )
        user = login if login.endswith("/token") else f"{login}/token"
        session.auth = (user, secret)
        # The Authorization header carries the token base64-encoded: mask that form too.
        mask_secret(base64.b64encode(f"{user}:{secret}".encode()).decode())

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        super()._configure_from_extra(session, extra)
        region = self.knob(extra, "default_region")
        if region:
            import phonenumbers

            region = region.upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigurationError(f"default_region {region!r} is not a region code like 'US' or 'GB'")
        self.default_region = region or None
        self.mirror_delete = self.knob(extra, "mirror_delete")
        fields = self._option(extra, "mirror_unset_fields")  # a list from the hook's caller, or text from the form
        if isinstance(fields, str):
            fields = [f for f in _SPLIT_LIST.split(fields) if f]
        self.mirror_unset_fields = tuple(str(f) for f in fields) if fields else None
        # The spec caps it at Zendesk's 30 jobs per account (cap_at_maximum, with a warning).
        jobs = self.knob(extra, "max_jobs_in_flight")
        self.max_jobs_in_flight = jobs
        self.job_poll_interval = self.knob(extra, "job_poll_interval")
        self.job_timeout = self.knob(extra, "job_timeout")
        self._gate = job_gate(self.account_key, jobs)

    @property
    def account_key(self) -> str:
        """Rate limits and the job queue belong to the Zendesk account (its URL), whatever the credential."""
        return f"{self.base_url}#zendesk"

    @property
    def job_gate(self) -> JobGate:
        self.get_conn()
        assert self._gate is not None
        return self._gate

    # ------------------------------------------------------------------ capabilities

    def _kind(self, object: str) -> str:
        kind = OBJECTS.get(str(object).strip().lower())
        if kind is None:
            raise ConfigurationError(f"Zendesk object must be 'users' or 'organizations'; got {object!r}")
        return kind

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Email syntax, phone numbers, lengths and custom fields (against the account's definitions)."""
        kind = self._kind(object)
        self.get_conn()  # default_region comes from the connection
        self._remember(kind, fields)
        standard, custom = self.split_fields(kind, fields)
        problems: list[tuple[str | None, str]] = []
        if kind == "users":
            reason = validators.email(standard.get("email"))
            if reason:
                problems.append(("email", reason))
            if standard.get("phone") not in (None, ""):
                _, reason = self.normalize_phone(standard["phone"])
                if reason:
                    problems.append(("phone", reason))
        for name, limit in MAX_LENGTHS.items():
            reason = validators.max_length(limit)(standard.get(name))
            if reason:
                problems.append((name, f"{name}: {reason}"))
        if custom:
            problems.extend(self._check_custom(kind, custom))
        return problems

    # ------------------------------------------------------------------ writes

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """Users: ``create_or_update_many`` matched on ``match_field``; organizations: lookup, then
        ``create_many`` / ``update_many`` (Zendesk has no bulk create-or-update for them). Idempotent."""
        kind = self._kind(object)
        field = match_field or "external_id"
        if field not in MATCH_FIELDS[kind]:
            raise ConfigurationError(
                f"Zendesk {kind} upserts match on {' or '.join(MATCH_FIELDS[kind])}, not {field!r}; "
                "set match_on to one of them"
            )
        outcomes: list[Outcome | None] = [None] * len(records)
        payloads: dict[int, dict[str, Any]] = {}
        for i, record in enumerate(records):
            value = record.match_value if record.match_value not in (None, "") else record.fields.get(field)
            if value in (None, ""):
                outcomes[i] = Outcome.failure(f"no value for {field!r}, which Zendesk matches on", "MISSING_MATCH")
                continue
            body = self.wire_record(kind, record.fields)
            body[field] = value
            payloads[i] = body
        if kind == "organizations":
            self._upsert_organizations(field, payloads, outcomes)
            return [o for o in outcomes if o is not None]
        if payloads:
            inputs = list(payloads.values())
            path = f"/api/v2/{kind}/create_or_update_many.json"
            results = self._run_job("POST", path, json={kind: inputs}, idempotent=True)
            for i, outcome in zip(payloads, self._bulk_outcomes(kind, inputs, results), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _upsert_organizations(
        self, field: str, payloads: Mapping[int, dict[str, Any]], outcomes: list[Outcome | None]
    ) -> None:
        """Organization upsert from documented calls: look up, ``create_many`` the new, ``update_many`` the rest.

        Zendesk has ``create_or_update_many`` for users only; for organizations it has
        ``show_many?external_ids=`` / ``search?name=`` (lookup), ``create_many`` and
        ``update_many`` (jobs of up to 100), and a single-record ``create_or_update``.
        Three calls per 100 records (plus job polls) beat one call per record.
        """
        kind = "organizations"
        found = self.lookup(kind, field, [payloads[i][field] for i in payloads])
        existing: dict[int, dict[str, Any]] = {}
        new: list[int] = []
        for i, body in payloads.items():
            dest_id = _as_id(found.get(body[field]))
            if dest_id is None:
                new.append(i)
            else:
                existing[i] = {**body, "id": dest_id}
        path = f"/api/v2/{kind}/create_many.json"
        if new:
            inputs = [payloads[i] for i in new]
            # Resubmitting a lost create_many job is safe here: the key is unique in Zendesk, so a record the
            # lost job did create comes back "already been taken" and is updated below instead of duplicated.
            results = self._run_job("POST", path, json={kind: inputs}, idempotent=True)
            for i, outcome in zip(new, self._bulk_outcomes(kind, inputs, results, created=True), strict=True):
                taken_by = None
                if not outcome.ok and _TAKEN.search(outcome.reason or ""):
                    # Created meanwhile (same key twice in the batch, another writer, a resubmitted job): only
                    # the match field may redirect the write, never another unique attribute such as the name.
                    taken_by = _as_id(self.lookup(kind, field, [payloads[i][field]]).get(payloads[i][field]))
                if taken_by is None:
                    outcomes[i] = outcome
                else:
                    existing[i] = {**payloads[i], "id": taken_by}
        for i, outcome in self._update_many(kind, existing).items():
            outcomes[i] = outcome

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``update_many`` by Zendesk id; idempotent."""
        kind = self._kind(object)
        outcomes: list[Outcome | None] = [None] * len(records)
        payloads: dict[int, dict[str, Any]] = {}
        for i, record in enumerate(records):
            record_id = _as_id(record.dest_id)
            if record_id is None:
                outcomes[i] = Outcome.failure(
                    f"no Zendesk id known for this {SINGULAR[kind]}; it cannot be updated", "MISSING_ID"
                )
                continue
            payloads[i] = {**self.wire_record(kind, record.fields), "id": record_id}
        for i, outcome in self._update_many(kind, payloads).items():
            outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``create_many``; not idempotent (a lost job raises ``OutcomeUnknownError``).

        A record refused because its email / external id / name is taken comes back as
        ``code=EXISTS`` with the existing record's id (looked up), so the engine updates it.
        """
        kind = self._kind(object)
        if not records:
            return []
        inputs = [self.wire_record(kind, r.fields) for r in records]
        results = self._run_job("POST", f"/api/v2/{kind}/create_many.json", json={kind: inputs}, idempotent=False)
        return self._resolve_taken(kind, inputs, self._bulk_outcomes(kind, inputs, results, created=True))

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """Mirror: unset the synced fields (default), or ``destroy_many`` with ``mirror_delete``."""
        kind = self._kind(object)
        self.get_conn()
        outcomes: list[Outcome | None] = [None] * len(dest_ids)
        ids: dict[int, int] = {}
        for i, dest_id in enumerate(dest_ids):
            record_id = _as_id(dest_id)
            if record_id is None:
                outcomes[i] = Outcome.failure(f"no Zendesk id known for this {SINGULAR[kind]}", "MISSING_ID")
            else:
                ids[i] = record_id
        if self.mirror_delete:
            if ids:
                params = {"ids": ",".join(str(record_id) for record_id in ids.values())}
                results = self._run_job("DELETE", f"/api/v2/{kind}/destroy_many.json", params=params, idempotent=True)
                by_id = _results_by_id(results)
                for i, record_id in ids.items():
                    outcomes[i] = self._delete_outcome(by_id.get(record_id), record_id)
            return [o for o in outcomes if o is not None]
        synced = self._synced_fields(kind)
        if not synced:
            # Nothing was sent or checked this run, so which fields the sync owns is unknown: say so.
            reason = (
                "mirror cannot unset this record's synced fields: this run sent no record, so they are unknown; "
                "set mirror_unset_fields (or mirror_delete: true to delete records)"
            )
            for i in ids:
                outcomes[i] = Outcome.failure(reason, "UNSET_FIELDS_UNKNOWN")
            return [o for o in outcomes if o is not None]
        unset = self.unset_payload(kind)
        if not unset:
            # Nothing the sync owns can be cleared, so the record stays exactly as it is: saying "deleted"
            # would be a silent success. A reject names the way out instead.
            reason = (
                f"mirror cannot release this {SINGULAR[kind]}: none of the synced fields "
                f"({', '.join(sorted(synced))}) can be unset and mirror_delete is false; "
                "set mirror_delete: true to delete it, or sync a field that can be unset"
            )
            for i in ids:
                outcomes[i] = Outcome.failure(reason, "NOTHING_TO_UNSET")
            return [o for o in outcomes if o is not None]
        payloads = {i: {**unset, "id": record_id} for i, record_id in ids.items()}
        for i, outcome in self._update_many(kind, payloads, missing_ok=True).items():
            outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    # ------------------------------------------------------------------ reads

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        """{value: Zendesk id}: ``show_many?external_ids=`` (100 a call), else one search per value."""
        kind = self._kind(object)
        field = match_field or "external_id"
        wanted = list(dict.fromkeys(v for v in values if v not in (None, "")))
        found: dict[Any, str] = {}
        if field in ("id", "external_id"):
            param = "ids" if field == "id" else "external_ids"
            # A comma inside an external id would split it: those go through search one by one.
            plain = [v for v in wanted if "," not in str(v)]
            # One show_many call: the engine asks for at most lookup_batch_size values (Zendesk's 100), and
            # _upsert_organizations for at most one write batch (also 100).
            if plain:
                by_key: dict[str, list[Any]] = defaultdict(list)
                for v in plain:
                    by_key[str(v).strip().lower()].append(v)
                response = self.request(
                    "GET", f"/api/v2/{kind}/show_many.json", params={param: ",".join(str(v) for v in plain)}
                )
                for record in (self.response_json(response) or {}).get(kind, []):
                    key = str(record.get(field) if field != "id" else record.get("id")).strip().lower()
                    for original in by_key.get(key, []):
                        found[original] = str(record["id"])
            for value in (v for v in wanted if "," in str(v)):
                self._search_one(kind, {"external_id": str(value)}, "external_id", value, found)
            return found
        if field == "email" and kind == "users":
            for value in wanted:
                self._search_one(kind, {"query": f"email:{value}"}, "email", value, found)
            return found
        if field == "name" and kind == "organizations":
            for value in wanted:
                self._search_one(kind, {"name": str(value)}, "name", value, found)
            return found
        raise ConfigurationError(
            f"Zendesk cannot look {kind} up by {field!r}; use match_on={' or '.join(MATCH_FIELDS[kind])!r}"
        )

    def _search_one(self, kind: str, params: Mapping[str, str], field: str, value: Any, found: dict[Any, str]) -> None:
        response = self.request("GET", f"/api/v2/{kind}/search.json", params=params)
        wanted = str(value).strip().lower()
        for record in (self.response_json(response) or {}).get(kind, []):
            if str(record.get(field) or "").strip().lower() == wanted and record.get("id") is not None:
                found[value] = str(record["id"])
                return

    def custom_field_definitions(self, object: str) -> dict[str, dict[str, Any]] | None:
        """Active custom fields of ``users`` / ``organizations`` by key (one listing, cached); None if unreadable."""
        kind = self._kind(object)
        with self._definitions_lock:  # engine threads validate at once: one listing, not one each
            return self._definitions[kind] if kind in self._definitions else self._load_definitions(kind)

    def _load_definitions(self, kind: str) -> dict[str, dict[str, Any]] | None:
        path: str | None = f"/api/v2/{FIELDS_KEY[kind]}.json"
        definitions: dict[str, dict[str, Any]] | None = {}
        while path and definitions is not None:
            response = self.request("GET", path, accept=(403, 404))
            if response.status_code >= 400:
                self.log.warning(
                    "cannot read Zendesk %s (%s); custom fields are not checked before sending",
                    FIELDS_KEY[kind],
                    response.status_code,
                )
                definitions = None
                break
            data = self.response_json(response) or {}
            for item in data.get(FIELDS_KEY[kind]) or []:
                if item.get("key") and item.get("active", True):
                    definitions[str(item["key"])] = item
            path = data.get("next_page")
        self._definitions[kind] = definitions
        return definitions

    # ------------------------------------------------------------------ fields on the wire

    def split_fields(self, kind: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(standard attributes, custom fields) of a record's destination fields."""
        standard: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        prefix = FIELDS_KEY[kind] + "."
        for name, value in fields.items():
            if name.startswith(prefix):
                custom[name[len(prefix) :]] = value
            elif name == FIELDS_KEY[kind] and isinstance(value, Mapping):
                custom.update(value)
            elif name in STANDARD_FIELDS[kind]:
                standard[name] = value
            else:
                custom[name] = value
        return standard, custom

    def wire_record(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """One record as Zendesk takes it: attributes at the top, custom fields in their object."""
        self._remember(kind, fields)
        standard, custom = self.split_fields(kind, fields)
        body: dict[str, Any] = {}
        for name, value in standard.items():
            if name in LIST_FIELDS:
                body[name] = _as_list(value)
            elif name == "phone" and value not in (None, ""):
                normalized, _ = self.normalize_phone(value)
                body[name] = normalized or value
            elif value is None and name in NOT_NULLABLE_INPUT[kind]:
                # Zendesk's UserCreateInput types these as non-nullable strings: a null (an empty cell of
                # the row) is left out, which keeps the stored value instead of sending an invalid one.
                continue
            else:
                body[name] = value
        if custom:
            body[FIELDS_KEY[kind]] = custom
        return body

    def unset_payload(self, kind: str) -> dict[str, Any]:
        """What mirror sends to release a record: the synced custom fields and clearable attributes, null."""
        body: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        standard, custom_names = self.split_fields(kind, {name: None for name in self._synced_fields(kind)})
        for name in standard:
            if name in CLEARABLE_FIELDS[kind]:
                body[name] = [] if name in LIST_FIELDS else None
        for key in custom_names:
            custom[key] = None
        if custom:
            body[FIELDS_KEY[kind]] = custom
        return body

    def normalize_phone(self, value: Any) -> tuple[str | None, str | None]:
        """(E.164 number, None), or (None, reason) when it is not a valid phone number."""
        import phonenumbers

        text = str(value).strip()
        try:
            number = phonenumbers.parse(text, self.default_region)
        except phonenumbers.NumberParseException as exc:
            hint = ""
            if not text.startswith("+") and not self.default_region:
                hint = " (no country code: write it as +<country code>..., or set default_region)"
            return None, f"invalid phone number {text!r}: {exc._msg}{hint}"
        if not phonenumbers.is_valid_number(number):
            return None, f"invalid phone number {text!r}: not a valid number for its region"
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None

    def sync_fields(self, object: str, fields: Iterable[str], key_fields: Sequence[str] = ()) -> None:
        """The destination fields the sync sends (an engine that knows them may say so up front).

        Mirror unsets these; without it the hook learns them from the records it checks and sends.
        """
        self._remember(self._kind(object), fields)

    def _remember(self, kind: str, fields: Iterable[str]) -> None:
        with self._cache_lock:
            self._seen_fields[kind].update(fields)

    def _synced_fields(self, kind: str) -> set[str]:
        if self.mirror_unset_fields is not None:
            return set(self.mirror_unset_fields)
        with self._cache_lock:
            return set(self._seen_fields[kind])

    def _check_custom(self, kind: str, custom: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        definitions = self.custom_field_definitions(kind)
        if definitions is None:
            return []
        prefix = FIELDS_KEY[kind]
        problems: list[tuple[str | None, str]] = []
        for key, value in custom.items():
            definition = definitions.get(key)
            if definition is None:
                known = ", ".join(sorted(definitions)) or "none"
                reason = f"Zendesk has no active {SINGULAR[kind]} field {key!r} (known: {known}); it would be dropped"
                problems.append((f"{prefix}.{key}", reason))
                continue
            problem = _custom_value_problem(definition, value)
            if problem:
                problems.append((f"{prefix}.{key}", f"{prefix}.{key}: {problem}"))
        return problems

    # ------------------------------------------------------------------ jobs

    def _run_job(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool,
    ) -> list[Mapping[str, Any]]:
        """Submit one job, wait for it, return its ``results``. Idempotent jobs are resubmitted if lost."""
        gate = self.job_gate
        attempts = 1 + (JOB_RESUBMITS if idempotent else 0)
        for attempt in range(1, attempts + 1):
            if not gate.acquire(timeout=self.job_timeout):
                raise RetryableDestinationError(
                    f"Zendesk: no job slot for {self.job_timeout:.0f}s ({gate.limit} jobs in flight for this account)"
                )
            try:
                try:
                    response = self.request(method, path, json=json, params=params, idempotent=idempotent)
                except OutcomeUnknownError:
                    # The job may be queued at Zendesk: let it finish, so the engine's lookup sees its writes.
                    self._wait_for_active_jobs()
                    raise
                job = (self.response_json(response) or {}).get("job_status")
                if not isinstance(job, Mapping) or not job.get("id"):
                    raise self._lost(f"{self._call_name(method, path)} answered without a job_status", idempotent)
                return self._wait_for_job(job, idempotent)
            except _JobLost as lost:
                if attempt == attempts:
                    raise lost.error from None
                self.log.warning("%s; submitting the job again (%d/%d)", lost.error, attempt, attempts - 1)
            finally:
                gate.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_for_job(self, job: Mapping[str, Any], idempotent: bool) -> list[Mapping[str, Any]]:
        job_id = str(job["id"])
        deadline = time.monotonic() + self.job_timeout
        interval = self.job_poll_interval
        while True:
            status = str(job.get("status") or "")
            if status == "completed":
                results = job.get("results")
                if isinstance(results, Mapping):  # some job types answer one {"success": ...} object
                    results = [results]
                return [r for r in results or [] if isinstance(r, Mapping)]
            if status in ("failed", "killed"):
                message = f": {job['message']}" if job.get("message") else ""
                raise _JobLost(self._lost(f"Zendesk job {job_id} ended {status}{message}", idempotent))
            if time.monotonic() + interval > deadline:
                # Still queued or working: Zendesk may well apply it after we stopped waiting.
                raise _JobLost(
                    self._lost(
                        f"Zendesk job {job_id} still {status or 'unknown'} after {self.job_timeout:.0f}s",
                        idempotent,
                        may_land_later=True,
                    )
                )
            self._poll_sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_INTERVAL)
            response = self.request("GET", f"/api/v2/job_statuses/{job_id}.json", accept=(404,))
            if response.status_code == 404:
                raise _JobLost(self._lost(f"Zendesk job {job_id} is gone (job statuses expire)", idempotent))
            job = (self.response_json(response) or {}).get("job_status") or {}

    def _wait_for_active_jobs(self) -> None:
        """Poll the account's job list until nothing is queued or working (at most ``job_timeout``)."""
        deadline = time.monotonic() + self.job_timeout
        interval = self.job_poll_interval
        while True:
            try:
                response = self.request("GET", "/api/v2/job_statuses.json", accept=(403, 404))
            except DestinationError as err:
                self.log.warning("cannot list Zendesk jobs (%s); reconciling without waiting", err)
                return
            jobs = (self.response_json(response) or {}).get("job_statuses") or []
            active = [j for j in jobs if isinstance(j, Mapping) and j.get("status") in ("queued", "working")]
            if response.status_code >= 400 or not active or time.monotonic() + interval > deadline:
                return
            self._poll_sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_INTERVAL)

    @staticmethod
    def _lost(message: str, idempotent: bool, *, may_land_later: bool = False) -> DestinationError:
        if idempotent:
            return RetryableDestinationError(message)
        return OutcomeUnknownError(
            message + "; the records may or may not have been written", may_land_later=may_land_later
        )

    def _update_many(
        self, kind: str, payloads: Mapping[int, dict[str, Any]], *, missing_ok: bool = False
    ) -> dict[int, Outcome]:
        """One ``update_many`` job for the engine's batch: {position: outcome}."""
        if not payloads:
            return {}
        path = f"/api/v2/{kind}/update_many.json"
        results = self._run_job("PUT", path, json={kind: list(payloads.values())}, idempotent=True)
        queues: dict[int, deque[Mapping[str, Any]]] = defaultdict(deque)
        for answer in results:
            record_id = _as_id(answer.get("id"))
            if record_id is not None:
                queues[record_id].append(answer)
        outcomes: dict[int, Outcome] = {}
        for i, payload in payloads.items():
            record_id = payload["id"]
            result = queues[record_id].popleft() if queues.get(record_id) else None
            if result is None:
                outcomes[i] = Outcome.failure("Zendesk's job returned no result for this record", "NO_RESULT")
            elif _succeeded(result):
                outcomes[i] = Outcome.success(str(record_id), created=False)
            elif missing_ok and _not_found(result):
                outcomes[i] = Outcome.success(str(record_id))  # already gone: nothing to unset
            elif _not_found(result):
                outcomes[i] = Outcome.failure(
                    f"Zendesk has no {SINGULAR[kind]} {record_id} (deleted or merged?)", "NOT_FOUND"
                )
            else:
                outcomes[i] = self._failed_outcome(result)
        return outcomes

    def _bulk_outcomes(
        self,
        kind: str,
        inputs: Sequence[Mapping[str, Any]],
        results: Sequence[Mapping[str, Any]],
        *,
        created: bool | None = None,
    ) -> list[Outcome]:
        """Outcomes of ``create_or_update_many`` / ``create_many`` results, which come in request order."""
        slots: list[Mapping[str, Any] | None] = [None] * len(inputs)
        if results and all(_as_id(r.get("index")) is not None for r in results):
            for answer in results:
                index = _as_id(answer.get("index"))
                if index is not None and 0 <= index < len(inputs):
                    slots[index] = answer
        elif len(results) == len(inputs):
            slots = list(results)
        else:
            raise self._lost(
                f"Zendesk's job returned {len(results)} results for {len(inputs)} records; they cannot be matched",
                idempotent=created is None,
            )
        outcomes = []
        for item, result in zip(inputs, slots, strict=True):
            if result is None:
                outcomes.append(Outcome.failure("Zendesk's job returned no result for this record", "NO_RESULT"))
                continue
            if not _succeeded(result):
                outcomes.append(self._failed_outcome(result))
                continue
            self._check_echo(kind, item, result)
            status = str(result.get("status") or "")
            was_created = True if created else {"Created": True, "Updated": False}.get(status)
            outcomes.append(Outcome.success(str(result["id"]), created=was_created))
        return outcomes

    def _check_echo(self, kind: str, item: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        # Results are documented to follow the request; a result naming another record means they did not.
        for key in MATCH_FIELDS[kind]:
            echoed, sent = result.get(key), item.get(key)
            if (
                echoed not in (None, "")
                and sent not in (None, "")
                and str(echoed).strip().lower() != str(sent).strip().lower()
            ):
                raise RetryableDestinationError(
                    f"Zendesk's job results are not in request order ({key} of a result differs from its input)"
                )

    def _resolve_taken(self, kind: str, inputs: Sequence[Mapping[str, Any]], outcomes: list[Outcome]) -> list[Outcome]:
        """A create refused for a taken email / external id / name: find the record that has it."""
        resolved = list(outcomes)
        for i, outcome in enumerate(outcomes):
            if outcome.ok or not _TAKEN.search(outcome.reason or ""):
                continue
            for key in MATCH_FIELDS[kind]:
                value = inputs[i].get(key)
                if value in (None, ""):
                    continue
                existing = self.lookup(kind, key, [value]).get(value)
                if existing:
                    resolved[i] = Outcome(ok=False, dest_id=existing, reason=outcome.reason, code=EXISTS)
                    break
        return resolved

    def _delete_outcome(self, result: Mapping[str, Any] | None, record_id: int) -> Outcome:
        if result is None or _succeeded(result) or _not_found(result):
            return Outcome.success(str(record_id))  # deleted, or already gone
        return self._failed_outcome(result)

    def _failed_outcome(self, result: Mapping[str, Any]) -> Outcome:
        error = str(result.get("error") or "Failed")
        details = result.get("details") or result.get("errors") or ""
        if isinstance(details, Mapping | list):
            details = _flatten_details(details)
        reason = f"{error}: {details}" if details else error
        return Outcome.failure(self.redact(excerpt(str(reason))), error)

    # ------------------------------------------------------------------ errors, UI

    def describe_error(self, response: requests.Response) -> str:
        """Zendesk's ``{"error", "description", "details"}`` as one line."""
        data = _json_or_none(response)
        if isinstance(data, Mapping) and data.get("error"):
            error = data["error"]
            if isinstance(error, Mapping):  # OAuth errors: {"error": {"title", "message"}}
                error = ": ".join(str(error[k]) for k in ("title", "message") if error.get(k))
            text = str(error)
            if data.get("description"):
                text += f": {data['description']}"
            if isinstance(data.get("details"), Mapping | list) and data["details"]:
                text += f" ({_flatten_details(data['details'])})"
            return self.redact(excerpt(text))
        return super().describe_error(response)

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        error = super()._error_for(response, idempotent=idempotent, what=what)
        if response.status_code == 400:
            body = _json_or_none(response)
            if isinstance(body, Mapping) and body.get("error") in ("TooManyValues", "InvalidValue", "InvalidJSON"):
                # About the call, not one record: no retry, no bisecting.
                return FatalDestinationError(error.args[0], status=400, response=response, request=response.request)
        return error

    def _test_call(self) -> None:
        response = self.request("GET", "/api/v2/users/me.json", retry=False)
        user = (self.response_json(response) or {}).get("user") or {}
        if user.get("id") is None:
            # Zendesk answers /users/me for anonymous callers too.
            raise FatalDestinationError("Zendesk answered as an anonymous user: the credentials were not accepted")


class _JobLost(Exception):
    """A job ended without results (failed, killed, expired, timed out)."""

    def __init__(self, error: DestinationError) -> None:
        super().__init__(str(error))
        self.error = error


# ---------------------------------------------------------------------- helpers


def _custom_value_problem(definition: Mapping[str, Any], value: Any) -> str | None:
    """Why Zendesk would refuse ``value`` for a custom field definition (None: fine)."""
    if value is None or value == "":
        return None
    kind = str(definition.get("type") or "text")
    if kind == "integer":
        if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", str(value).strip()):
            return f"{value!r} is not a whole number (integer field)"
    elif kind == "decimal":
        if isinstance(value, bool) or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", str(value).strip()):
            return f"{value!r} is not a number (decimal field)"
    elif kind == "checkbox":
        if not isinstance(value, bool) and str(value).strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            return f"{value!r} is not true or false (checkbox field)"
    elif kind == "date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value).strip()[:10]):
            return f"{value!r} is not a date like 2024-01-31 (date field)"
    elif kind in ("dropdown", "multiselect"):
        options = {str(o.get("value")) for o in definition.get("custom_field_options") or [] if isinstance(o, Mapping)}
        values = value if isinstance(value, list) else [value]
        unknown = [v for v in values if str(v) not in options]
        if unknown:
            return f"{unknown[0]!r} is not one of the field's option values ({', '.join(sorted(options))})"
    elif kind == "regexp":
        pattern = definition.get("regexp_for_validation")
        if pattern and not re.fullmatch(pattern, str(value)):
            return f"{value!r} does not match the field's pattern {pattern}"
    return None


def _succeeded(result: Mapping[str, Any]) -> bool:
    if result.get("success") is False or str(result.get("status") or "") == "Failed":
        return False
    return not result.get("error") and result.get("id") is not None


def _not_found(result: Mapping[str, Any]) -> bool:
    return "notfound" in str(result.get("error") or "").replace("_", "").lower()


def _results_by_id(results: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    by_id: dict[int, Mapping[str, Any]] = {}
    for result in results:
        record_id = _as_id(result.get("id"))
        if record_id is not None:
            by_id.setdefault(record_id, result)
    return by_id


def _flatten_details(details: Any) -> str:
    if isinstance(details, Mapping):
        parts = []
        for key, value in details.items():
            items = value if isinstance(value, list) else [value]
            for item in items:
                text = item.get("description") if isinstance(item, Mapping) else item
                parts.append(str(text) if text else str(key))
        return "; ".join(parts)
    if isinstance(details, list):
        return "; ".join(_flatten_details(d) if isinstance(d, Mapping | list) else str(d) for d in details)
    return str(details)


def _as_id(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set):
        return [v for v in value if v not in (None, "")]
    return [v for v in _SPLIT_LIST.split(str(value)) if v]
