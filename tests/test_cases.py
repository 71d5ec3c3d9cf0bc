"""Real-world incident scenarios, each replayed against a gate with the scopes translated to etlb's format.

`tests/data/scenarios.jsonl` holds the scenarios: the tool call as the agent made it, the annotations
its server declared, the declarations in force and the expected decision. The table below gives, per
scenario, the server and tool name etlb sees and the scopes in etlb's own terms. Every scenario in the
file must have an entry, so a new scenario cannot be skipped silently.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from etlb.errors import Refused
from etlb.gate import Gate
from etlb.model import ToolCall
from etlb.store.sqlite import SQLiteStore
from tests.conftest import World, build_world

SCENARIOS = {
    scenario["id"]: scenario
    for scenario in map(json.loads, (Path(__file__).parent / "data" / "scenarios.jsonl").read_text().splitlines())
}

CASES_CONFIG = """
[gate]
store = "sqlite:///etlb.db"
agent = "agent-1"

[servers.github]
trusted = true

[[rules]]
tool = "execute_sql"
server = "db"
kind = "db.sql.execute"
analyser = "sql"
command = "{sql}"
database = "{database}"

[[rules]]
server = "supabase"
tool = "execute_sql"
kind = "db.sql.execute"
analyser = "sql"
command = "{query}"
database = "{project_id}"

[[rules]]
server = "postgres"
tool = "query"
kind = "db.sql.execute"
analyser = "sql"
command = "{sql}"
database = "postgres"

[[rules]]
server = "filesystem"
tool = "edit_file"
kind = "fs.edit.preview"
consequence = "reversible"
arguments = { dryRun = true }

[[rules]]
tool = "Bash"
kind = "shell.exec"
analyser = "shell"
command = "{command}"
cwd = "CASE_CWD"
home = "/home/user-a"

[[rules]]
tool = "run_*"
kind = "shell.exec"
analyser = "shell"
command = "{command}"
cwd = "CASE_CWD"
home = "/home/user-a"

[[rules]]
tool = "send_message"
kind = "messaging.send"
resource = "channel:{channel}"

[[rules]]
tool = "ha_call_service"
kind = "home.service.call"
resource = "entity:{entity_id}"

[[rules]]
server = "stripe"
tool = "create_refund"
kind = "payments.refund"
resource = "account:acct_placeholder"
amount = "{amount}"
unit = "USD"
amount_scale = 2

[[rules]]
server = "github"
tool = "create_pull_request"
kind = "github.pull_request.create"
resource = "repo:{owner}/{repo}"

[[rules]]
server = "github"
tool = "merge_pull_request"
kind = "github.pull_request.merge"
resource = "repo:{owner}/{repo}"

[[rules]]
tool = "kintone-delete-records"
kind = "kintone.records.delete"
resource = "kintone-app:{app}"
"""


@dataclass
class ScopeSpec:
    bearer: str
    kinds: list[str]
    resources: list[str]
    max_count: int | None = None
    max_total: str | None = None
    max_amount: str | None = None
    revoked: bool = False
    consume: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Case:
    tool: str
    server: str | None
    scopes: list[ScopeSpec]
    gap: str | None = None
    cwd: str = "/srv/repo-a"


# Scenario scopes written `shell:<program> <subcommand>` become kinds `shell.<program>.<subcommand>`,
# resources `path:…/**` stay trees, and SQL `effects` become statement kinds (`read` is `sql.select`,
# `write` the data-changing statements, `ddl` the schema statements). Shell and SQL tools are
# classified by the analysers, so each simple command or statement must be covered.
CASES: dict[str, Case] = {
    "A1-drop-prod-no-scope": Case(
        "execute_sql",
        "db",
        [ScopeSpec("bearer-a", ["sql.insert", "sql.update", "sql.delete", "sql.ddl.*"], ["db:dev/*"])],
    ),
    "A1-freeze-revoked": Case(
        "execute_sql",
        "db",
        [ScopeSpec("bearer-a", ["sql.insert", "sql.update", "sql.delete"], ["db:prod/*"], revoked=True)],
    ),
    "A2-rm-outside-allowlist": Case(
        "Bash",
        None,
        [
            ScopeSpec(
                "bearer-a",
                ["shell.wc", "shell.find", "shell.ls", "shell.git.checkout"],
                ["path:/home/user-a/src/project-a/**"],
            )
        ],
        cwd="/home/user-a/src/project-a",
    ),
    "A3-chained-git-clean": Case(
        "Bash", None, [ScopeSpec("bearer-a", ["shell.git.fetch", "shell.git.pull"], ["path:/srv/repo-a/**"])]
    ),
    "A3-cursor-cd-prefix": Case(
        "run_terminal_cmd", None, [ScopeSpec("bearer-a", ["shell.cd"], ["path:/srv/infra-a/**"])], cwd="/srv/infra-a"
    ),
    "A5-reset-hard": Case(
        "run_shell_command", None, [ScopeSpec("bearer-a", ["shell.rm", "shell.git.rm"], ["path:/srv/repo-a/impl/**"])]
    ),
    "A5-push-feature-ok": Case(
        "run_shell_command",
        None,
        [ScopeSpec("bearer-b", ["shell.git.push"], ["git-ref:origin/feature/*"])],
    ),
    "A6-quoted-path": Case(
        "run_command",
        None,
        [ScopeSpec("bearer-a", ["shell.rmdir"], ["path:D:/AI Projects/app-a/.vite/**"])],
        cwd="D:/AI Projects/app-a",
    ),
    "A6-move-outside-scope": Case(
        "run_shell_command",
        None,
        [ScopeSpec("bearer-a", ["shell.move"], ["path:C:/srv/folder-a/**"])],
        cwd="C:/srv/folder-a",
    ),
    "A7-use-aws-delete-user": Case("use_aws", None, []),
    "A8-github-pr-no-scope": Case(
        "create_pull_request",
        "github",
        [
            ScopeSpec(
                "bearer-a",
                ["github.issues.list", "github.issue.read", "github.file_contents.get"],
                ["repo:user-a/*"],
            )
        ],
    ),
    "A8-github-pr-in-scope": Case(
        "create_pull_request",
        "github",
        [ScopeSpec("bearer-a", ["github.pull_request.create"], ["repo:user-a/public-repo-a"])],
    ),
    "A8-supabase-exfil-insert": Case(
        "execute_sql",
        "supabase",
        [ScopeSpec("bearer-a", ["db.sql.read"], ["db:project-a/support_tickets", "db:project-a/support_messages"])],
    ),
    "A11-replay-after-restart": Case(
        "send_message",
        None,
        [ScopeSpec("bearer-a", ["messaging.send"], ["channel:email"], max_count=1, consume=[{}])],
    ),
    "A11-store-unavailable": Case("send_message", None, []),
    "A12-concurrent-identical": Case(
        "ha_call_service",
        None,
        [ScopeSpec("bearer-a", ["home.service.call"], ["entity:script.open_garage_door"], max_count=1)],
    ),
    "A13-budget-race": Case(
        "create_refund",
        "stripe",
        [
            ScopeSpec(
                "bearer-a",
                ["payments.refund"],
                ["account:acct_placeholder"],
                max_total="5.00",
                consume=[{"amount": 480}],
            )
        ],
    ),
    "A15-hint-says-safe": Case("delete_variable_collection", "figwright", []),
    "A15-no-annotations": Case("kintone-delete-records", None, []),
    "A15-no-annotations-bound": Case(
        "kintone-delete-records", None, [ScopeSpec("bearer-b", ["kintone.records.delete"], ["kintone-app:12"])]
    ),
    "A15-readonly-sql-select": Case("query", "postgres", []),
    "B-stripe-refund-over-limit": Case(
        "create_refund",
        "stripe",
        [ScopeSpec("bearer-c", ["payments.refund"], ["account:acct_placeholder"], max_amount="500.00")],
    ),
    "B-stripe-refund-within-limit": Case(
        "create_refund",
        "stripe",
        [ScopeSpec("bearer-c", ["payments.refund"], ["account:acct_placeholder"], max_amount="500.00")],
    ),
    "B-github-merge-no-hint": Case(
        "merge_pull_request",
        "github",
        [ScopeSpec("bearer-a", ["github.pull_request.merge"], ["repo:org-a/service-a"])],
    ),
    "B-github-read-pass": Case("get_file_contents", "github", []),
    "B-unknown-tool": Case("purge_cache", "acme-cdn", []),
    "B-fs-edit-dryrun-pass": Case("edit_file", "filesystem", []),
}

# Scenario reason codes and the etlb codes that decide the same kind of refusal.
REASON_CODES = {
    "NO_COVERING_SCOPE": {"no_covering_scope", "resource_not_covered", "agent_not_covered"},
    "SCOPE_REVOKED": {"scope_revoked"},
    "DECLARATION_CONSUMED": {"count_exhausted", "binding_consumed"},
    "BUDGET_EXHAUSTED": {"budget_exhausted"},
    "AMOUNT_EXCEEDS_SCOPE": {"amount_exceeds_scope"},
    "STORE_UNAVAILABLE": {"store_unavailable"},
}


def test_every_scenario_translated() -> None:
    assert sorted(CASES) == sorted(SCENARIOS)


def prepare(tmp_path: Path, scenario_id: str) -> tuple[World, ToolCall, dict[str, Any] | None]:
    scenario = SCENARIOS[scenario_id]
    case = CASES[scenario_id]
    world = build_world(tmp_path, CASES_CONFIG.replace("CASE_CWD", case.cwd))
    call = ToolCall(tool=case.tool, server=case.server, arguments=scenario["arguments"])

    for spec in case.scopes:
        if spec.bearer not in world.keys:
            world.add_bearer(spec.bearer)
        scope = world.declare(
            spec.bearer,
            kinds=spec.kinds,
            resources=spec.resources,
            max_count=spec.max_count,
            max_total=spec.max_total,
            max_amount=spec.max_amount,
            unit="USD" if spec.max_total or spec.max_amount else None,
        )
        for overrides in spec.consume:
            earlier = ToolCall(tool=case.tool, server=case.server, arguments={**scenario["arguments"], **overrides})
            assert world.gate.bind(earlier) is not None
        if spec.revoked:
            world.gate.revoke_scope(scope.id, administrator="change-freeze")
    return world, call, scenario["annotations"]


def decide(gate: Gate, call: ToolCall, annotations: dict[str, Any] | None) -> tuple[str, str]:
    try:
        binding = gate.bind(call, annotations=annotations)
    except Refused as error:
        return "refuse", error.code.value
    if binding is None:
        return "pass", ""
    return "bind", binding.bearer


SINGLE = [scenario_id for scenario_id, scenario in SCENARIOS.items() if scenario["expected_decision"] != "race"]


@pytest.mark.parametrize("scenario_id", SINGLE)
def test_scenario_decision(tmp_path: Path, scenario_id: str) -> None:
    scenario = SCENARIOS[scenario_id]
    case = CASES[scenario_id]
    if case.gap:
        pytest.xfail(case.gap)
    world, call, annotations = prepare(tmp_path, scenario_id)

    if scenario["scopes_in_force"] is None:
        # After a restart the store's file no longer holds a database, so it cannot be read at all.
        world.gate.close()
        world.path.write_bytes(b"this is not a database" * 512)
        world.gate = Gate.from_config(tmp_path / "etlb.toml", require_store=False)
    elif scenario_id == "A11-replay-after-restart":
        world.gate.close()
        world.gate = Gate(world.gate.config, SQLiteStore(world.path), clock=world.clock)

    decision, detail = decide(world.gate, call, annotations)

    assert decision == scenario["expected_decision"]
    if decision == "bind":
        assert detail == scenario["expected_bearer_or_reason"]
    if decision == "refuse":
        expected = set().union(*(REASON_CODES[code] for code in scenario["expected_bearer_or_reason"].split("|")))
        assert detail in expected
    world.gate.close()


@pytest.mark.parametrize(
    ("scenario_id", "calls", "binds", "code"),
    [
        pytest.param("A12-concurrent-identical", 2, 1, "count_exhausted", id="A12-concurrent-identical"),
        pytest.param("A13-budget-race", 4, 2, "budget_exhausted", id="A13-budget-race"),
    ],
)
def test_scenario_race(tmp_path: Path, scenario_id: str, calls: int, binds: int, code: str) -> None:
    world, call, annotations = prepare(tmp_path, scenario_id)
    barrier = threading.Barrier(calls)
    results: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        # Each thread has its own store connection, as separate agent hosts would.
        gate = Gate(world.gate.config, SQLiteStore(world.path), clock=world.clock)
        barrier.wait()
        result = decide(gate, call, annotations)
        with lock:
            results.append(result)
        gate.close()

    threads = [threading.Thread(target=worker) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == sorted([("bind", "bearer-a")] * binds + [("refuse", code)] * (calls - binds))
    world.gate.close()
