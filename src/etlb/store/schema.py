"""The tables both backends share, as numbered migrations written once for both SQL dialects.

Version numbers are the same on both backends: migration N creates the same tables, columns and
indexes on SQLite and on PostgreSQL, with the column types of `Dialect`. A new migration is appended
to `_MIGRATION_TEMPLATES` and to `INSERT_ONLY_TABLES`. A released migration never changes, because a
store records only the number of the last migration it applied. Templates contain no braces other
than the `Dialect` fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["INSERT_ONLY_TABLES", "POSTGRES", "SQLITE", "Dialect", "migrations"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """Column types that differ between SQLite and PostgreSQL."""

    # Byte strings: hashes and canonical records.
    bytes: str
    # Sequence numbers, counts, sizes and Merkle indexes. SQLite's INTEGER is already 64 bits, and
    # `seq INTEGER PRIMARY KEY` makes the ledger's sequence number its rowid.
    big_integer: str
    # Clause after the Merkle node table, which SQLite stores clustered on its primary key.
    without_rowid: str


SQLITE = Dialect(bytes="BLOB", big_integer="INTEGER", without_rowid=" WITHOUT ROWID")
POSTGRES = Dialect(bytes="BYTEA", big_integer="BIGINT", without_rowid="")

# Tables created by each migration that triggers keep insert-only.
INSERT_ONLY_TABLES: dict[int, tuple[str, ...]] = {
    1: ("ledger", "bindings", "redemptions", "outcomes", "revocations", "scopes", "scope_kinds"),
    2: ("merkle_nodes", "checkpoints", "ledger_index"),
    3: ("agents",),
    4: ("scope_lineage",),
    5: ("approval_requests", "approval_closures"),
}

_MIGRATION_TEMPLATES: tuple[str, ...] = (
    """
    CREATE TABLE ledger (
        seq {big_integer} PRIMARY KEY,
        record {bytes} NOT NULL,
        leaf_hash {bytes} NOT NULL,
        chain_hash {bytes} NOT NULL
    );
    CREATE TABLE bearers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attributes TEXT NOT NULL,
        registered_seq {big_integer} NOT NULL
    );
    CREATE TABLE bearer_keys (
        key_id TEXT PRIMARY KEY,
        bearer_id TEXT NOT NULL REFERENCES bearers(id),
        jwk TEXT NOT NULL
    );
    CREATE TABLE scopes (
        id TEXT PRIMARY KEY,
        bearer_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        jws TEXT NOT NULL,
        declared_seq {big_integer} NOT NULL
    );
    CREATE INDEX scopes_by_bearer ON scopes(bearer_id);
    -- The kind index: exact kinds under their full text, patterns under their literal prefix.
    CREATE TABLE scope_kinds (
        prefix TEXT NOT NULL,
        is_pattern INTEGER NOT NULL,
        scope_id TEXT NOT NULL REFERENCES scopes(id)
    );
    CREATE INDEX scope_kinds_by_prefix ON scope_kinds(prefix);
    CREATE TABLE scope_usage (
        scope_id TEXT PRIMARY KEY REFERENCES scopes(id),
        count {big_integer} NOT NULL,
        amount TEXT NOT NULL
    );
    CREATE TABLE revocations (
        scope_id TEXT PRIMARY KEY REFERENCES scopes(id),
        seq {big_integer} NOT NULL
    );
    CREATE TABLE bindings (
        id TEXT PRIMARY KEY,
        scope_id TEXT NOT NULL REFERENCES scopes(id),
        bearer_id TEXT NOT NULL,
        action TEXT NOT NULL,
        action_digest TEXT NOT NULL,
        reserved_amount TEXT,
        time TEXT NOT NULL,
        seq {big_integer} NOT NULL
    );
    CREATE TABLE redemptions (
        binding_id TEXT PRIMARY KEY REFERENCES bindings(id)
    );
    CREATE TABLE outcomes (
        binding_id TEXT PRIMARY KEY REFERENCES bindings(id),
        status TEXT NOT NULL,
        detail TEXT NOT NULL,
        seq {big_integer} NOT NULL
    );
    """,
    """
    -- Hashes of perfect Merkle subtrees: 2**level leaves starting at leaf idx * 2**level.
    CREATE TABLE merkle_nodes (
        level INTEGER NOT NULL,
        idx {big_integer} NOT NULL,
        hash {bytes} NOT NULL,
        PRIMARY KEY (level, idx)
    ){without_rowid};
    -- One signed checkpoint per committed write that appended records.
    CREATE TABLE checkpoints (
        size {big_integer} PRIMARY KEY,
        note TEXT NOT NULL
    );
    -- Columns of each record that `ledger show` filters on, so a filter does not parse every record.
    CREATE TABLE ledger_index (
        seq {big_integer} PRIMARY KEY REFERENCES ledger(seq),
        type TEXT NOT NULL,
        time TEXT NOT NULL,
        bearer TEXT,
        scope_id TEXT,
        agent TEXT,
        kind TEXT,
        action_digest TEXT,
        binding_id TEXT
    );
    CREATE INDEX ledger_index_by_bearer ON ledger_index(bearer);
    CREATE INDEX ledger_index_by_scope ON ledger_index(scope_id);
    CREATE INDEX ledger_index_by_digest ON ledger_index(action_digest);
    CREATE INDEX ledger_index_by_binding ON ledger_index(binding_id);
    """,
    """
    -- Rolling windows count the bindings of a scope since a time.
    CREATE INDEX bindings_by_scope_time ON bindings(scope_id, time);
    -- Agents that authenticate with an API key; only the key's SHA-256 is stored.
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        registered_seq {big_integer} NOT NULL
    );
    """,
    """
    -- Every ancestor of a delegated scope, parent at depth 1. A binding under a scope reserves budget
    -- of each ancestor too, and an ancestor's rolling windows count its descendants' bindings.
    CREATE TABLE scope_lineage (
        scope_id TEXT NOT NULL REFERENCES scopes(id),
        ancestor_id TEXT NOT NULL REFERENCES scopes(id),
        depth INTEGER NOT NULL,
        PRIMARY KEY (scope_id, ancestor_id)
    );
    CREATE INDEX scope_lineage_by_ancestor ON scope_lineage(ancestor_id);
    """,
    """
    -- Approval requests for actions no standing scope covered, and how each one ended. A request
    -- has at most one closure, so two answers racing each other cannot both bind its action.
    CREATE TABLE approval_requests (
        id TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        action_digest TEXT NOT NULL,
        reasons TEXT NOT NULL,
        approvers TEXT NOT NULL,
        approval_order TEXT NOT NULL,
        created TEXT NOT NULL,
        deadline TEXT NOT NULL,
        seq {big_integer} NOT NULL
    );
    CREATE INDEX approval_requests_by_deadline ON approval_requests(deadline);
    CREATE TABLE approval_closures (
        request_id TEXT PRIMARY KEY REFERENCES approval_requests(id),
        status TEXT NOT NULL,
        bearer TEXT,
        binding_id TEXT,
        refusal_id TEXT,
        code TEXT,
        detail TEXT NOT NULL,
        seq {big_integer} NOT NULL
    );
    """,
)


def migrations(dialect: Dialect) -> tuple[str, ...]:
    """Return the migration scripts in `dialect`, version 1 first."""
    types = dataclasses.asdict(dialect)
    return tuple(template.format(**types) for template in _MIGRATION_TEMPLATES)
