"""`Client`: the gate's interface for agents that use the HTTP service of `etlb serve`.

Moving an agent from an in-process gate to the service changes one line:

    gate = Gate.from_config("etlb.toml")                          # in-process
    gate = Client("http://127.0.0.1:8470", api_key=os.environ["ETLB_API_KEY"])  # the service

`bind`, `redeem`, `complete`, `execution`, `guard` and `resume` behave as the `Gate` methods of the same
name. Where the service opens an approval request, `bind` raises `ApprovalPending`, which never waits.
The agent id is the one the API key belongs to. An `agent` argument is accepted so that code written
for the gate runs unchanged, but it must name that same agent.

Fail closed: when the service cannot be reached, does not respond within `timeout`, or responds with
anything that is not a well-formed decision, `bind` raises `Refused` with `store_unavailable` or
`internal_error`, so the guarded code never runs. Such a refusal exists only on the client
(`recorded` is False). A bind that timed out may still have been committed by the service: it then
stays without an outcome, which reports as `unknown`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from etlb.classify import unclassified_action
from etlb.errors import (
    ApprovalClosed,
    ApprovalPending,
    BindingConsumed,
    ConfigError,
    DeclarationError,
    EtlbError,
    NotFoundError,
    Refused,
    SignatureError,
    StoreUnavailable,
)
from etlb.guarding import error_text, guard_function
from etlb.model import Binding, Outcome, ReasonCode, Refusal, ToolCall
from etlb.resolve import refusal_message
from etlb.wire import binding_from_json, pending_from_json, refused_from_json, tool_call_json

__all__ = ["DEFAULT_TIMEOUT", "Client"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Seconds for each phase of a request (connect, send, wait for the response). A bind waits for one
# store transaction, which takes milliseconds unless the store is busy for seconds.
DEFAULT_TIMEOUT = 10.0

# Agent id in the action of a refusal made on the client before the service named the agent.
_UNKNOWN_AGENT = "unknown"

# Problem codes of the service that are errors of one kind of etlb error, for calls other than bind.
_ERRORS_BY_CODE: dict[str, type[EtlbError]] = {
    "not_found": NotFoundError,
    "approval_closed": ApprovalClosed,
    "binding_consumed": BindingConsumed,
    "store_unavailable": StoreUnavailable,
    "invalid_signature": SignatureError,
    "declaration_rejected": DeclarationError,
}


class Client:
    """A gate that decides through the HTTP service, with the API key of one agent.

    Safe to share between threads. Close it, or use it as a context manager, to release its connections.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout <= 0:
            message = f"timeout {timeout} must be a positive number of seconds"
            raise ValueError(message)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json, application/problem+json"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._agent: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # Decisions

    def bind(self, call: ToolCall, *, agent: str | None = None, redeem: bool = False) -> Binding | None:
        """Bind an irreversible call to a bearer, or raise `Refused`; None means reversible, run it.

        Without `redeem` the binding is not used yet: pass it to `redeem` right before the tool runs.
        With `redeem`, a caller that runs the tool at once marks it used in the same request.
        """
        return self._bind(call, agent=agent, redeem=redeem)

    def redeem(self, binding: Binding, call: ToolCall, *, agent: str | None = None) -> None:
        """Mark a binding used for this call, right before it runs; raises `BindingConsumed` on reuse."""
        self._check_agent(agent)
        response = self._request("POST", f"/v1/bindings/{binding.id}/redemption", json=tool_call_json(call))
        if response.status_code != 204:
            raise _error_from_response(response)

    def complete(self, binding: Binding, outcome: Outcome) -> None:
        """Record what happened after a bound action ran. An outcome is recorded once per binding."""
        body = {"status": outcome.status.value, "detail": outcome.detail}
        response = self._request("POST", f"/v1/bindings/{binding.id}/outcome", json=body)
        if response.status_code != 201:
            raise _error_from_response(response)

    @contextmanager
    def execution(self, call: ToolCall, *, agent: str | None = None) -> Iterator[Binding | None]:
        """Bind and redeem a call in one request, run the body, and record its outcome.

        Yields None for a reversible action. Raises `Refused` before the body runs when no bearer
        covers the action or the service fails. An exception from the body is recorded as `failed`.
        """
        binding = self._bind(call, agent=agent, redeem=True)
        if binding is None:
            yield None
            return

        try:
            yield binding
        except BaseException as error:
            self._record_outcome(binding, Outcome.failed(error_text(error)))
            raise
        self._record_outcome(binding, Outcome.succeeded())

    def guard(
        self, *, tool: str | None = None, server: str | None = None, agent: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function so that each call passes the gate first, as `Gate.guard` does."""

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            def bind(call: ToolCall) -> Binding | None:
                return self._bind(call, agent=agent, redeem=True)

            return guard_function(function, tool=tool, server=server, bind=bind, record_outcome=self._record_outcome)

        return decorate

    def resume(self, request_id: str, call: ToolCall | None = None) -> Binding:
        """Return the binding an approver's acceptance made for an approval request, redeemed for one run.

        With `call`, the service classifies it again and it must be the requested action. Raises
        `ApprovalPending` while no approver has answered, `Refused` when the request was declined,
        timed out or failed, `BindingConsumed` when it already ran, `NotFoundError` for an unknown
        request or another agent's, and `StoreUnavailable` when the service cannot be reached. The
        action must not run after any of them.
        """
        body = tool_call_json(call) if call is not None else None
        response = self._request("POST", f"/v1/approvals/{request_id}/resume", json=body)
        document = _json_object(response)

        if response.status_code == 200 and document is not None and document.get("decision") == "bind":
            try:
                return binding_from_json(document.get("binding"))
            except ValueError as error:
                message = f"the service resumed approval request {request_id} with an unreadable binding: {error}"
                raise EtlbError(message, hint="check that client and service run the same etlb") from error
        if response.status_code == 202 and document is not None:
            raise _pending(document)
        if document is not None and "refusal_id" in document:
            try:
                raise refused_from_json(document, message=str(document.get("detail", "")))
            except ValueError as error:
                message = f"the service refused approval request {request_id} with a malformed refusal: {error}"
                raise EtlbError(message) from error
        raise _error_from_response(response)

    # Evidence

    def receipt(self, binding_id: str) -> dict[str, Any]:
        """Fetch the offline receipt of a binding; verify it with `etlb.ledger.receipt.verify_receipt`."""
        response = self._request("GET", f"/v1/bindings/{binding_id}/receipt")
        document = _json_object(response) if response.status_code == 200 else None
        if document is None:
            raise _error_from_response(response)
        return document

    def agent_id(self) -> str:
        """Return the agent id the API key belongs to, asking the service once."""
        if self._agent is None:
            response = self._request("GET", "/v1/agent")
            document = _json_object(response) if response.status_code == 200 else None
            agent = document.get("agent") if document is not None else None
            if not isinstance(agent, str):
                raise _error_from_response(response)
            self._agent = agent
        return self._agent

    # Internals

    def _bind(self, call: ToolCall, *, agent: str | None, redeem: bool) -> Binding | None:
        try:
            body = json.dumps({**tool_call_json(call), "redeem": redeem}, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as error:
            detail = f"the tool call's arguments cannot be sent as JSON: {error}"
            raise self._client_refusal(call, ReasonCode.INTERNAL_ERROR, detail) from error

        try:
            self._check_agent(agent)
            response = self._request("POST", "/v1/bindings", content=body)
        except StoreUnavailable as error:
            raise self._client_refusal(call, ReasonCode.STORE_UNAVAILABLE, error.message) from error

        if response.status_code == 201:
            document = _json_object(response)
            try:
                if document is None or document.get("decision") != "bind":
                    message = "a 201 response must be a bind decision"
                    raise ValueError(message)
                return binding_from_json(document.get("binding"))
            except ValueError as error:
                detail = f"the service responded 201 with a binding the client cannot read: {error}"
                raise self._client_refusal(call, ReasonCode.INTERNAL_ERROR, detail) from error

        if response.status_code == 202:
            document = _json_object(response)
            try:
                pending = pending_from_json(document)
            except ValueError as error:
                detail = f"the service responded 202 with a pending decision the client cannot read: {error}"
                raise self._client_refusal(call, ReasonCode.INTERNAL_ERROR, detail) from error
            logger.info("event=approval_pending request=%s deadline=%s", pending.request_id, pending.deadline)
            raise pending

        if response.status_code == 200:
            # Only this exact response lets the call run without a binding: anything else is refused.
            if _json_object(response) == {"decision": "pass"}:
                return None
            detail = f"the service responded 200 without a pass decision: {_excerpt(response)}"
            raise self._client_refusal(call, ReasonCode.INTERNAL_ERROR, detail)

        raise self._refusal_from_response(call, response)

    def _check_agent(self, agent: str | None) -> None:
        if agent is None:
            return
        authenticated = self.agent_id()
        if agent != authenticated:
            message = f"agent {agent!r} was requested, but the API key belongs to agent {authenticated!r}"
            raise ConfigError(message, hint=f"remove agent=, or use the API key of agent {agent!r}")

    def _request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None) -> httpx.Response:
        """Send one request; raises `StoreUnavailable` when the service cannot be reached or responds late.

        `content` is a body already encoded as JSON; `json` is a value for httpx to encode.
        """
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self._http.request(method, path, json=json, content=content, headers=headers)
        except httpx.TimeoutException as error:
            message = f"the etlb service at {self.url} did not respond to {method} {path} within {self.timeout} s"
            raise StoreUnavailable(message, hint="check the service's health: GET /health") from error
        except httpx.HTTPError as error:
            message = f"the etlb service at {self.url} cannot be reached: {error_text(error)}"
            raise StoreUnavailable(message, hint="start it with: etlb serve, or check the URL") from error

    def _refusal_from_response(self, call: ToolCall, response: httpx.Response) -> Refused:
        """Rebuild the service's refusal, or refuse on the client when the response is not a refusal."""
        document = _json_object(response)
        if document is None:
            detail = f"the service responded HTTP {response.status_code} with no problem document: {_excerpt(response)}"
            return self._client_refusal(call, ReasonCode.INTERNAL_ERROR, detail)

        detail = str(document.get("detail", ""))
        if "refusal_id" in document:
            try:
                return refused_from_json(document, message=detail)
            except ValueError as error:
                problem = f"the service responded HTTP {response.status_code} with a malformed refusal: {error}"
                return self._client_refusal(call, ReasonCode.INTERNAL_ERROR, problem)

        code = document.get("code")
        reason = ReasonCode.STORE_UNAVAILABLE if code == "store_unavailable" else ReasonCode.INTERNAL_ERROR
        problem = f"the service responded HTTP {response.status_code} {code}: {detail}"
        return self._client_refusal(call, reason, problem)

    def _client_refusal(self, call: ToolCall, code: ReasonCode, detail: str) -> Refused:
        action = unclassified_action(call, self._agent or _UNKNOWN_AGENT)
        logger.error("event=refusal agent=%s action=%s reason=%s error=%s", action.agent, action.digest, code, detail)
        refusal = Refusal(
            id=f"refusal-{secrets.token_hex(12)}",
            action=action,
            code=code,
            reasons=(),
            message=f"{refusal_message(action, code, ())}: {detail}",
            time=datetime.now(UTC),
        )
        return Refused(refusal, recorded=False)

    def _record_outcome(self, binding: Binding, outcome: Outcome) -> None:
        # The action has already run, so a failure to record its outcome is logged, not raised: the
        # binding then reports `unknown`, and the action's own result or error reaches the caller.
        try:
            self.complete(binding, outcome)
        except EtlbError as error:
            logger.error("outcome of binding %s could not be recorded: %s", binding.id, error.message)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _pending(document: dict[str, Any]) -> ApprovalPending | EtlbError:
    """Return `ApprovalPending` for a pending decision, or an error saying why it cannot be read."""
    try:
        return pending_from_json(document)
    except ValueError as error:
        message = f"the service responded 202 with a pending decision the client cannot read: {error}"
        return EtlbError(message, hint="check that client and service run the same etlb")


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = response.text
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _error_from_response(response: httpx.Response) -> EtlbError:
    """Turn a response that is not the expected success into the etlb error its problem document names."""
    document = _json_object(response) or {}
    code = str(document.get("code", ""))
    detail = str(document.get("detail") or f"HTTP {response.status_code}: {_excerpt(response)}")
    kind = _ERRORS_BY_CODE.get(code, EtlbError)
    if not code and response.status_code >= 500:
        kind = StoreUnavailable
    return kind(f"the etlb service responded {code or response.status_code}: {detail}", hint=document.get("hint", ""))
