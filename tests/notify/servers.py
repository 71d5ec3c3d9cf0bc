"""Servers that notification tests start on 127.0.0.1: an SMTP server (aiosmtpd) and a webhook receiver.

Both run in threads of the test process and are stopped by the test that started them.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from etlb.errors import SignatureError
from etlb.notify import SIGNATURE_HEADER, verify_notification


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mailbox:
    """Messages the SMTP server accepted, as parsed e-mails."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted"


@contextmanager
def smtp_server(*, username: str | None = None, password: str | None = None) -> Iterator[tuple[int, Mailbox]]:
    """Run an SMTP server on 127.0.0.1; with a username it requires AUTH LOGIN or PLAIN with that password."""
    mailbox = Mailbox()
    options: dict[str, Any] = {}
    if username is not None:

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            accepted = isinstance(data, LoginPassword) and (data.login, data.password) == (
                username.encode(),
                (password or "").encode(),
            )
            # handled=False makes the server send the 535 reply itself when the password is wrong.
            return AuthResult(success=accepted, handled=False)

        # Plain-text AUTH is allowed only because the server listens on the loopback address.
        options = {"authenticator": authenticate, "auth_require_tls": False, "auth_required": True}
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@dataclass
class Receiver:
    """A webhook receiver that verifies the gate's signature on every request, as a real one must."""

    gate_jwk: dict[str, str]
    port: int = 0
    status: int = 204
    bodies: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    receiver.bodies.append(verify_notification(body, self.headers[SIGNATURE_HEADER], receiver.gate_jwk))
                except SignatureError as error:
                    receiver.rejected.append(error.message)
                    self.send_response(401)
                else:
                    self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/etlb"

    def binding_ids(self) -> list[list[str]]:
        return [[binding["binding_id"] for binding in body["bindings"]] for body in self.bodies]
