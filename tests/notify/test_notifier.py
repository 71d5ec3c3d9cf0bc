"""Notifier end to end: a real SMTP server and a webhook receiver on 127.0.0.1, on both store backends."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from etlb.cli import cli
from etlb.errors import ConfigError, SignatureError, StoreUnavailable
from etlb.notify import Notifier, NotifyState, build_channels, verify_notification
from etlb.signing import generate_private_key, load_private_key, public_jwk
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, World, build_world
from tests.notify.servers import Mailbox, Receiver, smtp_server
from tests.report.scenario import commit, register, transfer

pytestmark = both_backends


def notify_section(*, webhook: str | None, smtp_port: int | None, digest_after: int = 3, extra: str = "") -> str:
    lines = ["[notify]", f"digest_after = {digest_after}", "digest_interval_seconds = 3600", "poll_seconds = 0.1"]
    if webhook is not None:
        lines.append(f'webhook_url = "{webhook}"')
    if smtp_port is not None:
        lines += ['smtp_host = "127.0.0.1"', f"smtp_port = {smtp_port}", 'smtp_from = "gate@example.org"']
        lines.append("smtp_starttls = false")
    return "\n".join(lines) + "\n" + extra


@dataclass
class Setup:
    world: World
    receiver: Receiver
    mailbox: Mailbox | None
    state_path: Path

    def notifier(self) -> tuple[Notifier, NotifyState]:
        config = self.world.gate.config
        state = NotifyState(self.state_path)
        channels = build_channels(config)
        return Notifier(self.world.gate.store, state, channels, config.notify, clock=self.world.clock), state

    def run(self) -> tuple[int, int, int, int]:
        """Run once with a new state connection, as `etlb notify --once` does: (queued, sent, failed, waiting)."""
        notifier, state = self.notifier()
        try:
            summary = notifier.run_once()
        finally:
            state.close()
        return summary.queued, summary.sent, summary.failed, summary.waiting


def make_setup(tmp_path: Path, backend: Backend, *, email: bool, digest_after: int = 3) -> Iterator[Setup]:
    # The receiver needs the gate's key, which build_world creates; it learns it once the world exists.
    receiver = Receiver(gate_jwk={})
    receiver.start()
    with smtp_server() as (port, mailbox):
        section = notify_section(webhook=receiver.url, smtp_port=port if email else None, digest_after=digest_after)
        world = build_world(tmp_path, PAYMENTS_CONFIG + section, backend)
        receiver.gate_jwk = public_jwk(load_private_key(tmp_path / "etlb-gate.key"))
        register(world, "alice", "alice@example.org")
        register(world, "bob")
        world.declare("alice", kinds=["payments.transfer"], max_amount="10000", unit="EUR")
        world.declare("bob", kinds=["git.commit"])
        try:
            yield Setup(world, receiver, mailbox if email else None, tmp_path / "etlb-notify.db")
        finally:
            world.gate.close()
            receiver.stop()


@pytest.fixture
def setup(tmp_path: Path, backend: Backend) -> Iterator[Setup]:
    yield from make_setup(tmp_path, backend, email=True)


@pytest.fixture
def webhook_only(tmp_path: Path, backend: Backend) -> Iterator[Setup]:
    yield from make_setup(tmp_path, backend, email=False, digest_after=2)


def test_binding_notifies_bearer(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    binding = setup.world.gate.bind(transfer("9000"))
    commit_binding = setup.world.gate.bind(commit())
    assert binding is not None and commit_binding is not None

    with caplog.at_level(logging.WARNING):
        queued, sent, failed, waiting = setup.run()

    # alice by webhook and e-mail; bob by webhook only, because he has no address.
    assert (queued, sent, failed, waiting) == (3, 3, 0, 0)
    assert setup.receiver.rejected == []
    assert sorted(setup.receiver.binding_ids()) == sorted([[binding.id], [commit_binding.id]])
    body = next(body for body in setup.receiver.bodies if body["bearer"] == "alice")
    assert body["type"] == "etlb.binding"
    assert body["bindings"][0]["amount"] == "9000 EUR"
    assert body["bindings"][0]["kind"] == "payments.transfer"
    assert body["bindings"][0]["action_digest"] == binding.action.digest
    assert body["sent_at"] == "2026-06-01T12:00:00.000Z"
    assert setup.mailbox is not None
    (mail,) = setup.mailbox.messages
    assert mail["To"] == "alice@example.org"
    assert mail["From"] == "gate@example.org"
    assert mail["Subject"] == "etlb: payments.transfer on account:DE01 of 9000 EUR by agent agent-1 was bound to you"
    assert binding.id in mail.get_content()
    assert f"binding {commit_binding.id} is not e-mailed: bearer bob has no 'email' attribute" in caplog.text


def test_burst_becomes_digest(setup: Setup) -> None:
    bindings = [setup.world.gate.bind(transfer(str(amount))) for amount in (10, 20, 30, 40)]

    assert setup.run() == (8, 2, 0, 0)
    assert setup.receiver.binding_ids() == [[binding.id for binding in bindings if binding is not None]]
    assert setup.receiver.bodies[0]["type"] == "etlb.digest"
    assert setup.mailbox is not None
    (mail,) = setup.mailbox.messages
    assert mail["Subject"] == "etlb: 4 actions were bound to you"
    assert all(binding is not None and binding.id in mail.get_content() for binding in bindings)


def test_frequent_notices_wait_for_digest(webhook_only: Setup) -> None:
    gate, clock, receiver = webhook_only.world.gate, webhook_only.world.clock, webhook_only.receiver
    first = gate.bind(transfer("10"))
    assert webhook_only.run() == (1, 1, 0, 0)
    clock.advance(minutes=1)
    second = gate.bind(transfer("20"))
    assert webhook_only.run() == (1, 1, 0, 0)

    # Two messages in the last hour is the limit, so the next two wait and go out as one digest.
    clock.advance(minutes=1)
    held = [gate.bind(transfer("30")), gate.bind(transfer("40"))]
    assert webhook_only.run() == (2, 0, 0, 2)
    clock.advance(minutes=59)
    assert webhook_only.run() == (0, 0, 0, 2)
    clock.advance(minutes=1)
    assert webhook_only.run() == (0, 1, 0, 0)

    assert first is not None and second is not None
    assert receiver.binding_ids() == [[first.id], [second.id], [binding.id for binding in held if binding]]
    assert [body["type"] for body in receiver.bodies] == ["etlb.binding", "etlb.binding", "etlb.digest"]


def test_receiver_down_retried(webhook_only: Setup, caplog: pytest.LogCaptureFixture) -> None:
    receiver = webhook_only.receiver
    receiver.stop()
    binding = webhook_only.world.gate.bind(transfer("10"))
    assert binding is not None

    with caplog.at_level(logging.WARNING):
        assert webhook_only.run() == (1, 0, 1, 1)
    assert "webhook message" in caplog.text
    assert "failed and stays queued" in caplog.text
    assert f"webhook http://127.0.0.1:{receiver.port}/etlb failed for bearer alice" in caplog.text

    receiver.start()
    assert webhook_only.run() == (0, 1, 0, 0)
    assert webhook_only.run() == (0, 0, 0, 0)
    assert receiver.binding_ids() == [[binding.id]]


def test_error_status_retried(webhook_only: Setup) -> None:
    webhook_only.receiver.status = 503
    binding = webhook_only.world.gate.bind(transfer("10"))

    assert webhook_only.run() == (1, 0, 1, 1)
    webhook_only.receiver.status = 204
    assert webhook_only.run() == (0, 1, 0, 0)
    assert binding is not None
    assert webhook_only.receiver.binding_ids() == [[binding.id], [binding.id]]
    assert webhook_only.receiver.bodies[0]["id"] == webhook_only.receiver.bodies[1]["id"]


def test_restart_sends_nothing_twice(setup: Setup) -> None:
    first = setup.world.gate.bind(transfer("10"))
    assert setup.run() == (2, 2, 0, 0)

    assert setup.run() == (0, 0, 0, 0)
    second = setup.world.gate.bind(transfer("20"))
    assert setup.run() == (2, 2, 0, 0)

    assert first is not None and second is not None
    assert setup.receiver.binding_ids() == [[first.id], [second.id]]
    assert setup.mailbox is not None
    assert len(setup.mailbox.messages) == 2


def test_one_notifier_per_state(setup: Setup) -> None:
    _, state = setup.notifier()
    try:
        with pytest.raises(StoreUnavailable, match="database is locked") as caught:
            NotifyState(setup.state_path)
        assert "another etlb notify may be running" in caught.value.hint
    finally:
        state.close()


def test_state_of_other_ledger_rejected(setup: Setup, tmp_path: Path, backend: Backend) -> None:
    setup.world.gate.bind(transfer("10"))
    assert setup.run() == (2, 2, 0, 0)
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    other = build_world(other_folder, PAYMENTS_CONFIG)
    register(other, "carol")
    try:
        notifier = Notifier(
            other.gate.store, NotifyState(setup.state_path), [], setup.world.gate.config.notify, clock=other.clock
        )
        with pytest.raises(ConfigError, match=r"has read \d+ records of another ledger"):
            notifier.run_once()
    finally:
        other.gate.close()


def test_signature_covers_body(webhook_only: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[tuple[bytes, str]] = []
    original = httpx.post

    def capture(url: str, *, content: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
        captured.append((content, headers["ETLB-Signature"]))
        return original(url, content=content, headers=headers, timeout=timeout)

    monkeypatch.setattr(httpx, "post", capture)
    webhook_only.world.gate.bind(transfer("10"))
    webhook_only.run()

    body, signature = captured[0]
    jwk = webhook_only.receiver.gate_jwk
    assert verify_notification(body, signature, jwk)["bearer"] == "alice"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_notification(body.replace(b"10 EUR", b"99 EUR"), signature, jwk)
    with pytest.raises(SignatureError, match="detached compact JWS"):
        verify_notification(body, signature.replace("..", "."), jwk)
    other_key = public_jwk(generate_private_key())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_notification(body, signature, other_key)


# The test server allows AUTH without TLS because it listens on the loopback address only.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_password_never_logged(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = "s3cret-smtp-password"
    with smtp_server(username="gate", password=password) as (port, mailbox):
        section = notify_section(webhook=None, smtp_port=port, extra='smtp_username = "gate"\n')
        world = build_world(tmp_path, PAYMENTS_CONFIG + section, backend)
        try:
            register(world, "alice", "alice@example.org")
            world.declare("alice", kinds=["payments.transfer"], max_amount="10000", unit="EUR")
            world.gate.bind(transfer("10"))
            setup = Setup(world, Receiver(gate_jwk={}), mailbox, tmp_path / "etlb-notify.db")

            monkeypatch.setenv("ETLB_SMTP_PASSWORD", "wrong-" + password)
            with caplog.at_level(logging.DEBUG, logger="etlb"):
                assert setup.run() == (1, 0, 1, 1)
            monkeypatch.setenv("ETLB_SMTP_PASSWORD", password)
            with caplog.at_level(logging.DEBUG, logger="etlb"):
                assert setup.run() == (0, 1, 0, 0)
        finally:
            world.gate.close()

    assert len(mailbox.messages) == 1
    assert "SMTPAuthenticationError" in caplog.text
    assert password not in caplog.text


def test_cli_notify_once_and_key(setup: Setup, tmp_path: Path) -> None:
    binding = setup.world.gate.bind(transfer("10"))
    config = str(tmp_path / "etlb.toml")
    runner = CliRunner()

    once = runner.invoke(cli, ["--config", config, "notify", "--once"])
    again = runner.invoke(cli, ["--config", config, "notify"])
    key = runner.invoke(cli, ["--config", config, "notify", "key"])

    assert once.exit_code == 0, once.output
    assert "queued 2 notices, sent 2 messages, 0 failed; 0 notices wait" in once.output
    assert again.exit_code == 0, again.output
    assert "queued 0 notices, sent 0 messages" in again.output
    assert binding is not None
    assert setup.receiver.binding_ids() == [[binding.id]]
    assert json.loads(key.output) == setup.receiver.gate_jwk
    assert (tmp_path / "etlb-notify.db").exists()


def test_follow_delivers_until_stopped(webhook_only: Setup) -> None:
    notifier, state = webhook_only.notifier()
    stop = threading.Event()
    follower = threading.Thread(target=notifier.follow, args=(stop,))
    binding = webhook_only.world.gate.bind(transfer("10"))
    assert binding is not None

    follower.start()
    try:
        deadline = time.monotonic() + 30
        while not webhook_only.receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(timeout=30)
        state.close()

    assert not follower.is_alive()
    assert webhook_only.receiver.binding_ids() == [[binding.id]]


def test_cli_notify_fails_when_a_delivery_failed(webhook_only: Setup, tmp_path: Path) -> None:
    webhook_only.receiver.stop()
    webhook_only.world.gate.bind(transfer("10"))

    once = CliRunner().invoke(cli, ["--config", str(tmp_path / "etlb.toml"), "notify", "--once"])

    assert once.exit_code == 1
    assert "sent 0 messages, 1 failed; 1 notices wait for the next run" in once.output
