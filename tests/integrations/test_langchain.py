"""The LangChain and LangGraph adapter against the real frameworks, driven by a scripted chat model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command

from etlb.client import Client
from etlb.integrations.langchain import DEFAULT_SERVER, EtlbMiddleware, guarded_tool_node
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


class ScriptedChatModel(FakeMessagesListChatModel):
    """LangChain's list-driven fake chat model, made usable by `create_agent`, which binds tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


class Bank:
    """The tools' side effects: each transfer body that ran appends its amount here."""

    def __init__(self) -> None:
        self.transfers: list[str] = []

    def tools(self) -> list[BaseTool]:
        @tool
        def transfer(from_account: str, amount: str, currency: str) -> str:
            """Transfer money from an account."""
            self.transfers.append(amount)
            if amount == FAILING_AMOUNT:
                raise ToolException("the bank is offline")
            return f"sent {amount} {currency} from {from_account}"

        # The framework's own error handling turns the exception into an error ToolMessage.
        transfer.handle_tool_error = True

        @tool
        def search(query: str) -> str:
            """Search the bank's documentation."""
            return f"results for {query}"

        return [transfer, search]


def parallel_calls() -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {"name": "transfer", "args": BOUND, "id": "call-bound"},
            {"name": "transfer", "args": REFUSED, "id": "call-refused"},
            {"name": "transfer", "args": RAISING, "id": "call-raising"},
            {"name": "search", "args": SEARCH, "id": "call-search"},
        ],
    )


def scripted_model(*turns: AIMessage) -> ScriptedChatModel:
    return ScriptedChatModel(responses=[*turns, AIMessage(content="done")])


def tool_messages(messages: Sequence[BaseMessage]) -> dict[str, ToolMessage]:
    return {message.tool_call_id: message for message in messages if isinstance(message, ToolMessage)}


EXPECTED_LEDGER = {
    "call-bound": Decision("binding", bearer="alice", outcome="succeeded"),
    "call-refused": Decision("refusal", code="amount_exceeds_scope"),
    "call-raising": Decision("binding", bearer="alice", outcome="failed", detail="the bank is offline"),
}


def assert_parallel_run(world: World, bank: Bank, messages: Sequence[BaseMessage]) -> None:
    results = tool_messages(messages)
    assert set(results) == {"call-bound", "call-refused", "call-raising", "call-search"}
    assert results["call-bound"].status == "success"
    assert results["call-bound"].content == "sent 25 EUR from DE89-1"
    assert results["call-refused"].status == "error"
    assert str(results["call-refused"].content).startswith("etlb refused the call to tool 'transfer'")
    assert "amount_exceeds_scope" in str(results["call-refused"].content)
    assert "Bearers who could accept liability for this action: alice." in str(results["call-refused"].content)
    assert results["call-raising"].status == "error"
    assert results["call-raising"].content == "the bank is offline"
    assert results["call-search"].content == "results for fees"

    # The refused transfer of 500 never reached the tool body.
    assert sorted(bank.transfers) == ["13", "25"]

    decisions = decisions_by_call_id(world.gate)
    outcome_details = {call_id: decision.detail for call_id, decision in decisions.items()}
    assert outcome_details["call-bound"] is not None
    assert outcome_details["call-bound"].startswith("sha256:")
    decisions["call-bound"] = Decision("binding", bearer="alice", outcome="succeeded")
    assert decisions == EXPECTED_LEDGER


@pytest.fixture
def world(tmp_path: Path) -> World:
    return payments_world(tmp_path, DEFAULT_SERVER)


def test_agent_parallel_calls_sync(world: World) -> None:
    bank = Bank()
    agent = create_agent(scripted_model(parallel_calls()), tools=bank.tools(), middleware=[EtlbMiddleware(world.gate)])

    state = agent.invoke({"messages": [{"role": "user", "content": "pay the invoices"}]})

    assert_parallel_run(world, bank, state["messages"])
    assert state["messages"][-1].content == "done"


def test_agent_parallel_calls_async(world: World) -> None:
    bank = Bank()
    agent = create_agent(scripted_model(parallel_calls()), tools=bank.tools(), middleware=[EtlbMiddleware(world.gate)])

    async def run() -> dict[str, Any]:
        result: dict[str, Any] = await agent.ainvoke({"messages": [{"role": "user", "content": "pay"}]})
        return result

    state = anyio.run(run)

    assert_parallel_run(world, bank, state["messages"])


def test_tool_node_parallel_calls(world: World) -> None:
    bank = Bank()
    model = scripted_model(parallel_calls())
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", guarded_tool_node(bank.tools(), world.gate))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")

    state = graph.compile().invoke({"messages": [{"role": "user", "content": "pay the invoices"}]})

    assert_parallel_run(world, bank, state["messages"])


def test_tool_node_rejects_own_wrapper(world: World) -> None:
    with pytest.raises(ValueError, match="guarded_tool_node sets wrap_tool_call itself"):
        guarded_tool_node(Bank().tools(), world.gate, wrap_tool_call=lambda request, execute: execute(request))


def test_unhandled_error_recorded_and_raised(world: World) -> None:
    bank = Bank()
    tools = bank.tools()
    tools[0].handle_tool_error = False
    call = AIMessage(content="", tool_calls=[{"name": "transfer", "args": RAISING, "id": "call-raising"}])
    agent = create_agent(scripted_model(call), tools=tools, middleware=[EtlbMiddleware(world.gate)])

    with pytest.raises(ToolException, match="the bank is offline"):
        agent.invoke({"messages": [{"role": "user", "content": "pay"}]})

    assert bank.transfers == ["13"]
    assert decisions_by_call_id(world.gate) == {
        "call-raising": Decision(
            "binding", bearer="alice", outcome="failed", detail="ToolException: the bank is offline"
        )
    }


class BrokenGate:
    """A gate whose every decision fails, as a store or service failure would."""

    def bind(self, call: ToolCall, *, agent: str | None = None, redeem: bool = False) -> Binding | None:
        raise RuntimeError("store connection lost")

    def complete(self, binding: Binding, outcome: Outcome) -> None:
        raise AssertionError("no binding was made, so no outcome may be recorded")


def test_gate_failure_fails_closed() -> None:
    bank = Bank()
    call = AIMessage(content="", tool_calls=[{"name": "transfer", "args": BOUND, "id": "call-bound"}])
    agent = create_agent(scripted_model(call), tools=bank.tools(), middleware=[EtlbMiddleware(BrokenGate())])

    state = agent.invoke({"messages": [{"role": "user", "content": "pay"}]})

    result = tool_messages(state["messages"])["call-bound"]
    assert result.status == "error"
    assert "etlb could not decide the call to tool 'transfer'" in str(result.content)
    assert "RuntimeError: store connection lost" in str(result.content)
    assert bank.transfers == []


def test_approved_resume_cannot_bypass_gate(world: World) -> None:
    """A human approval given to a checkpointed, interrupted run does not stand in for a bearer."""
    bank = Bank()
    calls = AIMessage(
        content="",
        tool_calls=[
            {"name": "transfer", "args": REFUSED, "id": "call-refused"},
            {"name": "transfer", "args": REFUSED, "id": "call-edited"},
        ],
    )
    # The reviewer middleware comes first, so the gate sees the call as the reviewer left it.
    middleware = [HumanInTheLoopMiddleware(interrupt_on={"transfer": True}), EtlbMiddleware(world.gate)]
    agent = create_agent(scripted_model(calls), tools=bank.tools(), middleware=middleware, checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "thread-1"}}

    paused = agent.invoke({"messages": [{"role": "user", "content": "pay"}]}, config)
    assert "__interrupt__" in paused
    assert bank.transfers == []
    assert decisions_by_call_id(world.gate) == {}

    edited = {"name": "transfer", "args": {**REFUSED, "amount": "40"}}
    decisions = [{"type": "approve"}, {"type": "edit", "edited_action": edited}]
    state = agent.invoke(Command(resume={"decisions": decisions}), config)

    results = tool_messages(state["messages"])
    assert results["call-refused"].status == "error"
    assert "amount_exceeds_scope" in str(results["call-refused"].content)
    assert results["call-edited"].status == "success"
    assert bank.transfers == ["40"]
    ledger = decisions_by_call_id(world.gate)
    assert ledger["call-refused"] == Decision("refusal", code="amount_exceeds_scope")
    assert ledger["call-edited"].type == "binding"
    assert ledger["call-edited"].bearer == "alice"
    assert ledger["call-edited"].outcome == "succeeded"


def test_agent_through_service_client(tmp_path: Path) -> None:
    world = payments_world(tmp_path, DEFAULT_SERVER)
    bank = Bank()

    with live_service(world) as service, Client(service.url, service.api_key) as client:
        agent = create_agent(scripted_model(parallel_calls()), tools=bank.tools(), middleware=[EtlbMiddleware(client)])
        state = agent.invoke({"messages": [{"role": "user", "content": "pay the invoices"}]})

    assert_parallel_run(world, bank, state["messages"])
    world.gate.close()
