"""One ledger that the report tests read, built through the gate with a clock that the scenario steps.

From START (T), with `now` = T+6h:

- alice (e-mail alice@example.org) and bob are registered;
- alice's payments scope caps 10000 EUR per action, 20000 EUR in total and 5 executions. In any 24h
  it allows 15000 EUR or 3 executions. Bob's git scope has no cap;
- T: 9000 EUR bound to alice, succeeded; T+1h: 4000 EUR, failed; T+2h: 25000 EUR refused
  (amount_exceeds_scope); T+3h: 1000 EUR, no outcome; T+4h: 500 EUR refused (window_exhausted);
- T+5h: a commit bound to bob, succeeded;
- three approval requests name alice as approver: one pending, one closed, one past its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.errors import Refused
from etlb.ledger.records import RecordType, action_json
from etlb.model import Bearer, BearerKey, Binding, Limits, Outcome, ToolCall, WindowLimit, format_time
from etlb.signing import generate_private_key, key_id, public_jwk, sign_payload
from tests.conftest import START, World


@dataclass(frozen=True)
class Scenario:
    now: datetime
    alice_scope: str
    bob_scope: str
    bindings: list[Binding]
    refusal_ids: list[str]
    pending_request: str


def transfer(amount: str) -> ToolCall:
    return ToolCall(
        tool="transfer", server="bank", arguments={"from_account": "DE01", "amount": amount, "currency": "EUR"}
    )


def commit() -> ToolCall:
    return ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": "release"})


def register(world: World, bearer_id: str, email: str | None = None) -> None:
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    attributes = {"email": email} if email else {}
    world.gate.register_bearer(
        Bearer(bearer_id, bearer_id.title(), (BearerKey(key_id(jwk), jwk),), attributes=attributes)
    )
    world.keys[bearer_id] = private_key


def declare_with_window(world: World, bearer_id: str) -> str:
    payload = scope_payload(
        bearer=bearer_id,
        kinds=["payments.transfer"],
        resources=["**"],
        agents=["*"],
        limits=Limits(
            max_amount=Decimal(10000),
            max_total=Decimal(20000),
            max_count=5,
            unit="EUR",
            windows=(WindowLimit(86400, max_amount=Decimal(15000), max_count=3),),
        ),
        valid_from=world.clock.now - timedelta(minutes=1),
        valid_until=world.clock.now + timedelta(days=30),
        terms=f"{bearer_id} accepts liability for transfers",
        issued_at=world.clock.now,
    )
    return world.gate.declare_scope(sign_payload(world.keys[bearer_id], payload, typ=SCOPE_TYP)).id


def refuse(world: World, call: ToolCall) -> str:
    with pytest.raises(Refused) as caught:
        world.gate.bind(call)
    return caught.value.refusal.id


def append_approval(world: World, record_type: str, data: dict) -> None:
    """Append an approval record as the approval workflow writes it, through the store's own append."""
    store = world.gate.store
    with store._write() as transaction:  # type: ignore[attr-defined]
        store._append(transaction, RecordType(record_type), world.clock.now, data)  # type: ignore[attr-defined]


def build_scenario(world: World) -> Scenario:
    world.clock.now = START - timedelta(minutes=10)
    register(world, "alice", "alice@example.org")
    register(world, "bob")
    alice_scope = declare_with_window(world, "alice")
    bob_scope = world.declare("bob", kinds=["git.commit"]).id

    bindings: list[Binding] = []
    refusals: list[str] = []
    world.clock.now = START
    first = world.gate.bind(transfer("9000"))
    assert first is not None
    world.gate.complete(first, Outcome.succeeded("sha256:aa"))
    bindings.append(first)

    world.clock.now = START + timedelta(hours=1)
    second = world.gate.bind(transfer("4000"))
    assert second is not None
    world.gate.complete(second, Outcome.failed("bank timeout"))
    bindings.append(second)

    world.clock.now = START + timedelta(hours=2)
    refusals.append(refuse(world, transfer("25000")))

    world.clock.now = START + timedelta(hours=3)
    third = world.gate.bind(transfer("1000"))
    assert third is not None
    bindings.append(third)

    world.clock.now = START + timedelta(hours=4)
    refusals.append(refuse(world, transfer("500")))

    world.clock.now = START + timedelta(hours=5)
    fourth = world.gate.bind(commit())
    assert fourth is not None
    world.gate.complete(fourth, Outcome.succeeded("sha256:bb"))
    bindings.append(fourth)

    action = action_json(world.gate.classify(transfer("12000")))
    for request_id, deadline in (
        ("request-pending", START + timedelta(hours=8)),
        ("request-closed", START + timedelta(hours=8)),
        ("request-expired", START + timedelta(hours=5, minutes=30)),
    ):
        append_approval(
            world,
            "approval.requested",
            {
                "request_id": request_id,
                "action": action,
                "deadline": format_time(deadline),
                "approvers": ["alice"],
                "reasons": [],
            },
        )
    append_approval(world, "approval.closed", {"request_id": "request-closed", "status": "declined", "bearer": "alice"})

    world.clock.now = START + timedelta(hours=6)
    return Scenario(world.clock.now, alice_scope, bob_scope, bindings, refusals, "request-pending")
