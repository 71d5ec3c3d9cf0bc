"""Ledger verification: every kind of tampering is found and named by its sequence number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from etlb.canonical import canonical_bytes
from etlb.errors import Refused
from etlb.ledger.records import GENESIS_CHAIN_HASH, chain_hash, leaf_hash
from etlb.ledger.verify import verify_ledger
from etlb.model import ToolCall
from tests.backends import both_backends
from tests.conftest import World

pytestmark = both_backends


def commit_call(number: int) -> ToolCall:
    return ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app", "message": f"change {number}"})


@pytest.fixture
def busy_world(world: World) -> World:
    """A ledger with a registration, a scope, two bindings with outcomes and one refusal (records 0 to 6)."""
    world.add_bearer("alice")
    world.declare("alice", kinds=["git.commit"], resources=["repo:/srv/app"], max_count=2)
    for number in range(2):
        with world.gate.execution(commit_call(number)):
            pass
    with pytest.raises(Refused):
        world.gate.bind(commit_call(3))
    return world


def open_raw(world: World) -> Any:
    """Open a raw connection to the store with the ledger's insert-only triggers switched off."""
    assert world.backend is not None
    connection = world.backend.connect()
    world.backend.allow_changes(connection, "ledger")
    return connection


def rows(connection: Any) -> list[tuple[int, bytes]]:
    return [(seq, bytes(record)) for seq, record in connection.execute("SELECT seq, record FROM ledger ORDER BY seq")]


def rewrite_hashes(connection: Any) -> None:
    """Recompute every leaf and chain hash, as an operator who knows the scheme would after an edit."""
    previous = GENESIS_CHAIN_HASH
    for seq, record in rows(connection):
        leaf = leaf_hash(record)
        previous = chain_hash(previous, leaf)
        connection.execute("UPDATE ledger SET leaf_hash = ?, chain_hash = ? WHERE seq = ?", (leaf, previous, seq))


def edit_record(connection: Any, seq: int, change) -> None:
    record = json.loads(dict(rows(connection))[seq])
    change(record)
    connection.execute("UPDATE ledger SET record = ? WHERE seq = ?", (canonical_bytes(record), seq))


def verify(world: World) -> list[tuple[int | None, str]]:
    store = world.gate.store
    report = verify_ledger(store.ledger_entries(), usage_table=store.usage_table())
    return [(problem.sequence, problem.message) for problem in report.problems]


def test_untouched_ledger_verifies(busy_world: World) -> None:
    store = busy_world.gate.store

    report = verify_ledger(store.ledger_entries(), usage_table=store.usage_table())

    assert report.problems == []
    assert report.size == 7
    assert dict(report.counts) == {
        "bearer.registered": 1,
        "scope.declared": 1,
        "binding": 2,
        "outcome": 2,
        "refusal": 1,
    }


def test_changed_record_named(busy_world: World) -> None:
    connection = open_raw(busy_world)
    edit_record(connection, 2, lambda record: record["data"].update(bearer="mallory"))

    problems = verify(busy_world)

    assert problems == [(2, "leaf hash does not match the record bytes: the record was changed after it was written")]


def test_rehashed_forgery_caught_by_replay(busy_world: World) -> None:
    connection = open_raw(busy_world)
    edit_record(connection, 2, lambda record: record["data"].update(bearer="mallory"))
    rewrite_hashes(connection)

    problems = verify(busy_world)

    assert len(problems) == 1
    assert problems[0][0] == 2
    assert "names bearer mallory" in problems[0][1]


def test_inserted_binding_over_limit(busy_world: World) -> None:
    connection = open_raw(busy_world)
    binding = json.loads(dict(rows(connection))[2])
    # Turn the refusal at record 6 into a third binding: the scope allows two executions.
    binding["seq"] = 6
    binding["data"]["binding_id"] = "binding-forged"
    connection.execute("UPDATE ledger SET record = ? WHERE seq = 6", (canonical_bytes(binding),))
    rewrite_hashes(connection)

    problems = verify(busy_world)

    assert problems[0][0] == 6
    assert "execution 3 of scope" in problems[0][1]


def test_deleted_record_named(busy_world: World) -> None:
    connection = open_raw(busy_world)
    connection.execute("DELETE FROM ledger WHERE seq = 3")

    problems = verify(busy_world)

    assert problems == [(4, "sequence 4 found where 3 was expected")]


def test_swapped_records_named(busy_world: World) -> None:
    connection = open_raw(busy_world)
    records = dict(rows(connection))
    connection.execute("UPDATE ledger SET record = ? WHERE seq = 2", (records[4],))
    connection.execute("UPDATE ledger SET record = ? WHERE seq = 4", (records[2],))

    problems = verify(busy_world)

    assert problems == [(2, "record states sequence 4 but is stored at 2")]


def test_edited_usage_table_found(busy_world: World) -> None:
    assert busy_world.backend is not None
    connection = busy_world.backend.connect()
    connection.execute("UPDATE scope_usage SET count = 0")
    scope_id = busy_world.gate.store.list_scopes()[0].scope.id

    problems = verify(busy_world)

    assert problems == [
        (
            None,
            f"usage of scope {scope_id} in the store is 0 executions and 0, "
            "but its bindings in the ledger add up to 2 and 0",
        )
    ]


def test_cli_names_tampered_record(busy_world: World, tmp_path: Path) -> None:
    connection = open_raw(busy_world)
    edit_record(connection, 4, lambda record: record["data"].update(status="failed"))

    result = subprocess.run(
        [sys.executable, "-m", "etlb", "--config", str(tmp_path / "etlb.toml"), "ledger", "verify"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 3
    assert "ledger verification failed at record 4" in result.stderr
    assert "leaf hash does not match" in result.stderr


def test_ledger_table_rejects_update(busy_world: World) -> None:
    backend = busy_world.backend
    assert backend is not None
    connection = backend.connect()

    with pytest.raises(backend.insert_only_error, match="ledger is insert-only"):
        connection.execute("UPDATE ledger SET record = ? WHERE seq = 0", (b"\x00",))
    with pytest.raises(backend.insert_only_error, match="ledger is insert-only"):
        connection.execute("DELETE FROM ledger WHERE seq = 0")
