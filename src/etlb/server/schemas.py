"""Request bodies the service parses, and the response shapes it documents in /openapi.json.

Request models are strict and forbid unknown members: a body that names an `agent` is rejected,
because the agent of a binding is always the one the API key authenticates. Every request body
must also have an RFC 8785 canonical form (no NaN, no integer beyond ±(2**53 - 1), no lone
surrogate), because the gate digests and records what it receives.

Response models only document; the routes render their JSON with `etlb.wire`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from etlb.canonical import canonical_bytes

__all__ = [
    "ActionDocument",
    "AdminRevocationRequest",
    "AgentIdentity",
    "AgentRegistration",
    "AgentRegistrationRequest",
    "AnswerRequest",
    "ApprovalDocument",
    "ApprovalPayload",
    "BearerDocument",
    "BearerRegistrationRequest",
    "BearerStatusRequest",
    "BindDecision",
    "BindRequest",
    "BindingDocument",
    "BindingState",
    "Health",
    "LedgerWrite",
    "OutcomeDocument",
    "OutcomeRequest",
    "PassDecision",
    "PendingDecision",
    "Problem",
    "ScopeDocument",
    "ToolCallRequest",
]

_ID = Field(min_length=1, max_length=256, pattern=r"^\S+$")
_NAME = Field(min_length=1, max_length=256)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="after")
    def _has_canonical_form(self) -> _Body:
        canonical_bytes(self.model_dump(mode="python"))
        return self


class ToolCallRequest(_Body):
    """A tool call as the agent would send it to the tool."""

    tool: str = Field(min_length=1, max_length=256, description="Tool name.")
    server: str | None = Field(
        default=None, max_length=256, description="Server name, as the operator's rules name it."
    )
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's JSON arguments.")
    call_id: str | None = Field(default=None, max_length=256, description="The agent's id for this call.")
    definition_digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Digest of the tool's definition as its server lists it, for scopes that pin it.",
    )


class BindRequest(ToolCallRequest):
    redeem: bool = Field(
        default=False,
        description="Mark the binding used in the same transaction, for a tool the caller runs right away.",
    )


class OutcomeRequest(_Body):
    status: Literal["succeeded", "failed", "unknown"]
    detail: str = Field(default="", max_length=65_536, description="A digest of the result, or the error text.")


class AnswerRequest(_Body):
    jws: str = Field(
        max_length=65_536,
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$",
        description="The approver's compact JWS: a one-execution scope (etlb-scope+jws) or a decline "
        "(etlb-decline+jws), over the payload from the payload operation.",
    )


class AdminRevocationRequest(_Body):
    administrator: str = Field(min_length=1, max_length=256, description="Who revokes, recorded in the ledger.")
    reason: str = Field(default="", max_length=4096)


class BearerRegistrationRequest(_Body):
    id: str = _ID
    name: str = _NAME
    keys: list[dict[str, str]] = Field(min_length=1, max_length=16, description="Ed25519 public keys as OKP JWKs.")
    attributes: dict[str, str] = Field(default_factory=dict)
    actor: str = Field(default="administrator", min_length=1, max_length=256)


class BearerStatusRequest(_Body):
    status: Literal["active", "suspended"]
    actor: str = Field(default="administrator", min_length=1, max_length=256)


class AgentRegistrationRequest(_Body):
    agent: str = Field(min_length=1, max_length=256, pattern=r"^\S+$", description="New agent id.")
    actor: str = Field(default="administrator", min_length=1, max_length=256)


# Responses


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow")


class ScopeReasonDocument(_Document):
    scope_id: str
    bearer: str
    code: str
    detail: str


class Problem(_Document):
    """An RFC 9457 problem document. A refusal adds refusal_id, recorded, action, bearers_nearby and time."""

    type: str = Field(description="Relative URI /problems/<code>; GET it for a description.")
    title: str
    status: int
    detail: str
    code: str = Field(description="The reason code of a refusal, or the kind of error.")
    reasons: list[ScopeReasonDocument] = Field(description="One reason per scope that came close.")
    hint: str | None = None


class AmountDocument(_Document):
    value: str
    unit: str


class ActionDocument(_Document):
    kind: str
    resource: str
    consequence: Literal["reversible", "irreversible"]
    agent: str
    server: str | None
    tool: str
    arguments: dict[str, Any]
    amount: AmountDocument | None
    digest: str
    call_id: str | None = Field(default=None, description="The agent's id for the call; not part of the digest.")


class ReservedDocument(_Document):
    count: int
    amount: AmountDocument | None


class ChainLinkDocument(_Document):
    scope_id: str
    bearer: str


class BindingDocument(_Document):
    binding_id: str
    action: ActionDocument
    bearer: str
    scope_id: str
    reserved: ReservedDocument
    chain: list[ChainLinkDocument] | None = Field(
        default=None, description="For a delegated scope: each ancestor scope and its bearer, parent first."
    )
    time: str
    sequence: int


class BindDecision(_Document):
    decision: Literal["bind"]
    binding: BindingDocument


class PassDecision(_Document):
    decision: Literal["pass"]


class PendingDecision(_Document):
    """A decision that waits: no scope covered the action, an approval request is open, and nothing ran."""

    decision: Literal["pending"]
    request_id: str = Field(description="Random 96-bit id; resume with POST /v1/approvals/{request_id}/resume.")
    deadline: str
    approvers: list[str]
    page: str = Field(description="The approval page to send to an approver.")
    action: ActionDocument
    reasons: list[ScopeReasonDocument] = Field(description="Why no standing scope covered the action.")
    detail: str
    hint: str
    time: str


class ApprovalDocument(_Document):
    request_id: str
    action: ActionDocument
    reasons: list[ScopeReasonDocument]
    approvers: list[str]
    order: Literal["pool", "sequence"]
    created: str
    deadline: str
    status: Literal["pending", "accepted", "declined", "timed_out", "failed"]
    bearer: str | None
    binding_id: str | None
    refusal_id: str | None
    code: str | None
    detail: str
    now: str = Field(description="The gate's time when it responded, so that a countdown ignores the client's clock.")


class ApprovalPayload(_Document):
    payload: dict[str, Any] = Field(description="What the bearer signs: a one-execution scope, or a decline.")
    typ: Literal["etlb-scope+jws", "etlb-decline+jws"]
    signing_input_payload: str = Field(
        description="base64url (no padding) of the RFC 8785 canonical JSON of `payload`: the JWS payload part."
    )


class OutcomeDocument(_Document):
    status: Literal["succeeded", "failed", "unknown"]
    detail: str


class BindingState(_Document):
    binding: BindingDocument
    redeemed: bool
    outcome: OutcomeDocument


class LedgerWrite(_Document):
    sequence: int = Field(description="Sequence number of the ledger record written.")


class ScopeDocument(_Document):
    scope_id: str
    bearer: str
    key_id: str
    kinds: list[str]
    resources: list[str]
    agents: list[str]
    limits: dict[str, Any]
    valid_from: str
    valid_until: str
    domain: str
    terms: str
    sequence: int


class BearerDocument(_Document):
    id: str
    name: str
    status: str
    key_ids: list[str]
    sequence: int


class AgentRegistration(_Document):
    agent: str
    api_key: str = Field(description="Shown once; the store keeps only its SHA-256.")


class AgentIdentity(_Document):
    agent: str


class Health(_Document):
    status: Literal["ok"]
    ledger_size: int
