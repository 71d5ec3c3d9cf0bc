"""Set up an etlb store for the adapter examples with the etlb CLI, as a person would, and print its ledger.

The store has one bearer, Alice, whose scope covers transfers of at most 100 EUR per action by the
agent `example-agent`. The rules name the adapter's server, so a transfer tool is irreversible and a
search tool is reversible.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from etlb.gate import Gate

# The examples run with the virtual environment's interpreter, so the etlb command is installed next to it.
ETLB_COMMAND = Path(sys.executable).parent / "etlb"

CONFIG_TEMPLATE = """
[gate]
store = "sqlite:///etlb.db"
agent = "example-agent"

[[rules]]
server = "{server}"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{{from_account}}"
amount = "{{amount}}"
unit = "{{currency}}"

[[rules]]
server = "{server}"
tool = "search"
kind = "docs.search"
consequence = "reversible"
"""


class SetupError(Exception):
    """An etlb command of the setup failed; the message names the command and its output."""


def create_store(root: Path, server: str) -> Path:
    """Create the configuration, store, bearer and scope in `root`; return the configuration's path."""
    config = root / "etlb.toml"
    config.write_text(CONFIG_TEMPLATE.format(server=server), encoding="utf-8")
    key = root / "alice.key"

    _etlb("--config", str(config), "init")
    _etlb("keygen", "--out", str(key))
    _etlb(
        "--config",
        str(config),
        "bearer",
        "add",
        "alice",
        "--name",
        "Alice Example",
        "--key",
        str(root / "alice.pub.jwk"),
    )
    _etlb(
        "--config",
        str(config),
        "scope",
        "declare",
        "--bearer",
        "alice",
        "--key",
        str(key),
        "--kind",
        "payments.transfer",
        "--resource",
        "account:*",
        "--agent",
        "example-agent",
        "--max-amount",
        "100",
        "--unit",
        "EUR",
        "--valid-for",
        "1h",
        "--terms",
        "I accept liability for transfers of up to 100 EUR by example-agent.",
        "--yes",
    )
    return config


def print_ledger(gate: Gate) -> list[dict[str, object]]:
    """Print one line per binding, refusal and outcome record, and return those records."""
    records = [json.loads(entry.record) for entry in gate.store.ledger_entries()]
    decisions = [record for record in records if record["type"] in ("binding", "refusal", "outcome")]
    print("ledger:")
    for record in decisions:
        data = record["data"]
        if record["type"] == "binding":
            print(f"  binding  call {data['action']['call_id']}: bearer {data['bearer']}, scope {data['scope_id']}")
        elif record["type"] == "refusal":
            print(f"  refusal  call {data['action']['call_id']}: {data['code']}")
        else:
            print(f"  outcome  binding {data['binding_id']}: {data['status']}")
    return decisions


def _etlb(*arguments: str) -> None:
    completed = subprocess.run([str(ETLB_COMMAND), *arguments], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        message = f"etlb {' '.join(arguments[:4])} … failed with status {completed.returncode}: {completed.stderr}"
        raise SetupError(message)
