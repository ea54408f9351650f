"""Customer.io Track API: people (identify, delete) and events, in v2 batches sized by bytes.

``object`` is ``people`` or ``events``. How the real API behaves, and what this hook does:

* ``POST /api/v2/batch`` takes any mix of operations, as long as the request is smaller
  than 500 KB and each operation is 32 KB or smaller. There is no limit on the *number*
  of operations, so the hook packs each batch the engine hands it (up to 1000 records)
  into as few requests as fit under 500,000 bytes; a record whose operation would be over
  32,000 bytes is rejected locally with its size, never sent.
* The answer is 200 ``{}`` when every operation was accepted, 207 ``{"errors": [...]}``
  when some were refused: each error names the refused operation by ``batch_index`` (its
  position in that request), ``reason``, ``field`` and ``message``, and becomes that
  record's reject; the other records succeeded. A 400 refuses the whole request: the batch
  is bisected until each bad record is alone and gets its own reason.
* ``people``: ``identify`` is an upsert keyed by the match field, ``id`` (default) or
  ``email`` (or ``cio_id``), so no lookups are needed; ``mode="update"`` sends
  ``_update: true`` (never creates). A ``None`` value is sent as ``""``, which removes the
  attribute. Identify has no create-only flag, so ``mode="insert"`` also updates a person
  who already exists in Customer.io (it still never re-sends a synced row). Mirror mode
  deletes with ``delete`` operations. The checkpoint keeps
  ``id:<id>`` as destination id; for people matched by email it keeps only a SHA-256 of the
  address (no PII in checkpoints), so such people cannot be deleted by mirror mode (each is
  reported as a reject with the reason): match on ``id`` to mirror.
* ``events``: one row is one event for one person. The sync's primary key is the
  event's own key: the engine's stable id of that key becomes the event's ``id``, the
  dedupe value of the Track API's ``person_event`` schema ("a valid ULID used to
  deduplicate events"). Our stable ids (``retl-<16 hex>``) are not ULIDs, so the hook
  sends ``event_ulid(event_id)``, a ULID-shaped id derived deterministically from it;
  Customer.io processes an id once, so re-sending an event is harmless: calls are retried
  blindly, and after an interrupted try ``reconcile_events`` answers False ("send again")
  for every event. The person is named by a *person column*, never by the primary key:
  the ``person_field`` option (hook keyword argument, e.g. the operator's
  ``destination_params={"person_field": "customer_id"}``, or the connection extra) names
  it, and ``person_identifier`` (``id``, ``email`` or ``cio_id``; default: the column's
  own name when it is one of those, else ``id``) says which Customer.io identifier it
  holds. Without ``person_field`` the person column is the query's ``id``, ``email`` or
  ``cio_id`` column (the first of them with a value in each row). An events sync with no
  person column fails before anything is sent; a row whose person value is empty is
  rejected with that reason. The event's ``name`` is the row's ``name`` field, else the
  operator's ``event_name``; its ``timestamp`` the ``event_time_field`` (ISO 8601 text
  or unix seconds); the remaining fields (the event's key included) are its ``attributes``.
* Rate limit: Customer.io's docs now say 1000 requests/s, "not strictly enforced" (older
  docs said 100/s); the default client-side limit is 100/s per workspace (``rate_limit`` in
  the extras), and 429s are retried with backoff.

Connection: Site ID in ``login``, Track API key in ``password``; ``host`` is the Track API
base URL (default ``https://track.customer.io``; ``eu`` or ``us`` are short for the
regional URLs; any URL points it at a proxy or an emulator).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from airflow.sdk.log import mask_secret

from airflow_provider_retl.destinations.customerio.spec import SPEC
from airflow_provider_retl.hooks.destination import DestinationHook, _json_or_none, dumps
from airflow_provider_retl.sync import validate as validators
from airflow_provider_retl.sync.errors import ConfigurationError
from airflow_provider_retl.sync.records import Outcome, Record

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["CustomerIoHook", "event_ulid", "unix_seconds"]

REGIONS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
BATCH_PATH = "/api/v2/batch"
#: "smaller than 500kb" per request and "32kb or smaller" per operation: read as decimal
#: kilobytes, the stricter reading.
MAX_REQUEST_BYTES = 500_000
MAX_ITEM_BYTES = 32_000
#: Documented limits of people and events (bytes).
MAX_ID_BYTES = 150
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
MAX_EVENT_NAME_BYTES = 100
IDENTIFIER_FIELDS = ("id", "email", "cio_id")
_ENVELOPE_BYTES = len(b'{"batch":[]}')
_ULID_PLACEHOLDER = "0" * 26  # sizes an event operation before its id is known

# -- event ids ------------------------------------------------------------------------------

#: Namespace of the event-id hash: changing it would give every event a new id (re-sends).
ULID_NAMESPACE = b"airflow-provider-retl/customerio/event/v1\x00"
#: The ULID's 48-bit time field lies in [2020-01-01, 2040-01-01) UTC, so ids look like ULIDs
#: minted in this era (a tool that reads their time sees a plausible one).
ULID_TIME_START_MS = 1_577_836_800_000
ULID_TIME_SPAN_MS = 631_152_000_000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def event_ulid(event_id: str) -> str:
    """The ULID Customer.io deduplicates an event by, derived from the engine's stable event id.

    Scheme: ``d = SHA-256(ULID_NAMESPACE + event_id)``; the 48-bit time field is
    ``ULID_TIME_START_MS + int(d[0:6]) % ULID_TIME_SPAN_MS`` and the 80 random bits are
    ``d[6:16]``; the 128 bits are written in Crockford base32 (26 characters). The same
    event id always gives the same ULID, on every try and every run.
    """
    digest = hashlib.sha256(ULID_NAMESPACE + event_id.encode("utf-8")).digest()
    millis = ULID_TIME_START_MS + int.from_bytes(digest[:6], "big") % ULID_TIME_SPAN_MS
    value = (millis << 80) | int.from_bytes(digest[6:16], "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def unix_seconds(value: Any) -> int:
    """A unix timestamp in seconds from unix seconds/milliseconds or ISO 8601 text (naive = UTC)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text)  # 3.11+: "Z" too
            except ValueError:
                raise ValueError(f"{text!r} is not an ISO 8601 timestamp or unix seconds") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return int(moment.timestamp())
    if abs(number) >= 1e11:  # milliseconds (1e11 seconds is the year 5138)
        number /= 1000
    return int(number)


def _bytes(value: Any) -> int:
    return len(value.encode("utf-8")) if isinstance(value, str) else len(dumps(value))


class _Refused(Exception):
    """A record that cannot become an operation (reason and code for its Outcome)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class CustomerIoHook(DestinationHook):
    """Customer.io people and events over the Track API (``object`` = ``people`` or ``events``).

    :param customerio_conn_id: connection with the Site ID in ``login`` and the Track API
        key in ``password``; ``host`` defaults to https://track.customer.io (``eu`` for
        https://track-eu.customer.io, or any URL).
    """

    spec = SPEC

    max_request_bytes: ClassVar[int] = MAX_REQUEST_BYTES
    max_item_bytes: ClassVar[int] = MAX_ITEM_BYTES

    #: Events: the column naming each event's person, and which identifier it holds (see the module doc).
    person_field: str | None = None
    person_identifier: str | None = None

    def __init__(
        self,
        customerio_conn_id: str = SPEC.default_conn_name,
        *,
        person_field: str | None = None,
        person_identifier: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(customerio_conn_id, **kwargs)
        mine = {"person_field": person_field, "person_identifier": person_identifier}
        self._options.update({k: v for k, v in mine.items() if v not in (None, "")})
        self._basic_token: str | None = None
        self._region_info: Mapping[str, Any] = {}
        #: The fields the running sync sends (``sync_fields``), to check the person column against.
        self._synced_fields: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ connection

    def _configure_base_url(self, conn: Connection) -> None:
        """``us``/``eu`` name the regional Track API; anything else is a URL (or host) as usual."""
        region = (conn.host or "").strip().lower()
        if region in REGIONS:
            self.base_url = REGIONS[region]
            return
        super()._configure_base_url(conn)

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """Basic auth: Site ID (``login``) and Track API key (``password``)."""
        site_id, api_key = (conn.login or "").strip(), conn.password or ""
        if api_key:
            self._register_secret(api_key)
        if site_id and api_key:
            session.auth = (site_id, api_key)
            token = base64.b64encode(f"{site_id}:{api_key}".encode()).decode()
            self._basic_token = token
            mask_secret(token)  # the Authorization header's value, should anything log it

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        """Also the events' person column; a value set on the hook as an attribute is kept."""
        super()._configure_from_extra(session, extra)
        for name in ("person_field", "person_identifier"):
            value = self.knob(extra, name)
            if value is not None:
                setattr(self, name, value)

    def redact(self, text: str) -> str:
        text = super().redact(text)
        if self._basic_token and self._basic_token in text:
            text = text.replace(self._basic_token, "***")
        return text

    def describe_error(self, response: requests.Response) -> str:
        """Customer.io's error bodies: ``{"errors": [{reason, field, message}]}`` or ``{"meta": {"errors": [...]}}``."""
        data = _json_or_none(response)
        if isinstance(data, Mapping):
            meta = data.get("meta")
            if not isinstance(meta, Mapping):
                meta = {}
            items = data.get("errors") or meta.get("errors") or ([meta["error"]] if meta.get("error") else [])
            if isinstance(items, list) and items:
                texts = [_error_text(e) if isinstance(e, Mapping) else str(e) for e in items[:3]]
                return self.redact("; ".join(texts))[:300]
        return super().describe_error(response)

    def _test_call(self) -> None:
        response = self.request("GET", "/api/v1/accounts/region", retry=False)
        self._region_info = self.response_json(response) or {}

    def test_connection(self) -> tuple[bool, str]:
        """``/api/v1/accounts/region``: valid credentials answer with their workspace and region."""
        self._region_info = {}
        ok, message = super().test_connection()
        info = self._region_info if isinstance(self._region_info, Mapping) else {}
        if ok and info:
            message += f" (workspace {info.get('environment_id')}, region {info.get('region')})"
            url = str(info.get("url") or "").rstrip("/")
            if url in REGIONS.values() and self.base_url in REGIONS.values() and url != self.base_url:
                message += f"; this workspace's Track API is {url}: use it as the connection's host"
        return ok, message

    # ------------------------------------------------------------------ capabilities

    @staticmethod
    def object_kind(object: str) -> str:
        """``people`` or ``events`` (a few spellings accepted); anything else is a configuration error."""
        name = object.strip().lower()
        if name in ("people", "person", "customers", "customer"):
            return "people"
        if name in ("events", "event"):
            return "events"
        raise ConfigurationError(f"Customer.io syncs object 'people' or 'events'; got {object!r}")

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Email syntax, documented size limits, and (events) a name and a readable timestamp."""
        problems = validators.run_validators(fields, {"email": [validators.email]})
        if problems:
            return problems
        if self.object_kind(object) == "people":
            problems = self._people_problems(fields)
            item = {
                "type": "person",
                "identifiers": {"id": fields.get("id")},
                "action": "identify",
                "attributes": {k: "" if v is None else v for k, v in fields.items()},
            }
        else:
            try:
                item = self._event_item(Record("", dict(fields)), _ULID_PLACEHOLDER)
            except _Refused as refused:
                return [(None, refused.reason)]
        size = len(dumps(item))
        if size > self.max_item_bytes:
            problems.append((None, _too_large(size, self.max_item_bytes)))
        return problems

    @staticmethod
    def _people_problems(fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        problems: list[tuple[str | None, str]] = []
        for name, value in fields.items():
            if _bytes(name) > MAX_ATTRIBUTE_NAME_BYTES:
                problems.append((name, f"attribute name is longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes"))
            elif name in IDENTIFIER_FIELDS and value is not None and _bytes(str(value)) > MAX_ID_BYTES:
                problems.append((name, f"{name} is {_bytes(str(value))} bytes; Customer.io allows {MAX_ID_BYTES}"))
            elif value is not None and _bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES:
                problems.append(
                    (
                        name,
                        f"value is {_bytes(value):,} bytes; Customer.io allows {MAX_ATTRIBUTE_VALUE_BYTES:,} per attribute",
                    )
                )
        return problems

    # ------------------------------------------------------------------ people

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """``identify`` operations keyed by ``match_field`` (``id``, ``email`` or ``cio_id``); idempotent."""
        self._require_people(object, "upsert")
        field = self._identifier_field(match_field)
        return self._write(records, lambda r: self._identify_item(r, field, update_only=False))

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``identify`` with ``_update: true`` by the checkpoint's identifier: never creates a person."""
        self._require_people(object, "update")

        def build(record: Record) -> tuple[dict[str, Any], str | None]:
            kind, value = _decode_dest_id(record.dest_id)
            if kind == "email-sha256":
                email = record.match_value if record.match_value not in (None, "") else record.fields.get("email")
                if email in (None, "") or _email_digest(str(email)) != value:
                    raise _Refused(
                        "the record's email changed since it was synced; it cannot be updated by email", "NO_ID"
                    )
                kind, value = "email", str(email)
            if kind is None:
                raise _Refused("no Customer.io identifier known for this record; it cannot be updated", "NO_ID")
            return self._identify_item(record, kind, update_only=True, identifier=value)

        return self._write(records, build)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """``delete`` operations by the identifiers kept in the checkpoint; idempotent (gone is ok)."""
        self._require_people(object, "delete")

        def build(record: Record) -> tuple[dict[str, Any], str | None]:
            kind, value = _decode_dest_id(record.dest_id)
            if kind == "email-sha256":
                raise _Refused(
                    "this person was matched by email and the checkpoint keeps only a hash of it (no PII), so "
                    "it cannot be deleted; match people on 'id' to use mirror mode",
                    "NO_ID",
                )
            if kind is None:
                raise _Refused("no Customer.io identifier known for this record; it cannot be deleted", "NO_ID")
            item = {"type": "person", "identifiers": {kind: value}, "action": "delete"}
            return item, record.dest_id

        return self._write([Record(str(i), {}, dest_id=d) for i, d in enumerate(dest_ids)], build)

    def _identify_item(
        self, record: Record, kind: str, *, update_only: bool, identifier: Any = None
    ) -> tuple[dict[str, Any], str | None]:
        value = identifier
        if value is None:
            value = record.match_value if record.match_value not in (None, "") else record.fields.get(kind)
        if value in (None, ""):
            hint = " (people are matched on 'id' unless match_on says 'email')" if kind == "id" else ""
            raise _Refused(f"no value for {kind!r}, which identifies the person in Customer.io{hint}", "MISSING_ID")
        value = str(value)
        attributes = {
            name: "" if v is None else v  # an empty value removes the attribute in Customer.io
            for name, v in record.fields.items()
            if not (name == kind and kind != "email")
        }
        if update_only:
            attributes["_update"] = True
        item = {"type": "person", "identifiers": {kind: value}, "action": "identify", "attributes": attributes}
        return item, _encode_dest_id(kind, value)

    # ------------------------------------------------------------------ events

    def send_events(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """``event`` operations, each with its ULID ``id``; resending is safe (Customer.io dedupes by id)."""
        if self.object_kind(object) != "events":
            raise self._unsupported("events", object)
        self._person_columns(self._synced_fields)  # a sync that names no person fails before any request

        def build(record: Record) -> tuple[dict[str, Any], str | None]:
            ulid = event_ulid(record.event_id or f"key:{record.key}")
            return self._event_item(record, ulid), ulid

        return self._write(records, build)

    def reconcile_events(self, object: str, records: Sequence[Record]) -> list[bool | None]:
        """False for every event: sending it again with the same ULID cannot duplicate it."""
        return [False] * len(records)

    def sync_fields(self, object: str, fields: Sequence[str], key_fields: Sequence[str] = ()) -> None:
        """Events: fail before anything is sent when no field, or only the event's own key, names its person."""
        if self.object_kind(object) != "events":
            return
        self.get_conn()  # reads the person_field/person_identifier extras (no request is made)
        self._synced_fields = tuple(str(f) for f in fields)
        columns = self._person_columns(self._synced_fields)
        if key_fields and columns[0][0] in key_fields:
            # The key is each event's dedupe id: as its person, every event would get a person of its own.
            raise ConfigurationError(
                f"the person column {columns[0][0]!r} is the key of this events sync: the key is each event's own "
                "dedupe id (e.g. the order id), the person is a separate column (e.g. customer_id as id, or "
                "destination_params={'person_field': 'customer_id'})"
            )

    def _person_columns(self, fields: Sequence[str] | None) -> list[tuple[str, str]]:
        """(column, Customer.io identifier) pairs that may name an event's person, in order of preference.

        Raises ``ConfigurationError`` when the configuration names no person (checked against
        ``fields``, the synced fields, when known).
        """
        column = (self.person_field or "").strip()
        kind = (self.person_identifier or "").strip().lower()
        if kind and kind not in IDENTIFIER_FIELDS:
            raise ConfigurationError(
                f"person_identifier must be one of {', '.join(IDENTIFIER_FIELDS)} (the Customer.io identifier "
                f"the person column holds); got {self.person_identifier!r}"
            )
        if column:
            if fields is not None and column not in fields:
                raise ConfigurationError(
                    f"person_field {column!r} is not among the fields this events sync sends ({', '.join(fields)}); "
                    "add it to the query or the mapping"
                )
            return [(column, kind or (column if column in IDENTIFIER_FIELDS else "id"))]
        if kind:
            raise ConfigurationError("person_identifier is set but person_field is not: name the person column too")
        if fields is None:
            return [(k, k) for k in IDENTIFIER_FIELDS]
        found = [(k, k) for k in IDENTIFIER_FIELDS if k in fields]
        if not found:
            raise ConfigurationError(
                "a Customer.io events sync needs a person column, separate from the event's key (the primary key "
                "is the event's own dedupe id, never its person): send the person as an 'id', 'email' or "
                "'cio_id' column (e.g. 'select order_id, customer_id as id ...'), or name the column with "
                "destination_params={'person_field': 'customer_id'} (and 'person_identifier': 'email' for "
                f"an email column); fields sent: {', '.join(fields) or 'none'}"
            )
        return found

    def _event_person(self, fields: Mapping[str, Any]) -> tuple[str, str, Any]:
        """(column, identifier, value) of the person an event row belongs to; value None when empty."""
        columns = self._person_columns(self._synced_fields)
        for column, kind in columns:
            value = fields.get(column)
            if value is not None and str(value).strip() != "":
                return column, kind, value
        return columns[0][0], columns[0][1], None

    def _event_item(self, record: Record, ulid: str) -> dict[str, Any]:
        """The ``event`` operation of one row (raises ``_Refused`` with the reason it cannot be one)."""
        fields = record.fields
        column, kind, value = self._event_person(fields)
        if value is None:
            names = " / ".join(repr(c) for c, _ in self._person_columns(self._synced_fields))
            raise _Refused(
                f"no person for this event: {names} is empty (the event names no Customer.io person)", "MISSING_PERSON"
            )
        if isinstance(value, bool) or not isinstance(value, str | int) and not _is_integral(value):
            raise _Refused(f"{column}: {value!r} cannot name a Customer.io person (text or a whole number)", "INVALID")
        value = str(int(value)) if not isinstance(value, str) else value.strip()
        if kind == "id" and _bytes(value) > MAX_ID_BYTES:
            raise _Refused(f"{column} is {_bytes(value)} bytes; Customer.io allows {MAX_ID_BYTES} for an id", "INVALID")
        if kind == "email":
            problem = validators.email(value)
            if problem:
                raise _Refused(f"{column}: {problem}", "INVALID")
        name = fields.get("name")
        name_field = "name" if name not in (None, "") else None
        if name_field is None:
            name = self.event_name
        if name in (None, "") or not str(name).strip():
            raise _Refused("no event name: add a 'name' column or set the operator's event_name", "MISSING_NAME")
        name = str(name).strip()
        if _bytes(name) > MAX_EVENT_NAME_BYTES:
            raise _Refused(f"event name is {_bytes(name)} bytes; Customer.io allows {MAX_EVENT_NAME_BYTES}", "INVALID")
        timestamp = None
        time_field = self.event_time_field
        if time_field:
            raw = fields.get(time_field)
            if raw not in (None, ""):
                try:
                    timestamp = unix_seconds(raw)
                except ValueError as exc:
                    raise _Refused(f"{time_field}: {exc}", "INVALID_TIMESTAMP") from None
        # The person's columns are identifiers, not event data; the event key stays an attribute.
        skip = {c for c, _ in self._person_columns(self._synced_fields)} | {name_field, time_field}
        item: dict[str, Any] = {
            "type": "person",
            "identifiers": {kind: value},
            "action": "event",
            "id": ulid,
            "name": name,
        }
        if timestamp is not None:
            item["timestamp"] = timestamp
        item["attributes"] = {k: v for k, v in fields.items() if k not in skip}
        return item

    # ------------------------------------------------------------------ the batch machinery

    def _write(
        self, records: Sequence[Record], build: Callable[[Record], tuple[dict[str, Any], str | None]]
    ) -> list[Outcome]:
        """Build one operation per record, send them in requests of < 500 KB, map 207 errors back."""
        outcomes: list[Outcome | None] = [None] * len(records)
        ready: list[tuple[int, dict[str, Any], int, str | None]] = []
        for i, record in enumerate(records):
            try:
                item, dest_id = build(record)
            except _Refused as refused:
                outcomes[i] = Outcome.failure(refused.reason, refused.code)
                continue
            size = len(dumps(item))
            if size > self.max_item_bytes:
                outcomes[i] = Outcome.failure(_too_large(size, self.max_item_bytes), "ITEM_TOO_LARGE")
                continue
            ready.append((i, item, size, dest_id))
        # /v2/batch takes at most max_request_bytes (500 KB) a request, whatever the record count: one engine batch
        # may need several requests. The bisect stays here: a refusal escaping to the engine would make it send
        # again the groups already accepted, and the engine's halves do not follow these groups.
        for group in self._by_bytes(ready):
            for (i, *_), outcome in zip(group, self.bisect(group, self._post_batch), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _by_bytes(self, ready: list[tuple[int, dict[str, Any], int, str | None]]) -> list[list[Any]]:
        groups: list[list[Any]] = []
        current: list[Any] = []
        size = _ENVELOPE_BYTES
        for entry in ready:
            added = entry[2] + (1 if current else 0)  # the comma between operations
            if current and size + added >= self.max_request_bytes:
                groups.append(current)
                current, size, added = [], _ENVELOPE_BYTES, entry[2]
            current.append(entry)
            size += added
        if current:
            groups.append(current)
        return groups

    def _post_batch(self, group: Sequence[tuple[int, dict[str, Any], int, str | None]]) -> list[Outcome]:
        # Identify and delete are idempotent, and events carry their dedupe id: every call may be resent.
        response = self.request("POST", BATCH_PATH, json={"batch": [entry[1] for entry in group]}, idempotent=True)
        body = self.response_json(response)
        errors = body.get("errors") if isinstance(body, Mapping) else None
        by_index: dict[int, Mapping[str, Any]] = {}
        for error in errors or []:
            index = error.get("batch_index") if isinstance(error, Mapping) else None
            if isinstance(index, int) and 0 <= index < len(group):
                by_index.setdefault(index, error)
            else:
                self.log.warning("Customer.io returned an error for no operation of the batch: %s", error)
        outcomes = []
        for n, entry in enumerate(group):
            error = by_index.get(n)
            if error is None:
                outcomes.append(Outcome.success(entry[3]))
            else:
                outcomes.append(Outcome.failure(self.redact(_error_text(error)), str(error.get("reason") or "invalid")))
        return outcomes

    # ------------------------------------------------------------------ plumbing

    def _require_people(self, object: str, call: str) -> None:
        if self.object_kind(object) != "people":
            raise self._unsupported(call, object)

    @staticmethod
    def _identifier_field(match_field: str | None) -> str:
        field = match_field or "id"
        if field not in IDENTIFIER_FIELDS:
            raise ConfigurationError(
                f"Customer.io identifies people by id, email or cio_id; got match field {field!r} "
                "(alias the column in SQL, e.g. 'select customer_id as id', or set match_on)"
            )
        return field


def _is_integral(value: Any) -> bool:
    """A whole number of any numeric type (numpy's included): sent as its digits."""
    try:
        return bool(float(value).is_integer()) and not isinstance(value, str)
    except (TypeError, ValueError):
        return False


def _too_large(size: int, limit: int) -> str:
    return f"the Customer.io operation for this record is {size:,} bytes; the limit is {limit:,} bytes per operation"


def _error_text(error: Mapping[str, Any]) -> str:
    message = str(error.get("message") or error.get("reason") or "refused by Customer.io")
    field = error.get("field")
    return f"{field}: {message}" if field and str(field) not in message else message


def _email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def _encode_dest_id(kind: str, value: str) -> str:
    """What the checkpoint keeps per person: ``id:<id>``, ``cio_id:<id>`` or ``email-sha256:<hex>``."""
    if kind == "email":
        return f"email-sha256:{_email_digest(value)}"
    return f"{kind}:{value}"


def _decode_dest_id(dest_id: str | None) -> tuple[str | None, str]:
    kind, sep, value = (dest_id or "").partition(":")
    if not sep or kind not in ("id", "cio_id", "email-sha256") or not value:
        return None, ""
    return kind, value
