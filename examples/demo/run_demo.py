"""Run the etlb demo: an agent works on a git repository through `etlb mcp-proxy`.

The script needs no network and no input. It creates a temporary git repository and an etlb store,
registers the bearers Alice and Bob and lets Alice sign a scope for at most 2 commits. Then it plays
the calls in transcript.json through a real MCP client session with the proxy, which runs
`mcp-server-git` upstream. The commit that Alice's scope no longer covers becomes an approval
request, which Bob accepts in `etlb approve` (the script answers its confirmation prompt), and the
agent's retry runs under Bob's binding. It reads each decision from the tool result and the ledger,
runs `etlb ledger verify`, verifies the receipt of the first binding offline (and shows that an
altered copy fails), prints a summary table and exits with status 1 when any decision differs from
the transcript, or 2 when a step cannot run at all.

Run it with `make demo`, or `.venv/bin/python examples/demo/run_demo.py [--keep]`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

DEMO_DIR = Path(__file__).resolve().parent
TRANSCRIPT_PATH = DEMO_DIR / "transcript.json"
CONFIG_TEMPLATE_PATH = DEMO_DIR / "etlb.toml"

# The demo runs with the virtual environment's interpreter, so the etlb command and the git MCP
# server are installed next to it. `sys.executable` is not resolved, because the venv's python is
# often a symlink to a system interpreter whose folder has neither.
BIN_DIR = Path(sys.executable).parent
ETLB_COMMAND = BIN_DIR / "etlb"
GIT_SERVER_COMMAND = BIN_DIR / "mcp-server-git"

LEDGER_PAGE_SIZE = 100

SCOPE_TERMS = "I accept liability for up to 2 commits by demo-agent to this demo repository."

console = Console()


class DemoError(Exception):
    """A step of the demo could not run. The message names the failed command and its error."""


@dataclass(frozen=True)
class Decision:
    """The decision for one tool call: `passed`, `bound` or `refused`, with its bearer or reason code."""

    decision: str
    bearer: str | None = None
    code: str | None = None

    def matches(self, expected: dict[str, Any]) -> bool:
        return (
            self.decision == expected["decision"]
            and self.bearer == expected.get("bearer")
            and self.code == expected.get("code")
        )

    def describe(self) -> str:
        return self.bearer or self.code or ""


@dataclass(frozen=True)
class StepResult:
    tool: str
    decision: Decision
    expected: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Workspace:
    root: Path
    repo: Path
    config: Path
    key: Path
    public_key: Path
    approver_key: Path
    proxy_log: Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    options = parser.parse_args()

    transcript = json.loads(TRANSCRIPT_PATH.read_text(encoding="utf-8"))
    root = Path(tempfile.mkdtemp(prefix="etlb-demo-")).resolve()
    try:
        workspace = _create_workspace(root)
        _set_up_etlb(workspace, transcript)
        results = _play(workspace, transcript)
        verified = _verify_ledger(workspace)
        receipt_checked = _check_receipt(workspace)
        commits = _commit_count(workspace.repo)
    except DemoError as error:
        console.print(f"[bold red]demo failed:[/] {escape(str(error))}")
        return 2
    finally:
        if options.keep:
            console.print(f"workspace kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    _print_summary(results)
    expected_commits = transcript["expected_commits"]
    console.print(f"repository has {commits} commits, expected {expected_commits}")

    failures = []
    if not all(result.decision.matches(result.expected) for result in results):
        failures.append("a decision differs from the transcript (rows marked ✗)")
    if commits != expected_commits:
        failures.append(f"the repository has {commits} commits instead of {expected_commits}")
    if not verified:
        failures.append("etlb ledger verify failed")
    if not receipt_checked:
        failures.append("the receipt did not verify, or its altered copy did")

    if failures:
        console.print(f"[bold red]demo failed:[/] {'; '.join(failures)}")
        return 1
    console.print("[bold green]demo passed:[/] every decision matches the transcript")
    return 0


def _create_workspace(root: Path) -> Workspace:
    repo = root / "repo"
    repo.mkdir()
    _run(["git", "init", "--quiet", str(repo)])

    # Repository-local identity, so commits work without a global git configuration.
    _run(["git", "-C", str(repo), "config", "user.name", "Demo Agent"])
    _run(["git", "-C", str(repo), "config", "user.email", "demo-agent@example.invalid"])
    (repo / "README.md").write_text("# Demo repository\n", encoding="utf-8")
    _run(["git", "-C", str(repo), "add", "README.md"])
    _run(["git", "-C", str(repo), "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", "Initial commit"])

    etlb_dir = root / "etlb"
    etlb_dir.mkdir()
    return Workspace(
        root=root,
        repo=repo,
        config=etlb_dir / "etlb.toml",
        key=etlb_dir / "alice.key",
        public_key=etlb_dir / "alice.pub.jwk",
        approver_key=etlb_dir / "bob.key",
        proxy_log=root / "proxy.log",
    )


def _set_up_etlb(workspace: Workspace, transcript: dict[str, Any]) -> None:
    config = str(workspace.config)
    console.rule("setup")

    # `etlb init` keeps an existing configuration, so the demo's rules are in place before it runs.
    shutil.copyfile(CONFIG_TEMPLATE_PATH, workspace.config)
    _etlb("--config", config, "init")
    _etlb("keygen", "--out", str(workspace.key))
    _etlb(
        "--config",
        config,
        "bearer",
        "add",
        transcript["bearer"],
        "--name",
        "Alice Example",
        "--key",
        str(workspace.public_key),
    )
    _etlb("keygen", "--out", str(workspace.approver_key))
    _etlb(
        "--config",
        config,
        "bearer",
        "add",
        "bob",
        "--name",
        "Bob Example",
        "--key",
        str(workspace.approver_key.with_name("bob.pub.jwk")),
    )
    _etlb(
        "--config",
        config,
        "scope",
        "declare",
        "--bearer",
        transcript["bearer"],
        "--key",
        str(workspace.key),
        "--kind",
        "git.commit",
        "--resource",
        f"repo:{workspace.repo}",
        "--agent",
        transcript["agent"],
        "--max-count",
        "2",
        "--valid-for",
        "1h",
        "--terms",
        SCOPE_TERMS,
        "--yes",
    )


def _play(workspace: Workspace, transcript: dict[str, Any]) -> list[StepResult]:
    try:
        return anyio.run(_play_transcript, workspace, transcript)
    except DemoError:
        raise
    except Exception as error:
        # The proxy's stderr explains why the session broke, for example an upstream server that did not start.
        log = workspace.proxy_log.read_text(encoding="utf-8") if workspace.proxy_log.exists() else ""
        message = f"the MCP session with the proxy failed: {error!r}\nproxy log:\n{log}"
        raise DemoError(message) from error


async def _play_transcript(workspace: Workspace, transcript: dict[str, Any]) -> list[StepResult]:
    console.rule("transcript")
    console.print(transcript["description"], highlight=False)
    proxy = StdioServerParameters(
        command=str(ETLB_COMMAND),
        args=[
            "--config",
            str(workspace.config),
            "mcp-proxy",
            "--agent",
            transcript["agent"],
            "--",
            str(GIT_SERVER_COMMAND),
            "--repository",
            str(workspace.repo),
        ],
    )

    # The proxy logs each decision to stderr, which goes to a file so that the summary stays readable.
    results: list[StepResult] = []
    with workspace.proxy_log.open("w", encoding="utf-8") as proxy_log:
        async with Client(stdio_client(proxy, errlog=proxy_log), cache=None) as client:
            next_sequence = len(_ledger_records(workspace, start=0))
            for number, step in enumerate(transcript["steps"], start=1):
                if "write_file" in step:
                    target = workspace.repo / step["write_file"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(step["write_file"]["text"], encoding="utf-8")

                if "approve" in step:
                    decision = _approve(workspace, step["approve"]["bearer"])
                    text = ""
                else:
                    result = await client.call_tool(step["tool"], _fill_arguments(step["arguments"], workspace))
                    decision = _decide(workspace, result, _ledger_records(workspace, start=next_sequence))
                    text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
                next_sequence = len(_ledger_records(workspace, start=0))
                results.append(StepResult(step["tool"], decision, step["expect"], text))
                console.print(f"{number}. {step['tool']}: {decision.decision} {decision.describe()}".rstrip())
                if "note" in step:
                    console.print(f"   {step['note']}", style="dim", highlight=False, markup=False)
                if decision.decision in {"refused", "pending"}:
                    console.print(Panel(Text(text), title="what the model reads", expand=False))
    return results


def _approve(workspace: Workspace, bearer: str) -> Decision:
    """Accept the one pending request as `bearer` in `etlb approve`, answering its prompt with y."""
    config = str(workspace.config)
    listed = json.loads(_etlb("--config", config, "approve", "--list", "--json", quiet=True))
    _etlb("--config", config, "approve", "--list")
    if len(listed) != 1:
        message = f"expected one pending approval request, found {len(listed)}"
        raise DemoError(message)

    request_id = listed[0]["request_id"]
    command = ["--config", config, "approve", request_id, "--bearer", bearer, "--key", str(workspace.approver_key)]
    console.print(f"$ {shlex.join(['etlb', *command])}", style="bold", highlight=False, markup=False)
    completed = subprocess.run([str(ETLB_COMMAND), *command], input="y\n", capture_output=True, text=True, check=False)
    console.print(Text(completed.stderr.rstrip() + " y"), style="dim")
    console.print(completed.stdout.rstrip(), style="dim", highlight=False, markup=False)
    if completed.returncode != 0:
        message = f"etlb approve failed with exit status {completed.returncode}: {completed.stderr}"
        raise DemoError(message)
    bound = f"is bound to {bearer}" in completed.stdout
    return Decision("approved" if bound else "not approved", bearer=bearer if bound else None)


def _fill_arguments(arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
    text = json.dumps(arguments).replace("{repo}", str(workspace.repo))
    filled: dict[str, Any] = json.loads(text)
    return filled


def _decide(workspace: Workspace, result: CallToolResult, new_records: list[dict[str, Any]]) -> Decision:
    """Read the decision from the proxy's result and the ledger records the call added."""
    structured = result.structured_content
    if result.is_error and isinstance(structured, dict) and "etlb_refusal" in structured:
        code = structured["etlb_refusal"]["code"]
        # An approval request is not a final refusal: the action waits for an approver's answer.
        return Decision("pending" if code == "approval_pending" else "refused", code=code)

    bindings = [record for record in new_records if record["type"] == "binding"]
    if bindings:
        return Decision("bound", bearer=bindings[-1]["data"]["bearer"])

    # A retry after an approval runs under the binding that the approver's acceptance made earlier.
    # The call adds only its outcome, so the bearer is read from that earlier binding.
    outcomes = [record["data"]["binding_id"] for record in new_records if record["type"] == "outcome"]
    if outcomes:
        earlier = {
            record["data"]["binding_id"]: record["data"]["bearer"]
            for record in _ledger_records(workspace, start=0)
            if record["type"] == "binding"
        }
        return Decision("bound", bearer=earlier.get(outcomes[-1]))
    return Decision("passed")


def _ledger_records(workspace: Workspace, *, start: int) -> list[dict[str, Any]]:
    """Return the ledger records from sequence number `start` on."""
    records: list[dict[str, Any]] = []
    while True:
        output = _etlb(
            "--config",
            str(workspace.config),
            "ledger",
            "show",
            "--from",
            str(start + len(records)),
            "--limit",
            str(LEDGER_PAGE_SIZE),
            "--json",
            quiet=True,
        )
        page: list[dict[str, Any]] = json.loads(output)
        records.extend(page)
        if len(page) < LEDGER_PAGE_SIZE:
            return records


def _verify_ledger(workspace: Workspace) -> bool:
    console.rule("ledger")
    completed = subprocess.run(
        [str(ETLB_COMMAND), "--config", str(workspace.config), "ledger", "verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    console.print((completed.stdout + completed.stderr).strip(), markup=False, highlight=False)
    return completed.returncode == 0


def _check_receipt(workspace: Workspace) -> bool:
    """Get the receipt of the first binding, verify it offline, then show that an altered copy fails.

    `etlb receipt verify` reads only the receipt file and the gate's public checkpoint key, so this is
    the check an auditor runs on another machine.
    """
    console.rule("receipt")
    bound = json.loads(
        _etlb("--config", str(workspace.config), "ledger", "show", "--decision", "bound", "--json", quiet=True)
    )
    if not bound:
        console.print("no binding to get a receipt for")
        return False

    binding_id = bound[0]["data"]["binding_id"]
    receipt_path = workspace.root / "receipt.json"
    gate_key = workspace.config.parent / "etlb-gate.pub"
    _etlb("--config", str(workspace.config), "receipt", "get", binding_id, "-o", str(receipt_path))
    original = _receipt_verify(receipt_path, gate_key)

    # An auditor must notice any change: here the binding record is edited to name another bearer.
    receipt = json.loads(receipt_path.read_text(encoding="utf-8"))
    record = receipt["records"]["binding"]["record"]
    receipt["records"]["binding"]["record"] = record.replace('"bearer":"alice"', '"bearer":"mallory"')
    altered_path = workspace.root / "receipt-altered.json"
    altered_path.write_text(json.dumps(receipt), encoding="utf-8")
    altered = _receipt_verify(altered_path, gate_key)
    return original == 0 and altered == 3


def _receipt_verify(path: Path, gate_key: Path) -> int:
    command = [str(ETLB_COMMAND), "receipt", "verify", str(path), "--gate-key", str(gate_key)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    console.print(f"$ etlb receipt verify {path.name} --gate-key {gate_key.name}", style="bold", markup=False)
    console.print((completed.stdout + completed.stderr).strip(), markup=False, highlight=False)
    return completed.returncode


def _commit_count(repo: Path) -> int:
    return int(_run(["git", "-C", str(repo), "rev-list", "--count", "HEAD"]).strip())


def _print_summary(results: list[StepResult]) -> None:
    table = Table(title="etlb demo: decisions per tool call")
    table.add_column("#", justify="right")
    table.add_column("tool")
    table.add_column("decision")
    table.add_column("bearer or reason")
    table.add_column("expected")
    table.add_column("ok", justify="center")

    styles = {"passed": "cyan", "bound": "green", "refused": "red", "pending": "yellow", "approved": "green"}
    for number, result in enumerate(results, start=1):
        decision = result.decision
        expected = result.expected
        expected_text = f"{expected['decision']} {expected.get('bearer') or expected.get('code') or ''}".rstrip()
        table.add_row(
            str(number),
            result.tool,
            f"[{styles.get(decision.decision, 'white')}]{decision.decision}[/]",
            decision.describe(),
            expected_text,
            "✓" if decision.matches(expected) else "[bold red]✗[/]",
        )
    console.print(table)


def _etlb(*arguments: str, quiet: bool = False) -> str:
    output = _run([str(ETLB_COMMAND), *arguments])
    if not quiet:
        console.print(f"$ {shlex.join(['etlb', *arguments])}", style="bold", highlight=False, markup=False)
        console.print(output.rstrip(), style="dim", highlight=False, markup=False)
    return output


def _run(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        message = f"cannot run {command[0]}: {error.strerror}. Run `make demo`, which creates the virtual environment."
        raise DemoError(message) from error

    if completed.returncode != 0:
        message = f"command failed with exit status {completed.returncode}: {' '.join(command)}\n{completed.stderr}"
        raise DemoError(message)
    return completed.stdout


if __name__ == "__main__":
    sys.exit(main())
