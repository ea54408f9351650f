"""Mailchimp Marketing API v3: audience members, 500 a call, keyed by the subscriber hash.

``object`` is the audience (list) id. How the real API behaves, and what this hook does:

* A member's id is the *subscriber hash*, the MD5 of the lower-cased address, so the
  destination id of a row is known from its email without asking: mirror deletes need
  no lookup, and the checkpoint keeps the hash.
* ``POST /3.0/lists/{id}`` with ``update_existing: true`` is the upsert (500 members a
  call). It answers 200 even when members fail: ``new_members`` are counted as created,
  ``updated_members`` as updated, each ``errors[]`` item becomes that member's reject
  (matched by address, without regard to case); a member in none of them is a reject
  too, never a silent success. ``create`` sends ``update_existing: false``: an existing
  member comes back as ``ERROR_CONTACT_EXISTS``, which the engine turns into an update.
* Every batch member carries ``status``: the document's ``Add_List_Members`` (the items of
  ``members``) has no ``status_if_new``, Mailchimp requires ``status``, and with
  ``update_existing`` that status is *applied* to existing members. So the hook sends new
  members the ``status_if_new`` status (``subscribed`` unless the connection or the row
  says otherwise) and existing members their *current* status, read from Mailchimp (the
  lookup's member read, or a status read just before the write): a sync never
  re-subscribes someone who unsubscribed and never touches a cleaned address. Only a
  mapped ``status`` field changes the status of existing members, and Mailchimp refuses
  to subscribe unsubscribed or cleaned ones (a reject).
* A row whose email changed while its key stayed (``dest_id`` is the hash of the old
  address) is renamed in place with ``PATCH`` instead of becoming a second member.
* Mirror mode archives (``DELETE``); ``delete_permanently`` forgets the address for good
  (Mailchimp then refuses to re-import it).
* At most 10 connections per account are allowed at once (429 above that); every call of
  this hook holds one of 10 process-wide slots per account, and 429s are retried with
  exponential backoff (Mailchimp sends no Retry-After).

Fields (destination field names, i.e. SQL aliases or mapping keys; case does not matter):

* ``email_address`` (or ``email``): the address, the match field.
* ``status``, ``status_if_new``, ``tags`` (a list, or a comma-separated string; tags are
  added, or replace the member's tags with ``sync_tags``), and the member fields
  ``email_type``, ``language``, ``vip``, ``interests``, ``location``, ``ip_signup``,
  ``timestamp_signup``, ``ip_opt``, ``timestamp_opt``.
* Merge fields: a field named like a merge tag of the audience (``FNAME``, ``fname``), or
  ``merge_fields.<TAG>`` (the tag must exist). The audience's merge fields are read once
  per hook (one call) to tell them apart and to check value types locally.
* Anything else (the primary key column, say) is not sent; a warning names it once.

Connection: the API key in ``password``; ``host`` is optional (by default
``https://<dc>.api.mailchimp.com`` from the key's ``-<dc>`` suffix). Extras besides the
common ones: ``status_if_new``, ``sync_tags``, ``delete_permanently``,
``skip_merge_validation``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from airflow_provider_retl.destinations.mailchimp.spec import SPEC
from airflow_provider_retl.hooks.destination import EXISTS, DestinationHook, _json_or_none, excerpt
from airflow_provider_retl.sync import validate as validators
from airflow_provider_retl.sync.errors import (
    BatchRejectedError,
    ConfigurationError,
    DestinationError,
    FatalDestinationError,
)
from airflow_provider_retl.sync.records import Outcome, Record

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["MailchimpHook", "subscriber_hash"]

#: Simultaneous connections Mailchimp allows per account (declared in the spec).
CONNECTION_LIMIT: int = SPEC.limits.concurrency_max or SPEC.limits.concurrency
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
EMAIL_FIELDS = ("email_address", "email")
MEMBER_FIELDS = (
    "email_type",
    "language",
    "vip",
    "interests",
    "location",
    "ip_signup",
    "timestamp_signup",
    "ip_opt",
    "timestamp_opt",
)
MERGE_PREFIX = "merge_fields."
#: Addresses checked per ``lookup`` call (one GET each; the engine runs calls in parallel).
LOOKUP_CHUNK = 50

_KEY_DC = re.compile(r"-([a-z]{2}\d+)$")
#: What Mailchimp calls the server prefix (the data centre), as the connection form asks for it.
_SERVER_PREFIX = re.compile(r"[a-z]{2}\d+")
_LIST_PATH = re.compile(r"^/3\.0/lists/([^/]+)(?:/merge-fields)?/?$")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 hex digest of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def connection_slots(account: str) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one Mailchimp account (``CONNECTION_LIMIT`` calls in flight)."""
    with _slots_lock:
        slots = _slots.get(account)
        if slots is None:
            slots = _slots[account] = threading.BoundedSemaphore(CONNECTION_LIMIT)
        return slots


@dataclass(frozen=True)
class MergeField:
    tag: str
    type: str
    required: bool
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldPlan:
    """Where each destination field of a row goes in a member body."""

    email: str | None
    status: str | None
    status_if_new: str | None
    tags: str | None
    member: tuple[tuple[str, str], ...]  # (field, member key)
    merge: tuple[tuple[str, MergeField], ...]  # (field, merge field)
    ignored: tuple[str, ...]


class MailchimpHook(DestinationHook):
    """Mailchimp audience members over the Marketing API v3 (``object`` = audience id).

    :param mailchimp_conn_id: connection with the API key (``<hex>-us6``) in ``password``.
    :param status_if_new: status of members the sync adds (default ``subscribed``;
        ``pending`` sends a confirmation email).
    :param sync_tags: mapped ``tags`` replace a member's tags instead of being added.
    :param delete_permanently: mirror deletes forget members instead of archiving them.
    :param skip_merge_validation: let Mailchimp accept members with required merge fields empty.
    """

    spec = SPEC

    def __init__(
        self,
        mailchimp_conn_id: str = SPEC.default_conn_name,
        *,
        status_if_new: str | None = None,
        sync_tags: bool | None = None,
        delete_permanently: bool | None = None,
        skip_merge_validation: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mailchimp_conn_id, **kwargs)
        mine = {
            "status_if_new": status_if_new,
            "sync_tags": sync_tags,
            "delete_permanently": delete_permanently,
            "skip_merge_validation": skip_merge_validation,
        }
        self._options.update({k: v for k, v in mine.items() if v is not None})
        self.status_if_new = "subscribed"
        self.sync_tags = False
        self.delete_permanently = False
        self.skip_merge_validation = False
        self._slots: threading.BoundedSemaphore | None = None
        self._cache_lock = threading.Lock()
        self._merge_fields: dict[str, dict[str, MergeField]] = {}
        self._plans: dict[tuple[str, tuple[str, ...]], FieldPlan] = {}
        #: (audience, subscriber hash) -> the member's status as last read or written; None: not a member.
        self._statuses: dict[tuple[str, str], str | None] = {}

    # ------------------------------------------------------------------ connection

    def _configure_base_url(self, conn: Connection) -> None:
        """A server prefix (``us6``) or URL in host, else ``https://<dc>.api.mailchimp.com`` from the key's suffix."""
        host = (conn.host or "").strip()
        if _SERVER_PREFIX.fullmatch(host.lower()):
            self.base_url = f"https://{host.lower()}.api.mailchimp.com"
            return
        if host:
            super()._configure_base_url(conn)
            # People paste the documented base URL; the hook adds /3.0 itself.
            self.base_url = re.sub(r"/3\.0/?$", "", self.base_url)
            return
        match = _KEY_DC.search((conn.password or "").strip())
        if match is None:
            raise ConfigurationError(
                f"connection {self.destination_conn_id!r} has no host and its API key has no data-centre suffix "
                "(like '-us6'); put the full key in the password, or the API URL in the host"
            )
        self.base_url = f"https://{match.group(1)}.api.mailchimp.com"

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """HTTP basic auth: any user name, the API key as password."""
        key = (conn.password or "").strip()
        if key:
            self._register_secret(key)
            session.auth = (conn.login or "retl", key)

    def _configure_from_extra(self, session: requests.Session, extra: dict[str, Any]) -> None:
        super()._configure_from_extra(session, extra)
        # max_concurrency is capped at Mailchimp's 10 simultaneous connections by the spec's limits.
        self.status_if_new = self.knob(extra, "status_if_new")
        self.sync_tags = self.knob(extra, "sync_tags")
        self.delete_permanently = self.knob(extra, "delete_permanently")
        self.skip_merge_validation = self.knob(extra, "skip_merge_validation")
        self._slots = connection_slots(self.account_key)

    def _send(self, *args: Any, **kwargs: Any) -> requests.Response:
        # One slot per attempt (not held while waiting to retry): never more than 10 calls in flight.
        slots = self._slots or connection_slots(self.account_key)
        with slots:
            return super()._send(*args, **kwargs)

    def _call_name(self, method: str, url: str) -> str:
        # Member paths end in a subscriber hash (an email in disguise); name the route, not the member.
        path = re.sub(r"/members/[^/]+", "/members/{subscriber_hash}", urlsplit(url).path or "/")
        return f"{self.hook_name} {method} {path}"

    def describe_error(self, response: requests.Response) -> str:
        """Mailchimp's problem document as ``title: detail (field: message; ...)``."""
        data = _json_or_none(response)
        if isinstance(data, Mapping) and (data.get("detail") or data.get("title")):
            text = ": ".join(str(data[k]) for k in ("title", "detail") if data.get(k))
            details = [
                f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in data.get("errors") or []
                if isinstance(e, Mapping) and e.get("message")
            ]
            if details:
                text += f" ({'; '.join(details)})"
            return self.redact(excerpt(text))
        return super().describe_error(response)

    def _error_for(self, response: requests.Response, *, idempotent: bool, what: str) -> DestinationError:
        error = super()._error_for(response, idempotent=idempotent, what=what)
        if response.status_code == 404:
            match = _LIST_PATH.match(urlsplit(response.url or "").path)
            if match:
                # An unknown audience is a configuration error: no retry, no per-record rejects.
                return FatalDestinationError(
                    f"Mailchimp has no audience (list) {match.group(1)!r} for this API key; "
                    f"check the sync's object ({error.args[0]})",
                    status=404,
                    response=response,
                    request=response.request,
                )
        return error

    def is_record_level(self, err: BatchRejectedError) -> bool:
        # Member problems come back inside a 200; a 400 for the whole call is about the call.
        return False

    def _test_call(self) -> None:
        self.request("GET", "/3.0/ping", retry=False)

    # ------------------------------------------------------------------ capabilities

    def validate(self, object: str, fields: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Malformed addresses (syntax, no DNS), unknown statuses and merge values of the wrong type."""
        plan = self.field_plan(object, fields)
        problems: list[tuple[str | None, str]] = []
        if plan.email is None:
            return [(None, "no email_address (or email) field: the address is what identifies a Mailchimp member")]
        reason = validators.required(fields.get(plan.email)) or validators.email(fields.get(plan.email))
        if reason:
            problems.append((plan.email, reason))
        for name in (plan.status, plan.status_if_new):
            value = fields.get(name) if name else None
            if value not in (None, "") and str(value).strip().lower() not in STATUSES:
                problems.append((name, f"status {value!r} is not one of {', '.join(STATUSES)}"))
        for name, merge in plan.merge:
            reason = _check_merge_value(merge, fields.get(name))
            if reason:
                problems.append((name, reason))
        return problems

    # ------------------------------------------------------------------ writes

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """Batch subscribe with ``update_existing: true``; idempotent."""
        return self._write(object, records, update_existing=True)

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Update members by subscriber hash; a changed address renames the member (PATCH)."""
        return self._write(object, records, update_existing=True)

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """Batch subscribe with ``update_existing: false``: existing members come back with code EXISTS.

        Safe to resend (Mailchimp cannot hold an address twice), so it is retried like an upsert.
        """
        return self._write(object, records, update_existing=False)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """Archive members by subscriber hash (or delete them permanently when configured); idempotent."""
        self.get_conn()
        list_path = self._list_path(object)

        def one(dest_id: str | None) -> Outcome:
            if not dest_id:
                return Outcome.failure("no subscriber hash known for this record; it cannot be archived", "NO_ID")
            path = f"{list_path}/members/{quote(str(dest_id), safe='')}"
            try:
                if self.delete_permanently:
                    self.request("POST", path + "/actions/delete-permanent", idempotent=True, accept=(404,))
                else:
                    self.request("DELETE", path, accept=(404,))
            except BatchRejectedError as err:  # a 4xx about this member: its reject, not the batch's
                return Outcome.failure(self._reason(err), _code(err))
            return Outcome.success(str(dest_id))  # 404: already gone, which is what was wanted

        if not dest_ids:
            return []
        workers = max(1, min(self.max_concurrency, len(dest_ids)))
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retl-mailchimp-delete") as pool:
            return list(pool.map(one, dest_ids))

    # ------------------------------------------------------------------ reads

    def lookup(self, object: str, match_field: str, values: Sequence[Any]) -> dict[Any, str]:
        """{address: subscriber hash} for the addresses that are members (archived ones are not)."""
        list_path = self._list_path(object)
        found: dict[Any, str] = {}
        for value in values:
            if not isinstance(value, str) or validators.email(value) or not value.strip():
                continue
            response = self.request(
                "GET",
                f"{list_path}/members/{subscriber_hash(value)}",
                params={"fields": "id,email_address,status"},
                accept=(404,),
            )
            member = self.response_json(response) if response.status_code == 200 else None
            self._remember_status(object, subscriber_hash(value), member)
            if isinstance(member, Mapping) and member.get("id") and member.get("status") != "archived":
                found[value] = str(member["id"])
        return found

    def _remember_status(self, object: str, member_hash: str, member: Any) -> None:
        """Keep the status of a member just read or written (None: not a member, or archived)."""
        status = member.get("status") if isinstance(member, Mapping) else None
        with self._cache_lock:
            self._statuses[(object, member_hash)] = str(status) if status and status != "archived" else None

    def current_statuses(self, object: str, hashes: Sequence[str]) -> dict[str, str | None]:
        """{subscriber hash: status} of the members, None for addresses that are not members.

        Known statuses (from this hook's lookups and writes) are used as they are; the others are
        read, one ``GET .../members/{hash}?fields=status`` each, in parallel.
        """
        with self._cache_lock:
            known = {h: self._statuses[(object, h)] for h in hashes if (object, h) in self._statuses}
        unknown = [h for h in dict.fromkeys(hashes) if h not in known]
        if unknown:
            list_path = self._list_path(object)

            def read(member_hash: str) -> None:
                response = self.request(
                    "GET", f"{list_path}/members/{member_hash}", params={"fields": "id,status"}, accept=(404,)
                )
                member = self.response_json(response) if response.status_code == 200 else None
                self._remember_status(object, member_hash, member)

            workers = max(1, min(self.max_concurrency, len(unknown)))
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retl-mailchimp-status") as pool:
                list(pool.map(read, unknown))
            with self._cache_lock:
                known.update({h: self._statuses.get((object, h)) for h in unknown})
        return known

    def merge_fields(self, object: str) -> dict[str, MergeField]:
        """The audience's merge fields by tag (one call per audience, cached)."""
        with self._cache_lock:
            cached = self._merge_fields.get(object)
            if cached is not None:
                return cached
            response = self.request("GET", f"{self._list_path(object)}/merge-fields", params={"count": 1000})
            fields: dict[str, MergeField] = {}
            for item in (self.response_json(response) or {}).get("merge_fields", []):
                if not isinstance(item, Mapping) or not item.get("tag"):
                    continue
                choices = (item.get("options") or {}).get("choices") or ()
                fields[str(item["tag"]).upper()] = MergeField(
                    tag=str(item["tag"]),
                    type=str(item.get("type") or "text"),
                    required=bool(item.get("required")),
                    choices=tuple(str(c) for c in choices),
                )
            self._merge_fields[object] = fields
            return fields

    def field_plan(self, object: str, fields: Mapping[str, Any] | Sequence[str]) -> FieldPlan:
        """How the destination fields of a row map onto a member (cached per set of field names)."""
        names = tuple(fields)
        with self._cache_lock:
            plan = self._plans.get((object, names))
        if plan is not None:
            return plan
        tags = self.merge_fields(object)
        lowered = {n.lower(): n for n in names}
        email = next((lowered[f] for f in EMAIL_FIELDS if f in lowered), None)
        member: list[tuple[str, str]] = []
        merge: list[tuple[str, MergeField]] = []
        ignored: list[str] = []
        special: dict[str, str | None] = {"status": None, "status_if_new": None, "tags": None}
        for name in names:
            low = name.lower()
            if name == email or low in EMAIL_FIELDS:
                if name != email:
                    ignored.append(name)
            elif low in special:
                special[low] = name
            elif low in MEMBER_FIELDS:
                member.append((name, low))
            elif low.startswith(MERGE_PREFIX):
                tag = name[len(MERGE_PREFIX) :].upper()
                if tag not in tags:
                    raise ConfigurationError(
                        f"field {name!r}: audience {object!r} has no merge field {tag!r}; "
                        f"its merge tags are {sorted(tags)}"
                    )
                merge.append((name, tags[tag]))
            elif name.upper() in tags:
                merge.append((name, tags[name.upper()]))
            else:
                ignored.append(name)
        plan = FieldPlan(
            email,
            special["status"],
            special["status_if_new"],
            special["tags"],
            tuple(member),
            tuple(merge),
            tuple(ignored),
        )
        with self._cache_lock:
            first = (object, names) not in self._plans
            self._plans[(object, names)] = plan
        if first and ignored:
            self.log.warning(
                "fields %s are neither member fields nor merge tags of audience %s (%s) and are not sent to Mailchimp",
                ", ".join(ignored),
                object,
                ", ".join(sorted(tags)) or "no merge fields",
            )
        return plan

    # ------------------------------------------------------------------ the batch machinery

    def _write(self, object: str, records: Sequence[Record], *, update_existing: bool) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(records)
        subscribe: list[int] = []
        for i, record in enumerate(records):
            email = self._email(object, record)
            if not email:
                outcomes[i] = Outcome.failure("no email address: a Mailchimp member needs one", "MISSING_EMAIL")
            elif record.dest_id and record.dest_id != subscriber_hash(email):
                renamed = self._rename(object, record, email)
                if renamed is None:
                    subscribe.append(i)  # the old member is gone: add the new address
                else:
                    outcomes[i] = renamed
            else:
                subscribe.append(i)
        if subscribe:
            for i, outcome in self._subscribe(object, records, subscribe, update_existing).items():
                outcomes[i] = outcome
        return [o or Outcome.failure("no outcome", "NO_RESULT") for o in outcomes]

    def _subscribe(
        self, object: str, records: Sequence[Record], part: Sequence[int], update_existing: bool
    ) -> dict[int, Outcome]:
        # Mailchimp requires ``status`` on every batch member and, with update_existing, applies it to
        # existing members (POST /lists/{list_id}: ``members`` items are Add_List_Members, which have
        # ``status`` and no ``status_if_new``). So a member without a mapped status must be sent its
        # *current* status if it exists (unsubscribed stays unsubscribed; cleaned stays cleaned, which
        # Mailchimp would refuse to change anyway) and the status for new members if it does not:
        #
        # 1. members already known to exist (this hook's lookup read their status) and members with a
        #    mapped status go straight to the update_existing call;
        # 2. the others are first sent with ``update_existing: false`` and the new-member status: new
        #    ones are created (no extra call for a first sync), existing ones come back as
        #    ERROR_CONTACT_EXISTS and are left untouched;
        # 3. those get their status read (one GET each, in parallel) and join the update_existing call.
        #    Records the engine already knows to exist (dest_id) skip the probe and are read directly.
        #
        # An unsubscribe landing between the read and the write is overwritten with the old status: a
        # window of one call, and the price of the batch endpoint having no status_if_new.
        bodies = {i: self.member_body(object, records[i]) for i in part}
        new_status = {i: str(body.pop("status_if_new")) for i, body in bodies.items()}
        if not update_existing:
            # Existing members are refused whatever the status says: no read is needed.
            for i, body in bodies.items():
                body.setdefault("status", new_status[i])
            return self._post_members(object, bodies, update_existing=False)
        unset = [i for i, body in bodies.items() if "status" not in body]
        # Records with a destination id (the engine's checkpoint says they exist) are read directly,
        # which costs less than a probe that would come back ERROR_CONTACT_EXISTS anyway.
        expected = [
            subscriber_hash(bodies[i]["email_address"])
            for i in unset
            if records[i].dest_id == subscriber_hash(bodies[i]["email_address"])
        ]
        if expected:
            self.current_statuses(object, expected)
        with self._cache_lock:
            known = {i: self._statuses.get((object, subscriber_hash(bodies[i]["email_address"]))) for i in unset}
        ready = {i: body for i, body in bodies.items() if "status" in body or known.get(i)}
        for i in unset:
            if known.get(i):
                bodies[i]["status"] = known[i]
        probe = {i: {**bodies[i], "status": new_status[i]} for i in unset if not known.get(i)}
        outcomes: dict[int, Outcome] = {}
        if probe:
            first = self._post_members(object, probe, update_existing=False)
            existing = [i for i, outcome in first.items() if outcome.code == EXISTS]
            outcomes.update({i: o for i, o in first.items() if o.code != EXISTS})
            if existing:
                hashes = [subscriber_hash(bodies[i]["email_address"]) for i in existing]
                with self._cache_lock:
                    for member_hash in hashes:  # what a lookup said before is stale now
                        self._statuses.pop((object, member_hash), None)
                current = self.current_statuses(object, hashes)
                for i, member_hash in zip(existing, hashes, strict=True):
                    bodies[i]["status"] = current.get(member_hash) or new_status[i]
                    ready[i] = bodies[i]
        if ready:
            outcomes.update(self._post_members(object, dict(sorted(ready.items())), update_existing=True))
        return outcomes

    def _post_members(
        self, object: str, bodies: Mapping[int, dict[str, Any]], *, update_existing: bool
    ) -> dict[int, Outcome]:
        """One batch subscribe call; {record position: outcome}."""
        part, members = list(bodies), list(bodies.values())
        body = {"members": members, "update_existing": update_existing, "sync_tags": self.sync_tags}
        params = {"skip_merge_validation": "true"} if self.skip_merge_validation else None
        # Safe to resend: an address cannot exist twice, and a repeated add is reported as existing.
        response = self.request("POST", self._list_path(object), json=body, params=params, idempotent=True)
        data = self.response_json(response) or {}
        if not isinstance(data, Mapping):
            data = {}

        by_hash: dict[str, list[Outcome]] = {}
        for key, created in (("new_members", True), ("updated_members", False)):
            for member in data.get(key) or []:
                if not isinstance(member, Mapping):
                    continue
                member_id = str(member.get("id") or subscriber_hash(str(member.get("email_address") or "")))
                by_hash.setdefault(member_id, []).append(Outcome.success(member_id, created=created))
                self._remember_status(object, member_id, member)
        for error in data.get("errors") or []:
            if isinstance(error, Mapping):
                member_id = subscriber_hash(str(error.get("email_address") or ""))
                by_hash.setdefault(member_id, []).append(self._error_outcome(error, member_id))

        outcomes: dict[int, Outcome] = {}
        for i, member in zip(part, members, strict=True):
            answers = by_hash.get(subscriber_hash(member["email_address"]))
            if answers:
                # The same address twice in one call gets Mailchimp's answers in order.
                outcomes[i] = answers.pop(0) if len(answers) > 1 else answers[0]
            else:
                outcomes[i] = Outcome.failure(
                    "Mailchimp answered the batch without a result or an error for this member", "NO_RESULT"
                )
        return outcomes

    def _rename(self, object: str, record: Record, email: str) -> Outcome | None:
        """Change the address of the member ``record.dest_id``; None when that member is gone."""
        body = self.member_body(object, record)
        body.pop("status_if_new", None)
        body.pop("tags", None)
        # Resending finds the old hash gone (404) and adds the new address, which is where it already is.
        response = self.request(
            "PATCH",
            f"{self._list_path(object)}/members/{quote(str(record.dest_id), safe='')}",
            json=body,
            idempotent=True,
            accept=(400, 404),
        )
        if response.status_code == 404:
            return None
        if response.status_code == 400:
            data = _json_or_none(response) or {}
            return Outcome.failure(self.describe_error(response), str(data.get("title") or "400"))
        member = self.response_json(response) or {}
        return Outcome.success(str(member.get("id") or subscriber_hash(email)), created=False)

    def member_body(self, object: str, record: Record) -> dict[str, Any]:
        """The member as Mailchimp takes it, before statuses are settled.

        ``status`` only when the row maps one; ``status_if_new`` always: the batch write turns
        them into the one ``status`` the batch endpoint takes, a rename drops ``status_if_new``.
        """
        plan = self.field_plan(object, record.fields)
        fields = record.fields
        body: dict[str, Any] = {"email_address": self._email(object, record)}
        row_status_if_new = fields.get(plan.status_if_new) if plan.status_if_new else None
        body["status_if_new"] = str(row_status_if_new or self.status_if_new).strip().lower()
        status = fields.get(plan.status) if plan.status else None
        if status not in (None, ""):
            body["status"] = str(status).strip().lower()
        for name, key in plan.member:
            if fields.get(name) is not None:
                body[key] = fields[name]
        if plan.merge:
            body["merge_fields"] = {m.tag: _merge_wire(m, fields.get(name)) for name, m in plan.merge}
        if plan.tags and fields.get(plan.tags) is not None:
            body["tags"] = _tag_names(fields[plan.tags])
        return body

    def _email(self, object: str, record: Record) -> str | None:
        plan = self.field_plan(object, record.fields)
        value = record.fields.get(plan.email) if plan.email else None
        if value in (None, ""):
            value = record.match_value
        return value.strip() if isinstance(value, str) and value.strip() else None

    def _error_outcome(self, error: Mapping[str, Any], member_id: str) -> Outcome:
        text = str(error.get("error") or "refused by Mailchimp")
        field, field_message = error.get("field"), error.get("field_message")
        if field and field_message and str(field_message) not in text:
            text = f"{text} ({field}: {field_message})"
        code = str(error.get("error_code") or "ERROR_GENERIC")
        if code == "ERROR_CONTACT_EXISTS":
            return Outcome(ok=False, dest_id=member_id, reason=self.redact(text), code=EXISTS)
        return Outcome.failure(self.redact(text), code)

    def _reason(self, err: DestinationError) -> str:
        return self.describe_error(err.response) if err.response is not None else str(err)

    @staticmethod
    def _list_path(object: str) -> str:
        if not object or not str(object).strip():
            raise ConfigurationError("object must be the Mailchimp audience (list) id")
        return f"/3.0/lists/{quote(str(object).strip(), safe='')}"


def _code(err: DestinationError) -> str:
    data = _json_or_none(err.response) if err.response is not None else None
    if isinstance(data, Mapping) and data.get("title"):
        return str(data["title"])
    return str(err.status or "ERROR")


def _tag_names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [name for name in dict.fromkeys(str(i).strip() for i in items if i is not None) if name]


def _merge_wire(merge: MergeField, value: Any) -> Any:
    # None clears a merge field; Mailchimp takes "" for that.
    return "" if value is None else value


def _check_merge_value(merge: MergeField, value: Any) -> str | None:
    """Type checks that need no call: numbers, choices, complete addresses."""
    if value is None or value == "":
        return None
    if merge.type == "number":
        if isinstance(value, bool):
            return f"merge field {merge.tag} is a number; got {value!r}"
        try:
            float(str(value))
        except ValueError:
            return f"merge field {merge.tag} is a number; got {value!r}"
    elif merge.type in ("dropdown", "radio") and merge.choices and str(value) not in merge.choices:
        return f"merge field {merge.tag} takes one of {list(merge.choices)}; got {value!r}"
    elif merge.type == "address" and (
        not isinstance(value, Mapping)
        or not all(str(value.get(k) or "").strip() for k in ("addr1", "city", "state", "zip"))
    ):
        return f"merge field {merge.tag} needs an address object with addr1, city, state and zip"
    return None
