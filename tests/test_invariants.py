"""Invariants that need a whole gate to check: key custody, non-repudiation and deterministic resolution.

The other invariants have their tests beside the code they constrain:
- binding committed before the tool runs: `test_gate.py::test_execution_records_binding_before_body`;
- fail closed: `test_gate.py` (store closed, store locked, classification failed, forged scope, unknown
  tool) and `test_cases.py` (store unreadable after restart);
- the agent's words never decide reversibility: `test_gate.py::test_agent_arguments_cannot_claim_reversible`;
- scope limits under concurrency: `integration/test_race.py`;
- single use: `test_gate.py::test_redeem_twice_refused`, `test_redeem_other_action_refused`;
- tamper evidence: `test_ledger_verify.py`.
"""

from __future__ import annotations

import base64
import itertools
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from etlb.errors import Refused, SignatureError
from etlb.gate import Gate
from etlb.model import ReasonCode, ToolCall
from etlb.resolve import Candidate, resolve
from tests.backends import both_backends
from tests.conftest import World

pytestmark = both_backends


def commit_call() -> ToolCall:
    return ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": "fix"})


def test_store_holds_no_private_key(world: World) -> None:
    private_key = world.add_bearer("alice")
    world.declare("alice", kinds=["git.commit"])
    world.gate.bind(commit_call())
    world.gate.close()
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    secret_forms = [raw, base64.urlsafe_b64encode(raw).rstrip(b"="), base64.b64encode(raw), raw.hex().encode()]

    assert world.backend is not None
    stored = world.backend.stored_bytes()

    assert stored
    for form in secret_forms:
        assert form not in stored


def test_other_bearers_key_cannot_sign(world: World) -> None:
    world.add_bearer("alice")
    bob = world.add_bearer("bob")

    with pytest.raises(SignatureError, match="not registered to bearer alice"):
        world.gate.declare_scope(world.sign_scope("alice", kinds=["git.commit"], signer=bob))

    with pytest.raises(Refused) as caught:
        world.gate.bind(commit_call())
    assert caught.value.code is ReasonCode.NO_COVERING_SCOPE


def test_resolution_ignores_input_order(world: World) -> None:
    for bearer in ("alice", "bob", "carol", "dave"):
        world.add_bearer(bearer)
    world.declare("alice", kinds=["git.*"])
    world.declare("bob", kinds=["git.commit"], resources=["repo:/srv/*"])
    world.declare("carol", kinds=["git.commit"], resources=["repo:/srv/app"], agents=["*"])
    world.declare("dave", kinds=["git.commit"], resources=["repo:/srv/app"], agents=["agent-1"])
    action = world.gate.classify(commit_call())
    candidates = [
        Candidate(state.scope, state.bearer, True, state.revoked, state.usage)
        for state in world.gate.store.list_scopes()
    ]

    orders = {
        tuple(candidate.scope.bearer for candidate in resolve(action, list(permutation), now=world.clock.now).covering)
        for permutation in itertools.permutations(candidates)
    }

    assert orders == {("dave", "carol", "bob", "alice")}


def test_same_state_same_binding(world: World) -> None:
    world.add_bearer("alice")
    world.add_bearer("bob")
    world.declare("alice", kinds=["git.commit"], valid_until=world.clock.now + timedelta(days=3))
    earliest = world.declare("bob", kinds=["git.commit"], valid_until=world.clock.now + timedelta(days=2))
    assert world.backend is not None
    second_gate = Gate(world.gate.config, world.backend.open_store(), clock=world.clock)

    first = world.gate.explain(commit_call())[1].covering[0].scope.id
    second = second_gate.explain(commit_call())[1].covering[0].scope.id
    second_gate.close()

    assert first == earliest.id
    assert second == earliest.id


def test_refusal_explains_every_nearby_scope(world: World) -> None:
    for bearer in ("alice", "bob", "carol"):
        world.add_bearer(bearer)
    world.declare("alice", kinds=["git.commit"], resources=["repo:/srv/other"])
    world.declare("bob", kinds=["git.commit"], agents=["release-bot"])
    expired = world.declare("carol", kinds=["git.*"], valid_until=world.clock.now + timedelta(minutes=5))
    world.declare("carol", kinds=["payments.transfer"])
    world.clock.advance(minutes=10)

    with pytest.raises(Refused) as caught:
        world.gate.bind(commit_call())

    reasons = [(reason.bearer, reason.code) for reason in caught.value.refusal.reasons]
    # Exact kinds first; among them, a scope whose resource matches before one whose resource does not.
    assert reasons == [
        ("bob", ReasonCode.AGENT_NOT_COVERED),
        ("alice", ReasonCode.RESOURCE_NOT_COVERED),
        ("carol", ReasonCode.SCOPE_EXPIRED),
    ]
    assert caught.value.refusal.reasons[2].scope_id == expired.id
    assert caught.value.code is ReasonCode.AGENT_NOT_COVERED
    assert "scope expired at" in caught.value.message
