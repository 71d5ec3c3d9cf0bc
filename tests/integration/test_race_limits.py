"""Rolling-window caps and revocations hold when several processes bind at once."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.ledger.verify import verify_ledger
from etlb.model import Limits, WindowLimit
from etlb.signing import sign_payload
from etlb.store.sqlite import SQLiteStore
from tests.conftest import PAYMENTS_CONFIG, World, build_world
from tests.integration import limits_worker

pytestmark = pytest.mark.integration

WORKERS = 6
PER_WORKER = 10


def declare_now(world: World, limits: Limits) -> str:
    """Declare a commit scope valid on the real clock, which the worker processes use."""
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["git.commit"],
        resources=["repo:/srv/app"],
        agents=["*"],
        limits=limits,
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=1),
        terms="alice accepts liability for commits to /srv/app",
        issued_at=now,
    )
    return world.gate.declare_scope(sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP)).id


def run(config_path: Path, extra: list[tuple] | None = None) -> list:
    context = multiprocessing.get_context("spawn")
    parties = WORKERS + len(extra or [])
    barrier = context.Barrier(parties)
    results = context.Queue()
    processes = [
        context.Process(target=limits_worker.bind_loop, args=(str(config_path), PER_WORKER, barrier, results))
        for _ in range(WORKERS)
    ]
    for target, arguments in extra or []:
        processes.append(context.Process(target=target, args=(str(config_path), *arguments, barrier, results)))
    for process in processes:
        process.start()
    collected = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return collected


def test_window_cap_races_across_processes(tmp_path: Path) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    world.add_bearer("alice")
    scope_id = declare_now(world, Limits(windows=(WindowLimit(seconds=3600, max_count=7),)))
    world.gate.close()

    collected = run(tmp_path / "etlb.toml")

    bound = sum(item[0] for item in collected)
    refused = sum(item[1].get("window_exhausted", 0) for item in collected)
    assert bound == 7
    assert refused == WORKERS * PER_WORKER - 7
    store = SQLiteStore(tmp_path / "etlb.db")
    assert store.usage_table()[scope_id].count == 7
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()


def test_revocation_races_with_binding(tmp_path: Path) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    world.add_bearer("alice")
    scope_id = declare_now(world, Limits())
    world.gate.close()

    collected = run(tmp_path / "etlb.toml", [(limits_worker.revoke_after, (scope_id,))])

    revoked_at = next(item[1] for item in collected if item[0] == "revoked")
    store = SQLiteStore(tmp_path / "etlb.db")
    records = [json.loads(entry.record) for entry in store.ledger_entries()]
    bindings = [record["seq"] for record in records if record["type"] == "binding"]
    revoked_refusals = [
        record["seq"] for record in records if record["type"] == "refusal" and record["data"]["code"] == "scope_revoked"
    ]
    assert all(seq < revoked_at for seq in bindings)
    assert all(seq > revoked_at for seq in revoked_refusals)
    assert len(bindings) + len(revoked_refusals) == WORKERS * PER_WORKER
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()


def test_delegated_budget_races_with_its_parent(tmp_path: Path) -> None:
    # Every call prefers bob's delegated scope (exact kind) until its 6 are used, then alice's own.
    # Alice's 9 executions are the cap of both together.
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    world.add_bearer("alice")
    world.add_bearer("bob")
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["git.*"],
        resources=["repo:/srv/**"],
        agents=["*"],
        limits=Limits(max_count=9),
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=1),
        terms="alice accepts liability for git changes under /srv",
        issued_at=now,
    )
    parent = world.gate.declare_scope(sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP))
    world.clock.now = now
    child = world.accept(world.offer(parent, "bob", kinds=["git.commit"], max_count=6), "bob")
    world.gate.close()

    collected = run(tmp_path / "etlb.toml")

    assert sum(item[0] for item in collected) == 9
    assert sum(item[1].get("count_exhausted", 0) for item in collected) == WORKERS * PER_WORKER - 9
    store = SQLiteStore(tmp_path / "etlb.db")
    records = [json.loads(entry.record) for entry in store.ledger_entries()]
    bearers = [record["data"]["bearer"] for record in records if record["type"] == "binding"]
    assert (bearers.count("bob"), bearers.count("alice")) == (6, 3)
    usage = store.usage_table()
    assert (usage[parent.id].count, usage[child.id].count) == (9, 6)
    assert verify_ledger(store.ledger_entries(), usage_table=usage).problems == []
    store.close()
