"""What every emulator shares: the ASGI entry point, fault injection, the request
log and the ``/_emulator`` admin routes.

An emulator object is itself the ASGI app. Requests under ``/_emulator`` go to
the admin routes (no auth, no faults, not logged); every other request is an
API request: it is logged, may be hit by a fault, and is then handed to the
subclass's API app.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # the emulators' ASGI types, imported from here

from airflow_provider_retl.testing.emulators.connection import drain_request_body, drop_connection
from airflow_provider_retl.testing.emulators.faults import Faults
from airflow_provider_retl.testing.emulators.requestlog import LoggedRequest, RequestLog

ADMIN_PREFIX = "/_emulator"


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson (fast, and strict about types)."""
    return Response(
        content=orjson.dumps(body), status_code=status, media_type="application/json", headers=dict(headers or {})
    )


def correlation_id() -> str:
    """A fresh id for an error body, as real APIs return for support requests."""
    return str(uuid.uuid4())


class BaseEmulator:
    """Base class of the emulators: an ASGI app with faults, a request log and admin routes.

    Subclasses implement ``build_api`` (the API app), ``state`` (JSON of the
    stored data), ``reset_state``, and may override ``fault_error_body`` and
    ``fault_rate_limit`` to give injected faults the API's own error shapes.
    """

    kind: ClassVar[str] = "base"

    def __init__(self, faults: Faults | None = None, keep_requests: int = 1000) -> None:
        self.faults = faults if faults is not None else Faults()
        self.request_log = RequestLog(keep=keep_requests)
        # Handlers run on the server's event-loop thread while tests read state from
        # the main thread: every access to stored data holds this lock.
        self.lock = threading.RLock()
        self._api: ASGIApp = self.build_api()
        self._admin = self._build_admin()

    # -- subclass override points -------------------------------------------------

    def build_api(self) -> ASGIApp:
        """The API app (routes of the emulated service)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """JSON-ready view of the stored data, served by ``GET /_emulator/state``."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget stored data (records, counters, rate-limit windows)."""
        raise NotImplementedError

    def fault_error_body(self, status: int) -> dict[str, Any]:
        """Body of an injected 5xx."""
        return {"status": "error", "message": "Internal error (injected fault)", "correlationId": correlation_id()}

    def fault_rate_limit(self, retry_after: float) -> tuple[dict[str, Any], dict[str, str]]:
        """Body and headers of an injected 429."""
        return {"status": "error", "message": "Too many requests (injected fault)"}, {}

    # -- public helpers -----------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """The last API requests (method, path, status, fault), oldest first."""
        return self.request_log.entries()

    def request_count(self, route: str | None = None, status: int | None = None) -> int:
        """API requests so far; ``route`` is ``"POST /path"`` or ``"/path"``."""
        return self.request_log.count(route, status)

    def reset(self) -> None:
        """Back to the starting point: no data, no logged requests, no faults."""
        self.reset_state()
        self.request_log.clear()
        self.faults.clear()

    # -- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"].startswith(ADMIN_PREFIX):
            await self._admin(scope, receive, send)
            return
        await self._serve_api(scope, receive, send)

    async def _serve_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.time()
        decision = self.faults.decide()
        seen_status = 0
        logged = False

        def log_once() -> None:
            # Logged before the last byte goes out (or the socket is dropped), so a
            # client that got its answer always finds the request in the log.
            nonlocal logged
            if not logged:
                logged = True
                self.request_log.add(scope["method"], scope["path"], seen_status, started, decision.kind)

        async def send_and_watch(message: Message) -> None:
            nonlocal seen_status
            if message["type"] == "http.response.start":
                seen_status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log_once()
            await send(message)

        try:
            if decision.latency:
                await asyncio.sleep(decision.latency)
            kind = decision.kind
            if kind == "reset":
                await drain_request_body(receive)
                log_once()
                await drop_connection(send)
            elif kind == "error":
                await drain_request_body(receive)
                body = self.fault_error_body(decision.status or 500)
                await json_response(decision.status or 500, body)(scope, receive, send_and_watch)
            elif kind == "rate_limit":
                await drain_request_body(receive)
                body, headers = self.fault_rate_limit(decision.retry_after)
                headers = {"Retry-After": str(max(1, round(decision.retry_after))), **headers}
                await json_response(429, body, headers)(scope, receive, send_and_watch)
            elif kind == "lost_response":
                # Apply the request for real, throw the answer away, reset the socket.
                await self._api(scope, receive, _discard)
                log_once()
                await drop_connection(send)
            elif kind == "malformed":
                captured = _Capture()
                await self._api(scope, receive, captured)
                await _send_malformed(captured.body, send_and_watch)
            elif kind == "timeout":
                # The client sent the whole request before it started waiting: read it now,
                # so the write can land however long the answer is withheld (a late read
                # would find the client gone and apply nothing).
                replay = _Replay(await drain_request_body(receive), receive)
                captured = _Capture()
                await asyncio.sleep(decision.apply_after)
                await self._api(scope, replay, captured)
                await asyncio.sleep(max(0.0, decision.delay - decision.apply_after))
                await captured.replay(send_and_watch)  # uvicorn drops it if the client hung up
            else:
                await self._api(scope, receive, send_and_watch)
        except asyncio.CancelledError:
            # The server is stopping while this request stalls (a timeout fault):
            # drop the socket quietly instead of letting uvicorn log a traceback.
            _abort_quietly(send)
        finally:
            log_once()

    def _build_admin(self) -> FastAPI:
        admin = FastAPI(title=f"{self.kind} emulator admin", openapi_url=None, docs_url=None, redoc_url=None)

        @admin.get(f"{ADMIN_PREFIX}/health")
        async def health() -> Response:
            return json_response(200, {"ok": True, "kind": self.kind})

        @admin.get(f"{ADMIN_PREFIX}/state")
        async def get_state() -> Response:
            return json_response(200, self.state())

        @admin.get(f"{ADMIN_PREFIX}/requests")
        async def get_requests(last: int = 100) -> Response:
            return json_response(200, self.request_log.snapshot(last))

        @admin.post(f"{ADMIN_PREFIX}/reset")
        async def post_reset() -> Response:
            self.reset()
            return json_response(200, {"ok": True})

        @admin.get(f"{ADMIN_PREFIX}/faults")
        async def get_faults() -> Response:
            return json_response(200, self.faults.to_dict())

        @admin.post(f"{ADMIN_PREFIX}/faults")
        async def post_faults(request: Request) -> Response:
            try:
                changes = orjson.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object of fault fields")  # noqa: TRY004 - answered as a 400 below
                if changes.pop("clear", False):
                    self.faults.clear()
                self.faults.update(**changes)
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return json_response(400, {"error": str(exc)})
            return json_response(200, self.faults.to_dict())

        return admin


class _Capture:
    """An ASGI ``send`` that keeps the response instead of sending it."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def replay(self, send: Send) -> None:
        """Send the kept response as it was."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class _Replay:
    """An ASGI ``receive`` that hands out a body read earlier, then defers to the real one."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


async def _discard(message: Message) -> None:
    return None


async def _send_malformed(body: bytes, send: Send) -> None:
    # Half of the real body is never valid JSON for an object or array; an empty
    # body (a 204) gets a lone opening brace instead.
    broken = body[: len(body) // 2] if len(body) > 2 else b'{"results": ['
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(broken)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": broken, "more_body": False})


def _abort_quietly(send: Send) -> None:
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        # What uvicorn's connection_lost would set on the next loop turn, which
        # may never come while the loop shuts down.
        cycle.disconnected = True  # type: ignore[union-attr]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
