"""Approval requests: what the gate asks an approver to sign when no standing scope covers an action.

No I/O. An approver accepts by signing a scope for exactly one execution of exactly the requested
action digest, valid until the request's deadline. An approver declines by signing a decline
statement naming the request and the digest. Both are compact JWS like every other declaration.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from etlb.config import ApprovalRoute, ApprovalsSection
from etlb.declarations import scope_payload
from etlb.model import Action, Limits, ReasonCode, ScopeReason, format_time
from etlb.patterns import KIND_SEPARATOR, glob_match

__all__ = [
    "DECLINE_TYP",
    "DECLINE_TYPE",
    "ApprovalPlan",
    "ApprovalRequest",
    "ApprovalStatus",
    "acceptance_payload_for",
    "approval_terms",
    "decline_payload_for",
    "new_request_id",
    "plan_for",
    "turn_failure",
]

DECLINE_TYPE = "etlb.decline.v1"
DECLINE_TYP = "etlb-decline+jws"


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ApprovalPlan:
    """Whom a new request goes to, in which order, and until when; None from `plan_for` means no route."""

    approvers: tuple[str, ...]
    order: str
    deadline_seconds: int


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A stored approval request and, once it is closed, how it ended.

    `reasons` are why no standing scope covered the action when the request was opened. `bearer`
    is the approver who accepted or declined; `binding_id` or `refusal_id` names the record that
    closed it, and `code` is the refusal's reason code.
    """

    id: str
    action: Action
    reasons: tuple[ScopeReason, ...]
    approvers: tuple[str, ...]
    order: str
    created: datetime
    deadline: datetime
    sequence: int
    status: ApprovalStatus = ApprovalStatus.PENDING
    bearer: str | None = None
    binding_id: str | None = None
    refusal_id: str | None = None
    detail: str = ""
    code: ReasonCode | None = None

    @property
    def pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.id,
            "action": {**self.action.canonical_fields(), "digest": self.action.digest},
            "reasons": [reason.to_json() for reason in self.reasons],
            "approvers": list(self.approvers),
            "order": self.order,
            "created": format_time(self.created),
            "deadline": format_time(self.deadline),
            "status": self.status.value,
            "bearer": self.bearer,
            "binding_id": self.binding_id,
            "refusal_id": self.refusal_id,
            "code": self.code.value if self.code is not None else None,
            "detail": self.detail,
        }


def new_request_id() -> str:
    return f"approval-{secrets.token_hex(12)}"


def plan_for(section: ApprovalsSection, action: Action) -> ApprovalPlan | None:
    """Return the plan of the first route whose kinds match every part of the action, or None."""
    kinds = [part.kind for part in action.requirements]
    route = next((route for route in section.routes if _route_matches(route, kinds)), None)
    if route is None:
        return None
    return ApprovalPlan(
        approvers=tuple(route.approvers),
        order=route.order,
        deadline_seconds=route.deadline_seconds or section.deadline_seconds,
    )


def _route_matches(route: ApprovalRoute, kinds: list[str]) -> bool:
    return all(any(glob_match(pattern, kind, KIND_SEPARATOR) for pattern in route.kinds) for kind in kinds)


def turn_failure(request: ApprovalRequest, bearer: str, now: datetime) -> str | None:
    """Say why `bearer` may not answer `request` at `now`, or None when they may."""
    if bearer not in request.approvers:
        return f"{bearer} is not an approver of request {request.id}; its approvers are {', '.join(request.approvers)}"
    if now >= request.deadline:
        return f"request {request.id} expired at {format_time(request.deadline)}"
    if request.order == "sequence":
        turn = (request.deadline - request.created) / len(request.approvers)
        opens = request.created + turn * request.approvers.index(bearer)
        if now < opens:
            return f"{bearer}'s turn on request {request.id} opens at {format_time(opens)}"
    return None


def approval_terms(request: ApprovalRequest, approver: str) -> str:
    """Return the text an approver accepts: the one action, named by its digest, and nothing else."""
    action = request.action
    what = f"{action.kind} on {action.resource}"
    if action.amount is not None:
        what += f" of {action.amount}"
    return (
        f"I, {approver}, accept liability for exactly one execution of {what}, requested by agent "
        f"{action.agent} through tool {action.tool}, with the action digest {action.digest} "
        f"(approval request {request.id}), until {format_time(request.deadline)}."
    )


def acceptance_payload_for(request: ApprovalRequest, approver: str, *, issued_at: datetime) -> dict[str, Any]:
    """Build the one-execution scope an approver signs to accept `request`.

    The scope names the action's own kinds, resources and agent and pins its digest, so it covers
    that action and no other. It allows one execution and ends at the request's deadline.
    """
    action = request.action
    requirements = action.requirements
    resources = sorted({resource for part in requirements for resource in part.resources})
    # An opaque part is covered only by `**`; the digest still pins the scope to this one action.
    if any(part.opaque for part in requirements):
        resources = ["**"]
    amount = action.amount
    limits = Limits(
        max_count=1,
        max_amount=amount.value if amount is not None else None,
        unit=amount.unit if amount is not None else None,
    )
    payload = scope_payload(
        bearer=approver,
        kinds=sorted({part.kind for part in requirements}),
        resources=resources or [action.resource],
        agents=[action.agent],
        limits=limits,
        valid_from=min(request.created, issued_at) - timedelta(seconds=1),
        valid_until=request.deadline,
        terms=approval_terms(request, approver),
        domain="approval",
        issued_at=issued_at,
    )
    payload["action_digest"] = action.digest
    payload["approval"] = request.id
    return payload


def decline_payload_for(request: ApprovalRequest, approver: str, *, reason: str, issued_at: datetime) -> dict[str, Any]:
    return {
        "type": DECLINE_TYPE,
        "request_id": request.id,
        "action_digest": request.action.digest,
        "bearer": approver,
        "reason": reason,
        "issued_at": format_time(issued_at),
    }
