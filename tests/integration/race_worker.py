"""Worker processes for the race tests. Spawned processes import this module, so it stays small."""

from __future__ import annotations

import os
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from etlb.errors import Refused
from etlb.gate import Gate
from etlb.model import ToolCall


def bind_many(config_path: str, count: int, barrier: Barrier, results: Any, arguments: dict[str, Any]) -> None:
    """Bind the same kind of call `count` times once every worker is ready; report codes per outcome."""
    bound = 0
    refused: dict[str, int] = {}
    with Gate.from_config(Path(config_path)) as gate:
        barrier.wait()
        for index in range(count):
            call = ToolCall(
                tool="transfer", server="bank", arguments={**arguments, "reference": f"{os.getpid()}-{index}"}
            )
            try:
                gate.bind(call, agent="agent-1")
                bound += 1
            except Refused as error:
                refused[error.code.value] = refused.get(error.code.value, 0) + 1
    results.put((bound, refused))


def crash_after_ledger_insert(config_path: str) -> None:
    """Bind once, but kill the process after the binding row is written and before the commit."""
    from etlb.store import sqlite

    original = sqlite.SQLiteStore._append

    def append_then_crash(self: sqlite.SQLiteStore, connection: Any, record_type: Any, time: Any, data: Any) -> Any:
        entry = original(self, connection, record_type, time, data)
        if record_type.value == "binding":
            os._exit(17)
        return entry

    sqlite.SQLiteStore._append = append_then_crash  # type: ignore[method-assign]
    with Gate.from_config(Path(config_path)) as gate:
        gate.bind(
            ToolCall(
                tool="transfer",
                server="bank",
                arguments={"from_account": "DE89-0001", "amount": "1", "currency": "EUR"},
            ),
            agent="agent-1",
        )
