"""Drop a client's TCP connection from inside an ASGI app, with no HTTP response.

ASGI has no message for "close the socket without answering": an exception
raised before ``http.response.start`` makes uvicorn answer 500, which is not
what a network failure looks like. uvicorn's ``send`` callable is a bound
method of its per-request cycle object, which holds the asyncio transport, so
we reach the transport through it, set ``SO_LINGER`` to zero (the kernel then
sends an RST instead of a FIN) and abort it. uvicorn notices the lost
connection, marks the cycle disconnected and sends nothing more.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from starlette.types import Receive, Send


class ConnectionDropUnsupported(RuntimeError):
    """The ASGI server is not uvicorn (or changed), so the connection cannot be dropped."""


async def drain_request_body(receive: Receive) -> bytes:
    """Read the whole request body (so the client is not cut off mid-upload)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def drop_connection(send: Send) -> None:
    """Reset the TCP connection behind ``send`` without sending any HTTP bytes."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionDropUnsupported("cannot reach the transport; run the emulator under uvicorn")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            # Linger 0: close() sends RST, so the client fails at once with
            # ECONNRESET rather than reading a clean EOF.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # the socket is already gone: the client sees a closed connection anyway
    transport.abort()
    # connection_lost runs on a later loop iteration; wait for it so uvicorn does
    # not log "ASGI callable returned without starting response" and try a 500.
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)
