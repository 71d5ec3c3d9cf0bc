"""Receipts: one JSON document that proves, offline, who carried the consequence of one action.

No I/O. A receipt contains the ledger records of the bearer's registration (with their public key), the
bearer-signed scope declaration, the binding and, once recorded, its outcome; each record's exact
bytes, leaf index and RFC 9162 inclusion proof; and the gate's signed checkpoint the proofs lead to.
`verify_receipt` needs nothing else but the gate's checkpoint verifier key, and every failure names
the part of the receipt that is wrong. docs/receipts.md describes the format field by field.

A binding under a delegated scope adds `chain`: for each ancestor scope, parent first, its
declaration and its bearer's registration, with their proofs. The verifier checks each delegation
offer against the registered key of the scope above it, and each ancestor's coverage of the action.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from etlb.canonical import canonical_bytes
from etlb.declarations import SCOPE_TYP, delegation_failure, scope_from_payload, scope_id_for
from etlb.errors import EtlbError
from etlb.ledger import merkle
from etlb.ledger.checkpoint import CheckpointError, NoteVerifier, verify_checkpoint
from etlb.ledger.records import action_digest_matches, action_from_json
from etlb.model import Bearer, BearerKey, format_time, parse_time
from etlb.resolve import coverage_failure
from etlb.signing import key_id, verify_jws

__all__ = ["RECEIPT_FORMAT", "ReceiptError", "ReceiptMaterial", "ReceiptSummary", "build_receipt", "verify_receipt"]

RECEIPT_FORMAT = "etlb-receipt/v1"
_PARTS = ("bearer", "scope", "binding", "outcome")


@dataclass(frozen=True, slots=True)
class ReceiptMaterial:
    """The records, proofs and checkpoint a store returns to prove one binding.

    `records` maps each of bearer, scope, binding and outcome to the record's sequence number, bytes and
    inclusion proof, or to None for an outcome not yet recorded. `checkpoint` is the signed note the
    proofs lead to.
    """

    records: dict[str, tuple[int, bytes, list[bytes]] | None]
    checkpoint: str
    # For a delegated scope: per ancestor, parent first, its "scope" and "bearer" records.
    chain: list[dict[str, tuple[int, bytes, list[bytes]]]] = field(default_factory=list)


class ReceiptError(EtlbError):
    """A receipt does not prove what it claims. `part` names the field that failed."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part


@dataclass(frozen=True, slots=True)
class ReceiptSummary:
    """The facts a verified receipt proves: who carried which action under which scope, and its outcome."""

    bearer: str
    bearer_name: str
    scope_id: str
    terms: str
    binding_id: str
    action: dict[str, Any]
    bound_at: str
    outcome: str
    outcome_detail: str
    origin: str
    tree_size: int


def build_receipt(binding_id: str, material: ReceiptMaterial) -> dict[str, Any]:
    """Assemble the receipt JSON of one binding from the records, proofs and checkpoint of the store."""
    records: dict[str, Any] = {part: _proven(material.records.get(part)) for part in _PARTS}

    binding = json.loads(records["binding"]["record"])["data"]
    scope = json.loads(records["scope"]["record"])["data"]
    bearer = json.loads(records["bearer"]["record"])["data"]["bearer"]
    key = next(item for item in bearer["keys"] if item["key_id"] == scope["key_id"])
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "binding_id": binding_id,
        "bearer": {"id": bearer["id"], "name": bearer["name"], "key_id": key["key_id"], "public_jwk": key["jwk"]},
        "scope": {"scope_id": scope["scope_id"], "jws": scope["jws"]},
        "action_digest": binding["action"]["digest"],
        "records": records,
        "checkpoint": material.checkpoint,
    }
    # Only a delegated binding has a chain, so other receipts keep the shape they always had.
    if material.chain:
        receipt["chain"] = [{name: _proven(found) for name, found in link.items()} for link in material.chain]
    return receipt


def _proven(found: tuple[int, bytes, list[bytes]] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    sequence, record, proof = found
    return {
        "leaf_index": sequence,
        "record": record.decode("utf-8"),
        "inclusion_proof": [base64.b64encode(item).decode("ascii") for item in proof],
    }


def verify_receipt(receipt: Any, verifier: NoteVerifier) -> ReceiptSummary:
    """Check every signature and proof in a receipt; raises `ReceiptError` naming the part that failed."""
    if not isinstance(receipt, dict):
        raise ReceiptError("receipt", "must be a JSON object")
    if receipt.get("format") != RECEIPT_FORMAT:
        raise ReceiptError("format", f"is {receipt.get('format')!r}; expected {RECEIPT_FORMAT!r}")

    checkpoint_note = _field(receipt, "checkpoint", str)
    try:
        checkpoint = verify_checkpoint(checkpoint_note, verifier)
    except CheckpointError as error:
        raise ReceiptError("checkpoint", error.message) from error

    records = _field(receipt, "records", dict)
    # A renamed or dropped `outcome` key would otherwise read as a receipt made before the outcome.
    if sorted(records) != sorted(_PARTS):
        raise ReceiptError("records", f"has the parts {sorted(records)}; expected exactly {sorted(_PARTS)}")
    parsed = {part: _verified_record(records, part, checkpoint.size, checkpoint.root) for part in _PARTS}

    bearer, public_jwk = _check_bearer(receipt, parsed["bearer"])
    scope_payload = _check_scope(receipt, parsed["scope"], bearer, public_jwk)
    binding = _check_binding(receipt, parsed, scope_payload)
    _check_chain(receipt, binding, scope_payload, checkpoint.size, checkpoint.root)
    outcome = _check_outcome(parsed, binding)

    return ReceiptSummary(
        bearer=bearer["id"],
        bearer_name=bearer["name"],
        scope_id=binding["data"]["scope_id"],
        terms=scope_payload["terms"],
        binding_id=binding["data"]["binding_id"],
        action=binding["data"]["action"],
        bound_at=binding["time"],
        outcome=outcome["data"]["status"] if outcome else "unknown",
        outcome_detail=outcome["data"]["detail"] if outcome else "no outcome was recorded when the receipt was made",
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
    )


def _field(container: dict[str, Any], name: str, kind: type, part: str | None = None) -> Any:
    value = container.get(name)
    if not isinstance(value, kind):
        where = f"{part}.{name}" if part else name
        raise ReceiptError(where, f"is missing or not a {kind.__name__}")
    return value


def _verified_record(
    records: dict[str, Any], part: str, size: int, root: bytes, *, prefix: str = "records"
) -> dict[str, Any] | None:
    """Check one record's inclusion in the checkpoint and return it parsed; None for an absent outcome."""
    entry = records.get(part)
    where = f"{prefix}.{part}"
    if entry is None and part == "outcome":
        return None
    if not isinstance(entry, dict):
        raise ReceiptError(where, "is missing")

    text = _field(entry, "record", str, where)
    index = entry.get("leaf_index")
    proof_text = _field(entry, "inclusion_proof", list, where)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ReceiptError(f"{where}.leaf_index", f"is {index!r}; expected a non-negative integer")
    try:
        proof = [base64.b64decode(item, validate=True) for item in proof_text]
    except (TypeError, ValueError, binascii.Error) as error:
        raise ReceiptError(f"{where}.inclusion_proof", "is not a list of base64 hashes") from error
    # The last base64 character can carry unused bits, so only the canonical text is accepted and
    # each proof has exactly one receipt text.
    if any(base64.b64encode(item).decode("ascii") != text for item, text in zip(proof, proof_text, strict=True)):
        raise ReceiptError(f"{where}.inclusion_proof", "has a hash that is not in canonical base64")

    data = text.encode("utf-8")
    if not merkle.verify_inclusion(merkle.leaf_hash(data), index, size, proof, root):
        message = (
            f"the record at leaf {index} is not in the checkpoint's tree of {size} records: "
            "the record bytes, the leaf index or the inclusion proof were changed"
        )
        raise ReceiptError(where, message)

    record = json.loads(text)
    if canonical_bytes(record) != data:
        raise ReceiptError(f"{where}.record", "is not RFC 8785 canonical JSON")
    if record.get("seq") != index:
        raise ReceiptError(f"{where}.record", f"states sequence {record.get('seq')!r}, not its leaf index {index}")
    return dict(record)


def _check_bearer(receipt: dict[str, Any], record: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    assert record is not None
    if record.get("type") != "bearer.registered":
        raise ReceiptError("records.bearer", f"is a {record.get('type')!r} record, not a bearer registration")

    claimed = _field(receipt, "bearer", dict)
    registered = record["data"]["bearer"]
    keys = {item["key_id"]: item["jwk"] for item in registered["keys"]}
    public_jwk = keys.get(claimed.get("key_id"))
    if registered["id"] != claimed.get("id") or public_jwk is None:
        raise ReceiptError("bearer", "does not match the bearer and key registered in records.bearer")
    if public_jwk != claimed.get("public_jwk") or key_id(public_jwk) != claimed["key_id"]:
        raise ReceiptError("bearer.public_jwk", "differs from the key registered in records.bearer")
    if claimed.get("name") != registered["name"]:
        raise ReceiptError("bearer.name", "differs from the name registered in records.bearer")
    return registered, public_jwk


def _check_scope(
    receipt: dict[str, Any], record: dict[str, Any] | None, bearer: dict[str, Any], public_jwk: dict[str, str]
) -> dict[str, Any]:
    assert record is not None
    if record.get("type") != "scope.declared":
        raise ReceiptError("records.scope", f"is a {record.get('type')!r} record, not a scope declaration")

    claimed = _field(receipt, "scope", dict)
    data = record["data"]
    jws = data["jws"]
    if claimed.get("jws") != jws or claimed.get("scope_id") != data["scope_id"]:
        raise ReceiptError("scope", "differs from the declaration in records.scope")
    if data["bearer"] != bearer["id"] or data["key_id"] != receipt["bearer"]["key_id"]:
        raise ReceiptError("records.scope", f"was declared by {data['bearer']} with another key")
    if scope_id_for(jws) != data["scope_id"]:
        raise ReceiptError("scope.scope_id", "does not match the signed declaration")
    try:
        payload = verify_jws(jws, public_jwk, typ=SCOPE_TYP)
        scope_from_payload(payload, jws=jws, key_id=data["key_id"])
    except EtlbError as error:
        raise ReceiptError("scope.jws", f"the bearer's signature does not verify: {error.message}") from error
    if payload["bearer"] != bearer["id"]:
        raise ReceiptError("scope.jws", f"is signed for bearer {payload['bearer']}, not {bearer['id']}")
    return payload


def _check_binding(
    receipt: dict[str, Any], parsed: dict[str, dict[str, Any] | None], scope: dict[str, Any]
) -> dict[str, Any]:
    record = parsed["binding"]
    assert record is not None
    if record.get("type") != "binding":
        raise ReceiptError("records.binding", f"is a {record.get('type')!r} record, not a binding")

    data = record["data"]
    action = data["action"]
    if data["binding_id"] != receipt.get("binding_id"):
        raise ReceiptError("binding_id", "does not match records.binding")
    if action["digest"] != receipt.get("action_digest"):
        raise ReceiptError("action_digest", "does not match the action in records.binding")
    if not action_digest_matches(action):
        raise ReceiptError("records.binding", "the action's digest is not the SHA-256 of its fields")
    if data["scope_id"] != receipt["scope"]["scope_id"] or data["bearer"] != receipt["bearer"]["id"]:
        raise ReceiptError("records.binding", "names another scope or bearer than the receipt")

    bearer_seq = parsed["bearer"]["seq"] if parsed["bearer"] else -1
    scope_seq = parsed["scope"]["seq"] if parsed["scope"] else -1
    if not bearer_seq < scope_seq < record["seq"]:
        raise ReceiptError("records", "are out of order: registration, declaration and binding must follow each other")

    bound_at = parse_time(record["time"])
    if not parse_time(scope["valid_from"]) <= bound_at < parse_time(scope["valid_until"]):
        raise ReceiptError("records.binding", f"was made at {format_time(bound_at)}, outside the scope's window")
    declared = scope_from_payload(scope, jws=receipt["scope"]["jws"], key_id=receipt["bearer"]["key_id"])
    coverage = coverage_failure(declared, action_from_json(action))
    if coverage is not None:
        raise ReceiptError("records.binding", f"the action is not covered by the scope: {coverage[1]}")
    return record


def _check_chain(
    receipt: dict[str, Any], binding: dict[str, Any], scope: dict[str, Any], size: int, root: bytes
) -> None:
    """Check a delegated binding's ancestors: proven records, each offer signed by the scope above, and coverage."""
    recorded = binding["data"].get("chain", [])
    links = receipt.get("chain", [])
    if not isinstance(links, list) or len(links) != len(recorded):
        raise ReceiptError(
            "chain", f"has {len(links) if isinstance(links, list) else 0} links; the binding names {len(recorded)}"
        )

    child = scope_from_payload(scope, jws=receipt["scope"]["jws"], key_id=receipt["bearer"]["key_id"])
    action = action_from_json(binding["data"]["action"])
    for index, (link, named) in enumerate(zip(links, recorded, strict=True)):
        where = f"chain[{index}]"
        if not isinstance(link, dict):
            raise ReceiptError(where, "is not an object")
        bearer_record = _verified_record(link, "bearer", size, root, prefix=where)
        scope_record = _verified_record(link, "scope", size, root, prefix=where)
        assert bearer_record is not None and scope_record is not None
        if bearer_record.get("type") != "bearer.registered" or scope_record.get("type") != "scope.declared":
            raise ReceiptError(where, "does not hold a bearer registration and a scope declaration")

        data = scope_record["data"]
        registered = bearer_record["data"]["bearer"]
        if (data["scope_id"], data["bearer"]) != (named["scope_id"], named["bearer"]) or registered["id"] != data[
            "bearer"
        ]:
            raise ReceiptError(where, f"is not scope {named['scope_id']} of {named['bearer']}, as the binding names")
        if not bearer_record["seq"] < scope_record["seq"] < binding["seq"]:
            raise ReceiptError(where, "is out of order: registration, declaration and binding must follow each other")

        public_jwk = {item["key_id"]: item["jwk"] for item in registered["keys"]}.get(data["key_id"])
        try:
            payload = verify_jws(data["jws"], public_jwk or {}, typ=SCOPE_TYP)
            parent = scope_from_payload(payload, jws=data["jws"], key_id=data["key_id"])
        except EtlbError as error:
            raise ReceiptError(where, f"the bearer's signature does not verify: {error.message}") from error

        failure = delegation_failure(child, parent, _bearer_from_json(registered))
        if failure is not None:
            raise ReceiptError(where, f"the delegation does not hold: {failure}")
        bound_at = parse_time(binding["time"])
        if not parent.valid_from <= bound_at < parent.valid_until:
            raise ReceiptError(where, f"the binding was made at {format_time(bound_at)}, outside this scope's window")
        coverage = coverage_failure(parent, action)
        if coverage is not None:
            raise ReceiptError(where, f"the action is not covered by this scope: {coverage[1]}")
        child = parent


def _bearer_from_json(data: dict[str, Any]) -> Bearer:
    keys = tuple(BearerKey(item["key_id"], item["jwk"]) for item in data["keys"])
    return Bearer(id=data["id"], name=data["name"], keys=keys)


def _check_outcome(parsed: dict[str, dict[str, Any] | None], binding: dict[str, Any]) -> dict[str, Any] | None:
    record = parsed["outcome"]
    if record is None:
        return None
    if record.get("type") != "outcome":
        raise ReceiptError("records.outcome", f"is a {record.get('type')!r} record, not an outcome")

    data = record["data"]
    if (
        data["binding_id"] != binding["data"]["binding_id"]
        or data["action_digest"] != binding["data"]["action"]["digest"]
    ):
        raise ReceiptError("records.outcome", "belongs to another binding")
    if record["seq"] <= binding["seq"]:
        raise ReceiptError("records.outcome", "comes before its binding in the ledger")
    return record
