"""The approval webhook: each new approval request is POSTed to `approvals.webhook_url`, signed by the gate.

The body is the RFC 8785 canonical JSON of the request (`ApprovalRequest.to_json()`, plus `origin`
and, when `approvals.page_url` is set, `page`, the link to the approval page). The `ETLB-Signature`
header is a detached compact JWS over the body, signed with the gate's Ed25519 key, `typ`
`etlb-approval-request+jws`: the same scheme as the notification webhook, so one receiver can check
both. A receiver that is down changes nothing: the request stays pending until an approver answers
through another channel or its deadline passes.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from etlb.approval.model import ApprovalRequest
from etlb.canonical import canonical_bytes
from etlb.config import Config
from etlb.errors import SignatureError
from etlb.gate_key import default_origin
from etlb.signing import load_private_key, public_jwk, sign_payload, verify_jws

__all__ = ["APPROVAL_REQUEST_TYP", "SIGNATURE_HEADER", "announce_request", "request_body", "verify_request_body"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "ETLB-Signature"
APPROVAL_REQUEST_TYP = "etlb-approval-request+jws"


def request_body(request: ApprovalRequest, *, origin: str, page_url: str | None) -> dict[str, Any]:
    body = {**request.to_json(), "origin": origin}
    if page_url is not None:
        body["page"] = f"{page_url.rstrip('/')}/approvals/{request.id}"
    return body


def announce_request(config: Config, request: ApprovalRequest) -> None:
    """POST the request to the configured webhook; raise `httpx.HTTPError` when delivery fails."""
    section = config.approvals
    if section.webhook_url is None:
        return

    key = load_private_key(config.key_path)
    origin = config.origin or default_origin(public_jwk(key))
    body = request_body(request, origin=origin, page_url=section.page_url)
    token = sign_payload(key, body, typ=APPROVAL_REQUEST_TYP)
    # Imported here: only a gate with an approval webhook needs the HTTP client.
    import httpx

    header, _, signature = token.split(".")
    response = httpx.post(
        section.webhook_url,
        content=canonical_bytes(body),
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: f"{header}..{signature}"},
        timeout=section.webhook_timeout_seconds,
    )
    response.raise_for_status()
    logger.info("event=approval_webhook request=%s status=%d", request.id, response.status_code)


def verify_request_body(body: bytes, signature: str, gate_jwk: dict[str, str]) -> dict[str, Any]:
    """Check a webhook body against its `ETLB-Signature` header with the gate's public JWK; return the request."""
    header, separator, tail = signature.partition("..")
    if not separator or "." in tail:
        message = f"{SIGNATURE_HEADER} is not a detached compact JWS of the form HEADER..SIGNATURE"
        raise SignatureError(message)
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")
    return verify_jws(f"{header}.{payload}.{tail}", gate_jwk, typ=APPROVAL_REQUEST_TYP)
