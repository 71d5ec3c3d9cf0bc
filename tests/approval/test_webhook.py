"""The approval webhook: each new request reaches a receiver on 127.0.0.1, signed by the gate.

A receiver that is down changes nothing: the request stays pending until its deadline.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from etlb.approval.webhook import SIGNATURE_HEADER, verify_request_body
from etlb.errors import ApprovalPending, Refused, SignatureError
from etlb.model import ReasonCode, ToolCall
from etlb.signing import load_private_key, public_jwk
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, World, build_world

pytestmark = both_backends

TRANSFER = ToolCall(
    tool="transfer", server="bank", arguments={"from_account": "DE89-0001", "amount": "900", "currency": "EUR"}
)


class Receiver(HTTPServer):
    """An approval webhook receiver that keeps every POST it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[bytes, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/approvals"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((body, self.headers.get(SIGNATURE_HEADER, "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def approvals_world(tmp_path: Path, backend: Backend, url: str) -> World:
    config = PAYMENTS_CONFIG + (
        f'[approvals]\nwait = false\nwebhook_url = "{url}"\npage_url = "http://127.0.0.1:8470"\n'
        '[[approvals.routes]]\nkinds = ["payments.*"]\napprovers = ["bob"]\n'
    )
    world = build_world(tmp_path, config, backend)
    world.add_bearer("bob")
    return world


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed.
    return f"http://127.0.0.1:{port}/approvals"


def test_new_request_posted_and_signed(tmp_path: Path, backend: Backend, receiver: Receiver) -> None:
    world = approvals_world(tmp_path, backend, receiver.url)

    with pytest.raises(ApprovalPending) as caught:
        world.gate.bind(TRANSFER)

    [(body, signature)] = receiver.received
    gate_jwk = public_jwk(load_private_key(tmp_path / "etlb-gate.key"))
    request = verify_request_body(body, signature, gate_jwk)
    assert request["request_id"] == caught.value.request_id
    assert request["page"] == f"http://127.0.0.1:8470/approvals/{caught.value.request_id}"
    assert request["action"]["digest"] == caught.value.refusal.action.digest
    assert request["approvers"] == ["bob"]
    assert request["status"] == "pending"
    altered = body.replace(b'"900"', b'"9"')
    with pytest.raises(SignatureError):
        verify_request_body(altered, signature, gate_jwk)
    world.gate.close()


def test_receiver_down_leaves_request_pending_until_deadline(tmp_path: Path, backend: Backend) -> None:
    world = approvals_world(tmp_path, backend, closed_port_url())

    with pytest.raises(ApprovalPending) as caught:
        world.gate.bind(TRANSFER)
    request_id = caught.value.request_id

    assert world.gate.approval(request_id).pending
    world.clock.advance(seconds=901)
    with pytest.raises(Refused) as refused:
        world.gate.resume(request_id)
    assert refused.value.code is ReasonCode.APPROVAL_TIMED_OUT
    records = [json.loads(entry.record) for entry in world.gate.store.ledger_entries()]
    assert [record["type"] for record in records[-3:]] == ["approval.requested", "refusal", "approval.closed"]
    assert records[-1]["data"]["status"] == "timed_out"
    world.gate.close()
