"""What the framework adapters' tests share: a payments world, the ledger by call id, and a live service.

Each adapter's world has one bearer, alice, whose scope covers transfers of at most 100 EUR by
agent-1. A transfer of 500 EUR is refused with `amount_exceeds_scope`, and `search` is reversible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etlb.gate import Gate
from tests.conftest import World, build_world
from tests.server.conftest import ADMIN_TOKEN
from tests.server.test_client import free_port, wait_until_healthy

CONFIG_TEMPLATE = """
[gate]
store = "sqlite:///etlb.db"
agent = "agent-1"

[[rules]]
server = "{server}"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{{from_account}}"
amount = "{{amount}}"
unit = "{{currency}}"

[[rules]]
server = "{server}"
tool = "search"
kind = "docs.search"
consequence = "reversible"
"""

# The model's parallel tool calls in every adapter test: bound, refused, raising, reversible.
BOUND = {"from_account": "DE89-1", "amount": "25", "currency": "EUR"}
REFUSED = {"from_account": "DE89-1", "amount": "500", "currency": "EUR"}
RAISING = {"from_account": "DE89-1", "amount": "13", "currency": "EUR"}
SEARCH = {"query": "fees"}

# The amount at which the test tools raise, so that one bound call fails.
FAILING_AMOUNT = "13"


def payments_world(tmp_path: Path, server: str) -> World:
    """Build a gate whose rules name `server`, with alice's scope of at most 100 EUR per transfer."""
    world = build_world(tmp_path, CONFIG_TEMPLATE.format(server=server))
    # The live service decides on the wall clock, so the scope must be valid now, not at the fixed test time.
    world.clock.now = datetime.now(UTC)
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"], agents=["agent-1"], max_amount="100", unit="EUR")
    return world


@dataclass(frozen=True)
class Decision:
    """The ledger's record of one call id: `binding` or `refusal`, and what followed."""

    type: str
    bearer: str | None = None
    code: str | None = None
    outcome: str | None = None
    detail: str | None = None


def decisions_by_call_id(gate: Gate) -> dict[str, Decision]:
    """Read the ledger and return each tool call's decision and outcome, keyed by the runtime's call id."""
    records = [json.loads(entry.record) for entry in gate.store.ledger_entries()]
    found: dict[str, Decision] = {}
    call_of_binding: dict[str, str] = {}
    for record in records:
        data: dict[str, Any] = record["data"]
        if record["type"] == "binding":
            call_id = data["action"]["call_id"]
            assert call_id not in found, f"call id {call_id} has two decisions"
            call_of_binding[data["binding_id"]] = call_id
            found[call_id] = Decision("binding", bearer=data["bearer"])
        elif record["type"] == "refusal":
            call_id = data["action"]["call_id"]
            assert call_id not in found, f"call id {call_id} has two decisions"
            found[call_id] = Decision("refusal", code=data["code"])
        elif record["type"] == "outcome":
            call_id = call_of_binding[data["binding_id"]]
            previous = found[call_id]
            found[call_id] = Decision(
                previous.type, previous.bearer, previous.code, outcome=data["status"], detail=data["detail"]
            )
    return found


@dataclass(frozen=True)
class LiveService:
    url: str
    api_key: str
    config: Path


@contextmanager
def live_service(world: World) -> Iterator[LiveService]:
    """Run `etlb serve` on 127.0.0.1 for `world`'s store, with an API key for agent-1; stop it by its pid."""
    api_key = world.gate.register_agent("agent-1")
    config = world.path.parent / "etlb.toml"
    port = free_port()
    log_path = world.path.parent / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "etlb", "--config", str(config), "serve", "--port", str(port)],
            env={**os.environ, "ETLB_ADMIN_TOKEN": ADMIN_TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, process, log_path)
            yield LiveService(url, api_key, config)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
