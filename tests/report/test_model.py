"""Report model: exact figures from a ledger built through the gate, on both store backends."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from etlb.errors import LedgerIntegrityError
from etlb.model import ToolCall
from etlb.report import CapUse, build_report, load_report, report_json
from tests.backends import both_backends
from tests.conftest import START, World
from tests.report.scenario import Scenario, build_scenario

pytestmark = both_backends


@pytest.fixture
def scenario(world: World) -> Scenario:
    return build_scenario(world)


def test_bearers_and_counts(world: World, scenario: Scenario) -> None:
    report = load_report(world.gate.store, now=scenario.now)

    assert [bearer.bearer_id for bearer in report.bearers] == ["alice", "bob"]
    alice, bob = report.bearers
    assert alice.name == "Alice"
    assert alice.attributes == {"email": "alice@example.org"}
    assert alice.bindings_by_kind == {"payments.transfer": 3}
    assert bob.bindings_by_kind == {"git.commit": 1}
    assert alice.outcomes == {"succeeded": 1, "failed": 1, "unknown": 0, "none": 1}
    assert bob.outcomes == {"succeeded": 1, "failed": 0, "unknown": 0, "none": 0}
    assert [line.binding_id for line in alice.bindings] == [binding.id for binding in scenario.bindings[:3]]
    assert [str(line.amount) for line in alice.bindings] == ["9000 EUR", "4000 EUR", "1000 EUR"]
    assert report.ledger_size == world.gate.store.ledger_size()


def test_caps_used_and_allowed(world: World, scenario: Scenario) -> None:
    report = load_report(world.gate.store, now=scenario.now)
    alice, bob = report.bearers

    (scope,) = alice.scopes
    assert scope.scope_id == scenario.alice_scope
    assert scope.bindings == 3
    assert scope.status(scenario.now) == "active"
    assert scope.caps == (
        CapUse("executions", Decimal(3), Decimal(5), None),
        CapUse("total", Decimal(14000), Decimal(20000), "EUR"),
        CapUse("largest action", Decimal(9000), Decimal(10000), "EUR"),
        CapUse("executions per 24h", Decimal(3), Decimal(3), None),
        CapUse("amount per 24h", Decimal(14000), Decimal(15000), "EUR"),
    )
    assert [round(cap.fraction, 4) for cap in scope.caps] == [0.6, 0.7, 0.9, 1.0, 0.9333]
    assert bob.scopes[0].scope_id == scenario.bob_scope
    assert bob.scopes[0].caps == ()


def test_window_counts_from_now(world: World, scenario: Scenario) -> None:
    # At T+25h the bindings of T (and T exactly 24h ago, at T+24h) have left the 24h window.
    later = load_report(world.gate.store, now=START + timedelta(hours=25))
    caps = {cap.cap: cap for cap in later.bearers[0].scopes[0].caps}

    assert caps["executions per 24h"].used == 1
    assert caps["amount per 24h"].used == Decimal(1000)
    assert caps["total"].used == Decimal(14000)


def test_refusals_near_scopes(world: World, scenario: Scenario) -> None:
    alice, bob = load_report(world.gate.store, now=scenario.now).bearers

    assert [refusal.refusal_id for refusal in alice.refusals] == scenario.refusal_ids
    assert [(refusal.code, refusal.detail) for refusal in alice.refusals] == [
        ("amount_exceeds_scope", "cap 10000 EUR per action is below 25000 EUR"),
        ("window_exhausted", "all 3 executions in the last 24h are used"),
    ]
    assert {refusal.scope_id for refusal in alice.refusals} == {scenario.alice_scope}
    assert str(alice.refusals[0].amount) == "25000 EUR"
    assert bob.refusals == ()


def test_pending_requests(world: World, scenario: Scenario) -> None:
    alice, bob = load_report(world.gate.store, now=scenario.now).bearers

    assert [request.request_id for request in alice.pending] == ["request-pending"]
    assert alice.pending[0].deadline == START + timedelta(hours=8)
    assert str(alice.pending[0].amount) == "12000 EUR"
    assert alice.pending[0].approvers == ("alice",)
    assert bob.pending == ()


def test_expired_request_not_pending(world: World, scenario: Scenario) -> None:
    after_deadline = load_report(world.gate.store, now=START + timedelta(hours=9))

    assert after_deadline.bearers[0].pending == ()


def test_bearer_filter(world: World, scenario: Scenario) -> None:
    report = load_report(world.gate.store, now=scenario.now, bearer="bob")

    assert [bearer.bearer_id for bearer in report.bearers] == ["bob"]
    assert report.bearer_filter == "bob"
    assert [bucket.count for bucket in report.timeline] == [1]


def test_since_until_select_activity(world: World, scenario: Scenario) -> None:
    report = load_report(
        world.gate.store,
        now=scenario.now,
        since=START + timedelta(hours=1),
        until=START + timedelta(hours=3),
    )
    alice = report.bearers[0]

    assert [line.binding_id for line in alice.bindings] == [scenario.bindings[1].id]
    assert alice.outcomes == {"succeeded": 0, "failed": 1, "unknown": 0, "none": 0}
    assert [refusal.code for refusal in alice.refusals] == ["amount_exceeds_scope"]
    # Caps apply to a scope's whole life, so the period does not change budget use.
    assert alice.scopes[0].caps[1].used == Decimal(14000)


def test_timeline_hourly_buckets(world: World, scenario: Scenario) -> None:
    report = load_report(world.gate.store, now=scenario.now)

    assert [bucket.start for bucket in report.timeline] == [START + timedelta(hours=hour) for hour in range(6)]
    assert [bucket.count for bucket in report.timeline] == [1, 1, 0, 1, 0, 1]
    assert {bucket.length for bucket in report.timeline} == {timedelta(hours=1)}


def test_report_json_values(world: World, scenario: Scenario) -> None:
    data = report_json(load_report(world.gate.store, now=scenario.now))

    assert data["generated_at"] == "2026-06-01T18:00:00.000Z"
    alice = data["bearers"][0]
    assert alice["scopes"][0]["caps"][1] == {"cap": "total", "used": "14000", "allowed": "20000", "unit": "EUR"}
    assert alice["bindings"][0]["amount"] == {"value": "9000", "unit": "EUR"}
    assert alice["pending"][0]["deadline"] == "2026-06-01T20:00:00.000Z"
    assert data["timeline"][0] == {"start": "2026-06-01T12:00:00.000Z", "length": 3600, "count": 1}
    json.dumps(data)


def test_malformed_record_names_sequence(world: World, scenario: Scenario) -> None:
    records = [json.loads(entry.record) for entry in world.gate.store.ledger_entries()]
    binding = next(record for record in records if record["type"] == "binding")
    del binding["data"]["scope_id"]

    with pytest.raises(LedgerIntegrityError, match=f"ledger record {binding['seq']} \\(binding\\) is malformed"):
        build_report(records, now=scenario.now)


def test_delegated_spending_counts_on_the_parent(world: World) -> None:
    world.add_bearer("alice")
    world.add_bearer("bob")
    parent = world.declare("alice", kinds=["payments.*"], max_total="5000", unit="EUR")
    world.gate.bind(
        ToolCall(tool="transfer", server="bank", arguments={"from_account": "A", "amount": "1000", "currency": "EUR"})
    )
    delegated = world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="2000"), "bob")
    world.gate.bind(
        ToolCall(tool="transfer", server="bank", arguments={"from_account": "A", "amount": "1500", "currency": "EUR"})
    )

    report = load_report(world.gate.store, now=world.clock.now)

    by_id = {scope.scope_id: scope for bearer in report.bearers for scope in bearer.scopes}
    assert by_id[parent.id].caps == (CapUse("total", Decimal(2500), Decimal(5000), "EUR"),)
    assert by_id[delegated.id].caps == (CapUse("total", Decimal(1500), Decimal(2000), "EUR"),)
