"""Approval requests: accepted, declined, timed out, raced, forged, and surviving a restart, on both stores."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from etlb.approval.model import DECLINE_TYP, ApprovalStatus
from etlb.declarations import SCOPE_TYP
from etlb.errors import ApprovalClosed, ApprovalPending, BindingConsumed, DeclarationError, Refused, SignatureError
from etlb.gate import Gate
from etlb.ledger.verify import _Replay, _ReplayError, verify_ledger
from etlb.model import ReasonCode, ToolCall
from etlb.signing import generate_private_key, sign_payload
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, World, build_world

pytestmark = both_backends

APPROVALS = """
[approvals]
wait = false
deadline_seconds = 600

[[approvals.routes]]
kinds = ["payments.*"]
approvers = ["bob", "carol"]

[[approvals.routes]]
kinds = ["git.*"]
approvers = ["bob", "carol"]
order = "sequence"
deadline_seconds = 60
"""


@pytest.fixture
def world(tmp_path: Path, backend: Backend) -> Iterator[World]:
    built = build_world(tmp_path, PAYMENTS_CONFIG + APPROVALS, backend)
    for bearer in ("alice", "bob", "carol"):
        built.add_bearer(bearer)
    yield built
    built.gate.close()


def transfer(amount: str = "7000") -> ToolCall:
    return ToolCall(
        tool="transfer", server="bank", arguments={"from_account": "DE89-0001", "amount": amount, "currency": "EUR"}
    )


def ask(world: World, call: ToolCall | None = None) -> ApprovalPending:
    with pytest.raises(ApprovalPending) as caught:
        world.gate.bind(call or transfer())
    return caught.value


def accept(world: World, request_id: str, bearer: str = "bob") -> str:
    payload = world.gate.approval_payload(request_id, bearer)
    return sign_payload(world.keys[bearer], payload, typ=SCOPE_TYP)


def decline(world: World, request_id: str, bearer: str = "bob", reason: str = "too large") -> str:
    payload = world.gate.approval_payload(request_id, bearer, decline=True, reason=reason)
    return sign_payload(world.keys[bearer], payload, typ=DECLINE_TYP)


def records(world: World) -> list[dict]:
    return [json.loads(entry.record) for entry in world.gate.store.ledger_entries()]


def test_uncovered_action_opens_a_request(world: World) -> None:
    world.declare("alice", kinds=["payments.transfer"], max_amount="5000", unit="EUR")

    pending = ask(world)

    assert pending.code is ReasonCode.APPROVAL_PENDING
    assert pending.approvers == ("bob", "carol")
    assert pending.deadline == world.clock.now + timedelta(seconds=600)
    assert f"approval request {pending.request_id} waits for bob or carol" in str(pending)
    record = records(world)[-1]
    assert record["type"] == "approval.requested"
    assert record["data"]["request_id"] == pending.request_id
    assert record["data"]["approvers"] == ["bob", "carol"]
    assert [reason["code"] for reason in record["data"]["reasons"]] == ["amount_exceeds_scope"]
    stored = world.gate.approval(pending.request_id)
    assert [(reason.bearer, reason.code) for reason in stored.reasons] == [("alice", ReasonCode.AMOUNT_EXCEEDS_SCOPE)]
    assert stored.reasons[0].detail == "cap 5000 EUR per action is below 7000 EUR"
    assert not any(item["type"] == "refusal" for item in records(world))


def test_acceptance_binds_the_approver_once(world: World) -> None:
    pending = ask(world)

    answered = world.gate.answer_approval(pending.request_id, accept(world, pending.request_id))
    binding = world.gate.resume(pending.request_id, transfer())

    assert answered.status is ApprovalStatus.ACCEPTED
    assert answered.bearer == "bob"
    assert binding.bearer == "bob"
    assert binding.id == answered.binding_id
    assert binding.action.digest == pending.refusal.action.digest
    with pytest.raises(BindingConsumed):
        world.gate.resume(pending.request_id)
    types = [record["type"] for record in records(world)[-3:]]
    assert types == ["scope.declared", "binding", "approval.closed"]
    closed = records(world)[-1]["data"]
    assert (closed["status"], closed["bearer"], closed["binding_id"]) == ("accepted", "bob", binding.id)
    store = world.gate.store
    assert verify_ledger(store.ledger_entries(), usage_table=store.usage_table()).problems == []


def test_approval_scope_covers_no_other_action(world: World) -> None:
    pending = ask(world)
    world.gate.answer_approval(pending.request_id, accept(world, pending.request_id))

    other = ask(world, transfer("7001"))

    assert other.request_id != pending.request_id
    # Bob's approval scope is pinned to the first action, so it is neither used nor listed as near.
    assert other.refusal.reasons == ()
    assert other.refusal.action.digest != pending.refusal.action.digest


def test_decline_refuses_with_the_approver(world: World) -> None:
    pending = ask(world)

    answered = world.gate.answer_approval(pending.request_id, decline(world, pending.request_id, "carol"))
    with pytest.raises(Refused) as caught:
        world.gate.resume(pending.request_id)

    assert answered.status is ApprovalStatus.DECLINED
    assert caught.value.code is ReasonCode.APPROVAL_DECLINED
    assert str(caught.value).endswith("declined by carol: too large")
    refusal, closed = records(world)[-2:]
    assert (refusal["type"], refusal["data"]["code"]) == ("refusal", "approval_declined")
    assert closed["data"]["status"] == "declined"
    assert closed["data"]["refusal_id"] == refusal["data"]["refusal_id"]
    assert closed["data"]["jws"].count(".") == 2


def test_deadline_refuses_and_late_answer_is_rejected(world: World) -> None:
    pending = ask(world)
    late = accept(world, pending.request_id)
    world.clock.advance(seconds=600)

    with pytest.raises(ApprovalClosed, match=r"is already closed: timed_out$"):
        world.gate.answer_approval(pending.request_id, late)
    with pytest.raises(Refused) as caught:
        world.gate.resume(pending.request_id)

    assert caught.value.code is ReasonCode.APPROVAL_TIMED_OUT
    assert world.gate.pending_approvals() == []
    types = [record["type"] for record in records(world)]
    assert types.count("refusal") == 1
    assert types.count("approval.closed") == 1
    assert "binding" not in types


def test_answer_for_another_digest_rejected(world: World) -> None:
    first = ask(world)
    second = ask(world, transfer("8000"))
    payload = world.gate.approval_payload(second.request_id, "bob")
    payload["approval"] = first.request_id

    with pytest.raises(SignatureError, match="is signed for request"):
        world.gate.answer_approval(first.request_id, sign_payload(world.keys["bob"], payload, typ=SCOPE_TYP))

    assert world.gate.approval(first.request_id).pending


def test_answer_with_unregistered_key_rejected(world: World) -> None:
    pending = ask(world)
    payload = world.gate.approval_payload(pending.request_id, "bob")

    with pytest.raises(SignatureError, match="which is not registered to bob"):
        world.gate.answer_approval(pending.request_id, sign_payload(generate_private_key(), payload, typ=SCOPE_TYP))

    assert world.gate.approval(pending.request_id).pending


def test_answer_by_someone_not_asked_rejected(world: World) -> None:
    pending = ask(world)

    with pytest.raises(DeclarationError, match="alice is not an approver of request"):
        world.gate.approval_payload(pending.request_id, "alice")
    payload = world.gate.approval_payload(pending.request_id, "bob")
    payload["bearer"] = "alice"
    with pytest.raises(DeclarationError, match="alice is not an approver"):
        world.gate.answer_approval(pending.request_id, sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP))


def test_sequence_order_opens_turns(world: World) -> None:
    commit = ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app"})
    pending = ask(world, commit)

    with pytest.raises(DeclarationError, match=r"carol's turn on request .* opens at"):
        world.gate.approval_payload(pending.request_id, "carol")
    world.clock.advance(seconds=30)
    answered = world.gate.answer_approval(pending.request_id, accept(world, pending.request_id, "carol"))

    assert answered.bearer == "carol"


def test_kind_without_route_refused_no_approvers(world: World) -> None:
    call = ToolCall(tool="purge", server="cdn", arguments={})

    with pytest.raises(Refused) as caught:
        world.gate.bind(call)

    assert caught.value.code is ReasonCode.NO_APPROVERS
    assert "no approver is configured for kind tool.cdn.purge" in str(caught.value)


def test_second_answer_loses_the_race(world: World) -> None:
    pending = ask(world)
    answers = [accept(world, pending.request_id, "bob"), accept(world, pending.request_id, "carol")]
    results: list[object] = []
    barrier = threading.Barrier(2)

    def answer(jws: str) -> None:
        barrier.wait()
        try:
            results.append(world.gate.answer_approval(pending.request_id, jws).bearer)
        except ApprovalClosed as error:
            results.append(error)

    threads = [threading.Thread(target=answer, args=(jws,)) for jws in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [result for result in results if isinstance(result, str)]
    assert len(winners) == 1
    assert sum(isinstance(result, ApprovalClosed) for result in results) == 1
    assert [record["type"] for record in records(world)].count("binding") == 1
    assert world.gate.approval(pending.request_id).bearer == winners[0]


def test_request_survives_a_restart(world: World, tmp_path: Path) -> None:
    pending = ask(world)
    expiring = ask(world, transfer("9000"))
    world.gate.close()

    # A new gate: same configuration and store, nothing kept in memory.
    gate = Gate.from_config(tmp_path / "etlb.toml", clock=world.clock)
    world.gate = gate
    assert {request.id for request in gate.pending_approvals()} == {pending.request_id, expiring.request_id}
    gate.answer_approval(pending.request_id, accept(world, pending.request_id))
    world.clock.advance(seconds=601)

    assert gate.resume(pending.request_id).bearer == "bob"
    with pytest.raises(Refused) as caught:
        gate.resume(expiring.request_id)
    assert caught.value.code is ReasonCode.APPROVAL_TIMED_OUT


def test_waiting_bind_returns_the_approvers_binding(world: World) -> None:
    def approve_soon() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = world.gate.store.list_approvals(pending=True)
            if waiting:
                world.gate.answer_approval(waiting[0].id, accept(world, waiting[0].id, "carol"))
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_soon)
    approver.start()
    binding = world.gate.bind(transfer(), wait=True, redeem=True)
    approver.join()

    assert binding is not None
    assert binding.bearer == "carol"
    with pytest.raises(BindingConsumed):
        world.gate.store.redeem(binding.id, binding.action.digest)


def test_waiting_bind_times_out_to_a_refusal(tmp_path: Path, backend: Backend) -> None:
    built = build_world(
        tmp_path, PAYMENTS_CONFIG + APPROVALS.replace("deadline_seconds = 600", "deadline_seconds = 1"), backend
    )
    built.add_bearer("bob")

    started = time.monotonic()
    with pytest.raises(Refused) as caught:
        built.gate.bind(transfer(), wait=True)

    assert caught.value.code is ReasonCode.APPROVAL_TIMED_OUT
    assert 0.9 < time.monotonic() - started < 10
    built.gate.close()


def test_ledger_replay_finds_a_second_closure(world: World) -> None:
    pending = ask(world)
    world.gate.answer_approval(pending.request_id, decline(world, pending.request_id))
    entries = list(world.gate.store.ledger_entries())
    closure = next(entry for entry in entries if json.loads(entry.record)["type"] == "approval.closed")
    replayed = verify_ledger(entries, usage_table=world.gate.store.usage_table())

    # The replay gets the closure twice, as a rewritten ledger would show it. The hash chain check is
    # left out, because only the replay's own rule is under test here.
    replay = _Replay()
    for entry in entries:
        replay.apply(json.loads(entry.record))
    with pytest.raises(_ReplayError, match=f"approval request {pending.request_id} is closed twice"):
        replay.apply(json.loads(closure.record))
    assert replayed.problems == []


def test_retry_after_acceptance_runs_once_under_the_approver(world: World) -> None:
    pending = ask(world)
    answered = world.gate.answer_approval(pending.request_id, accept(world, pending.request_id))

    retried = world.gate.bind(transfer(), redeem=True)
    again = ask(world)

    assert retried is not None
    assert (retried.id, retried.bearer) == (answered.binding_id, "bob")
    assert again.request_id != pending.request_id
    with pytest.raises(BindingConsumed):
        world.gate.resume(pending.request_id)


def test_asking_again_returns_the_waiting_request(world: World) -> None:
    first = ask(world)
    second = ask(world)

    assert second.request_id == first.request_id
    assert [request.id for request in world.gate.pending_approvals()] == [first.request_id]


def test_asking_again_after_a_decline_is_refused(world: World) -> None:
    pending = ask(world)
    world.gate.answer_approval(pending.request_id, decline(world, pending.request_id))

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer())

    assert caught.value.code is ReasonCode.APPROVAL_DECLINED
    assert str(caught.value).endswith(
        f"approval request {pending.request_id} for this action was declined by bob: too large"
    )
    assert world.gate.pending_approvals() == []
    world.clock.advance(seconds=601)
    assert ask(world).request_id != pending.request_id
