"""An OpenAI Agents SDK agent whose function tools pass the etlb gate, with a scripted model that runs offline.

The model asks for three tool calls at once: a transfer of 25 EUR that Alice's scope covers, a
transfer of 500 EUR above her cap of 100 EUR, and a reversible search. The script prints what the
model gets back for each call and the ledger, and exits with status 1 when the refused transfer ran
or a decision is not the expected one. No request leaves the machine: the model is the SDK's
`ScriptedModel`, and tracing is off.

Run it with `.venv/bin/python examples/openai_agents_agent.py` (needs `pip install -e '.[openai-agents]'`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from adapter_setup import create_store, print_ledger
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call

from etlb.gate import Gate
from etlb.integrations.openai_agents import DEFAULT_SERVER, guard_agent

# Amounts of the transfers that ran: the refused transfer must never appear here.
transfers: list[str] = []


@function_tool
def transfer(from_account: str, amount: str, currency: str) -> str:
    """Transfer money from an account."""
    transfers.append(amount)
    return f"sent {amount} {currency} from {from_account}"


@function_tool
def search(query: str) -> str:
    """Search the bank's documentation."""
    return f"3 pages about {query}"


def scripted_model() -> ScriptedModel:
    calls = [
        function_call("transfer", {"from_account": "DE89-1", "amount": "25", "currency": "EUR"}, call_id="call-1"),
        function_call("transfer", {"from_account": "DE89-1", "amount": "500", "currency": "EUR"}, call_id="call-2"),
        function_call("search", {"query": "transfer fees"}, call_id="call-3"),
    ]
    return ScriptedModel([calls, [assistant_message("I paid 25 EUR; the 500 EUR transfer needs a bearer.")]])


def main() -> int:
    set_tracing_disabled(True)

    with tempfile.TemporaryDirectory(prefix="etlb-openai-agents-") as folder:
        config = create_store(Path(folder), DEFAULT_SERVER)
        with Gate.from_config(config) as gate:
            agent = Agent(name="payments", model=scripted_model(), tools=[transfer, search])
            result = Runner.run_sync(guard_agent(agent, gate), "Pay the two invoices.")

            for item in result.new_items:
                if isinstance(item, ToolCallOutputItem):
                    raw = item.raw_item
                    call_id = raw["call_id"] if isinstance(raw, dict) else raw.call_id
                    print(f"call {call_id}:")
                    print("  " + str(item.output).replace("\n", "\n  "))
            print(f"model: {result.final_output}")
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
