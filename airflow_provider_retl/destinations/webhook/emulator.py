"""A webhook receiver that checks signatures, deduplicates retries and applies batches.

Protocol (the provider's webhook hook follows it exactly)
----------------------------------------------------------

Request: ``POST`` to any path, with headers

- ``Content-Type: application/json``
- ``X-Retl-Timestamp: <unix seconds, integer>``
- ``X-Retl-Signature: sha256=<hex>`` where ``<hex>`` is
  ``HMAC-SHA256(key=secret.encode(), msg=f"{timestamp}.".encode() + raw_body).hexdigest()``
  over the exact bytes of the body
- ``Idempotency-Key: <string>`` (required): the same key for every retry of one batch

and a JSON body::

    {"sync": str, "object": str, "action": "upsert" | "delete" | "ping",
     "batch_id": str,
     "records": [{"key": str, "fields": {...}}]}        # upsert
     "records": [{"key": str | null, "id": str}]        # delete
     "records": []                                       # ping (may be empty)

Answers:

- 401 ``{"error": ...}``: missing or wrong signature, or a timestamp further than
  ``tolerance`` seconds (default 300) from the receiver's clock.
- 400 ``{"error": ..., "path": ...}``: missing ``Idempotency-Key``, a body that is
  not JSON or not of the shape above (``path`` points at the offending field).
- 422 ``{"error": ...}``: an ``Idempotency-Key`` reused with a different body.
- 200 ``{"results": [...]}``, one entry per record in request order:
  ``{"ok": true, "id": "<id>"}`` or ``{"ok": false, "error": "<reason>"}``. The id
  is stable per (object, key): the same key always gets the same id; a delete
  answers with the id it deleted (unknown ids are ok: delete is idempotent).
- A request whose ``Idempotency-Key`` was already answered 200 gets the stored
  answer again and is not applied twice (counted in ``replays``).

A record can be refused on purpose: ``reject_marker`` refuses upserts whose
field values contain that text; ``reject`` is any callable
``(record) -> error message | None``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from airflow_provider_retl.testing.emulators.base import ASGIApp, BaseEmulator, json_response
from airflow_provider_retl.testing.emulators.faults import Faults

SIGNATURE_HEADER = "X-Retl-Signature"
TIMESTAMP_HEADER = "X-Retl-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ACTIONS = ("upsert", "delete", "ping")

RejectRule = Callable[[Mapping[str, Any]], str | None]


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Retl-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: bytes, idempotency_key: str, timestamp: int | None = None) -> dict[str, str]:
    """All headers of a valid request (for tests and clients of the receiver)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, body),
        IDEMPOTENCY_HEADER: idempotency_key,
    }


class PayloadError(ValueError):
    """The body is not of the protocol's shape; ``path`` names the offending field."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


@dataclass
class _Stored:
    """An answered request, kept for replays under its Idempotency-Key."""

    payload: Any
    response: dict[str, Any]


@dataclass
class WebhookStats:
    """Counters of what the receiver saw."""

    batches_applied: int = 0
    pings: int = 0
    replays: int = 0
    replay_mismatches: int = 0
    signature_failures: int = 0
    bad_requests: int = 0
    records_upserted: int = 0
    records_rejected: int = 0
    records_deleted: int = 0
    actions: dict[str, int] = field(default_factory=dict)


class WebhookReceiver(BaseEmulator):
    """State and app of a webhook receiver speaking the protocol in this module's docstring."""

    kind = "webhook"

    def __init__(
        self,
        secret: str = "s3cret",
        *,
        reject_marker: str | None = None,
        reject: RejectRule | None = None,
        tolerance: float | None = 300.0,
        faults: Faults | None = None,
        keep_requests: int = 1000,
    ) -> None:
        self.secret = secret
        self.reject_marker = reject_marker
        self.reject = reject
        self.tolerance = tolerance
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], str] = {}
        self._keys_by_id: dict[str, tuple[str, str]] = {}
        self._deleted: list[str] = []
        self._responses: dict[str, _Stored] = {}
        self._batches: list[dict[str, Any]] = []
        self.stats = WebhookStats()
        super().__init__(faults=faults, keep_requests=keep_requests)

    # -- Python inspection API ----------------------------------------------------

    def records(self, object: str | None = None) -> dict[str, dict[str, Any]]:
        """Current records as ``{key: fields}`` (one object, or all objects merged)."""
        with self.lock:
            return {key: dict(fields) for (obj, key), fields in self._records.items() if object in (None, obj)}

    def record_id(self, key: str, object: str | None = None) -> str | None:
        """The id given to ``key`` (None if it was never upserted)."""
        with self.lock:
            for (obj, k), record_id in self._ids.items():
                if k == key and object in (None, obj):
                    return record_id
            return None

    @property
    def deleted_ids(self) -> list[str]:
        """Ids deleted so far, in order (repeats included)."""
        with self.lock:
            return list(self._deleted)

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Applied batches (sync, object, action, batch_id, size, idempotency key), in order."""
        with self.lock:
            return list(self._batches)

    @property
    def batches_applied(self) -> int:
        """Upsert/delete batches applied (replays and pings not counted)."""
        return self.stats.batches_applied

    @property
    def replays(self) -> int:
        """Requests answered from the idempotency store instead of being applied."""
        return self.stats.replays

    @property
    def signature_failures(self) -> int:
        """Requests refused with 401."""
        return self.stats.signature_failures

    def state(self) -> dict[str, Any]:
        """Records, deleted ids and counters, for ``GET /_emulator/state``."""
        with self.lock:
            objects: dict[str, dict[str, Any]] = {}
            for (obj, key), fields in self._records.items():
                objects.setdefault(obj, {})[key] = {"id": self._ids[(obj, key)], "fields": fields}
            return {
                "records": objects,
                "deleted_ids": list(self._deleted),
                "stats": self.stats.__dict__ | {"actions": dict(self.stats.actions)},
                "idempotency_keys": len(self._responses),
            }

    def reset_state(self) -> None:
        """Forget records, ids, stored responses and counters."""
        with self.lock:
            self._records.clear()
            self._ids.clear()
            self._keys_by_id.clear()
            self._deleted.clear()
            self._responses.clear()
            self._batches.clear()
            self.stats = WebhookStats()

    def fault_error_body(self, status: int) -> dict[str, Any]:
        """Body of an injected 5xx."""
        return {"error": f"injected fault: HTTP {status}"}

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        """Body of an injected 429."""
        return {"error": "rate limited (injected fault)"}, {}

    # -- the API app ----------------------------------------------------------------

    def build_api(self) -> ASGIApp:
        """One route: ``POST`` on any path."""
        app = FastAPI(title="Webhook receiver emulator", openapi_url=None, docs_url=None, redoc_url=None)

        @app.post("/{path:path}")
        async def receive(path: str, request: Request) -> Response:
            return self.handle(await request.body(), request.headers)

        return app

    def handle(self, raw: bytes, headers: Mapping[str, str]) -> Response:
        """Check, deduplicate and apply one request (the whole protocol, without HTTP)."""
        problem = self._check_signature(raw, headers)
        if problem is not None:
            with self.lock:
                self.stats.signature_failures += 1
            return json_response(401, {"error": problem})
        key = headers.get(IDEMPOTENCY_HEADER)
        if not key:
            return self._bad_request(PayloadError(f"missing {IDEMPOTENCY_HEADER} header", IDEMPOTENCY_HEADER))
        try:
            payload = orjson.loads(raw)
            _check_payload(payload)
        except orjson.JSONDecodeError as exc:
            return self._bad_request(PayloadError(f"body is not valid JSON: {exc}"))
        except PayloadError as exc:
            return self._bad_request(exc)
        with self.lock:
            stored = self._responses.get(key)
            if stored is not None:
                if stored.payload != payload:
                    self.stats.replay_mismatches += 1
                    return json_response(422, {"error": f"{IDEMPOTENCY_HEADER} {key!r} was used with a different body"})
                self.stats.replays += 1
                return json_response(200, stored.response)
            response = {"results": self._apply(payload, key)}
            self._responses[key] = _Stored(payload, response)
        return json_response(200, response)

    def _check_signature(self, raw: bytes, headers: Mapping[str, str]) -> str | None:
        signature = headers.get(SIGNATURE_HEADER)
        stamp = headers.get(TIMESTAMP_HEADER)
        if not signature or not stamp:
            return f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header"
        try:
            sent_at = int(stamp)
        except ValueError:
            return f"{TIMESTAMP_HEADER} must be an integer number of seconds"
        if self.tolerance is not None and abs(time.time() - sent_at) > self.tolerance:
            return f"{TIMESTAMP_HEADER} is more than {self.tolerance:g}s away from the receiver's clock"
        if not hmac.compare_digest(signature, sign(self.secret, stamp, raw)):
            return "signature does not match"
        return None

    def _bad_request(self, exc: PayloadError) -> Response:
        with self.lock:
            self.stats.bad_requests += 1
        return json_response(400, {"error": str(exc), "path": exc.path})

    def _apply(self, payload: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        action, obj = payload["action"], payload["object"]
        self.stats.actions[action] = self.stats.actions.get(action, 0) + 1
        if action == "ping":
            self.stats.pings += 1
            return []
        results = [self._upsert(obj, r) if action == "upsert" else self._delete(obj, r) for r in payload["records"]]
        self.stats.batches_applied += 1
        self._batches.append(
            {
                "sync": payload["sync"],
                "object": obj,
                "action": action,
                "batch_id": payload["batch_id"],
                "size": len(payload["records"]),
                "idempotency_key": key,
            }
        )
        return results

    def _upsert(self, obj: str, record: Mapping[str, Any]) -> dict[str, Any]:
        reason = self._rejection(record)
        if reason is not None:
            self.stats.records_rejected += 1
            return {"ok": False, "error": reason}
        slot = (obj, record["key"])
        record_id = self._ids.get(slot)
        if record_id is None:
            # Stable per (object, key), also across receiver restarts.
            record_id = "wh_" + hashlib.sha256(f"{obj}\x00{record['key']}".encode()).hexdigest()[:16]
            self._ids[slot] = record_id
            self._keys_by_id[record_id] = slot
        self._records[slot] = dict(record["fields"])
        self.stats.records_upserted += 1
        return {"ok": True, "id": record_id}

    def _delete(self, obj: str, record: Mapping[str, Any]) -> dict[str, Any]:
        record_id = record["id"]
        slot = self._keys_by_id.get(record_id)
        if slot is not None:
            self._records.pop(slot, None)
        self._deleted.append(record_id)
        self.stats.records_deleted += 1
        return {"ok": True, "id": record_id}

    def _rejection(self, record: Mapping[str, Any]) -> str | None:
        if self.reject is not None:
            reason = self.reject(record)
            if reason:
                return str(reason)
        marker = self.reject_marker
        if marker and any(marker in str(v) for v in record["fields"].values()):
            return f"rejected: a field contains {marker!r}"
        return None


def _check_payload(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object")
    for name in ("sync", "object", "batch_id"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise PayloadError(f"{name} must be a non-empty string", name)
    action = payload.get("action")
    if action not in ACTIONS:
        raise PayloadError(f"action must be one of {', '.join(ACTIONS)}", "action")
    records = payload.get("records")
    if not isinstance(records, list):
        raise PayloadError("records must be a list", "records")
    for position, record in enumerate(records):
        where = f"records[{position}]"
        if not isinstance(record, dict):
            raise PayloadError("each record must be an object", where)
        if action == "upsert":
            if not isinstance(record.get("key"), str) or not record["key"]:
                raise PayloadError("key must be a non-empty string", f"{where}.key")
            if not isinstance(record.get("fields"), dict):
                raise PayloadError("fields must be an object", f"{where}.fields")
        elif action == "delete":
            if not isinstance(record.get("id"), str) or not record["id"]:
                raise PayloadError("id must be a non-empty string", f"{where}.id")
            if "key" in record and record["key"] is not None and not isinstance(record["key"], str):
                raise PayloadError("key must be a string or null", f"{where}.key")
