"""`etlb mcp-proxy`: an MCP server on stdio that gates every tool call of one upstream server.

The proxy starts the upstream MCP server as a subprocess, talks to it as an MCP client over its stdio,
and serves the same tools, resources and prompts to its own client on stdin and stdout. Listings and
reads are forwarded unchanged. Every `tools/call` goes through `Gate.bind` first:

- a reversible action is forwarded without a binding;
- an irreversible action is forwarded only after a binding to one bearer is in the ledger, and its
  outcome (`succeeded` with a digest of the result content, `failed` or `unknown`) is recorded after;
- anything else, including an error inside the gate, returns a tool error result (`isError: true`)
  that names the refusal code, each scope's reason, the bearers who could accept liability and the
  command that requests a scope. A refused call never reaches the upstream server.

Stdout carries the protocol, so this module logs through `logging` only, which the command line
directs to stderr. The upstream server's stderr is passed through to the proxy's stderr.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from contextlib import AsyncExitStack
from pathlib import PurePath
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import mcp_types as types
from mcp.client import Client, IncomingMessage
from mcp.client.stdio import StdioServerParameters
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from etlb.canonical import sha256_digest
from etlb.errors import BindingConsumed, EtlbError, Refused, StoreError, UpstreamError
from etlb.gate import Gate
from etlb.model import Binding, Outcome, OutcomeStatus, ReasonCode, ToolCall
from etlb.resolve import describe_action

__all__ = ["default_server_name", "definition_digest", "format_refusal", "run_proxy"]

logger = logging.getLogger(__name__)

_SERVER_NAME_PREFIX = "mcp-server-"

# Upper bound on `tools/list` pages read to refresh annotations, so that an upstream server whose
# cursors never end cannot stall a tool call. The MCP SDK uses the same bound for its own re-listing.
_MAX_TOOL_PAGES = 100

# JSON-RPC codes with which the MCP SDK reports that no response arrived (mcp_types.jsonrpc). After
# either of them the upstream server may or may not have run the tool.
_NO_RESPONSE_CODES = frozenset({types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT})


def default_server_name(command: list[str]) -> str:
    """Derive the server name used in rules from the upstream command: `mcp-server-git` gives `git`."""
    if not command or not command[0]:
        message = "no upstream server command given"
        raise ValueError(message)

    name = PurePath(command[0]).name
    if name.lower().endswith(".exe"):
        name = name[: -len(".exe")]
    if name.startswith(_SERVER_NAME_PREFIX) and len(name) > len(_SERVER_NAME_PREFIX):
        name = name[len(_SERVER_NAME_PREFIX) :]
    return name


async def run_proxy(gate: Gate, *, command: list[str], server_name: str, agent: str | None) -> None:
    """Serve MCP on stdin and stdout, forwarding to `command`, until the client closes stdin.

    `server_name` is the server name the gate's rules and trust settings match. `agent` is the agent id
    recorded in every action; with None, the gate uses the agent from its configuration.

    Raises `UpstreamError` when the upstream server cannot be started or fails the MCP handshake.
    """
    if not command:
        message = "no upstream server command given"
        raise UpstreamError(message, hint="put the server command after --, e.g. -- mcp-server-git --repository .")

    # The proxy runs in place of the upstream server, so the upstream server gets the proxy's whole
    # environment (API tokens, for example) rather than the MCP SDK's default short allow-list.
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    proxy = _GatedProxy(gate, server_name=server_name, agent=agent)

    async with AsyncExitStack() as stack:
        upstream = Client(parameters, cache=None, message_handler=proxy.on_upstream_message)
        try:
            await stack.enter_async_context(upstream)
        except Exception as error:
            # The SDK's task groups may wrap the cause (a failed spawn, or the connection closing
            # during the handshake) in exception groups.
            cause = _find_exception(error, (OSError, MCPError))
            if cause is None:
                raise
            message = f"cannot start upstream MCP server {command[0]!r}: {cause}"
            hint = "check that the command after -- starts an MCP server on stdio; its stderr is above"
            raise UpstreamError(message, hint=hint) from error

        proxy.attach(upstream)
        server = proxy.build_server()
        logger.info("proxy for server %r started; upstream command: %s", server_name, command)
        await proxy.log_definitions()
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    logger.info("proxy for server %r stopped", server_name)


class _GatedProxy:
    """Request handlers of the proxy: forwarding for listings and reads, the gate for tool calls."""

    def __init__(self, gate: Gate, *, server_name: str, agent: str | None) -> None:
        self._gate = gate
        self._server_name = server_name
        self._agent = agent
        self._upstream: Client | None = None

        # Annotations per upstream tool name as camelCase JSON, or None for a tool listed without any.
        # A tool missing from this map is listed again before its call is classified.
        self._annotations: dict[str, dict[str, Any] | None] = {}
        # Digest of each tool's definition as listed, so that a scope can pin the definition it covers.
        self._definitions: dict[str, str] = {}
        self._refresh_lock = anyio.Lock()

    def attach(self, upstream: Client) -> None:
        self._upstream = upstream

    @property
    def upstream(self) -> Client:
        if self._upstream is None:
            message = "the proxy has no upstream connection yet"
            raise RuntimeError(message)
        return self._upstream

    def build_server(self) -> Server[Any]:
        """Build the MCP server the client connects to, with the upstream server's name, version and instructions."""
        info = self.upstream.server_info
        name = info.name if info is not None else self._server_name
        version = info.version if info is not None else ""
        server: Server[Any] = Server(
            name,
            version=version,
            title=f"{name} (gated by etlb)",
            instructions=self.upstream.instructions,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )

        # Resources and prompts are served only when the upstream server has them, so the proxy
        # advertises the same capabilities.
        capabilities = self.upstream.server_capabilities
        if capabilities.resources is not None:
            server.add_request_handler("resources/list", types.PaginatedRequestParams, self.list_resources)
            server.add_request_handler(
                "resources/templates/list", types.PaginatedRequestParams, self.list_resource_templates
            )
            server.add_request_handler("resources/read", types.ReadResourceRequestParams, self.read_resource)
        if capabilities.prompts is not None:
            server.add_request_handler("prompts/list", types.PaginatedRequestParams, self.list_prompts)
            server.add_request_handler("prompts/get", types.GetPromptRequestParams, self.get_prompt)
        return server

    async def on_upstream_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            # Annotations may have changed with the list, so each tool is listed again at its next call.
            self._annotations.clear()
        elif isinstance(message, Exception):
            logger.warning("upstream server %r sent a message the proxy cannot read: %s", self._server_name, message)

    # Forwarded requests. An `MCPError` from the upstream server propagates, so the client receives
    # the upstream server's error code and message.

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        result = await self.upstream.list_tools(cursor=_cursor(params), cache_mode="bypass")
        self._remember_annotations(result.tools)
        return result

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await self.upstream.list_resources(cursor=_cursor(params), cache_mode="bypass")

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await self.upstream.list_resource_templates(cursor=_cursor(params), cache_mode="bypass")

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await self.upstream.read_resource(params.uri, cache_mode="bypass")

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await self.upstream.list_prompts(cursor=_cursor(params), cache_mode="bypass")

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        return await self.upstream.get_prompt(params.name, params.arguments)

    # Tool calls.

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call = ToolCall(
            tool=params.name,
            arguments=dict(params.arguments or {}),
            server=self._server_name,
            call_id=str(ctx.request_id) if ctx.request_id is not None else None,
        )

        # `bind` commits the binding, already marked used for exactly this call, before it returns, so
        # it cannot authorise a second run. The wait is shielded: a cancellation during it would drop
        # the binding without an outcome. The checkpoint below delivers a pending cancellation with the
        # binding in hand.
        try:
            annotations = await self._annotations_for(call.tool)
            call = dataclasses.replace(call, definition_digest=self._definitions.get(call.tool))
            with anyio.CancelScope(shield=True):
                binding = await anyio.to_thread.run_sync(
                    functools.partial(self._gate.bind, call, agent=self._agent, annotations=annotations, redeem=True)
                )
        except Refused as refused:
            return _refusal_result(refused, server_name=self._server_name)
        except Exception as error:
            # Fail closed: whatever went wrong in the gate, the call is not forwarded.
            logger.exception("gate failed on %s (server %r, call %s)", call.tool, self._server_name, call.call_id)
            return _gate_failure_result(call, error, server_name=self._server_name)

        if binding is None:
            return await self.upstream.call_tool(call.tool, call.arguments)

        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            await self._complete(binding, Outcome.failed("not run: the client cancelled the call"))
            raise

        return await self._forward_bound(binding, call)

    async def _forward_bound(self, binding: Binding, call: ToolCall) -> types.CallToolResult:
        try:
            result = await self.upstream.call_tool(call.tool, call.arguments)
        except anyio.get_cancelled_exc_class():
            await self._complete(binding, Outcome(OutcomeStatus.UNKNOWN, "the client cancelled the call while it ran"))
            raise
        except MCPError as error:
            if error.code in _NO_RESPONSE_CODES:
                detail = f"no response from the upstream server: {error.message}"
                await self._complete(binding, Outcome(OutcomeStatus.UNKNOWN, detail))
            else:
                await self._complete(binding, Outcome.failed(f"MCP error {error.code}: {error.message}"))
            raise
        except Exception as error:
            # The request reached the upstream server, so the tool may have run: the outcome is unknown.
            await self._complete(binding, Outcome(OutcomeStatus.UNKNOWN, f"{type(error).__name__}: {error}"))
            raise

        if result.is_error:
            await self._complete(binding, Outcome.failed(_content_text(result.content)))
        else:
            await self._complete(binding, Outcome.succeeded(_content_digest(result)))
        return result

    async def _complete(self, binding: Binding, outcome: Outcome) -> None:
        # Shielded, because an outcome that is never recorded leaves the binding without one.
        # A failure here is logged, not raised: the action has already run or not, and the client
        # must still get the result.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(functools.partial(self._gate.complete, binding, outcome))
            except Exception:
                logger.exception(
                    "cannot record outcome %s of binding %s (%s on server %r)",
                    outcome.status.value,
                    binding.id,
                    binding.action.tool,
                    self._server_name,
                )

    async def log_definitions(self) -> None:
        """Log each upstream tool's definition digest, which a bearer can pin with `scope declare --definition`."""
        try:
            await self._refresh_annotations()
        except Exception:
            logger.exception("cannot list tools of upstream server %r", self._server_name)
            return
        for name, digest in sorted(self._definitions.items()):
            logger.info("tool %s/%s has definition %s", self._server_name, name, digest)

    async def _annotations_for(self, tool: str) -> dict[str, Any] | None:
        """Return the upstream annotations of `tool`, listing the tools again if it is not known yet.

        None means the tool is unknown or has no annotations, which the gate treats as irreversible.
        """
        if tool in self._annotations:
            return self._annotations[tool]

        async with self._refresh_lock:
            if tool not in self._annotations:
                try:
                    await self._refresh_annotations()
                except Exception:
                    logger.exception(
                        "cannot list tools of upstream server %r; %s counts as unannotated",
                        self._server_name,
                        tool,
                    )
        return self._annotations.get(tool)

    async def _refresh_annotations(self) -> None:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_TOOL_PAGES):
            page = await self.upstream.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        else:
            logger.warning(
                "upstream server %r listed more than %d pages of tools; later tools count as unannotated",
                self._server_name,
                _MAX_TOOL_PAGES,
            )

        self._annotations.clear()
        self._definitions.clear()
        self._remember_annotations(tools)

    def _remember_annotations(self, tools: list[types.Tool]) -> None:
        for tool in tools:
            annotations = tool.annotations
            self._annotations[tool.name] = (
                annotations.model_dump(by_alias=True, mode="json", exclude_none=True) if annotations else None
            )
            self._definitions[tool.name] = definition_digest(tool)


def definition_digest(tool: types.Tool) -> str:
    """Return the `sha256:` digest of a tool's definition as its server lists it (RFC 8785 canonical JSON).

    Name, description, input and output schemas and annotations all count, so any change to what the
    model and the bearer were shown gives another digest.
    """
    try:
        return sha256_digest(tool.model_dump(by_alias=True, mode="json", exclude_none=True))
    except ValueError as error:
        # A definition JSON cannot canonicalise has no stable digest, so no scope can pin it.
        return f"undigestable: {error}"


def _find_exception(error: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find_exception(inner, kinds)
            if found is not None:
                return found
        return None
    return error if isinstance(error, kinds) else None


def _cursor(params: types.PaginatedRequestParams | None) -> str | None:
    return params.cursor if params is not None else None


def _content_text(content: list[types.ContentBlock]) -> str:
    texts = [block.text for block in content if isinstance(block, types.TextContent)]
    return "\n".join(texts) if texts else "the tool returned an error without text content"


def _content_digest(result: types.CallToolResult) -> str:
    content = [block.model_dump(by_alias=True, mode="json", exclude_none=True) for block in result.content]
    try:
        return sha256_digest(content)
    except ValueError as error:
        # A result that JSON cannot canonicalise still succeeded, so the outcome detail records why it has no digest.
        return f"no digest: {error}"


def format_refusal(refused: Refused, *, server_name: str) -> str:
    """Write a refusal as text for the model: what was refused, why, who could accept it, and how to ask."""
    refusal = refused.refusal
    action = refusal.action
    lines = [
        f"etlb refused the call to tool {action.tool!r} on server {server_name!r}, so nothing ran.",
        f"Action: {describe_action(action)} ({action.consequence.value}), agent {action.agent}.",
    ]

    # The refusal message repeats each scope's detail without its code, so with reasons the list below
    # replaces it. Without reasons, the message contains the only detail there is.
    if refusal.reasons:
        lines.append(f"Reason: {refusal.code.value}. Scopes that came close:")
        lines.extend(
            f"- scope {reason.scope_id} of bearer {reason.bearer}: {reason.code.value}: {reason.detail}"
            for reason in refusal.reasons
        )
    else:
        lines.append(f"Reason: {refusal.code.value}: {refusal.message}")

    bearers = refusal.bearers_nearby
    if bearers:
        lines.append(f"Bearers who could accept liability for this action: {', '.join(bearers)}.")
    else:
        lines.append("No bearer has a scope near this action.")

    if refused.hint:
        lines.append(f"Next step: {refused.hint}")
    recorded = "recorded in the ledger" if refused.recorded else "not recorded in the ledger"
    lines.append(f"Refusal id: {refusal.id} ({recorded}).")
    return "\n".join(lines)


def _refusal_result(refused: Refused, *, server_name: str) -> types.CallToolResult:
    refusal = refused.refusal
    action = refusal.action
    details: dict[str, Any] = {
        "refusal_id": refusal.id,
        "code": refusal.code.value,
        "message": refusal.message,
        "recorded": refused.recorded,
        "action": {
            "kind": action.kind,
            "resource": action.resource,
            "consequence": action.consequence.value,
            "agent": action.agent,
            "server": action.server,
            "tool": action.tool,
            "digest": action.digest,
        },
        "reasons": [reason.to_json() for reason in refusal.reasons],
        "bearers_nearby": list(refusal.bearers_nearby),
        "hint": refused.hint,
    }
    return types.CallToolResult(
        content=[types.TextContent(text=format_refusal(refused, server_name=server_name))],
        structured_content={"etlb_refusal": details},
        is_error=True,
    )


def _gate_failure_result(call: ToolCall, error: Exception, *, server_name: str) -> types.CallToolResult:
    if isinstance(error, BindingConsumed):
        code = ReasonCode.BINDING_CONSUMED
    elif isinstance(error, StoreError):
        code = ReasonCode.STORE_UNAVAILABLE
    else:
        code = ReasonCode.INTERNAL_ERROR
    summary = error.message if isinstance(error, EtlbError) else f"{type(error).__name__}: {error}"
    text = (
        f"etlb refused the call to tool {call.tool!r} on server {server_name!r}. "
        "The call was not forwarded, so nothing ran.\n"
        f"Reason: {code.value}: the liability gate failed: {summary}\n"
        "No bearer can accept liability until the gate works again. Tell the operator, who can check "
        "it with: etlb ledger verify"
    )
    details: dict[str, Any] = {
        "refusal_id": None,
        "code": code.value,
        "message": summary,
        "recorded": False,
        "reasons": [],
        "bearers_nearby": [],
    }
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content={"etlb_refusal": details},
        is_error=True,
    )
