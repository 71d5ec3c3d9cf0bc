"""Scope templates: each one is declared as shipped through the CLI, and its worked example binds and
refuses through the gate as docs/scopes.md describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from etlb.cli import template_names
from etlb.errors import Refused
from etlb.gate import Gate
from etlb.model import ReasonCode, ToolCall

CONFIG = """
[gate]
store = "sqlite:///etlb.db"

[[rules]]
server = "bank"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"

[[rules]]
server = "ehr"
tool = "prescribe"
kind = "clinical.prescription"
resource = "patient:{ward}/{patient_id}"

[[rules]]
server = "courts"
tool = "file"
kind = "legal.filing.submit"
resource = "matter:{matter}/{document_id}"

[[rules]]
tool = "Bash"
kind = "shell.exec"
analyser = "shell"
command = "{command}"
cwd = "/srv/infra/staging"
home = "/home/oncall"
"""


def transfer(counterparty: str) -> ToolCall:
    arguments = {
        "from_account": "DE89370400440532013000",
        "amount": "4200.00",
        "currency": "EUR",
        "counterparty": counterparty,
    }
    return ToolCall(tool="transfer", server="bank", arguments=arguments)


def prescription(drug_class: str) -> ToolCall:
    arguments = {"ward": "ward-4", "patient_id": "p-1031", "drug_class": drug_class, "route": "oral"}
    return ToolCall(tool="prescribe", server="ehr", arguments=arguments)


def filing(matter: str) -> ToolCall:
    arguments = {"matter": matter, "document_id": "d-7", "court": "district-court-a", "document_type": "motion"}
    return ToolCall(tool="file", server="courts", arguments=arguments)


def shell(command: str) -> ToolCall:
    return ToolCall(tool="Bash", arguments={"command": command})


# Template: agent, a call it covers, a call it refuses, and that refusal's reason code.
EXAMPLES = {
    "finance-payments": (
        "treasury-agent",
        transfer("supplier-b"),
        transfer("unknown-gmbh"),
        ReasonCode.CONDITION_FALSE,
    ),
    "medicine-prescriptions": (
        "ward-assistant",
        prescription("antibiotic"),
        prescription("opioid"),
        ReasonCode.CONDITION_FALSE,
    ),
    "law-filings": ("drafting-agent", filing("2026-0142"), filing("2026-0199"), ReasonCode.RESOURCE_NOT_COVERED),
    "infrastructure-deploys": (
        "coding-agent",
        shell("git push origin feature/rotate-keys"),
        shell("git push --force origin feature/rotate-keys"),
        ReasonCode.CONDITION_FALSE,
    ),
}


def test_every_template_has_example() -> None:
    assert sorted(EXAMPLES) == template_names()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_template_worked_example(tmp_path: Path, name: str) -> None:
    agent, covered, refused, code = EXAMPLES[name]
    config = tmp_path / "etlb.toml"
    config.write_text(CONFIG, encoding="utf-8")

    def etlb(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "etlb", "--config", str(config), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)

    assert etlb("init").returncode == 0
    assert etlb("keygen", "--out", str(tmp_path / "b.key")).returncode == 0
    assert etlb("bearer", "add", "bearer-a", "--name", "Bearer A", "--key", str(tmp_path / "b.pub.jwk")).returncode == 0
    assert etlb("scope", "template", "show", name, "-o", str(tmp_path / "scope.toml")).returncode == 0
    declared = etlb(
        "scope", "declare", "--from-file", str(tmp_path / "scope.toml"),
        "--bearer", "bearer-a", "--key", str(tmp_path / "b.key"), "--yes", "--json",
    )  # fmt: skip
    assert declared.returncode == 0, declared.stderr
    scope_id = json.loads(declared.stdout)["scope_id"]

    with Gate.from_config(config) as gate:
        binding = gate.bind(covered, agent=agent)
        with pytest.raises(Refused) as caught:
            gate.bind(refused, agent=agent)

    assert binding is not None
    assert binding.scope_id == scope_id
    assert binding.bearer == "bearer-a"
    assert [reason.code for reason in caught.value.refusal.reasons] == [code]
