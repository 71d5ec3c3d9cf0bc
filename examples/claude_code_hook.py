"""The Claude Code hook, fed the hook inputs Claude Code sends, so that it runs offline with no Claude Code.

The script sets up a store with the etlb CLI: Alice's scope covers the coding agent's pushes to
feature branches and its edits inside the project folder. It writes the `.claude/settings.json`
that installs the hook, then pipes a session's `PreToolUse` and `PostToolUse` inputs through
`etlb hook claude-code` exactly as Claude Code would. It prints each decision and the ledger, and
exits with status 1 when a decision is not the expected one.

Run it with `.venv/bin/python examples/claude_code_hook.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The example runs with the virtual environment's interpreter, so the etlb command is installed next to it.
ETLB_COMMAND = Path(sys.executable).parent / "etlb"
AGENT = "coding-agent"

RULES = """
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

[[rules]]
server = "claude-code"
tool = "Write"
kind = "file.write"
resource = "path:{file_path}"

[[rules]]
server = "claude-code"
tool = "Read"
kind = "file.read"
consequence = "reversible"
"""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="etlb-claude-code-") as folder:
        root = Path(folder).resolve()
        project = root / "app"
        project.mkdir()
        config = set_up(root, project)
        print(f"settings.json that installs the hook:\n{json.dumps(settings(config), indent=2)}\n")

        failures = []
        for label, tool, tool_input, expected in session(project):
            payload = hook_input("PreToolUse", tool, tool_input, project, call_id=f"toolu_{label}")
            answer = run_hook(config, payload)["hookSpecificOutput"]
            decision = answer["permissionDecision"]
            print(f"{label:>2}. {tool} {json.dumps(tool_input)}\n    {decision}: {first_line(answer)}")
            if decision != expected:
                failures.append(f"{label}: {decision}, expected {expected}")
            if decision == "allow":
                # Claude Code runs the tool, then reports its result in PostToolUse.
                run_hook(config, {**payload, "hook_event_name": "PostToolUse", "tool_response": {"success": True}})

        print()
        print(etlb("--config", str(config), "ledger", "show"))

    if failures:
        print("example failed: " + "; ".join(failures))
        return 1
    print("example passed: pushes and edits in scope bound to alice, disguised and outside calls denied")
    return 0


def set_up(root: Path, project: Path) -> Path:
    config = root / "etlb.toml"
    config.write_text(RULES, encoding="utf-8")
    etlb("--config", str(config), "init")
    etlb("keygen", "--out", str(root / "alice.key"))
    etlb(
        "--config",
        str(config),
        "bearer",
        "add",
        "alice",
        "--name",
        "Alice Example",
        "--key",
        str(root / "alice.pub.jwk"),
    )
    etlb(
        "--config", str(config), "scope", "declare", "--bearer", "alice", "--key", str(root / "alice.key"),
        "--agent", AGENT, "--kind", "shell.git.push", "--kind", "file.write",
        "--resource", "git-ref:origin/feature/*", "--resource", f"path:{project}/**",
        "--valid-for", "1h", "--yes",
        "--terms", "I accept liability for the coding agent's pushes to feature branches and writes in the project.",
    )  # fmt: skip
    return config


def session(project: Path) -> list[tuple[str, str, dict[str, Any], str]]:
    """The tool calls of one session, as (label, tool, input, expected decision)."""
    return [
        ("1", "Read", {"file_path": f"{project}/README.md"}, "allow"),
        ("2", "Write", {"file_path": f"{project}/notes.md", "content": "done"}, "allow"),
        ("3", "Bash", {"command": "git status && git push origin feature/login"}, "allow"),
        ("4", "Bash", {"command": "git fetch && git pull && git clean -fd"}, "deny"),
        ("5", "Bash", {"command": "find . -name '*.log' -exec rm {} \\;"}, "deny"),
        ("6", "Bash", {"command": "git push --force origin main"}, "deny"),
        ("7", "Write", {"file_path": "/etc/hosts", "content": "x"}, "deny"),
        ("8", "mcp__github__delete_repository", {"repo": "acme/app"}, "deny"),
    ]


def hook_input(event: str, tool: str, tool_input: dict[str, Any], cwd: Path, *, call_id: str) -> dict[str, Any]:
    return {
        "session_id": "example-session",
        "hook_event_name": event,
        "cwd": str(cwd),
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": call_id,
    }


def settings(config: Path) -> dict[str, Any]:
    command = f"{ETLB_COMMAND} --config {config} hook claude-code --agent {AGENT}"
    hook = [{"matcher": "*", "hooks": [{"type": "command", "command": command}]}]
    return {"hooks": {"PreToolUse": hook, "PostToolUse": hook}}


def run_hook(config: Path, payload: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [str(ETLB_COMMAND), "--config", str(config), "hook", "claude-code", "--agent", AGENT],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, Any] = json.loads(completed.stdout or "{}")
    return answer


def first_line(answer: dict[str, Any]) -> str:
    return str(answer["permissionDecisionReason"]).splitlines()[0]


def etlb(*arguments: str) -> str:
    completed = subprocess.run([str(ETLB_COMMAND), *arguments], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        message = f"etlb {' '.join(arguments)} failed with status {completed.returncode}: {completed.stderr}"
        raise SystemExit(message)
    return completed.stdout


if __name__ == "__main__":
    sys.exit(main())
