"""JSON forms of tool calls, bindings, refusals, scopes and outcomes, as the HTTP service sends them.

No I/O. `etlb.server` renders with the `*_json` functions and `etlb.client` reads with the
`*_from_json` functions. A reader raises `ValueError` naming the field for any malformed document,
so that the client can turn a malformed response into a refusal instead of guessing.
"""

from __future__ import annotations

from typing import Any

from etlb.errors import ApprovalPending, Refused
from etlb.ledger.records import action_from_json, action_json, binding_data
from etlb.model import (
    Amount,
    Binding,
    Outcome,
    OutcomeStatus,
    ReasonCode,
    Refusal,
    Scope,
    ScopeReason,
    ToolCall,
    format_time,
    parse_time,
)

__all__ = [
    "binding_from_json",
    "binding_json",
    "outcome_from_json",
    "outcome_json",
    "pending_from_json",
    "pending_json",
    "refusal_json",
    "refused_from_json",
    "scope_json",
    "tool_call_json",
]


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    """Return the request body for the service to decide `call`."""
    data: dict[str, Any] = {
        "tool": call.tool,
        "server": call.server,
        "arguments": call.arguments,
        "call_id": call.call_id,
    }
    if call.definition_digest is not None:
        data["definition_digest"] = call.definition_digest
    return data


def binding_json(binding: Binding) -> dict[str, Any]:
    """Return a binding as its ledger record's data plus its time and ledger sequence number."""
    return {**binding_data(binding), "time": format_time(binding.time), "sequence": binding.sequence}


def binding_from_json(data: Any) -> Binding:
    """Read a binding written by `binding_json`; raises `ValueError` for a malformed document."""
    try:
        reserved = _member(data, "reserved", dict)
        amount = reserved["amount"]
        return Binding(
            id=_member(data, "binding_id", str),
            action=action_from_json(_member(data, "action", dict)),
            bearer=_member(data, "bearer", str),
            scope_id=_member(data, "scope_id", str),
            reserved_amount=Amount.parse(amount["value"], amount["unit"]) if amount is not None else None,
            reserved_count=_member(reserved, "count", int),
            time=parse_time(_member(data, "time", str)),
            sequence=_member(data, "sequence", int),
            chain=tuple((str(link["scope_id"]), str(link["bearer"])) for link in data.get("chain") or []),
        )
    except (KeyError, TypeError, ValueError) as error:
        message = f"binding document is malformed: {error}"
        raise ValueError(message) from error


def refusal_json(refused: Refused) -> dict[str, Any]:
    """Return the members of a refusal that the service adds to its problem document."""
    refusal = refused.refusal
    return {
        "code": refusal.code.value,
        "reasons": [reason.to_json() for reason in refusal.reasons],
        "refusal_id": refusal.id,
        "recorded": refused.recorded,
        "action": action_json(refusal.action),
        "bearers_nearby": list(refusal.bearers_nearby),
        "hint": refused.hint,
        "time": format_time(refusal.time),
    }


def refused_from_json(data: Any, *, message: str) -> Refused:
    """Rebuild the `Refused` error from a refusal problem document; `message` is its `detail`.

    Raises `ValueError` when a member is missing or malformed, or the code is not a `ReasonCode`.
    """
    try:
        reasons = tuple(
            ScopeReason(
                scope_id=_member(item, "scope_id", str),
                bearer=_member(item, "bearer", str),
                code=ReasonCode(_member(item, "code", str)),
                detail=_member(item, "detail", str),
            )
            for item in _member(data, "reasons", list)
        )
        refusal = Refusal(
            id=_member(data, "refusal_id", str),
            action=action_from_json(_member(data, "action", dict)),
            code=ReasonCode(_member(data, "code", str)),
            reasons=reasons,
            message=message,
            time=parse_time(_member(data, "time", str)),
        )
        return Refused(refusal, recorded=_member(data, "recorded", bool))
    except (KeyError, TypeError, ValueError) as error:
        problem = f"refusal document is malformed: {error}"
        raise ValueError(problem) from error


def pending_json(pending: ApprovalPending, *, page: str) -> dict[str, Any]:
    """Return the pending decision: the approval request that waits, its approval page, and the action."""
    refusal = pending.refusal
    return {
        "decision": "pending",
        "request_id": pending.request_id,
        "deadline": format_time(pending.deadline),
        "approvers": list(pending.approvers),
        "page": page,
        "action": action_json(refusal.action),
        "reasons": [reason.to_json() for reason in refusal.reasons],
        "detail": refusal.message,
        "hint": pending.hint,
        "time": format_time(refusal.time),
    }


def pending_from_json(data: Any) -> ApprovalPending:
    """Rebuild `ApprovalPending` from a pending decision; raises `ValueError` for a malformed document."""
    try:
        if _member(data, "decision", str) != "pending":
            message = f"member 'decision' must be 'pending', got {data['decision']!r}"
            raise ValueError(message)
        request_id = _member(data, "request_id", str)
        reasons = tuple(_scope_reason(item) for item in _member(data, "reasons", list))
        refusal = Refusal(
            id=request_id,
            action=action_from_json(_member(data, "action", dict)),
            code=ReasonCode.APPROVAL_PENDING,
            reasons=reasons,
            message=_member(data, "detail", str),
            time=parse_time(_member(data, "time", str)),
        )
        approvers = tuple(str(approver) for approver in _member(data, "approvers", list))
        deadline = parse_time(_member(data, "deadline", str))
        return ApprovalPending(refusal, request_id=request_id, deadline=deadline, approvers=approvers)
    except (KeyError, TypeError, ValueError) as error:
        problem = f"pending decision is malformed: {error}"
        raise ValueError(problem) from error


def _scope_reason(item: Any) -> ScopeReason:
    return ScopeReason(
        scope_id=_member(item, "scope_id", str),
        bearer=_member(item, "bearer", str),
        code=ReasonCode(_member(item, "code", str)),
        detail=_member(item, "detail", str),
    )


def scope_json(scope: Scope) -> dict[str, Any]:
    """Return the decoded fields of a declared scope, without its signed token."""
    return {
        "scope_id": scope.id,
        "bearer": scope.bearer,
        "key_id": scope.key_id,
        "kinds": list(scope.kinds),
        "resources": list(scope.resources),
        "agents": list(scope.agents),
        "limits": scope.limits.to_json(),
        "valid_from": format_time(scope.valid_from),
        "valid_until": format_time(scope.valid_until),
        "domain": scope.domain,
        "terms": scope.terms,
    }


def outcome_json(outcome: Outcome | None) -> dict[str, str]:
    """Return an outcome; a binding without a recorded outcome reports `unknown`."""
    if outcome is None:
        return {"status": OutcomeStatus.UNKNOWN.value, "detail": ""}
    return {"status": outcome.status.value, "detail": outcome.detail}


def outcome_from_json(data: Any) -> Outcome:
    try:
        return Outcome(OutcomeStatus(_member(data, "status", str)), _member(data, "detail", str))
    except (KeyError, TypeError, ValueError) as error:
        message = f"outcome document is malformed: {error}"
        raise ValueError(message) from error


def _member(container: Any, name: str, kind: type) -> Any:
    if not isinstance(container, dict):
        message = f"expected a JSON object holding {name!r}, got {type(container).__name__}"
        raise TypeError(message)
    value = container.get(name)
    # bool is a subclass of int, but a JSON true is never a count or a sequence number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        message = f"member {name!r} must be a JSON {kind.__name__}, got {value!r}"
        raise TypeError(message)
    return value
