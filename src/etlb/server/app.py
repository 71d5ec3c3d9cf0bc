"""`create_app`: the ASGI application of the HTTP service, with its error handlers and OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from etlb.errors import EtlbError, Refused
from etlb.gate import Gate
from etlb.server import admin, approvals, routes
from etlb.server.auth import Authenticator
from etlb.server.group_commit import GroupCommitter
from etlb.server.metrics import ServiceMetrics
from etlb.server.middleware import InternalErrors, RequestLimits, RequestMetrics
from etlb.server.problems import (
    INVALID_REQUEST,
    MALFORMED_JSON,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PROBLEM_MEDIA_TYPE,
    ProblemError,
    ProblemType,
    problem_for_error,
    problem_response,
    refusal_response,
)
from etlb.server.service import Service
from etlb.server.settings import ServiceSettings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

# Validation errors listed in a problem document; the rest are counted, so the response stays small.
_MAX_LISTED_ERRORS = 10


def create_app(gate: Gate, settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service around a gate. The caller owns the gate and closes it after the app stops.

    The app's lifespan starts and stops the group committer; an ASGI server runs it, and a test
    enters `app.router.lifespan_context(app)`.
    """
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    committer = GroupCommitter(
        gate,
        window=settings.group_commit_window,
        max_batch=settings.group_commit_max_batch,
        enabled=settings.group_commit,
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            await group.start(committer.run)
            logger.info(
                "service started: group commit %s (window %.1f ms, at most %d requests), administration %s",
                "on" if settings.group_commit else "off",
                settings.group_commit_window * 1000,
                settings.group_commit_max_batch,
                "enabled" if settings.admin_token_sha256 is not None else "disabled",
            )
            try:
                yield
            finally:
                committer.close()
        logger.info("service stopped")

    app = FastAPI(
        title="etlb",
        summary="No irreversible agent action runs unless one named human signed for it.",
        version=_package_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = Service(
        gate=gate,
        settings=settings,
        metrics=metrics,
        committer=committer,
        authenticator=Authenticator(gate, settings.admin_token_sha256),
    )
    app.include_router(routes.router)
    app.include_router(admin.router)
    app.include_router(approvals.router)
    _add_error_handlers(app)

    # add_middleware wraps the app built so far, so the last one added is the outermost.
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
    app.add_middleware(InternalErrors)
    app.add_middleware(RequestMetrics, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(
                get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def on_problem(_: Request, error: Exception) -> Response:
        assert isinstance(error, ProblemError)
        return error.response()

    async def on_refused(_: Request, error: Exception) -> Response:
        assert isinstance(error, Refused)
        return refusal_response(error)

    async def on_etlb_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, EtlbError)
        return problem_for_error(error).response()

    async def on_validation_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return _validation_problem(error)

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers) if error.headers else None
        if error.status_code == 404:
            return problem_response(NOT_FOUND, f"there is no route for {request.url.path}", headers=headers)
        if error.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
            return problem_response(METHOD_NOT_ALLOWED, detail, headers=headers)
        return problem_response(ProblemType.generic(error.status_code), str(error.detail), headers=headers)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(EtlbError, on_etlb_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _validation_problem(error: RequestValidationError) -> Response:
    items = list(error.errors())
    for item in items:
        if item.get("type") == "json_invalid":
            reason = item.get("ctx", {}).get("error", "JSON decode error")
            return problem_response(MALFORMED_JSON, f"the request body is not valid JSON: {reason}")

    listed = [_describe(item) for item in items[:_MAX_LISTED_ERRORS]]
    detail = "; ".join(entry["message"] for entry in listed)
    if len(items) > _MAX_LISTED_ERRORS:
        detail += f"; and {len(items) - _MAX_LISTED_ERRORS} more"
    hint = "see the operation's request schema in /openapi.json"
    return problem_response(INVALID_REQUEST, detail, hint=hint, extra={"errors": listed})


def _describe(item: Any) -> dict[str, str]:
    location = ".".join(str(part) for part in item.get("loc", ()))
    if item.get("type") == "extra_forbidden" and tuple(item.get("loc", ()))[-1:] == ("agent",):
        message = f"{location}: not allowed, because the agent is the one the API key authenticates; remove it"
    elif isinstance(item.get("input"), bytes):
        # FastAPI hands over the raw bytes when the content type is not JSON.
        message = f"{location}: must be a JSON object sent with Content-Type: application/json"
    else:
        message = f"{location}: {item.get('msg', 'invalid')}"
    # The offending input is left out: it may be large, and a body may carry a secret.
    return {"location": location, "message": message}


def _problem_media_types(document: dict[str, Any]) -> dict[str, Any]:
    """Document every 4xx and 5xx response as application/problem+json, the media type the service sends."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status)[0] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return document


def _package_version() -> str:
    try:
        return version("etlb")
    except PackageNotFoundError:
        return "0+unknown"
