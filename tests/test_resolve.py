"""The resolver: which scopes cover an action, the refusal reason of each one that does not, and their order.

Every scope here is real: its payload is built by `scope_payload`, signed with an Ed25519 key, and
decoded by `scope_from_payload`. A candidate's `signature_valid` is the result of verifying the
scope's token against the key registered to its bearer, as the gate computes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from etlb.canonical import sha256_digest
from etlb.declarations import SCOPE_TYP, scope_from_payload, scope_payload
from etlb.errors import SignatureError
from etlb.model import (
    Action,
    Amount,
    Bearer,
    BearerKey,
    BearerStatus,
    Consequence,
    Limits,
    ReasonCode,
    Scope,
    ScopeReason,
    ScopeUsage,
    action_fields,
    format_time,
)
from etlb.resolve import Candidate, Resolution, refusal_message, reservation_for, resolve
from etlb.signing import generate_private_key, key_id, public_jwk, read_unverified, sign_payload, verify_jws

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TERMS = "I accept liability for transfers from account DE01 by the treasury agents."

ALICE_KEY = generate_private_key()
MALLORY_KEY = generate_private_key()
ALICE_KEY_ID = key_id(public_jwk(ALICE_KEY))
ALICE = Bearer("alice", "Alice Adams", (BearerKey(ALICE_KEY_ID, public_jwk(ALICE_KEY)),))
ALICE_SUSPENDED = Bearer(
    "alice", "Alice Adams", (BearerKey(ALICE_KEY_ID, public_jwk(ALICE_KEY)),), BearerStatus.SUSPENDED
)

EUR_250 = Amount(Decimal(250), "EUR")
NO_LIMITS = Limits()
NO_USAGE = ScopeUsage()


def make_scope(
    *,
    kinds: tuple[str, ...] = ("payments.transfer",),
    resources: tuple[str, ...] = ("account:DE01",),
    agents: tuple[str, ...] = ("*",),
    limits: Limits = NO_LIMITS,
    valid_from: datetime = NOW - timedelta(days=1),
    valid_until: datetime = NOW + timedelta(days=30),
    signer: Ed25519PrivateKey = ALICE_KEY,
) -> Scope:
    """Sign a scope of bearer alice. It names alice's key even when another key signs it."""
    payload = scope_payload(
        bearer="alice",
        kinds=list(kinds),
        resources=list(resources),
        agents=list(agents),
        limits=limits,
        valid_from=valid_from,
        valid_until=valid_until,
        terms=TERMS,
        issued_at=valid_from,
    )
    token = sign_payload(signer, payload, typ=SCOPE_TYP)
    _, decoded = read_unverified(token)
    return scope_from_payload(decoded, jws=token, key_id=ALICE_KEY_ID)


def signature_valid(scope: Scope, bearer: Bearer | None) -> bool:
    key = bearer.key(scope.key_id) if bearer is not None else None
    if key is None:
        return False
    try:
        verify_jws(scope.jws, key.public_jwk, typ=SCOPE_TYP)
    except SignatureError:
        return False
    return True


def make_candidate(
    scope: Scope, *, bearer: Bearer | None = ALICE, revoked: bool = False, usage: ScopeUsage = NO_USAGE
) -> Candidate:
    return Candidate(scope, bearer, signature_valid(scope, bearer), revoked, usage)


def make_action(
    *,
    kind: str = "payments.transfer",
    resource: str = "account:DE01",
    agent: str = "bot-1",
    amount: Amount | None = EUR_250,
) -> Action:
    fields = action_fields(
        kind=kind,
        resource=resource,
        consequence=Consequence.IRREVERSIBLE,
        agent=agent,
        tool="transfer",
        server="payments",
        arguments={"from_account": "DE01"},
        amount=amount,
    )
    return Action(
        kind=kind,
        resource=resource,
        consequence=Consequence.IRREVERSIBLE,
        agent=agent,
        tool="transfer",
        server="payments",
        arguments={"from_account": "DE01"},
        amount=amount,
        digest=sha256_digest(fields),
    )


def resolve_one(candidate: Candidate, action: Action | None = None) -> Resolution:
    return resolve(action or make_action(), [candidate], now=NOW)


# Refusal reasons: one case per reason the resolver produces


@dataclass(frozen=True)
class RefusalCase:
    code: ReasonCode
    detail: str
    scope: dict[str, object] = field(default_factory=dict)
    candidate: dict[str, object] = field(default_factory=dict)
    action: dict[str, object] = field(default_factory=dict)


REFUSAL_CASES = {
    "unregistered-bearer": RefusalCase(
        ReasonCode.SIGNATURE_INVALID, "bearer alice is not registered", candidate={"bearer": None}
    ),
    "signed-by-other-key": RefusalCase(
        ReasonCode.SIGNATURE_INVALID,
        f"signature does not verify with alice's key {ALICE_KEY_ID}",
        scope={"signer": MALLORY_KEY},
    ),
    "bearer-suspended": RefusalCase(
        ReasonCode.BEARER_SUSPENDED, "bearer alice is suspended", candidate={"bearer": ALICE_SUSPENDED}
    ),
    "scope-revoked": RefusalCase(ReasonCode.SCOPE_REVOKED, "scope was revoked", candidate={"revoked": True}),
    "not-yet-valid": RefusalCase(
        ReasonCode.SCOPE_NOT_YET_VALID,
        "scope is valid from 2026-06-01T13:00:00.000Z",
        scope={"valid_from": NOW + timedelta(hours=1)},
    ),
    "expired": RefusalCase(
        ReasonCode.SCOPE_EXPIRED,
        "scope expired at 2026-06-01T11:00:00.000Z",
        scope={"valid_until": NOW - timedelta(hours=1)},
    ),
    "expired-at-now": RefusalCase(
        ReasonCode.SCOPE_EXPIRED, "scope expired at 2026-06-01T12:00:00.000Z", scope={"valid_until": NOW}
    ),
    "agent-not-covered": RefusalCase(
        ReasonCode.AGENT_NOT_COVERED,
        "agent bot-1 is not covered by bot-2, ops-*",
        scope={"agents": ("bot-2", "ops-*")},
    ),
    "resource-not-covered": RefusalCase(
        ReasonCode.RESOURCE_NOT_COVERED,
        "resource account:DE01 is not covered by account:DE02, account:FR*",
        scope={"resources": ("account:DE02", "account:FR*")},
    ),
    "other-unit": RefusalCase(
        ReasonCode.UNIT_MISMATCH,
        "action is in USD, scope caps amounts in EUR",
        scope={"limits": Limits(max_amount=Decimal(10000), unit="EUR")},
        action={"amount": Amount(Decimal(250), "USD")},
    ),
    "no-amount-under-cap": RefusalCase(
        ReasonCode.UNIT_MISMATCH,
        "scope caps amounts in EUR, but the action has no amount",
        scope={"limits": Limits(max_total=Decimal(5000), unit="EUR")},
        action={"amount": None},
    ),
    "amount-exceeds-scope": RefusalCase(
        ReasonCode.AMOUNT_EXCEEDS_SCOPE,
        "cap 10000 EUR per action is below 25000 EUR",
        scope={"limits": Limits(max_amount=Decimal(10000), unit="EUR")},
        action={"amount": Amount(Decimal(25000), "EUR")},
    ),
    "budget-exhausted": RefusalCase(
        ReasonCode.BUDGET_EXHAUSTED,
        "100 EUR left of 1000 EUR, below 250 EUR",
        scope={"limits": Limits(max_total=Decimal(1000), unit="EUR")},
        candidate={"usage": ScopeUsage(count=3, amount=Decimal(900))},
    ),
    "budget-exhausted-decimal": RefusalCase(
        ReasonCode.BUDGET_EXHAUSTED,
        "0.5 EUR left of 1000 EUR, below 0.75 EUR",
        scope={"limits": Limits(max_total=Decimal("1000.00"), unit="EUR")},
        candidate={"usage": ScopeUsage(count=3, amount=Decimal("999.50"))},
        action={"amount": Amount(Decimal("0.75"), "EUR")},
    ),
    "count-exhausted": RefusalCase(
        ReasonCode.COUNT_EXHAUSTED,
        "all 3 executions of the scope are used",
        scope={"limits": Limits(max_count=3)},
        candidate={"usage": ScopeUsage(count=3)},
    ),
    "count-zero": RefusalCase(
        ReasonCode.COUNT_EXHAUSTED, "all 0 executions of the scope are used", scope={"limits": Limits(max_count=0)}
    ),
}


@pytest.mark.parametrize("case", list(REFUSAL_CASES.values()), ids=list(REFUSAL_CASES))
def test_refusal_reason(case: RefusalCase) -> None:
    scope = make_scope(**case.scope)  # type: ignore[arg-type]
    candidate = make_candidate(scope, **case.candidate)  # type: ignore[arg-type]

    resolution = resolve_one(candidate, make_action(**case.action))  # type: ignore[arg-type]

    assert resolution.covering == ()
    assert resolution.reasons == (ScopeReason(scope.id, "alice", case.code, case.detail),)
    assert resolution.overall_code is case.code


def test_every_scope_reason_covered() -> None:
    # Reason codes produced elsewhere: by the gate, the store or the approval flow, never per scope.
    not_per_scope = {
        ReasonCode.NO_COVERING_SCOPE,
        ReasonCode.CONDITION_FALSE,
        ReasonCode.DEFINITION_CHANGED,
        ReasonCode.WINDOW_EXHAUSTED,
        ReasonCode.BINDING_CONSUMED,
        ReasonCode.OPAQUE_TARGET,
        ReasonCode.ANALYSIS_LIMIT_EXCEEDED,
        ReasonCode.APPROVAL_DECLINED,
        ReasonCode.APPROVAL_TIMED_OUT,
        ReasonCode.NO_APPROVERS,
        ReasonCode.STORE_UNAVAILABLE,
        ReasonCode.INTERNAL_ERROR,
        ReasonCode.CLASSIFICATION_FAILED,
        ReasonCode.APPROVAL_PENDING,
    }

    assert {case.code for case in REFUSAL_CASES.values()} == set(ReasonCode) - not_per_scope


# The first failing check is the one reported


@pytest.mark.parametrize(
    ("scope_options", "candidate_options", "expected"),
    [
        pytest.param(
            {"valid_until": NOW - timedelta(hours=1)},
            {"bearer": ALICE_SUSPENDED, "revoked": True},
            ReasonCode.BEARER_SUSPENDED,
            id="suspended-before-revoked",
        ),
        pytest.param(
            {"signer": MALLORY_KEY},
            {"bearer": ALICE_SUSPENDED},
            ReasonCode.SIGNATURE_INVALID,
            id="signature-before-suspended",
        ),
        pytest.param(
            {"valid_until": NOW - timedelta(hours=1)},
            {"revoked": True},
            ReasonCode.SCOPE_REVOKED,
            id="revoked-before-expired",
        ),
        pytest.param(
            {"valid_from": NOW + timedelta(hours=1), "agents": ("bot-9",)},
            {},
            ReasonCode.SCOPE_NOT_YET_VALID,
            id="window-before-agent",
        ),
        pytest.param(
            {"agents": ("bot-9",), "resources": ("account:XX",)},
            {},
            ReasonCode.AGENT_NOT_COVERED,
            id="agent-before-resource",
        ),
        pytest.param(
            {"resources": ("account:XX",), "limits": Limits(max_amount=Decimal(1), unit="USD")},
            {},
            ReasonCode.RESOURCE_NOT_COVERED,
            id="resource-before-unit",
        ),
        pytest.param(
            {"limits": Limits(max_amount=Decimal(100), max_total=Decimal(100), unit="EUR")},
            {"usage": ScopeUsage(count=1, amount=Decimal(100))},
            ReasonCode.AMOUNT_EXCEEDS_SCOPE,
            id="amount-before-budget",
        ),
        pytest.param(
            {"limits": Limits(max_total=Decimal(100), max_count=1, unit="EUR")},
            {"usage": ScopeUsage(count=1, amount=Decimal(100))},
            ReasonCode.BUDGET_EXHAUSTED,
            id="budget-before-count",
        ),
    ],
)
def test_first_failure_reported(
    scope_options: dict[str, object], candidate_options: dict[str, object], expected: ReasonCode
) -> None:
    scope = make_scope(**scope_options)  # type: ignore[arg-type]

    resolution = resolve_one(make_candidate(scope, **candidate_options))  # type: ignore[arg-type]

    assert [reason.code for reason in resolution.reasons] == [expected]


# Covering scopes and boundaries


@pytest.mark.parametrize(
    ("scope_options", "candidate_options", "action_options"),
    [
        pytest.param({}, {}, {}, id="no-limits"),
        pytest.param({"valid_from": NOW}, {}, {}, id="valid-from-now"),
        pytest.param({"valid_until": NOW + timedelta(milliseconds=1)}, {}, {}, id="valid-until-after-now"),
        pytest.param({"kinds": ("payments.*",)}, {}, {}, id="kind-pattern"),
        pytest.param({"agents": ("bot-?",)}, {}, {}, id="agent-pattern"),
        pytest.param({"limits": Limits(max_amount=Decimal(250), unit="EUR")}, {}, {}, id="amount-equal-to-cap"),
        pytest.param(
            {"limits": Limits(max_total=Decimal(1000), unit="EUR")},
            {"usage": ScopeUsage(count=3, amount=Decimal(750))},
            {},
            id="budget-reaches-total",
        ),
        pytest.param({"limits": Limits(max_count=3)}, {"usage": ScopeUsage(count=2)}, {}, id="last-execution-of-count"),
        pytest.param({"limits": Limits(max_count=3)}, {}, {"amount": None}, id="count-cap-without-amount"),
        pytest.param(
            {"limits": Limits(max_count=3)}, {}, {"amount": Amount(Decimal(9), "USD")}, id="count-cap-any-unit"
        ),
    ],
)
def test_scope_covers(
    scope_options: dict[str, object], candidate_options: dict[str, object], action_options: dict[str, object]
) -> None:
    scope = make_scope(**scope_options)  # type: ignore[arg-type]

    resolution = resolve_one(make_candidate(scope, **candidate_options), make_action(**action_options))  # type: ignore[arg-type]

    assert [candidate.scope.id for candidate in resolution.covering] == [scope.id]
    assert resolution.reasons == ()


@pytest.mark.parametrize(
    "kinds",
    [("payments.refund",), ("payments",), ("payments.transfer.*",), ("git.*",)],
    ids=["other-kind", "parent-kind", "deeper-pattern", "other-pattern"],
)
def test_other_kind_ignored(kinds: tuple[str, ...]) -> None:
    # A scope whose kinds do not match is not nearby, so it gets no reason at all.
    resolution = resolve_one(make_candidate(make_scope(kinds=kinds, agents=("bot-9",))))

    assert resolution.covering == ()
    assert resolution.reasons == ()
    assert resolution.overall_code is ReasonCode.NO_COVERING_SCOPE


def test_no_candidates() -> None:
    resolution = resolve(make_action(), [], now=NOW)

    assert resolution == Resolution((), ())
    assert resolution.overall_code is ReasonCode.NO_COVERING_SCOPE


# Specificity: each pair is (preferred, other) and is resolved in both input orders


def pair_covering(preferred: Scope, other: Scope, action: Action) -> list[list[str]]:
    """Return the covering scope ids for both input orders of the two scopes."""
    orders = ([preferred, other], [other, preferred])
    results = []
    for scopes in orders:
        resolution = resolve(action, [make_candidate(scope) for scope in scopes], now=NOW)
        results.append([candidate.scope.id for candidate in resolution.covering])
    return results


SPECIFICITY_PAIRS = {
    "exact-kind-over-pattern": ({"kinds": ("payments.transfer",)}, {"kinds": ("payments.*",)}),
    "longer-kind-prefix": ({"kinds": ("payments.tr*",)}, {"kinds": ("payments.*",)}),
    "kind-pattern-over-double-star": ({"kinds": ("payments.*",)}, {"kinds": ("**",)}),
    "best-of-several-kinds": (
        {"kinds": ("**", "payments.transfer"), "valid_until": NOW + timedelta(days=60)},
        {"kinds": ("payments.*",), "valid_until": NOW + timedelta(days=1)},
    ),
    "kind-before-resource": (
        {"kinds": ("payments.transfer",), "resources": ("account:*",)},
        {"kinds": ("payments.*",), "resources": ("account:DE01",)},
    ),
    "exact-resource-over-pattern": ({"resources": ("account:DE01",)}, {"resources": ("account:*",)}),
    "longer-resource-prefix": ({"resources": ("account:DE*",)}, {"resources": ("account:*",)}),
    "resource-before-agent": (
        {"resources": ("account:DE01",), "agents": ("*",)},
        {"resources": ("account:*",), "agents": ("bot-1",)},
    ),
    "exact-agent-over-star": ({"agents": ("bot-1",)}, {"agents": ("*",)}),
    "exact-agent-over-pattern": ({"agents": ("bot-1",)}, {"agents": ("bot-*",)}),
    "agent-before-valid-until": (
        {"agents": ("bot-1",), "valid_until": NOW + timedelta(days=60)},
        {"agents": ("*",), "valid_until": NOW + timedelta(days=1)},
    ),
    "earlier-valid-until": ({"valid_until": NOW + timedelta(days=1)}, {"valid_until": NOW + timedelta(days=30)}),
}


@pytest.mark.parametrize(("preferred_options", "other_options"), SPECIFICITY_PAIRS.values(), ids=SPECIFICITY_PAIRS)
def test_specificity_pair(preferred_options: dict[str, object], other_options: dict[str, object]) -> None:
    preferred = make_scope(**preferred_options)  # type: ignore[arg-type]
    other = make_scope(**other_options)  # type: ignore[arg-type]

    results = pair_covering(preferred, other, make_action())

    assert results[0] == [preferred.id, other.id]
    assert results[1] == [preferred.id, other.id]


def test_equal_scopes_by_lower_id() -> None:
    scopes = [make_scope() for _ in range(4)]
    expected = sorted(scope.id for scope in scopes)

    forward = resolve(make_action(), [make_candidate(scope) for scope in scopes], now=NOW)
    backward = resolve(make_action(), [make_candidate(scope) for scope in reversed(scopes)], now=NOW)

    assert [candidate.scope.id for candidate in forward.covering] == expected
    assert [candidate.scope.id for candidate in backward.covering] == expected


def test_agent_pattern_prefix_not_ranked() -> None:
    # Agent patterns rank only as exact or not, so "bot-*" and "*" tie and valid_until decides.
    narrow = make_scope(agents=("bot-*",), valid_until=NOW + timedelta(days=60))
    broad = make_scope(agents=("*",), valid_until=NOW + timedelta(days=1))

    results = pair_covering(broad, narrow, make_action())

    assert results[0] == [broad.id, narrow.id]
    assert results[1] == [broad.id, narrow.id]


def test_reasons_ordered_by_specificity() -> None:
    exact = make_scope(kinds=("payments.transfer",), valid_until=NOW - timedelta(hours=1))
    pattern = make_scope(kinds=("payments.*",))
    candidates = [make_candidate(pattern, revoked=True), make_candidate(exact)]

    forward = resolve(make_action(), candidates, now=NOW)
    backward = resolve(make_action(), list(reversed(candidates)), now=NOW)

    assert [reason.scope_id for reason in forward.reasons] == [exact.id, pattern.id]
    assert [reason.scope_id for reason in backward.reasons] == [exact.id, pattern.id]
    assert forward.overall_code is ReasonCode.SCOPE_EXPIRED


def test_resource_mismatch_sorts_last() -> None:
    # Both kinds are exact. The scope whose resource matches ranks first, so its reason is the overall one.
    mismatch = make_scope(resources=("account:XX",), valid_until=NOW + timedelta(days=1))
    revoked = make_scope(resources=("account:*",), valid_until=NOW + timedelta(days=60))
    candidates = [make_candidate(mismatch), make_candidate(revoked, revoked=True)]

    resolution = resolve(make_action(), candidates, now=NOW)

    assert [reason.code for reason in resolution.reasons] == [
        ReasonCode.SCOPE_REVOKED,
        ReasonCode.RESOURCE_NOT_COVERED,
    ]
    assert resolution.overall_code is ReasonCode.SCOPE_REVOKED


def test_covering_and_reasons_together() -> None:
    covering = make_scope(kinds=("payments.*",))
    exhausted = make_scope(limits=Limits(max_count=1))
    candidates = [make_candidate(covering), make_candidate(exhausted, usage=ScopeUsage(count=1))]

    resolution = resolve(make_action(), candidates, now=NOW)

    assert [candidate.scope.id for candidate in resolution.covering] == [covering.id]
    assert [reason.scope_id for reason in resolution.reasons] == [exhausted.id]


# Reservations


def test_reservation_under_amount_cap() -> None:
    scope = make_scope(limits=Limits(max_total=Decimal(1000), unit="EUR"))

    assert reservation_for(scope, make_action()) == EUR_250


def test_reservation_without_amount_cap() -> None:
    scope = make_scope(limits=Limits(max_count=5))

    assert reservation_for(scope, make_action()) is None


def test_reservation_without_action_amount() -> None:
    scope = make_scope(limits=Limits(max_amount=Decimal(1000), unit="EUR"))

    assert reservation_for(scope, make_action(amount=None)) is None


# Refusal messages


def test_message_no_covering_scope() -> None:
    message = refusal_message(make_action(), ReasonCode.NO_COVERING_SCOPE, ())

    assert message == (
        "refused payments.transfer on account:DE01 of 250 EUR by agent bot-1: no scope covers kind payments.transfer"
    )


def test_message_without_amount() -> None:
    action = make_action(kind="git.commit", resource="repo:/srv/app", amount=None)

    message = refusal_message(action, ReasonCode.NO_COVERING_SCOPE, ())

    assert message == "refused git.commit on repo:/srv/app by agent bot-1: no scope covers kind git.commit"


def test_message_code_without_reasons() -> None:
    message = refusal_message(make_action(), ReasonCode.STORE_UNAVAILABLE, ())

    assert message == "refused payments.transfer on account:DE01 of 250 EUR by agent bot-1: store_unavailable"


def test_message_lists_each_reason() -> None:
    capped = make_scope(limits=Limits(max_amount=Decimal(10000), unit="EUR"))
    revoked = make_scope(kinds=("payments.*",))
    action = make_action(amount=Amount(Decimal(25000), "EUR"))
    resolution = resolve(action, [make_candidate(revoked, revoked=True), make_candidate(capped)], now=NOW)

    message = refusal_message(action, resolution.overall_code, resolution.reasons)

    assert message.splitlines() == [
        "refused payments.transfer on account:DE01 of 25000 EUR by agent bot-1: amount_exceeds_scope",
        f"- scope {capped.id} of alice: cap 10000 EUR per action is below 25000 EUR",
        f"- scope {revoked.id} of alice: scope was revoked",
    ]


def test_message_time_format() -> None:
    scope = make_scope(valid_until=NOW - timedelta(seconds=1))
    resolution = resolve_one(make_candidate(scope))

    message = refusal_message(make_action(), resolution.overall_code, resolution.reasons)

    assert message.endswith(f"of alice: scope expired at {format_time(NOW - timedelta(seconds=1))}")
    assert re.search(r"expired at 2026-06-01T11:59:59\.000Z$", message)
