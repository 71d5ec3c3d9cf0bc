"""`etlb approve` in a terminal: list pending requests, show the full action, confirm, sign, bind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etlb.errors import ApprovalPending, Refused
from etlb.gate import Gate
from etlb.model import ReasonCode, ToolCall

CONFIG = """\
[gate]
store = "sqlite:///etlb.db"
agent = "treasury-bot"

[[rules]]
server = "payments"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"

[approvals]
wait = false
deadline_seconds = 600

[[approvals.routes]]
kinds = ["payments.*"]
approvers = ["bob"]
"""

TRANSFER = ToolCall(
    tool="transfer",
    server="payments",
    arguments={"from_account": "DE01", "amount": "12500.00", "currency": "EUR", "memo": "invoice 4471"},
)


def etlb(root: Path, *args: str, input: str | None = None, columns: int = 200) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ETLB_")}
    environment["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "etlb", "--config", str(root / "etlb.toml"), *args],
        cwd=root,
        env=environment,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etlb.toml").write_text(CONFIG, encoding="utf-8")
    for step in (
        ["init"],
        ["keygen", "--out", "bob.key"],
        ["bearer", "add", "bob", "--name", "Bob Brown", "--key", "bob.pub.jwk"],
    ):
        result = etlb(tmp_path, *step)
        assert result.returncode == 0, result.stderr
    return tmp_path


def request_transfer(root: Path) -> str:
    with Gate.from_config(root / "etlb.toml") as gate, pytest.raises(ApprovalPending) as caught:
        gate.bind(TRANSFER)
    return caught.value.request_id


def test_list_shows_pending_requests(root: Path) -> None:
    request_id = request_transfer(root)

    listed = etlb(root, "approve", "--list", "--json")

    assert listed.returncode == 0, listed.stderr
    [request] = json.loads(listed.stdout)
    assert request["request_id"] == request_id
    assert request["status"] == "pending"
    assert request["approvers"] == ["bob"]
    assert request["action"]["arguments"]["memo"] == "invoice 4471"


def test_accept_after_confirmation_binds_the_approver(root: Path) -> None:
    request_id = request_transfer(root)

    answered = etlb(root, "approve", request_id, "--bearer", "bob", "--key", "bob.key", input="y\n")

    assert answered.returncode == 0, answered.stderr
    assert '"memo": "invoice 4471"' in answered.stderr
    assert "I, bob, accept liability for exactly one execution of payments.transfer on account:DE01" in answered.stderr
    assert f"accepted: request {request_id} is bound to bob as binding binding-" in answered.stdout
    with Gate.from_config(root / "etlb.toml") as gate:
        binding = gate.resume(request_id, TRANSFER)
    assert binding.bearer == "bob"
    assert str(binding.reserved_amount) == "12500 EUR"


def test_declined_confirmation_signs_nothing(root: Path) -> None:
    request_id = request_transfer(root)

    answered = etlb(root, "approve", request_id, "--bearer", "bob", "--key", "bob.key", input="n\n")

    assert answered.returncode == 1
    assert answered.stderr.endswith("Accept liability for this action as bob? [y/N]: aborted\n")
    with Gate.from_config(root / "etlb.toml") as gate:
        assert gate.approval(request_id).pending


def test_decline_records_a_refusal(root: Path) -> None:
    request_id = request_transfer(root)

    answered = etlb(
        root,
        "approve",
        request_id,
        "--bearer",
        "bob",
        "--key",
        "bob.key",
        "--decline",
        "--reason",
        "no invoice",
        "--yes",
    )

    assert answered.returncode == 0, answered.stderr
    assert f"request {request_id} closed: declined, declined by bob: no invoice" in answered.stdout
    with Gate.from_config(root / "etlb.toml") as gate, pytest.raises(Refused) as caught:
        gate.resume(request_id)
    assert caught.value.code is ReasonCode.APPROVAL_DECLINED


def test_answer_by_someone_not_asked(root: Path) -> None:
    request_id = request_transfer(root)
    assert etlb(root, "keygen", "--out", "eve.key").returncode == 0
    assert etlb(root, "bearer", "add", "eve", "--name", "Eve", "--key", "eve.pub.jwk").returncode == 0

    answered = etlb(root, "approve", request_id, "--bearer", "eve", "--key", "eve.key", "--yes")

    assert answered.returncode == 1
    assert f"eve cannot answer approval request {request_id}: eve is not an approver" in answered.stderr


def test_unknown_request(root: Path) -> None:
    answered = etlb(root, "approve", "approval-0000", "--bearer", "bob", "--key", "bob.key", "--yes")

    assert answered.returncode == 1
    assert "approval request approval-0000 not found" in answered.stderr
    assert "hint: list pending requests with: etlb approve --list" in answered.stderr


def test_narrow_terminal_shows_every_word_signed(root: Path) -> None:
    request_id = request_transfer(root)
    with Gate.from_config(root / "etlb.toml") as gate:
        terms = gate.approval_payload(request_id, "bob")["terms"]

    answered = etlb(root, "approve", request_id, "--bearer", "bob", "--key", "bob.key", input="n\n", columns=80)

    shown = " ".join(line.strip("│ ") for line in answered.stderr.splitlines())
    assert " ".join(terms.split()) in " ".join(shown.split())
    assert max(len(line) for line in answered.stderr.splitlines()) <= 80


def test_reason_without_decline_rejected(root: Path) -> None:
    request_id = request_transfer(root)

    answered = etlb(root, "approve", request_id, "--bearer", "bob", "--key", "bob.key", "--reason", "x", "--yes")

    assert answered.returncode == 2
    assert "--reason is recorded with a decline only" in answered.stderr
