"""Worker processes for the window and revocation race tests; spawned processes import this module."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from etlb.errors import Refused
from etlb.gate import Gate
from etlb.model import ToolCall


def bind_loop(config_path: str, count: int, barrier: Barrier, results: Any) -> None:
    """Bind `count` commits once every worker is ready; report (bound, refusal codes)."""
    bound = 0
    refused: dict[str, int] = {}
    with Gate.from_config(Path(config_path)) as gate:
        barrier.wait()
        for index in range(count):
            call = ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "n": index})
            try:
                gate.bind(call, agent="agent-1")
                bound += 1
            except Refused as error:
                refused[error.code.value] = refused.get(error.code.value, 0) + 1
    results.put((bound, refused))


def revoke_after(config_path: str, scope_id: str, barrier: Barrier, results: Any) -> None:
    """Revoke a scope as an administrator while the binding workers run."""
    with Gate.from_config(Path(config_path)) as gate:
        barrier.wait()
        entry = gate.revoke_scope(scope_id, administrator="race-test")
    results.put(("revoked", entry.sequence))
