"""Administrator routes under /v1/admin: register bearers and agents, suspend bearers, revoke scopes.

Every route needs the administrator token. The service records the administrator's acts in the
ledger with the `actor` the request names; it never signs anything for a bearer.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from etlb.model import Bearer, BearerKey, BearerStatus
from etlb.server.routes import problems
from etlb.server.schemas import (
    AdminRevocationRequest,
    AgentRegistration,
    AgentRegistrationRequest,
    BearerDocument,
    BearerRegistrationRequest,
    BearerStatusRequest,
    LedgerWrite,
)
from etlb.server.service import AdministratorPrincipal, ServiceDependency, blocking
from etlb.signing import key_id, parse_public_jwk

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin")


@router.post(
    "/bearers",
    status_code=201,
    summary="Register a bearer with their public keys",
    response_model=BearerDocument,
    responses=problems(400, 401, 413, 422, 503),
)
async def register_bearer(
    body: BearerRegistrationRequest, service: ServiceDependency, _: AdministratorPrincipal
) -> JSONResponse:
    """Register a bearer. Keys are Ed25519 public JWKs; a JWK with a private member is rejected."""
    keys = tuple(BearerKey(key_id(jwk), parse_public_jwk(jwk)) for jwk in body.keys)
    bearer = Bearer(body.id, body.name, keys, attributes=dict(body.attributes))
    entry = await blocking(service.gate.register_bearer, bearer, actor=body.actor)
    document = {
        "id": bearer.id,
        "name": bearer.name,
        "status": bearer.status.value,
        "key_ids": [key.key_id for key in keys],
        "sequence": entry.sequence,
    }
    return JSONResponse(document, status_code=201)


@router.post(
    "/bearers/{bearer_id}/status",
    summary="Suspend or reinstate a bearer",
    response_model=LedgerWrite,
    responses=problems(400, 401, 404, 413, 422, 503),
)
async def set_bearer_status(
    bearer_id: str, body: BearerStatusRequest, service: ServiceDependency, _: AdministratorPrincipal
) -> JSONResponse:
    """Set a bearer's status. A suspended bearer's scopes cover nothing until they are reinstated."""
    status = BearerStatus(body.status)
    entry = await blocking(service.gate.set_bearer_status, bearer_id, status, actor=body.actor)
    return JSONResponse({"bearer_id": bearer_id, "status": status.value, "sequence": entry.sequence})


@router.post(
    "/agents",
    status_code=201,
    summary="Register an agent and create its API key",
    response_model=AgentRegistration,
    responses=problems(400, 401, 413, 422, 503),
)
async def register_agent(
    body: AgentRegistrationRequest, service: ServiceDependency, _: AdministratorPrincipal
) -> JSONResponse:
    """Register an agent and return its API key. The key is in this response only; the store keeps its SHA-256."""
    api_key = await blocking(service.gate.register_agent, body.agent, actor=body.actor)
    return JSONResponse(
        {"agent": body.agent, "api_key": api_key}, status_code=201, headers={"Cache-Control": "no-store"}
    )


@router.post(
    "/scopes/{scope_id}/revocation",
    status_code=201,
    summary="Revoke a scope as the administrator, without the bearer's signature",
    response_model=LedgerWrite,
    responses=problems(400, 401, 404, 413, 422, 503),
)
async def revoke_scope(
    scope_id: str, body: AdminRevocationRequest, service: ServiceDependency, _: AdministratorPrincipal
) -> JSONResponse:
    """Revoke a scope for every later binding; the ledger records the administrator's name and reason."""
    entry = await blocking(service.gate.revoke_scope, scope_id, administrator=body.administrator, reason=body.reason)
    return JSONResponse(
        {"scope_id": scope_id, "revoked_by": "administrator", "sequence": entry.sequence}, status_code=201
    )
