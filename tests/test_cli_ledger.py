"""`etlb ledger` and `etlb receipt` end to end: the real entry point in a subprocess, on a real store.

One folder serves the module. The command line sets it up (init, keygen, bearer add, scope declare),
and the Python API fills it with a clock that steps one minute per decision, from T:

- 0 and 1: alice and bob registered; 2: alice's payments scope; 3: bob's git scope;
- 4: binding A, 40 EUR at T; 5: its outcome; 6: refusal of 400 EUR at T+1m;
- 7: binding B, 30 EUR at T+2m, with no outcome;
- 8: binding C, a commit by agent ci-bot at T+3m; 9: its outcome.

Tests that change the store work on a copy of the folder. The filter table of `ledger show` runs
in-process through click's runner, because it only reads JSON from standard output.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from etlb.cli import cli
from etlb.errors import Refused
from etlb.gate import Gate
from etlb.gate_key import create_gate_key
from etlb.ledger.checkpoint import NoteVerifier, parse_verifier_key, verify_checkpoint
from etlb.model import Binding, ToolCall, format_time, parse_time
from tests.ledger.test_verify_tlog import rename_alice, rewrite_history

CONFIG_TEXT = """\
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

[[rules]]
server = "git"
tool = "git_commit"
kind = "git.commit"
resource = "repo:{repo_path}"
"""

TERMS = "I accept liability for transfers from account DE01 by the treasury bot."

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DECISION = 3


def etlb(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m etlb --config ROOT/etlb.toml ARGS` in ROOT."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ETLB_")}
    # A wide terminal keeps rich from wrapping long lines of output and errors.
    environment["COLUMNS"] = "400"
    return subprocess.run(
        [sys.executable, "-m", "etlb", "--config", str(root / "etlb.toml"), *args],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def succeed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    completed = etlb(root, *args)
    assert completed.returncode == 0, completed.stderr
    return completed


def transfer(amount: str) -> ToolCall:
    arguments = {"from_account": "DE01", "amount": amount, "currency": "EUR"}
    return ToolCall(tool="transfer", server="payments", arguments=arguments)


def commit() -> ToolCall:
    return ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": "release"})


@dataclass
class Setup:
    root: Path
    verifier: NoteVerifier
    scopes: dict[str, str]
    bindings: dict[str, Binding]
    start: datetime

    def minute(self, offset: int) -> str:
        return format_time(self.start + timedelta(minutes=offset))


def declare(root: Path, bearer: str, *options: str) -> dict[str, Any]:
    completed = succeed(
        root,
        "scope",
        "declare",
        "--bearer",
        bearer,
        "--key",
        f"{bearer}.key",
        *options,
        "--valid-for",
        "1h",
        "--terms",
        TERMS,
        "--yes",
        "--json",
    )
    scope: dict[str, Any] = json.loads(completed.stdout)
    return scope


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("cli-ledger")
    (root / "etlb.toml").write_text(CONFIG_TEXT, encoding="utf-8")
    succeed(root, "init")
    for bearer, name in (("alice", "Alice Adams"), ("bob", "Bob Brown")):
        succeed(root, "keygen", "--out", f"{bearer}.key")
        succeed(root, "bearer", "add", bearer, "--name", name, "--key", f"{bearer}.pub.jwk")
    alice_scope = declare(
        root,
        "alice",
        "--kind",
        "payments.transfer",
        "--resource",
        "account:DE01",
        "--max-amount",
        "100",
        "--unit",
        "EUR",
    )
    bob_scope = declare(root, "bob", "--kind", "git.commit", "--resource", "repo:/srv/app", "--agent", "ci-bot")

    # Scopes are valid for an hour from their declaration, so the decisions start a minute after it.
    start = parse_time(bob_scope["valid_from"]) + timedelta(minutes=1)
    now = [start]
    bindings: dict[str, Binding] = {}
    with Gate.from_config(root / "etlb.toml", clock=lambda: now[0]) as gate:
        with gate.execution(transfer("40")) as paid:
            assert paid is not None
            bindings["A"] = paid
        now[0] = start + timedelta(minutes=1)
        with pytest.raises(Refused):
            gate.bind(transfer("400"))
        now[0] = start + timedelta(minutes=2)
        pending = gate.bind(transfer("30"))
        assert pending is not None
        bindings["B"] = pending
        now[0] = start + timedelta(minutes=3)
        with gate.execution(commit(), agent="ci-bot") as committed:
            assert committed is not None
            bindings["C"] = committed

    verifier = parse_verifier_key((root / "etlb-gate.pub").read_text(encoding="utf-8"))
    scopes = {"alice": alice_scope["scope_id"], "bob": bob_scope["scope_id"]}
    return Setup(root, verifier, scopes, bindings, start)


@pytest.fixture
def folder_copy(setup: Setup, tmp_path: Path) -> Iterator[Path]:
    """A copy of the set-up folder that a test may change."""
    target = tmp_path / "copy"
    shutil.copytree(setup.root, target)
    yield target


@pytest.fixture(scope="module")
def receipt_file(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("receipt") / "receipt.json"
    completed = succeed(setup.root, "receipt", "get", setup.bindings["A"].id, "-o", str(path))
    assert completed.stderr.strip() == f"wrote receipt of {setup.bindings['A'].id} to {path}"
    return path


def latest_note(root: Path) -> str:
    with sqlite3.connect(root / "etlb.db") as connection:
        row = connection.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    connection.close()
    return str(row[0])


# ledger checkpoint


def test_checkpoint_to_file(setup: Setup, tmp_path: Path) -> None:
    output = tmp_path / "latest.note"

    completed = succeed(setup.root, "ledger", "checkpoint", "-o", str(output))

    assert completed.stderr.strip() == f"wrote checkpoint to {output}"
    assert output.read_text(encoding="utf-8") == latest_note(setup.root)
    assert verify_checkpoint(output.read_text(encoding="utf-8"), setup.verifier).size == 10


def test_checkpoint_to_stdout(setup: Setup) -> None:
    completed = succeed(setup.root, "ledger", "checkpoint")

    assert completed.stdout == latest_note(setup.root)


# receipt get and verify


def test_receipt_verify_text(setup: Setup, receipt_file: Path) -> None:
    binding = setup.bindings["A"]

    completed = succeed(setup.root, "receipt", "verify", str(receipt_file), "--gate-key", "etlb-gate.pub")

    assert "receipt verified" in completed.stdout
    assert "alice (Alice Adams) carried the consequence" in completed.stdout
    assert "payments.transfer on account:DE01 of 40 EUR by agent treasury-bot" in completed.stdout
    assert binding.action.digest in completed.stdout
    assert setup.scopes["alice"] in completed.stdout
    assert f"{setup.verifier.name}, tree size 10" in completed.stdout
    assert f"terms accepted: {TERMS}" in completed.stdout


def test_receipt_verify_json(setup: Setup, receipt_file: Path) -> None:
    binding = setup.bindings["A"]

    completed = succeed(setup.root, "receipt", "verify", str(receipt_file), "--gate-key", "etlb-gate.pub", "--json")

    assert json.loads(completed.stdout) == {
        "valid": True,
        "bearer": "alice",
        "bearer_name": "Alice Adams",
        "scope_id": setup.scopes["alice"],
        "terms": TERMS,
        "binding_id": binding.id,
        "action": {
            "agent": "treasury-bot",
            "amount": {"unit": "EUR", "value": "40"},
            "arguments": {"amount": "40", "currency": "EUR", "from_account": "DE01"},
            "consequence": "irreversible",
            "digest": binding.action.digest,
            "kind": "payments.transfer",
            "resource": "account:DE01",
            "server": "payments",
            "tool": "transfer",
        },
        "bound_at": setup.minute(0),
        "outcome": "succeeded",
        "outcome_detail": "",
        "origin": setup.verifier.name,
        "tree_size": 10,
    }


def test_receipt_inline_gate_key(setup: Setup, receipt_file: Path) -> None:
    completed = succeed(setup.root, "receipt", "verify", str(receipt_file), "--gate-key", str(setup.verifier), "--json")

    assert json.loads(completed.stdout)["binding_id"] == setup.bindings["A"].id


def test_altered_receipt_rejected(setup: Setup, receipt_file: Path, tmp_path: Path) -> None:
    receipt = json.loads(receipt_file.read_text(encoding="utf-8"))
    binding = receipt["records"]["binding"]
    binding["record"] = binding["record"].replace('"bearer":"alice"', '"bearer":"mallory"')
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(receipt), encoding="utf-8")

    completed = etlb(setup.root, "receipt", "verify", str(altered), "--gate-key", "etlb-gate.pub")

    assert completed.returncode == EXIT_DECISION
    assert (
        "receipt is not valid: records.binding: the record at leaf 4 is not in the checkpoint's tree of 10 records"
        in completed.stderr
    )
    assert completed.stdout == ""


def test_receipt_other_gate_key(setup: Setup, receipt_file: Path, tmp_path: Path) -> None:
    create_gate_key(tmp_path / "other.key", setup.verifier.name)

    completed = etlb(setup.root, "receipt", "verify", str(receipt_file), "--gate-key", str(tmp_path / "other.pub"))

    assert completed.returncode == EXIT_DECISION
    assert f"receipt is not valid: checkpoint: checkpoint has no signature by {setup.verifier.name}" in completed.stderr


def test_receipt_not_json(setup: Setup, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")

    completed = etlb(setup.root, "receipt", "verify", str(path), "--gate-key", "etlb-gate.pub")

    assert completed.returncode == EXIT_DECISION
    assert f"receipt is not valid: {path} is not JSON" in completed.stderr


def test_receipt_unknown_binding(setup: Setup) -> None:
    completed = etlb(setup.root, "receipt", "get", "binding-missing")

    assert completed.returncode == EXIT_ERROR
    assert "error: binding binding-missing not found" in completed.stderr


# ledger verify --against


def test_verify_against_extended(folder_copy: Path) -> None:
    succeed(folder_copy, "ledger", "checkpoint", "-o", "old.note")
    with Gate.from_config(folder_copy / "etlb.toml") as gate:
        assert gate.bind(transfer("20")) is not None

    completed = succeed(folder_copy, "ledger", "verify", "--against", "old.note")

    assert "ledger verified: 11 records" in completed.stdout
    assert "the ledger extends the earlier checkpoint of 10 records" in completed.stdout


def test_verify_against_rewritten(folder_copy: Path) -> None:
    succeed(folder_copy, "ledger", "checkpoint", "-o", "old.note")
    rewrite_history(folder_copy / "etlb.db", folder_copy / "etlb-gate.key", rename_alice)

    plain = etlb(folder_copy, "ledger", "verify")
    against = etlb(folder_copy, "ledger", "verify", "--against", "old.note")

    assert plain.returncode == 0
    assert against.returncode == EXIT_DECISION
    assert "ledger verification failed at record 9: history was rewritten: the first 10 records have root" in (
        against.stderr
    )


def test_verify_against_other_gate(setup: Setup, tmp_path: Path) -> None:
    other = create_gate_key(tmp_path / "other.key", setup.verifier.name)
    note = tmp_path / "other.note"
    note.write_text(other.sign(10, bytes(32)), encoding="utf-8")

    completed = etlb(setup.root, "ledger", "verify", "--against", str(note))

    assert completed.returncode == EXIT_ERROR
    assert f"error: earlier checkpoint {note} is not valid: checkpoint has no signature by" in completed.stderr


# ledger export and verify --export


@pytest.fixture(scope="module")
def export_file(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "ledger.jsonl"
    completed = succeed(setup.root, "ledger", "export", "-o", str(path))
    assert completed.stderr.strip() == "exported 10 records"
    return path


def test_export_lines(setup: Setup, export_file: Path) -> None:
    lines = [json.loads(line) for line in export_file.read_text(encoding="utf-8").splitlines()]

    assert lines[0] == {"type": "header", "format": "etlb-ledger-export/v1", "verifier_key": str(setup.verifier)}
    assert [json.loads(line["record"])["seq"] for line in lines[1:11]] == list(range(10))
    assert [line["size"] for line in lines[11:]] == list(range(1, 11))


def test_export_verifies(setup: Setup, export_file: Path) -> None:
    completed = succeed(
        setup.root, "ledger", "verify", "--export", str(export_file), "--gate-key", "etlb-gate.pub", "--json"
    )

    report = json.loads(completed.stdout)
    assert report["ok"] is True
    assert report["size"] == 10
    assert report["checkpoints_checked"] == 10
    assert report["problems"] == []


def test_export_edited_record(setup: Setup, export_file: Path, tmp_path: Path) -> None:
    lines = export_file.read_text(encoding="utf-8").splitlines()
    outcome = json.loads(lines[6])
    assert json.loads(outcome["record"])["seq"] == 5
    outcome["record"] = outcome["record"].replace('"status":"succeeded"', '"status":"failed"')
    lines[6] = json.dumps(outcome)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n", encoding="utf-8")

    completed = etlb(setup.root, "ledger", "verify", "--export", str(edited), "--gate-key", "etlb-gate.pub")

    assert completed.returncode == EXIT_DECISION
    assert "ledger verification failed at record 5: checkpoint of tree size 6 signed root" in completed.stderr


def test_export_needs_gate_key(setup: Setup, export_file: Path) -> None:
    completed = etlb(setup.root, "ledger", "verify", "--export", str(export_file))

    assert completed.returncode == EXIT_USAGE
    assert "--export needs --gate-key: the key you trust, not one taken from the export" in completed.stderr


# ledger show filters


SHOW_FILTERS = [
    pytest.param(["--bearer", "alice"], [0, 2, 4, 7], id="bearer-alice"),
    pytest.param(["--bearer", "bob"], [1, 3, 8], id="bearer-bob"),
    pytest.param(["--scope", "{scope_bob}"], [3, 8], id="scope"),
    pytest.param(["--decision", "bound"], [4, 7, 8], id="decision-bound"),
    pytest.param(["--decision", "refused"], [6], id="decision-refused"),
    pytest.param(["--decision", "outcome"], [5, 9], id="decision-outcome"),
    pytest.param(["--digest", "{digest_a}"], [4, 5], id="digest"),
    pytest.param(["--binding", "{binding_c}"], [8, 9], id="binding"),
    pytest.param(["--kind", "git.commit"], [8], id="kind-git"),
    pytest.param(["--kind", "payments.transfer"], [4, 6, 7], id="kind-payments"),
    pytest.param(["--agent", "ci-bot"], [8], id="agent-ci"),
    pytest.param(["--agent", "treasury-bot"], [4, 6, 7], id="agent-treasury"),
    pytest.param(["--since", "{minute_1}", "--until", "{minute_3}"], [6, 7], id="since-until"),
    pytest.param(["--since", "{minute_2}"], [7, 8, 9], id="since"),
    pytest.param(["--until", "{minute_0}"], [0, 1, 2, 3], id="until"),
    pytest.param(["--bearer", "alice", "--decision", "bound"], [4, 7], id="bearer-and-decision"),
    pytest.param(["--from", "5", "--limit", "2"], [5, 6], id="window"),
    pytest.param(["--bearer", "carol"], [], id="no-match"),
]


@pytest.mark.parametrize(("options", "expected"), SHOW_FILTERS)
def test_show_filter(setup: Setup, options: list[str], expected: list[int]) -> None:
    values = {
        "scope_bob": setup.scopes["bob"],
        "digest_a": setup.bindings["A"].action.digest,
        "binding_c": setup.bindings["C"].id,
        **{f"minute_{offset}": setup.minute(offset) for offset in range(4)},
    }
    arguments = [option.format(**values) for option in options]

    result = CliRunner().invoke(
        cli, ["--config", str(setup.root / "etlb.toml"), "ledger", "show", *arguments, "--json"]
    )

    assert result.exit_code == 0, result.output
    assert [record["seq"] for record in json.loads(result.stdout)] == expected


def test_show_bad_since(setup: Setup) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(setup.root / "etlb.toml"), "ledger", "show", "--since", "yesterday"]
    )

    assert result.exit_code == EXIT_USAGE
    assert "Invalid value for --since" in result.stderr
