"""Measure the ledger: append rates, Merkle root and proof times, and verification speed.

Run from the repository root after `make test` or `make demo` has created .venv:

    .venv/bin/python benchmarks/ledger_bench.py [--records 1000000] [--output benchmarks/results.md]

It builds a real SQLite ledger (WAL, synchronous=FULL, a signed checkpoint per committed write) in a
temporary folder, so the figures include every fsync. Root and proof times are compared, as a ratio,
with pymerkle, an independent RFC 9162 implementation, on the same leaves. Results are written as a
Markdown section with the machine and the command.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pymerkle import InmemoryTree

from etlb.config import parse_config
from etlb.declarations import SCOPE_TYP, scope_payload
from etlb.gate import Gate
from etlb.gate_key import create_gate_key
from etlb.ledger import merkle
from etlb.ledger.checkpoint import parse_verifier_key
from etlb.ledger.records import RecordType
from etlb.ledger.verify import verify_ledger
from etlb.model import Bearer, BearerKey, Limits, ToolCall
from etlb.signing import generate_private_key, key_id, public_jwk, sign_payload
from etlb.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
from results_page import machine, write_section

CONFIG = """
[gate]
store = "sqlite:///bench.db"
agent = "bench-agent"

[[rules]]
server = "bank"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "EUR"
"""

BATCH_SIZES = (100, 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="ledger size to build (default 1000000)")
    parser.add_argument("--bindings", type=int, default=2000, help="bindings with one commit each (default 2000)")
    parser.add_argument("--oracle-leaves", type=int, default=100_000, help="leaves for the pymerkle comparison")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results.md"), help="results file")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="etlb-bench-") as folder:
        rows = run(Path(folder), options)

    section = render(rows, options)
    write_section(options.output, "Ledger,", section)
    print(section)
    return 0


def run(folder: Path, options: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    config = parse_config(CONFIG, path=folder / "etlb.toml")
    signer = create_gate_key(folder / "etlb-gate.key", None)
    store = SQLiteStore(folder / "bench.db", signer=signer)
    gate = Gate(config, store)
    declare_scope(gate)

    started = time.perf_counter()
    for number in range(options.bindings):
        call = ToolCall(tool="transfer", server="bank", arguments={"from_account": "DE89", "amount": "1", "n": number})
        gate.bind(call)
    elapsed = time.perf_counter() - started
    rows.append(("bindings, one commit and checkpoint each", f"{options.bindings / elapsed:,.0f} per second"))

    for batch in BATCH_SIZES:
        count = min(20 * batch, options.records)
        elapsed = append_batches(store, count, batch)
        rows.append((f"ledger records appended in batches of {batch}", f"{count / elapsed:,.0f} per second"))

    remaining = options.records - store.ledger_size()
    print(f"building the ledger to {options.records:,} records …", file=sys.stderr)
    append_batches(store, remaining, 1000)
    size, root = store.tree_head()
    rows.append(("ledger size", f"{size:,} records"))

    rows.append(("root hash from stored subtrees", timing(store.tree_head, 200)))
    indices = [random.randrange(size) for _ in range(500)]
    rows.append(("inclusion proof, generate", timing_each(lambda index: store.inclusion_proof(index, size), indices)))
    proofs = [(index, store.inclusion_proof(index, size)) for index in indices]
    leaves = {index: entry_leaf(store, index) for index in indices}
    rows.append(
        (
            "inclusion proof, verify",
            timing_each(lambda item: merkle.verify_inclusion(leaves[item[0]], item[0], size, item[1], root), proofs),
        )
    )
    olds = [random.randrange(1, size) for _ in range(500)]
    rows.append(("consistency proof, generate", timing_each(lambda old: store.consistency_proof(old, size), olds)))

    rows.extend(compare_with_pymerkle(store, min(options.oracle_leaves, size)))

    verifier = parse_verifier_key(str(signer.verifier))
    started = time.perf_counter()
    report = verify_ledger(
        store.ledger_entries(), usage_table=store.usage_table(), checkpoints=store.checkpoints(), verifier=verifier
    )
    elapsed = time.perf_counter() - started
    if not report.ok:
        print(f"verification failed: {report.problems[:3]}", file=sys.stderr)
    rows.append(
        (
            "ledger verify (hashes, root, every checkpoint, replay)",
            f"{report.size / elapsed:,.0f} records per second ({report.checkpoints:,} checkpoints)",
        )
    )
    store.close()
    return rows


def declare_scope(gate: Gate) -> None:
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    gate.register_bearer(Bearer("bench", "Bench Bearer", (BearerKey(key_id(jwk), jwk),)))
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="bench",
        kinds=["payments.transfer"],
        resources=["account:*"],
        agents=["*"],
        limits=Limits(max_total=Decimal(10**9), unit="EUR"),
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
        terms="benchmark scope",
        issued_at=now,
    )
    gate.declare_scope(sign_payload(private_key, payload, typ=SCOPE_TYP))


def append_batches(store: SQLiteStore, count: int, batch: int) -> float:
    """Append `count` refusal-sized records, `batch` per transaction, through the store's own append.

    The store has no public batch API yet, so this uses its internal write transaction; each batch
    still gets one fsync and one signed checkpoint, as a group commit would.
    """
    data = {"refusal_id": "refusal-bench", "code": "no_covering_scope", "reasons": [], "message": "benchmark"}
    now = datetime.now(UTC)
    started = time.perf_counter()
    written = 0
    while written < count:
        step = min(batch, count - written)
        with store._write() as connection:
            for _ in range(step):
                store._append(connection, RecordType.REFUSAL, now, data)
        written += step
        if written % 100_000 < step:
            print(f"  {written:,} of {count:,}", file=sys.stderr)
    return time.perf_counter() - started


def entry_leaf(store: SQLiteStore, index: int) -> bytes:
    entry = store.entry(index)
    assert entry is not None
    return entry.leaf_hash


def compare_with_pymerkle(store: SQLiteStore, leaves: int) -> list[tuple[str, str]]:
    """Time the root and an inclusion proof over the first `leaves` records in etlb and in pymerkle."""
    tree = InmemoryTree(algorithm="sha256")
    for entry in store.ledger_entries(0, leaves):
        tree.append_entry(entry.record)

    indices = [random.randrange(leaves) for _ in range(200)]
    etlb_root = median_seconds(lambda: store.root_at(leaves), 50)
    # pymerkle may keep computed states, so its figure is a lower bound for a fresh computation.
    oracle_root = median_seconds(lambda: tree.get_state(leaves), 50)
    etlb_proof = statistics.median(
        seconds(lambda index=index: store.inclusion_proof(index, leaves)) for index in indices
    )
    oracle_proof = statistics.median(
        seconds(lambda index=index: tree.prove_inclusion(index + 1, leaves)) for index in indices
    )
    return [
        (f"root of {leaves:,} leaves, etlb / pymerkle", ratio(etlb_root, oracle_root)),
        (f"inclusion proof in {leaves:,} leaves, etlb / pymerkle", ratio(etlb_proof, oracle_proof)),
    ]


def ratio(ours: float, theirs: float) -> str:
    return f"{ours * 1e6:,.1f} µs vs {theirs * 1e6:,.1f} µs (ratio {ours / theirs:.3f})"


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    return statistics.median(seconds(action) for _ in range(repeats))


def timing(action: Callable[[], object], repeats: int) -> str:
    return f"{median_seconds(action, repeats) * 1e6:,.1f} µs median of {repeats}"


def timing_each(action: Callable[[object], object], items: list) -> str:
    durations = [seconds(lambda item=item: action(item)) for item in items]
    return f"{statistics.median(durations) * 1e6:,.1f} µs median of {len(items)}"


def render(rows: list[tuple[str, str]], options: argparse.Namespace) -> str:
    lines = [
        f"## Ledger, {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Command: `.venv/bin/python benchmarks/ledger_bench.py --records {options.records}`",
        f"Machine: {machine()}",
        "",
        "| measurement | result |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
