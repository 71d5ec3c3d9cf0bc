"""Gate: binding, refusal, fail-closed paths, single use, the context manager and the decorator."""

from __future__ import annotations

import json
from decimal import Decimal

import anyio
import pytest

from etlb.errors import BindingConsumed, DeclarationError, Refused, SignatureError
from etlb.model import BearerStatus, OutcomeStatus, ReasonCode, ToolCall
from etlb.signing import generate_private_key
from tests.backends import both_backends
from tests.conftest import World

pytestmark = both_backends


def transfer(amount: str, account: str = "DE89-0001", currency: str = "EUR") -> ToolCall:
    return ToolCall(
        tool="transfer",
        server="bank",
        arguments={"from_account": account, "amount": amount, "currency": currency},
    )


def ledger_records(world: World) -> list[dict]:
    return [json.loads(entry.record) for entry in world.gate.store.ledger_entries()]


def test_bind_names_bearer_and_scope(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_amount="10000", unit="EUR")

    binding = world.gate.bind(transfer("9000"))

    assert binding is not None
    assert binding.bearer == "alice"
    assert binding.scope_id == scope.id
    assert str(binding.reserved_amount) == "9000 EUR"
    record = ledger_records(world)[-1]
    assert record["type"] == "binding"
    assert record["seq"] == binding.sequence
    assert record["data"]["bearer"] == "alice"
    assert record["data"]["scope_id"] == scope.id
    assert record["data"]["action"]["digest"] == binding.action.digest


def test_call_id_recorded_outside_digest(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"], max_amount="10000", unit="EUR")
    first = ToolCall(tool="transfer", server="bank", arguments=transfer("10").arguments, call_id="call-1")
    second = ToolCall(tool="transfer", server="bank", arguments=transfer("10").arguments, call_id="call-2")

    bound = world.gate.bind(first)
    with pytest.raises(Refused):
        world.gate.bind(ToolCall(tool="purge", server="cdn", call_id="call-3"))
    again = world.gate.bind(second)

    assert bound is not None and again is not None
    assert bound.action.digest == again.action.digest
    records = ledger_records(world)[-3:]
    assert [record["data"]["action"]["call_id"] for record in records] == ["call-1", "call-3", "call-2"]
    assert "call_id" not in ledger_records(world)[0]["data"]


def test_refusal_recorded_with_reasons(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_amount="10000", unit="EUR")

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("25000"))

    refusal = caught.value.refusal
    assert refusal.code is ReasonCode.AMOUNT_EXCEEDS_SCOPE
    assert refusal.reasons[0].scope_id == scope.id
    assert refusal.reasons[0].detail == "cap 10000 EUR per action is below 25000 EUR"
    assert refusal.bearers_nearby == ("alice",)
    record = ledger_records(world)[-1]
    assert record["type"] == "refusal"
    assert record["data"]["code"] == "amount_exceeds_scope"
    assert record["data"]["reasons"] == [
        {
            "scope_id": scope.id,
            "bearer": "alice",
            "code": "amount_exceeds_scope",
            "detail": "cap 10000 EUR per action is below 25000 EUR",
        }
    ]


def test_unknown_tool_refused(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])

    with pytest.raises(Refused) as caught:
        world.gate.bind(ToolCall(tool="purge_cache", server="acme-cdn", arguments={"paths": ["/*"]}))

    assert caught.value.code is ReasonCode.NO_COVERING_SCOPE
    assert caught.value.refusal.action.kind == "tool.acme-cdn.purge_cache"
    assert caught.value.refusal.action.consequence.value == "irreversible"
    assert ledger_records(world)[-1]["data"]["code"] == "no_covering_scope"


def test_reversible_rule_passes_unrecorded(world: World) -> None:
    size = world.gate.store.ledger_size()

    assert world.gate.bind(ToolCall(tool="search", server="docs", arguments={"q": "x"})) is None
    assert world.gate.store.ledger_size() == size


def test_missing_argument_fails_closed(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])

    with pytest.raises(Refused) as caught:
        world.gate.bind(ToolCall(tool="transfer", server="bank", arguments={"amount": "5", "currency": "EUR"}))

    assert caught.value.code is ReasonCode.CLASSIFICATION_FAILED
    assert "without argument 'from_account'" in caught.value.message
    assert caught.value.recorded is True
    assert ledger_records(world)[-1]["data"]["code"] == "classification_failed"


def test_closed_store_refuses(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    world.gate.store.close()

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("5"))

    assert caught.value.code is ReasonCode.STORE_UNAVAILABLE
    assert caught.value.recorded is False


def test_locked_store_times_out_to_refusal(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    world.gate.store.close()
    assert world.backend is not None
    world.gate.store = world.backend.open_store(timeout=0.2)

    with world.backend.write_lock_held(), pytest.raises(Refused) as caught:
        world.gate.bind(transfer("5"))

    assert caught.value.code is ReasonCode.STORE_UNAVAILABLE
    assert "locked" in caught.value.message


def test_forged_stored_scope_not_used(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"], max_count=1)
    header, payload, signature = scope.jws.split(".")
    forged = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    assert world.backend is not None
    connection = world.backend.connect()
    world.backend.allow_changes(connection, "scopes")
    connection.execute("UPDATE scopes SET jws = ? WHERE id = ?", (forged, scope.id))
    connection.close()

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("5"))

    assert caught.value.code is ReasonCode.SIGNATURE_INVALID
    assert caught.value.refusal.reasons[0].scope_id == scope.id


def test_scope_signed_by_other_key_rejected(world: World) -> None:
    world.add_bearer("alice")
    mallory = generate_private_key()

    with pytest.raises(SignatureError, match="not registered to bearer alice"):
        world.gate.declare_scope(world.sign_scope("alice", kinds=["payments.transfer"], signer=mallory))
    assert world.gate.store.list_scopes() == []


def test_unregistered_bearer_cannot_declare(world: World) -> None:
    world.keys["bob"] = generate_private_key()

    with pytest.raises(DeclarationError, match="'bob', who is not registered"):
        world.gate.declare_scope(world.sign_scope("bob", kinds=["payments.transfer"]))


def test_suspended_bearer_scope_refused(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    world.gate.set_bearer_status("alice", BearerStatus.SUSPENDED)

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("5"))

    assert caught.value.code is ReasonCode.BEARER_SUSPENDED
    with pytest.raises(DeclarationError, match="alice is suspended"):
        world.declare("alice", kinds=["payments.transfer"])


def test_revoked_scope_refused(world: World) -> None:
    world.add_bearer("alice")
    scope = world.declare("alice", kinds=["payments.transfer"])
    world.gate.revoke_scope(scope.id, administrator="ops-admin")

    with pytest.raises(Refused) as caught:
        world.gate.bind(transfer("5"))

    assert caught.value.code is ReasonCode.SCOPE_REVOKED
    revocation = [record for record in ledger_records(world) if record["type"] == "scope.revoked"]
    assert revocation[0]["data"]["by"] == "administrator"
    assert revocation[0]["data"]["actor"] == "ops-admin"


def test_redeem_twice_refused(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    binding = world.gate.bind(transfer("5"))
    assert binding is not None

    world.gate.redeem(binding, transfer("5"))

    with pytest.raises(BindingConsumed, match="already used"):
        world.gate.redeem(binding, transfer("5"))


def test_redeem_other_action_refused(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    binding = world.gate.bind(transfer("5"))
    assert binding is not None

    with pytest.raises(BindingConsumed, match="is for action"):
        world.gate.redeem(binding, transfer("5000"))
    world.gate.redeem(binding, transfer("5"))


def test_complete_twice_refused(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    binding = world.gate.bind(transfer("5"))
    assert binding is not None
    world.gate.complete(binding, world_outcome_ok())

    with pytest.raises(BindingConsumed, match="already has an outcome"):
        world.gate.complete(binding, world_outcome_ok())


def world_outcome_ok():
    from etlb.model import Outcome

    return Outcome.succeeded("sha256:00")


def test_execution_records_binding_before_body(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    seen: list[tuple] = []

    with world.gate.execution(transfer("5")) as binding:
        # Another connection sees only committed data, so this proves the binding was durable first.
        assert world.backend is not None
        observer = world.backend.connect()
        seen.append(observer.execute("SELECT id, scope_id FROM bindings").fetchone())
        seen.append(observer.execute("SELECT binding_id FROM redemptions").fetchone())
        observer.close()

    assert binding is not None
    assert seen == [(binding.id, binding.scope_id), (binding.id,)]
    state = world.gate.store.get_binding(binding.id)
    assert state is not None
    assert state.outcome is not None
    assert state.outcome.status is OutcomeStatus.SUCCEEDED


def test_execution_failure_recorded(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])

    with pytest.raises(RuntimeError, match="bank timeout"), world.gate.execution(transfer("5")) as binding:
        raise RuntimeError("bank timeout")

    assert binding is not None
    record = ledger_records(world)[-1]
    assert record["type"] == "outcome"
    assert record["data"]["status"] == "failed"
    assert record["data"]["detail"] == "RuntimeError: bank timeout"
    assert world.gate.store.usage_table()[binding.scope_id].count == 1


def test_execution_refused_skips_body(world: World) -> None:
    ran: list[bool] = []

    with pytest.raises(Refused), world.gate.execution(transfer("5")):
        ran.append(True)

    assert ran == []


def test_binding_without_outcome_is_unknown(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"])
    binding = world.gate.bind(transfer("5"))
    assert binding is not None

    state = world.gate.store.get_binding(binding.id)

    assert state is not None
    assert state.outcome is None
    assert state.redeemed is False


def test_guard_sync_runs_and_refuses(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"], max_count=1)
    calls: list[str] = []

    @world.gate.guard(tool="transfer", server="bank")
    def send(from_account: str, amount: str, currency: str = "EUR") -> dict:
        calls.append(amount)
        return {"ok": True}

    assert send("DE89-0001", "10") == {"ok": True}
    with pytest.raises(Refused) as caught:
        send("DE89-0001", "20")

    assert calls == ["10"]
    assert caught.value.code is ReasonCode.COUNT_EXHAUSTED
    outcome = [record for record in ledger_records(world) if record["type"] == "outcome"]
    assert outcome[0]["data"]["status"] == "succeeded"
    assert outcome[0]["data"]["detail"].startswith("sha256:")


def test_guard_async_runs_and_refuses(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["payments.transfer"], max_total="15", unit="EUR")
    calls: list[str] = []

    @world.gate.guard(tool="transfer", server="bank")
    async def send(from_account: str, amount: str, currency: str = "EUR") -> str:
        calls.append(amount)
        if amount == "5":
            raise ValueError("rejected by bank")
        return "done"

    async def scenario() -> list[object]:
        results: list[object] = [await send("DE89-0001", "10")]
        for amount in ("5", "1"):
            try:
                results.append(await send("DE89-0001", amount))
            except (ValueError, Refused) as error:
                results.append(type(error).__name__)
        return results

    assert anyio.run(scenario) == ["done", "ValueError", "Refused"]
    assert calls == ["10", "5"]
    assert world.gate.store.usage_table()[world.gate.store.list_scopes()[0].scope.id].amount == Decimal(15)


def test_agent_arguments_cannot_claim_reversible(world: World) -> None:
    call = ToolCall(
        tool="delete_records",
        server="crm",
        arguments={"readOnlyHint": True, "consequence": "reversible", "ids": [1]},
    )

    action = world.gate.classify(call, annotations={"readOnlyHint": True})

    assert action.consequence.value == "irreversible"
    with pytest.raises(Refused):
        world.gate.bind(call, annotations={"readOnlyHint": True})


def test_trusted_read_only_hint_passes(world: World) -> None:
    call = ToolCall(tool="get_page", server="docs", arguments={"id": 3})

    assert world.gate.bind(call, annotations={"readOnlyHint": True}) is None
    with pytest.raises(Refused):
        world.gate.bind(call, annotations={"readOnlyHint": False})


def test_most_specific_scope_chosen(world: World) -> None:
    world.add_bearer("alice")
    world.add_bearer("bob")
    world.declare("alice", kinds=["payments.*"])
    specific = world.declare("bob", kinds=["payments.transfer"], resources=["account:DE89-0001"])

    first = world.gate.bind(transfer("5"))
    second = world.gate.bind(transfer("5"))

    assert first is not None
    assert second is not None
    assert (first.bearer, first.scope_id) == ("bob", specific.id)
    assert (second.bearer, second.scope_id) == ("bob", specific.id)


def test_exhausted_scope_falls_to_next(world: World) -> None:
    world.add_bearer("alice")
    world.add_bearer("bob")
    broad = world.declare("alice", kinds=["payments.*"])
    world.declare("bob", kinds=["payments.transfer"], max_count=1)

    first = world.gate.bind(transfer("5"))
    second = world.gate.bind(transfer("5"))

    assert first is not None
    assert second is not None
    assert first.bearer == "bob"
    assert (second.bearer, second.scope_id) == ("alice", broad.id)
