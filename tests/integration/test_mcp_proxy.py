"""`etlb mcp-proxy` against the real `mcp-server-git`, through a real MCP client session over stdio.

Each test runs the proxy as a subprocess (`etlb mcp-proxy`), which runs `mcp-server-git` on a fresh
git repository. Bearer Alice and her scope are set up through the Python API: at most 2 commits of
kind `git.commit` on `repo:<repository path>` by `demo-agent`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent

from etlb.canonical import sha256_digest
from etlb.config import load_config
from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.gate import Gate
from etlb.gate_key import create_gate_key
from etlb.mcp_proxy import default_server_name
from etlb.model import Bearer, BearerKey, Limits
from etlb.signing import generate_private_key, key_id, public_jwk, sign_payload
from etlb.store import open_store

BIN_DIR = Path(sys.executable).parent
ETLB_COMMAND = BIN_DIR / "etlb"
GIT_SERVER_COMMAND = BIN_DIR / "mcp-server-git"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = PROJECT_ROOT / "examples" / "demo" / "run_demo.py"

AGENT = "demo-agent"
SESSION_TIMEOUT_SECONDS = 60

CONFIG_TEXT = """\
[gate]
store = "sqlite:///etlb.db"
agent = "demo-agent"

[servers.git]
trusted = true

[[rules]]
server = "git"
tool = "git_commit"
kind = "git.commit"
consequence = "irreversible"
resource = "repo:{repo_path}"

[[rules]]
server = "git"
tool = "git_add"
kind = "git.add"
consequence = "reversible"
resource = "repo:{repo_path}"

[[rules]]
server = "git"
tool = "git_reset"
kind = "git.reset"
resource = "repo:{repo_path}"
"""


@dataclass(frozen=True)
class Setup:
    repo: Path
    config: Path
    scope_id: str


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    repo = (tmp_path / "repo").resolve()
    repo.mkdir()
    _git(repo, "init", "--quiet")
    _git(repo, "config", "user.name", "Test Agent")
    _git(repo, "config", "user.email", "test-agent@example.invalid")
    (repo / "README.md").write_text("# test\n", encoding="utf-8")
    _git(repo, "add", "README.md")
    _git(repo, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", "Initial commit")

    config_path = tmp_path / "etlb" / "etlb.toml"
    config_path.parent.mkdir()
    config_path.write_text(CONFIG_TEXT, encoding="utf-8")
    config = load_config(config_path)

    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["git.commit"],
        resources=[f"repo:{repo}"],
        agents=[AGENT],
        limits=Limits(max_count=2),
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(hours=1),
        terms="I accept liability for up to 2 commits to the test repository.",
        issued_at=now,
    )
    signer = create_gate_key(config.key_path, config.origin)
    store = open_store(config.store_url, base_dir=config.base_dir, create=True, signer=signer)
    with Gate(config, store) as gate:
        gate.register_bearer(Bearer(id="alice", name="Alice Example", keys=(BearerKey(key_id(jwk), jwk),)))
        scope = gate.declare_scope(sign_payload(private_key, payload, typ=SCOPE_TYP))
    return Setup(repo=repo, config=config_path, scope_id=scope.id)


@asynccontextmanager
async def proxy_session(
    setup: Setup, *, mode: str = "auto", environment: dict[str, str] | None = None, server: str | None = None
) -> AsyncIterator[Client]:
    """Start `etlb mcp-proxy` in front of `mcp-server-git` and connect an MCP client to it.

    `environment` adds variables to the MCP SDK's default environment for the proxy, and `server`
    is passed as `--server` (by default the proxy names the server `git`).
    """
    server_option = ["--server", server] if server is not None else []
    parameters = StdioServerParameters(
        command=str(ETLB_COMMAND),
        args=[
            "--config",
            str(setup.config),
            "mcp-proxy",
            "--agent",
            AGENT,
            *server_option,
            "--",
            str(GIT_SERVER_COMMAND),
            "--repository",
            str(setup.repo),
        ],
        env=environment,
    )
    with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with Client(parameters, cache=None, mode=mode) as client:
            yield client


@asynccontextmanager
async def upstream_session(setup: Setup) -> AsyncIterator[Client]:
    """Connect an MCP client straight to `mcp-server-git`, to compare the proxy with it."""
    parameters = StdioServerParameters(command=str(GIT_SERVER_COMMAND), args=["--repository", str(setup.repo)])
    with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with Client(parameters, cache=None) as client:
            yield client


def ledger_records(setup: Setup) -> list[dict[str, Any]]:
    config = load_config(setup.config)
    store = open_store(config.store_url, base_dir=config.base_dir, create=False)
    try:
        return [json.loads(entry.record) for entry in store.ledger_entries()]
    finally:
        store.close()


def records_of_type(setup: Setup, record_type: str) -> list[dict[str, Any]]:
    return [record for record in ledger_records(setup) if record["type"] == record_type]


def result_text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def refusal_details(result: CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict)
    details: dict[str, Any] = result.structured_content["etlb_refusal"]
    return details


def commit_count(repo: Path) -> int:
    return int(_git(repo, "rev-list", "--count", "HEAD").strip())


def stage_new_file(repo: Path, name: str) -> None:
    (repo / name).write_text(f"{name}\n", encoding="utf-8")
    _git(repo, "add", name)


def _git(repo: Path, *arguments: str) -> str:
    completed = subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True, text=True, check=True)
    return completed.stdout


# default_server_name


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["mcp-server-git", "--repository", "."], "git"),
        (["/usr/local/bin/mcp-server-fetch"], "fetch"),
        (["C:/tools/mcp-server-time.exe"], "time"),
        (["uvx", "mcp-server-git"], "uvx"),
        (["mcp-server-"], "mcp-server-"),
        (["./payments-server"], "payments-server"),
    ],
)
def test_default_server_name(command: list[str], expected: str) -> None:
    assert default_server_name(command) == expected


def test_default_server_name_rejects_empty_command() -> None:
    with pytest.raises(ValueError, match="no upstream server command given"):
        default_server_name([])


# The proxy against mcp-server-git


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_list_forwarded(setup: Setup, mode: str) -> None:
    async with upstream_session(setup) as upstream:
        upstream_tools = (await upstream.list_tools()).tools

    async with proxy_session(setup, mode=mode) as client:
        proxied_tools = (await client.list_tools()).tools

    assert [tool.name for tool in proxied_tools] == [tool.name for tool in upstream_tools]
    assert [tool.annotations for tool in proxied_tools] == [tool.annotations for tool in upstream_tools]
    assert [tool.input_schema for tool in proxied_tools] == [tool.input_schema for tool in upstream_tools]


@pytest.mark.integration
@pytest.mark.anyio
async def test_resources_and_prompts_forwarded(setup: Setup) -> None:
    async with upstream_session(setup) as upstream:
        upstream_capabilities = upstream.server_capabilities

    async with proxy_session(setup) as client:
        capabilities = client.server_capabilities
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        prompts = await client.list_prompts()

    # mcp-server-git advertises resources and prompts but has none, so empty lists come back.
    assert upstream_capabilities.resources is not None
    assert upstream_capabilities.prompts is not None
    assert capabilities.resources is not None
    assert capabilities.prompts is not None
    assert resources.resources == []
    assert templates.resource_templates == []
    assert prompts.prompts == []


@pytest.mark.integration
@pytest.mark.anyio
async def test_read_only_call_passes(setup: Setup) -> None:
    records_before = ledger_records(setup)
    async with upstream_session(setup) as upstream:
        expected = await upstream.call_tool("git_status", {"repo_path": str(setup.repo)})

    # The client calls the tool without listing tools first, so the proxy lists them itself to read
    # the readOnlyHint of git_status.
    async with proxy_session(setup) as client:
        result = await client.call_tool("git_status", {"repo_path": str(setup.repo)})

    assert result.is_error is False
    assert result.content == expected.content
    assert result_text(result).startswith("Repository status:\nOn branch ")
    # A reversible action is neither bound nor refused, so it adds no ledger record.
    assert ledger_records(setup) == records_before


@pytest.mark.integration
@pytest.mark.anyio
async def test_untrusted_server_read_only_refused(setup: Setup) -> None:
    # etlb.toml trusts only the server named git, so the same readOnlyHint counts for nothing here.
    async with proxy_session(setup, server="git-untrusted") as client:
        result = await client.call_tool("git_status", {"repo_path": str(setup.repo)})

    assert result.is_error is True
    details = refusal_details(result)
    assert details["code"] == "no_covering_scope"
    assert details["action"]["kind"] == "tool.git-untrusted.git_status"
    assert details["action"]["server"] == "git-untrusted"
    assert details["action"]["consequence"] == "irreversible"


@pytest.mark.integration
@pytest.mark.anyio
async def test_commit_bound_to_bearer(setup: Setup) -> None:
    stage_new_file(setup.repo, "first.txt")

    async with proxy_session(setup) as client:
        result = await client.call_tool("git_commit", {"repo_path": str(setup.repo), "message": "Add first"})

    assert result.is_error is False
    assert result_text(result).startswith("Changes committed successfully with hash ")
    assert commit_count(setup.repo) == 2

    bindings = records_of_type(setup, "binding")
    assert len(bindings) == 1
    binding = bindings[0]["data"]
    assert binding["bearer"] == "alice"
    assert binding["scope_id"] == setup.scope_id
    assert binding["action"]["kind"] == "git.commit"
    assert binding["action"]["resource"] == f"repo:{setup.repo}"
    assert binding["action"]["agent"] == AGENT
    assert binding["action"]["server"] == "git"
    assert binding["action"]["arguments"] == {"repo_path": str(setup.repo), "message": "Add first"}

    outcomes = records_of_type(setup, "outcome")
    assert len(outcomes) == 1
    outcome = outcomes[0]["data"]
    assert outcome["binding_id"] == binding["binding_id"]
    assert outcome["status"] == "succeeded"
    content = [block.model_dump(by_alias=True, mode="json", exclude_none=True) for block in result.content]
    assert outcome["detail"] == sha256_digest(content)


@pytest.mark.integration
@pytest.mark.anyio
async def test_commit_over_count_refused(setup: Setup) -> None:
    results: list[CallToolResult] = []
    async with proxy_session(setup) as client:
        for name in ("first.txt", "second.txt", "third.txt"):
            stage_new_file(setup.repo, name)
            arguments = {"repo_path": str(setup.repo), "message": f"Add {name}"}
            results.append(await client.call_tool("git_commit", arguments))

    assert [result.is_error for result in results] == [False, False, True]
    refused = results[2]
    text = result_text(refused)
    assert "count_exhausted" in text
    assert f"- scope {setup.scope_id} of bearer alice: count_exhausted: " in text
    assert "Bearers who could accept liability for this action: alice." in text
    assert "etlb scope declare --kind 'git.commit'" in text

    details = refusal_details(refused)
    assert details["code"] == "count_exhausted"
    assert details["bearers_nearby"] == ["alice"]
    assert details["recorded"] is True
    assert [reason["code"] for reason in details["reasons"]] == ["count_exhausted"]

    # The third commit never reached git: the repository has the initial commit and 2 bound ones.
    assert commit_count(setup.repo) == 3
    assert _git(setup.repo, "diff", "--cached", "--name-only").split() == ["third.txt"]
    refusals = records_of_type(setup, "refusal")
    assert [refusal["data"]["refusal_id"] for refusal in refusals] == [details["refusal_id"]]
    assert refusals[0]["data"]["code"] == "count_exhausted"
    assert len(records_of_type(setup, "binding")) == 2


@pytest.mark.integration
@pytest.mark.anyio
async def test_reset_refused_repository_unchanged(setup: Setup) -> None:
    stage_new_file(setup.repo, "staged.txt")
    head_before = _git(setup.repo, "rev-parse", "HEAD")

    async with proxy_session(setup) as client:
        result = await client.call_tool("git_reset", {"repo_path": str(setup.repo)})

    assert result.is_error is True
    details = refusal_details(result)
    assert details["code"] == "no_covering_scope"
    assert details["action"]["kind"] == "git.reset"
    assert details["bearers_nearby"] == []
    assert "no_covering_scope" in result_text(result)

    assert _git(setup.repo, "rev-parse", "HEAD") == head_before
    # mcp-server-git's git_reset unstages everything, so a refused reset leaves the file staged.
    assert _git(setup.repo, "diff", "--cached", "--name-only").split() == ["staged.txt"]
    assert [record["data"]["code"] for record in records_of_type(setup, "refusal")] == ["no_covering_scope"]


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "code"),
    [
        ("drop_everything", "no_covering_scope"),
        ("git_commit; rm -rf /", "no_covering_scope"),
        ("", "classification_failed"),
    ],
)
async def test_unknown_tool_refused_before_upstream(setup: Setup, tool: str, code: str) -> None:
    async with proxy_session(setup) as client:
        result = await client.call_tool(tool, {"repo_path": str(setup.repo)})

    # mcp-server-git returns a JSON-RPC error (-32602) for an unknown tool, so a tool result with an
    # etlb refusal shows that the proxy returned it without calling the upstream server.
    assert result.is_error is True
    details = refusal_details(result)
    assert details["code"] == code
    assert details["action"]["tool"] == tool
    assert details["action"]["consequence"] == "irreversible"
    assert records_of_type(setup, "binding") == []
    assert [record["data"]["code"] for record in records_of_type(setup, "refusal")] == [code]


@pytest.mark.integration
@pytest.mark.anyio
async def test_store_failure_refused(setup: Setup) -> None:
    stage_new_file(setup.repo, "first.txt")
    config = load_config(setup.config)
    database = config.base_dir / "etlb.db"

    async with proxy_session(setup) as client:
        # Rename the ledger table under the running proxy, so that its next transaction fails.
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE ledger RENAME TO ledger_moved")
        result = await client.call_tool("git_commit", {"repo_path": str(setup.repo), "message": "Add first"})

    assert result.is_error is True
    details = refusal_details(result)
    assert details["code"] == "store_unavailable"
    assert details["recorded"] is False
    assert "store_unavailable" in result_text(result)
    assert commit_count(setup.repo) == 1


@pytest.mark.integration
@pytest.mark.anyio
async def test_failed_commit_outcome_recorded(setup: Setup) -> None:
    async with proxy_session(setup) as client:
        # Nothing is staged, so mcp-server-git returns an error result after the gate bound the call.
        result = await client.call_tool("git_commit", {"repo_path": str(setup.repo), "message": "Empty"})

    assert result.is_error is True
    assert result.structured_content is None
    bindings = records_of_type(setup, "binding")
    outcomes = records_of_type(setup, "outcome")
    assert len(bindings) == 1
    assert len(outcomes) == 1
    assert outcomes[0]["data"]["binding_id"] == bindings[0]["data"]["binding_id"]
    assert outcomes[0]["data"]["status"] == "failed"
    assert outcomes[0]["data"]["detail"] == result_text(result)
    assert commit_count(setup.repo) == 1


@pytest.mark.integration
@pytest.mark.anyio
async def test_missing_store_refuses_irreversible_calls(setup: Setup, tmp_path: Path) -> None:
    stage_new_file(setup.repo, "first.txt")
    missing = tmp_path / "missing" / "etlb.db"

    async with proxy_session(setup, environment={"ETLB_STORE": f"sqlite:///{missing}"}) as client:
        status = await client.call_tool("git_status", {"repo_path": str(setup.repo)})
        commit = await client.call_tool("git_commit", {"repo_path": str(setup.repo), "message": "Add first"})

    # Reversible calls need no store, but every irreversible call is refused while it is missing.
    assert status.is_error is False
    assert commit.is_error is True
    details = refusal_details(commit)
    assert details["code"] == "store_unavailable"
    assert details["recorded"] is False
    assert f"store {missing} does not exist" in details["message"]
    assert commit_count(setup.repo) == 1
    assert not missing.exists()


@pytest.mark.integration
def test_proxy_exits_when_upstream_cannot_start(setup: Setup, tmp_path: Path) -> None:
    missing_command = tmp_path / "mcp-server-missing"
    completed = subprocess.run(
        [str(ETLB_COMMAND), "--config", str(setup.config), "mcp-proxy", "--", str(missing_command)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # A wide terminal keeps rich from wrapping the error message inside the path.
        env={**os.environ, "COLUMNS": "1000"},
        timeout=SESSION_TIMEOUT_SECONDS,
        check=False,
    )

    assert completed.returncode == 1
    assert f"error: cannot start upstream MCP server '{missing_command}'" in completed.stderr


# The demo


@pytest.mark.integration
def test_demo_runs_end_to_end() -> None:
    completed = subprocess.run(
        [sys.executable, str(DEMO_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        check=False,
    )
    output = completed.stdout

    assert completed.returncode == 0, output + completed.stderr
    assert "1. git_status: passed" in output
    assert "2. git_add: passed" in output
    assert "3. git_commit: bound alice" in output
    assert "5. git_commit: bound alice" in output
    assert "7. git_commit: pending approval_pending" in output
    assert "8. etlb approve: approved bob" in output
    assert "Accept liability for this action as bob? [y/N]: y" in output
    assert "9. git_commit: bound bob" in output
    assert "10. git_reset: refused no_approvers" in output
    assert "ledger verified: 13 records" in output
    assert "receipt verified" in output
    assert "receipt is not valid: records.binding" in output
    assert "repository has 4 commits, expected 4" in output
    assert "demo passed: every decision matches the transcript" in output
