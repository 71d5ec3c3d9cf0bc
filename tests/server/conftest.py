"""Fixtures for the HTTP service: the app on a real SQLite gate, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from etlb.gate import Gate
from etlb.server import ServiceSettings, create_app
from etlb.server.settings import admin_token_digest
from tests.conftest import World

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"

# Small limits, so that the tests can exceed them with small bodies.
MAX_BODY_BYTES = 4096
MAX_JSON_DEPTH = 16


def service_settings(**changes: Any) -> ServiceSettings:
    settings: dict[str, Any] = {
        "admin_token_sha256": admin_token_digest(ADMIN_TOKEN),
        "max_body_bytes": MAX_BODY_BYTES,
        "max_json_depth": MAX_JSON_DEPTH,
        "group_commit_window": 0.001,
    }
    settings.update(changes)
    return ServiceSettings(**settings)


@dataclass
class Api:
    """The app, an HTTP client for it, and the API keys of two registered agents."""

    app: FastAPI
    http: httpx.AsyncClient
    world: World
    agent_key: str
    other_key: str

    @property
    def agent(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_key}"}

    @property
    def other(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_key}"}

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@asynccontextmanager
async def serve_app(gate: Gate, settings: ServiceSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Run the app's lifespan and yield it with an HTTP client. App errors become 500 responses, as in a server."""
    app = create_app(gate, settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://etlb.test") as http:
            yield app, http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    agent_key = world.gate.register_agent("agent-1")
    other_key = world.gate.register_agent("agent-2")
    async with serve_app(world.gate, service_settings()) as (app, http):
        yield Api(app, http, world, agent_key, other_key)
