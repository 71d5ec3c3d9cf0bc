"""LangChain 1.x and LangGraph: every tool call passes the gate inside the runtime's tool-call hook.

`EtlbMiddleware` is an agent middleware for `langchain.agents.create_agent`; its `wrap_tool_call`
and `awrap_tool_call` run around each tool call that the agent's tool node executes. For a graph
built by hand, `guarded_tool_node` builds a LangGraph `ToolNode` whose tool-call wrappers are the
same two methods. Install with `pip install 'etlb[langchain]'`.

Invariants, each enforced below and tested:
- The tool body runs only after the gate bound the call (redeemed in the same step) or found it
  reversible. One execution of the handler uses one binding, so a retrying middleware outside
  this one gets a new binding for each attempt.
- A refusal, and any exception from the gate, becomes a `ToolMessage` with `status="error"` for the
  same tool call id, whose text is etlb's refusal text; the handler is not called.
- Parallel tool calls are decided one by one, each bound under its own call id (`ToolCall.call_id`
  is the model's tool call id), never matched by position.
- After the body ran, its outcome is recorded: `failed` with the error text when the handler raised
  or returned an error `ToolMessage`, and `succeeded` with the digest of the result otherwise.

NOTE: middleware listed after this one in `create_agent(middleware=[...])` runs inside it and can
change the call's arguments before the tool runs, so the binding would cover the call as this
middleware saw it. Put `EtlbMiddleware` last in the list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from etlb.guarding import error_text, success_outcome
from etlb.integrations._runtime import (
    BindingGate,
    abind_or_refuse,
    arecord_outcome,
    bind_or_refuse,
    record_outcome,
)
from etlb.model import Outcome, ToolCall

__all__ = ["DEFAULT_SERVER", "EtlbMiddleware", "guarded_tool_node", "tool_call"]

logger = logging.getLogger(__name__)

# The server name that the rules of etlb.toml match for LangChain tools, unless the caller names another.
DEFAULT_SERVER = "langchain"

ToolResult = ToolMessage | Command[Any]


def tool_call(request: ToolCallRequest, *, server: str) -> ToolCall:
    """Turn a LangGraph tool-call request into an etlb tool call, keeping the model's call id."""
    call = request.tool_call
    arguments = call.get("args")
    return ToolCall(
        tool=call["name"],
        arguments=dict(arguments) if isinstance(arguments, dict) else {},
        server=server,
        call_id=call.get("id"),
    )


class EtlbMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Agent middleware that binds each tool call to a bearer before the tool runs, or refuses it.

    `gate` is a `Gate` or a `Client`. `agent` overrides the agent id of the gate's configuration
    (a `Client` accepts only its own agent). `server` is the server name the rules match.
    """

    def __init__(self, gate: BindingGate, *, agent: str | None = None, server: str = DEFAULT_SERVER) -> None:
        super().__init__()
        self.gate = gate
        self.agent = agent
        self.server = server

    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        call = tool_call(request, server=self.server)
        verdict = bind_or_refuse(self.gate, call, agent=self.agent)
        if verdict.refusal_text is not None:
            return _refusal_message(request, verdict.refusal_text)

        try:
            result = handler(request)
        except BaseException as error:
            # Includes LangGraph's interrupts: the body started, so the binding is spent either way.
            record_outcome(self.gate, verdict.binding, Outcome.failed(error_text(error)))
            raise

        record_outcome(self.gate, verdict.binding, _outcome(result))
        return result

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]
    ) -> ToolResult:
        call = tool_call(request, server=self.server)
        verdict = await abind_or_refuse(self.gate, call, agent=self.agent)
        if verdict.refusal_text is not None:
            return _refusal_message(request, verdict.refusal_text)

        try:
            result = await handler(request)
        except BaseException as error:
            await arecord_outcome(self.gate, verdict.binding, Outcome.failed(error_text(error)))
            raise

        await arecord_outcome(self.gate, verdict.binding, _outcome(result))
        return result


def guarded_tool_node(
    tools: Sequence[BaseTool | Callable[..., Any]],
    gate: BindingGate,
    *,
    agent: str | None = None,
    server: str = DEFAULT_SERVER,
    **options: Any,
) -> ToolNode:
    """Build a LangGraph `ToolNode` whose every tool call passes the gate first.

    `options` go to `ToolNode` unchanged (`name`, `handle_tool_errors`, …), except the tool-call
    wrappers, which this function owns.
    """
    for owned in ("wrap_tool_call", "awrap_tool_call"):
        if owned in options:
            message = f"guarded_tool_node sets {owned} itself; wrap the node's tools in middleware instead"
            raise ValueError(message)

    middleware = EtlbMiddleware(gate, agent=agent, server=server)
    return ToolNode(
        list(tools),
        wrap_tool_call=middleware.wrap_tool_call,
        awrap_tool_call=middleware.awrap_tool_call,
        **options,
    )


def _refusal_message(request: ToolCallRequest, text: str) -> ToolMessage:
    call = request.tool_call
    return ToolMessage(content=text, name=call["name"], tool_call_id=call.get("id") or "", status="error")


def _outcome(result: ToolResult) -> Outcome:
    """Return `failed` for an error `ToolMessage`, which `handle_tool_errors` makes of an exception."""
    if isinstance(result, ToolMessage):
        if result.status == "error":
            return Outcome.failed(str(result.text))
        return success_outcome(result.content)
    return success_outcome(result)
