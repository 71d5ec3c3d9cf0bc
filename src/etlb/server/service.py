"""The `Service` object that every route receives, and the FastAPI dependencies that authenticate."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from etlb.gate import Gate
from etlb.model import ReasonCode
from etlb.server.auth import Authenticator, Principal, admin_scheme, agent_scheme
from etlb.server.group_commit import GroupCommitter
from etlb.server.metrics import ServiceMetrics
from etlb.server.settings import ServiceSettings

__all__ = [
    "AdministratorPrincipal",
    "AgentPrincipal",
    "AnyPrincipal",
    "Service",
    "ServiceDependency",
    "blocking",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Service:
    gate: Gate
    settings: ServiceSettings
    metrics: ServiceMetrics
    committer: GroupCommitter
    authenticator: Authenticator

    def count_decision(self, decision: str, started: float, reason: ReasonCode | None = None) -> None:
        """Count one bind decision (`bind`, `pass` or `refuse`) and observe its latency since `started`."""
        if decision == "bind":
            self.metrics.bindings.inc()
        elif decision == "pass":
            self.metrics.passes.inc()
        elif reason is not None:
            self.metrics.refusals.labels(reason.value).inc()
        self.metrics.decision_seconds.labels(decision).observe(time.perf_counter() - started)


async def blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking gate or store call in the thread pool, so that the event loop keeps serving."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


# Dependencies that do no I/O are coroutines, because FastAPI runs a plain function dependency in its
# thread pool, and each such hop adds latency to every request.
async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDependency = Annotated[Service, Depends(_service)]
_AgentCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(agent_scheme)]
_AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(admin_scheme)]


async def _agent(service: ServiceDependency, credentials: _AgentCredentials) -> Principal:
    return await service.authenticator.agent(credentials)


async def _administrator(service: ServiceDependency, credentials: _AdminCredentials) -> Principal:
    return service.authenticator.administrator(credentials)


async def _agent_or_administrator(
    service: ServiceDependency, credentials: _AgentCredentials, _: _AdminCredentials
) -> Principal:
    # Both schemes read the same header; naming both lists them as alternatives in /openapi.json.
    return await service.authenticator.agent_or_administrator(credentials)


AgentPrincipal = Annotated[Principal, Depends(_agent)]
AdministratorPrincipal = Annotated[Principal, Depends(_administrator)]
AnyPrincipal = Annotated[Principal, Depends(_agent_or_administrator)]
