"""The storage interface every backend implements.

Contract for every backend:
- Each method is one transaction: it commits completely, or raises and leaves no trace.
- `decide_many` runs each request's judge and writes its result under a lock that serialises every
  reservation on the store. So N concurrent requests against a scope with k units left produce
  exactly min(N, k) bindings, across threads, processes and (with PostgreSQL) hosts.
- The requests of one `decide_many` share one transaction, one commit and one checkpoint, and each is
  judged against the usage that the requests before it left. A judge that raises refuses only its
  own request, with `internal_error`. Any other failure raises and commits none of the batch.
  `decide` is a batch of one.
- Ledger sequence numbers are gapless from 0 and each record's chain hash commits to all before it.
- Backend errors are raised as `StoreError` (or `StoreUnavailable` when the store cannot be reached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from etlb.approval.model import ApprovalPlan, ApprovalRequest
from etlb.ledger.receipt import ReceiptMaterial
from etlb.ledger.records import LedgerEntry
from etlb.model import Action, Bearer, BearerStatus, Binding, Outcome, Refusal, Scope, ScopeUsage
from etlb.resolve import Resolution

__all__ = [
    "BindingState",
    "DecideRequest",
    "Decision",
    "Judge",
    "LedgerQuery",
    "ReceiptMaterial",
    "ScopeState",
    "Store",
]


@dataclass(frozen=True, slots=True)
class ScopeState:
    """A stored scope with its bearer (None when unregistered), revocation and usage.

    `usage` counts the bindings of the scope and of every scope delegated from it. `ancestors` holds
    the state of each scope a delegated scope descends from, parent first.
    """

    scope: Scope
    bearer: Bearer | None
    revoked: bool
    usage: ScopeUsage
    ancestors: tuple[ScopeState, ...] = ()


@dataclass(frozen=True, slots=True)
class BindingState:
    binding: Binding
    redeemed: bool
    outcome: Outcome | None


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Filters for `find_entries`; a None field does not filter. Times are compared as recorded, in UTC."""

    start: int = 0
    limit: int = 50
    bearer: str | None = None
    scope_id: str | None = None
    agent: str | None = None
    kind: str | None = None
    record_type: str | None = None
    action_digest: str | None = None
    binding_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


Judge = Callable[[Sequence[ScopeState]], Resolution]
# What a decision ends in: a binding, a refusal, or an approval request still waiting for an answer.
Decision = Binding | Refusal | ApprovalRequest


@dataclass(frozen=True, slots=True)
class DecideRequest:
    """One action to decide in `Store.decide_many`: its judge, whether to redeem its binding at once,
    and the approval plan to follow when no scope covers it."""

    action: Action
    judge: Judge
    redeem: bool = False
    # Where no scope covers the action: open an approval request with this plan instead of refusing.
    # A plan without approvers refuses with `no_approvers`.
    approval: ApprovalPlan | None = None


class Store(Protocol):
    def close(self) -> None: ...

    def register_bearer(self, bearer: Bearer, *, time: datetime, actor: str) -> LedgerEntry: ...

    def set_bearer_status(self, bearer_id: str, status: BearerStatus, *, time: datetime, actor: str) -> LedgerEntry: ...

    def get_bearer(self, bearer_id: str) -> Bearer | None: ...

    def list_bearers(self) -> list[Bearer]: ...

    def register_agent(self, agent_id: str, key_hash: str, *, time: datetime, actor: str) -> LedgerEntry: ...

    def agent_for_key(self, key_hash: str) -> str | None: ...

    def add_scope(self, scope: Scope, *, time: datetime) -> LedgerEntry: ...

    def revoke_scope(self, scope_id: str, *, time: datetime, revocation: dict[str, Any]) -> LedgerEntry: ...

    def get_scope(self, scope_id: str) -> ScopeState | None: ...

    def list_scopes(self, *, bearer: str | None = None) -> list[ScopeState]: ...

    def candidates(self, action: Action, *, time: datetime) -> list[ScopeState]: ...

    def decide(
        self,
        action: Action,
        *,
        time: datetime,
        judge: Judge,
        redeem: bool = False,
        approval: ApprovalPlan | None = None,
    ) -> Decision: ...

    def decide_many(self, requests: Sequence[DecideRequest], *, time: datetime) -> list[Decision]: ...

    def get_approval(self, request_id: str) -> ApprovalRequest | None: ...

    def list_approvals(self, *, pending: bool = False) -> list[ApprovalRequest]: ...

    def accept_approval(
        self, request_id: str, scope: Scope, *, time: datetime, judge: Judge, redeem: bool = False
    ) -> ApprovalRequest: ...

    def decline_approval(
        self, request_id: str, bearer: str, jws: str, reason: str, *, time: datetime
    ) -> ApprovalRequest: ...

    def approved_binding(self, action_digest: str) -> Binding | None: ...

    def expire_approvals(self, *, time: datetime, request_id: str | None = None) -> list[ApprovalRequest]: ...

    def append_refusal(self, refusal: Refusal) -> LedgerEntry: ...

    def redeem(self, binding_id: str, action_digest: str) -> None: ...

    def complete(self, binding_id: str, outcome: Outcome, *, time: datetime) -> LedgerEntry: ...

    def get_binding(self, binding_id: str) -> BindingState | None: ...

    def ledger_size(self) -> int: ...

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]: ...

    def usage_table(self) -> dict[str, ScopeUsage]: ...

    def tree_head(self) -> tuple[int, bytes]: ...

    def root_at(self, size: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    def entry(self, sequence: int) -> LedgerEntry | None: ...

    def latest_checkpoint(self) -> str | None: ...

    def checkpoints(self) -> Iterator[tuple[int, str]]: ...

    def find_entries(self, query: LedgerQuery) -> list[LedgerEntry]: ...

    def receipt_material(self, binding_id: str) -> ReceiptMaterial: ...
