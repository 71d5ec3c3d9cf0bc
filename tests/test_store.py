"""Store: group commit with `decide_many`, insert-only tables, gapless sequence numbers and threads.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime

import pytest

from etlb.errors import DeclarationError, StoreError
from etlb.ledger.records import RecordType
from etlb.ledger.verify import verify_ledger
from etlb.model import Action, Binding, ReasonCode, Refusal, ToolCall
from etlb.resolve import Candidate, Resolution, resolve
from etlb.store import DecideRequest, Judge, ScopeState, Store
from etlb.store.common import RelationalStore
from tests.backends import both_backends
from tests.conftest import World

pytestmark = both_backends


def transfer(amount: str, reference: str = "") -> ToolCall:
    return ToolCall(
        tool="transfer",
        server="bank",
        arguments={"from_account": "DE89-0001", "amount": amount, "currency": "EUR", "reference": reference},
    )


def judge_at(action: Action, now: datetime) -> Judge:
    """Judge as the gate does, but trust every stored signature: the store never checks them."""

    def judge(states: Sequence[ScopeState]) -> Resolution:
        candidates = [Candidate(state.scope, state.bearer, True, state.revoked, state.usage) for state in states]
        return resolve(action, candidates, now=now)

    return judge


def requests_for(world: World, amounts: list[str]) -> list[DecideRequest]:
    actions = [world.gate.classify(transfer(amount, f"r{index}")) for index, amount in enumerate(amounts)]
    return [DecideRequest(action, judge_at(action, world.clock.now)) for action in actions]


def record_types(store: Store, start: int) -> list[str]:
    return [json.loads(entry.record)["type"] for entry in store.ledger_entries(start)]


def test_batch_respects_count_in_order(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=3)
    store = world.gate.store
    size = store.ledger_size()
    checkpoints = len(list(store.checkpoints()))

    results = store.decide_many(requests_for(world, ["1"] * 5), time=world.clock.now)

    assert [type(result) for result in results] == [Binding, Binding, Binding, Refusal, Refusal]
    assert [result.code for result in results if isinstance(result, Refusal)] == [ReasonCode.COUNT_EXHAUSTED] * 2
    assert [result.sequence for result in results if isinstance(result, Binding)] == [size, size + 1, size + 2]
    assert record_types(store, size) == ["binding", "binding", "binding", "refusal", "refusal"]
    assert store.usage_table()[scope.id].count == 3
    assert len(list(store.checkpoints())) == checkpoints + 1
    assert store.latest_checkpoint() is not None
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []


def test_batch_judges_budget_left_before(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_total="20", unit="EUR")

    results = world.gate.store.decide_many(requests_for(world, ["9", "9", "9", "1"]), time=world.clock.now)

    assert [type(result) for result in results] == [Binding, Binding, Refusal, Binding]
    refusal = results[2]
    assert isinstance(refusal, Refusal)
    assert refusal.code is ReasonCode.BUDGET_EXHAUSTED
    assert str(world.gate.store.usage_table()[scope.id].amount) == "19"


def test_batch_redeems_when_asked(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    first, second = requests_for(world, ["1", "2"])

    results = world.gate.store.decide_many(
        [first, DecideRequest(second.action, second.judge, redeem=True)], time=world.clock.now
    )

    states = [world.gate.store.get_binding(result.id) for result in results if isinstance(result, Binding)]
    assert [state.redeemed for state in states if state is not None] == [False, True]


def test_failing_judge_refuses_only_its_request(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=5)
    store = world.gate.store
    size = store.ledger_size()
    first, broken, last = requests_for(world, ["1", "2", "3"])

    def raise_error(states: Sequence[ScopeState]) -> Resolution:
        raise RuntimeError("resolver crashed")

    results = store.decide_many(
        [first, DecideRequest(broken.action, raise_error), last],
        time=world.clock.now,
    )

    assert isinstance(results[0], Binding)
    assert isinstance(results[2], Binding)
    refusal = results[1]
    assert isinstance(refusal, Refusal)
    assert refusal.code is ReasonCode.INTERNAL_ERROR
    assert refusal.action.digest == broken.action.digest
    assert refusal.message.endswith(": RuntimeError: resolver crashed")
    recorded = [json.loads(entry.record) for entry in store.ledger_entries(size)]
    assert [record["type"] for record in recorded] == ["binding", "refusal", "binding"]
    assert recorded[1]["data"]["code"] == "internal_error"
    assert recorded[1]["data"]["refusal_id"] == refusal.id
    assert store.usage_table()[scope.id].count == 2


def test_store_failure_mid_batch_commits_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=5)
    store = world.gate.store
    assert isinstance(store, RelationalStore)
    size = store.ledger_size()
    checkpoints = list(store.checkpoints())
    original = RelationalStore._append
    appended: list[str] = []

    def fail_on_third(self: RelationalStore, connection, record_type: RecordType, time, data):  # type: ignore[no-untyped-def]
        if len(appended) == 2:
            # A statement the database rejects, so the failure goes through the backend's own error handling.
            connection.execute("INSERT INTO missing_table (id) VALUES (1)")
        appended.append(record_type.value)
        return original(self, connection, record_type, time, data)

    monkeypatch.setattr(RelationalStore, "_append", fail_on_third)

    with pytest.raises(StoreError, match="missing_table"):
        store.decide_many(requests_for(world, ["1", "1", "1"]), time=world.clock.now)

    monkeypatch.undo()
    assert appended == ["binding", "binding"]
    assert store.ledger_size() == size
    assert store.usage_table()[scope.id].count == 0
    assert list(store.checkpoints()) == checkpoints
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []
    after = store.decide_many(requests_for(world, ["1"]), time=world.clock.now)
    assert isinstance(after[0], Binding)
    assert after[0].sequence == size


def test_empty_batch_writes_nothing(world: World) -> None:
    store = world.gate.store
    size = store.ledger_size()

    assert store.decide_many([], time=world.clock.now) == []
    assert store.ledger_size() == size


def test_threads_share_one_store(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=10)
    results: list[Binding | Refusal] = []
    lock = threading.Lock()

    def bind_five(worker: int) -> None:
        for index in range(5):
            action = world.gate.classify(transfer("1", f"{worker}-{index}"))
            result = world.gate.store.decide(action, time=world.clock.now, judge=judge_at(action, world.clock.now))
            with lock:
                results.append(result)

    threads = [threading.Thread(target=bind_five, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(result, Binding) for result in results) == 10
    assert sum(isinstance(result, Refusal) for result in results) == 10
    store = world.gate.store
    assert store.usage_table()[scope.id].count == 10
    sequences = [json.loads(entry.record)["seq"] for entry in store.ledger_entries()]
    assert sequences == list(range(len(sequences)))


def test_failed_write_leaves_no_gap(world: World) -> None:
    world.add_bearer("alice")
    jws = world.sign_scope("alice", kinds=["payments.transfer"])
    world.gate.declare_scope(jws)
    size = world.gate.store.ledger_size()

    with pytest.raises(DeclarationError, match="already declared"):
        world.gate.declare_scope(jws)
    binding = world.gate.bind(transfer("1"))

    assert binding is not None
    assert binding.sequence == size
    assert world.gate.store.tree_head()[0] == size + 1


INSERT_ONLY_TABLES = {
    "ledger": "seq",
    "bindings": "id",
    "redemptions": "binding_id",
    "outcomes": "binding_id",
    "revocations": "scope_id",
    "scopes": "id",
    "scope_kinds": "prefix",
    "merkle_nodes": "idx",
    "checkpoints": "size",
    "ledger_index": "seq",
    "agents": "id",
}


@pytest.fixture
def full_world(world: World) -> World:
    """A store with at least one row in every insert-only table."""
    world.add_bearer("alice")
    world.gate.register_agent("agent-1")
    scope = world.declare("alice", kinds=["payments.transfer"])
    with world.gate.execution(transfer("1")):
        pass
    world.gate.revoke_scope(scope.id, administrator="ops-admin")
    return world


@pytest.mark.parametrize("table", sorted(INSERT_ONLY_TABLES))
def test_insert_only_table_rejects_changes(full_world: World, table: str) -> None:
    backend = full_world.backend
    assert backend is not None
    column = INSERT_ONLY_TABLES[table]
    connection = backend.connect()

    try:
        assert connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        with pytest.raises(backend.insert_only_error, match=f"{table} is insert-only"):
            connection.execute(f"UPDATE {table} SET {column} = {column}")
        with pytest.raises(backend.insert_only_error, match=f"{table} is insert-only"):
            connection.execute(f"DELETE FROM {table}")
        if backend.name == "postgres":
            with pytest.raises(backend.insert_only_error, match=f"{table} is insert-only"):
                connection.execute(f"TRUNCATE {table} CASCADE")
    finally:
        connection.close()


def test_usage_and_status_change_in_place(full_world: World) -> None:
    backend = full_world.backend
    assert backend is not None
    connection = backend.connect()

    try:
        connection.execute("UPDATE scope_usage SET count = count")
        connection.execute("UPDATE bearers SET status = status")
    finally:
        connection.close()


def test_reopened_store_keeps_records(world: World) -> None:
    world.add_bearer("alice")
    head = world.gate.store.tree_head()
    assert world.backend is not None

    reopened = world.backend.open_store()
    try:
        assert reopened.tree_head() == head
        assert [bearer.id for bearer in reopened.list_bearers()] == ["alice"]
    finally:
        reopened.close()
