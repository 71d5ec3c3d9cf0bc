"""Authentication: agents by API key, the administrator by a token, both as `Authorization: Bearer …`.

The agent id of every request is the one the store holds for the API key's SHA-256, never a value
the request carries. The administrator token is compared as a SHA-256 digest with
`hmac.compare_digest`, in constant time. Neither a key nor a token is ever logged.
"""

from __future__ import annotations

import functools
import hmac
import logging
from dataclasses import dataclass

import anyio.to_thread
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from etlb.gate import API_KEY_PREFIX, Gate
from etlb.server.problems import UNAUTHORIZED, ProblemError
from etlb.server.settings import ADMIN_TOKEN_ENVIRONMENT_VARIABLE, admin_token_digest

__all__ = ["ADMINISTRATOR", "Authenticator", "Principal", "admin_scheme", "agent_scheme"]

logger = logging.getLogger(__name__)

agent_scheme = HTTPBearer(
    scheme_name="AgentKey",
    description="An agent's API key, etlb_…, from `etlb agent add` or POST /v1/admin/agents.",
    auto_error=False,
)
admin_scheme = HTTPBearer(
    scheme_name="AdministratorToken",
    description="The administrator token set with ETLB_ADMIN_TOKEN or [service] admin_token_sha256.",
    auto_error=False,
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="etlb"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """The sender of a request: an agent id, or None for the administrator."""

    agent: str | None

    @property
    def is_administrator(self) -> bool:
        return self.agent is None


ADMINISTRATOR = Principal(agent=None)


class Authenticator:
    def __init__(self, gate: Gate, admin_token_sha256: bytes | None) -> None:
        self._gate = gate
        self._admin_token_sha256 = admin_token_sha256

    async def agent(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """Return the agent an API key belongs to; raises a 401 problem for a missing or unknown key."""
        if credentials is None:
            raise _unauthorized("missing Authorization header: send Authorization: Bearer etlb_…")

        lookup = functools.partial(self._gate.agent_for_api_key, credentials.credentials)
        agent = await anyio.to_thread.run_sync(lookup)
        if agent is None:
            logger.warning("request with an unknown API key rejected")
            raise _unauthorized("the API key is not registered to any agent")
        return Principal(agent=agent)

    def administrator(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """Check the administrator token; raises a 401 problem when it is missing, wrong or not configured."""
        if self._admin_token_sha256 is None:
            detail = "administration is disabled because no administrator token is configured"
            hint = f"set {ADMIN_TOKEN_ENVIRONMENT_VARIABLE}, or admin_token_sha256 in [service] of etlb.toml"
            raise _unauthorized(detail, hint=hint)
        if credentials is None:
            raise _unauthorized("missing Authorization header: send Authorization: Bearer ADMINISTRATOR_TOKEN")

        presented = admin_token_digest(credentials.credentials)
        if not hmac.compare_digest(presented, self._admin_token_sha256):
            logger.warning("request with a wrong administrator token rejected")
            raise _unauthorized("the administrator token is wrong")
        return ADMINISTRATOR

    async def agent_or_administrator(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """Accept either credential, distinguished by the etlb_ prefix that every API key has."""
        if credentials is not None and not credentials.credentials.startswith(API_KEY_PREFIX):
            return self.administrator(credentials)
        return await self.agent(credentials)


def _unauthorized(detail: str, *, hint: str = "") -> ProblemError:
    return ProblemError(UNAUTHORIZED, detail, hint=hint, headers=_CHALLENGE)
