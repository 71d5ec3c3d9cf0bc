"""The gate: classify a tool call, resolve a bearer, record the binding, then let the tool run.

Invariants, each enforced below and tested:
- An irreversible action is only handed back as runnable with a `Binding` that the store has
  committed; the binding names exactly one bearer and one scope.
- Fail closed: an error in classification, signature checking, resolution or storage ends in a
  `Refused` error, never in a binding. The refusal is recorded in the ledger whenever the store works.
- A scope counts only when its JWS verifies against a key registered to its bearer. The gate holds
  public keys only.
- A binding authorises one execution of one action digest; `redeem` and `complete` enforce it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar, cast

from etlb.analysis import AnalysisError
from etlb.approval.model import (
    DECLINE_TYP,
    ApprovalPlan,
    ApprovalRequest,
    ApprovalStatus,
    acceptance_payload_for,
    decline_payload_for,
    plan_for,
    turn_failure,
)
from etlb.approval.webhook import announce_request
from etlb.classify import Classifier, unclassified_action
from etlb.config import Config, load_config
from etlb.declarations import (
    REVOCATION_TYP,
    REVOCATION_TYPE,
    SCOPE_TYP,
    delegation_failure,
    scope_from_payload,
    scope_id_for,
)
from etlb.errors import (
    ApprovalPending,
    BindingConsumed,
    ClassificationError,
    DeclarationError,
    EtlbError,
    KeyFileError,
    NotFoundError,
    Refused,
    SignatureError,
    StoreError,
    StoreUnavailable,
)
from etlb.gate_key import load_gate_signer
from etlb.guarding import error_text, guard_function
from etlb.ledger.receipt import build_receipt
from etlb.ledger.records import LedgerEntry
from etlb.model import (
    Action,
    Bearer,
    BearerStatus,
    Binding,
    Consequence,
    Outcome,
    ReasonCode,
    Refusal,
    Scope,
    ToolCall,
    format_time,
)
from etlb.resolve import Candidate, Resolution, refusal_message, resolve
from etlb.signing import read_unverified, verify_jws
from etlb.store import ScopeState, Store, UnavailableStore, open_store
from etlb.store.base import DecideRequest, Decision, Judge

__all__ = ["Gate"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


API_KEY_PREFIX = "etlb_"


def api_key_hash(api_key: str) -> str:
    """SHA-256 of an API key in hex. Keys are 256 random bits, so a plain hash cannot be brute-forced."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Gate:
    """Classifies tool calls and binds irreversible ones to a bearer, or refuses them."""

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.config = config
        self.store = store
        self._classifier = Classifier(config)
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        path: str | Path | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        require_store: bool = True,
    ) -> Gate:
        """Build a gate from `etlb.toml` (default `./etlb.toml`). The store must exist: see `etlb init`.

        With `require_store=False` a store that cannot be opened does not raise here: the gate starts,
        logs the error, and refuses every irreversible action with `store_unavailable`.
        """
        config = load_config(path)
        try:
            try:
                signer = load_gate_signer(config.key_path, config.origin)
            except KeyFileError as error:
                # Without its key the gate cannot sign checkpoints, so its records would not be evidence.
                raise StoreUnavailable(error.message, hint=error.hint) from error
            store: Store = open_store(config.store_url, base_dir=config.base_dir, create=False, signer=signer)
        except StoreUnavailable as error:
            if require_store:
                raise
            logger.error("store unavailable, every irreversible action will be refused: %s", error.message)
            store = cast(Store, UnavailableStore(error))
        return cls(config, store, clock=clock)

    def close(self) -> None:
        self.store.close()

    def now(self) -> datetime:
        """Return the gate's current time, by which it judges scope validity and approval deadlines."""
        return self._clock()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Decisions

    def classify(
        self, call: ToolCall, *, agent: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> Action:
        return self._classifier.classify(call, agent=agent or self.config.agent, annotations=annotations)

    def bind(
        self,
        call: ToolCall,
        *,
        agent: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        redeem: bool = False,
        wait: bool | None = None,
    ) -> Binding | None:
        """Bind an irreversible call to a bearer, or raise `Refused`.

        Returns None when the action is reversible and may run without a binding. Without `redeem`
        the binding is not yet used: pass it to `redeem` right before the tool runs. With `redeem`,
        a caller that runs the tool at once marks it used in the same transaction, saving a commit.

        Where no scope covers the action and `[approvals]` routes its kind to approvers, an approval
        request is opened. With `wait` (default: `approvals.wait`) this call blocks until an approver
        answers or the deadline passes, and returns the approver's binding or raises `Refused`.
        Without it, it raises `ApprovalPending` at once; pass its `request_id` to `resume` later.
        """
        return self._bind(call, agent=agent, annotations=annotations, redeem=redeem, wait=wait)

    def bind_many(
        self, calls: Sequence[tuple[ToolCall, str]], *, redeem: Sequence[bool] | None = None
    ) -> list[Binding | Refused | None]:
        """Decide a batch of (call, agent id) pairs in one store transaction, for group commit.

        Returns one result per call, in order: its binding, None for a reversible action, or the
        `Refused` error for that call, returned rather than raised so that each caller gets its own.
        Each call is judged against the budget that the calls before it in the batch left.
        `redeem[i]` marks binding i used in the same transaction, as `execution` does.

        Fails closed: when the store fails, every irreversible call of the batch is refused with
        `store_unavailable`; any other error refuses them with `internal_error`.
        """
        flags = list(redeem) if redeem is not None else [False] * len(calls)
        if len(flags) != len(calls):
            message = f"bind_many got {len(calls)} calls but {len(flags)} redeem flags; pass one flag per call"
            raise ValueError(message)

        now = self._clock()
        results: list[Binding | Refused | None] = [None] * len(calls)
        pending: list[tuple[int, Action]] = []
        for index, (call, agent_id) in enumerate(calls):
            try:
                action = self._classify_for_batch(call, agent_id, now)
            except Refused as refused:
                results[index] = refused
                continue
            if action.consequence is Consequence.REVERSIBLE:
                logger.info("event=pass agent=%s action=%s kind=%s", agent_id, action.digest, action.kind)
                continue
            pending.append((index, action))
        if not pending:
            return results

        requests = [
            DecideRequest(
                action=action,
                judge=self._judge_at(action, now),
                redeem=flags[index],
                approval=self._approval_plan(action),
            )
            for index, action in pending
        ]
        try:
            decided = self.store.decide_many(requests, time=now)
            if len(decided) != len(requests):
                message = f"store decided {len(decided)} of a batch of {len(requests)} actions"
                raise RuntimeError(message)
        except StoreError as error:
            logger.error("event=refusal batch=%d reason=store_unavailable error=%s", len(pending), error)
            for index, action in pending:
                results[index] = self._refusal_error(
                    action, ReasonCode.STORE_UNAVAILABLE, str(error), now, record=False
                )
            return results
        except Exception as error:
            logger.exception("resolution of a batch of %d actions failed", len(pending))
            for index, action in pending:
                results[index] = self._refusal_error(action, ReasonCode.INTERNAL_ERROR, error_text(error), now)
            return results

        for (index, action), result in zip(pending, decided, strict=True):
            results[index] = self._batch_result(action, result, now)
        return results

    def explain(
        self, call: ToolCall, *, agent: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> tuple[Action, Resolution]:
        """Classify and resolve a call without binding or recording anything, for `etlb check`."""
        action = self.classify(call, agent=agent, annotations=annotations)
        now = self._clock()
        return action, self._judge(action, self.store.candidates(action, time=now), now)

    def redeem(
        self,
        binding: Binding,
        call: ToolCall,
        *,
        agent: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a binding used for this call, right before it runs; raises `BindingConsumed` on reuse.

        The call is classified again, so a binding made for one action cannot run another.
        """
        action = self.classify(call, agent=agent or binding.action.agent, annotations=annotations)
        self.store.redeem(binding.id, action.digest)

    def complete(self, binding: Binding, outcome: Outcome) -> None:
        """Record what happened after a bound action ran. An outcome is recorded once per binding."""
        self.store.complete(binding.id, outcome, time=self._clock())
        logger.info(
            "event=outcome binding=%s action=%s status=%s",
            binding.id,
            binding.action.digest,
            outcome.status.value,
        )

    @contextmanager
    def execution(
        self, call: ToolCall, *, agent: str | None = None, annotations: Mapping[str, Any] | None = None
    ) -> Iterator[Binding | None]:
        """Bind and redeem a call, run the body, and record its outcome.

        Yields None for a reversible action. Raises `Refused` before the body runs when no bearer
        covers the action. An exception from the body is recorded as a `failed` outcome and re-raised.
        """
        binding = self._bind(call, agent=agent, annotations=annotations, redeem=True)
        if binding is None:
            yield None
            return

        try:
            yield binding
        except BaseException as error:
            self._record_outcome(binding, Outcome.failed(error_text(error)))
            raise
        self._record_outcome(binding, Outcome.succeeded())

    def guard(
        self, *, tool: str | None = None, server: str | None = None, agent: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function so that each call passes the gate first.

        The function's bound arguments (defaults applied) are the tool call's arguments; the tool
        name defaults to the function's name.
        """

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            def bind(call: ToolCall) -> Binding | None:
                return self._bind(call, agent=agent, annotations=None, redeem=True)

            return guard_function(function, tool=tool, server=server, bind=bind, record_outcome=self._record_outcome)

        return decorate

    # Approvals

    def approval(self, request_id: str) -> ApprovalRequest:
        """Return an approval request, closing it first as timed out if its deadline has passed."""
        self.store.expire_approvals(time=self._clock(), request_id=request_id)
        request = self.store.get_approval(request_id)
        if request is None:
            message = f"approval request {request_id} not found"
            raise NotFoundError(message, hint="list pending requests with: etlb approve --list")
        return request

    def pending_approvals(self) -> list[ApprovalRequest]:
        """Refuse every request past its deadline, then return those still waiting, oldest first."""
        self.store.expire_approvals(time=self._clock())
        return self.store.list_approvals(pending=True)

    def approval_payload(
        self, request_id: str, bearer: str, *, decline: bool = False, reason: str = ""
    ) -> dict[str, Any]:
        """Return what `bearer` signs to accept (a one-execution scope) or decline a pending request."""
        request = self.approval(request_id)
        failure = turn_failure(request, bearer, self._clock()) if request.pending else f"request is {request.status}"
        if failure is not None:
            raise DeclarationError(f"{bearer} cannot answer approval request {request_id}: {failure}")
        if decline:
            return decline_payload_for(request, bearer, reason=reason, issued_at=self._clock())
        return acceptance_payload_for(request, bearer, issued_at=self._clock())

    def answer_approval(self, request_id: str, jws: str) -> ApprovalRequest:
        """Record an approver's signed answer: a one-execution scope accepts, a decline statement declines.

        The first valid acceptance binds the action to its signer; the binding is not yet redeemed,
        so the waiting gate or `resume` runs the action once. Raises `SignatureError` or
        `DeclarationError` for an answer that is not a valid one for this request, which leaves the
        request pending, and `ApprovalClosed` when it was already answered or has expired.
        """
        header, payload = read_unverified(jws)
        bearer_id = payload.get("bearer")
        bearer = self.store.get_bearer(bearer_id) if isinstance(bearer_id, str) else None
        if bearer is None or bearer.status is not BearerStatus.ACTIVE:
            message = f"the answer is signed in the name of {bearer_id!r}, who is not an active registered bearer"
            raise SignatureError(message, hint="register the approver first: etlb bearer add")
        key = bearer.key(str(header.get("kid", "")))
        if key is None:
            message = f"the answer is signed with key {header.get('kid')!r}, which is not registered to {bearer.id}"
            raise SignatureError(message, hint="sign with the key file registered for this bearer")

        request = self.approval(request_id)
        now = self._clock()
        if header.get("typ") == DECLINE_TYP:
            statement = verify_jws(jws, key.public_jwk, typ=DECLINE_TYP)
            self._check_answer(request, bearer.id, statement.get("request_id"), statement.get("action_digest"), now)
            closed = self.store.decline_approval(request_id, bearer.id, jws, str(statement.get("reason", "")), time=now)
        else:
            scope = scope_from_payload(verify_jws(jws, key.public_jwk, typ=SCOPE_TYP), jws=jws, key_id=key.key_id)
            self._check_answer(request, bearer.id, scope.approval, scope.action_digest, now)
            closed = self.store.accept_approval(
                request_id, scope, time=now, judge=self._judge_only(scope.id, request.action, now)
            )
        logger.info(
            "event=approval_answered request=%s bearer=%s status=%s", request_id, bearer.id, closed.status.value
        )
        return closed

    def resume(
        self, request_id: str, call: ToolCall | None = None, *, wait: bool = False, redeem: bool = True
    ) -> Binding:
        """Return the binding an approver's acceptance made for a request, redeemed for one run.

        With `call`, the call is classified again and must be the requested action. Raises
        `ApprovalPending` while no answer has come (or waits for one with `wait`), `Refused` when
        the request was declined, timed out or failed, and `BindingConsumed` if it already ran.
        """
        request = self.approval(request_id)
        if call is not None:
            action = self.classify(call, agent=request.action.agent)
            if action.digest != request.action.digest:
                message = f"approval request {request_id} is for action {request.action.digest}, not {action.digest}"
                raise DeclarationError(message)
        if request.pending and not wait:
            raise _pending(request)
        if request.pending:
            return self._await_approval(request, redeem=redeem)
        return self._approval_result(request, redeem=redeem)

    def _approved_binding(self, action: Action, *, redeem: bool) -> Binding | None:
        """Return the binding an approver made for this exact action, if one is waiting to run.

        An agent whose call waits for approval retries the same call, and the retry runs once under
        the approver's binding. Two retries racing each other redeem it once, and the other goes on
        to a decision of its own.
        """
        try:
            binding = self.store.approved_binding(action.digest)
            if binding is None or binding.action.agent != action.agent:
                return None
            if redeem:
                self.store.redeem(binding.id, action.digest)
        except BindingConsumed:
            return None
        except StoreError as error:
            logger.error("event=refusal action=%s reason=store_unavailable error=%s", action.digest, error)
            self._refuse(action, ReasonCode.STORE_UNAVAILABLE, str(error), self._clock(), record=False)
        logger.info(
            "event=binding action=%s bearer=%s binding=%s approved=true", action.digest, binding.bearer, binding.id
        )
        return binding

    def _approval_plan(self, action: Action) -> ApprovalPlan | None:
        section = self.config.approvals
        if not section.enabled:
            return None
        # Approvals are on, so an action no route names is refused with `no_approvers`.
        return plan_for(section, action) or ApprovalPlan(approvers=(), order="pool", deadline_seconds=0)

    def _check_answer(
        self, request: ApprovalRequest, bearer: str, request_id: object, digest: object, now: datetime
    ) -> None:
        if request_id != request.id or digest != request.action.digest:
            message = (
                f"the answer is signed for request {request_id!r} and action {digest!r}, "
                f"not request {request.id} and action {request.action.digest}"
            )
            raise SignatureError(message, hint="sign the answer for this request: etlb approve REQUEST_ID")
        failure = turn_failure(request, bearer, now) if request.pending else None
        if failure is not None:
            raise DeclarationError(failure)

    def _judge_only(self, scope_id: str, action: Action, now: datetime) -> Judge:
        """Judge with the approver's own scope alone, so the acceptance binds the approver or nobody."""

        def judge(states: Sequence[ScopeState]) -> Resolution:
            return self._judge(action, [state for state in states if state.scope.id == scope_id], now)

        return judge

    def _await_approval(self, request: ApprovalRequest, *, redeem: bool) -> Binding:
        """Poll the store until the request is answered or its deadline passes; fail closed on any error."""
        section = self.config.approvals
        remaining = max(0.0, (request.deadline - self._clock()).total_seconds())
        give_up = time.monotonic() + remaining
        logger.info("event=approval_wait request=%s deadline=%s", request.id, format_time(request.deadline))
        try:
            while True:
                current = self.store.get_approval(request.id)
                if current is None:
                    message = f"approval request {request.id} disappeared from the store"
                    raise StoreError(message)
                if not current.pending:
                    return self._approval_result(current, redeem=redeem)
                if time.monotonic() >= give_up or self._clock() >= request.deadline:
                    self.store.expire_approvals(time=max(self._clock(), request.deadline), request_id=request.id)
                    continue
                time.sleep(min(section.poll_seconds, max(0.0, give_up - time.monotonic())))
        except StoreError as error:
            # The request stays in the store: it is refused at its deadline by the next gate that looks.
            logger.error("event=refusal request=%s reason=store_unavailable error=%s", request.id, error)
            self._refuse(request.action, ReasonCode.STORE_UNAVAILABLE, str(error), self._clock(), record=False)

    def _approval_result(self, request: ApprovalRequest, *, redeem: bool) -> Binding:
        if request.status is ApprovalStatus.ACCEPTED and request.binding_id is not None:
            state = self.store.get_binding(request.binding_id)
            if state is None:
                message = f"binding {request.binding_id} of approval request {request.id} is missing"
                raise StoreError(message, hint="run etlb ledger verify")
            if redeem:
                self.store.redeem(state.binding.id, state.binding.action.digest)
            logger.info("event=binding request=%s bearer=%s binding=%s", request.id, request.bearer, request.binding_id)
            return state.binding

        code = request.code or ReasonCode.INTERNAL_ERROR
        refusal = Refusal(
            id=request.refusal_id or request.id,
            action=request.action,
            code=code,
            reasons=request.reasons,
            message=f"{refusal_message(request.action, code, ())}: {request.detail}",
            time=self._clock(),
        )
        raise Refused(refusal, recorded=request.refusal_id is not None)

    def _announce(self, request: ApprovalRequest) -> None:
        """Tell the approval webhook, if one is configured, about a new request. Never raises."""
        logger.info(
            "event=approval_requested request=%s action=%s approvers=%s deadline=%s",
            request.id,
            request.action.digest,
            ",".join(request.approvers),
            format_time(request.deadline),
        )
        if self.config.approvals.webhook_url is None:
            return
        try:
            announce_request(self.config, request)
        except Exception:
            # The request stays pending; approvers can still answer through the other channels.
            logger.exception("webhook for approval request %s failed", request.id)

    # Declarations

    def register_bearer(self, bearer: Bearer, *, actor: str = "administrator") -> LedgerEntry:
        if not bearer.keys:
            message = f"bearer {bearer.id} has no public key"
            raise DeclarationError(message, hint="pass --key FILE.pub.jwk from etlb keygen")
        return self.store.register_bearer(bearer, time=self._clock(), actor=actor)

    def register_agent(self, agent_id: str, *, actor: str = "administrator") -> str:
        """Register an agent for the HTTP service and return its new API key, which is shown only once.

        The store keeps the key's SHA-256 only, so a leaked database does not leak usable keys.
        """
        if not agent_id or any(character.isspace() for character in agent_id):
            message = f"agent id {agent_id!r} is invalid: use a non-empty id without spaces"
            raise DeclarationError(message)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.store.register_agent(agent_id, api_key_hash(api_key), time=self._clock(), actor=actor)
        logger.info("event=agent_registered agent=%s", agent_id)
        return api_key

    def agent_for_api_key(self, api_key: str) -> str | None:
        """Return the agent an API key belongs to, or None for an unknown key."""
        if not api_key.startswith(API_KEY_PREFIX):
            return None
        return self.store.agent_for_key(api_key_hash(api_key))

    def set_bearer_status(self, bearer_id: str, status: BearerStatus, *, actor: str = "administrator") -> LedgerEntry:
        return self.store.set_bearer_status(bearer_id, status, time=self._clock(), actor=actor)

    def declare_scope(self, jws: str) -> Scope:
        """Verify a bearer-signed scope declaration and store it. The gate never signs for a bearer."""
        header, payload = read_unverified(jws)
        bearer_id = payload.get("bearer")
        bearer = self.store.get_bearer(bearer_id) if isinstance(bearer_id, str) else None
        if bearer is None:
            message = f"scope declaration names bearer {bearer_id!r}, who is not registered"
            raise DeclarationError(message, hint="register the bearer first: etlb bearer add")
        if bearer.status is not BearerStatus.ACTIVE:
            message = f"bearer {bearer.id} is {bearer.status.value} and cannot declare scopes"
            raise DeclarationError(message)

        key = bearer.key(str(header.get("kid", "")))
        if key is None:
            message = f"scope is signed with key {header.get('kid')!r}, which is not registered to bearer {bearer.id}"
            raise SignatureError(message, hint="sign with the key file registered for this bearer")

        verified = verify_jws(jws, key.public_jwk, typ=SCOPE_TYP)
        scope = scope_from_payload(verified, jws=jws, key_id=key.key_id)
        if scope.delegated:
            self._check_delegation(scope)
        self.store.add_scope(scope, time=self._clock())
        logger.info("event=scope_declared scope=%s bearer=%s", scope.id, scope.bearer)
        return scope

    def _check_delegation(self, scope: Scope) -> None:
        """Refuse to store a delegated scope whose parent is unusable or whose offer does not hold."""
        parent = self.store.get_scope(str(scope.parent_id))
        if parent is None:
            message = f"delegated scope names parent {scope.parent_id}, which is not declared"
            raise DeclarationError(message, hint="list scopes with: etlb scope list")
        now = self._clock()
        if parent.revoked or now >= parent.scope.valid_until:
            state = "revoked" if parent.revoked else f"expired at {format_time(parent.scope.valid_until)}"
            message = f"scope {parent.scope.id} is {state} and cannot be delegated"
            raise DeclarationError(message)
        if parent.bearer is None or parent.bearer.status is not BearerStatus.ACTIVE:
            message = f"the delegator {parent.scope.bearer} is not an active bearer"
            raise DeclarationError(message)

        failure = delegation_failure(scope, parent.scope, parent.bearer)
        if failure is not None:
            message = f"delegated scope rejected: {failure}"
            raise DeclarationError(message, hint="accept the offer unchanged, as signed by the parent scope's bearer")

    def revoke_scope(
        self, scope_id: str, *, jws: str | None = None, administrator: str | None = None, reason: str = ""
    ) -> LedgerEntry:
        """Revoke a scope for every later binding: signed by its bearer (`jws`), or by an administrator."""
        state = self.store.get_scope(scope_id)
        if state is None:
            message = f"scope {scope_id} not found"
            raise NotFoundError(message, hint="list scopes with: etlb scope list")

        if jws is not None:
            bearer = state.bearer
            header, _ = read_unverified(jws)
            key = bearer.key(str(header.get("kid", ""))) if bearer is not None else None
            if key is None:
                message = f"revocation is not signed by a key registered to bearer {state.scope.bearer}"
                raise SignatureError(message)
            payload = verify_jws(jws, key.public_jwk, typ=REVOCATION_TYP)
            if payload.get("type") != REVOCATION_TYPE or payload.get("scope_id") != scope_id:
                message = f"revocation names scope {payload.get('scope_id')!r}, not {scope_id}"
                raise SignatureError(message)
            revocation: dict[str, Any] = {
                "by": "bearer",
                "actor": state.scope.bearer,
                "reason": str(payload.get("reason", "")),
                "jws": jws,
            }
        elif administrator:
            logger.warning(
                "scope %s revoked by administrator %s without the bearer's signature", scope_id, administrator
            )
            revocation = {"by": "administrator", "actor": administrator, "reason": reason, "jws": None}
        else:
            message = "a revocation needs the bearer's signature or an administrator's name"
            raise DeclarationError(message, hint="pass --key BEARER.key, or --as-admin NAME")

        entry = self.store.revoke_scope(scope_id, time=self._clock(), revocation=revocation)
        logger.info("event=scope_revoked scope=%s by=%s", scope_id, revocation["by"])
        return entry

    # Evidence

    def receipt(self, binding_id: str) -> dict[str, Any]:
        """Build the offline receipt of one binding: records, inclusion proofs and a signed checkpoint."""
        return build_receipt(binding_id, self.store.receipt_material(binding_id))

    # Internals

    def _bind(
        self,
        call: ToolCall,
        *,
        agent: str | None,
        annotations: Mapping[str, Any] | None,
        redeem: bool,
        wait: bool | None = False,
    ) -> Binding | None:
        agent_id = agent or self.config.agent
        now = self._clock()

        try:
            action = self._classifier.classify(call, agent=agent_id, annotations=annotations)
        except ClassificationError as error:
            # The analysers carry their own reason codes: opaque_target and analysis_limit_exceeded.
            code = ReasonCode(error.code) if isinstance(error, AnalysisError) else ReasonCode.CLASSIFICATION_FAILED
            self._refuse(unclassified_action(call, agent_id), code, str(error), now)
        except Exception as error:
            logger.exception("classification of tool %r failed", call.tool)
            self._refuse(unclassified_action(call, agent_id), ReasonCode.INTERNAL_ERROR, error_text(error), now)

        if action.consequence is Consequence.REVERSIBLE:
            logger.info("event=pass agent=%s action=%s kind=%s", agent_id, action.digest, action.kind)
            return None

        if self.config.approvals.enabled:
            approved = self._approved_binding(action, redeem=redeem)
            if approved is not None:
                return approved

        try:
            result = self.store.decide(
                action,
                time=now,
                judge=lambda states: self._judge(action, states, now),
                redeem=redeem,
                approval=self._approval_plan(action),
            )
        except StoreError as error:
            logger.error(
                "event=refusal agent=%s action=%s reason=store_unavailable error=%s",
                agent_id,
                action.digest,
                error,
            )
            self._refuse(action, ReasonCode.STORE_UNAVAILABLE, str(error), now, record=False)
        except Exception as error:
            logger.exception("resolution of action %s failed", action.digest)
            self._refuse(action, ReasonCode.INTERNAL_ERROR, error_text(error), now)

        if isinstance(result, Refusal):
            logger.info(
                "event=refusal agent=%s action=%s kind=%s reason=%s",
                agent_id,
                action.digest,
                action.kind,
                result.code,
            )
            raise Refused(result)
        if isinstance(result, ApprovalRequest):
            # A request opened before this decision was already announced to its approvers.
            if result.created == now:
                self._announce(result)
            if wait is None:
                wait = self.config.approvals.wait
            if not wait:
                raise _pending(result)
            return self._await_approval(result, redeem=redeem)

        logger.info(
            "event=binding agent=%s action=%s bearer=%s scope=%s binding=%s",
            agent_id,
            action.digest,
            result.bearer,
            result.scope_id,
            result.id,
        )
        return result

    def _classify_for_batch(self, call: ToolCall, agent_id: str, now: datetime) -> Action:
        """Classify one call of `bind_many`; raises `Refused` (recorded) when it cannot be classified."""
        try:
            return self._classifier.classify(call, agent=agent_id, annotations=None)
        except ClassificationError as error:
            code, detail = ReasonCode.CLASSIFICATION_FAILED, str(error)
        except Exception as error:
            logger.exception("classification of tool %r failed", call.tool)
            code, detail = ReasonCode.INTERNAL_ERROR, error_text(error)
        raise self._refusal_error(unclassified_action(call, agent_id), code, detail, now)

    def _judge_at(self, action: Action, now: datetime) -> Callable[[Sequence[ScopeState]], Resolution]:
        return lambda states: self._judge(action, states, now)

    def _batch_result(self, action: Action, result: Decision, now: datetime) -> Binding | Refused:
        # A batch never waits: its callers are service requests, which poll the approval instead.
        if isinstance(result, ApprovalRequest):
            if result.created == now:
                self._announce(result)
            return _pending(result)
        if isinstance(result, Refusal):
            logger.info(
                "event=refusal agent=%s action=%s kind=%s reason=%s",
                action.agent,
                action.digest,
                action.kind,
                result.code,
            )
            return Refused(result)

        logger.info(
            "event=binding agent=%s action=%s bearer=%s scope=%s binding=%s",
            action.agent,
            action.digest,
            result.bearer,
            result.scope_id,
            result.id,
        )
        return result

    def _refusal_error(
        self, action: Action, code: ReasonCode, detail: str, now: datetime, *, record: bool = True
    ) -> Refused:
        """Build the `Refused` error that `_refuse` would raise, without raising it."""
        try:
            self._refuse(action, code, detail, now, record=record)
        except Refused as refused:
            return refused

    def _judge(self, action: Action, states: Sequence[ScopeState], now: datetime) -> Resolution:
        return resolve(action, [_candidate(state) for state in states], now=now)

    def _refuse(self, action: Action, code: ReasonCode, detail: str, now: datetime, *, record: bool = True) -> NoReturn:
        refusal = Refusal(
            id=f"refusal-{secrets.token_hex(12)}",
            action=action,
            code=code,
            reasons=(),
            message=f"{refusal_message(action, code, ())}: {detail}",
            time=now,
        )
        recorded = False
        if record:
            try:
                self.store.append_refusal(refusal)
                recorded = True
            except EtlbError as error:
                logger.error("refusal %s could not be recorded: %s", refusal.id, error)
        raise Refused(refusal, recorded=recorded)

    def _record_outcome(self, binding: Binding, outcome: Outcome) -> None:
        # The action has already run: a failure here leaves the binding without an outcome, which
        # reports as unknown, so it is logged instead of masking the action's own result or error.
        try:
            self.complete(binding, outcome)
        except EtlbError as error:
            logger.error("outcome of binding %s could not be recorded: %s", binding.id, error)


@functools.lru_cache(maxsize=8192)
def _verified(jws: str, x: str) -> bool:
    try:
        verify_jws(jws, {"kty": "OKP", "crv": "Ed25519", "x": x}, typ=SCOPE_TYP)
    except SignatureError:
        return False
    return True


def _pending(request: ApprovalRequest) -> ApprovalPending:
    action = request.action
    message = (
        f"{refusal_message(action, ReasonCode.APPROVAL_PENDING, request.reasons)}\n"
        f"approval request {request.id} waits for {' or '.join(request.approvers)} "
        f"until {format_time(request.deadline)}; nothing ran"
    )
    refusal = Refusal(
        id=request.id,
        action=action,
        code=ReasonCode.APPROVAL_PENDING,
        reasons=request.reasons,
        message=message,
        time=request.created,
    )
    return ApprovalPending(refusal, request_id=request.id, deadline=request.deadline, approvers=request.approvers)


def _candidate(state: ScopeState) -> Candidate:
    """Build the resolver's view of a stored scope, with the signatures of its whole chain checked.

    Each delegated link of the chain is checked against the scope above it. Delegated scopes are
    rare, so their offers are verified at every decision rather than cached.
    """
    chain = (state, *state.ancestors)
    candidates = [
        Candidate(
            scope=link.scope,
            bearer=link.bearer,
            signature_valid=_signature_valid(link),
            revoked=link.revoked,
            usage=link.usage,
            delegation_failure=(
                delegation_failure(link.scope, chain[index + 1].scope, chain[index + 1].bearer)
                if link.scope.delegated and index + 1 < len(chain)
                else None
            ),
        )
        for index, link in enumerate(chain)
    ]
    return dataclasses.replace(candidates[0], ancestors=tuple(candidates[1:]))


def _signature_valid(state: ScopeState) -> bool:
    bearer = state.bearer
    if bearer is None:
        return False
    key = bearer.key(state.scope.key_id)
    if key is None or scope_id_for(state.scope.jws) != state.scope.id:
        return False
    return _verified(state.scope.jws, key.public_jwk["x"])
