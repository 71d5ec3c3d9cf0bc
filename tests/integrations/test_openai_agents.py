"""The OpenAI Agents SDK adapter against the real SDK, driven by the SDK's own scripted model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from agents import Agent, FunctionTool, Runner, RunResult, WebSearchTool, function_tool, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.run_state import RunState
from agents.testing import ScriptedModel, assistant_message, function_call

from etlb.client import Client
from etlb.integrations.openai_agents import DEFAULT_SERVER, guard_agent, guard_function_tool, guard_tools
from etlb.model import Binding, Outcome, ToolCall
from tests.conftest import World
from tests.integrations.adapters import (
    BOUND,
    FAILING_AMOUNT,
    RAISING,
    REFUSED,
    SEARCH,
    Decision,
    decisions_by_call_id,
    live_service,
    payments_world,
)

DEFAULT_ERROR_TEXT = "An error occurred while running the tool. Please try again."


@pytest.fixture(autouse=True)
def offline_sdk() -> None:
    """Keep the SDK off the network: the scripted model sends nothing, and traces are not exported."""
    set_tracing_disabled(True)


class Bank:
    """The tools' side effects: each transfer body that ran appends its amount here."""

    def __init__(self, *, needs_approval: bool = False) -> None:
        self.transfers: list[str] = []
        self.needs_approval = needs_approval

    def tools(self) -> list[FunctionTool]:
        @function_tool(needs_approval=self.needs_approval)
        def transfer(from_account: str, amount: str, currency: str) -> str:
            """Transfer money from an account."""
            self.transfers.append(amount)
            if amount == FAILING_AMOUNT:
                raise RuntimeError("the bank is offline")
            return f"sent {amount} {currency} from {from_account}"

        @function_tool
        def search(query: str) -> str:
            """Search the bank's documentation."""
            return f"results for {query}"

        return [transfer, search]


def parallel_calls() -> list[Any]:
    return [
        function_call("transfer", BOUND, call_id="call-bound"),
        function_call("transfer", REFUSED, call_id="call-refused"),
        function_call("transfer", RAISING, call_id="call-raising"),
        function_call("search", SEARCH, call_id="call-search"),
    ]


def agent_for(bank: Bank, gate: Any, *turns: list[Any]) -> Agent[Any]:
    model = ScriptedModel([*turns, [assistant_message("done")]])
    return guard_agent(Agent(name="payments", model=model, tools=list(bank.tools())), gate)


def tool_outputs(result: RunResult) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for item in result.new_items:
        if isinstance(item, ToolCallOutputItem):
            raw: Any = item.raw_item
            call_id = raw["call_id"] if isinstance(raw, dict) else raw.call_id
            outputs[call_id] = str(item.output)
    return outputs


def assert_parallel_run(world: World, bank: Bank, result: RunResult) -> None:
    outputs = tool_outputs(result)
    assert set(outputs) == {"call-bound", "call-refused", "call-raising", "call-search"}
    assert outputs["call-bound"] == "sent 25 EUR from DE89-1"
    assert outputs["call-refused"].startswith("etlb refused the call to tool 'transfer'")
    assert "amount_exceeds_scope" in outputs["call-refused"]
    assert "Bearers who could accept liability for this action: alice." in outputs["call-refused"]
    assert outputs["call-raising"] == DEFAULT_ERROR_TEXT
    assert outputs["call-search"] == "results for fees"
    assert result.final_output == "done"

    # The refused transfer of 500 never reached the tool body.
    assert sorted(bank.transfers) == ["13", "25"]

    decisions = decisions_by_call_id(world.gate)
    bound = decisions.pop("call-bound")
    assert bound.type == "binding"
    assert bound.bearer == "alice"
    assert bound.outcome == "succeeded"
    assert bound.detail is not None
    assert bound.detail.startswith("sha256:")
    assert decisions == {
        "call-refused": Decision("refusal", code="amount_exceeds_scope"),
        "call-raising": Decision(
            "binding",
            bearer="alice",
            outcome="failed",
            detail=f"the tool raised, and the SDK returned its default error text: {DEFAULT_ERROR_TEXT}",
        ),
    }


@pytest.fixture
def world(tmp_path: Path) -> World:
    return payments_world(tmp_path, DEFAULT_SERVER)


def test_parallel_calls_in_process(world: World) -> None:
    bank = Bank()

    result = Runner.run_sync(agent_for(bank, world.gate, parallel_calls()), "pay the invoices")

    assert_parallel_run(world, bank, result)


def test_parallel_calls_through_service(tmp_path: Path) -> None:
    world = payments_world(tmp_path, DEFAULT_SERVER)
    bank = Bank()

    with live_service(world) as service, Client(service.url, service.api_key) as client:
        result = Runner.run_sync(agent_for(bank, client, parallel_calls()), "pay the invoices")

    assert_parallel_run(world, bank, result)
    world.gate.close()


def test_raising_tool_without_error_function(world: World) -> None:
    transfers: list[str] = []

    @function_tool(failure_error_function=None)
    def transfer(from_account: str, amount: str, currency: str) -> str:
        """Transfer money from an account."""
        transfers.append(amount)
        raise RuntimeError("the bank is offline")

    model = ScriptedModel([[function_call("transfer", RAISING, call_id="call-raising")]])
    agent = Agent(name="payments", model=model, tools=[guard_function_tool(transfer, world.gate)])

    with pytest.raises(Exception, match="the bank is offline"):
        Runner.run_sync(agent, "pay")

    assert transfers == ["13"]
    assert decisions_by_call_id(world.gate) == {
        "call-raising": Decision(
            "binding", bearer="alice", outcome="failed", detail="RuntimeError: the bank is offline"
        )
    }


def test_approval_does_not_replace_bearer(world: World) -> None:
    """Approving interrupted calls, through a state saved as JSON and resumed, still needs a bearer."""
    bank = Bank(needs_approval=True)
    calls = [
        function_call("transfer", BOUND, call_id="call-bound"),
        function_call("transfer", REFUSED, call_id="call-refused"),
    ]
    agent = agent_for(bank, world.gate, calls)

    paused = Runner.run_sync(agent, "pay the invoices")
    assert sorted(item.call_id for item in paused.interruptions) == ["call-bound", "call-refused"]
    assert bank.transfers == []
    assert decisions_by_call_id(world.gate) == {}

    saved = paused.to_state().to_string()
    state = anyio.run(RunState.from_string, agent, saved)
    for item in state.get_interruptions():
        state.approve(item, always_approve=True)
    result = Runner.run_sync(agent, state)

    outputs = tool_outputs(result)
    assert outputs["call-bound"] == "sent 25 EUR from DE89-1"
    assert "amount_exceeds_scope" in outputs["call-refused"]
    assert bank.transfers == ["25"]
    ledger = decisions_by_call_id(world.gate)
    assert ledger["call-refused"] == Decision("refusal", code="amount_exceeds_scope")
    assert ledger["call-bound"].bearer == "alice"
    assert ledger["call-bound"].outcome == "succeeded"


class BrokenGate:
    """A gate whose every decision fails, as a store or service failure would."""

    def bind(self, call: ToolCall, *, agent: str | None = None, redeem: bool = False) -> Binding | None:
        raise RuntimeError("store connection lost")

    def complete(self, binding: Binding, outcome: Outcome) -> None:
        raise AssertionError("no binding was made, so no outcome may be recorded")


def test_gate_failure_fails_closed() -> None:
    bank = Bank()
    agent = agent_for(bank, BrokenGate(), [function_call("transfer", BOUND, call_id="call-bound")])

    result = Runner.run_sync(agent, "pay")

    output = tool_outputs(result)["call-bound"]
    assert "etlb could not decide the call to tool 'transfer'" in output
    assert "RuntimeError: store connection lost" in output
    assert bank.transfers == []


def test_invalid_arguments_refused(world: World) -> None:
    bank = Bank()
    agent = agent_for(bank, world.gate, [function_call("transfer", "[1, 2]", call_id="call-list")])

    result = Runner.run_sync(agent, "pay")

    assert tool_outputs(result)["call-list"] == (
        "etlb refused the call to tool 'transfer', so nothing ran: "
        "arguments of tool 'transfer' are a JSON list; expected a JSON object"
    )
    assert bank.transfers == []


def test_guard_tools_rejects_hosted_tool(world: World) -> None:
    with pytest.raises(TypeError, match="is a WebSearchTool, which etlb cannot guard"):
        guard_tools([WebSearchTool()], world.gate)
