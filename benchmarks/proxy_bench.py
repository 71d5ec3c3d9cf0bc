"""Measure the latency the MCP proxy adds to each `tools/call`, against calling the server directly.

Run from the repository root after `make test` or `make demo` has created .venv:

    .venv/bin/python benchmarks/proxy_bench.py [--calls 300] [--output benchmarks/results.md]

The upstream server is the real `mcp-server-git` on a temporary repository. Three ways of calling
`git_status` are timed, each through a real MCP client session over stdio: directly, through
`etlb mcp-proxy` where the call is reversible and passes, and through the proxy where a rule makes the
call irreversible, so that every call is bound to a bearer (one durable commit) and its outcome
recorded (a second one) before the result returns.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

sys.path.insert(0, str(Path(__file__).parent))
from results_page import machine, write_section

BIN = Path(sys.executable).parent
ETLB = str(BIN / "etlb")
GIT_SERVER = str(BIN / "mcp-server-git")

PASS_CONFIG = """
[gate]
store = "sqlite:///etlb.db"
agent = "bench-agent"

[servers.git]
trusted = true
"""

BOUND_CONFIG = (
    PASS_CONFIG
    + """
[[rules]]
server = "git"
tool = "git_status"
kind = "git.status"
resource = "repo:{repo_path}"
"""
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per way (default 300)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results.md"), help="results file")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="etlb-bench-") as folder:
        root = Path(folder)
        repo = make_repository(root / "repo")
        direct = anyio.run(measure, [GIT_SERVER, "--repository", str(repo)], repo, options.calls)
        passed = anyio.run(measure, proxy_command(root / "pass", PASS_CONFIG, repo, bound=False), repo, options.calls)
        bound = anyio.run(measure, proxy_command(root / "bound", BOUND_CONFIG, repo, bound=True), repo, options.calls)

    rows = [
        ("direct to mcp-server-git", *percentiles(direct), "1.00"),
        ("through etlb mcp-proxy, reversible (passes)", *percentiles(passed), ratio(passed, direct)),
        ("through etlb mcp-proxy, bound and outcome recorded", *percentiles(bound), ratio(bound, direct)),
    ]
    lines = [
        f"## MCP proxy, {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Command: `.venv/bin/python benchmarks/proxy_bench.py --calls {options.calls}`",
        f"Machine: {machine()}",
        "",
        "Latency of one `tools/call` of `git_status`, client to result:",
        "",
        "| way | p50 | p99 | p50 / direct p50 |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {p50} | {p99} | {share} |" for name, p50, p99, share in rows),
        "",
    ]
    section = "\n".join(lines)
    write_section(options.output, "MCP proxy,", section)
    print(section)
    return 0


def make_repository(path: Path) -> Path:
    path.mkdir()
    for command in (
        ["git", "init", "--quiet"],
        [
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
            "commit",
            "--allow-empty",
            "-m",
            "start",
            "--quiet",
        ],
    ):
        subprocess.run(command, cwd=path, check=True)
    return path


def proxy_command(folder: Path, config_text: str, repo: Path, *, bound: bool) -> list[str]:
    folder.mkdir()
    config = folder / "etlb.toml"
    config.write_text(config_text, encoding="utf-8")

    def etlb(*arguments: str) -> None:
        subprocess.run([ETLB, "--config", str(config), *arguments], check=True, capture_output=True)

    etlb("init")
    if bound:
        etlb("keygen", "--out", str(folder / "b.key"))
        etlb("bearer", "add", "bench", "--name", "Bench", "--key", str(folder / "b.pub.jwk"))
        etlb(
            "scope", "declare", "--bearer", "bench", "--key", str(folder / "b.key"), "--kind", "git.status",
            "--resource", f"repo:{repo}", "--valid-for", "1h", "--terms", "benchmark", "--yes",
        )  # fmt: skip
    return [
        ETLB,
        "--config",
        str(config),
        "mcp-proxy",
        "--agent",
        "bench-agent",
        "--",
        GIT_SERVER,
        "--repository",
        str(repo),
    ]


async def measure(command: list[str], repo: Path, calls: int) -> list[float]:
    parameters = StdioServerParameters(command=command[0], args=command[1:])
    durations: list[float] = []
    async with Client(parameters) as client:
        await client.call_tool("git_status", {"repo_path": str(repo)})
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.call_tool("git_status", {"repo_path": str(repo)})
            durations.append(time.perf_counter() - started)
            if result.is_error:
                message = f"git_status failed through {command[0]}: {result.content}"
                raise RuntimeError(message)
    return durations


def percentiles(durations: list[float]) -> tuple[str, str]:
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:.2f} ms", f"{p99 * 1000:.2f} ms"


def ratio(ours: list[float], reference: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(reference):.2f}"


if __name__ == "__main__":
    sys.exit(main())
