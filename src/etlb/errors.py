"""Exceptions raised by etlb.

    EtlbError                    base of every etlb error; str() is one line, `hint` says what to do
    ├── ConfigError              etlb.toml or an option is invalid
    ├── KeyFileError             a key file is missing, unreadable or of the wrong type
    ├── SignatureError           a JWS does not verify, or its payload is malformed
    ├── DeclarationError         the gate rejects a scope, a revocation or a bearer change
    ├── NotFoundError            a bearer, scope or binding id is unknown
    ├── ClassificationError      a tool call cannot be turned into an action
    ├── StoreError               the store failed
    │   └── StoreUnavailable     the store cannot be opened or read at all
    ├── LedgerIntegrityError     `ledger verify` found a record that does not match its hashes
    ├── BindingConsumed          a binding was used twice, or for another action
    ├── ApprovalClosed           an approval answer came after the request was answered or expired
    ├── UpstreamError            the MCP proxy's upstream server cannot be started
    └── Refused                  no bearer accepted liability; `refusal` carries the reasons as data
        └── ApprovalPending      not yet: an approval request waits for an answer, nothing ran

Errors from third-party packages (sqlite3, joserfc, cryptography, mcp) are translated into these at
the module that calls the package, and chained with `from`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etlb.model import ReasonCode

if TYPE_CHECKING:
    from datetime import datetime

    from etlb.model import Refusal

__all__ = [
    "ApprovalClosed",
    "ApprovalPending",
    "BindingConsumed",
    "ClassificationError",
    "ConfigError",
    "DeclarationError",
    "EtlbError",
    "KeyFileError",
    "LedgerIntegrityError",
    "NotFoundError",
    "Refused",
    "SignatureError",
    "StoreError",
    "StoreUnavailable",
    "UpstreamError",
]


class EtlbError(Exception):
    """Base of every etlb error. `hint` is the next step for the person reading the message."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """Return the message followed by the hint, for the command line."""
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(EtlbError):
    pass


class KeyFileError(EtlbError):
    pass


class SignatureError(EtlbError):
    pass


class DeclarationError(EtlbError):
    pass


class NotFoundError(EtlbError):
    pass


class ClassificationError(EtlbError):
    pass


class StoreError(EtlbError):
    pass


class StoreUnavailable(StoreError):
    pass


class LedgerIntegrityError(EtlbError):
    """Raised by ledger verification. `sequence` is the first record that failed, if one did."""

    def __init__(self, message: str, *, sequence: int | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.sequence = sequence


class BindingConsumed(EtlbError):
    """A binding authorises one execution of one action digest; this is raised on any other use."""

    code = ReasonCode.BINDING_CONSUMED


class ApprovalClosed(EtlbError):
    """An answer arrived for an approval request that was already answered or has expired."""


class UpstreamError(EtlbError):
    """The upstream MCP server could not be started or did not complete the MCP handshake."""


class Refused(EtlbError):
    """No bearer accepted liability for the action. The refusal is already in the ledger when recorded."""

    def __init__(self, refusal: Refusal, *, recorded: bool = True) -> None:
        super().__init__(refusal.message, hint=_refusal_hint(refusal))
        self.refusal = refusal
        self.recorded = recorded

    @property
    def code(self) -> ReasonCode:
        return self.refusal.code


class ApprovalPending(Refused):
    """No scope covered the action, and an approval request now waits for an approver's answer.

    The action has not run. `request_id` names the request: resume it with `Gate.resume` once an
    approver answered, before `deadline`.
    """

    def __init__(self, refusal: Refusal, *, request_id: str, deadline: datetime, approvers: tuple[str, ...]) -> None:
        super().__init__(refusal, recorded=True)
        self.request_id = request_id
        self.deadline = deadline
        self.approvers = approvers
        self.hint = f"nothing ran; ask {' or '.join(approvers)} to answer approval request {request_id}"


def _refusal_hint(refusal: Refusal) -> str:
    if refusal.code in {ReasonCode.STORE_UNAVAILABLE, ReasonCode.INTERNAL_ERROR}:
        return "nothing ran; an operator must fix the gate's store or configuration before this action can be retried"
    if refusal.code is ReasonCode.CLASSIFICATION_FAILED:
        return "nothing ran; the call does not fit the operator's rule for this tool: fix the call's arguments"

    # One scope must cover every part of a compound action, so the suggestion names all of them.
    action = refusal.action
    kinds = dict.fromkeys(part.kind for part in action.requirements)
    resources = dict.fromkeys(resource for part in action.requirements for resource in part.resources)
    options = " ".join(f"--kind '{kind}'" for kind in kinds) + " " + " ".join(f"--resource '{r}'" for r in resources)
    return f"ask a bearer to sign a scope that covers it: etlb scope declare {options} --agent '{action.agent}' …"
