"""A LangChain agent whose tool calls pass the etlb gate, with a scripted model so that it runs offline.

The model asks for three tool calls at once: a transfer of 25 EUR that Alice's scope covers, a
transfer of 500 EUR above her cap of 100 EUR, and a reversible search. The script prints what the
model gets back for each call and the ledger, and exits with status 1 when the refused transfer ran
or a decision is not the expected one.

Run it with `.venv/bin/python examples/langchain_agent.py` (needs `pip install -e '.[langchain]'`).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapter_setup import create_store, print_ledger
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from etlb.gate import Gate
from etlb.integrations.langchain import DEFAULT_SERVER, EtlbMiddleware

# Amounts of the transfers that ran: the refused transfer must never appear here.
transfers: list[str] = []


@tool
def transfer(from_account: str, amount: str, currency: str) -> str:
    """Transfer money from an account."""
    transfers.append(amount)
    return f"sent {amount} {currency} from {from_account}"


@tool
def search(query: str) -> str:
    """Search the bank's documentation."""
    return f"3 pages about {query}"


class ScriptedChatModel(FakeMessagesListChatModel):
    """A chat model that returns the listed messages in order; `create_agent` binds tools to it."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def scripted_model() -> ScriptedChatModel:
    calls = AIMessage(
        content="",
        tool_calls=[
            {"name": "transfer", "args": {"from_account": "DE89-1", "amount": "25", "currency": "EUR"}, "id": "call-1"},
            {
                "name": "transfer",
                "args": {"from_account": "DE89-1", "amount": "500", "currency": "EUR"},
                "id": "call-2",
            },
            {"name": "search", "args": {"query": "transfer fees"}, "id": "call-3"},
        ],
    )
    return ScriptedChatModel(
        responses=[calls, AIMessage(content="I paid 25 EUR; the 500 EUR transfer needs a bearer.")]
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="etlb-langchain-") as folder:
        config = create_store(Path(folder), DEFAULT_SERVER)
        with Gate.from_config(config) as gate:
            # EtlbMiddleware goes last in the list, so no other middleware changes a call after it was bound.
            agent = create_agent(scripted_model(), tools=[transfer, search], middleware=[EtlbMiddleware(gate)])
            state = agent.invoke({"messages": [{"role": "user", "content": "Pay the two invoices."}]})

            for message in state["messages"]:
                if isinstance(message, ToolMessage):
                    print(f"call {message.tool_call_id} ({message.name}, {message.status}):")
                    print("  " + str(message.content).replace("\n", "\n  "))
            print(f"model: {state['messages'][-1].content}")
            records = print_ledger(gate)

    decided = {
        (record["type"], record["data"]["action"]["call_id"]) for record in records if "action" in record["data"]
    }
    if transfers != ["25"] or decided != {("binding", "call-1"), ("refusal", "call-2")}:
        print(f"example failed: transfers that ran {transfers}, decisions {sorted(decided)}")
        return 1
    print("example passed: call-1 bound to alice, call-2 refused and never ran, call-3 reversible")
    return 0


if __name__ == "__main__":
    sys.exit(main())
