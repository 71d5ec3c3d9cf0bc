"""The adapter examples run offline with one command, exit 0, and report that the refused call never ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("script", ["langchain_agent.py", "openai_agents_agent.py"])
def test_example_runs(script: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300, check=False
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "example passed: call-1 bound to alice, call-2 refused and never ran, call-3 reversible" in completed.stdout
    assert "refusal  call call-2: amount_exceeds_scope" in completed.stdout
    assert "binding  call call-1: bearer alice" in completed.stdout


def test_claude_code_example_runs() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "claude_code_hook.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (
        "example passed: pushes and edits in scope bound to alice, disguised and outside calls denied"
        in completed.stdout
    )
    assert ' 4. Bash {"command": "git fetch && git pull && git clean -fd"}\n    deny: ' in completed.stdout
    assert (
        ' 3. Bash {"command": "git status && git push origin feature/login"}\n    allow: etlb: bound to bearer alice'
        in completed.stdout
    )
