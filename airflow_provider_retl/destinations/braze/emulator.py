"""A local emulator of the Braze REST API's user data endpoints.

Paths, auth, JSON shapes, limits and validation of Braze's ``/users/track``,
``/users/delete`` and ``/users/export/ids``, as the public docs describe them:

- Auth: ``Authorization: Bearer <REST API key>``; a missing or unknown key is
  401 ``{"message": "Invalid API Key"}``.
- ``POST /users/track`` takes ``attributes``, ``events`` and ``purchases`` arrays,
  at most 75 objects in each (``max_per_array``; the "Monthly Active Users CY
  24-25" plans allow 50 combined: ``max_per_request=50``); more is 400
  ``Max Input Length Exceeded``. Each object names its user by ``external_id``,
  ``braze_id``, ``user_alias``, ``email`` or ``phone``. Invalid objects are
  skipped and listed in ``errors`` as ``{"type", "input_array", "index"}``; the
  rest are applied: 201 ``{"message": "success", "<array>_processed": n, "errors": [...]}``.
  When no object is valid: 400 ``{"message": "Valid data must be provided in the
  'attributes', 'events', or 'purchases' fields.", "errors": [...]}``.
- ``_update_existing_only: true`` never creates a user (alias-only objects are
  update-only unless the flag is ``false``); objects for unknown users are
  accepted (counted as processed) and silently change nothing, as Braze does.
- Maintenance (``set_maintenance(True)`` or ``POST /_emulator/maintenance``):
  ``/users/track`` answers 202 ``{"message": "queued"}`` and applies the request
  when maintenance ends.
- Every event and purchase is its own occurrence: Braze has no dedupe id, so a
  re-sent event is stored twice. ``events()`` lists every one received (they
  outlive a deleted user, as in Braze's dashboard), so tests can count duplicates.
- ``POST /users/delete`` (one kind of id, at most 50) and ``POST /users/export/ids``
  (at most 50 external ids/aliases; ``custom_events`` and ``purchases`` as
  ``{name, first, last, count}`` summaries; unknown ids in ``invalid_user_ids``).
- Rate limits in fixed windows per workspace (key): /users/track 3,000 per 3 s,
  /users/export/ids 250 per minute, /users/delete 20,000 per minute. Every
  answer carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
  ``X-RateLimit-Reset`` (UTC epoch seconds); over the limit: 429.

Error ``type`` texts other than the identifier and quantity ones, the 429 body
and the status of /users/delete and /users/export/ids (201) are not documented
by Braze; they follow the documented ones in style.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from airflow_provider_retl.testing.emulators.base import (
    ADMIN_PREFIX,
    ASGIApp,
    BaseEmulator,
    json_response,
)
from airflow_provider_retl.testing.emulators.faults import Faults

DEFAULT_API_KEY = "braze-rest-key-0000"
MAX_PER_ARRAY = 75
MAX_IDS_PER_CALL = 50
ARRAYS = ("attributes", "events", "purchases")

IDENTIFIER_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
TOO_MANY_INPUTS = "Max Input Length Exceeded"
TOO_MANY_IDS = "The max number of external_ids and aliases per request was exceeded"
TOO_MANY_BRAZE_IDS = "The max number of ids per request was exceeded"
INVALID_KEY = "Invalid API Key"

#: Fields that name the user of an object; the first present wins (email before phone, as documented).
IDENTIFIERS = ("external_id", "braze_id", "user_alias", "email", "phone")
_CONTROL_KEYS = frozenset({"_update_existing_only", "push_token_import", "app_id"})
SUBSCRIPTION_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
GENDERS = frozenset({"M", "F", "O", "N", "P"})
EXPORT_FIELDS = frozenset(
    {
        "apps",
        "attributed_campaign",
        "attributed_source",
        "attributed_adgroup",
        "attributed_ad",
        "braze_id",
        "campaigns_received",
        "canvases_received",
        "cards_clicked",
        "country",
        "created_at",
        "custom_attributes",
        "custom_events",
        "devices",
        "dob",
        "email",
        "email_subscribe",
        "external_id",
        "first_name",
        "gender",
        "home_city",
        "language",
        "last_coordinates",
        "last_name",
        "phone",
        "purchases",
        "push_subscribe",
        "push_tokens",
        "random_bucket",
        "time_zone",
        "total_revenue",
        "uninstalled_at",
        "user_aliases",
    }
)
#: Profile fields Braze stores outside ``custom_attributes``.
STANDARD_FIELDS = frozenset(
    {
        "country",
        "current_location",
        "date_of_first_session",
        "date_of_last_session",
        "dob",
        "email",
        "email_subscribe",
        "first_name",
        "gender",
        "home_city",
        "image_url",
        "language",
        "last_name",
        "phone",
        "push_subscribe",
        "push_tokens",
        "time_zone",
        "marked_email_as_spam_at",
        "subscription_groups",
    }
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Braze's second time format: yyyy-MM-dd'T'HH:mm:ss:SSSZ (milliseconds after a colon, offset like +0100).
_COLON_MILLIS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}):(\d{3})([+-]\d{2}:?\d{2}|Z)$")


class BrazeError(Exception):
    """Raised in a handler to answer with a Braze-shaped error body."""

    def __init__(
        self, status: int, message: str, errors: list[Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if errors:
            self.body["errors"] = errors
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return json_response(self.status, self.body, self.headers)


# ------------------------------------------------------------------------------ rate limits


@dataclass(frozen=True)
class Quota:
    """One rate-limit decision of a fixed window: ``reset_at`` is the window's end (epoch seconds)."""

    allowed: bool
    limit: int | None
    remaining: int | None
    reset_at: float

    def headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining or 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class FixedWindowLimiter:
    """``limit`` requests per key in windows of ``window`` seconds aligned to the epoch (None: no limit)."""

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float] = time.time) -> None:
        if limit is not None and limit < 1:
            raise ValueError("rate limit must be at least 1 (or None to disable)")
        if window <= 0:
            raise ValueError("rate window must be positive")
        self.limit = limit
        self.window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._events: deque[tuple[float, str, bool]] = deque(maxlen=200_000)

    def acquire(self, key: str) -> Quota:
        with self._lock:
            now = self._clock()
            slot = int(now // self.window)
            reset_at = (slot + 1) * self.window
            if self.limit is None:
                self._events.append((now, key, True))
                return Quota(True, None, None, reset_at)
            used = self._counts[(key, slot)]
            if used >= self.limit:
                self._events.append((now, key, False))
                return Quota(False, self.limit, 0, reset_at)
            self._counts[(key, slot)] = used + 1
            for old in [k for k in self._counts if k[1] < slot - 1]:
                del self._counts[old]
            self._events.append((now, key, True))
            return Quota(True, self.limit, self.limit - used - 1, reset_at)

    def peek(self, key: str) -> Quota:
        """The current window's quota without counting a request."""
        with self._lock:
            now = self._clock()
            slot = int(now // self.window)
            used = self._counts.get((key, slot), 0)
            return Quota(True, self.limit, None if self.limit is None else self.limit - used, (slot + 1) * self.window)

    def max_in_window(self, key: str | None = None) -> int:
        """The most requests accepted in one window (to assert the limit held)."""
        with self._lock:
            counts: dict[int, int] = defaultdict(int)
            for at, k, allowed in self._events:
                if allowed and (key is None or k == key):
                    counts[int(at // self.window)] += 1
            return max(counts.values(), default=0)

    @property
    def refused(self) -> int:
        with self._lock:
            return sum(1 for _, _, allowed in self._events if not allowed)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._events.clear()


# ------------------------------------------------------------------------------ users


@dataclass
class BrazeUser:
    """A user profile as the emulator stores it."""

    braze_id: str
    external_id: str | None = None
    aliases: list[dict[str, str]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def view(self) -> dict[str, Any]:
        """Everything stored, with every event and purchase (not only their summaries)."""
        return {
            "braze_id": self.braze_id,
            "external_id": self.external_id,
            "user_aliases": [dict(a) for a in self.aliases],
            "attributes": dict(self.attributes),
            "events": [dict(e) for e in self.events],
            "purchases": [dict(p) for p in self.purchases],
        }


class BrazeEmulator(BaseEmulator):
    """State and FastAPI app of a Braze REST emulator (start it with ``start_emulator("braze")``).

    ``api_keys``: accepted REST API keys; a mapping gives each key's workspace (users
    and rate limits are per workspace; by default one workspace for all keys);
    ``None`` accepts any non-empty key. ``rate_limit``/``rate_window``: /users/track
    quota; ``export_rate_limit``/``export_rate_window`` and
    ``delete_rate_limit``/``delete_rate_window`` for the other endpoints.
    """

    kind = "braze"

    def __init__(
        self,
        api_keys: Iterable[str] | Mapping[str, str] | None = (DEFAULT_API_KEY,),
        *,
        rate_limit: int | None = 3000,
        rate_window: float = 3.0,
        export_rate_limit: int | None = 250,
        export_rate_window: float = 60.0,
        delete_rate_limit: int | None = 20_000,
        delete_rate_window: float = 60.0,
        max_per_array: int = MAX_PER_ARRAY,
        max_per_request: int | None = None,
        maintenance: bool = False,
        faults: Faults | None = None,
        keep_requests: int = 1000,
    ) -> None:
        if api_keys is None:
            self.api_keys: dict[str, str] | None = None
        elif isinstance(api_keys, Mapping):
            self.api_keys = {str(k): str(w) for k, w in api_keys.items()}
        elif isinstance(api_keys, str):
            self.api_keys = {api_keys: "workspace"}
        else:
            self.api_keys = {str(k): "workspace" for k in api_keys}
        self.max_per_array = max_per_array
        self.max_per_request = max_per_request
        self.track_limiter = FixedWindowLimiter(rate_limit, rate_window)
        self.export_limiter = FixedWindowLimiter(export_rate_limit, export_rate_window)
        self.delete_limiter = FixedWindowLimiter(delete_rate_limit, delete_rate_window)
        self._maintenance = maintenance
        self._queued: list[tuple[str, Any]] = []
        self._workspaces: dict[str, _Workspace] = defaultdict(_Workspace)
        self._ids = itertools.count(1)
        super().__init__(faults=faults, keep_requests=keep_requests)

    # -- Python inspection API ----------------------------------------------------

    def _ws(self, workspace: str | None) -> _Workspace:
        if workspace is None:
            workspaces = sorted(set((self.api_keys or {"": "workspace"}).values()))
            workspace = workspaces[0]
        return self._workspaces[workspace]

    def users(self, workspace: str | None = None) -> list[dict[str, Any]]:
        """Every stored user, oldest first, with all its events and purchases."""
        with self.lock:
            return [u.view() for u in self._ws(workspace).users.values()]

    def user(self, external_id: str, workspace: str | None = None) -> dict[str, Any] | None:
        """One user by external id, or None."""
        with self.lock:
            ws = self._ws(workspace)
            braze_id = ws.by_external.get(external_id)
            return None if braze_id is None else ws.users[braze_id].view()

    def events(self, workspace: str | None = None, *, name: str | None = None) -> list[dict[str, Any]]:
        """Every event received, in order (duplicates included; deleted users' events too)."""
        with self.lock:
            return [dict(e) for e in self._ws(workspace).event_log if name is None or e["name"] == name]

    def purchases(self, workspace: str | None = None) -> list[dict[str, Any]]:
        """Every purchase received, in order (a quantity of N is one entry with ``quantity`` N)."""
        with self.lock:
            return [dict(p) for p in self._ws(workspace).purchase_log]

    def deleted(self, workspace: str | None = None) -> list[str]:
        """External ids (or braze ids) of the users deleted so far, in order."""
        with self.lock:
            return list(self._ws(workspace).deleted)

    def update_only_skips(self, workspace: str | None = None) -> int:
        """Objects accepted with ``_update_existing_only`` that changed nothing (their user did not exist)."""
        with self.lock:
            return self._ws(workspace).update_only_skips

    def seed_user(self, external_id: str, workspace: str | None = None, **attributes: Any) -> str:
        """Store a user directly (no HTTP, no rate limit); returns its braze_id."""
        with self.lock:
            ws = self._ws(workspace)
            user = self._user_by_external(ws, external_id, create=True)
            assert user is not None
            self._apply_attributes(user, attributes)
            return user.braze_id

    @property
    def maintenance(self) -> bool:
        return self._maintenance

    def set_maintenance(self, on: bool) -> int:
        """Switch maintenance on or off; switching it off applies the queued requests (returns how many)."""
        with self.lock:
            self._maintenance = bool(on)
            if on:
                return 0
            queued, self._queued = self._queued, []
            for workspace, body in queued:
                try:
                    self._track(self._workspaces[workspace], body)
                except BrazeError:
                    pass  # a queued request that turns out invalid is dropped, as Braze would
            return len(queued)

    def queued(self) -> int:
        with self.lock:
            return len(self._queued)

    def state(self) -> dict[str, Any]:
        """Users of every workspace (with every event), for ``GET /_emulator/state``."""
        with self.lock:
            return {
                "workspaces": {
                    name: {
                        "users": [_json_safe(u.view()) for u in ws.users.values()],
                        "events_received": len(ws.event_log),
                        "purchases_received": len(ws.purchase_log),
                        "deleted": list(ws.deleted),
                    }
                    for name, ws in self._workspaces.items()
                },
                "maintenance": self._maintenance,
                "queued": len(self._queued),
                "rateLimit": {"limit": self.track_limiter.limit, "windowSeconds": self.track_limiter.window},
            }

    def reset_state(self) -> None:
        with self.lock:
            self._workspaces.clear()
            self._queued.clear()
            self._ids = itertools.count(1)
            for limiter in (self.track_limiter, self.export_limiter, self.delete_limiter):
                limiter.reset()

    def workspace_for(self, key: str | None) -> str | None:
        """The workspace a REST API key belongs to, or None when it is not accepted."""
        if not key:
            return None
        if self.api_keys is None:
            return "workspace"
        return self.api_keys.get(key)

    # -- faults in Braze's shapes -------------------------------------------------

    def fault_error_body(self, status: int) -> dict[str, Any]:
        return {"message": "Internal Server Error" if status == 500 else "Service Unavailable"}

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        quota = self.track_limiter.peek("workspace")
        headers = Quota(False, quota.limit, 0, quota.reset_at).headers()
        return {"message": "API rate limit exceeded"}, headers

    # -- admin ----------------------------------------------------------------------

    def _build_admin(self) -> FastAPI:
        admin = super()._build_admin()

        @admin.post(f"{ADMIN_PREFIX}/maintenance")
        async def post_maintenance(request: Request) -> Response:
            try:
                body = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError as exc:
                return json_response(400, {"error": str(exc)})
            applied = self.set_maintenance(bool(body.get("on", True)) if isinstance(body, dict) else True)
            return json_response(200, {"maintenance": self.maintenance, "applied": applied})

        return admin

    # -- the API app ----------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        app = FastAPI(title="Braze REST emulator", openapi_url=None, docs_url=None, redoc_url=None)

        async def on_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, BrazeError)
            return exc.response()

        app.add_exception_handler(BrazeError, on_error)

        @app.post("/users/track")
        async def track(request: Request) -> Response:
            workspace, quota = self._admit(request, self.track_limiter)
            body = await _json(request, quota)
            with self.lock:
                if self._maintenance:
                    self._check_lengths(body, quota)
                    self._queued.append((workspace, body))
                    return json_response(202, {"message": "queued"}, quota.headers())
                status, answer = self._track(self._workspaces[workspace], body, quota)
            return json_response(status, answer, quota.headers())

        @app.post("/users/delete")
        async def delete(request: Request) -> Response:
            workspace, quota = self._admit(request, self.delete_limiter)
            body = await _json(request, quota)
            with self.lock:
                answer = self._delete(self._workspaces[workspace], body, quota)
            return json_response(201, answer, quota.headers())

        @app.post("/users/export/ids")
        async def export(request: Request) -> Response:
            workspace, quota = self._admit(request, self.export_limiter)
            body = await _json(request, quota)
            with self.lock:
                answer = self._export(self._workspaces[workspace], body, quota)
            return json_response(201, answer, quota.headers())

        return app

    def _admit(self, request: Request, limiter: FixedWindowLimiter) -> tuple[str, Quota]:
        """Auth first (401 without a quota header), then the endpoint's rate limit (429)."""
        auth = request.headers.get("authorization", "").strip()
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        workspace = self.workspace_for(key)
        if workspace is None:
            raise BrazeError(401, INVALID_KEY)
        quota = limiter.acquire(workspace)
        if not quota.allowed:
            raise BrazeError(429, "API rate limit exceeded", headers=quota.headers())
        return workspace, quota

    # -- /users/track -------------------------------------------------------------

    def _check_lengths(self, body: Any, quota: Quota | None = None) -> None:
        headers = quota.headers() if quota else {}
        if not isinstance(body, dict):
            raise BrazeError(400, "Bad Request: the body must be a JSON object", headers=headers)
        total = 0
        for name in ARRAYS:
            items = body.get(name)
            if items is None:
                continue
            if not isinstance(items, list):
                raise BrazeError(400, f"Bad Request: '{name}' must be an array", headers=headers)
            if len(items) > self.max_per_array:
                raise BrazeError(
                    400,
                    TOO_MANY_INPUTS,
                    [
                        {
                            "type": f"'{name}' has {len(items)} objects; at most {self.max_per_array} are allowed per request",
                            "input_array": name,
                        }
                    ],
                    headers=headers,
                )
            total += len(items)
        if self.max_per_request is not None and total > self.max_per_request:
            raise BrazeError(
                400,
                TOO_MANY_INPUTS,
                [
                    {
                        "type": f"{total} objects in one request; at most {self.max_per_request} are allowed "
                        "across attributes, events and purchases"
                    }
                ],
                headers=headers,
            )

    def _track(self, ws: _Workspace, body: Any, quota: Quota | None = None) -> tuple[int, dict[str, Any]]:
        self._check_lengths(body, quota)
        errors: list[dict[str, Any]] = []
        processed: dict[str, int] = {}
        plans: list[tuple[str, dict[str, Any]]] = []
        for name in ARRAYS:
            for index, item in enumerate(body.get(name) or []):
                problem = _validate(name, item)
                if problem:
                    errors.append({"type": problem, "input_array": name, "index": index})
                else:
                    plans.append((name, item))
                    processed[name] = processed.get(name, 0) + 1
        if not plans:
            raise BrazeError(400, NO_VALID_DATA, errors, headers=quota.headers() if quota else None)
        # Braze starts attributes, then events, then purchases.
        for name, item in plans:
            self._apply(ws, name, item)
        answer: dict[str, Any] = {"message": "success"}
        for name in ARRAYS:
            if processed.get(name):
                answer[f"{name}_processed"] = processed[name]
        if errors:
            answer["errors"] = errors
        return 201, answer

    def _apply(self, ws: _Workspace, array: str, item: dict[str, Any]) -> None:
        user = self._resolve(ws, item)
        if user is None:
            ws.update_only_skips += 1
            return
        received = _format_time(datetime.now(UTC))
        if array == "attributes":
            self._apply_attributes(
                user,
                {
                    k: v
                    for k, v in item.items()
                    if k not in _CONTROL_KEYS and k not in ("external_id", "braze_id", "user_alias")
                },
            )
            return
        when = _format_time(_clamp_future(_parse_time(item["time"])))
        common = {"external_id": user.external_id, "braze_id": user.braze_id, "time": when, "received_at": received}
        if item.get("app_id") is not None:
            common["app_id"] = item["app_id"]
        if array == "events":
            event = {**common, "name": item["name"], "properties": dict(item.get("properties") or {})}
            user.events.append(event)
            ws.event_log.append(event)
        else:
            purchase = {
                **common,
                "product_id": item["product_id"],
                "currency": item["currency"],
                "price": item["price"],
                "quantity": int(item.get("quantity", 1)),
                "properties": dict(item.get("properties") or {}),
            }
            user.purchases.append(purchase)
            ws.purchase_log.append(purchase)

    def _resolve(self, ws: _Workspace, item: dict[str, Any]) -> BrazeUser | None:
        """The user an object names; created unless in update-only mode (None: skipped)."""
        flag = item.get("_update_existing_only")
        if item.get("external_id") is not None:
            return self._user_by_external(ws, str(item["external_id"]), create=flag is not True)
        if item.get("braze_id") is not None:
            return ws.users.get(str(item["braze_id"]))
        if item.get("user_alias") is not None:
            alias = item["user_alias"]
            key = (alias["alias_name"], alias["alias_label"])
            braze_id = ws.by_alias.get(key)
            if braze_id is not None:
                return ws.users[braze_id]
            if flag is False:  # alias-only users are created only when the flag is explicitly false
                user = self._new_user(ws)
                user.aliases.append({"alias_name": key[0], "alias_label": key[1]})
                ws.by_alias[key] = user.braze_id
                return user
            return None
        for name in ("email", "phone"):
            value = item.get(name)
            if value is not None:
                matches = [u for u in ws.users.values() if u.attributes.get(name) == value]
                if matches:
                    with_external = [u for u in matches if u.external_id]
                    return (with_external or matches)[-1]
                if flag is True:
                    return None
                user = self._new_user(ws)
                user.attributes[name] = value
                return user
        return None

    def _user_by_external(self, ws: _Workspace, external_id: str, *, create: bool) -> BrazeUser | None:
        braze_id = ws.by_external.get(external_id)
        if braze_id is not None:
            return ws.users[braze_id]
        if not create:
            return None
        user = self._new_user(ws)
        user.external_id = external_id
        ws.by_external[external_id] = user.braze_id
        return user

    def _new_user(self, ws: _Workspace) -> BrazeUser:
        user = BrazeUser(braze_id=f"{next(self._ids):012x}{uuid.uuid4().hex[:12]}")
        ws.users[user.braze_id] = user
        return user

    @staticmethod
    def _apply_attributes(user: BrazeUser, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if value is None:
                user.attributes.pop(name, None)  # null removes an attribute
            elif isinstance(value, dict) and set(value) == {"inc"}:
                user.attributes[name] = int(user.attributes.get(name) or 0) + int(value["inc"])
            elif isinstance(value, dict) and set(value) <= {"add", "remove"} and value:
                current = list(user.attributes.get(name) or [])
                for element in value.get("add") or []:
                    if element in current:
                        current.remove(element)
                    current.append(element)
                current = [e for e in current if e not in (value.get("remove") or [])]
                user.attributes[name] = current
            elif isinstance(value, list):
                user.attributes[name] = list(dict.fromkeys(value))  # arrays are sets, in order
            else:
                user.attributes[name] = value

    # -- /users/delete --------------------------------------------------------------

    def _delete(self, ws: _Workspace, body: Any, quota: Quota) -> dict[str, Any]:
        headers = quota.headers()
        if not isinstance(body, dict):
            raise BrazeError(400, "Bad Request: the body must be a JSON object", headers=headers)
        kinds = [k for k in ("external_ids", "user_aliases", "braze_ids") if body.get(k)]
        if not kinds:
            raise BrazeError(
                400, "No users to delete: provide external_ids, user_aliases or braze_ids", headers=headers
            )
        if len(kinds) > 1:
            raise BrazeError(
                400,
                "Only one of external_ids, user_aliases, or braze_ids can be included in a single request",
                headers=headers,
            )
        kind = kinds[0]
        ids = body[kind]
        if not isinstance(ids, list):
            raise BrazeError(400, f"Bad Request: '{kind}' must be an array", headers=headers)
        if len(ids) > MAX_IDS_PER_CALL:
            raise BrazeError(400, TOO_MANY_BRAZE_IDS if kind == "braze_ids" else TOO_MANY_IDS, headers=headers)
        deleted = 0
        for value in ids:
            if kind == "external_ids":
                braze_id = ws.by_external.get(str(value))
            elif kind == "braze_ids":
                braze_id = str(value) if str(value) in ws.users else None
            else:
                alias = value if isinstance(value, dict) else {}
                braze_id = ws.by_alias.get((alias.get("alias_name"), alias.get("alias_label")))
            if braze_id is None:
                continue
            user = ws.users.pop(braze_id)
            if user.external_id:
                ws.by_external.pop(user.external_id, None)
            for alias in user.aliases:
                ws.by_alias.pop((alias["alias_name"], alias["alias_label"]), None)
            ws.deleted.append(user.external_id or user.braze_id)
            deleted += 1
        return {"deleted": deleted, "message": "success"}

    # -- /users/export/ids ----------------------------------------------------------

    def _export(self, ws: _Workspace, body: Any, quota: Quota) -> dict[str, Any]:
        headers = quota.headers()
        if not isinstance(body, dict):
            raise BrazeError(400, "Bad Request: the body must be a JSON object", headers=headers)
        external_ids = body.get("external_ids") or []
        aliases = body.get("user_aliases") or []
        if not isinstance(external_ids, list) or not isinstance(aliases, list):
            raise BrazeError(400, "Bad Request: external_ids and user_aliases must be arrays", headers=headers)
        if len(external_ids) + len(aliases) > MAX_IDS_PER_CALL:
            raise BrazeError(400, TOO_MANY_IDS, headers=headers)
        fields = body.get("fields_to_export")
        if fields is not None:
            unknown = sorted(set(map(str, fields)) - EXPORT_FIELDS) if isinstance(fields, list) else ["?"]
            if unknown:
                raise BrazeError(400, f"Invalid fields_to_export: {', '.join(unknown)}", headers=headers)
        wanted: list[tuple[str, BrazeUser | None]] = []
        for value in external_ids:
            braze_id = ws.by_external.get(str(value))
            wanted.append((str(value), ws.users.get(braze_id) if braze_id else None))
        for alias in aliases:
            alias = alias if isinstance(alias, dict) else {}
            braze_id = ws.by_alias.get((alias.get("alias_name"), alias.get("alias_label")))
            wanted.append((str(alias.get("alias_name")), ws.users.get(braze_id) if braze_id else None))
        if body.get("braze_id"):
            wanted.append((str(body["braze_id"]), ws.users.get(str(body["braze_id"]))))
        for name in ("email_address", "phone"):
            if body.get(name):
                attribute = "email" if name == "email_address" else "phone"
                matches = [u for u in ws.users.values() if u.attributes.get(attribute) == body[name]]
                wanted.append((str(body[name]), matches[-1] if matches else None))
        if not wanted:
            raise BrazeError(400, "Bad Request: no user identifier was provided", headers=headers)
        users, invalid = [], []
        seen: set[str] = set()
        for asked, user in wanted:
            if user is None:
                invalid.append(asked)
            elif user.braze_id not in seen:
                seen.add(user.braze_id)
                users.append(_export_user(user, set(fields) if fields is not None else None))
        answer: dict[str, Any] = {"users": users, "message": "success"}
        if invalid:
            answer["invalid_user_ids"] = invalid
        return answer


@dataclass
class _Workspace:
    users: dict[str, BrazeUser] = field(default_factory=dict)
    by_external: dict[str, str] = field(default_factory=dict)
    by_alias: dict[tuple[Any, Any], str] = field(default_factory=dict)
    event_log: list[dict[str, Any]] = field(default_factory=list)
    purchase_log: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    update_only_skips: int = 0


# ------------------------------------------------------------------------------ validation


def _validate(array: str, item: Any) -> str | None:
    """Why Braze would refuse one object of ``array`` (None: valid)."""
    if not isinstance(item, dict):
        return f"'{array}' objects must be JSON objects"
    problem = _identifier_problem(item)
    if problem:
        return problem
    flag = item.get("_update_existing_only")
    if flag is not None and not isinstance(flag, bool):
        return "'_update_existing_only' is not valid"
    if array == "attributes":
        return _attribute_problem(item)
    if array == "events":
        name = item.get("name")
        if name is None:
            return "'name' is required"
        if not isinstance(name, str) or not name.strip():
            return "'name' is not valid"
    else:
        product = item.get("product_id")
        if product is None:
            return "'product_id' is required"
        if not isinstance(product, str) or not product or len(product) > 255:
            return "'product_id' is not valid"
        if item.get("currency") is None:
            return "'currency' is required"
        if not isinstance(item["currency"], str) or not _CURRENCY.match(item["currency"]):
            return "'currency' is not valid"
        if item.get("price") is None:
            return "'price' is required"
        if isinstance(item["price"], bool) or not isinstance(item["price"], int | float):
            return "'price' is not valid"
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 100:
            return "'quantity' is not valid"
    if item.get("time") is None:
        return "'time' is required"
    try:
        _parse_time(item["time"])
    except ValueError:
        return "'time' is not valid"
    if item.get("app_id") is not None and not isinstance(item["app_id"], str):
        return "'app_id' is not valid"
    return _properties_problem(item.get("properties"))


def _identifier_problem(item: Mapping[str, Any]) -> str | None:
    present = [name for name in IDENTIFIERS if item.get(name) is not None]
    if not present:
        return IDENTIFIER_REQUIRED
    for name in present:
        value = item[name]
        if name == "user_alias":
            if not (
                isinstance(value, dict)
                and isinstance(value.get("alias_name"), str)
                and isinstance(value.get("alias_label"), str)
            ):
                return "'user_alias' is not valid"
        elif not isinstance(value, str) or not value.strip():
            return f"'{name}' is not valid"
    return None


def _attribute_problem(item: Mapping[str, Any]) -> str | None:
    email = item.get("email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
        return "'email' is not valid"
    gender = item.get("gender")
    if gender is not None and (not isinstance(gender, str) or gender.upper() not in GENDERS):
        return "'gender' is not valid"
    for name in ("email_subscribe", "push_subscribe"):
        value = item.get(name)
        if value is not None and value not in SUBSCRIPTION_STATES:
            return f"'{name}' is not valid"
    dob = item.get("dob")
    if dob is not None and (not isinstance(dob, str) or not _DOB.match(dob)):
        return "'dob' is not valid"
    for name in item:
        if not name or name.startswith("$") or len(name) > 255:
            return f"attribute name '{name[:40]}' is not valid"
    return None


def _properties_problem(properties: Any) -> str | None:
    if properties is None:
        return None
    if not isinstance(properties, dict):
        return "'properties' is not valid"
    for name, value in properties.items():
        if not name or name.startswith("$") or len(name) > 255:
            return "'properties' is not valid: property names must be 1-255 characters, without a leading '$'"
        if isinstance(value, str) and len(value) > 255:
            return f"'properties' is not valid: '{name}' is longer than 255 characters"
    return None


def _parse_time(value: Any) -> datetime:
    """ISO 8601, or Braze's ``yyyy-MM-dd'T'HH:mm:ss:SSSZ``; no offset means UTC."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("time must be a string")
    text = value.strip()
    colon = _COLON_MILLIS.match(text)
    if colon:
        text = f"{colon.group(1)}.{colon.group(2)}{colon.group(3)}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _clamp_future(moment: datetime) -> datetime:
    # "Events and attributes with timestamps in the future will default to the current time."
    now = datetime.now(UTC)
    return min(moment, now)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _summaries(entries: list[dict[str, Any]], key: str, weight: str | None = None) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = entry[key]
        count = int(entry.get(weight, 1)) if weight else 1
        group = groups.setdefault(name, {"name": name, "first": entry["time"], "last": entry["time"], "count": 0})
        group["first"] = min(group["first"], entry["time"])
        group["last"] = max(group["last"], entry["time"])
        group["count"] += count
    return list(groups.values())


def _export_user(user: BrazeUser, fields: set[str] | None) -> dict[str, Any]:
    """A user export object: fields that are null, false or empty are left out, as Braze does."""
    standard = {k: v for k, v in user.attributes.items() if k in STANDARD_FIELDS}
    custom = {k: v for k, v in user.attributes.items() if k not in STANDARD_FIELDS}
    data: dict[str, Any] = {
        "external_id": user.external_id,
        "user_aliases": [dict(a) for a in user.aliases] or None,
        "braze_id": user.braze_id,
        "created_at": _format_time(user.created_at),
        **{k: v for k, v in standard.items() if k not in ("push_tokens", "subscription_groups")},
        "custom_attributes": custom or None,
        "custom_events": _summaries(user.events, "name") or None,
        "purchases": _summaries(user.purchases, "product_id", "quantity") or None,
        "total_revenue": round(sum(p["price"] * p["quantity"] for p in user.purchases), 2) or None,
    }
    return {k: v for k, v in data.items() if v is not None and (fields is None or k in fields)}


async def _json(request: Request, quota: Quota) -> Any:
    raw = await request.body()
    if not raw:
        raise BrazeError(400, "Bad Request: empty body", headers=quota.headers())
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BrazeError(400, f"Bad Request: invalid JSON ({exc.msg})", headers=quota.headers()) from None


def _json_safe(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))
