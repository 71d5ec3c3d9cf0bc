"""The Claude Code hook, driven as Claude Code drives it: JSON on stdin, a decision on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.gate import Gate
from etlb.model import Limits
from etlb.signing import sign_payload
from tests.conftest import build_world

CONFIG = """
[gate]
store = "sqlite:///etlb.db"
agent = "coding-agent"

[[rules]]
server = "claude-code"
tool = "Bash"
kind = "shell.exec"
analyser = "shell"
command = "{command}"
cwd = "{cwd}"
home = "/home/dev"

[[rules]]
server = "claude-code"
tool = "Write"
kind = "file.write"
resource = "path:{file_path}"

[[rules]]
server = "claude-code"
tool = "Edit"
kind = "file.edit"
resource = "path:{file_path}"

[[rules]]
server = "claude-code"
tool = "Read"
kind = "file.read"
consequence = "reversible"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    world = build_world(tmp_path, CONFIG)
    world.add_bearer("alice")
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["shell.git.push", "file.write", "file.edit", "tool.github.create_issue"],
        resources=["git-ref:origin/feature/*", "path:/srv/app/**", "tool:github/create_issue"],
        agents=["coding-agent"],
        limits=Limits(),
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=1),
        terms="alice accepts liability for the coding agent's pushes and edits in /srv/app",
        issued_at=now,
    )
    world.gate.declare_scope(sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP))
    world.gate.close()
    return tmp_path / "etlb.toml"


def run_hook(config: Path, payload: object) -> dict:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    completed = subprocess.run(
        [sys.executable, "-m", "etlb", "--config", str(config), "hook", "claude-code"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def pre(tool: str, tool_input: dict, *, cwd: str = "/srv/app") -> dict:
    return {
        "session_id": "s-1",
        "hook_event_name": "PreToolUse",
        "cwd": cwd,
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": "toolu_01",
    }


def decision(answer: dict) -> tuple[str, str]:
    output = answer["hookSpecificOutput"]
    assert output["hookEventName"] == "PreToolUse"
    return output["permissionDecision"], output["permissionDecisionReason"]


ALLOWED = [
    pytest.param(pre("Bash", {"command": "git push origin feature/login"}), "bound to bearer alice", id="bash-push"),
    pytest.param(pre("Bash", {"command": "ls -la && git status"}), "reversible", id="bash-read-only"),
    pytest.param(
        pre("Write", {"file_path": "/srv/app/notes.txt", "content": "x"}), "bound to bearer alice", id="write"
    ),
    pytest.param(
        pre("Edit", {"file_path": "/srv/app/main.py", "old_string": "a", "new_string": "b"}),
        "bound to bearer alice",
        id="edit",
    ),
    pytest.param(pre("Read", {"file_path": "/etc/hosts"}), "reversible", id="read"),
    pytest.param(pre("mcp__github__create_issue", {"title": "t"}), "bound to bearer alice", id="mcp-tool"),
]

DENIED = [
    pytest.param(
        pre("Bash", {"command": "git fetch && git pull && git clean -fd"}), "no_covering_scope", id="chained-clean"
    ),
    pytest.param(pre("Bash", {"command": "cd tofu && tofu apply -auto-approve"}), "no_covering_scope", id="cd-prefix"),
    pytest.param(pre("Bash", {"command": "git reset --hard HEAD~1"}), "no_covering_scope", id="reset-hard"),
    pytest.param(pre("Bash", {"command": "find . -name '*.log' -exec rm {} \\;"}), "no_covering_scope", id="find-exec"),
    pytest.param(pre("Bash", {"command": "rm -rf $(cat targets.txt)"}), "no_covering_scope", id="opaque-target"),
    pytest.param(pre("Bash", {"command": "git push --force origin main"}), "resource_not_covered", id="push-main"),
    pytest.param(
        pre("Write", {"file_path": "/etc/passwd", "content": "x"}), "resource_not_covered", id="write-outside"
    ),
    pytest.param(pre("mcp__github__delete_repository", {"repo": "r"}), "no_covering_scope", id="mcp-unknown"),
]


@pytest.mark.parametrize(("payload", "reason"), ALLOWED)
def test_hook_allows(config: Path, payload: dict, reason: str) -> None:
    verdict, text = decision(run_hook(config, payload))

    assert verdict == "allow"
    assert reason in text


@pytest.mark.parametrize(("payload", "reason"), DENIED)
def test_hook_denies(config: Path, payload: dict, reason: str) -> None:
    verdict, text = decision(run_hook(config, payload))

    assert verdict == "deny"
    assert reason in text
    assert "nothing ran" in text


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param("[1, 2]", "not a JSON object", id="not-object"),
        pytest.param({"hook_event_name": "PreToolUse"}, "no tool_name", id="no-tool"),
        pytest.param(pre("Bash", {"command": "ls"}, cwd=""), "no cwd", id="bash-without-cwd"),
        pytest.param(pre("mcp__github", {}), "mcp__<server>__<tool>", id="bad-mcp-name"),
    ],
)
def test_malformed_input_denied(config: Path, payload: object, reason: str) -> None:
    verdict, text = decision(run_hook(config, payload))

    assert verdict == "deny"
    assert reason in text


def test_missing_store_denied(config: Path) -> None:
    (config.parent / "etlb.db").unlink()

    verdict, text = decision(run_hook(config, pre("Write", {"file_path": "/srv/app/a", "content": "x"})))

    assert verdict == "deny"
    assert "does not exist" in text


def test_post_tool_use_records_outcome(config: Path) -> None:
    call = pre("Write", {"file_path": "/srv/app/report.md", "content": "done"})
    run_hook(config, call)

    answer = run_hook(config, {**call, "hook_event_name": "PostToolUse", "tool_response": {"success": True}})

    assert answer == {}
    with Gate.from_config(config) as gate:
        records = [json.loads(entry.record) for entry in gate.store.ledger_entries()]
    outcomes = [record for record in records if record["type"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["data"]["status"] == "succeeded"


def test_binding_runs_once(config: Path) -> None:
    call = pre("Write", {"file_path": "/srv/app/once.txt", "content": "x"})

    run_hook(config, call)
    with Gate.from_config(config) as gate:
        bindings = [json.loads(entry.record) for entry in gate.store.ledger_entries()]
    binding_id = next(record["data"]["binding_id"] for record in bindings if record["type"] == "binding")
    with Gate.from_config(config) as gate:
        state = gate.store.get_binding(binding_id)

    assert state is not None
    assert state.redeemed is True


def test_post_tool_use_matches_by_tool_use_id(config: Path) -> None:
    # Two identical writes run at once; each outcome goes to the binding of its own tool_use_id.
    first = {**pre("Write", {"file_path": "/srv/app/same.txt", "content": "x"}), "tool_use_id": "toolu_A"}
    second = {**first, "tool_use_id": "toolu_B"}
    run_hook(config, first)
    run_hook(config, second)

    run_hook(config, {**first, "hook_event_name": "PostToolUse", "tool_response": {"error": "disk full"}})
    run_hook(config, {**second, "hook_event_name": "PostToolUse", "tool_response": {"success": True}})

    with Gate.from_config(config) as gate:
        records = [json.loads(entry.record) for entry in gate.store.ledger_entries()]
    call_of = {
        record["data"]["binding_id"]: record["data"]["action"]["call_id"]
        for record in records
        if record["type"] == "binding"
    }
    outcomes = {
        call_of[record["data"]["binding_id"]]: record["data"]["status"]
        for record in records
        if record["type"] == "outcome"
    }
    assert outcomes == {"toolu_A": "failed", "toolu_B": "succeeded"}


def test_uncovered_call_asks_for_approval_and_retry_runs(tmp_path: Path) -> None:
    # The configuration waits for answers, but the hook must answer in time: it reports the request.
    approvals = '\n[approvals]\nwait = true\n[[approvals.routes]]\nkinds = ["shell.**"]\napprovers = ["bob"]\n'
    world = build_world(tmp_path, CONFIG + approvals)
    world.add_bearer("bob")
    world.gate.close()
    config = tmp_path / "etlb.toml"
    call = pre("Bash", {"command": "git reset --hard HEAD~1"})

    first = decision(run_hook(config, call))
    with Gate.from_config(config) as gate:
        [request] = gate.pending_approvals()
        payload = gate.approval_payload(request.id, "bob")
        gate.answer_approval(request.id, sign_payload(world.keys["bob"], payload, typ=SCOPE_TYP))
    retried = decision(run_hook(config, {**call, "tool_use_id": "toolu_02"}))

    assert first[0] == "deny"
    assert f"approval request {request.id} waits for bob" in first[1]
    assert retried[0] == "allow"
    assert retried[1].startswith("etlb: bound to bearer bob")


@pytest.mark.parametrize("mode", ["default", "acceptEdits", "bypassPermissions", "plan"])
def test_permission_mode_does_not_change_the_decision(config: Path, mode: str) -> None:
    # Claude Code sends its permission mode with each hook input; a deny holds in every mode,
    # including the one that skips Claude Code's own permission prompts.
    call = {**pre("Bash", {"command": "git reset --hard HEAD~1"}), "permission_mode": mode}

    denied, reason = decision(run_hook(config, call))

    assert denied == "deny"
    assert "no_covering_scope" in reason


def test_compound_denial_suggests_one_scope_over_every_part(config: Path) -> None:
    denied, reason = decision(run_hook(config, pre("Bash", {"command": "git push origin feature/a && rm -rf build"})))

    assert denied == "deny"
    assert (
        "Action: 2 parts of one Bash call (shell.git.push on git-ref:origin/feature/a, "
        "shell.rm on path:/srv/app/build/**) (irreversible), agent coding-agent." in reason
    )
    assert "part `rm -rf build` (shell.rm)" in reason
    assert (
        "etlb scope declare --kind 'shell.git.push' --kind 'shell.rm' "
        "--resource 'git-ref:origin/feature/a' --resource 'path:/srv/app/build/**' --agent 'coding-agent'"
    ) in reason


def test_same_tool_use_id_binds_once(config: Path) -> None:
    call = {**pre("Write", {"file_path": "/srv/app/once.md", "content": "x"}), "tool_use_id": "toolu_replayed"}

    first = decision(run_hook(config, call))
    second = decision(run_hook(config, call))

    assert first[0] == "allow"
    assert second[0] == "deny"
    assert second[1].startswith("etlb: tool use toolu_replayed was already bound as binding-")
