"""`etlb.client.Client` against a real `etlb serve` process, and against servers that fail.

The service runs as a uvicorn process on 127.0.0.1 and a free port, and is stopped by its pid. The
failing servers are small sockets on 127.0.0.1 in this process: nothing listening, a listener that
never responds, and an HTTP server that responds with errors or garbage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest

from etlb.client import Client
from etlb.config import parse_config
from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.errors import BindingConsumed, ConfigError, Refused
from etlb.gate import Gate
from etlb.gate_key import create_gate_key, verifier_path
from etlb.ledger.checkpoint import parse_verifier_key
from etlb.ledger.receipt import verify_receipt
from etlb.model import Bearer, BearerKey, Limits, Outcome, OutcomeStatus, ReasonCode, ToolCall
from etlb.signing import generate_private_key, key_id, public_jwk, sign_payload
from etlb.store.sqlite import SQLiteStore
from tests.conftest import PAYMENTS_CONFIG
from tests.server.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def transfer(amount: str) -> ToolCall:
    return ToolCall(
        server="bank", tool="transfer", arguments={"from_account": "DE89-1", "amount": amount, "currency": "EUR"}
    )


def commit(message: str = "fix") -> ToolCall:
    return ToolCall(server="git", tool="git_commit", arguments={"repo_path": "/srv/app", "message": message})


@dataclass
class LiveService:
    url: str
    folder: Path
    agent_key: str
    scope_id: str

    def client(self, **options: Any) -> Client:
        return Client(self.url, self.agent_key, **options)

    def binding_state(self, binding_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        response = httpx.get(f"{self.url}/v1/bindings/{binding_id}", headers=headers, timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


def prepare_gate(folder: Path) -> tuple[str, str]:
    """Create the store, a bearer with two scopes valid now, and an agent.

    Returns the agent's API key and the id of the transfer scope (at most 100 EUR per transfer).
    """
    config_path = folder / "etlb.toml"
    config_path.write_text(PAYMENTS_CONFIG, encoding="utf-8")
    signer = create_gate_key(folder / "etlb-gate.key", None)
    gate = Gate(parse_config(PAYMENTS_CONFIG, path=config_path), SQLiteStore(folder / "etlb.db", signer=signer))
    try:
        bearer_key = generate_private_key()
        jwk = public_jwk(bearer_key)
        gate.register_bearer(Bearer("alice", "Alice", (BearerKey(key_id(jwk), jwk),)))
        now = datetime.now(UTC)
        scopes = []
        for kind, limits in (
            ("payments.transfer", Limits(max_amount=Decimal(100), unit="EUR")),
            ("git.commit", Limits()),
        ):
            payload = scope_payload(
                bearer="alice",
                kinds=[kind],
                resources=["**"],
                agents=["agent-1"],
                limits=limits,
                valid_from=now - timedelta(minutes=1),
                valid_until=now + timedelta(days=1),
                terms=f"Alice accepts liability for {kind} by agent-1.",
                issued_at=now,
            )
            scopes.append(gate.declare_scope(sign_payload(bearer_key, payload, typ=SCOPE_TYP)))
        scope = scopes[0]
        return gate.register_agent("agent-1"), scope.id
    finally:
        gate.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    folder = tmp_path_factory.mktemp("live")
    agent_key, scope_id = prepare_gate(folder)
    port = free_port()
    log = (folder / "service.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "etlb", "--config", str(folder / "etlb.toml"), "serve", "--port", str(port)],
        env={**os.environ, "ETLB_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, folder / "service.log")
        yield LiveService(url, folder, agent_key, scope_id)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"etlb serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"etlb serve did not become healthy in {STARTUP_SECONDS} s:\n{log.read_text(errors='replace')}")


# Against the live service


def test_bind_returns_binding(live: LiveService) -> None:
    with live.client() as client:
        binding = client.bind(transfer("25"))

    assert binding is not None
    assert binding.bearer == "alice"
    assert binding.scope_id == live.scope_id
    assert binding.action.agent == "agent-1"
    assert str(binding.reserved_amount) == "25 EUR"
    assert live.binding_state(binding.id)["redeemed"] is False


def test_bind_reversible_returns_none(live: LiveService) -> None:
    with live.client() as client:
        assert client.bind(ToolCall(server="docs", tool="search", arguments={"q": "x"})) is None


def test_bind_refusal_keeps_reasons(live: LiveService) -> None:
    with live.client() as client, pytest.raises(Refused) as caught:
        client.bind(transfer("500"))

    refusal = caught.value.refusal
    assert caught.value.code is ReasonCode.AMOUNT_EXCEEDS_SCOPE
    assert caught.value.recorded is True
    assert [(reason.scope_id, reason.bearer, reason.code) for reason in refusal.reasons] == [
        (live.scope_id, "alice", ReasonCode.AMOUNT_EXCEEDS_SCOPE)
    ]
    assert refusal.reasons[0].detail == "cap 100 EUR per action is below 500 EUR"
    assert refusal.action.kind == "payments.transfer"
    assert refusal.bearers_nearby == ("alice",)
    assert "amount_exceeds_scope" in refusal.message


def test_redeem_complete_and_receipt(live: LiveService) -> None:
    call = commit("receipt")
    with live.client() as client:
        binding = client.bind(call)
        assert binding is not None
        client.redeem(binding, call)
        with pytest.raises(BindingConsumed):
            client.redeem(binding, call)
        client.complete(binding, Outcome.succeeded("sha256:00"))
        receipt = client.receipt(binding.id)

    verifier = parse_verifier_key(verifier_path(live.folder / "etlb-gate.key").read_text(encoding="utf-8"))
    summary = verify_receipt(receipt, verifier)
    assert summary.binding_id == binding.id
    assert summary.outcome == "succeeded"


def test_agent_argument_must_match_key(live: LiveService) -> None:
    with live.client() as client:
        assert client.bind(commit("same agent"), agent="agent-1") is not None
        with pytest.raises(ConfigError):
            client.bind(commit("other agent"), agent="agent-2")
        assert client.agent_id() == "agent-1"


def test_execution_records_outcome(live: LiveService) -> None:
    ran: list[str] = []
    with live.client() as client:
        with client.execution(commit("execution")) as binding:
            ran.append("body")
        with pytest.raises(ValueError, match="tool failed"), client.execution(commit("failing")) as failed:
            raise ValueError("tool failed")

    assert ran == ["body"]
    assert binding is not None
    assert failed is not None
    state = live.binding_state(binding.id)
    assert state["redeemed"] is True
    assert state["outcome"]["status"] == OutcomeStatus.SUCCEEDED.value
    assert live.binding_state(failed.id)["outcome"] == {"status": "failed", "detail": "ValueError: tool failed"}


def test_execution_refused_never_runs_body(live: LiveService) -> None:
    ran: list[str] = []
    with live.client() as client, pytest.raises(Refused), client.execution(transfer("1000")):
        ran.append("body")

    assert ran == []


def test_guard_sync(live: LiveService) -> None:
    ran: list[str] = []
    with live.client() as client:

        @client.guard(server="bank", tool="transfer")
        def send_transfer(from_account: str, amount: str, currency: str = "EUR") -> dict[str, str]:
            ran.append(amount)
            return {"status": "sent"}

        assert send_transfer("DE89-1", "30") == {"status": "sent"}
        with pytest.raises(Refused) as caught:
            send_transfer("DE89-1", "3000")

    assert ran == ["30"]
    assert caught.value.code is ReasonCode.AMOUNT_EXCEEDS_SCOPE


def test_guard_async(live: LiveService) -> None:
    ran: list[str] = []
    with live.client() as client:

        @client.guard(server="bank", tool="transfer")
        async def send_transfer(from_account: str, amount: str, currency: str = "EUR") -> str:
            ran.append(amount)
            return "sent"

        assert anyio.run(send_transfer, "DE89-1", "40") == "sent"
        with pytest.raises(Refused):
            anyio.run(send_transfer, "DE89-1", "4000")

    assert ran == ["40"]


# Against services that fail


def assert_refused_without_running(client: Client, code: ReasonCode) -> Refused:
    """Bind, execution and both guards must refuse with `code` and never run their body."""
    ran: list[str] = []

    @client.guard(server="git", tool="git_commit")
    def guarded(repo_path: str, message: str) -> None:
        ran.append("sync")

    @client.guard(server="git", tool="git_commit")
    async def guarded_async(repo_path: str, message: str) -> None:
        ran.append("async")

    with pytest.raises(Refused) as caught:
        client.bind(commit())
    with pytest.raises(Refused), client.execution(commit()):
        ran.append("execution")
    with pytest.raises(Refused):
        guarded("/srv/app", "fix")
    with pytest.raises(Refused):
        anyio.run(guarded_async, "/srv/app", "fix")

    assert ran == []
    assert caught.value.code is code
    assert caught.value.recorded is False
    assert caught.value.refusal.action.tool == "git_commit"
    return caught.value


def test_service_down_is_refusal() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "etlb_key", timeout=2) as client:
        refused = assert_refused_without_running(client, ReasonCode.STORE_UNAVAILABLE)

    assert "cannot be reached" in refused.message


def test_service_responding_late_is_refusal() -> None:
    # The kernel accepts connections into the backlog, so the request is sent and no response ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with Client(url, "etlb_key", timeout=0.3) as client:
            with pytest.raises(Refused) as caught:
                client.bind(commit())
            elapsed = time.monotonic() - started
            refused = assert_refused_without_running(client, ReasonCode.STORE_UNAVAILABLE)

    assert caught.value.code is ReasonCode.STORE_UNAVAILABLE
    assert elapsed < 5
    assert "did not respond" in refused.message


class ScriptedHandler(BaseHTTPRequestHandler):
    """Responds to every request with the class's status, content type and body."""

    status: ClassVar[int] = 500
    content_type: ClassVar[str] = "text/plain"
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        self.respond()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.respond()

    def respond(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[ScriptedHandler]]]:
    handler = type("Handler", (ScriptedHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def problem(status: int, code: str, **members: Any) -> bytes:
    document = {"type": f"/problems/{code}", "title": "t", "status": status, "detail": "d", "code": code, "reasons": []}
    return json.dumps(document | members).encode()


GARBAGE: list[tuple[str, int, str, bytes, ReasonCode]] = [
    ("500 text", 500, "text/plain", b"Internal Server Error", ReasonCode.INTERNAL_ERROR),
    ("500 problem", 500, "application/problem+json", problem(500, "internal_error"), ReasonCode.INTERNAL_ERROR),
    ("503 problem", 503, "application/problem+json", problem(503, "store_unavailable"), ReasonCode.STORE_UNAVAILABLE),
    ("502 html", 502, "text/html", b"<html>bad gateway</html>", ReasonCode.INTERNAL_ERROR),
    ("200 empty object", 200, "application/json", b"{}", ReasonCode.INTERNAL_ERROR),
    ("200 html", 200, "text/html", b"<html>pass</html>", ReasonCode.INTERNAL_ERROR),
    ("200 pass with extra", 200, "application/json", b'{"decision": "pass", "x": 1}', ReasonCode.INTERNAL_ERROR),
    ("201 empty binding", 201, "application/json", b'{"decision": "bind", "binding": {}}', ReasonCode.INTERNAL_ERROR),
    ("403 broken refusal", 403, "application/problem+json", problem(403, "x", refusal_id=1), ReasonCode.INTERNAL_ERROR),
    ("401 problem", 401, "application/problem+json", problem(401, "unauthorized"), ReasonCode.INTERNAL_ERROR),
    ("302 redirect", 302, "text/plain", b"", ReasonCode.INTERNAL_ERROR),
]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "code"), [case[1:] for case in GARBAGE], ids=[case[0] for case in GARBAGE]
)
def test_garbage_response_is_refusal(
    scripted: tuple[str, type[ScriptedHandler]], status: int, content_type: str, body: bytes, code: ReasonCode
) -> None:
    url, handler = scripted
    handler.status = status
    handler.content_type = content_type
    handler.body = body

    with Client(url, "etlb_key", timeout=5) as client:
        assert_refused_without_running(client, code)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client("http://127.0.0.1:1", "etlb_key", timeout=0)


def test_arguments_without_json_form_are_refusal() -> None:
    ran: list[str] = []
    with Client(f"http://127.0.0.1:{free_port()}", "etlb_key", timeout=2) as client:

        @client.guard(server="git", tool="git_commit")
        def guarded(repo_path: str, message: object) -> None:
            ran.append("body")

        with pytest.raises(Refused) as caught:
            guarded("/srv/app", object())

    assert ran == []
    assert caught.value.code is ReasonCode.INTERNAL_ERROR
    assert "cannot be sent as JSON" in caught.value.message
