"""Run an ASGI app with uvicorn in a background thread, on a real socket.

``EmulatorServer`` binds its socket itself before starting uvicorn, so with
``port=0`` the kernel picks a free port and ``.url`` is known at once: no race
between choosing a port and binding it, which matters when tests run in
parallel (``pytest -n``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

logger = logging.getLogger(__name__)


class EmulatorServer:
    """A uvicorn server in a daemon thread; a context manager (``with EmulatorServer(app) as srv``).

    ``stop()`` is fast (milliseconds): it does not wait for in-flight requests
    (a request stalled by a timeout fault is dropped), and joins the thread.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        http: str = "auto",
        startup_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._log_level = log_level
        self._http = http
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the real port once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Bind, start uvicorn in a thread and wait until it accepts connections."""
        if self.running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(False)
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            http=self._http,
            # Keep-alive long enough for a client's connection pool, short enough
            # that idle sockets do not pile up in long benchmark runs.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self._cleanup_socket()
                raise RuntimeError(f"emulator server failed to start on {self.url}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"emulator server did not start within {self._startup_timeout}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        loop, event, thread = self._loop, self._stop_requested, self._thread
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop already ended (the server thread failed)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("emulator server thread %s did not stop within %ss", thread.name, timeout)
        self._thread = None
        self._server = None
        self._loop = None
        self._stop_requested = None
        self._cleanup_socket()

    def _run(self) -> None:
        assert self._server is not None
        config = self._server.config
        get_loop_factory = getattr(config, "get_loop_factory", None)
        if get_loop_factory is not None:
            loop_factory = get_loop_factory()
        else:  # uvicorn < 0.36
            config.setup_event_loop()
            loop_factory = None
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - SystemExit from uvicorn on startup failure included
            self._error = exc

    async def _serve(self) -> None:
        # uvicorn's own serve() polls should_exit every 0.1 s and then sleeps
        # 0.1 s in shutdown; tests start and stop hundreds of servers, so we run
        # its startup and do a quick shutdown of our own.
        server = self._server
        assert server is not None and self._socket is not None
        config = server.config
        if not config.loaded:
            config.load()
        server.lifespan = config.lifespan_class(config)
        self._stop_requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await server.startup(sockets=[self._socket])
        await self._stop_requested.wait()
        for listener in server.servers:
            listener.close()
        # Idle keep-alive connections and requests stalled by a timeout fault are
        # cut at once; the emulator's handler resets stalled sockets on cancel.
        for task in list(server.server_state.tasks):
            task.cancel()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)

    def _cleanup_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorServer({self.url}, running={self.running})"
