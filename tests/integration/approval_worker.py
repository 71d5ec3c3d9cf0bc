"""Worker processes for the approval race test; spawned processes import this module."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from etlb.errors import ApprovalClosed
from etlb.gate import Gate


def answer(config_path: str, request_id: str, jws: str, barrier: Barrier, results: Any) -> None:
    """Answer the request once every worker is ready; report the approver who won, or the error."""
    with Gate.from_config(Path(config_path)) as gate:
        barrier.wait()
        try:
            closed = gate.answer_approval(request_id, jws)
        except ApprovalClosed as error:
            results.put(("closed", str(error)))
            return
    results.put(("accepted", closed.bearer))
