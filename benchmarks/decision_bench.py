"""Measure resolution against the number of scopes, and durable binds against the disk's limit.

Run from the repository root after `make test` or `make demo` has created .venv:

    .venv/bin/python benchmarks/decision_bench.py [--sizes 10,1000,10000,100000] [--output benchmarks/results.md]

Resolution: the time to find and judge the candidate scopes of one action in a store of N scopes,
through the kind index and the resolver, beside cedarpy answering the same question with the same
scopes written as Cedar policies (parsed once), and beside a linear scan of every scope through the
same resolver. Durable binds: `Gate.bind` on SQLite (WAL, synchronous=FULL, a signed checkpoint per
bind), beside a bare SQLite transaction with the same settings that updates one row and inserts one
row, which is the disk's limit for one commit per decision.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cedarpy

from etlb.config import parse_config
from etlb.declarations import SCOPE_TYP, scope_from_payload, scope_payload
from etlb.gate import Gate, _signature_valid
from etlb.gate_key import create_gate_key
from etlb.model import Bearer, BearerKey, Limits, ToolCall
from etlb.patterns import is_pattern, literal_prefix
from etlb.resolve import Candidate, resolve
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
"""

TARGET = ToolCall(tool="transfer", server="bank", arguments={"from_account": "DE89-0001"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000", help="scope counts to measure (comma-separated)")
    parser.add_argument("--binds", type=int, default=1000, help="durable binds to time (default 1000)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results.md"), help="results file")
    options = parser.parse_args()

    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="etlb-bench-") as folder:
        for size in (int(text) for text in options.sizes.split(",")):
            rows.append(resolution_row(Path(folder) / f"scopes-{size}", size))
        durable = durable_rows(Path(folder) / "durable", options.binds)

    lines = [
        f"## Decisions, {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Command: `.venv/bin/python benchmarks/decision_bench.py --sizes {options.sizes} --binds {options.binds}`",
        f"Machine: {machine()}",
        "",
        "Resolution of one action, median per decision:",
        "",
        "| scopes | etlb (kind index) | cedarpy (same scopes as policies) | linear scan | etlb / cedarpy |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {size} | {ours} | {cedar} | {scan} | {ratio} |" for size, ours, cedar, scan, ratio in rows),
        "",
        "Durable decisions, one commit each:",
        "",
        "| measurement | result |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in durable),
        "",
    ]
    section = "\n".join(lines)
    write_section(options.output, "Decisions,", section)
    print(section)
    return 0


def resolution_row(folder: Path, size: int) -> tuple[str, str, str, str, str]:
    """Build a store of `size` scopes, one of which covers the target, and time three resolvers."""
    folder.mkdir()
    config = parse_config(CONFIG, path=folder / "etlb.toml")
    store = SQLiteStore(folder / "bench.db", signer=create_gate_key(folder / "etlb-gate.key", None))
    gate = Gate(config, store)
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    gate.register_bearer(Bearer("alice", "Alice", (BearerKey(key_id(jwk), jwk),)))
    kinds = [f"service{index}.operation" for index in range(size - 1)] + ["payments.transfer"]
    print(f"signing {size:,} scopes …", file=sys.stderr)
    bulk_declare(store, private_key, kinds)

    now = datetime.now(UTC)
    action = gate.classify(TARGET, agent="bench-agent")

    def indexed() -> object:
        with store._read() as connection:
            states = [
                store._load_scope_state(connection, scope_id, now=now)
                for scope_id in store._candidate_scope_ids(connection, action.kind)
            ]
        candidates = [Candidate(s.scope, s.bearer, _signature_valid(s), s.revoked, s.usage) for s in states if s]
        result = resolve(action, candidates, now=now)
        assert result.covering
        return result

    everything = [
        Candidate(state.scope, state.bearer, True, state.revoked, state.usage) for state in store.list_scopes()
    ]

    def scan() -> object:
        return resolve(action, everything, now=now)

    policies = cedarpy.PolicySet.from_str("\n".join(cedar_policy(kind) for kind in kinds))
    request = {
        "principal": 'Agent::"bench-agent"',
        "action": 'Action::"payments.transfer"',
        "resource": 'Resource::"account:DE89-0001"',
        "context": {"resource": "account:DE89-0001"},
    }

    def cedar() -> object:
        decision = cedarpy.is_authorized(request, policies, [])
        assert decision.decision == cedarpy.Decision.Allow
        return decision

    repeats = 200 if size <= 10_000 else 30
    ours = median_micros(indexed, repeats)
    theirs = median_micros(cedar, repeats)
    row = (
        f"{size:,}",
        f"{ours:,.1f} µs",
        f"{theirs:,.1f} µs",
        f"{median_micros(scan, max(5, repeats // 10)):,.1f} µs",
        f"{ours / theirs:.3f}",
    )
    store.close()
    return row


def bulk_declare(store: SQLiteStore, private_key: object, kinds: list[str]) -> None:
    """Insert signed scopes in one transaction; the public path commits once per scope, too slow here."""
    now = datetime.now(UTC)
    with store._write() as connection:
        for kind in kinds:
            payload = scope_payload(
                bearer="alice",
                kinds=[kind],
                resources=["account:DE89-*"] if kind == "payments.transfer" else ["**"],
                agents=["*"],
                limits=Limits(),
                valid_from=now - timedelta(minutes=1),
                valid_until=now + timedelta(days=1),
                terms="benchmark",
                issued_at=now,
            )
            jws = sign_payload(private_key, payload, typ=SCOPE_TYP)  # type: ignore[arg-type]
            scope = scope_from_payload(payload, jws=jws, key_id=key_id(public_jwk(private_key)))  # type: ignore[arg-type]
            connection.execute(
                "INSERT INTO scopes (id, bearer_id, key_id, jws, declared_seq) VALUES (?, ?, ?, ?, 0)",
                (scope.id, "alice", scope.key_id, jws),
            )
            connection.execute(
                "INSERT INTO scope_kinds (prefix, is_pattern, scope_id) VALUES (?, ?, ?)",
                (literal_prefix(kind), int(is_pattern(kind)), scope.id),
            )
            connection.execute("INSERT INTO scope_usage (scope_id, count, amount) VALUES (?, 0, '0')", (scope.id,))


def cedar_policy(kind: str) -> str:
    # Cedar matches entity ids exactly, so the resource pattern is matched on a context string.
    resource = 'context.resource like "account:DE89-*"' if kind == "payments.transfer" else "true"
    return f'permit(principal, action == Action::"{kind}", resource) when {{ {resource} }};'


def durable_rows(folder: Path, binds: int) -> list[tuple[str, str]]:
    folder.mkdir()
    config = parse_config(CONFIG, path=folder / "etlb.toml")
    store = SQLiteStore(folder / "bench.db", signer=create_gate_key(folder / "etlb-gate.key", None))
    gate = Gate(config, store)
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    gate.register_bearer(Bearer("alice", "Alice", (BearerKey(key_id(jwk), jwk),)))
    now = datetime.now(UTC)
    payload = scope_payload(
        bearer="alice",
        kinds=["payments.transfer"],
        resources=["account:*"],
        agents=["*"],
        limits=Limits(),
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
        terms="benchmark",
        issued_at=now,
    )
    gate.declare_scope(sign_payload(private_key, payload, typ=SCOPE_TYP))

    started = time.perf_counter()
    for number in range(binds):
        gate.bind(ToolCall(tool="transfer", server="bank", arguments={"from_account": "DE89-0001", "n": number}))
    etlb_rate = binds / (time.perf_counter() - started)
    store.close()

    bare = sqlite3.connect(folder / "bare.db", isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=FULL")
    bare.execute("CREATE TABLE usage (id INTEGER PRIMARY KEY, count INTEGER)")
    bare.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, record BLOB)")
    bare.execute("INSERT INTO usage VALUES (1, 0)")
    record = b"x" * 700
    started = time.perf_counter()
    for number in range(binds):
        bare.execute("BEGIN IMMEDIATE")
        bare.execute("UPDATE usage SET count = count + 1 WHERE id = 1")
        bare.execute("INSERT INTO log (seq, record) VALUES (?, ?)", (number, record))
        bare.execute("COMMIT")
    bare_rate = binds / (time.perf_counter() - started)
    bare.close()

    return [
        ("Gate.bind on SQLite (binding, budget, Merkle nodes, signed checkpoint)", f"{etlb_rate:,.0f} per second"),
        ("bare SQLite transaction (update one row, insert one row), same settings", f"{bare_rate:,.0f} per second"),
        ("etlb / bare", f"{etlb_rate / bare_rate:.2f}"),
    ]


def median_micros(action: Callable[[], object], repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1e6


if __name__ == "__main__":
    sys.exit(main())
