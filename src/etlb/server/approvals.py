"""Routes for approval requests: read one, fetch what to sign, answer it, resume it, and the approval page.

Who may call what:

- `GET /v1/approvals/{id}`, `GET /v1/approvals/{id}/payload` and `GET /approvals/{id}` (the page)
  need no credential. A request id is a random 96-bit value, so the link is the only way to find a
  request, and whoever has the link sees the action, its arguments and its approvers.
- `POST /v1/approvals/{id}/answer` needs no credential either: the body is the approver's compact
  JWS, which the gate verifies against a key registered to the bearer it names. An answer that does
  not verify changes nothing.
- `POST /v1/approvals/{id}/resume` needs the API key of the agent whose action it is.

The page signs in the browser with WebCrypto Ed25519; no route ever receives a private key.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from etlb.approval.model import DECLINE_TYP, ApprovalRequest
from etlb.canonical import canonical_bytes
from etlb.declarations import SCOPE_TYP
from etlb.errors import ApprovalClosed, ApprovalPending, DeclarationError, NotFoundError, SignatureError
from etlb.model import ToolCall, format_time
from etlb.server.problems import APPROVAL_CLOSED, INVALID_ANSWER, NOT_FOUND, ProblemError
from etlb.server.routes import PENDING_RESPONSE, pending_response, problems
from etlb.server.schemas import (
    AnswerRequest,
    ApprovalDocument,
    ApprovalPayload,
    BindDecision,
    ToolCallRequest,
)
from etlb.server.service import AgentPrincipal, Service, ServiceDependency, blocking
from etlb.signing import read_unverified
from etlb.wire import binding_json

__all__ = ["PAGE_HEADERS", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()

# The page loads its script and style from this service only, sends requests to this service only,
# and may not be framed. The link contains the request id, so no Referer header may carry it elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# Files of the page under etlb/server/static and their media types. No other name is served.
_ASSETS = {
    "approval.js": "text/javascript; charset=utf-8",
    "approval.css": "text/css; charset=utf-8",
}

_MAX_REASON_LENGTH = 4096

BearerQuery = Annotated[
    str, Query(min_length=1, max_length=256, description="The bearer id of the approver who will sign.")
]
DeclineQuery = Annotated[bool, Query(description="Return the decline statement instead of the acceptance scope.")]
ReasonQuery = Annotated[
    str, Query(max_length=_MAX_REASON_LENGTH, description="The approver's reason, recorded with a decline.")
]


# API


@router.get(
    "/v1/approvals/{request_id}",
    summary="Fetch an approval request: the action, why no scope covered it, its approvers and deadline",
    response_model=ApprovalDocument,
    responses=problems(404, 503),
)
async def get_approval(request_id: str, service: ServiceDependency) -> JSONResponse:
    """Return the request as stored. A request past its deadline is closed as timed out first."""
    request = await blocking(service.gate.approval, request_id)
    return JSONResponse(_approval_document(request, service))


@router.get(
    "/v1/approvals/{request_id}/payload",
    summary="Fetch the payload an approver signs to accept or decline a pending request",
    response_model=ApprovalPayload,
    responses=problems(400, 404, 409, 422, 503),
)
async def get_payload(
    request_id: str,
    service: ServiceDependency,
    bearer: BearerQuery,
    decline: DeclineQuery = False,
    reason: ReasonQuery = "",
) -> JSONResponse:
    """Return the payload, its JWS `typ`, and the base64url of its RFC 8785 bytes, which the JWS must carry.

    Accepting signs a scope for one execution of exactly this action digest, until the deadline.
    """
    await _pending_request(service, request_id)
    try:
        payload = await blocking(service.gate.approval_payload, request_id, bearer, decline=decline, reason=reason)
    except DeclarationError as error:
        raise ProblemError(INVALID_ANSWER, error.message, hint=error.hint) from error

    # The browser signs these bytes unchanged, because re-encoding the JSON could change them.
    encoded = base64.urlsafe_b64encode(canonical_bytes(payload)).rstrip(b"=").decode("ascii")
    document = {"payload": payload, "typ": DECLINE_TYP if decline else SCOPE_TYP, "signing_input_payload": encoded}
    return JSONResponse(document)


@router.post(
    "/v1/approvals/{request_id}/answer",
    summary="Answer a pending request with an approver's signed acceptance or decline",
    response_model=ApprovalDocument,
    responses=problems(400, 404, 409, 413, 422, 503),
)
async def answer(request_id: str, body: AnswerRequest, service: ServiceDependency) -> JSONResponse:
    """Record the answer and return the closed request: the first valid acceptance binds its signer.

    An answer that does not verify, or is signed for another request or action, is 400
    `invalid_answer` and leaves the request pending. A request already closed is 409.
    """
    claimed = _claimed_bearer(body.jws)
    try:
        await _pending_request(service, request_id)
        closed = await blocking(service.gate.answer_approval, request_id, body.jws)
    except (SignatureError, DeclarationError) as error:
        logger.warning(
            "event=approval_answer request=%s bearer=%r outcome=rejected error=%s", request_id, claimed, error.message
        )
        raise ProblemError(INVALID_ANSWER, error.message, hint=error.hint) from error
    except (ApprovalClosed, ProblemError) as error:
        logger.warning("event=approval_answer request=%s bearer=%r outcome=closed error=%s", request_id, claimed, error)
        raise

    logger.info(
        "event=approval_answer request=%s bearer=%s outcome=%s binding=%s refusal=%s",
        request_id,
        closed.bearer,
        closed.status.value,
        closed.binding_id,
        closed.refusal_id,
    )
    return JSONResponse(_approval_document(closed, service))


@router.post(
    "/v1/approvals/{request_id}/resume",
    summary="Take the binding an approver's acceptance made, redeemed for one run",
    response_model=BindDecision,
    responses={**problems(400, 401, 403, 404, 409, 413, 422, 500, 503), **PENDING_RESPONSE},
)
async def resume(
    request_id: str,
    request: Request,
    service: ServiceDependency,
    principal: AgentPrincipal,
    body: ToolCallRequest | None = None,
) -> Response:
    """Return the approver's binding, redeemed (200), or 202 while the request waits, or 403 when it was refused.

    A declined, timed-out or failed request is the refusal recorded for it, and a second resume is
    409 `binding_consumed`. With a body, the call is classified again and must be the requested
    action. Another agent's request is reported as not found.
    """
    approval = await blocking(service.gate.approval, request_id)
    if approval.action.agent != principal.agent:
        raise ProblemError(NOT_FOUND, f"approval request {request_id} not found", hint=_NOT_FOUND_HINT)

    call = _tool_call(body) if body is not None else None
    try:
        binding = await blocking(service.gate.resume, request_id, call)
    except ApprovalPending as pending:
        return pending_response(pending, service, request)
    return JSONResponse({"decision": "bind", "binding": binding_json(binding)})


# The page


@router.get("/approvals/{request_id}", include_in_schema=False, response_class=HTMLResponse)
async def approval_page(request_id: str, service: ServiceDependency) -> HTMLResponse:
    """Serve the approval page of one request. The page reads the request id from its own path."""
    try:
        await blocking(service.gate.approval, request_id)
    except NotFoundError:
        return HTMLResponse(_not_found_page(request_id), status_code=404, headers=PAGE_HEADERS)
    return HTMLResponse(_asset_text("approval.html"), headers=PAGE_HEADERS)


@router.get("/approvals/static/{name}", include_in_schema=False)
async def approval_asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise ProblemError(NOT_FOUND, f"there is no approval page asset {name!r}")
    return Response(_asset_text(name), media_type=media_type, headers=PAGE_HEADERS)


# Helpers

_NOT_FOUND_HINT = "use the request_id from the pending decision of POST /v1/bindings"


def _approval_document(request: ApprovalRequest, service: Service) -> dict[str, Any]:
    return {**request.to_json(), "now": format_time(service.gate.now())}


async def _pending_request(service: Service, request_id: str) -> ApprovalRequest:
    """Load a request that can still be answered; raises 404 for an unknown one and 409 for a closed one."""
    request = await blocking(service.gate.approval, request_id)
    if not request.pending:
        detail = f"approval request {request_id} is already closed: {request.status.value}"
        raise ProblemError(APPROVAL_CLOSED, detail, hint=f"fetch its outcome: GET /v1/approvals/{request_id}")
    return request


def _claimed_bearer(jws: str) -> str | None:
    """Return the bearer an answer names, unverified, for the log line of a rejected answer."""
    try:
        _, payload = read_unverified(jws)
    except SignatureError:
        return None
    bearer = payload.get("bearer")
    return bearer if isinstance(bearer, str) else None


def _tool_call(body: ToolCallRequest) -> ToolCall:
    return ToolCall(
        tool=body.tool,
        arguments=dict(body.arguments),
        server=body.server,
        call_id=body.call_id,
        definition_digest=body.definition_digest,
    )


@functools.cache
def _asset_text(name: str) -> str:
    return resources.files("etlb.server").joinpath("static", name).read_text(encoding="utf-8")


def _not_found_page(request_id: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Approval request not found</title>'
        '<link rel="stylesheet" href="/approvals/static/approval.css"></head><body><main>'
        f"<h1>Approval request not found</h1><p>There is no approval request {html.escape(request_id)}. "
        "Check that the link is complete.</p></main></body></html>"
    )
