"""Delegation: an offer signed by the parent's bearer, accepted by the stand-in's own signature.

A delegated scope is never wider than its parent, which is checked when it is offered and again
when it is declared. It covers nothing before it is accepted. Its bindings name the stand-in as the
bearer with the chain behind them, and spend every ancestor's budget.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from etlb.declarations import SCOPE_TYP, acceptance_payload, delegation_payload
from etlb.errors import DeclarationError, Refused, SignatureError
from etlb.ledger.checkpoint import NoteVerifier, parse_verifier_key
from etlb.ledger.receipt import ReceiptError, verify_receipt
from etlb.ledger.verify import verify_ledger
from etlb.model import BearerStatus, Limits, ReasonCode, Scope, ToolCall
from etlb.signing import read_unverified, sign_payload
from tests.backends import both_backends
from tests.conftest import World

pytestmark = both_backends


def transfer(amount: str, account: str = "DE89-0001") -> ToolCall:
    return ToolCall(
        tool="transfer",
        server="bank",
        arguments={"from_account": account, "amount": amount, "currency": "EUR"},
    )


def treasury(world: World) -> Scope:
    world.add_bearer("alice")
    world.add_bearer("bob")
    return world.declare(
        "alice", kinds=["payments.*"], resources=["account:DE89-*"], max_amount="1000", max_total="1000", unit="EUR"
    )


def records(world: World) -> list[dict]:
    return [json.loads(entry.record) for entry in world.gate.store.ledger_entries()]


def test_offer_alone_covers_nothing(world: World) -> None:
    parent = treasury(world)
    world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500")
    world.gate.revoke_scope(parent.id, administrator="ops")

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("100"))

    assert caught.value.refusal.code is ReasonCode.SCOPE_REVOKED
    assert [reason.bearer for reason in caught.value.refusal.reasons] == ["alice"]


def test_accepted_delegation_binds_the_stand_in_with_the_chain(world: World) -> None:
    parent = treasury(world)
    delegated = world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")

    binding = world.gate.bind(transfer("300"))

    assert binding is not None
    assert (binding.bearer, binding.scope_id) == ("bob", delegated.id)
    assert binding.chain == ((parent.id, "alice"),)
    record = records(world)[-1]
    assert record["type"] == "binding"
    assert record["data"]["bearer"] == "bob"
    assert record["data"]["chain"] == [{"scope_id": parent.id, "bearer": "alice"}]
    declared = records(world)[-2]
    assert declared["type"] == "scope.declared"
    assert declared["data"]["bearer"] == "bob"
    assert delegated.delegator == "alice"
    assert delegated.parent_id == parent.id


def test_binding_spends_every_ancestors_budget(world: World) -> None:
    parent = treasury(world)
    world.gate.bind(transfer("500"))
    second = world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="800"), "bob")

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("600"))
    bound = world.gate.bind(transfer("400"))

    reasons = {reason.scope_id: reason for reason in caught.value.refusal.reasons}
    assert reasons[second.id].code is ReasonCode.BUDGET_EXHAUSTED
    assert reasons[second.id].detail == (
        f"delegated from scope {parent.id} of alice, which fails: 500 EUR left of 1000 EUR, below 600 EUR"
    )
    assert reasons[parent.id].detail == "500 EUR left of 1000 EUR, below 600 EUR"
    assert bound is not None and bound.scope_id == second.id
    usage = world.gate.store.usage_table()
    assert (usage[parent.id].count, usage[parent.id].amount) == (2, 900)
    assert (usage[second.id].count, usage[second.id].amount) == (1, 400)


@pytest.mark.parametrize(
    ("narrowing", "message"),
    [
        (
            {"kinds": ["refunds.*"]},
            "kind refunds.* is not inside payments.*",
        ),
        (
            {"resources": ["account:**"]},
            "resource account:** is not inside account:DE89-*",
        ),
        ({"max_amount": "1500"}, "max_amount 1500 is above the parent's 1000"),
        ({"max_total": "2000"}, "max_total 2000 is above the parent's 1000"),
    ],
)
def test_wider_offer_refused_when_signed(world: World, narrowing: dict, message: str) -> None:
    parent = treasury(world)

    with pytest.raises(DeclarationError) as caught:
        world.offer(parent, "bob", **narrowing)

    assert str(caught.value).startswith(f"the delegation would be wider than scope {parent.id}: {message}")


def test_window_beyond_parent_refused(world: World) -> None:
    parent = treasury(world)

    with pytest.raises(DeclarationError, match="is not inside"):
        world.offer(parent, "bob", valid_until=parent.valid_until + timedelta(days=1))


def test_wider_offer_signed_by_hand_refused_when_declared(world: World) -> None:
    parent = treasury(world)
    offer = world.offer(parent, "bob", max_total="500")
    _, fields = read_unverified(offer)
    fields["limits"]["max_total"] = "5000"
    forged = sign_payload(world.keys["alice"], fields, typ=read_unverified(offer)[0]["typ"])

    with pytest.raises(DeclarationError) as caught:
        world.accept(forged, "bob")

    assert str(caught.value) == ("delegated scope rejected: max_total 5000 is above the parent's 1000")
    assert world.gate.store.list_scopes(bearer="bob") == []


def test_acceptance_that_changes_the_offer_refused(world: World) -> None:
    parent = treasury(world)
    offer = world.offer(parent, "bob", max_total="500")
    _, fields = read_unverified(offer)
    payload = acceptance_payload(fields, offer, issued_at=world.clock.now)
    payload["limits"] = {**payload["limits"], "max_total": "900"}

    with pytest.raises(DeclarationError) as caught:
        world.gate.declare_scope(sign_payload(world.keys["bob"], payload, typ=SCOPE_TYP))

    assert str(caught.value) == "delegated scope rejected: the accepted scope changes the offered field 'limits'"


def test_offer_signed_by_someone_else_refused(world: World) -> None:
    parent = treasury(world)
    world.add_bearer("mallory")
    offer = world.offer(parent, "bob", signer=world.keys["mallory"])

    with pytest.raises(DeclarationError) as caught:
        world.accept(offer, "bob")

    assert "which is not registered to alice" in str(caught.value)


def test_offer_accepted_by_another_bearer_refused(world: World) -> None:
    parent = treasury(world)
    world.add_bearer("carol")
    offer = world.offer(parent, "bob")

    # The offer names bob, so the accepted scope is bob's, and carol's key is not one of his.
    with pytest.raises(SignatureError, match=r"which is not registered to bearer bob$"):
        world.accept(offer, "carol")


@pytest.mark.parametrize("change", ["revoke", "suspend", "expire"])
def test_parent_state_ends_the_delegation(world: World, change: str) -> None:
    parent = treasury(world)
    delegated = world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")
    expected = {
        "revoke": (ReasonCode.SCOPE_REVOKED, "scope was revoked"),
        "suspend": (ReasonCode.BEARER_SUSPENDED, "bearer alice is suspended"),
        "expire": (ReasonCode.SCOPE_EXPIRED, None),
    }[change]

    if change == "revoke":
        world.gate.revoke_scope(parent.id, administrator="ops")
    elif change == "suspend":
        world.gate.set_bearer_status("alice", BearerStatus.SUSPENDED)
    else:
        world.clock.now = parent.valid_until + timedelta(seconds=1)
    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("100"))

    reason = next(reason for reason in caught.value.refusal.reasons if reason.scope_id == delegated.id)
    if change == "expire":
        # The delegated scope ends with its parent's window, so its own expiry is reported first.
        assert reason.code is ReasonCode.SCOPE_EXPIRED
    else:
        assert reason.code is expected[0]
        assert reason.detail == f"delegated from scope {parent.id} of alice, which fails: {expected[1]}"


def test_delegation_of_a_delegation_spends_the_whole_chain(world: World) -> None:
    parent = treasury(world)
    world.add_bearer("carol")
    middle = world.accept(world.offer(parent, "bob", max_total="600"), "bob")
    leaf = world.accept(world.offer(middle, "carol", kinds=["payments.transfer"], max_total="300"), "carol")

    binding = world.gate.bind(transfer("200"))

    assert binding is not None and binding.bearer == "carol"
    assert binding.chain == ((middle.id, "bob"), (parent.id, "alice"))
    usage = world.gate.store.usage_table()
    assert [usage[scope.id].amount for scope in (parent, middle, leaf)] == [200, 200, 200]


def test_ledger_replays_delegated_bindings(world: World) -> None:
    parent = treasury(world)
    world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")
    world.gate.bind(transfer("300"))
    world.gate.bind(transfer("150"))

    store = world.gate.store
    report = verify_ledger(store.ledger_entries(), usage_table=store.usage_table())

    assert report.ok, report.problems


def test_self_delegation_refused(world: World) -> None:
    parent = treasury(world)

    with pytest.raises(DeclarationError, match=r"cannot delegate scope .* to themselves"):
        delegation_payload(
            parent=parent,
            delegate="alice",
            kinds=list(parent.kinds),
            resources=list(parent.resources),
            agents=list(parent.agents),
            limits=Limits(max_amount=parent.limits.max_amount, max_total=parent.limits.max_total, unit="EUR"),
            valid_from=world.clock.now,
            valid_until=parent.valid_until,
            terms="alice stands in for alice",
            issued_at=world.clock.now,
        )


def test_ledger_replay_counts_delegated_bindings_against_the_parent(world: World) -> None:
    parent = treasury(world)
    delegated = world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")
    world.gate.bind(transfer("300"))
    store = world.gate.store
    usage = store.usage_table()
    # An operator who hides the delegated spending from the parent's budget row is found out.
    usage[parent.id] = dataclasses.replace(usage[parent.id], count=0, amount=Decimal(0))

    report = verify_ledger(store.ledger_entries(), usage_table=usage)

    assert [problem.message for problem in report.problems] == [
        f"usage of scope {parent.id} in the store is 0 executions and 0, "
        "but its bindings in the ledger add up to 1 and 300"
    ]
    assert usage[delegated.id].amount == 300


def delegated_receipt(world: World) -> tuple[dict, Scope]:
    parent = treasury(world)
    world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")
    binding = world.gate.bind(transfer("300"))
    assert binding is not None
    return world.gate.receipt(binding.id), parent


def gate_verifier(world: World) -> NoteVerifier:
    return parse_verifier_key((world.path.parent / "etlb-gate.pub").read_text(encoding="utf-8"))


def test_receipt_of_a_delegated_binding_proves_the_chain(world: World) -> None:
    receipt, parent = delegated_receipt(world)

    summary = verify_receipt(receipt, gate_verifier(world))

    assert summary.bearer == "bob"
    [link] = receipt["chain"]
    assert json.loads(link["scope"]["record"])["data"]["scope_id"] == parent.id
    assert json.loads(link["bearer"]["record"])["data"]["bearer"]["id"] == "alice"


def test_receipt_without_its_chain_rejected(world: World) -> None:
    receipt, _ = delegated_receipt(world)
    del receipt["chain"]

    with pytest.raises(ReceiptError, match=r"^chain: has 0 links; the binding names 1$"):
        verify_receipt(receipt, gate_verifier(world))


def test_receipt_with_another_parent_rejected(world: World) -> None:
    receipt, parent = delegated_receipt(world)
    # A proven scope record of the same checkpoint, but not the parent the binding names.
    receipt["chain"][0]["scope"] = receipt["records"]["scope"]

    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, gate_verifier(world))

    assert caught.value.part == "chain[0]"
    assert str(caught.value) == f"chain[0]: is not scope {parent.id} of alice, as the binding names"


def test_receipt_with_a_forged_offer_rejected(world: World) -> None:
    parent = treasury(world)
    world.add_bearer("mallory")
    # Mallory's key signs the offer, but the chain proves alice's registration, so the offer fails.
    mallory_parent = world.declare("mallory", kinds=["payments.*"], max_amount="1000", max_total="1000", unit="EUR")
    world.accept(world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500"), "bob")
    binding = world.gate.bind(transfer("300"))
    assert binding is not None
    receipt = world.gate.receipt(binding.id)
    records = {json.loads(entry.record)["seq"]: entry for entry in world.gate.store.ledger_entries()}
    mallory = next(seq for seq, entry in records.items() if b'"id":"mallory"' in entry.record)
    receipt["chain"][0]["bearer"] = {
        "leaf_index": mallory,
        "record": records[mallory].record.decode(),
        "inclusion_proof": [
            base64.b64encode(item).decode() for item in world.gate.store.inclusion_proof(mallory, len(records))
        ],
    }

    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, gate_verifier(world))

    assert caught.value.part == "chain[0]"
    assert mallory_parent.id != parent.id


def test_offer_accepted_once(world: World) -> None:
    parent = treasury(world)
    offer = world.offer(parent, "bob", kinds=["payments.transfer"], max_total="500")
    first = world.accept(offer, "bob")

    with pytest.raises(DeclarationError) as caught:
        world.accept(offer, "bob")

    assert str(caught.value) == f"this delegation offer was already accepted as scope {first.id}"
    assert [state.scope.id for state in world.gate.store.list_scopes(bearer="bob")] == [first.id]
