"""Scope conditions (CEL), pinned tool definitions and rolling windows, through a real gate."""

from __future__ import annotations

import pytest

from etlb.conditions import check_condition, condition_failure
from etlb.errors import DeclarationError, Refused
from etlb.model import ReasonCode, ToolCall
from tests.conftest import World


def commit(branch: str, *, digest: str | None = None) -> ToolCall:
    return ToolCall(
        tool="git_commit",
        server="git",
        arguments={"repo_path": "/srv/app", "branch": branch, "message": "fix"},
        definition_digest=digest,
    )


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def test_condition_true_binds(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(world_scope(world, when='action.arguments.branch != "main"'))

    binding = world.gate.bind(commit("feature/x"))

    assert binding is not None
    assert binding.bearer == "alice"


def test_condition_false_names_clause(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(
        world_scope(world, when='action.kind == "git.commit" && action.arguments.branch != "main"')
    )

    with pytest.raises(Refused) as caught:
        world.gate.bind(commit("main"))

    reason = caught.value.refusal.reasons[0]
    assert reason.code is ReasonCode.CONDITION_FALSE
    assert (
        reason.detail
        == "condition `action.arguments.branch != \"main\"` is false with action.arguments.branch = 'main'"
    )


def test_condition_missing_field_fails_closed(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(world_scope(world, when='action.arguments.ticket.startsWith("OPS-")'))

    with pytest.raises(Refused) as caught:
        world.gate.bind(commit("feature/x"))

    assert caught.value.code is ReasonCode.CONDITION_FALSE
    assert "could not be evaluated" in caught.value.refusal.reasons[0].detail


def test_invalid_condition_rejected_at_declaration(world: World) -> None:
    world.add_bearer("alice")

    with pytest.raises(DeclarationError, match="is not valid CEL"):
        world.gate.declare_scope(world_scope(world, when="action.arguments.(("))
    assert world.gate.store.list_scopes() == []


def test_condition_clause_split_keeps_strings() -> None:
    check_condition('action.arguments.note == "a && b" && action.kind == "x"')

    assert condition_failure('action.kind == "x" && "a && b" == "a && b"', make_action()) is None


def test_pinned_definition_matches(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(world_scope(world, definitions={"git/git_commit": DIGEST_A}))

    binding = world.gate.bind(commit("feature/x", digest=DIGEST_A))

    assert binding is not None


@pytest.mark.parametrize("digest", [DIGEST_B, None], ids=["changed", "unknown"])
def test_changed_definition_refused(world: World, digest: str | None) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(world_scope(world, definitions={"git/git_commit": DIGEST_A}))

    with pytest.raises(Refused) as caught:
        world.gate.bind(commit("feature/x", digest=digest))

    assert caught.value.code is ReasonCode.DEFINITION_CHANGED
    assert caught.value.refusal.reasons[0].detail == (
        f"tool git_commit has definition {digest or 'unknown'}, but the bearer signed for {DIGEST_A}"
    )


def test_malformed_definition_rejected(world: World) -> None:
    world.add_bearer("alice")

    with pytest.raises(DeclarationError, match="scope definitions must map"):
        world.gate.declare_scope(world_scope(world, definitions={"git_commit": "md5:00"}))


def test_window_count_caps_splitting(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(world_scope(world, windows=[{"seconds": 3600, "max_count": 2}]))

    first = world.gate.bind(commit("a"))
    second = world.gate.bind(commit("b"))
    with pytest.raises(Refused) as caught:
        world.gate.bind(commit("c"))
    world.clock.advance(hours=1, seconds=1)
    fourth = world.gate.bind(commit("d"))

    assert first is not None
    assert second is not None
    assert fourth is not None
    assert caught.value.code is ReasonCode.WINDOW_EXHAUSTED
    assert caught.value.refusal.reasons[0].detail == "all 2 executions in the last 1h are used"


def test_window_amount_caps_small_payments(world: World) -> None:
    world.add_bearer("alice")
    world.gate.declare_scope(
        world_scope(
            world,
            kinds=["payments.transfer"],
            unit="EUR",
            windows=[{"seconds": 86400, "max_amount": "20000"}],
        )
    )
    transfers = [
        ToolCall(
            tool="transfer", server="bank", arguments={"from_account": "DE89", "amount": "9000", "currency": "EUR"}
        )
        for _ in range(3)
    ]

    world.gate.bind(transfers[0])
    world.gate.bind(transfers[1])
    with pytest.raises(Refused) as caught:
        world.gate.bind(transfers[2])

    assert caught.value.code is ReasonCode.WINDOW_EXHAUSTED
    assert caught.value.refusal.reasons[0].detail == "2000 EUR left of 20000 EUR in the last 24h, below 9000 EUR"


def world_scope(
    world: World,
    *,
    kinds: list[str] | None = None,
    when: str | None = None,
    definitions: dict[str, str] | None = None,
    windows: list[dict] | None = None,
    unit: str | None = None,
) -> str:
    """Sign a scope for alice through the declaration payload, with the optional fields under test."""
    from datetime import timedelta

    from etlb.declarations import SCOPE_TYP, scope_payload
    from etlb.model import Limits, WindowLimit
    from etlb.signing import sign_payload

    payload = scope_payload(
        bearer="alice",
        kinds=kinds or ["git.commit"],
        resources=["**"],
        agents=["*"],
        limits=Limits(unit=unit, windows=tuple(WindowLimit.from_json(window) for window in windows or [])),
        valid_from=world.clock.now - timedelta(minutes=1),
        valid_until=world.clock.now + timedelta(days=30),
        terms="alice accepts liability for these actions",
        issued_at=world.clock.now,
        when=when,
        definitions=definitions,
    )
    return sign_payload(world.keys["alice"], payload, typ=SCOPE_TYP)


def make_action():
    from etlb.model import Action, Consequence

    return Action(
        kind="x",
        resource="r",
        consequence=Consequence.IRREVERSIBLE,
        agent="a",
        tool="t",
        server=None,
        arguments={},
        amount=None,
        digest="sha256:00",
    )
