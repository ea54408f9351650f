"""Helpers of the hook tests: connection JSON, injected sleeps, a scripted HTTP server."""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

TOKEN = "pat-na1-test-token-0123456789"


def conn_json(conn_type: str, host: str | None, password: str | None = TOKEN, **extra: Any) -> str:
    """An Airflow connection in the JSON form ``AIRFLOW_CONN_<ID>`` accepts."""
    return json.dumps({"conn_type": conn_type, "host": host, "password": password, "extra": extra})


def eventually(check, timeout: float = 2.0):
    """Poll ``check()`` until it is truthy: an emulator logs a dropped request just after the client sees the drop."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.005)


def no_sleep(seconds: float) -> None:
    """Injected instead of time.sleep: retries run instantly."""


class SleepRecorder:
    """An injected sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# --------------------------------------------------------------------- a scripted HTTP server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """What the next requests get: (status, headers, body) tuples, "reset", or ("sleep", s, then)."""

    steps: deque = field(default_factory=deque)
    default: Any = (200, {"Content-Type": "application/json"}, b"{}")
    seen: list[Seen] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.script.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        step = self.script.steps.popleft() if self.script.steps else self.script.default
        if isinstance(step, tuple) and step[0] == "sleep":
            time.sleep(step[1])
            step = step[2]
        if step == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        status, headers, payload = step
        if isinstance(payload, dict | list):
            payload = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a read-timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class ScriptedServer:
    """A tiny threaded HTTP server answering from a script (requests' testserver, in spirit)."""

    def __init__(self) -> None:
        self.script = Script()
        handler = type("Handler", (_Handler,), {"script": self.script})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def then(self, *steps: Any) -> ScriptedServer:
        self.script.steps.extend(steps)
        return self

    @property
    def seen(self) -> list[Seen]:
        return self.script.seen

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
