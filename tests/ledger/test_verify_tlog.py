"""Ledger verification with signed checkpoints: what the Merkle roots catch that the hash chain cannot.

Each test's ledger has seven records. Each is written by its own transaction, which also signs a
checkpoint, so there is a checkpoint at every size from 1 to 7. The records:

- 0: alice registered; 1: her git scope, for two executions;
- 2 and 4: bindings of two commits; 3 and 5: their outcomes;
- 6: the refusal of a third commit.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etlb.canonical import canonical_bytes
from etlb.errors import Refused
from etlb.gate_key import create_gate_key, load_gate_signer
from etlb.ledger.checkpoint import NoteVerifier, parse_verifier_key, verify_checkpoint
from etlb.ledger.merkle import CompactRange, perfect_nodes_for_append, verify_consistency
from etlb.ledger.records import GENESIS_CHAIN_HASH, LedgerEntry, chain_hash, leaf_hash
from etlb.ledger.verify import VerificationReport, verify_ledger
from etlb.model import ToolCall
from tests.conftest import PAYMENTS_CONFIG, World, build_world


def commit_call(number: int) -> ToolCall:
    return ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": f"change {number}"})


def fill_ledger(world: World) -> World:
    world.add_bearer("alice")
    world.declare("alice", kinds=["git.commit"], resources=["repo:/srv/app"], max_count=2)
    for number in range(2):
        with world.gate.execution(commit_call(number)):
            pass
    with pytest.raises(Refused):
        world.gate.bind(commit_call(2))
    return world


@pytest.fixture
def busy(world: World) -> World:
    return fill_ledger(world)


def gate_verifier(world: World) -> NoteVerifier:
    return parse_verifier_key((world.path.parent / "etlb-gate.pub").read_text(encoding="utf-8"))


def verify(world: World, against_note: str | None = None) -> VerificationReport:
    store = world.gate.store
    verifier = gate_verifier(world)
    against = verify_checkpoint(against_note, verifier) if against_note is not None else None
    return verify_ledger(
        store.ledger_entries(),
        usage_table=store.usage_table(),
        checkpoints=store.checkpoints(),
        verifier=verifier,
        against=against,
    )


def problems(report: VerificationReport) -> list[tuple[int | None, str]]:
    return [(problem.sequence, problem.message) for problem in report.problems]


def open_raw(world: World) -> sqlite3.Connection:
    """Open the store as an operator who has dropped the insert-only triggers of the ledger tables."""
    connection = sqlite3.connect(world.path, isolation_level=None)
    for table in ("ledger", "merkle_nodes", "checkpoints"):
        for operation in ("update", "delete"):
            connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    return connection


def edit_record(connection: sqlite3.Connection, sequence: int, change: Callable[[dict[str, Any]], None]) -> None:
    (record,) = connection.execute("SELECT record FROM ledger WHERE seq = ?", (sequence,)).fetchone()
    parsed = json.loads(record)
    change(parsed)
    connection.execute("UPDATE ledger SET record = ? WHERE seq = ?", (canonical_bytes(parsed), sequence))


def rewrite_hashes(connection: sqlite3.Connection) -> None:
    """Recompute every leaf and chain hash, but no Merkle node or checkpoint, after an edit."""
    previous = GENESIS_CHAIN_HASH
    for sequence, record in connection.execute("SELECT seq, record FROM ledger ORDER BY seq").fetchall():
        leaf = leaf_hash(bytes(record))
        previous = chain_hash(previous, leaf)
        connection.execute("UPDATE ledger SET leaf_hash = ?, chain_hash = ? WHERE seq = ?", (leaf, previous, sequence))


def prefix_roots(records: list[bytes]) -> list[bytes]:
    """Return the Merkle root of the first n records for n = 1 .. len(records)."""
    tree = CompactRange()
    roots = []
    for record in records:
        tree.append(leaf_hash(record))
        roots.append(tree.root())
    return roots


def stored_records(world: World) -> list[bytes]:
    return [entry.record for entry in world.gate.store.ledger_entries()]


def stored_note(world: World, size: int) -> str:
    return dict(world.gate.store.checkpoints())[size]


def rewrite_history(database: Path, gate_key: Path, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    """Edit records as an operator who has the gate key would: every hash, node and checkpoint redone.

    The leaf and chain hashes, the stored Merkle subtrees and a checkpoint at every size that had one
    are recomputed and signed again, so the store is consistent with itself afterwards.
    """
    signer = load_gate_signer(gate_key, None)
    connection = sqlite3.connect(database, isolation_level=None)
    for table in ("ledger", "merkle_nodes", "checkpoints"):
        for operation in ("update", "delete"):
            connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    parsed = [json.loads(record) for (record,) in connection.execute("SELECT record FROM ledger ORDER BY seq")]
    sizes = {size for (size,) in connection.execute("SELECT size FROM checkpoints")}
    edit(parsed)
    connection.execute("DELETE FROM merkle_nodes")
    connection.execute("DELETE FROM checkpoints")

    nodes: dict[tuple[int, int], bytes] = {}
    tree = CompactRange()
    previous = GENESIS_CHAIN_HASH
    for sequence, record in enumerate(parsed):
        data = canonical_bytes(record)
        leaf = leaf_hash(data)
        previous = chain_hash(previous, leaf)
        connection.execute(
            "UPDATE ledger SET record = ?, leaf_hash = ?, chain_hash = ? WHERE seq = ?",
            (data, leaf, previous, sequence),
        )
        for level, index, digest in perfect_nodes_for_append(
            sequence, leaf, lambda level, index: nodes[(level, index)]
        ):
            nodes[(level, index)] = digest
            connection.execute("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", (level, index, digest))
        tree.append(leaf)
        if tree.size in sizes:
            note = signer.sign(tree.size, tree.root())
            connection.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (tree.size, note))
    connection.close()


def rename_alice(records: list[dict[str, Any]]) -> None:
    records[0]["data"]["bearer"]["name"] = "Mallory"


# stored checkpoints


def test_clean_store_passes(busy: World) -> None:
    report = verify(busy)

    assert report.problems == []
    assert report.size == 7
    assert report.checkpoints == 7
    assert report.root_hash == busy.gate.store.tree_head()[1]


def test_one_checkpoint_per_write(busy: World) -> None:
    verifier = gate_verifier(busy)
    roots = prefix_roots(stored_records(busy))

    stored = list(busy.gate.store.checkpoints())

    assert [size for size, _ in stored] == [1, 2, 3, 4, 5, 6, 7]
    assert [verify_checkpoint(note, verifier).root for _, note in stored] == roots


def test_rehashed_edit_caught_by_checkpoint(busy: World) -> None:
    signed = [verify_checkpoint(note, gate_verifier(busy)).root for _, note in busy.gate.store.checkpoints()]
    connection = open_raw(busy)
    # The replay does not check an outcome's status, so only the signed roots can catch this edit.
    edit_record(connection, 3, lambda record: record["data"].update(status="failed"))
    rewrite_hashes(connection)
    roots = prefix_roots(stored_records(busy))

    report = verify(busy)

    assert problems(report) == [
        (
            size - 1,
            f"checkpoint of tree size {size} signed root {signed[size - 1].hex()}, but the records up to it have "
            f"root {roots[size - 1].hex()}: a record up to {size - 1} was changed after it was signed",
        )
        for size in (4, 5, 6, 7)
    ]


def test_rehashed_edit_missed_by_chain(busy: World) -> None:
    connection = open_raw(busy)
    edit_record(connection, 3, lambda record: record["data"].update(status="failed"))
    rewrite_hashes(connection)

    report = verify_ledger(busy.gate.store.ledger_entries(), usage_table=busy.gate.store.usage_table())

    assert report.problems == []


def test_forged_checkpoint_note(busy: World) -> None:
    verifier = gate_verifier(busy)
    note = stored_note(busy, 3)
    root_line = note.split("\n")[2]
    connection = open_raw(busy)
    forged = note.replace(root_line, base64.b64encode(bytes(32)).decode())
    connection.execute("UPDATE checkpoints SET note = ? WHERE size = 3", (forged,))

    report = verify(busy)

    assert problems(report) == [
        (
            2,
            f"checkpoint of tree size 3: checkpoint signature by {verifier.name} does not verify: "
            "the note was changed or forged",
        )
    ]


def test_checkpoint_filed_under_other_size(busy: World) -> None:
    connection = open_raw(busy)
    connection.execute("UPDATE checkpoints SET note = ? WHERE size = 3", (stored_note(busy, 4),))

    report = verify(busy)

    assert problems(report) == [(2, "checkpoint stored for tree size 3 states size 4")]


def test_checkpoint_signed_by_other_key(busy: World, tmp_path: Path) -> None:
    verifier = gate_verifier(busy)
    other = create_gate_key(tmp_path / "other-gate.key", verifier.name)
    note = other.sign(3, prefix_roots(stored_records(busy))[2])
    connection = open_raw(busy)
    connection.execute("UPDATE checkpoints SET note = ? WHERE size = 3", (note,))

    report = verify(busy)

    assert problems(report) == [
        (
            2,
            f"checkpoint of tree size 3: checkpoint has no signature by {verifier.name} "
            f"with key hash {verifier.key_hash.hex()}",
        )
    ]


def test_deleted_checkpoint_allowed(busy: World) -> None:
    connection = open_raw(busy)
    connection.execute("DELETE FROM checkpoints WHERE size = 3")

    report = verify(busy)

    assert report.problems == []
    assert report.checkpoints == 6


def test_checkpoint_beyond_ledger(busy: World) -> None:
    connection = open_raw(busy)
    connection.execute("INSERT INTO checkpoints (size, note) VALUES (9, ?)", (stored_note(busy, 7),))

    report = verify(busy)

    assert problems(report) == [(None, "a checkpoint is stored for tree size 9, but the ledger has 7 records")]


# an earlier checkpoint kept by the verifier


def test_against_extended_ledger(busy: World) -> None:
    old_note = stored_note(busy, 7)
    old = verify_checkpoint(old_note, gate_verifier(busy))
    with pytest.raises(Refused):
        busy.gate.bind(commit_call(3))

    report = verify(busy, against_note=old_note)

    assert report.problems == []
    assert report.size == 8
    assert verify_consistency(7, 8, old.root, report.root_hash, busy.gate.store.consistency_proof(7, 8))


@pytest.mark.parametrize("old_size", [3, 7], ids=["size-3", "size-7"])
def test_against_rewritten_history(busy: World, old_size: int) -> None:
    verifier = gate_verifier(busy)
    old_note = stored_note(busy, old_size)
    old = verify_checkpoint(old_note, verifier)
    with pytest.raises(Refused):
        busy.gate.bind(commit_call(3))
    rewrite_history(busy.path, busy.path.parent / "etlb-gate.key", rename_alice)
    new_root = prefix_roots(stored_records(busy))[old_size - 1]

    report = verify(busy, against_note=old_note)

    assert problems(report) == [
        (
            old_size - 1,
            f"history was rewritten: the first {old_size} records have root {new_root.hex()}, "
            f"but the earlier checkpoint of {verifier.name} signed root {old.root.hex()}",
        )
    ]


def test_rewritten_history_self_consistent(busy: World) -> None:
    # Without an earlier checkpoint, a rewrite signed with the gate key verifies like the real history.
    old = verify_checkpoint(stored_note(busy, 7), gate_verifier(busy))
    rewrite_history(busy.path, busy.path.parent / "etlb-gate.key", rename_alice)
    size, root = busy.gate.store.tree_head()

    report = verify(busy)

    assert report.problems == []
    assert report.checkpoints == 7
    assert json.loads(stored_records(busy)[0])["data"]["bearer"]["name"] == "Mallory"
    assert (size, root) == (7, report.root_hash)
    assert root != old.root


def test_rewrite_breaks_consistency_proof(busy: World) -> None:
    old = verify_checkpoint(stored_note(busy, 3), gate_verifier(busy))
    rewrite_history(busy.path, busy.path.parent / "etlb-gate.key", rename_alice)
    size, root = busy.gate.store.tree_head()

    proof = busy.gate.store.consistency_proof(3, size)

    assert not verify_consistency(3, size, old.root, root, proof)


def test_against_removed_records(busy: World) -> None:
    old_note = stored_note(busy, 7)
    connection = open_raw(busy)
    connection.execute("DELETE FROM ledger WHERE seq >= 5")
    connection.execute("DELETE FROM checkpoints WHERE size > 5")

    report = verify(busy, against_note=old_note)

    assert problems(report) == [
        (None, "the ledger has 5 records, fewer than the 7 of the earlier checkpoint: records were removed")
    ]


# properties: any single change to a small ledger is found


@dataclass(frozen=True)
class Sample:
    entries: list[LedgerEntry]
    checkpoints: list[tuple[int, str]]
    verifier: NoteVerifier


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    folder = tmp_path_factory.mktemp("ledger")
    world = fill_ledger(build_world(folder, PAYMENTS_CONFIG))
    store = world.gate.store
    yield Sample(list(store.ledger_entries()), list(store.checkpoints()), gate_verifier(world))
    world.gate.close()


def rehashed(records: list[bytes]) -> list[LedgerEntry]:
    """Return entries with leaf and chain hashes recomputed, as an operator would after an edit."""
    entries = []
    previous = GENESIS_CHAIN_HASH
    for sequence, record in enumerate(records):
        leaf = leaf_hash(record)
        previous = chain_hash(previous, leaf)
        entries.append(LedgerEntry(sequence, record, leaf, previous))
    return entries


def renumbered(records: list[bytes]) -> list[bytes]:
    """Rewrite each record's `seq` to its new position, so that the records look gapless again."""
    return [canonical_bytes({**json.loads(record), "seq": sequence}) for sequence, record in enumerate(records)]


def assert_detected(sample: Sample, entries: list[LedgerEntry]) -> None:
    report = verify_ledger(entries, checkpoints=sample.checkpoints, verifier=sample.verifier)

    assert not report.ok, "the tampered ledger verified"


def test_sample_verifies(sample: Sample) -> None:
    # Guards the properties below: the untouched sample passes, so each failure there is the change's.
    report = verify_ledger(sample.entries, checkpoints=sample.checkpoints, verifier=sample.verifier)

    assert report.problems == []
    assert report.checkpoints == 7


@settings(max_examples=25, deadline=None)
@given(data=st.data(), recompute=st.booleans())
def test_changed_record_byte_found(sample: Sample, data: st.DataObject, recompute: bool) -> None:
    index = data.draw(st.integers(0, len(sample.entries) - 1), label="record")
    record = bytearray(sample.entries[index].record)
    position = data.draw(st.integers(0, len(record) - 1), label="position")
    record[position] = data.draw(st.integers(0, 255).filter(lambda value: value != record[position]), label="byte")
    records = [entry.record for entry in sample.entries]
    records[index] = bytes(record)

    if recompute:
        entries = rehashed(records)
    else:
        entries = list(sample.entries)
        entries[index] = LedgerEntry(index, bytes(record), entries[index].leaf_hash, entries[index].chain_hash)

    assert_detected(sample, entries)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), column=st.sampled_from(["leaf_hash", "chain_hash"]))
def test_changed_hash_byte_found(sample: Sample, data: st.DataObject, column: str) -> None:
    index = data.draw(st.integers(0, len(sample.entries) - 1), label="record")
    entry = sample.entries[index]
    digest = bytearray(getattr(entry, column))
    position = data.draw(st.integers(0, 31), label="position")
    digest[position] ^= data.draw(st.integers(1, 255), label="mask")
    entries = list(sample.entries)
    if column == "leaf_hash":
        entries[index] = LedgerEntry(index, entry.record, bytes(digest), entry.chain_hash)
    else:
        entries[index] = LedgerEntry(index, entry.record, entry.leaf_hash, bytes(digest))

    assert_detected(sample, entries)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), recompute=st.booleans())
def test_deleted_record_found(sample: Sample, data: st.DataObject, recompute: bool) -> None:
    index = data.draw(st.integers(0, len(sample.entries) - 1), label="record")
    remaining = [entry for entry in sample.entries if entry.sequence != index]

    entries = rehashed(renumbered([entry.record for entry in remaining])) if recompute else remaining

    assert_detected(sample, entries)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), recompute=st.booleans())
def test_swapped_records_found(sample: Sample, data: st.DataObject, recompute: bool) -> None:
    first = data.draw(st.integers(0, len(sample.entries) - 2), label="first")
    second = data.draw(st.integers(first + 1, len(sample.entries) - 1), label="second")
    swapped = list(sample.entries)
    swapped[first], swapped[second] = swapped[second], swapped[first]

    entries = rehashed(renumbered([entry.record for entry in swapped])) if recompute else swapped

    assert_detected(sample, entries)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), recompute=st.booleans())
def test_inserted_record_found(sample: Sample, data: st.DataObject, recompute: bool) -> None:
    source = data.draw(st.integers(0, len(sample.entries) - 1), label="copied record")
    # A record added after the newest checkpoint looks like the next write, so insertions go before the
    # last record. A copy inserted just before its original equals one inserted just after it, so the
    # largest position is the second-to-last.
    position = data.draw(st.integers(0, len(sample.entries) - 2), label="position")
    grown = list(sample.entries)
    grown.insert(position, sample.entries[source])

    entries = rehashed(renumbered([entry.record for entry in grown])) if recompute else grown

    assert_detected(sample, entries)
