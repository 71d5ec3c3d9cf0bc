"""Receipts: exact summaries, every altered part named, forgeries by the gate's own key, and properties.

One ledger of ten records serves the whole module:

- 0: alice registered; 1: her payments scope, at most 100 EUR per transfer;
- 2: binding of a 40 EUR transfer; 3: its outcome, succeeded; 4: refusal of a 400 EUR transfer;
- 5: bob registered; 6: his git scope; 7: binding of a commit; 8: its outcome, failed;
- 9: binding of a 25 EUR transfer, with no outcome.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tlog_scales.signing import Vkey
from tlog_scales.tlog import Checkpoint as OracleCheckpoint
from tlog_scales.tlog import InclusionProof

from etlb.canonical import canonical_bytes, sha256_digest
from etlb.declarations import SCOPE_TYP
from etlb.errors import NotFoundError, Refused
from etlb.gate_key import create_gate_key, load_gate_signer
from etlb.ledger.checkpoint import CheckpointSigner, NoteVerifier, parse_verifier_key
from etlb.ledger.merkle import inclusion_proof, leaf_hash, perfect_nodes_for_append, root_hash
from etlb.ledger.receipt import ReceiptError, ReceiptMaterial, ReceiptSummary, build_receipt, verify_receipt
from etlb.ledger.records import action_from_json
from etlb.model import Binding, ToolCall
from etlb.signing import generate_private_key, public_jwk, read_unverified, sign_payload
from tests.conftest import PAYMENTS_CONFIG, World, build_world

Receipt = dict[str, Any]


def transfer(amount: str) -> ToolCall:
    return ToolCall(
        tool="transfer", server="bank", arguments={"from_account": "DE01", "amount": amount, "currency": "EUR"}
    )


COMMIT = ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": "release"})


@dataclass
class Ledger:
    world: World
    verifier: NoteVerifier
    signer: CheckpointSigner
    scopes: dict[str, str]
    bindings: dict[str, Binding]
    receipts: dict[str, Receipt]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    folder = tmp_path_factory.mktemp("receipts")
    world = build_world(folder, PAYMENTS_CONFIG)
    gate = world.gate
    bindings: dict[str, Binding] = {}

    world.add_bearer("alice")
    alice_scope = world.declare(
        "alice", kinds=["payments.transfer"], resources=["account:DE01"], max_amount="100", unit="EUR"
    )
    world.clock.advance(minutes=1)
    with gate.execution(transfer("40")) as paid:
        assert paid is not None
        bindings["paid"] = paid
    world.clock.advance(minutes=1)
    with pytest.raises(Refused):
        gate.bind(transfer("400"))
    world.add_bearer("bob")
    bob_scope = world.declare("bob", kinds=["git.commit"], resources=["repo:/srv/app"])
    world.clock.advance(minutes=1)
    with pytest.raises(RuntimeError), gate.execution(COMMIT) as failed:
        assert failed is not None
        bindings["failed"] = failed
        raise RuntimeError("disk full")
    world.clock.advance(minutes=1)
    pending = gate.bind(transfer("25"))
    assert pending is not None
    bindings["pending"] = pending

    receipts = {name: gate.receipt(binding.id) for name, binding in bindings.items()}
    verifier = parse_verifier_key((folder / "etlb-gate.pub").read_text(encoding="utf-8"))
    signer = load_gate_signer(folder / "etlb-gate.key", None)
    yield Ledger(world, verifier, signer, {"alice": alice_scope.id, "bob": bob_scope.id}, bindings, receipts)
    gate.close()


def fresh(ledger: Ledger, name: str = "paid") -> Receipt:
    return copy.deepcopy(ledger.receipts[name])


# verified receipts


def test_receipt_summary_exact(ledger: Ledger) -> None:
    paid = ledger.bindings["paid"]

    summary = verify_receipt(fresh(ledger), ledger.verifier)

    assert summary == ReceiptSummary(
        bearer="alice",
        bearer_name="Alice",
        scope_id=ledger.scopes["alice"],
        terms="alice accepts liability for payments.transfer",
        binding_id=paid.id,
        action={
            "agent": "agent-1",
            "amount": {"unit": "EUR", "value": "40"},
            "arguments": {"amount": "40", "currency": "EUR", "from_account": "DE01"},
            "consequence": "irreversible",
            "digest": paid.action.digest,
            "kind": "payments.transfer",
            "resource": "account:DE01",
            "server": "bank",
            "tool": "transfer",
        },
        bound_at="2026-06-01T12:01:00.000Z",
        outcome="succeeded",
        outcome_detail="",
        origin=ledger.verifier.name,
        tree_size=10,
    )


def test_receipt_leaf_indices(ledger: Ledger) -> None:
    records = ledger.receipts["paid"]["records"]

    assert {part: entry["leaf_index"] for part, entry in records.items()} == {
        "bearer": 0,
        "scope": 1,
        "binding": 2,
        "outcome": 3,
    }
    assert ledger.receipts["paid"]["checkpoint"] == ledger.world.gate.store.latest_checkpoint()


def test_receipt_failed_outcome(ledger: Ledger) -> None:
    summary = verify_receipt(fresh(ledger, "failed"), ledger.verifier)

    assert (summary.bearer, summary.bearer_name, summary.scope_id) == ("bob", "Bob", ledger.scopes["bob"])
    assert (summary.outcome, summary.outcome_detail) == ("failed", "RuntimeError: disk full")
    assert summary.action["kind"] == "git.commit"
    assert summary.bound_at == "2026-06-01T12:03:00.000Z"


def test_receipt_without_outcome(ledger: Ledger) -> None:
    receipt = fresh(ledger, "pending")

    summary = verify_receipt(receipt, ledger.verifier)

    assert receipt["records"]["outcome"] is None
    assert summary.outcome == "unknown"
    assert summary.outcome_detail == "no outcome was recorded when the receipt was made"
    assert summary.action["amount"] == {"unit": "EUR", "value": "25"}
    assert summary.tree_size == 10


def test_receipt_survives_json(ledger: Ledger) -> None:
    text = json.dumps(ledger.receipts["paid"], indent=2, sort_keys=True)

    assert verify_receipt(json.loads(text), ledger.verifier).binding_id == ledger.bindings["paid"].id


def test_receipt_unknown_binding(ledger: Ledger) -> None:
    with pytest.raises(NotFoundError, match="binding binding-missing not found"):
        ledger.world.gate.receipt("binding-missing")


def test_receipt_other_gate_key(ledger: Ledger, tmp_path: Path) -> None:
    other = create_gate_key(tmp_path / "other-gate.key", ledger.verifier.name)

    with pytest.raises(ReceiptError, match="checkpoint: checkpoint has no signature by") as caught:
        verify_receipt(fresh(ledger), other.verifier)

    assert caught.value.part == "checkpoint"


def test_oracle_checks_receipts(ledger: Ledger) -> None:
    # tlog-scales checks each receipt's checkpoint signature and inclusion proofs without etlb's code.
    oracle_key = Vkey.from_string(str(ledger.verifier))
    for receipt in ledger.receipts.values():
        checkpoint = OracleCheckpoint.from_text(receipt["checkpoint"])
        checkpoint.verify(oracle_key)
        for entry in receipt["records"].values():
            if entry is None:
                continue
            proof = [base64.b64decode(item) for item in entry["inclusion_proof"]]
            leaf = hashlib.sha256(b"\x00" + entry["record"].encode()).digest()

            InclusionProof(entry["leaf_index"], checkpoint.size, proof).check(leaf, checkpoint.root_hash)


# altered receipts: each failure names the part that was changed


def changed_character(text: str, index: int) -> str:
    """Replace the character at `index` by another one of the base64url alphabet."""
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


def replace_in_record(receipt: Receipt, part: str, old: str, new: str) -> None:
    entry = receipt["records"][part]
    assert old in entry["record"], f"{old!r} is not in records.{part}"
    entry["record"] = entry["record"].replace(old, new, 1)


def with_unused_bits_changed(encoded: str) -> str:
    """Return another base64 text of the same bytes: the last character before '=' has unused bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = encoded.rstrip("=")
    changed = stripped[:-1] + alphabet[alphabet.index(stripped[-1]) ^ 1] + encoded[len(stripped) :]
    assert base64.b64decode(changed) == base64.b64decode(encoded)
    return changed


def change_jws_signature(receipt: Receipt, other: Receipt) -> None:
    receipt["scope"]["jws"] = changed_character(receipt["scope"]["jws"], -5)


def change_jws_payload(receipt: Receipt, other: Receipt) -> None:
    header, payload, signature = receipt["scope"]["jws"].split(".")
    receipt["scope"]["jws"] = f"{header}.{changed_character(payload, 40)}.{signature}"


def change_public_jwk(receipt: Receipt, other: Receipt) -> None:
    receipt["bearer"]["public_jwk"] = public_jwk(generate_private_key())


def change_proof_hash(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["bearer"]["inclusion_proof"][0] = base64.b64encode(bytes(32)).decode()


def change_checkpoint_root(receipt: Receipt, other: Receipt) -> None:
    lines = receipt["checkpoint"].split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    receipt["checkpoint"] = "\n".join(lines)


def change_checkpoint_size(receipt: Receipt, other: Receipt) -> None:
    receipt["checkpoint"] = receipt["checkpoint"].replace("\n10\n", "\n11\n", 1)


def change_checkpoint_signature(receipt: Receipt, other: Receipt) -> None:
    receipt["checkpoint"] = changed_character(receipt["checkpoint"], -20)


def swap_binding_and_outcome(receipt: Receipt, other: Receipt) -> None:
    records = receipt["records"]
    records["binding"], records["outcome"] = records["outcome"], records["binding"]


def use_other_bearer_record(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["bearer"] = other["records"]["bearer"]


def use_other_scope(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["scope"] = other["records"]["scope"]
    receipt["scope"] = other["scope"]


def use_other_binding(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["binding"] = other["records"]["binding"]
    receipt["binding_id"] = other["binding_id"]
    receipt["action_digest"] = other["action_digest"]


def use_other_outcome(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["outcome"] = other["records"]["outcome"]


def rename_outcome(receipt: Receipt, other: Receipt) -> None:
    receipt["records"]["outcomes"] = receipt["records"].pop("outcome")


def non_canonical_proof(receipt: Receipt, other: Receipt) -> None:
    proof = receipt["records"]["bearer"]["inclusion_proof"]
    proof[0] = with_unused_bits_changed(proof[0])


def set_path(path: tuple[Any, ...], value: Any) -> Callable[[Receipt, Receipt], None]:
    def alter(receipt: Receipt, other: Receipt) -> None:
        container = receipt
        for key in path[:-1]:
            container = container[key]
        container[path[-1]] = value

    return alter


def edit_record(part: str, old: str, new: str) -> Callable[[Receipt, Receipt], None]:
    return lambda receipt, other: replace_in_record(receipt, part, old, new)


NOT_IN_TREE = "is not in the checkpoint's tree of 10 records"
CHECKPOINT_CHANGED = "checkpoint signature by {origin} does not verify: the note was changed or forged"

ALTERATIONS = [
    pytest.param(
        change_jws_signature, "scope", "differs from the declaration in records.scope", id="scope-jws-signature"
    ),
    pytest.param(change_jws_payload, "scope", "differs from the declaration in records.scope", id="scope-jws-payload"),
    pytest.param(change_public_jwk, "bearer.public_jwk", "differs from the key registered", id="bearer-public-jwk"),
    pytest.param(
        set_path(("bearer", "key_id"), "k" * 43), "bearer", "does not match the bearer and key", id="bearer-key-id"
    ),
    pytest.param(set_path(("bearer", "id"), "bob"), "bearer", "does not match the bearer and key", id="bearer-id"),
    pytest.param(set_path(("bearer", "name"), "Mallory"), "bearer.name", "differs from the name", id="bearer-name"),
    pytest.param(
        edit_record("binding", '"bearer":"alice"', '"bearer":"mallory"'),
        "records.binding",
        f"the record at leaf 2 {NOT_IN_TREE}",
        id="binding-record-bearer",
    ),
    pytest.param(
        edit_record("binding", '"value":"40"', '"value":"4"'),
        "records.binding",
        f"the record at leaf 2 {NOT_IN_TREE}",
        id="binding-record-amount",
    ),
    pytest.param(
        edit_record("outcome", '"status":"succeeded"', '"status":"failed"'),
        "records.outcome",
        f"the record at leaf 3 {NOT_IN_TREE}",
        id="outcome-status",
    ),
    pytest.param(
        edit_record("scope", '"bearer":"alice"', '"bearer":"bob"'),
        "records.scope",
        f"the record at leaf 1 {NOT_IN_TREE}",
        id="scope-record",
    ),
    pytest.param(
        edit_record("bearer", '"name":"Alice"', '"name":"Mallory"'),
        "records.bearer",
        f"the record at leaf 0 {NOT_IN_TREE}",
        id="bearer-record-name",
    ),
    pytest.param(
        set_path(("records", "binding", "leaf_index"), 3),
        "records.binding",
        f"the record at leaf 3 {NOT_IN_TREE}",
        id="leaf-index",
    ),
    pytest.param(
        set_path(("records", "binding", "leaf_index"), -1),
        "records.binding.leaf_index",
        "is -1; expected a non-negative integer",
        id="leaf-index-negative",
    ),
    pytest.param(
        set_path(("records", "binding", "leaf_index"), "2"),
        "records.binding.leaf_index",
        "is '2'; expected a non-negative integer",
        id="leaf-index-string",
    ),
    pytest.param(change_proof_hash, "records.bearer", f"the record at leaf 0 {NOT_IN_TREE}", id="proof-hash"),
    pytest.param(
        lambda receipt, other: receipt["records"]["scope"]["inclusion_proof"].pop(),
        "records.scope",
        f"the record at leaf 1 {NOT_IN_TREE}",
        id="proof-element-removed",
    ),
    pytest.param(
        lambda receipt, other: receipt["records"]["scope"]["inclusion_proof"].append(
            base64.b64encode(bytes(32)).decode()
        ),
        "records.scope",
        f"the record at leaf 1 {NOT_IN_TREE}",
        id="proof-element-added",
    ),
    pytest.param(
        set_path(("records", "scope", "inclusion_proof"), ["not base64!"]),
        "records.scope.inclusion_proof",
        "is not a list of base64 hashes",
        id="proof-not-base64",
    ),
    pytest.param(
        non_canonical_proof,
        "records.bearer.inclusion_proof",
        "has a hash that is not in canonical base64",
        id="proof-non-canonical-base64",
    ),
    pytest.param(change_checkpoint_root, "checkpoint", CHECKPOINT_CHANGED, id="checkpoint-root-line"),
    pytest.param(change_checkpoint_size, "checkpoint", CHECKPOINT_CHANGED, id="checkpoint-size-line"),
    pytest.param(change_checkpoint_signature, "checkpoint", CHECKPOINT_CHANGED, id="checkpoint-signature"),
    pytest.param(set_path(("checkpoint",), None), "checkpoint", "is missing or not a str", id="checkpoint-missing"),
    pytest.param(
        set_path(("format",), "etlb-receipt/v2"),
        "format",
        "is 'etlb-receipt/v2'; expected 'etlb-receipt/v1'",
        id="format",
    ),
    pytest.param(
        set_path(("binding_id",), "binding-000000000000000000000000"),
        "binding_id",
        "does not match records.binding",
        id="binding-id",
    ),
    pytest.param(
        set_path(("action_digest",), "sha256:" + "0" * 64),
        "action_digest",
        "does not match the action in records.binding",
        id="action-digest",
    ),
    pytest.param(
        swap_binding_and_outcome,
        "records.binding",
        "is a 'outcome' record, not a binding",
        id="binding-outcome-swapped",
    ),
    pytest.param(
        rename_outcome,
        "records",
        "has the parts ['bearer', 'binding', 'outcomes', 'scope']; expected exactly",
        id="outcome-renamed",
    ),
    pytest.param(
        use_other_bearer_record, "bearer", "does not match the bearer and key", id="other-bearer-registration"
    ),
    pytest.param(use_other_scope, "records.scope", "was declared by bob with another key", id="other-scope"),
    pytest.param(
        use_other_binding, "records.binding", "names another scope or bearer than the receipt", id="other-binding"
    ),
    pytest.param(use_other_outcome, "records.outcome", "belongs to another binding", id="other-outcome"),
]


@pytest.mark.parametrize(("alter", "part", "message"), ALTERATIONS)
def test_altered_receipt_rejected(
    ledger: Ledger, alter: Callable[[Receipt, Receipt], None], part: str, message: str
) -> None:
    receipt = fresh(ledger)
    alter(receipt, fresh(ledger, "failed"))

    expected = f"{part}: {message.format(origin=ledger.verifier.name)}"

    with pytest.raises(ReceiptError, match="^" + re.escape(expected)) as caught:
        verify_receipt(receipt, ledger.verifier)

    assert caught.value.part == part


def test_receipt_not_object(ledger: Ledger) -> None:
    with pytest.raises(ReceiptError, match="receipt: must be a JSON object") as caught:
        verify_receipt([ledger.receipts["paid"]], ledger.verifier)

    assert caught.value.part == "receipt"


# forgeries by an operator who has the gate key: the bearer's signature and the links between records still count


def reseal(ledger: Ledger, receipt: Receipt, edit: Callable[[list[dict[str, Any]]], None]) -> Receipt:
    """Edit the ledger's records, rebuild their Merkle tree and sign it with the gate key, then rebuild the receipt."""
    parsed = [json.loads(entry.record) for entry in ledger.world.gate.store.ledger_entries()]
    edit(parsed)
    records = [canonical_bytes(record) for record in parsed]

    nodes: dict[tuple[int, int], bytes] = {}

    def read(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    for index, record in enumerate(records):
        for level, position, digest in perfect_nodes_for_append(index, leaf_hash(record), read):
            nodes[(level, position)] = digest
    size = len(records)
    note = ledger.signer.sign(size, root_hash(size, read))

    material: dict[str, tuple[int, bytes, list[bytes]] | None] = {}
    for part, entry in receipt["records"].items():
        if entry is None:
            material[part] = None
            continue
        sequence = entry["leaf_index"]
        material[part] = (sequence, records[sequence], inclusion_proof(sequence, size, read))
    return build_receipt(receipt["binding_id"], ReceiptMaterial(records=material, checkpoint=note))


def scope_id_of(jws: str) -> str:
    return "scope-" + hashlib.sha256(jws.encode()).hexdigest()[:32]


def replace_scope_token(records: list[dict[str, Any]], jws: str) -> None:
    """Put another token in record 1 and give it the id it hashes to, in the scope and binding records."""
    records[1]["data"]["jws"] = jws
    records[1]["data"]["scope_id"] = scope_id_of(jws)
    records[2]["data"]["scope_id"] = scope_id_of(jws)


def raise_scope_cap(records: list[dict[str, Any]]) -> None:
    header, payload, signature = records[1]["data"]["jws"].split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["limits"]["max_amount"] = "1000000"
    encoded = base64.urlsafe_b64encode(canonical_bytes(decoded)).rstrip(b"=").decode()
    replace_scope_token(records, f"{header}.{encoded}.{signature}")


def resign_scope(records: list[dict[str, Any]]) -> None:
    _, payload = read_unverified(records[1]["data"]["jws"])
    replace_scope_token(records, sign_payload(generate_private_key(), payload, typ=SCOPE_TYP))


def set_field(sequence: int, path: tuple[str, ...], value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def edit(records: list[dict[str, Any]]) -> None:
        container = records[sequence]
        for key in path[:-1]:
            container = container[key]
        container[path[-1]] = value

    return edit


def set_action_field(field: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    """Change the bound action and recompute its digest, as a forger holding the gate key would."""

    def edit(records: list[dict[str, Any]]) -> None:
        action = records[2]["data"]["action"]
        action[field] = value
        action["digest"] = sha256_digest(action_from_json(action).canonical_fields())

    return edit


FORGERIES = [
    pytest.param(raise_scope_cap, "scope.jws", "the bearer's signature does not verify", id="scope-payload-changed"),
    pytest.param(resign_scope, "scope.jws", "the bearer's signature does not verify", id="scope-signed-by-other-key"),
    pytest.param(
        set_field(2, ("time",), "2027-01-01T00:00:00.000Z"),
        "records.binding",
        "was made at 2027-01-01T00:00:00.000Z, outside the scope's window",
        id="binding-outside-window",
    ),
    pytest.param(
        set_field(2, ("data", "action", "kind"), "payments.refund"),
        "records.binding",
        "the action's digest is not the SHA-256 of its fields",
        id="action-changed-digest-kept",
    ),
    pytest.param(
        set_action_field("kind", "payments.refund"),
        "records.binding",
        "the action is not covered by the scope: kind payments.refund is not covered by kinds payments.transfer",
        id="kind-not-covered",
    ),
    pytest.param(
        set_action_field("resource", "account:DE02"),
        "records.binding",
        "the action is not covered by the scope: resource account:DE02 is not covered by account:DE01",
        id="resource-not-covered",
    ),
    pytest.param(
        set_field(2, ("data", "bearer"), "bob"),
        "records.binding",
        "names another scope or bearer than the receipt",
        id="binding-names-bob",
    ),
    pytest.param(
        set_field(3, ("data", "binding_id"), "binding-other"),
        "records.outcome",
        "belongs to another binding",
        id="outcome-of-other-binding",
    ),
    pytest.param(
        set_field(2, ("seq",), 5), "records.binding.record", "states sequence 5, not its leaf index 2", id="binding-seq"
    ),
    pytest.param(
        set_field(0, ("type",), "bearer.status"),
        "records.bearer",
        "is a 'bearer.status' record, not a bearer registration",
        id="bearer-record-type",
    ),
    pytest.param(
        set_field(1, ("type",), "scope.revoked"),
        "records.scope",
        "is a 'scope.revoked' record, not a scope declaration",
        id="scope-record-type",
    ),
    pytest.param(
        set_field(3, ("type",), "refusal"),
        "records.outcome",
        "is a 'refusal' record, not an outcome",
        id="outcome-type",
    ),
]


def test_reseal_reproduces_receipt(ledger: Ledger) -> None:
    # Guards the forgery table: without an edit the rebuilt receipt is the gate's own, byte for byte.
    assert reseal(ledger, fresh(ledger), lambda records: None) == ledger.receipts["paid"]


@pytest.mark.parametrize(("edit", "part", "message"), FORGERIES)
def test_gate_key_forgery_rejected(
    ledger: Ledger, edit: Callable[[list[dict[str, Any]]], None], part: str, message: str
) -> None:
    receipt = reseal(ledger, fresh(ledger), edit)

    with pytest.raises(ReceiptError, match="^" + re.escape(f"{part}: {message}")) as caught:
        verify_receipt(receipt, ledger.verifier)

    assert caught.value.part == part


# properties: no single changed character passes


def receipt_text(ledger: Ledger) -> str:
    return json.dumps(ledger.receipts["paid"], indent=2, sort_keys=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_changed_character_never_passes(ledger: Ledger, data: st.DataObject) -> None:
    text = receipt_text(ledger)
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1), label="position")
    character = data.draw(st.characters(codec="ascii").filter(lambda value: value != text[position]), label="new")
    altered = text[:position] + character + text[position + 1 :]

    try:
        document = json.loads(altered)
    except json.JSONDecodeError:
        return
    if document == ledger.receipts["paid"]:
        # Whitespace between JSON tokens carries no content.
        return
    with pytest.raises(ReceiptError):
        verify_receipt(document, ledger.verifier)


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in string_paths(item, (*path, key))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in string_paths(item, (*path, index))]
    return []


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_changed_string_never_passes(ledger: Ledger, data: st.DataObject) -> None:
    receipt = fresh(ledger)
    path = data.draw(st.sampled_from(string_paths(receipt)), label="path")
    container = receipt
    for key in path[:-1]:
        container = container[key]
    text = container[path[-1]]
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1), label="position")
    character = data.draw(
        st.characters(exclude_categories=["Cs"]).filter(lambda value: value != text[position]), label="new"
    )
    container[path[-1]] = text[:position] + character + text[position + 1 :]

    with pytest.raises(ReceiptError):
        verify_receipt(receipt, ledger.verifier)
