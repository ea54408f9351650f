"""Any HTTP endpoint: JSON batches, signed with HMAC-SHA256, deduplicated by an idempotency key.

The protocol (the emulator implements the receiving side):

* ``POST <host>`` with ``Content-Type: application/json``,
  ``X-Retl-Timestamp: <unix seconds>``,
  ``X-Retl-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + raw_body)>``
  and ``Idempotency-Key: <string>``;
* body ``{"sync", "object", "action": "upsert"|"delete"|"ping", "batch_id",
  "records": [{"key", "fields"}]}`` (delete: ``[{"key": null, "id"}]``);
* a 2xx answer with an empty body means all ok, ids unknown; any other 2xx body must be
  ``{"results": [{"ok": true, "id": ...} | {"ok": false, "error": ...}]}``, one entry per
  record in request order. A body that breaks this contract (not JSON, no ``results``, not a
  list, a different length, entries without a boolean ``ok``) leaves the outcome of the batch
  UNKNOWN: ``OutcomeUnknownError``, nothing of it is checkpointed, and the next try re-sends it
  under the same idempotency key (the receiver answers its stored result, it applies nothing twice).

The idempotency key is a hash of the batch content, so a resend of the same
batch (a retry after a timeout, or the next try of the task) carries the same
key and the receiver applies it once. Every call is therefore safe to retry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import orjson
import requests

from airflow_provider_retl.destinations.webhook.spec import SPEC
from airflow_provider_retl.hooks.destination import DestinationHook, _json_default, excerpt
from airflow_provider_retl.sync.errors import BatchRejectedError, FatalDestinationError, OutcomeUnknownError
from airflow_provider_retl.sync.records import Outcome, Record

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["WebhookHook", "sign"]

SIGNATURE_HEADER = "X-Retl-Signature"
TIMESTAMP_HEADER = "X-Retl-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Answers about the endpoint, not the records: no URL path there, no POST there, gone.
WRONG_ENDPOINT_STATUSES = (404, 405, 410)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Retl-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookHook(DestinationHook):
    """POST JSON batches to the URL in the connection's ``host``, signed with the secret in ``password``.

    :param webhook_conn_id: the connection (``host``: the full endpoint URL).
    :param sync_id: the sync's name, sent as ``sync`` (the operator sets it; default: the conn id).
    """

    spec = SPEC

    #: Webhook URLs carry their credential in the path or query (Slack, Zapier, Discord ...).
    url_path_is_secret: ClassVar[bool] = True

    def __init__(
        self,
        webhook_conn_id: str = SPEC.default_conn_name,
        *,
        sync_id: str | None = None,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(webhook_conn_id, **kwargs)
        self.sync_id = sync_id
        #: Optional extra input of the idempotency key (e.g. the DAG run id): same scope + same content
        #: -> same key. Unset, identical content is deduplicated for as long as the receiver remembers keys.
        self.idempotency_scope: str | None = None
        self._clock = clock

    @property
    def display_url(self) -> str:
        """Scheme and host only: webhook URLs often carry a secret in their path (Slack, Zapier ...)."""
        parts = urlsplit(self.base_url)
        hidden = "/..." if parts.path.strip("/") or parts.query else ""
        return f"{parts.scheme}://{parts.netloc}{hidden}" if parts.netloc else self.base_url

    def _call_name(self, method: str, url: str) -> str:
        return f"{self.hook_name} {method} {self.display_url}"

    @property
    def sync_name(self) -> str:
        return self.sync_id or self.destination_conn_id

    # ------------------------------------------------------------------ connection

    def _configure_auth(self, session: requests.Session, conn: Connection) -> None:
        """The password is the signing secret; it is never sent."""
        if conn.password:
            self._register_secret(conn.password)
        else:
            self.log.warning("connection %r has no signing secret: requests go out unsigned", self.destination_conn_id)

    def _attempt_headers(self, body: bytes) -> dict[str, str]:
        # Signed per attempt: a resend carries a fresh timestamp, so receivers may reject stale ones.
        timestamp = str(int(self._clock()))
        headers = {TIMESTAMP_HEADER: timestamp}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    # ------------------------------------------------------------------ capabilities

    # ------------------------------------------------------------------ calls

    def upsert(self, object: str, records: Sequence[Record], match_field: str | None = None) -> list[Outcome]:
        """Send the engine's batch as one ``upsert`` call; the receiver creates or updates by ``key``."""
        if not records:
            return []
        return self.send_batch(object, "upsert", [{"key": r.key, "fields": r.fields} for r in records])

    def create(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """A webhook has one write action: creates are sent as ``upsert`` (the key makes them safe)."""
        return self.upsert(object, records)

    def update(self, object: str, records: Sequence[Record]) -> list[Outcome]:
        """A webhook has one write action: updates are sent as ``upsert``."""
        return self.upsert(object, records)

    def delete(self, object: str, dest_ids: Sequence[str]) -> list[Outcome]:
        """Send ``delete`` batches by the ids the receiver returned; records without one are rejected."""
        outcomes: list[Outcome | None] = [None] * len(dest_ids)
        positions = []
        for i, dest_id in enumerate(dest_ids):
            if dest_id in (None, ""):
                outcomes[i] = Outcome.failure(
                    "cannot delete through the webhook: the receiver never returned an id for this record "
                    "(deletes need the 'id' of its upsert result)",
                    "NO_ID",
                )
            else:
                positions.append(i)
        if positions:
            items = [{"key": None, "id": str(dest_ids[i])} for i in positions]
            for i, outcome in zip(positions, self.send_batch(object, "delete", items), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def send_batch(self, object: str, action: str, items: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """POST one batch; per-record outcomes in input order."""
        key = self.idempotency_key(object, action, items)
        body = {"sync": self.sync_name, "object": object, "action": action, "batch_id": key, "records": list(items)}
        try:
            response = self.request("POST", "", json=body, headers={IDEMPOTENCY_HEADER: key}, idempotent=True)
        except BatchRejectedError as err:
            if err.status in WRONG_ENDPOINT_STATUSES:
                # The URL (or its method) is wrong, not the records: every batch and every retry would fail.
                raise FatalDestinationError(
                    f"{err} (the webhook URL does not take POSTs: check the host of connection "
                    f"{self.destination_conn_id!r}; a retry cannot fix this)",
                    status=err.status,
                    response=err.response,
                    request=err.request,
                ) from err
            text = err.response.text if err.response is not None else ""
            reason = f"webhook receiver answered {err.status}: {excerpt(self.redact(text))}"
            return self.reject_all(len(items), self.redact(reason), str(err.status))
        return self._outcomes(response, items, action, what=self._call_name("POST", self.base_url))

    def idempotency_key(self, object: str, action: str, items: Sequence[Mapping[str, Any]]) -> str:
        """A hash of the batch content: the same batch always gets the same key."""
        content = {
            "sync": self.sync_name,
            "scope": self.idempotency_scope,
            "object": object,
            "action": action,
            "records": list(items),
        }
        canonical = orjson.dumps(content, default=_json_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        return hashlib.sha256(canonical).hexdigest()

    def _outcomes(
        self, response: requests.Response, items: Sequence[Mapping[str, Any]], action: str, *, what: str = "Webhook"
    ) -> list[Outcome]:
        """Per-record outcomes from a 2xx answer; an answer outside the contract is an unknown outcome."""
        if not response.content.strip():
            # Documented: an empty 2xx means every record was applied (the receiver returns no ids).
            if action == "delete":
                return [Outcome.success(str(item["id"])) for item in items]
            return [Outcome.success() for _ in items]
        results = _results(self.response_json(response))
        problem = _contract_problem(results, len(items))
        if problem is not None:
            # The receiver may have applied some, all or none of the batch: never count it as
            # sent. The next try re-sends it under the same idempotency key (applied once).
            raise OutcomeUnknownError(
                self.redact(
                    f"{what} -> {response.status_code} but {problem}; the outcome of the batch of {len(items)} "
                    'records is unknown (the receiver must answer {"results": [{"ok": true, "id": ...} | '
                    '{"ok": false, "error": ...}]}, one per record in order, or an empty body)'
                ),
                status=response.status_code,
                response=response,
                request=response.request,
            )
        assert results is not None  # checked by _contract_problem
        outcomes: list[Outcome] = []
        for item, result in zip(items, results, strict=True):
            if result["ok"]:
                dest_id = result.get("id")
                if dest_id is None and action == "delete":
                    dest_id = item.get("id")
                outcomes.append(Outcome.success(str(dest_id) if dest_id is not None else None))
            else:
                reason = str(result.get("error") or "rejected by the receiver (no error given)")
                code = result.get("code")
                outcomes.append(Outcome.failure(excerpt(self.redact(reason)), str(code) if code is not None else None))
        return outcomes

    def _test_call(self) -> None:
        self.send_ping()

    def send_ping(self) -> requests.Response:
        """A signed ``ping`` (what the Test button sends)."""
        body = {"sync": self.sync_name, "object": "ping", "action": "ping", "batch_id": "ping", "records": []}
        key = f"ping-{int(self._clock())}"
        return self.request("POST", "", json=body, headers={IDEMPOTENCY_HEADER: key}, idempotent=True, retry=False)


def _results(data: Any) -> Any:
    return data.get("results", _MISSING) if isinstance(data, Mapping) else _NOT_AN_OBJECT


_MISSING: Any = object()
_NOT_AN_OBJECT: Any = object()


def _contract_problem(results: Any, expected: int) -> str | None:
    """What is wrong with a 2xx answer's ``results`` (None when it is the documented list)."""
    if results is _NOT_AN_OBJECT:
        return "the body is not a JSON object"
    if results is _MISSING:
        return "the body has no 'results'"
    if not isinstance(results, list):
        return f"'results' is a {type(results).__name__}, not a list"
    if len(results) != expected:
        return f"'results' has {len(results)} entries for {expected} records"
    for n, result in enumerate(results):
        if not isinstance(result, Mapping):
            return f"results[{n}] is a {type(result).__name__}, not an object"
        if not isinstance(result.get("ok"), bool):
            return f"results[{n}] has no boolean 'ok'"
        dest_id = result.get("id")
        if result["ok"] and dest_id is not None and not isinstance(dest_id, str | int):
            return f"results[{n}] has an 'id' that is not a string"
    return None
