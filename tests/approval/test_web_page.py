"""The approval page in headless Chromium against the real service: from opening the link to a binding in the ledger.

The service runs in a uvicorn server on 127.0.0.1 and a free port, in a thread of this process, so
that the tests share the gate's settable clock. It is stopped through its own handle. An agent binds
through `Client` and gets `ApprovalPending`; an approver opens the page, loads a key and answers.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, Request, expect

from etlb.approval.model import approval_terms
from etlb.client import Client
from etlb.errors import ApprovalPending, BindingConsumed, Refused
from etlb.model import Bearer, BearerKey, ReasonCode, ToolCall, format_time
from etlb.server import create_app
from etlb.signing import key_id, parse_public_jwk, write_private_key
from tests.conftest import PAYMENTS_CONFIG, World, build_world
from tests.server.conftest import service_settings

pytestmark = pytest.mark.integration

APPROVALS = """
[approvals]
wait = false
deadline_seconds = 600

[[approvals.routes]]
kinds = ["payments.*"]
approvers = ["bob", "carol", "dave"]
"""

STARTUP_SECONDS = 30.0


@dataclass
class LiveService:
    url: str
    world: World
    agent_key: str

    def client(self) -> Client:
        return Client(self.url, self.agent_key)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(entry.record) for entry in self.world.gate.store.ledger_entries()]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveService]:
    world = build_world(tmp_path, PAYMENTS_CONFIG + APPROVALS)
    for bearer in ("alice", "bob", "carol"):
        world.add_bearer(bearer)
    agent_key = world.gate.register_agent("agent-1")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(world.gate, service_settings()), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail(f"the service did not start on 127.0.0.1:{port} within {STARTUP_SECONDS} s")
            time.sleep(0.05)
        yield LiveService(f"http://127.0.0.1:{port}", world, agent_key)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
        world.gate.close()


def transfer(amount: str = "7000") -> ToolCall:
    return ToolCall(
        server="bank", tool="transfer", arguments={"from_account": "DE89-1", "amount": amount, "currency": "EUR"}
    )


def ask(live: LiveService) -> ApprovalPending:
    with live.client() as client, pytest.raises(ApprovalPending) as caught:
        client.bind(transfer())
    return caught.value


def key_file(folder: Path, key: Ed25519PrivateKey, name: str, passphrase: bytes | None = None) -> Path:
    path = folder / f"{name}.key"
    write_private_key(path, key, passphrase)
    return path


def open_page(page: Page, url: str) -> list[Request]:
    """Open an approval page and return the list that collects every request it sends from now on."""
    requests: list[Request] = []

    def collect(request: Request) -> None:
        requests.append(request)

    # Playwright wraps the handler in an attribute, which a builtin method such as list.append cannot take.
    page.on("request", collect)
    page.goto(url)
    expect(page.locator("#request")).to_be_visible()
    return requests


def load_key_file(page: Page, path: Path) -> None:
    page.set_input_files("#key-file", path)
    expect(page.locator("#key-status")).to_contain_text("loaded")


def choose_bearer(page: Page, live: LiveService, request_id: str, bearer: str) -> None:
    page.select_option("#bearer", bearer)
    terms = approval_terms(live.world.gate.approval(request_id), bearer)
    expect(page.locator("#terms")).to_have_text(terms)


def secret_forms(key: Ed25519PrivateKey, pem: str) -> list[str]:
    """Return the encodings in which a private key could travel: PEM body, raw bytes, base64 and hex."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [
        "PRIVATE KEY",
        body,
        base64.b64encode(der).decode(),
        base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        base64.b64encode(raw).rstrip(b"=").decode(),
        raw.hex(),
    ]


def assert_no_key_material(requests: list[Request], forms: list[str]) -> None:
    assert requests
    for request in requests:
        sent = request.url + (request.post_data or "") + json.dumps(request.headers)
        for form in forms:
            assert form not in sent, f"{request.method} {request.url} carries private key material"


def stored_public_jwk(live: LiveService, bearer: str) -> dict[str, str]:
    stored = live.world.gate.store.get_bearer(bearer)
    assert stored is not None
    return stored.keys[0].public_jwk


def countdown_seconds(page: Page) -> int:
    text = page.locator("#countdown").inner_text()
    match = re.fullmatch(r"(\d\d):(\d\d):(\d\d)", text)
    assert match is not None, text
    hours, minutes, seconds = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_accept_binds_bob(live: LiveService, browser_page: Page, tmp_path: Path) -> None:
    scope = live.world.declare("alice", kinds=["payments.transfer"], max_amount="5000", unit="EUR")
    pending = ask(live)
    request_id = pending.request_id
    key = live.world.keys["bob"]
    path = key_file(tmp_path, key, "bob")

    requests = open_page(browser_page, f"{live.url}/approvals/{request_id}")
    stored = live.world.gate.approval(request_id)
    assert json.loads(browser_page.locator("#action").inner_text()) == stored.to_json()["action"]
    assert browser_page.locator("#digest").inner_text() == pending.refusal.action.digest
    assert browser_page.locator("#reasons li").all_inner_texts() == [
        f"alice's scope {scope.id}: amount_exceeds_scope: cap 5000 EUR per action is below 7000 EUR"
    ]
    assert browser_page.locator("#approvers li").all_inner_texts() == ["bob", "carol", "dave"]
    assert browser_page.locator("#deadline").inner_text() == format_time(pending.deadline)
    load_key_file(browser_page, path)
    assert browser_page.locator("#key-status").inner_text() == (
        f"Key {key_id(stored_public_jwk(live, 'bob'))} loaded (imported into this page only)."
    )
    choose_bearer(browser_page, live, request_id, "bob")
    browser_page.get_by_role("button", name="Accept").click()

    outcome = browser_page.locator("#outcome")
    expect(outcome).to_contain_text("bound to bob")
    closed = live.world.gate.approval(request_id)
    assert outcome.inner_text() == (
        f"Accepted: the action is bound to bob (binding {closed.binding_id}). The agent may now run it once."
    )
    assert browser_page.get_by_role("button", name="Accept").count() == 0
    types = [record["type"] for record in live.records()[-3:]]
    assert types == ["scope.declared", "binding", "approval.closed"]
    declared, binding, approval = live.records()[-3:]
    assert declared["data"]["bearer"] == "bob"
    assert (binding["data"]["bearer"], binding["data"]["binding_id"]) == ("bob", closed.binding_id)
    assert (approval["data"]["status"], approval["data"]["bearer"]) == ("accepted", "bob")

    with live.client() as client:
        resumed = client.resume(request_id)
        with pytest.raises(BindingConsumed):
            client.resume(request_id)
    assert (resumed.id, resumed.bearer) == (closed.binding_id, "bob")
    assert resumed.action.digest == pending.refusal.action.digest
    assert_no_key_material(requests, secret_forms(key, path.read_text()))
    assert any(request.url.endswith(f"/v1/approvals/{request_id}/answer") for request in requests)


def test_decline_records_refusal(live: LiveService, browser_page: Page, tmp_path: Path) -> None:
    pending = ask(live)
    key = live.world.keys["carol"]
    pem = key_file(tmp_path, key, "carol").read_text()

    requests = open_page(browser_page, f"{live.url}/approvals/{pending.request_id}")
    browser_page.fill("#key-pem", pem)
    browser_page.get_by_role("button", name="Use pasted key").click()
    expect(browser_page.locator("#key-status")).to_contain_text("loaded")
    assert browser_page.locator("#key-pem").input_value() == ""
    choose_bearer(browser_page, live, pending.request_id, "carol")
    browser_page.fill("#decline-reason", "not before the audit")
    browser_page.get_by_role("button", name="Decline").click()

    outcome = browser_page.locator("#outcome")
    expect(outcome).to_contain_text("Declined by carol")
    closed = live.world.gate.approval(pending.request_id)
    assert outcome.inner_text() == (
        f"Declined by carol: the action is refused (refusal {closed.refusal_id}) and will not run."
    )
    refusal, approval = live.records()[-2:]
    assert (refusal["type"], refusal["data"]["code"]) == ("refusal", "approval_declined")
    assert (approval["data"]["status"], approval["data"]["bearer"]) == ("declined", "carol")
    with live.client() as client, pytest.raises(Refused) as caught:
        client.resume(pending.request_id)
    assert caught.value.code is ReasonCode.APPROVAL_DECLINED
    assert caught.value.refusal.id == closed.refusal_id
    assert str(caught.value).endswith("declined by carol: not before the audit")
    assert_no_key_material(requests, secret_forms(key, pem))


def test_key_of_other_bearer_shows_error(live: LiveService, browser_page: Page, tmp_path: Path) -> None:
    pending = ask(live)
    carol_key = live.world.keys["carol"]
    size = len(live.records())

    open_page(browser_page, f"{live.url}/approvals/{pending.request_id}")
    load_key_file(browser_page, key_file(tmp_path, carol_key, "carol"))
    choose_bearer(browser_page, live, pending.request_id, "bob")
    browser_page.get_by_role("button", name="Accept").click()

    error = browser_page.locator("#error")
    expect(error).to_be_visible()
    kid = key_id(stored_public_jwk(live, "carol"))
    assert error.inner_text() == (
        f"The answer was not accepted: the answer is signed with key {kid!r}, which is not registered to bob "
        "(sign with the key file registered for this bearer). The request is still pending."
    )
    assert live.world.gate.approval(pending.request_id).pending
    assert len(live.records()) == size
    expect(browser_page.get_by_role("button", name="Accept")).to_be_enabled()


def test_countdown_decreases(live: LiveService, browser_page: Page) -> None:
    pending = ask(live)

    open_page(browser_page, f"{live.url}/approvals/{pending.request_id}")
    first = countdown_seconds(browser_page)
    browser_page.wait_for_timeout(2100)
    second = countdown_seconds(browser_page)

    # The gate's clock does not advance in these tests, so the page counts down from 600 s by the browser's clock.
    assert 590 <= first <= 600
    assert 1 <= first - second <= 3


def test_expired_request_offers_no_answer(live: LiveService, browser_page: Page) -> None:
    pending = ask(live)
    live.world.clock.advance(seconds=601)

    open_page(browser_page, f"{live.url}/approvals/{pending.request_id}")

    closed = live.world.gate.approval(pending.request_id)
    expect(browser_page.locator("#outcome")).to_have_text(
        f"Timed out: no approver answered before the deadline, so the action is refused "
        f"(refusal {closed.refusal_id}) and will not run."
    )
    assert browser_page.locator("#status").inner_text() == "Status: timed out."
    assert browser_page.locator("#countdown").inner_text() == "none, the deadline has passed"
    assert browser_page.get_by_role("button", name="Accept").count() == 0
    assert browser_page.locator("#answer").count() == 0
    assert live.records()[-2]["data"]["code"] == "approval_timed_out"


def test_encrypted_key_file_explained(live: LiveService, browser_page: Page, tmp_path: Path) -> None:
    pending = ask(live)
    path = key_file(tmp_path, live.world.keys["bob"], "bob-encrypted", passphrase=b"correct horse")

    open_page(browser_page, f"{live.url}/approvals/{pending.request_id}")
    browser_page.set_input_files("#key-file", path)

    error = browser_page.locator("#error")
    expect(error).to_contain_text("This key file is encrypted with a passphrase")
    assert "openssl pkey -in YOUR.key -out YOUR-unencrypted.key" in error.inner_text()
    assert browser_page.locator("#key-status").inner_text() == "No key loaded."


def test_browser_key_binds_dave(live: LiveService, browser_page: Page) -> None:
    pending = ask(live)
    url = f"{live.url}/approvals/{pending.request_id}"

    requests = open_page(browser_page, url)
    browser_page.get_by_role("button", name="Create a new key in this browser").click()
    expect(browser_page.locator("#new-key")).to_be_visible()
    jwk = parse_public_jwk(json.loads(browser_page.locator("#public-jwk").inner_text()))
    kid = key_id(jwk)
    assert browser_page.locator("#key-status").inner_text() == f"Key {kid} loaded (kept in this browser)."
    live.world.gate.register_bearer(Bearer("dave", "Dave", (BearerKey(kid, jwk),)))

    # After a reload the key comes from IndexedDB, where it stays non-extractable.
    browser_page.reload()
    expect(browser_page.locator("#stored")).to_be_visible()
    assert browser_page.locator("#stored-keys option").first.get_attribute("value") == kid
    browser_page.get_by_role("button", name="Use this key").click()
    expect(browser_page.locator("#key-status")).to_have_text(f"Key {kid} loaded (kept in this browser).")
    choose_bearer(browser_page, live, pending.request_id, "dave")
    browser_page.get_by_role("button", name="Accept").click()

    expect(browser_page.locator("#outcome")).to_contain_text("bound to dave")
    closed = live.world.gate.approval(pending.request_id)
    assert (closed.status.value, closed.bearer) == ("accepted", "dave")
    extractable = browser_page.evaluate(
        """async () => {
            const database = await new Promise((resolve) => {
                const opening = indexedDB.open("etlb-approvals", 1);
                opening.onsuccess = () => resolve(opening.result);
            });
            const keys = await new Promise((resolve) => {
                const reading = database.transaction("keys").objectStore("keys").getAll();
                reading.onsuccess = () => resolve(reading.result);
            });
            return keys.map((key) => key.privateKey.extractable);
        }"""
    )
    assert extractable == [False]
    posted = [request.post_data or "" for request in requests if request.method == "POST"]
    assert len(posted) == 1
    assert '"d"' not in posted[0]
    assert set(json.loads(posted[0])) == {"jws"}
    assert closed.deadline - closed.created == timedelta(seconds=600)
