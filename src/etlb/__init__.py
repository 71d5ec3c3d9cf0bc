"""etlb: Execution-Time Liability Binding.

No irreversible action of an AI agent runs unless exactly one named human has declared, with their
own signature, that they accept liability for a scope covering it. The names below are the public
Python API; everything else may change between releases.
"""

from etlb.errors import BindingConsumed, EtlbError, Refused, StoreUnavailable
from etlb.gate import Gate
from etlb.model import Action, Amount, Binding, Outcome, OutcomeStatus, ReasonCode, Refusal, ScopeReason, ToolCall

__all__ = [
    "Action",
    "Amount",
    "Binding",
    "BindingConsumed",
    "EtlbError",
    "Gate",
    "Outcome",
    "OutcomeStatus",
    "ReasonCode",
    "Refusal",
    "Refused",
    "ScopeReason",
    "StoreUnavailable",
    "ToolCall",
]
