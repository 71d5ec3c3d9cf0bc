"""OpenAI Agents SDK: function tools whose every invocation passes the gate.

`guard_function_tool` returns a copy of a `FunctionTool` whose invoker binds the call before the
original invoker runs; `guard_tools` and `guard_agent` apply it to a list of tools or to an agent.
Install with `pip install 'etlb[openai-agents]'`.

The gate sits in the invoker, the last step before the tool body, so nothing the SDK decides earlier
can let a call past it: an approval given through `needs_approval` and `RunState.approve`, a run
resumed from a saved `RunState`, tool input guardrails, and parallel tool calls all end in the
invoker. A refusal is returned as the tool's output, which the SDK sends to the model as the
result of that call id; tool input guardrails could reject too, but do not run for every invocation
path, so the invoker is the single place that does.

Invariants, each enforced below and tested:
- The original invoker runs only after the gate bound the call (redeemed in the same step) or found
  it reversible. Each invocation gets its own binding, with the SDK's call id as `call_id`.
- A refusal, arguments that are not a JSON object, and any exception from the gate return etlb's
  refusal text as the tool output without calling the original invoker.
- After the invoker ran, its outcome is recorded: `failed` when it raised (the error is re-raised)
  or returned the SDK's default error text for an exception, and `succeeded` with the digest of the
  output otherwise.

NOTE: a tool created with a custom `failure_error_function` turns an exception into the text that
function returns, and the adapter cannot tell that text from a result, so the outcome is recorded
as `succeeded`. Create guarded tools with the default error function, or with
`failure_error_function=None` so that errors raise, for exact outcomes.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from agents import Agent, FunctionTool, Tool
from agents.tool_context import ToolContext

from etlb.guarding import error_text, success_outcome
from etlb.integrations._runtime import BindingGate, abind_or_refuse, arecord_outcome
from etlb.model import Outcome, ToolCall

__all__ = ["DEFAULT_SERVER", "guard_agent", "guard_function_tool", "guard_tools"]

logger = logging.getLogger(__name__)

# The server name that the rules of etlb.toml match for the SDK's function tools, unless the caller names another.
DEFAULT_SERVER = "openai-agents"

# The attribute the SDK (openai-agents 0.24) sets on a tool context when its default error function
# turned an exception of the tool body into the output. It is not public API, so it is read only.
_DEFAULT_FAILURE_ATTRIBUTE = "_function_tool_default_failure_handled"

ContextT = TypeVar("ContextT")


class ArgumentsError(ValueError):
    """The model's arguments for a tool call are not a JSON object, so the call cannot be classified."""


def tool_call(tool: FunctionTool, arguments: str, *, call_id: str | None, server: str) -> ToolCall:
    """Turn one invocation of `tool` into an etlb tool call; raises `ArgumentsError` for bad arguments."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as error:
        message = f"arguments of tool {tool.name!r} are not valid JSON ({error}); expected a JSON object"
        raise ArgumentsError(message) from error
    if not isinstance(parsed, dict):
        message = f"arguments of tool {tool.name!r} are a JSON {type(parsed).__name__}; expected a JSON object"
        raise ArgumentsError(message)
    return ToolCall(tool=tool.name, arguments=parsed, server=server, call_id=call_id)


def guard_function_tool(
    tool: FunctionTool, gate: BindingGate, *, agent: str | None = None, server: str = DEFAULT_SERVER
) -> FunctionTool:
    """Return a copy of `tool` whose every invocation is bound to a bearer first, or refused.

    `gate` is a `Gate` or a `Client`. `agent` overrides the agent id of the gate's configuration
    (a `Client` accepts only its own agent). `server` is the server name the rules match.
    """
    guarded = copy.copy(tool)
    invoke_original = guarded.on_invoke_tool

    async def invoke(context: ToolContext[Any], arguments: str) -> Any:
        call_id = getattr(context, "tool_call_id", None)
        try:
            call = tool_call(tool, arguments, call_id=call_id if isinstance(call_id, str) else None, server=server)
        except ArgumentsError as error:
            logger.info("event=refusal tool=%s call_id=%s reason=invalid_arguments", tool.name, call_id)
            return f"etlb refused the call to tool {tool.name!r}, so nothing ran: {error}"

        verdict = await abind_or_refuse(gate, call, agent=agent)
        if verdict.refusal_text is not None:
            return verdict.refusal_text

        try:
            output = await invoke_original(context, arguments)
        except BaseException as error:
            await arecord_outcome(gate, verdict.binding, Outcome.failed(error_text(error)))
            raise

        await arecord_outcome(gate, verdict.binding, _outcome(context, output))
        return output

    guarded.on_invoke_tool = invoke
    return guarded


def guard_tools(
    tools: Sequence[Tool], gate: BindingGate, *, agent: str | None = None, server: str = DEFAULT_SERVER
) -> list[Tool]:
    """Guard every function tool of `tools`; raises `TypeError` for a tool of another kind.

    Other kinds (hosted tools, shell, computer use) do not run through a function tool's invoker,
    so they would pass unguarded: rejecting them keeps the list fail closed.
    """
    guarded: list[Tool] = []
    for tool in tools:
        if not isinstance(tool, FunctionTool):
            message = (
                f"tool {getattr(tool, 'name', tool)!r} is a {type(tool).__name__}, which etlb cannot guard; "
                "use function tools only, or leave this tool out of the agent"
            )
            raise TypeError(message)
        guarded.append(guard_function_tool(tool, gate, agent=agent, server=server))
    return guarded


def guard_agent(
    agent: Agent[ContextT], gate: BindingGate, *, agent_id: str | None = None, server: str = DEFAULT_SERVER
) -> Agent[ContextT]:
    """Return a clone of `agent` whose tools are guarded; handoff agents must be guarded separately."""
    return agent.clone(tools=guard_tools(agent.tools, gate, agent=agent_id, server=server))


def _outcome(context: ToolContext[Any], output: Any) -> Outcome:
    if getattr(context, _DEFAULT_FAILURE_ATTRIBUTE, False):
        return Outcome.failed(f"the tool raised, and the SDK returned its default error text: {output}")
    return success_outcome(output)
