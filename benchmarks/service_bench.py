"""Measure binds per second through the HTTP service, with and without group commit.

Run from the repository root after `make test` or `make demo` has created .venv:

    .venv/bin/python benchmarks/service_bench.py [--seconds 5] [--postgres-url URL] [--output benchmarks/results.md]

For each store (SQLite, and PostgreSQL when `--postgres-url` or `ETLB_TEST_POSTGRES_URL` names an
empty database this script may fill), each concurrency (1, 16 and 64 clients) and group commit on and
off, it starts `etlb serve` on 127.0.0.1, lets the clients bind as fast as they can for a fixed time,
stops the server by its pid, and reports durable binds per second. Every bind is a real binding:
classified, judged against the scope's budget, committed with a signed checkpoint, and answered only
after the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from results_page import machine, write_section

ETLB = str(Path(sys.executable).parent / "etlb")
CONCURRENCY = (1, 16, 64)

CONFIG = """
[gate]
store = "STORE_URL"
agent = "bench-agent"

[[rules]]
server = "bank"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load time per measurement (default 5)")
    parser.add_argument("--postgres-url", default=os.environ.get("ETLB_TEST_POSTGRES_URL"), help="PostgreSQL URL")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results.md"), help="results file")
    options = parser.parse_args()

    stores = [("SQLite", None)]
    if options.postgres_url:
        stores.append(("PostgreSQL", options.postgres_url))

    rows: list[str] = []
    for name, url in stores:
        for clients in CONCURRENCY:
            single = measure(url, clients, group_commit=False, seconds=options.seconds)
            grouped = measure(url, clients, group_commit=True, seconds=options.seconds)
            rows.append(f"| {name} | {clients} | {single:,.0f} | {grouped:,.0f} | {grouped / single:.2f} |")

    lines = [
        f"## Service, {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Command: `.venv/bin/python benchmarks/service_bench.py --seconds {options.seconds:g}`"
        + (" with a PostgreSQL URL" if options.postgres_url else " (no PostgreSQL URL: SQLite only)"),
        f"Machine: {machine()}",
        "",
        "Durable binds per second through `etlb serve` (HTTP on 127.0.0.1, clients on the same machine):",
        "",
        "| store | concurrent clients | one commit per bind | group commit | group / one |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    section = "\n".join(lines)
    write_section(options.output, "Service,", section)
    print(section)
    return 0


def measure(postgres_url: str | None, clients: int, *, group_commit: bool, seconds: float) -> float:
    folder = Path(tempfile.mkdtemp(prefix="etlb-bench-"))
    try:
        if postgres_url:
            reset_postgres(postgres_url)
        config = folder / "etlb.toml"
        config.write_text(CONFIG.replace("STORE_URL", postgres_url or "sqlite:///etlb.db"), encoding="utf-8")
        environment = {**os.environ, "ETLB_ADMIN_TOKEN": secrets.token_urlsafe(32)}
        api_key = prepare(config, folder, environment)

        port = free_port()
        flag = "--group-commit" if group_commit else "--no-group-commit"
        command = [ETLB, "--config", str(config), "serve", "--host", "127.0.0.1", "--port", str(port), flag]
        server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(port)
            count = asyncio.run(load(port, api_key, clients, seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        label = "group commit" if group_commit else "one commit per bind"
        print(f"{clients} clients, {label}: {count / seconds:,.0f} binds/s", file=sys.stderr)
        return count / seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare(config: Path, folder: Path, environment: dict[str, str]) -> str:
    def etlb(*arguments: str) -> str:
        command = [ETLB, "--config", str(config), *arguments]
        return subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout

    etlb("init")
    etlb("keygen", "--out", str(folder / "b.key"))
    etlb("bearer", "add", "bench", "--name", "Bench", "--key", str(folder / "b.pub.jwk"))
    etlb(
        "scope", "declare", "--bearer", "bench", "--key", str(folder / "b.key"), "--kind", "payments.transfer",
        "--resource", "account:*", "--valid-for", "1h", "--terms", "benchmark", "--yes",
    )  # fmt: skip
    return etlb("agent", "add", "bench-agent").strip().splitlines()[-1]


def reset_postgres(url: str) -> None:
    """Empty the benchmark database, so every measurement starts from the same store."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    message = f"etlb serve did not answer on port {port} within 30 seconds"
    raise RuntimeError(message)


async def load(port: int, api_key: str, clients: int, seconds: float) -> int:
    """Run `clients` loops that bind until the time is up; return the number of bindings made."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {api_key}"}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits) as client:

        async def one(worker: int) -> int:
            made = 0
            while time.monotonic() < deadline:
                body = {
                    "tool": "transfer",
                    "server": "bank",
                    "arguments": {"from_account": "DE89", "n": made, "w": worker},
                }
                response = await client.post("/v1/bindings", json=body, timeout=30)
                if response.status_code != 201:
                    message = f"bind failed with {response.status_code}: {response.text[:200]}"
                    raise RuntimeError(message)
                made += 1
            return made

        return sum(await asyncio.gather(*(one(worker) for worker in range(clients))))


if __name__ == "__main__":
    sys.exit(main())
