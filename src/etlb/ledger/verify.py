"""Full ledger verification: hashes, sequence, and a replay of every decision. No I/O.

A verifier who does not trust the operator runs this over the records alone. It checks that:
- sequence numbers run from 0 without gaps, and each record states its own sequence number;
- each record is canonical JSON whose RFC 9162 leaf hash and chain hash match the stored ones;
- every scope was signed by a key registered to its bearer before the declaration;
- every binding names a scope declared before it, not revoked, inside its window, whose bearer was
  active, whose patterns cover the action, and whose limits held at the binding's position;
- every outcome follows its binding, once;
- every stored checkpoint carries the gate's signature and the Merkle root of the records up to it,
  and an earlier checkpoint the verifier kept still matches the same prefix of the ledger;
- the store's budget usage equals what the bindings consumed, so an edited usage table is found.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from etlb.canonical import canonical_bytes
from etlb.declarations import SCOPE_TYP, delegation_failure, scope_from_payload
from etlb.errors import EtlbError
from etlb.ledger import merkle
from etlb.ledger.checkpoint import Checkpoint, CheckpointError, NoteVerifier, verify_checkpoint
from etlb.ledger.records import (
    GENESIS_CHAIN_HASH,
    LedgerEntry,
    RecordType,
    action_digest_matches,
    action_from_json,
    chain_hash,
    leaf_hash,
)
from etlb.model import Amount, Bearer, BearerKey, Scope, ScopeUsage, parse_time
from etlb.resolve import coverage_failure
from etlb.signing import verify_jws

__all__ = ["Problem", "VerificationReport", "verify_ledger"]


@dataclass(frozen=True, slots=True)
class Problem:
    sequence: int | None
    message: str


@dataclass
class VerificationReport:
    size: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    head_chain_hash: bytes = GENESIS_CHAIN_HASH
    root_hash: bytes = merkle.EMPTY_ROOT
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ScopeReplay:
    scope: Scope
    declared_at: int
    ancestors: tuple[str, ...] = ()
    revoked: bool = False
    count: int = 0
    amount: Decimal = Decimal(0)
    history: list[tuple[datetime, Decimal]] = field(default_factory=list)


def verify_ledger(
    entries: Iterable[LedgerEntry],
    *,
    usage_table: Mapping[str, ScopeUsage] | None = None,
    checkpoints: Iterable[tuple[int, str]] = (),
    verifier: NoteVerifier | None = None,
    against: Checkpoint | None = None,
) -> VerificationReport:
    """Verify a whole ledger in order; every problem found is reported with its sequence number.

    `checkpoints` are the stored signed notes as (tree size, note), smallest first; each must carry a
    valid signature by `verifier` and the root of the records up to its size. `against` is an earlier
    checkpoint, already verified, whose root the same prefix of this ledger must still have.
    """
    report = VerificationReport()
    replay = _Replay()
    tree = merkle.CompactRange()
    pending = _Checkpoints(checkpoints, verifier, report)
    previous_chain = GENESIS_CHAIN_HASH

    for expected_sequence, entry in enumerate(entries):
        report.size += 1
        if entry.sequence != expected_sequence:
            report.problems.append(
                Problem(entry.sequence, f"sequence {entry.sequence} found where {expected_sequence} was expected")
            )
            return report

        problem = _check_hashes(entry, previous_chain)
        if problem is not None:
            report.problems.append(Problem(entry.sequence, problem))
            return report
        previous_chain = entry.chain_hash
        report.head_chain_hash = entry.chain_hash
        tree.append(entry.leaf_hash)

        record = json.loads(entry.record)
        report.counts[record.get("type", "?")] += 1
        try:
            replay.apply(record)
        except _ReplayError as error:
            report.problems.append(Problem(entry.sequence, str(error)))
        except (KeyError, TypeError, ValueError, EtlbError) as error:
            report.problems.append(Problem(entry.sequence, f"record is malformed: {type(error).__name__}: {error}"))

        pending.check(tree)
        if against is not None and tree.size == against.size and tree.root() != against.root:
            report.problems.append(Problem(entry.sequence, _rewritten(against, tree.root())))

    report.root_hash = tree.root()
    pending.finish(tree.size)
    if against is not None and tree.size < against.size:
        message = (
            f"the ledger has {tree.size} records, fewer than the {against.size} of the earlier checkpoint: "
            "records were removed"
        )
        report.problems.append(Problem(None, message))
    if usage_table is not None:
        report.problems.extend(replay.usage_problems(usage_table))
    return report


def _rewritten(against: Checkpoint, root: bytes) -> str:
    return (
        f"history was rewritten: the first {against.size} records have root {root.hex()}, but the earlier "
        f"checkpoint of {against.origin} signed root {against.root.hex()}"
    )


class _Checkpoints:
    """Stored checkpoints, checked against the recomputed root as the pass reaches each tree size."""

    def __init__(
        self, checkpoints: Iterable[tuple[int, str]], verifier: NoteVerifier | None, report: VerificationReport
    ) -> None:
        self._iterator = iter(checkpoints)
        self._verifier = verifier
        self._report = report
        self._next = next(self._iterator, None)

    def check(self, tree: merkle.CompactRange) -> None:
        while self._next is not None and self._next[0] <= tree.size:
            size, note = self._next
            if size == tree.size:
                self._check_one(size, note, tree.root())
            self._next = next(self._iterator, None)

    def _check_one(self, size: int, note: str, root: bytes) -> None:
        self._report.checkpoints += 1
        if self._verifier is None:
            return
        try:
            checkpoint = verify_checkpoint(note, self._verifier)
        except CheckpointError as error:
            self._report.problems.append(Problem(size - 1, f"checkpoint of tree size {size}: {error.message}"))
            return
        if checkpoint.size != size:
            message = f"checkpoint stored for tree size {size} states size {checkpoint.size}"
            self._report.problems.append(Problem(size - 1, message))
        elif checkpoint.root != root:
            message = (
                f"checkpoint of tree size {size} signed root {checkpoint.root.hex()}, but the records up to "
                f"it have root {root.hex()}: a record up to {size - 1} was changed after it was signed"
            )
            self._report.problems.append(Problem(size - 1, message))

    def finish(self, size: int) -> None:
        if self._next is not None:
            message = f"a checkpoint is stored for tree size {self._next[0]}, but the ledger has {size} records"
            self._report.problems.append(Problem(None, message))


class _Replay:
    """The state a replay of the records builds: keys, bearer status, scopes, bindings and outcomes."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, dict[str, str]]] = {}
        self.bearer_status: dict[str, str] = {}
        self.scopes: dict[str, _ScopeReplay] = {}
        self.bindings: dict[str, str] = {}
        self.completed: set[str] = set()
        # Approval requests by id: the action digest asked for, and whether the request is closed.
        self.approvals: dict[str, str] = {}
        self.closed_approvals: set[str] = set()

    def apply(self, record: dict[str, Any]) -> None:
        record_type = RecordType(record["type"])
        if record_type in (RecordType.APPROVAL_REQUESTED, RecordType.APPROVAL_CLOSED):
            self._apply_approval(record_type, record["data"])
            return
        _replay(record, self.keys, self.bearer_status, self.scopes, self.bindings, self.completed)

    def _apply_approval(self, record_type: RecordType, data: dict[str, Any]) -> None:
        request_id = data["request_id"]
        if record_type is RecordType.APPROVAL_REQUESTED:
            if request_id in self.approvals:
                raise _ReplayError(f"approval request {request_id} is opened twice")
            self.approvals[request_id] = data["action"]["digest"]
            return

        if request_id not in self.approvals:
            raise _ReplayError(f"approval request {request_id} is closed but was never opened")
        if request_id in self.closed_approvals:
            raise _ReplayError(f"approval request {request_id} is closed twice")
        self.closed_approvals.add(request_id)
        binding_id = data.get("binding_id")
        if data["status"] == "accepted":
            if binding_id not in self.bindings:
                raise _ReplayError(f"approval request {request_id} is accepted with binding {binding_id}, not earlier")
            if self.bindings[binding_id] != self.approvals[request_id]:
                raise _ReplayError(f"approval request {request_id} is accepted with a binding of another action")

    def usage_problems(self, usage_table: Mapping[str, ScopeUsage]) -> list[Problem]:
        problems = []
        for scope_id, replay in self.scopes.items():
            stored = usage_table.get(scope_id, ScopeUsage())
            if stored.count != replay.count or stored.amount != replay.amount:
                message = (
                    f"usage of scope {scope_id} in the store is {stored.count} executions and {stored.amount}, "
                    f"but its bindings in the ledger add up to {replay.count} and {replay.amount}"
                )
                problems.append(Problem(None, message))
        return problems


class _ReplayError(Exception):
    pass


def _check_hashes(entry: LedgerEntry, previous_chain: bytes) -> str | None:
    try:
        record = json.loads(entry.record)
        canonical = canonical_bytes(record)
    except ValueError as error:
        return f"record is not JSON: {error}"

    if canonical != entry.record:
        return "record is not in RFC 8785 canonical form"
    if record.get("seq") != entry.sequence:
        return f"record states sequence {record.get('seq')!r} but is stored at {entry.sequence}"
    if leaf_hash(entry.record) != entry.leaf_hash:
        return "leaf hash does not match the record bytes: the record was changed after it was written"
    if chain_hash(previous_chain, entry.leaf_hash) != entry.chain_hash:
        return "chain hash does not follow from the previous record: a record was changed, removed or inserted"
    return None


def _replay(
    record: dict[str, Any],
    keys: dict[str, dict[str, dict[str, str]]],
    bearer_status: dict[str, str],
    scopes: dict[str, _ScopeReplay],
    bindings: dict[str, str],
    completed: set[str],
) -> None:
    record_type = RecordType(record["type"])
    data = record["data"]
    sequence = record["seq"]

    if record_type is RecordType.BEARER_REGISTERED:
        bearer = data["bearer"]
        keys[bearer["id"]] = {key["key_id"]: key["jwk"] for key in bearer["keys"]}
        bearer_status[bearer["id"]] = bearer["status"]

    elif record_type is RecordType.AGENT_REGISTERED:
        # Agent registrations name no key material and constrain no later record.
        pass

    elif record_type is RecordType.BEARER_STATUS:
        if data["bearer_id"] not in bearer_status:
            raise _ReplayError(f"status change for bearer {data['bearer_id']}, who was never registered")
        bearer_status[data["bearer_id"]] = data["status"]

    elif record_type is RecordType.SCOPE_DECLARED:
        jwk = keys.get(data["bearer"], {}).get(data["key_id"])
        if jwk is None:
            raise _ReplayError(
                f"scope {data['scope_id']} is signed by key {data['key_id']}, not registered to {data['bearer']}"
            )
        payload = verify_jws(data["jws"], jwk, typ=SCOPE_TYP)
        scope = scope_from_payload(payload, jws=data["jws"], key_id=data["key_id"])
        if scope.id != data["scope_id"] or scope.bearer != data["bearer"]:
            raise _ReplayError(f"scope {data['scope_id']} does not match its signed declaration")
        ancestors = _replay_delegation(scope, keys, bearer_status, scopes) if scope.delegated else ()
        scopes[scope.id] = _ScopeReplay(scope, sequence, ancestors=ancestors)

    elif record_type is RecordType.SCOPE_REVOKED:
        if data["scope_id"] not in scopes:
            raise _ReplayError(f"revocation of scope {data['scope_id']}, which was never declared")
        scopes[data["scope_id"]].revoked = True

    elif record_type is RecordType.BINDING:
        # Registered before it is checked, so that one bad binding is reported once, not again at its outcome.
        bindings[data["binding_id"]] = data["action"]["digest"]
        _replay_binding(data, parse_time(record["time"]), bearer_status, scopes)

    elif record_type is RecordType.OUTCOME:
        binding_id = data["binding_id"]
        if binding_id not in bindings:
            raise _ReplayError(f"outcome for binding {binding_id}, which is not earlier in the ledger")
        if binding_id in completed:
            raise _ReplayError(f"second outcome for binding {binding_id}")
        if bindings[binding_id] != data["action_digest"]:
            raise _ReplayError(f"outcome names action {data['action_digest']}, binding {binding_id} another")
        completed.add(binding_id)


def _replay_delegation(
    scope: Scope,
    keys: dict[str, dict[str, dict[str, str]]],
    bearer_status: dict[str, str],
    scopes: dict[str, _ScopeReplay],
) -> tuple[str, ...]:
    """Check a delegated scope's offer against the ledger so far; return its ancestors, parent first."""
    parent = scopes.get(str(scope.parent_id))
    if parent is None:
        raise _ReplayError(f"scope {scope.id} is delegated from {scope.parent_id}, which was not declared before it")
    if parent.revoked:
        raise _ReplayError(f"scope {scope.id} is delegated from {parent.scope.id} after its revocation")
    delegator = parent.scope.bearer
    if bearer_status.get(delegator) != "active":
        raise _ReplayError(f"scope {scope.id} is delegated by {delegator}, who was not active")

    registered = Bearer(
        id=delegator,
        name=delegator,
        keys=tuple(BearerKey(key_id, jwk) for key_id, jwk in keys.get(delegator, {}).items()),
    )
    failure = delegation_failure(scope, parent.scope, registered)
    if failure is not None:
        raise _ReplayError(f"delegation of scope {scope.id} does not hold: {failure}")
    return (parent.scope.id, *parent.ancestors)


def _replay_binding(
    data: dict[str, Any], time: datetime, bearer_status: dict[str, str], scopes: dict[str, _ScopeReplay]
) -> None:
    binding_id = data["binding_id"]
    replay = scopes.get(data["scope_id"])
    if replay is None:
        raise _ReplayError(f"binding {binding_id} names scope {data['scope_id']}, which was not declared before it")

    # Every binding consumed budget in the store, valid or not, so it is counted before it is judged.
    reserved = data["reserved"]["amount"]
    value = Amount.parse(reserved["value"], reserved["unit"]).value if reserved else Decimal(0)
    chain = [replay, *(scopes[ancestor] for ancestor in replay.ancestors)]
    for link in chain:
        link.count += 1
        link.amount += value

    recorded = [(link["scope_id"], link["bearer"]) for link in data.get("chain", [])]
    expected = [(link.scope.id, link.scope.bearer) for link in chain[1:]]
    if recorded != expected:
        raise _ReplayError(f"binding {binding_id} records the chain {recorded}, but its scope descends from {expected}")
    if data["bearer"] != replay.scope.bearer:
        raise _ReplayError(
            f"binding {binding_id} names bearer {data['bearer']}, scope {replay.scope.id} is {replay.scope.bearer}'s"
        )
    if not action_digest_matches(data["action"]):
        raise _ReplayError(f"binding {binding_id} records an action whose digest is not the SHA-256 of its fields")
    for link in chain:
        _replay_link(binding_id, link, data["action"], value, time, bearer_status)


def _replay_link(
    binding_id: str,
    replay: _ScopeReplay,
    action: dict[str, Any],
    value: Decimal,
    time: datetime,
    bearer_status: dict[str, str],
) -> None:
    """Check one scope of a binding's chain as the gate judged it at the binding's position."""
    scope = replay.scope
    limits = scope.limits
    if replay.revoked:
        raise _ReplayError(f"binding {binding_id} uses scope {scope.id} after its revocation")
    if bearer_status.get(scope.bearer) != "active":
        raise _ReplayError(f"binding {binding_id} made while bearer {scope.bearer} was not active")
    if not scope.valid_from <= time < scope.valid_until:
        raise _ReplayError(f"binding {binding_id} made outside the validity window of scope {scope.id}")
    coverage = coverage_failure(scope, action_from_json(action))
    if coverage is not None:
        raise _ReplayError(f"binding {binding_id} is not covered by scope {scope.id}: {coverage[1]}")

    if limits.max_count is not None and replay.count > limits.max_count:
        raise _ReplayError(
            f"binding {binding_id} is execution {replay.count} of scope {scope.id}, max {limits.max_count}"
        )
    if limits.max_amount is not None and value > limits.max_amount:
        raise _ReplayError(f"binding {binding_id} reserved {value}, above the per-action cap of scope {scope.id}")
    if limits.max_total is not None and replay.amount > limits.max_total:
        raise _ReplayError(f"binding {binding_id} brings scope {scope.id} to {replay.amount}, above its total cap")

    earlier = list(replay.history)
    replay.history.append((time, value))
    for window in limits.windows:
        since = time - timedelta(seconds=window.seconds)
        inside = [amount for moment, amount in earlier if moment > since]
        if window.max_count is not None and len(inside) + 1 > window.max_count:
            message = f"binding {binding_id} is execution {len(inside) + 1} of scope {scope.id} in {window.describe()}"
            raise _ReplayError(f"{message}, max {window.max_count}")
        if window.max_amount is not None and sum(inside, Decimal(0)) + value > window.max_amount:
            message = f"binding {binding_id} brings scope {scope.id} above its {window.describe()} amount cap"
            raise _ReplayError(message)
