"""A tiny SMTP server on 127.0.0.1 for tests: it accepts every message and keeps it.

Enough of RFC 5321 for ``smtplib`` (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), no TLS,
no auth. Used as a context manager; ``messages`` holds each message as an
``email.message.EmailMessage`` and ``raw`` its bytes as received.
"""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from email.message import EmailMessage
from typing import Any


class SmtpSink:
    """``with SmtpSink() as sink: ... sink.port ... sink.messages``."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.messages: list[EmailMessage] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 sink")
                    elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = bytearray()
                        while True:
                            chunk = self.rfile.readline()
                            if not chunk or chunk == b".\r\n":
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        sink.raw.append(bytes(data))
                        sink.messages.append(
                            email.message_from_bytes(bytes(data), policy=email.policy.default)  # type: ignore[arg-type]
                        )
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmtpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[str]:
        """Every message's text parts, decoded (HTML parts included)."""
        out = []
        for message in self.messages:
            parts = message.walk() if message.is_multipart() else [message]
            out.append("\n".join(p.get_content() for p in parts if p.get_content_maintype() == "text"))
        return out
