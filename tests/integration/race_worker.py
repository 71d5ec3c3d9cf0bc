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
    from etlb.store.common import RelationalStore

    original = RelationalStore._append

    def append_then_crash(self: RelationalStore, connection: Any, record_type: Any, time: Any, data: Any) -> Any:
        entry = original(self, connection, record_type, time, data)
        if record_type.value == "binding":
            os._exit(17)
        return entry

    # Both backends append through the shared `RelationalStore._append`.
    RelationalStore._append = append_then_crash  # type: ignore[method-assign]
    with Gate.from_config(Path(config_path)) as gate:
        gate.bind(
            ToolCall(
                tool="transfer",
                server="bank",
                arguments={"from_account": "DE89-0001", "amount": "1", "currency": "EUR"},
            ),
            agent="agent-1",
        )


def crash_mid_batch(config_path: str, batch: int, crash_after: int) -> None:
    """Bind `batch` transfers in one batch, and kill the process once `crash_after` bindings are written."""
    from etlb.store.common import RelationalStore

    original = RelationalStore._append
    written: list[int] = []

    def append_then_crash(self: RelationalStore, connection: Any, record_type: Any, time: Any, data: Any) -> Any:
        entry = original(self, connection, record_type, time, data)
        if record_type.value == "binding":
            written.append(entry.sequence)
            if len(written) == crash_after:
                os._exit(17)
        return entry

    RelationalStore._append = append_then_crash  # type: ignore[method-assign]
    calls = [
        ToolCall(
            tool="transfer",
            server="bank",
            arguments={"from_account": "DE89-0001", "amount": "1", "currency": "EUR", "reference": str(index)},
        )
        for index in range(batch)
    ]
    with Gate.from_config(Path(config_path)) as gate:
        # One `decide_many` in the store: every binding of the batch is in one transaction.
        gate.bind_many([(call, "agent-1") for call in calls])
