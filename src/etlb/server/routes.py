"""Routes for agents and bearers: bind, redeem, outcome, bindings, receipts, checkpoints and scopes.

Approval requests and the approval page have their routes in `etlb.server.approvals`.

Each route parses, authenticates, calls the gate in the thread pool and renders. Errors are raised
as etlb errors or `ProblemError` and rendered by the handlers in `etlb.server.app`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from etlb.errors import ApprovalPending, Refused
from etlb.model import Outcome, OutcomeStatus, ReasonCode, ToolCall
from etlb.server.auth import Principal
from etlb.server.group_commit import ServiceClosed
from etlb.server.problems import (
    INVALID_REQUEST,
    NOT_FOUND,
    ProblemError,
    find_problem_type,
    reason_problem_type,
    refusal_response,
)
from etlb.server.schemas import (
    AgentIdentity,
    BindDecision,
    BindingState,
    BindRequest,
    Health,
    LedgerWrite,
    OutcomeRequest,
    PassDecision,
    PendingDecision,
    Problem,
    ScopeDocument,
    ToolCallRequest,
)
from etlb.server.service import AgentPrincipal, AnyPrincipal, ServiceDependency, blocking
from etlb.store import BindingState as StoredBinding
from etlb.wire import binding_json, outcome_json, pending_json, scope_json

__all__ = ["PENDING_RESPONSE", "pending_response", "problems", "router"]

router = APIRouter()

# Compact JWS serialization (RFC 7515 section 7.1): three base64url parts separated by dots.
_COMPACT_JWS_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$"
_JWS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The bearer's compact JWS, as `etlb scope declare` or the bearer's own tool signed it.",
        "content": {
            media_type: {"schema": {"type": "string", "pattern": _COMPACT_JWS_PATTERN}}
            for media_type in ("application/jose", "text/plain")
        },
    }
}


def problems(*statuses: int, ok: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """Document problem responses, and with `ok` the 200 response; `app` moves problems to application/problem+json."""
    responses: dict[int | str, dict[str, Any]] = {200: ok} if ok is not None else {}
    for status in statuses:
        responses[status] = {"model": Problem, "description": "A problem document (RFC 9457)."}
    return responses


PENDING_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {"model": PendingDecision, "description": "No scope covers it: an approval request waits; nothing ran."}
}


# Decisions


@router.post(
    "/v1/bindings",
    status_code=201,
    summary="Decide a tool call: bind it to a bearer, pass it, or refuse it",
    response_model=BindDecision,
    responses={
        **problems(
            400,
            401,
            403,
            413,
            422,
            500,
            503,
            ok={"model": PassDecision, "description": "Reversible: runs without a binding."},
        ),
        **PENDING_RESPONSE,
    },
)
async def bind(body: BindRequest, request: Request, service: ServiceDependency, principal: AgentPrincipal) -> Response:
    """Bind an irreversible call to the bearer whose scope covers it (201), pass a reversible one (200),
    or refuse it (403 with the reason of every scope that came close).

    Where `[approvals]` routes the action to approvers, a call that no scope covers opens an approval
    request instead (202): resume it with POST /v1/approvals/{request_id}/resume once an approver has
    answered. The agent is the one the API key belongs to. The service never runs the tool.
    """
    started = time.perf_counter()
    call = ToolCall(
        tool=body.tool,
        arguments=dict(body.arguments),
        server=body.server,
        call_id=body.call_id,
        definition_digest=body.definition_digest,
    )
    try:
        binding = await service.committer.bind(call, _agent_id(principal), redeem=body.redeem)
    except ApprovalPending as pending:
        service.count_decision("pending", started)
        return pending_response(pending, service, request)
    except Refused as refused:
        service.count_decision("refuse", started, refused.code)
        return refusal_response(refused)
    except ServiceClosed as error:
        service.count_decision("refuse", started, ReasonCode.STORE_UNAVAILABLE)
        raise ProblemError(reason_problem_type(ReasonCode.STORE_UNAVAILABLE), str(error)) from error

    if binding is None:
        service.count_decision("pass", started)
        return JSONResponse({"decision": "pass"}, status_code=200)

    service.count_decision("bind", started)
    return JSONResponse(
        {"decision": "bind", "binding": binding_json(binding)},
        status_code=201,
        headers={"Location": f"/v1/bindings/{binding.id}"},
    )


@router.post(
    "/v1/bindings/{binding_id}/redemption",
    status_code=204,
    summary="Mark a binding used for this call, right before the tool runs",
    responses=problems(400, 401, 404, 409, 413, 422, 503),
)
async def redeem(
    binding_id: str, body: ToolCallRequest, service: ServiceDependency, principal: AgentPrincipal
) -> Response:
    """Redeem a binding once, for the same action it was made for; 409 `binding_consumed` otherwise."""
    state = await _visible_binding(service, principal, binding_id)
    call = ToolCall(
        tool=body.tool,
        arguments=dict(body.arguments),
        server=body.server,
        call_id=body.call_id,
        definition_digest=body.definition_digest,
    )
    await blocking(service.gate.redeem, state.binding, call, agent=_agent_id(principal))
    return Response(status_code=204)


@router.post(
    "/v1/bindings/{binding_id}/outcome",
    status_code=201,
    summary="Record what happened after the bound tool ran",
    response_model=LedgerWrite,
    responses=problems(400, 401, 404, 409, 413, 422, 503),
)
async def record_outcome(
    binding_id: str, body: OutcomeRequest, service: ServiceDependency, principal: AnyPrincipal
) -> JSONResponse:
    """Record the outcome of a binding, once. Allowed to the binding's agent and to the administrator."""
    state = await _visible_binding(service, principal, binding_id)
    await blocking(service.gate.complete, state.binding, Outcome(OutcomeStatus(body.status), body.detail))

    recorded = await blocking(service.gate.store.get_binding, binding_id)
    outcome = recorded.outcome if recorded is not None else None
    return JSONResponse({"binding_id": binding_id, "outcome": outcome_json(outcome)}, status_code=201)


# Evidence


@router.get(
    "/v1/bindings/{binding_id}",
    summary="Fetch a binding, whether it was redeemed, and its outcome",
    response_model=BindingState,
    responses=problems(401, 404, 503),
)
async def get_binding(binding_id: str, service: ServiceDependency, principal: AnyPrincipal) -> JSONResponse:
    """Return the binding; its outcome is `unknown` until one is recorded. Agents see their own bindings only."""
    state = await _visible_binding(service, principal, binding_id)
    return JSONResponse(
        {
            "binding": binding_json(state.binding),
            "redeemed": state.redeemed,
            "outcome": outcome_json(state.outcome),
        }
    )


@router.get(
    "/v1/bindings/{binding_id}/receipt",
    summary="Fetch the offline-verifiable receipt of a binding",
    responses=problems(401, 404, 503, ok={"description": "The receipt; docs/receipts.md describes its format."}),
)
async def get_receipt(binding_id: str, service: ServiceDependency, principal: AnyPrincipal) -> JSONResponse:
    """Return the records, inclusion proofs and signed checkpoint that prove who carried the binding."""
    await _visible_binding(service, principal, binding_id)
    receipt = await blocking(service.gate.receipt, binding_id)
    return JSONResponse(receipt)


@router.get(
    "/v1/checkpoint",
    summary="Fetch the latest signed checkpoint of the ledger",
    response_class=PlainTextResponse,
    responses=problems(404, 503, ok={"content": {"text/plain": {}}, "description": "A signed note."}),
)
async def get_checkpoint(service: ServiceDependency) -> PlainTextResponse:
    """Return the signed note of the latest tree head. Public, like every transparency log's checkpoint."""
    note = await blocking(service.gate.store.latest_checkpoint)
    if note is None:
        raise ProblemError(NOT_FOUND, "the ledger has no signed checkpoint yet", hint="write a record first")
    return PlainTextResponse(note)


@router.get(
    "/v1/agent",
    summary="Return the agent id the API key authenticates",
    response_model=AgentIdentity,
    responses=problems(401, 503),
)
async def whoami(principal: AgentPrincipal) -> JSONResponse:
    return JSONResponse({"agent": _agent_id(principal)})


# Scopes


@router.post(
    "/v1/scopes",
    status_code=201,
    summary="Declare a scope that a bearer signed",
    response_model=ScopeDocument,
    responses=problems(401, 413, 422, 503),
    openapi_extra=_JWS_BODY,
)
async def declare_scope(request: Request, service: ServiceDependency) -> JSONResponse:
    """Verify a bearer-signed scope declaration against the bearer's registered key and store it.

    The service never signs for a bearer. No API key is needed: the bearer's signature is the
    credential, and a declaration that does not verify writes nothing.
    """
    jws = await _compact_jws(request)
    scope = await blocking(service.gate.declare_scope, jws)
    return JSONResponse(scope_json(scope), status_code=201)


@router.post(
    "/v1/scopes/{scope_id}/revocation",
    status_code=201,
    summary="Revoke a scope with a revocation its bearer signed",
    response_model=LedgerWrite,
    responses=problems(404, 413, 422, 503),
    openapi_extra=_JWS_BODY,
)
async def revoke_scope(scope_id: str, request: Request, service: ServiceDependency) -> JSONResponse:
    """Revoke a scope for every later binding. The body is a revocation JWS signed by the scope's bearer."""
    jws = await _compact_jws(request)
    entry = await blocking(service.gate.revoke_scope, scope_id, jws=jws)
    return JSONResponse({"scope_id": scope_id, "revoked_by": "bearer", "sequence": entry.sequence}, status_code=201)


# Operations


@router.get("/health", summary="Check that the service can read its store", response_model=Health)
async def health(service: ServiceDependency) -> JSONResponse:
    size = await blocking(service.gate.store.ledger_size)
    return JSONResponse({"status": "ok", "ledger_size": size})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
)
async def metrics(service: ServiceDependency) -> Response:
    content, media_type = service.metrics.render()
    return Response(content, media_type=media_type)


@router.get(
    "/problems/{name}",
    summary="Describe a problem type",
    response_class=PlainTextResponse,
    responses=problems(404, ok={"content": {"text/plain": {}}, "description": "Title, status and description."}),
)
async def describe_problem(name: str) -> PlainTextResponse:
    """Describe the problem type whose URI is /problems/NAME, so that every type URI resolves."""
    kind = find_problem_type(name)
    if kind is None:
        raise ProblemError(NOT_FOUND, f"there is no problem type {name!r}")
    return PlainTextResponse(f"{kind.title}\nstatus: {kind.status}\n\n{kind.description}\n")


# Helpers


def pending_response(pending: ApprovalPending, service: ServiceDependency, request: Request) -> JSONResponse:
    """Build the 202 response to an action that waits for an approver, with the link to its approval page.

    The link starts with `[approvals] page_url` when it is set, and otherwise with the address the
    request was sent to, which is wrong behind a reverse proxy that rewrites the host.
    """
    base = service.gate.config.approvals.page_url or str(request.base_url)
    page = f"{base.rstrip('/')}/approvals/{pending.request_id}"
    headers = {"Location": f"/v1/approvals/{pending.request_id}"}
    return JSONResponse(pending_json(pending, page=page), status_code=202, headers=headers)


def _agent_id(principal: Principal) -> str:
    if principal.agent is None:
        message = "this route needs an agent, but the administrator was authenticated"
        raise RuntimeError(message)
    return principal.agent


async def _visible_binding(service: ServiceDependency, principal: Principal, binding_id: str) -> StoredBinding:
    """Load a binding the principal may see. Another agent's binding is reported as not found."""
    state = await blocking(service.gate.store.get_binding, binding_id)
    if state is None or (not principal.is_administrator and state.binding.action.agent != principal.agent):
        raise ProblemError(NOT_FOUND, f"binding {binding_id} not found", hint="use the binding_id that bind returned")
    return state


async def _compact_jws(request: Request) -> str:
    body = await request.body()
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError as error:
        detail = "the body must be a compact JWS, which is ASCII; it has other bytes"
        raise ProblemError(INVALID_REQUEST, detail) from error
    if not text:
        raise ProblemError(INVALID_REQUEST, "the body is empty; send the bearer's compact JWS")
    return text
