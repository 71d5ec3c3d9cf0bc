"""Ledger records and their hashes. No I/O.

A record is the RFC 8785 canonical JSON of an envelope `{"v", "seq", "type", "time", "data"}`. Its
sequence number is its leaf index, gapless from 0. Two hashes are kept beside the bytes:

- the leaf hash of RFC 9162 section 2.1.1, SHA-256(0x00 || record bytes), so that a Merkle tree can be
  built over the records exactly as stored;
- a chain hash, SHA-256(previous chain hash || leaf hash), starting from 32 zero bytes, which commits
  each record to every record before it.

Neither hash is part of the record bytes, so adding the Merkle tree later changes no stored record.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etlb.canonical import canonical_bytes, sha256_digest
from etlb.model import Action, ActionPart, Amount, Bearer, Binding, Consequence, Outcome, Refusal, Scope, format_time

__all__ = [
    "GENESIS_CHAIN_HASH",
    "RECORD_VERSION",
    "LedgerEntry",
    "RecordType",
    "action_digest_matches",
    "action_from_json",
    "action_json",
    "bearer_json",
    "binding_data",
    "chain_hash",
    "envelope",
    "index_columns",
    "leaf_hash",
    "outcome_data",
    "refusal_data",
    "scope_data",
]

RECORD_VERSION = 1
GENESIS_CHAIN_HASH = bytes(32)


class RecordType(enum.StrEnum):
    BEARER_REGISTERED = "bearer.registered"
    BEARER_STATUS = "bearer.status"
    AGENT_REGISTERED = "agent.registered"
    SCOPE_DECLARED = "scope.declared"
    SCOPE_REVOKED = "scope.revoked"
    BINDING = "binding"
    REFUSAL = "refusal"
    OUTCOME = "outcome"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_CLOSED = "approval.closed"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    sequence: int
    record: bytes
    leaf_hash: bytes
    chain_hash: bytes


def envelope(*, sequence: int, record_type: RecordType, time: datetime, data: dict[str, Any]) -> bytes:
    """Return the canonical bytes of one ledger record."""
    return canonical_bytes(
        {
            "v": RECORD_VERSION,
            "seq": sequence,
            "type": record_type.value,
            "time": format_time(time),
            "data": data,
        }
    )


def leaf_hash(record: bytes) -> bytes:
    """RFC 9162 section 2.1.1 leaf hash: SHA-256 over 0x00 followed by the record bytes."""
    return hashlib.sha256(b"\x00" + record).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(previous + leaf).digest()


def action_json(action: Action) -> dict[str, Any]:
    """Return the action as the ledger records it: the digested fields, the digest, and the call id if any."""
    data = {**action.canonical_fields(), "digest": action.digest}
    if action.call_id is not None:
        data["call_id"] = action.call_id
    return data


def bearer_json(bearer: Bearer) -> dict[str, Any]:
    return {
        "id": bearer.id,
        "name": bearer.name,
        "keys": [{"key_id": key.key_id, "jwk": key.public_jwk} for key in bearer.keys],
        "status": bearer.status.value,
        "attributes": bearer.attributes,
    }


def scope_data(scope: Scope) -> dict[str, Any]:
    return {"scope_id": scope.id, "bearer": scope.bearer, "key_id": scope.key_id, "jws": scope.jws}


def binding_data(binding: Binding) -> dict[str, Any]:
    amount = binding.reserved_amount
    data: dict[str, Any] = {
        "binding_id": binding.id,
        "action": action_json(binding.action),
        "bearer": binding.bearer,
        "scope_id": binding.scope_id,
        "reserved": {
            "count": binding.reserved_count,
            "amount": amount.to_json() if amount is not None else None,
        },
    }
    # Only a binding under a delegated scope has a chain; other records keep their shape.
    if binding.chain:
        data["chain"] = [{"scope_id": scope_id, "bearer": bearer} for scope_id, bearer in binding.chain]
    return data


def refusal_data(refusal: Refusal) -> dict[str, Any]:
    return {
        "refusal_id": refusal.id,
        "action": action_json(refusal.action),
        "code": refusal.code.value,
        "reasons": [reason.to_json() for reason in refusal.reasons],
        "message": refusal.message,
    }


def outcome_data(binding_id: str, action_digest: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "binding_id": binding_id,
        "action_digest": action_digest,
        "status": outcome.status.value,
        "detail": outcome.detail,
    }


def action_digest_matches(data: dict[str, Any]) -> bool:
    """Say whether a recorded action's digest is the SHA-256 of its own fields, as an auditor recomputes it."""
    try:
        action = action_from_json(data)
        return bool(sha256_digest(action.canonical_fields()) == data["digest"])
    except (KeyError, TypeError, ValueError):
        return False


def action_from_json(data: dict[str, Any]) -> Action:
    """Rebuild an action from its ledger JSON; the digest is taken as recorded, not recomputed."""
    amount = data.get("amount")
    parts = tuple(ActionPart.from_json(part) for part in data.get("parts", []))
    return Action(
        kind=data["kind"],
        resource=data["resource"],
        consequence=Consequence(data["consequence"]),
        agent=data["agent"],
        tool=data["tool"],
        server=data.get("server"),
        arguments=data["arguments"],
        amount=Amount.parse(amount["value"], amount["unit"]) if amount is not None else None,
        digest=data["digest"],
        parts=parts,
        definition_digest=data.get("definition_digest"),
        call_id=data.get("call_id"),
    )


@dataclass(frozen=True, slots=True)
class IndexColumns:
    """Fields of a record that the ledger can be filtered on; None where the record type has none."""

    bearer: str | None = None
    scope_id: str | None = None
    agent: str | None = None
    kind: str | None = None
    action_digest: str | None = None
    binding_id: str | None = None


def index_columns(record_type: RecordType, data: dict[str, Any]) -> IndexColumns:
    action = data.get("action")
    if record_type in (RecordType.BINDING, RecordType.REFUSAL) and isinstance(action, dict):
        return IndexColumns(
            bearer=data.get("bearer"),
            scope_id=data.get("scope_id"),
            agent=action.get("agent"),
            kind=action.get("kind"),
            action_digest=action.get("digest"),
            binding_id=data.get("binding_id"),
        )
    if record_type is RecordType.OUTCOME:
        return IndexColumns(action_digest=data.get("action_digest"), binding_id=data.get("binding_id"))
    if record_type in (RecordType.SCOPE_DECLARED, RecordType.SCOPE_REVOKED):
        return IndexColumns(bearer=data.get("bearer") or data.get("actor"), scope_id=data.get("scope_id"))
    if record_type is RecordType.BEARER_REGISTERED:
        return IndexColumns(bearer=data["bearer"]["id"])
    if record_type is RecordType.BEARER_STATUS:
        return IndexColumns(bearer=data.get("bearer_id"))
    return IndexColumns()
