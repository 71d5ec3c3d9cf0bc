"""Scope limits under concurrency across processes, and a crash in the middle of a write."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etlb.gate import Gate
from etlb.ledger.verify import verify_ledger
from etlb.model import ToolCall
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, build_world
from tests.integration import race_worker

pytestmark = [pytest.mark.integration, both_backends]

# Workers run on the real clock, so their scopes must be valid now rather than at the fixture's time.
NOW_WINDOW = {
    "valid_from": datetime.now(UTC) - timedelta(hours=1),
    "valid_until": datetime.now(UTC) + timedelta(days=1),
}


def run_workers(config_path: Path, per_worker: list[int], arguments: dict) -> tuple[int, dict[str, int]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(per_worker))
    results = context.Queue()
    workers = [
        context.Process(target=race_worker.bind_many, args=(str(config_path), count, barrier, results, arguments))
        for count in per_worker
    ]
    for worker in workers:
        worker.start()
    collected = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    bound = sum(item[0] for item in collected)
    refused: dict[str, int] = {}
    for _, codes in collected:
        for code, number in codes.items():
            refused[code] = refused.get(code, 0) + number
    return bound, refused


def test_last_units_race_across_processes(tmp_path: Path, backend: Backend) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=10, **NOW_WINDOW)
    world.gate.close()
    per_worker = [13, 13, 13, 13, 12, 12, 12, 12]

    bound, refused = run_workers(
        tmp_path / "etlb.toml", per_worker, {"from_account": "DE89-0001", "amount": "1", "currency": "EUR"}
    )

    assert sum(per_worker) == 100
    assert bound == 10
    assert refused == {"count_exhausted": 90}
    store = backend.open_store()
    records = [json.loads(entry.record) for entry in store.ledger_entries()]
    assert [record["seq"] for record in records] == list(range(len(records)))
    assert sum(record["type"] == "binding" for record in records) == 10
    assert sum(record["type"] == "refusal" for record in records) == 90
    assert store.usage_table()[scope.id].count == 10
    report = verify_ledger(store.ledger_entries(), usage_table=store.usage_table())
    assert report.problems == []
    store.close()


def test_budget_race_across_processes(tmp_path: Path, backend: Backend) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_total="20", unit="EUR", **NOW_WINDOW)
    world.gate.close()

    bound, refused = run_workers(
        tmp_path / "etlb.toml", [5] * 4, {"from_account": "DE89-0001", "amount": "9", "currency": "EUR"}
    )

    assert bound == 2
    assert refused == {"budget_exhausted": 18}
    store = backend.open_store()
    assert str(store.usage_table()[scope.id].amount) == "18"
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()


def test_crash_before_commit_leaves_no_binding(tmp_path: Path, backend: Backend) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=1, **NOW_WINDOW)
    size_before = world.gate.store.ledger_size()
    world.gate.close()
    context = multiprocessing.get_context("spawn")

    worker = context.Process(target=race_worker.crash_after_ledger_insert, args=(str(tmp_path / "etlb.toml"),))
    worker.start()
    worker.join(timeout=60)

    assert worker.exitcode == 17
    store = backend.open_store()
    assert store.ledger_size() == size_before
    assert store.usage_table()[scope.id].count == 0
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()

    with Gate.from_config(tmp_path / "etlb.toml") as gate:
        binding = gate.bind(transfer_call(), agent="agent-1")
    assert binding is not None
    assert binding.scope_id == scope.id


def test_crash_mid_batch_leaves_nothing(tmp_path: Path, backend: Backend) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=10, **NOW_WINDOW)
    size_before = world.gate.store.ledger_size()
    checkpoints_before = list(world.gate.store.checkpoints())
    world.gate.close()
    context = multiprocessing.get_context("spawn")

    worker = context.Process(target=race_worker.crash_mid_batch, args=(str(tmp_path / "etlb.toml"), 5, 3))
    worker.start()
    worker.join(timeout=60)

    assert worker.exitcode == 17
    store = backend.open_store()
    assert store.ledger_size() == size_before
    assert list(store.checkpoints()) == checkpoints_before
    assert store.usage_table()[scope.id].count == 0
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    store.close()


def transfer_call() -> ToolCall:
    return ToolCall(
        tool="transfer", server="bank", arguments={"from_account": "DE89-0001", "amount": "1", "currency": "EUR"}
    )
