"""The resolver: which scopes cover an action, in which order, and why the others do not. No I/O.

Invariants, each enforced below:
- A scope covers an action only if its signature verified against a key registered to its bearer,
  the bearer is active, the scope is not revoked, the time is inside its window, its agent patterns
  admit the agent, its kinds and resources cover every part of the action, the tool definition it
  pins is unchanged, its `when` condition holds, and its unit, per-action cap, total cap, count and
  rolling windows all admit the action.
- Covering scopes are ordered by specificity: an exact kind before a pattern, then the longer literal
  kind prefix, the same two for the resource, an exact agent before a pattern, then the earliest
  `valid_until`, then the lowest scope id. The order is total, so resolution is deterministic.
- A delegated scope covers an action only if its delegation holds and every ancestor would cover the
  action too, with the ancestor's own budget, which counts the bindings of its delegated scopes.
- Every scope whose kind matched but which does not cover the action gets exactly one reason: the
  first check it fails, in the order listed in `_own_failure`, then the first failure of its chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from etlb.conditions import condition_failure
from etlb.model import (
    Action,
    ActionPart,
    Amount,
    Bearer,
    BearerStatus,
    Limits,
    ReasonCode,
    Scope,
    ScopeReason,
    ScopeUsage,
    format_time,
)
from etlb.patterns import (
    AGENT_SEPARATOR,
    KIND_SEPARATOR,
    glob_match,
    is_pattern,
    literal_prefix,
    resource_covered,
)

__all__ = [
    "Candidate",
    "Resolution",
    "coverage_failure",
    "describe_action",
    "refusal_message",
    "reservation_for",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A scope found through the kind index, with the state the resolver needs to judge it.

    `bearer` is None when the scope's bearer is not registered. `signature_valid` is the result of
    verifying the scope's JWS against the registered key it names. `usage` includes the bindings of
    scopes delegated from this one.
    """

    scope: Scope
    bearer: Bearer | None
    signature_valid: bool
    revoked: bool
    usage: ScopeUsage
    # For a delegated scope: why its delegation does not hold (None when it does), and the
    # candidates of its ancestors, parent first, each of which must also admit the action.
    delegation_failure: str | None = None
    ancestors: tuple[Candidate, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolution:
    """Covering scopes, most specific first, and a reason for each nearby scope that does not cover."""

    covering: tuple[Candidate, ...]
    reasons: tuple[ScopeReason, ...]

    @property
    def overall_code(self) -> ReasonCode:
        """The refusal code: the reason of the most specific nearby scope, or `no_covering_scope`."""
        return self.reasons[0].code if self.reasons else ReasonCode.NO_COVERING_SCOPE


def resolve(action: Action, candidates: Iterable[Candidate], *, now: datetime) -> Resolution:
    # An approval's scope pinned to another action is not near this one, so it gets no reason.
    matching = [
        candidate
        for candidate in candidates
        if _best_kind_pattern(candidate.scope, action) is not None
        and candidate.scope.action_digest in (None, action.digest)
    ]
    ordered = sorted(matching, key=lambda candidate: _specificity(candidate.scope, action))

    covering: list[Candidate] = []
    reasons: list[ScopeReason] = []
    for candidate in ordered:
        failure = _first_failure(candidate, action, now)
        if failure is None:
            covering.append(candidate)
        else:
            code, detail = failure
            reasons.append(ScopeReason(candidate.scope.id, candidate.scope.bearer, code, detail))
    return Resolution(tuple(covering), tuple(reasons))


def reservation_for(scope: Scope, action: Action) -> Amount | None:
    """Return the amount a binding under `scope` reserves: the action's amount when the scope caps amounts."""
    if action.amount is None or not scope.limits.caps_amounts:
        return None
    return action.amount


def describe_action(action: Action) -> str:
    """Name an action for people: its kind and resource, or every part of a compound call.

    A compound action is named after its first part in records, but a refusal that said only
    `shell.git.push` for `git push && rm -rf build` would hide the part at fault.
    """
    if len(action.parts) > 1:
        parts = ", ".join(f"{part.kind} on {', '.join(part.resources)}" for part in action.parts)
        return f"{len(action.parts)} parts of one {action.tool} call ({parts})"
    what = f"{action.kind} on {action.resource}"
    if action.amount is not None:
        what += f" of {action.amount}"
    return what


def refusal_message(action: Action, code: ReasonCode, reasons: Sequence[ScopeReason]) -> str:
    """Build the readable refusal text from the structured reasons."""
    what = describe_action(action)
    if not reasons:
        if code is ReasonCode.NO_COVERING_SCOPE:
            kinds = ", ".join(dict.fromkeys(part.kind for part in action.requirements))
            label = "kinds" if len(action.requirements) > 1 else "kind"
            return f"refused {what} by agent {action.agent}: no scope covers {label} {kinds}"
        return f"refused {what} by agent {action.agent}: {code.value}"

    lines = [f"refused {what} by agent {action.agent}: {code.value}"]
    lines.extend(f"- scope {reason.scope_id} of {reason.bearer}: {reason.detail}" for reason in reasons)
    return "\n".join(lines)


def _first_failure(candidate: Candidate, action: Action, now: datetime) -> tuple[ReasonCode, str] | None:
    """Return the first check the candidate fails, then the first one any of its ancestors fails."""
    failure = _own_failure(candidate, action, now)
    if failure is not None:
        return failure
    if candidate.scope.delegated and candidate.delegation_failure is not None:
        return ReasonCode.SIGNATURE_INVALID, f"delegation does not hold: {candidate.delegation_failure}"
    if candidate.scope.delegated and not candidate.ancestors:
        return ReasonCode.INTERNAL_ERROR, f"the ancestors of delegated scope {candidate.scope.id} are unknown"

    for ancestor in candidate.ancestors:
        failure = _own_failure(ancestor, action, now)
        if failure is None and ancestor.scope.delegated and ancestor.delegation_failure is not None:
            failure = ReasonCode.SIGNATURE_INVALID, f"delegation does not hold: {ancestor.delegation_failure}"
        if failure is not None:
            code, detail = failure
            return code, f"delegated from scope {ancestor.scope.id} of {ancestor.scope.bearer}, which fails: {detail}"
    return None


def _own_failure(candidate: Candidate, action: Action, now: datetime) -> tuple[ReasonCode, str] | None:
    scope = candidate.scope
    bearer = candidate.bearer
    limits = scope.limits

    if bearer is None:
        return ReasonCode.SIGNATURE_INVALID, f"bearer {scope.bearer} is not registered"
    if not candidate.signature_valid:
        return (
            ReasonCode.SIGNATURE_INVALID,
            f"signature does not verify with {scope.bearer}'s key {scope.key_id}",
        )
    if bearer.status is not BearerStatus.ACTIVE:
        return ReasonCode.BEARER_SUSPENDED, f"bearer {bearer.id} is {bearer.status.value}"
    if candidate.revoked:
        return ReasonCode.SCOPE_REVOKED, "scope was revoked"
    if now < scope.valid_from:
        return ReasonCode.SCOPE_NOT_YET_VALID, f"scope is valid from {format_time(scope.valid_from)}"
    if now >= scope.valid_until:
        return ReasonCode.SCOPE_EXPIRED, f"scope expired at {format_time(scope.valid_until)}"
    coverage = coverage_failure(scope, action)
    if coverage is not None:
        return coverage

    has_amount_cap = limits.caps_amounts
    if has_amount_cap and action.amount is None:
        return ReasonCode.UNIT_MISMATCH, f"scope caps amounts in {limits.unit}, but the action has no amount"
    if has_amount_cap and action.amount is not None and action.amount.unit != limits.unit:
        return (
            ReasonCode.UNIT_MISMATCH,
            f"action is in {action.amount.unit}, scope caps amounts in {limits.unit}",
        )

    value = action.amount.value if action.amount is not None else Decimal(0)
    if limits.max_amount is not None and value > limits.max_amount:
        return (
            ReasonCode.AMOUNT_EXCEEDS_SCOPE,
            f"cap {_number(limits.max_amount)} {limits.unit} per action is below {_number(value)} {limits.unit}",
        )
    if limits.max_total is not None and candidate.usage.amount + value > limits.max_total:
        left = limits.max_total - candidate.usage.amount
        return (
            ReasonCode.BUDGET_EXHAUSTED,
            f"{_number(left)} {limits.unit} left of {_number(limits.max_total)} {limits.unit}, "
            f"below {_number(value)} {limits.unit}",
        )
    if limits.max_count is not None and candidate.usage.count >= limits.max_count:
        return ReasonCode.COUNT_EXHAUSTED, f"all {limits.max_count} executions of the scope are used"
    return _window_failure(limits, candidate.usage, value)


def _window_failure(limits: Limits, usage: ScopeUsage, value: Decimal) -> tuple[ReasonCode, str] | None:
    """Check every rolling window; a missing usage entry counts as exhausted, never as free."""
    for index, window in enumerate(limits.windows):
        if index >= len(usage.windows):
            return ReasonCode.WINDOW_EXHAUSTED, f"usage in the last {window.describe()} is unknown"

        count, amount = usage.windows[index]
        span = window.describe()
        if window.max_count is not None and count >= window.max_count:
            return ReasonCode.WINDOW_EXHAUSTED, f"all {window.max_count} executions in the last {span} are used"
        if window.max_amount is not None and amount + value > window.max_amount:
            left = window.max_amount - amount
            return (
                ReasonCode.WINDOW_EXHAUSTED,
                f"{_number(left)} {limits.unit} left of {_number(window.max_amount)} {limits.unit} "
                f"in the last {span}, below {_number(value)} {limits.unit}",
            )
    return None


def coverage_failure(scope: Scope, action: Action) -> tuple[ReasonCode, str] | None:
    """Check what a scope's declaration says about an action, apart from time, status and budget.

    The agent, every part's kind and resources, the pinned tool definition and the `when` condition
    must all admit the action. Ledger verification and receipts use the same check on recorded actions.
    """
    if scope.action_digest is not None and action.digest != scope.action_digest:
        return ReasonCode.NO_COVERING_SCOPE, f"scope covers only the approved action {scope.action_digest}"
    if not any(glob_match(pattern, action.agent, AGENT_SEPARATOR) for pattern in scope.agents):
        return ReasonCode.AGENT_NOT_COVERED, f"agent {action.agent} is not covered by {_listing(scope.agents)}"

    for part in action.requirements:
        failure = _part_failure(scope, part, compound=bool(action.parts))
        if failure is not None:
            return failure

    expected = scope.definitions.get(f"{action.server or ''}/{action.tool}")
    if expected is not None and action.definition_digest != expected:
        seen = action.definition_digest or "unknown"
        return (
            ReasonCode.DEFINITION_CHANGED,
            f"tool {action.tool} has definition {seen}, but the bearer signed for {expected}",
        )

    if scope.when is not None:
        detail = condition_failure(scope.when, action)
        if detail is not None:
            return ReasonCode.CONDITION_FALSE, detail
    return None


def _part_failure(scope: Scope, part: ActionPart, *, compound: bool) -> tuple[ReasonCode, str] | None:
    label = f"part `{part.text}` ({part.kind})" if compound and part.text else f"kind {part.kind}"
    if not any(glob_match(pattern, part.kind, KIND_SEPARATOR) for pattern in scope.kinds):
        return ReasonCode.NO_COVERING_SCOPE, f"{label} is not covered by kinds {_listing(scope.kinds)}"
    if part.opaque and "**" not in scope.resources:
        reason = part.reason or "opaque target"
        return ReasonCode.OPAQUE_TARGET, f"{label}: {reason}; only a scope over every resource (**) covers it"
    for resource in part.resources:
        if not any(resource_covered(pattern, resource) for pattern in scope.resources):
            where = f" in {label}" if compound else ""
            return (
                ReasonCode.RESOURCE_NOT_COVERED,
                f"resource {resource}{where} is not covered by {_listing(scope.resources)}",
            )
    return None


def _specificity(scope: Scope, action: Action) -> tuple[int, int, int, int, int, datetime, str]:
    kind_pattern = _best_kind_pattern(scope, action) or ""
    resource_pattern = _best_resource_pattern(scope, action)
    agent_exact = action.agent in scope.agents

    # A scope whose resource does not match sorts after every one whose resource does.
    resource_rank = (2, 0) if resource_pattern is None else _pattern_rank(resource_pattern)
    kind_rank = _pattern_rank(kind_pattern)
    return (
        kind_rank[0],
        kind_rank[1],
        resource_rank[0],
        resource_rank[1],
        0 if agent_exact else 1,
        scope.valid_until,
        scope.id,
    )


def _pattern_rank(pattern: str) -> tuple[int, int]:
    """Rank a matching pattern: exact before wildcard, then the longer literal prefix first."""
    if not is_pattern(pattern):
        return (0, -len(pattern))
    return (1, -len(literal_prefix(pattern)))


def _best_kind_pattern(scope: Scope, action: Action) -> str | None:
    """Return the most specific kind pattern matching the action's first part, else any of its parts."""
    for part in action.requirements:
        matches = [pattern for pattern in scope.kinds if glob_match(pattern, part.kind, KIND_SEPARATOR)]
        if matches:
            return min(matches, key=_pattern_rank)
    return None


def _best_resource_pattern(scope: Scope, action: Action) -> str | None:
    first = action.requirements[0]
    resource = first.resources[0] if first.resources else action.resource
    matches = [pattern for pattern in scope.resources if resource_covered(pattern, resource)]
    return min(matches, key=_pattern_rank, default=None)


def _listing(patterns: Sequence[str]) -> str:
    return ", ".join(patterns)


def _number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text
