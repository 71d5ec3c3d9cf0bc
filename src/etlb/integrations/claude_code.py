"""The Claude Code hook: `etlb hook claude-code` answers `PreToolUse` and records `PostToolUse`.

Claude Code runs the hook as a command, writes the hook's JSON input on standard input and reads a
decision from standard output. For `PreToolUse` the hook classifies the call, binds it or refuses it,
and answers `permissionDecision` `allow` or `deny` with a reason the model sees. For `PostToolUse`
it records the outcome of the matching binding.

Invariants, each enforced below and tested:
- Every path that is not a binding or a reversible action answers `deny`: a refusal, malformed input,
  a missing or broken store, any exception, and a decision that takes longer than the time limit.
- A bound call is redeemed in the binding's own transaction, so one binding allows one execution.
- Tool calls are named for the rules as server `claude-code` and the tool's name (`Bash`, `Write`,
  `Edit`, …); MCP tools, which Claude Code names `mcp__<server>__<tool>`, keep their own server and
  tool. The `Bash` tool's arguments gain `cwd`, the session's working directory, for the shell
  analyser's rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from etlb.canonical import sha256_digest
from etlb.errors import EtlbError, Refused
from etlb.gate import Gate
from etlb.mcp_proxy import format_refusal
from etlb.model import Outcome, ToolCall
from etlb.store.base import LedgerQuery

__all__ = ["HOOK_SERVER", "decide_hook", "deny"]

logger = logging.getLogger(__name__)

HOOK_SERVER = "claude-code"


def deny(reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


def _allow(reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "permissionDecisionReason": reason,
        }
    }


def tool_call(payload: dict[str, Any]) -> ToolCall:
    """Turn the hook input into an etlb tool call; raises `ValueError` for input of the wrong shape."""
    name = payload.get("tool_name")
    arguments = payload.get("tool_input")
    if not isinstance(name, str) or not name:
        message = f"hook input has no tool_name (got {name!r})"
        raise ValueError(message)
    if not isinstance(arguments, dict):
        message = f"hook input for {name} has no tool_input object"
        raise ValueError(message)

    call_id = payload.get("tool_use_id")
    call_id = call_id if isinstance(call_id, str) else None
    if name.startswith("mcp__"):
        _, _, rest = name.partition("mcp__")
        server, _, tool = rest.partition("__")
        if not server or not tool:
            message = f"MCP tool name {name!r} is not of the form mcp__<server>__<tool>"
            raise ValueError(message)
        return ToolCall(tool=tool, arguments=arguments, server=server, call_id=call_id)

    if name == "Bash":
        cwd = payload.get("cwd")
        if not isinstance(cwd, str) or not cwd:
            message = "hook input for Bash has no cwd, so the command's paths cannot be resolved"
            raise ValueError(message)
        arguments = {**arguments, "cwd": cwd}
    return ToolCall(tool=name, arguments=arguments, server=HOOK_SERVER, call_id=call_id)


def decide_hook(payload: Any, open_gate: Callable[[], Gate], *, agent: str | None) -> dict[str, Any]:
    """Answer one hook input. Never raises: anything unexpected is a `deny` with its cause."""
    try:
        if not isinstance(payload, dict):
            return deny("etlb: the hook input is not a JSON object, so the call is denied")
        event = payload.get("hook_event_name")
        call = tool_call(payload)
    except ValueError as error:
        return deny(f"etlb: invalid hook input, so the call is denied: {error}")

    try:
        with open_gate() as gate:
            if event == "PostToolUse":
                _record_outcome(gate, call, payload, agent=agent)
                return {}
            if event != "PreToolUse":
                return deny(f"etlb: unknown hook event {event!r}; install the hook for PreToolUse and PostToolUse")
            return _pre_tool_use(gate, call, agent=agent)
    except EtlbError as error:
        logger.error("claude-code hook failed closed on %s: %s", call.tool, error.message)
        return deny(f"etlb: the liability gate failed, so the call is denied: {error.message}")
    except Exception as error:
        logger.exception("claude-code hook failed closed on %s", call.tool)
        return deny(f"etlb: the liability gate failed, so the call is denied: {type(error).__name__}: {error}")


def _pre_tool_use(gate: Gate, call: ToolCall, *, agent: str | None) -> dict[str, Any]:
    earlier = _binding_of_call(gate, call, agent=agent)
    if earlier is not None:
        # Claude Code gives each tool use its own id, so a second PreToolUse for one id is a replay.
        return deny(f"etlb: tool use {call.call_id} was already bound as {earlier}; each tool use runs once")
    try:
        # The hook answers within its time limit, so an approval request is reported as pending, not awaited.
        binding = gate.bind(call, agent=agent, redeem=True, wait=False)
    except Refused as refused:
        return deny(format_refusal(refused, server_name=call.server or HOOK_SERVER))
    if binding is None:
        return _allow("etlb: reversible action, no binding needed")
    return _allow(f"etlb: bound to bearer {binding.bearer} under scope {binding.scope_id} (binding {binding.id})")


def _binding_of_call(gate: Gate, call: ToolCall, *, agent: str | None) -> str | None:
    """Return the id of a binding already made for this exact call and tool use id, if any."""
    if call.call_id is None:
        return None
    try:
        action = gate.classify(call, agent=agent)
    except EtlbError:
        # The gate refuses an unclassifiable call itself, with its reason.
        return None
    entries = gate.store.find_entries(LedgerQuery(action_digest=action.digest, record_type="binding", limit=1000))
    for entry in entries:
        data = json.loads(entry.record)["data"]
        if data["action"].get("call_id") == call.call_id:
            return str(data["binding_id"])
    return None


def _record_outcome(gate: Gate, call: ToolCall, payload: dict[str, Any], *, agent: str | None) -> None:
    """Record the outcome of the binding of this call: the one with its `tool_use_id`, else the newest open one.

    The call id tells apart two identical calls that run at once. A call that ran under an approver's
    binding carries the id of the call that asked for the approval, so the action digest is the
    fallback.
    """
    action = gate.classify(call, agent=agent)
    entries = gate.store.find_entries(LedgerQuery(action_digest=action.digest, record_type="binding", limit=1000))
    records = [json.loads(entry.record)["data"] for entry in reversed(entries)]
    same_call = [data for data in records if call.call_id is not None and data["action"].get("call_id") == call.call_id]
    for data in same_call + records:
        state = gate.store.get_binding(data["binding_id"])
        if state is not None and state.outcome is None:
            response = payload.get("tool_response")
            failed = isinstance(response, dict) and bool(response.get("is_error") or response.get("error"))
            try:
                detail = sha256_digest(response)
            except ValueError:
                detail = "no digest: the tool response is not plain JSON"
            gate.complete(state.binding, Outcome.failed(detail) if failed else Outcome.succeeded(detail))
            return
    logger.info("no open binding for %s after the tool ran; it was reversible or already recorded", call.tool)
