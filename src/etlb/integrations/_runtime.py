"""The steps every framework adapter shares: bind one tool call, or refuse it with text for the model.

Each adapter turns its runtime's tool call into a `ToolCall`, calls `bind_or_refuse` for a verdict
before the tool body runs, and calls `record_outcome` once the body has run. The gate is either the
in-process `Gate` or the service `Client`; both satisfy `BindingGate`.

Invariants, each enforced below and tested through the adapters:
- A call runs only with a binding, redeemed in the bind itself, or as a reversible action.
- Fail closed: `Refused` and any other exception from the gate become a refusal text, so the body
  never runs when the gate cannot decide.
- An outcome is recorded only after the body ran. A failure to record it is logged, not raised,
  because the action already happened and its result must still reach the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread

from etlb.errors import EtlbError, Refused
from etlb.guarding import error_text
from etlb.mcp_proxy import format_refusal
from etlb.model import Binding, Outcome, ToolCall

__all__ = ["BindingGate", "Verdict", "abind_or_refuse", "arecord_outcome", "bind_or_refuse", "record_outcome"]

logger = logging.getLogger(__name__)


class BindingGate(Protocol):
    """The part of the gate interface that adapters use, which `Gate` and `Client` both provide."""

    def bind(self, call: ToolCall, *, agent: str | None = None, redeem: bool = False) -> Binding | None: ...

    def complete(self, binding: Binding, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's decision on one call: run it (with a binding, or none when reversible), or refuse it.

    `refusal_text` is set exactly when the call must not run; it is the text the model sees.
    """

    binding: Binding | None = None
    refusal_text: str | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal_text is None


def bind_or_refuse(gate: BindingGate, call: ToolCall, *, agent: str | None) -> Verdict:
    """Bind and redeem `call`, or return the refusal text. Never raises for an `Exception`."""
    server = call.server or "unknown"
    try:
        binding = gate.bind(call, agent=agent, redeem=True)
    except Refused as refused:
        logger.info("event=refusal tool=%s call_id=%s reason=%s", call.tool, call.call_id, refused.refusal.code.value)
        return Verdict(refusal_text=format_refusal(refused, server_name=server))
    except EtlbError as error:
        logger.error("gate failed closed on tool %s call_id=%s: %s", call.tool, call.call_id, error.message)
        return Verdict(refusal_text=_failure_text(call, error.message))
    except Exception as error:
        logger.exception("gate failed closed on tool %s call_id=%s", call.tool, call.call_id)
        return Verdict(refusal_text=_failure_text(call, error_text(error)))

    if binding is not None:
        logger.info(
            "event=binding tool=%s call_id=%s binding=%s bearer=%s",
            call.tool,
            call.call_id,
            binding.id,
            binding.bearer,
        )
    return Verdict(binding=binding)


async def abind_or_refuse(gate: BindingGate, call: ToolCall, *, agent: str | None) -> Verdict:
    """Run `bind_or_refuse` in a worker thread, because both gates block on their store or HTTP."""
    return await anyio.to_thread.run_sync(lambda: bind_or_refuse(gate, call, agent=agent))


def record_outcome(gate: BindingGate, binding: Binding | None, outcome: Outcome) -> None:
    """Record the outcome of a bound call; a reversible call (no binding) has none to record."""
    if binding is None:
        return
    try:
        gate.complete(binding, outcome)
    except Exception:
        logger.exception("outcome %s of binding %s could not be recorded", outcome.status.value, binding.id)


async def arecord_outcome(gate: BindingGate, binding: Binding | None, outcome: Outcome) -> None:
    if binding is None:
        return
    await anyio.to_thread.run_sync(lambda: record_outcome(gate, binding, outcome))


def _failure_text(call: ToolCall, detail: str) -> str:
    return (
        f"etlb could not decide the call to tool {call.tool!r}, so it was refused and nothing ran. "
        f"Retrying will not help until the gate works again. Cause: {detail}"
    )
