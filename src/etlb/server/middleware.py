"""ASGI middleware of the service: request metrics, body limits, and a last response for unexpected errors.

Order, outermost first: `RequestMetrics`, `InternalErrors`, `RequestLimits`, then the routes. The
limits run before any JSON parser reads a body, so an oversized or deeply nested body is rejected
without being parsed.
"""

from __future__ import annotations

import logging
import re
import time
from email.message import Message

from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from etlb.model import ReasonCode
from etlb.server.metrics import ServiceMetrics
from etlb.server.problems import BODY_TOO_LARGE, JSON_TOO_DEEP, problem_response, reason_problem_type

__all__ = ["InternalErrors", "RequestLimits", "RequestMetrics", "json_depth_exceeds"]

logger = logging.getLogger(__name__)

# A JSON string literal, escapes included. Removing them leaves brackets that are real nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(value for value in range(256) if value not in b"[]{}")
_OPENING = frozenset(b"[{")


def json_depth_exceeds(document: bytes, limit: int) -> bool:
    """Tell whether a JSON document nests arrays and objects more than `limit` levels deep.

    Runs without parsing, in linear time, so that a hostile body cannot exhaust the parser's
    recursion. A malformed document may be misjudged, but the parser rejects it afterwards anyway.
    """
    depth = 0
    for bracket in _JSON_STRING.sub(b"", document).translate(None, _NOT_BRACKETS):
        if bracket in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _is_json(content_type: str | None) -> bool:
    # The routes parse a body as JSON only when its content type is JSON. FastAPI's strict content
    # type check enforces this, and it also keeps browsers from posting JSON without a CORS preflight.
    if not content_type:
        return False
    header = Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestLimits:
    """Reject bodies above `max_body_bytes` (413) and JSON nested deeper than `max_json_depth` (422).

    The body is read completely, within the limit, and then handed to the app unchanged.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(int(declared), scope, receive, send)
            return

        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(len(body), scope, receive, send)
                return
            more = message.get("more_body", False)

        if body and _is_json(headers.get("content-type")) and json_depth_exceeds(bytes(body), self.max_json_depth):
            detail = f"the JSON body nests arrays and objects more than {self.max_json_depth} levels deep"
            response = problem_response(JSON_TOO_DEEP, detail, hint="flatten the tool arguments")
            await response(scope, receive, send)
            return

        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body has {size} bytes or more; the limit is {self.max_body_bytes} bytes"
        hint = "send a smaller body, or raise max_body_bytes in the [service] section of etlb.toml"
        # The client may still be sending, so the connection is closed after the response.
        response = problem_response(BODY_TOO_LARGE, detail, hint=hint, headers={"Connection": "close"})
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> ASGIMessage:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class InternalErrors:
    """Respond to an exception that escaped every route with a 500 `internal_error` problem, and log it once.

    Without this, Starlette responds with plain text and re-raises, and the server logs the error twice.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_tracked(message: ASGIMessage) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), _route_template(scope))
            if started:
                raise
            detail = "the service failed unexpectedly; nothing ran, and the error is in the service's log"
            response = problem_response(reason_problem_type(ReasonCode.INTERNAL_ERROR), detail)
            await response(scope, receive, send)


class RequestMetrics:
    """Count requests and their latency by method, route template and status code."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        status = 500
        start = time.perf_counter()

        async def send_tracked(message: ASGIMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        finally:
            method = str(scope.get("method", ""))
            route = _route_template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    # The router stores the matched route in the scope. A template such as /v1/bindings/{binding_id}
    # keeps the label set small; a request that matched no route is counted as "unmatched".
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        return str(getattr(route, "path", "unmatched"))
    return "unmatched"
