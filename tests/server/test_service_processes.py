"""Several `etlb serve` processes on one store: the race on a scope's last units, and a killed service.

Each test starts real service processes on 127.0.0.1 and stops them by their pids. On PostgreSQL the
processes share one database, as gates on different hosts would.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.ledger.verify import verify_ledger
from etlb.model import Limits
from etlb.signing import sign_payload
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, build_world

pytestmark = pytest.mark.integration

ETLB = str(Path(sys.executable).parent / "etlb")


def prepare(tmp_path: Path, backend: Backend, max_count: int | None) -> str:
    """Register a bearer, a scope valid on the real clock and an agent; return the agent's API key."""
    world = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    world.add_bearer("alice")
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["payments.transfer"],
        resources=["**"],
        agents=["*"],
        limits=Limits(max_count=max_count),
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=1),
        terms="alice accepts liability for transfers",
        issued_at=now,
    )
    world.gate.declare_scope(sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP))
    api_key = world.gate.register_agent("agent-1")
    world.gate.close()
    return api_key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def services(config: Path, count: int) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    environment = {**os.environ, "ETLB_ADMIN_TOKEN": secrets.token_urlsafe(32)}
    started = []
    try:
        for _ in range(count):
            port = free_port()
            command = [ETLB, "--config", str(config), "serve", "--host", "127.0.0.1", "--port", str(port)]
            process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started.append((process, port))
        for process, port in started:
            wait_until_up(process, port)
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def wait_until_up(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = f"etlb serve exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            raise AssertionError(message)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"etlb serve on port {port} did not start within 30 seconds")


def transfer_body(number: int) -> dict:
    return {
        "tool": "transfer",
        "server": "bank",
        "arguments": {"from_account": "DE89-0001", "amount": "1", "currency": "EUR", "n": number},
    }


@both_backends
def test_two_services_race_for_last_units(tmp_path: Path, backend: Backend) -> None:
    api_key = prepare(tmp_path, backend, max_count=10)

    async def race(ports: list[int]) -> list[tuple[int, str]]:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as client:

            async def one(number: int) -> tuple[int, str]:
                port = ports[number % len(ports)]
                response = await client.post(f"http://127.0.0.1:{port}/v1/bindings", json=transfer_body(number))
                return response.status_code, response.json().get("code", "")

            return await asyncio.gather(*(one(number) for number in range(100)))

    with services(tmp_path / "etlb.toml", 2) as running:
        results = asyncio.run(race([port for _, port in running]))

    assert sum(status == 201 for status, _ in results) == 10
    assert sorted(code for status, code in results if status != 201) == ["count_exhausted"] * 90
    store = backend.open_store()
    records = [json.loads(entry.record) for entry in store.ledger_entries()]
    assert [record["seq"] for record in records] == list(range(len(records)))
    assert sum(record["type"] == "binding" for record in records) == 10
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()


@both_backends
def test_killed_service_keeps_acknowledged_bindings(tmp_path: Path, backend: Backend) -> None:
    api_key = prepare(tmp_path, backend, max_count=None)
    acknowledged: list[str] = []

    async def load(port: int, process: subprocess.Popen[bytes]) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:

            async def worker(index: int) -> None:
                number = index * 10_000
                while True:
                    number += 1
                    try:
                        response = await client.post(f"http://127.0.0.1:{port}/v1/bindings", json=transfer_body(number))
                    except httpx.HTTPError:
                        return
                    if response.status_code == 201:
                        acknowledged.append(response.json()["binding"]["binding_id"])

            async def killer() -> None:
                await asyncio.sleep(1.5)
                process.send_signal(signal.SIGKILL)

            await asyncio.gather(killer(), *(worker(index) for index in range(16)))

    with services(tmp_path / "etlb.toml", 1) as running:
        process, port = running[0]
        asyncio.run(load(port, process))
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

    assert len(acknowledged) > 0
    store = backend.open_store()
    recorded = {
        json.loads(entry.record)["data"]["binding_id"]
        for entry in store.ledger_entries()
        if json.loads(entry.record)["type"] == "binding"
    }
    assert set(acknowledged) <= recorded
    # Every binding the ledger holds has its reservation in the usage table, and no more.
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()
