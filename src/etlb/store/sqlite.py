"""SQLite store: one file, WAL journal, `synchronous=FULL`, and `BEGIN IMMEDIATE` for every write.

`BEGIN IMMEDIATE` takes the database's single write lock before anything is read, so the judge sees
the usage of every scope as no other writer can change it until commit: a reservation is checked and
written atomically across threads and processes. With `synchronous=FULL` a committed binding survives
a power loss, so the record exists before the tool runs.

Data tables that record facts (ledger, bindings, redemptions, outcomes, revocations) are insert-only;
triggers reject an UPDATE or DELETE on them. Only budget usage and bearer status change in place, and
both can be recomputed from the ledger by `etlb ledger verify`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from etlb.declarations import scope_from_payload
from etlb.errors import BindingConsumed, DeclarationError, NotFoundError, StoreError, StoreUnavailable
from etlb.ledger import merkle
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.ledger.receipt import ReceiptMaterial
from etlb.ledger.records import (
    GENESIS_CHAIN_HASH,
    LedgerEntry,
    RecordType,
    action_from_json,
    action_json,
    bearer_json,
    binding_data,
    chain_hash,
    envelope,
    index_columns,
    leaf_hash,
    outcome_data,
    refusal_data,
    scope_data,
)
from etlb.model import (
    Action,
    Amount,
    Bearer,
    BearerKey,
    BearerStatus,
    Binding,
    Outcome,
    OutcomeStatus,
    Refusal,
    Scope,
    ScopeUsage,
    format_time,
    parse_time,
)
from etlb.patterns import is_pattern, literal_prefix
from etlb.resolve import refusal_message, reservation_for
from etlb.signing import read_unverified
from etlb.store.base import BindingState, Judge, LedgerQuery, ScopeState

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

# How long a write waits for another process's write lock before the store is reported unavailable
# and the action refused. A write holds the lock for one fsync, so a wait this long means a stuck writer.
BUSY_TIMEOUT_SECONDS = 10.0

# An SQLite statement takes at most 32766 parameters since 3.32; kind prefixes are queried in chunks.
_PARAMETER_CHUNK = 500

# Tables created by each migration that triggers keep insert-only.
_INSERT_ONLY_TABLES: dict[int, tuple[str, ...]] = {
    1: ("ledger", "bindings", "redemptions", "outcomes", "revocations", "scopes", "scope_kinds"),
    2: ("merkle_nodes", "checkpoints", "ledger_index"),
    3: ("agents",),
}

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        record BLOB NOT NULL,
        leaf_hash BLOB NOT NULL,
        chain_hash BLOB NOT NULL
    );
    CREATE TABLE bearers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attributes TEXT NOT NULL,
        registered_seq INTEGER NOT NULL
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
        declared_seq INTEGER NOT NULL
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
        count INTEGER NOT NULL,
        amount TEXT NOT NULL
    );
    CREATE TABLE revocations (
        scope_id TEXT PRIMARY KEY REFERENCES scopes(id),
        seq INTEGER NOT NULL
    );
    CREATE TABLE bindings (
        id TEXT PRIMARY KEY,
        scope_id TEXT NOT NULL REFERENCES scopes(id),
        bearer_id TEXT NOT NULL,
        action TEXT NOT NULL,
        action_digest TEXT NOT NULL,
        reserved_amount TEXT,
        time TEXT NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE TABLE redemptions (
        binding_id TEXT PRIMARY KEY REFERENCES bindings(id)
    );
    CREATE TABLE outcomes (
        binding_id TEXT PRIMARY KEY REFERENCES bindings(id),
        status TEXT NOT NULL,
        detail TEXT NOT NULL,
        seq INTEGER NOT NULL
    );
    """,
    """
    -- Hashes of perfect Merkle subtrees: 2**level leaves starting at leaf idx * 2**level.
    CREATE TABLE merkle_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    -- One signed checkpoint per committed write that appended records.
    CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY,
        note TEXT NOT NULL
    );
    -- Columns of each record that `ledger show` filters on, so a filter does not parse every record.
    CREATE TABLE ledger_index (
        seq INTEGER PRIMARY KEY REFERENCES ledger(seq),
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
        registered_seq INTEGER NOT NULL
    );
    """,
)


class SQLiteStore:
    """The default store. Safe to share between threads; every process opens its own instance."""

    def __init__(
        self,
        path: Path,
        *,
        create: bool = True,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self.path = path
        self._signer = signer
        self._appended = False
        if not create and not path.exists():
            message = f"store {path} does not exist"
            raise StoreUnavailable(message, hint="create it with: etlb init")

        try:
            self._connection = sqlite3.connect(
                path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._connection.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        except sqlite3.Error as error:
            message = f"cannot open store {path}: {error}"
            raise StoreUnavailable(message, hint="check the path and its permissions, or run etlb init") from error

        self._lock = threading.RLock()
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    # Transactions

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                message = f"cannot start a write transaction on store {self.path}: {error}"
                raise StoreUnavailable(message) from error

            self._appended = False
            try:
                yield self._connection
                if self._appended and self._signer is not None:
                    self._sign_checkpoint(self._connection)
                self._connection.execute("COMMIT")
            except BaseException as error:
                self._rollback()
                if isinstance(error, sqlite3.Error):
                    message = f"store {self.path} failed: {error}"
                    raise StoreError(message) from error
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._connection.execute("BEGIN")
                yield self._connection
            except sqlite3.Error as error:
                message = f"cannot read store {self.path}: {error}"
                raise StoreUnavailable(message) from error
            finally:
                self._rollback()

    def _rollback(self) -> None:
        if self._connection.in_transaction:
            try:
                self._connection.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("rollback failed on store %s", self.path)

    def _migrate(self) -> None:
        with self._write() as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, script in enumerate(_MIGRATIONS[current:], start=current + 1):
                for statement in _split_statements(script):
                    connection.execute(statement)
                for table in _INSERT_ONLY_TABLES.get(version, ()):
                    _forbid_changes(connection, table)
                if version == 2:
                    self._backfill_tree(connection)
                connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                logger.info("applied store migration %d to %s", version, self.path)

    # Ledger

    def _append(
        self, connection: sqlite3.Connection, record_type: RecordType, time: datetime, data: dict[str, Any]
    ) -> LedgerEntry:
        row = connection.execute("SELECT seq, chain_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        sequence, previous = (0, GENESIS_CHAIN_HASH) if row is None else (row[0] + 1, bytes(row[1]))

        record = envelope(sequence=sequence, record_type=record_type, time=time, data=data)
        leaf = leaf_hash(record)
        entry = LedgerEntry(sequence, record, leaf, chain_hash(previous, leaf))
        connection.execute(
            "INSERT INTO ledger (seq, record, leaf_hash, chain_hash) VALUES (?, ?, ?, ?)",
            (entry.sequence, entry.record, entry.leaf_hash, entry.chain_hash),
        )
        self._index_entry(connection, entry, record_type, time, data)
        self._appended = True
        return entry

    def _index_entry(
        self,
        connection: sqlite3.Connection,
        entry: LedgerEntry,
        record_type: RecordType,
        time: datetime,
        data: dict[str, Any],
    ) -> None:
        """Add the entry's Merkle nodes and its row in the filter index, in the append's transaction."""
        nodes = merkle.perfect_nodes_for_append(entry.sequence, entry.leaf_hash, _node_reader(connection))
        connection.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)

        columns = index_columns(record_type, data)
        connection.execute(
            "INSERT INTO ledger_index (seq, type, time, bearer, scope_id, agent, kind, action_digest, binding_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.sequence,
                record_type.value,
                format_time(time),
                columns.bearer,
                columns.scope_id,
                columns.agent,
                columns.kind,
                columns.action_digest,
                columns.binding_id,
            ),
        )

    def _backfill_tree(self, connection: sqlite3.Connection) -> None:
        """Build Merkle nodes and index rows for records written before the tree existed."""
        rows = connection.execute("SELECT seq, record, leaf_hash FROM ledger ORDER BY seq").fetchall()
        for sequence, record, leaf in rows:
            parsed = json.loads(record)
            entry = LedgerEntry(int(sequence), bytes(record), bytes(leaf), b"")
            self._index_entry(connection, entry, RecordType(parsed["type"]), parse_time(parsed["time"]), parsed["data"])

    def _sign_checkpoint(self, connection: sqlite3.Connection) -> None:
        assert self._signer is not None
        size = self._size(connection)
        root = merkle.root_hash(size, _node_reader(connection))
        connection.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (size, self._signer.sign(size, root)))

    def _size(self, connection: sqlite3.Connection) -> int:
        row = connection.execute("SELECT max(seq) FROM ledger").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    # Merkle tree and checkpoints

    def tree_head(self) -> tuple[int, bytes]:
        """Return the ledger's size and its RFC 9162 Merkle root, computed from stored subtree hashes."""
        with self._read() as connection:
            size = self._size(connection)
            return size, merkle.root_hash(size, _node_reader(connection))

    def root_at(self, size: int) -> bytes:
        """Return the Merkle root of the first `size` records."""
        with self._read() as connection:
            self._check_size(connection, size)
            return merkle.root_hash(size, _node_reader(connection))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self._read() as connection:
            self._check_size(connection, size)
            return merkle.inclusion_proof(index, size, _node_reader(connection))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self._read() as connection:
            self._check_size(connection, new_size)
            return merkle.consistency_proof(old_size, new_size, _node_reader(connection))

    def _check_size(self, connection: sqlite3.Connection, size: int) -> None:
        current = self._size(connection)
        if size > current:
            message = f"tree size {size} is larger than the ledger, which has {current} records"
            raise NotFoundError(message)

    def entry(self, sequence: int) -> LedgerEntry | None:
        with self._read() as connection:
            row = connection.execute(
                "SELECT seq, record, leaf_hash, chain_hash FROM ledger WHERE seq = ?", (sequence,)
            ).fetchone()
        return None if row is None else LedgerEntry(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]))

    def latest_checkpoint(self) -> str | None:
        with self._read() as connection:
            row = connection.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Yield every stored checkpoint as (tree size, signed note), smallest first."""
        with self._read() as connection:
            rows = connection.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        for size, note in rows:
            yield int(size), str(note)

    def find_entries(self, query: LedgerQuery) -> list[LedgerEntry]:
        """Return the entries matching every given filter, in sequence order, at most `query.limit`."""
        conditions: list[str] = ["i.seq >= ?"]
        parameters: list[Any] = [query.start]
        for column, value in (
            ("i.bearer", query.bearer),
            ("i.scope_id", query.scope_id),
            ("i.agent", query.agent),
            ("i.kind", query.kind),
            ("i.type", query.record_type),
            ("i.action_digest", query.action_digest),
            ("i.binding_id", query.binding_id),
        ):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if query.since is not None:
            conditions.append("i.time >= ?")
            parameters.append(format_time(query.since))
        if query.until is not None:
            conditions.append("i.time < ?")
            parameters.append(format_time(query.until))

        # Only the fixed column conditions above are joined into the statement; values are bound parameters.
        where = " AND ".join(conditions)
        select = "SELECT l.seq, l.record, l.leaf_hash, l.chain_hash FROM ledger_index i JOIN ledger l ON l.seq = i.seq"
        sql = f"{select} WHERE {where} ORDER BY i.seq LIMIT ?"
        with self._read() as connection:
            rows = connection.execute(sql, [*parameters, query.limit]).fetchall()
        return [LedgerEntry(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3])) for row in rows]

    def receipt_material(self, binding_id: str) -> ReceiptMaterial:
        """Collect, in one read, the records, proofs and checkpoint that prove one binding."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT b.seq, s.declared_seq, r.registered_seq, o.seq FROM bindings b"
                " JOIN scopes s ON s.id = b.scope_id JOIN bearers r ON r.id = b.bearer_id"
                " LEFT JOIN outcomes o ON o.binding_id = b.id WHERE b.id = ?",
                (binding_id,),
            ).fetchone()
            if row is None:
                raise _binding_not_found(binding_id)
            checkpoint = connection.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
            needed = max(value for value in row if value is not None) + 1
            if checkpoint is None or checkpoint[0] < needed:
                message = f"no signed checkpoint covers binding {binding_id} yet"
                raise NotFoundError(message, hint="checkpoints are signed by a gate with a key: run etlb init")

            size = int(checkpoint[0])
            reader = _node_reader(connection)
            records: dict[str, tuple[int, bytes, list[bytes]] | None] = {}
            for name, sequence in zip(("binding", "scope", "bearer", "outcome"), row, strict=True):
                if sequence is None:
                    records[name] = None
                    continue
                record = connection.execute("SELECT record FROM ledger WHERE seq = ?", (sequence,)).fetchone()[0]
                records[name] = (int(sequence), bytes(record), merkle.inclusion_proof(int(sequence), size, reader))
        return ReceiptMaterial(records=records, checkpoint=str(checkpoint[1]))

    def ledger_size(self) -> int:
        with self._read() as connection:
            row = connection.execute("SELECT count(*) FROM ledger").fetchone()
        return int(row[0])

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Yield ledger entries in sequence order, reading in pages so a long ledger is never all in memory."""
        page = 1000
        position = start
        while stop is None or position < stop:
            limit = page if stop is None else min(page, stop - position)
            with self._read() as connection:
                rows = connection.execute(
                    "SELECT seq, record, leaf_hash, chain_hash FROM ledger WHERE seq >= ? ORDER BY seq LIMIT ?",
                    (position, limit),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield LedgerEntry(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]))
            position = int(rows[-1][0]) + 1

    # Bearers

    def register_bearer(self, bearer: Bearer, *, time: datetime, actor: str) -> LedgerEntry:
        with self._write() as connection:
            if connection.execute("SELECT 1 FROM bearers WHERE id = ?", (bearer.id,)).fetchone():
                message = f"bearer {bearer.id} is already registered"
                raise DeclarationError(message, hint="choose another id, or list bearers with: etlb bearer list")
            for key in bearer.keys:
                owner = connection.execute("SELECT bearer_id FROM bearer_keys WHERE key_id = ?", (key.key_id,))
                row = owner.fetchone()
                if row is not None:
                    message = f"key {key.key_id} is already registered to bearer {row[0]}"
                    raise DeclarationError(message, hint="each bearer needs a key of their own: etlb keygen")

            entry = self._append(
                connection,
                RecordType.BEARER_REGISTERED,
                time,
                {"bearer": bearer_json(bearer), "actor": actor},
            )
            connection.execute(
                "INSERT INTO bearers (id, name, status, attributes, registered_seq) VALUES (?, ?, ?, ?, ?)",
                (bearer.id, bearer.name, bearer.status.value, json.dumps(bearer.attributes), entry.sequence),
            )
            connection.executemany(
                "INSERT INTO bearer_keys (key_id, bearer_id, jwk) VALUES (?, ?, ?)",
                [(key.key_id, bearer.id, json.dumps(key.public_jwk)) for key in bearer.keys],
            )
        return entry

    def set_bearer_status(self, bearer_id: str, status: BearerStatus, *, time: datetime, actor: str) -> LedgerEntry:
        with self._write() as connection:
            if self._load_bearer(connection, bearer_id) is None:
                raise _bearer_not_found(bearer_id)
            entry = self._append(
                connection,
                RecordType.BEARER_STATUS,
                time,
                {"bearer_id": bearer_id, "status": status.value, "actor": actor},
            )
            connection.execute("UPDATE bearers SET status = ? WHERE id = ?", (status.value, bearer_id))
        return entry

    def get_bearer(self, bearer_id: str) -> Bearer | None:
        with self._read() as connection:
            return self._load_bearer(connection, bearer_id)

    def list_bearers(self) -> list[Bearer]:
        with self._read() as connection:
            ids = [row[0] for row in connection.execute("SELECT id FROM bearers ORDER BY id")]
            bearers = [self._load_bearer(connection, bearer_id) for bearer_id in ids]
        return [bearer for bearer in bearers if bearer is not None]

    def _load_bearer(self, connection: sqlite3.Connection, bearer_id: str) -> Bearer | None:
        row = connection.execute(
            "SELECT id, name, status, attributes FROM bearers WHERE id = ?", (bearer_id,)
        ).fetchone()
        if row is None:
            return None
        keys = tuple(
            BearerKey(key_id, json.loads(jwk))
            for key_id, jwk in connection.execute(
                "SELECT key_id, jwk FROM bearer_keys WHERE bearer_id = ? ORDER BY key_id", (bearer_id,)
            )
        )
        return Bearer(id=row[0], name=row[1], keys=keys, status=BearerStatus(row[2]), attributes=json.loads(row[3]))

    # Agents

    def register_agent(self, agent_id: str, key_hash: str, *, time: datetime, actor: str) -> LedgerEntry:
        """Register an agent with the SHA-256 of its API key; the key itself is never stored or recorded."""
        with self._write() as connection:
            if connection.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id,)).fetchone():
                message = f"agent {agent_id} is already registered"
                raise DeclarationError(message, hint="choose another agent id")
            entry = self._append(connection, RecordType.AGENT_REGISTERED, time, {"agent_id": agent_id, "actor": actor})
            connection.execute(
                "INSERT INTO agents (id, key_hash, registered_seq) VALUES (?, ?, ?)",
                (agent_id, key_hash, entry.sequence),
            )
        return entry

    def agent_for_key(self, key_hash: str) -> str | None:
        with self._read() as connection:
            row = connection.execute("SELECT id FROM agents WHERE key_hash = ?", (key_hash,)).fetchone()
        return None if row is None else str(row[0])

    # Scopes

    def add_scope(self, scope: Scope, *, time: datetime) -> LedgerEntry:
        with self._write() as connection:
            if connection.execute("SELECT 1 FROM scopes WHERE id = ?", (scope.id,)).fetchone():
                message = f"scope {scope.id} is already declared"
                raise DeclarationError(message, hint="a signed scope is declared once; sign a new one to change it")

            entry = self._append(connection, RecordType.SCOPE_DECLARED, time, scope_data(scope))
            connection.execute(
                "INSERT INTO scopes (id, bearer_id, key_id, jws, declared_seq) VALUES (?, ?, ?, ?, ?)",
                (scope.id, scope.bearer, scope.key_id, scope.jws, entry.sequence),
            )
            connection.executemany(
                "INSERT INTO scope_kinds (prefix, is_pattern, scope_id) VALUES (?, ?, ?)",
                [(literal_prefix(kind), int(is_pattern(kind)), scope.id) for kind in set(scope.kinds)],
            )
            connection.execute(
                "INSERT INTO scope_usage (scope_id, count, amount) VALUES (?, 0, '0')",
                (scope.id,),
            )
        return entry

    def revoke_scope(self, scope_id: str, *, time: datetime, revocation: dict[str, Any]) -> LedgerEntry:
        with self._write() as connection:
            if not connection.execute("SELECT 1 FROM scopes WHERE id = ?", (scope_id,)).fetchone():
                raise _scope_not_found(scope_id)
            if connection.execute("SELECT 1 FROM revocations WHERE scope_id = ?", (scope_id,)).fetchone():
                message = f"scope {scope_id} is already revoked"
                raise DeclarationError(message)

            entry = self._append(connection, RecordType.SCOPE_REVOKED, time, {"scope_id": scope_id, **revocation})
            connection.execute("INSERT INTO revocations (scope_id, seq) VALUES (?, ?)", (scope_id, entry.sequence))
        return entry

    def get_scope(self, scope_id: str) -> ScopeState | None:
        with self._read() as connection:
            return self._load_scope_state(connection, scope_id)

    def list_scopes(self, *, bearer: str | None = None) -> list[ScopeState]:
        with self._read() as connection:
            if bearer is None:
                rows = connection.execute("SELECT id FROM scopes ORDER BY declared_seq")
            else:
                rows = connection.execute("SELECT id FROM scopes WHERE bearer_id = ? ORDER BY declared_seq", (bearer,))
            states = [self._load_scope_state(connection, row[0]) for row in rows.fetchall()]
        return [state for state in states if state is not None]

    def usage_table(self) -> dict[str, ScopeUsage]:
        with self._read() as connection:
            rows = connection.execute("SELECT scope_id, count, amount FROM scope_usage").fetchall()
        return {row[0]: ScopeUsage(int(row[1]), Decimal(row[2])) for row in rows}

    def _load_scope_state(
        self, connection: sqlite3.Connection, scope_id: str, *, now: datetime | None = None
    ) -> ScopeState | None:
        """Load a scope with its usage; with `now`, also its usage in each rolling window ending then."""
        row = connection.execute("SELECT jws, key_id, bearer_id FROM scopes WHERE id = ?", (scope_id,)).fetchone()
        if row is None:
            return None

        # The id is the stored one: the judge rejects a scope whose token does not hash to its id.
        scope = dataclasses.replace(_scope_from_row(row[0], row[1], row[2]), id=scope_id)
        bearer = self._load_bearer(connection, scope.bearer)
        revoked = connection.execute("SELECT 1 FROM revocations WHERE scope_id = ?", (scope_id,)).fetchone()
        usage_row = connection.execute("SELECT count, amount FROM scope_usage WHERE scope_id = ?", (scope_id,))
        usage = usage_row.fetchone()
        windows = self._window_usage(connection, scope, now) if now is not None else ()
        return ScopeState(
            scope=scope,
            bearer=bearer,
            revoked=revoked is not None,
            usage=ScopeUsage(int(usage[0]), Decimal(usage[1]), windows) if usage else ScopeUsage(windows=windows),
        )

    def _window_usage(
        self, connection: sqlite3.Connection, scope: Scope, now: datetime
    ) -> tuple[tuple[int, Decimal], ...]:
        usage = []
        for window in scope.limits.windows:
            # A binding exactly `seconds` old has left the window; times are stored in one sortable format.
            since = format_time(now - timedelta(seconds=window.seconds))
            rows = connection.execute(
                "SELECT reserved_amount FROM bindings WHERE scope_id = ? AND time > ?", (scope.id, since)
            ).fetchall()
            amount = sum((Decimal(json.loads(row[0])["value"]) for row in rows if row[0]), Decimal(0))
            usage.append((len(rows), amount))
        return tuple(usage)

    def _candidate_scope_ids(self, connection: sqlite3.Connection, kind: str) -> list[str]:
        """Find scopes whose kind pattern could match `kind` through the prefix index, not a scan.

        An exact kind is indexed under its full text and a pattern under its literal prefix, so every
        candidate is indexed under some prefix of `kind` (including the empty one).
        """
        prefixes = [kind[:length] for length in range(len(kind) + 1)]
        found: dict[str, None] = {}
        for start in range(0, len(prefixes), _PARAMETER_CHUNK):
            chunk = prefixes[start : start + _PARAMETER_CHUNK]
            placeholders = ", ".join("?" * len(chunk))
            rows = connection.execute(
                f"SELECT DISTINCT scope_id, prefix, is_pattern FROM scope_kinds WHERE prefix IN ({placeholders})",  # noqa: S608
                chunk,
            )
            for scope_id, prefix, pattern in rows:
                if pattern or prefix == kind:
                    found[scope_id] = None
        return sorted(found)

    # Decisions

    def decide(self, action: Action, *, time: datetime, judge: Judge, redeem: bool = False) -> Binding | Refusal:
        """Judge the candidate scopes and record a binding or a refusal, in one write transaction."""
        with self._write() as connection:
            states = [
                state
                for scope_id in self._candidate_scope_ids(connection, action.kind)
                if (state := self._load_scope_state(connection, scope_id, now=time)) is not None
            ]
            resolution = judge(states)

            if not resolution.covering:
                code = resolution.overall_code
                refusal = Refusal(
                    id=_new_id("refusal"),
                    action=action,
                    code=code,
                    reasons=resolution.reasons,
                    message=refusal_message(action, code, resolution.reasons),
                    time=time,
                )
                self._append(connection, RecordType.REFUSAL, time, refusal_data(refusal))
                return refusal

            chosen = resolution.covering[0].scope
            reserved = reservation_for(chosen, action)
            usage = resolution.covering[0].usage
            new_amount = usage.amount + (reserved.value if reserved is not None else Decimal(0))
            updated = connection.execute(
                "UPDATE scope_usage SET count = ?, amount = ? WHERE scope_id = ? AND count = ? AND amount = ?",
                (usage.count + 1, str(new_amount), chosen.id, usage.count, str(usage.amount)),
            )
            if updated.rowcount != 1:
                # The write lock makes this unreachable unless the usage row was changed behind the store.
                message = f"usage of scope {chosen.id} changed during its reservation"
                raise StoreError(message)

            binding = Binding(
                id=_new_id("binding"),
                action=action,
                bearer=chosen.bearer,
                scope_id=chosen.id,
                reserved_amount=reserved,
                reserved_count=1,
                time=time,
                sequence=-1,
            )
            entry = self._append(connection, RecordType.BINDING, time, binding_data(binding))
            binding = dataclasses.replace(binding, sequence=entry.sequence)
            connection.execute(
                "INSERT INTO bindings (id, scope_id, bearer_id, action, action_digest, reserved_amount, time, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    binding.id,
                    chosen.id,
                    chosen.bearer,
                    json.dumps(action_json(action)),
                    action.digest,
                    json.dumps(reserved.to_json()) if reserved is not None else None,
                    format_time(time),
                    entry.sequence,
                ),
            )
            if redeem:
                connection.execute("INSERT INTO redemptions (binding_id) VALUES (?)", (binding.id,))
        return binding

    def append_refusal(self, refusal: Refusal) -> LedgerEntry:
        with self._write() as connection:
            return self._append(connection, RecordType.REFUSAL, refusal.time, refusal_data(refusal))

    def redeem(self, binding_id: str, action_digest: str) -> None:
        with self._write() as connection:
            row = connection.execute("SELECT action_digest FROM bindings WHERE id = ?", (binding_id,)).fetchone()
            if row is None:
                raise _binding_not_found(binding_id)
            if row[0] != action_digest:
                message = f"binding {binding_id} is for action {row[0]}, not {action_digest}"
                raise BindingConsumed(message, hint="bind the new action: a binding covers one action digest")
            try:
                connection.execute("INSERT INTO redemptions (binding_id) VALUES (?)", (binding_id,))
            except sqlite3.IntegrityError as error:
                message = f"binding {binding_id} was already used for an execution"
                raise BindingConsumed(message, hint="bind the action again for another execution") from error

    def complete(self, binding_id: str, outcome: Outcome, *, time: datetime) -> LedgerEntry:
        with self._write() as connection:
            row = connection.execute("SELECT action_digest FROM bindings WHERE id = ?", (binding_id,)).fetchone()
            if row is None:
                raise _binding_not_found(binding_id)
            if connection.execute("SELECT 1 FROM outcomes WHERE binding_id = ?", (binding_id,)).fetchone():
                message = f"binding {binding_id} already has an outcome"
                raise BindingConsumed(message, hint="an outcome is recorded once per binding")

            entry = self._append(connection, RecordType.OUTCOME, time, outcome_data(binding_id, row[0], outcome))
            connection.execute(
                "INSERT INTO outcomes (binding_id, status, detail, seq) VALUES (?, ?, ?, ?)",
                (binding_id, outcome.status.value, outcome.detail, entry.sequence),
            )
        return entry

    def get_binding(self, binding_id: str) -> BindingState | None:
        with self._read() as connection:
            row = connection.execute(
                "SELECT id, scope_id, bearer_id, action, reserved_amount, time, seq FROM bindings WHERE id = ?",
                (binding_id,),
            ).fetchone()
            if row is None:
                return None
            redeemed = connection.execute("SELECT 1 FROM redemptions WHERE binding_id = ?", (binding_id,)).fetchone()
            outcome_row = connection.execute(
                "SELECT status, detail FROM outcomes WHERE binding_id = ?", (binding_id,)
            ).fetchone()

        reserved = json.loads(row[4]) if row[4] else None
        binding = Binding(
            id=row[0],
            action=action_from_json(json.loads(row[3])),
            bearer=row[2],
            scope_id=row[1],
            reserved_amount=Amount.parse(reserved["value"], reserved["unit"]) if reserved else None,
            reserved_count=1,
            time=parse_time(row[5]),
            sequence=int(row[6]),
        )
        outcome = Outcome(OutcomeStatus(outcome_row[0]), outcome_row[1]) if outcome_row else None
        return BindingState(binding=binding, redeemed=redeemed is not None, outcome=outcome)


@functools.lru_cache(maxsize=4096)
def _scope_from_row(jws: str, key_id: str, bearer_id: str) -> Scope:
    """Decode a stored scope from its token. Its signature is checked by the gate's judge, not here."""
    try:
        _, payload = read_unverified(jws)
        scope = scope_from_payload(payload, jws=jws, key_id=key_id)
    except Exception as error:
        message = f"stored scope of bearer {bearer_id} cannot be decoded: {error}"
        raise StoreError(message, hint="run etlb ledger verify; the store may have been altered") from error

    if scope.bearer != bearer_id:
        message = f"stored scope names bearer {scope.bearer} but is filed under {bearer_id}"
        raise StoreError(message, hint="run etlb ledger verify; the store may have been altered")
    return scope


def _node_reader(connection: sqlite3.Connection) -> merkle.NodeReader:
    def read(level: int, index: int) -> bytes:
        row = connection.execute("SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        if row is None:
            message = f"Merkle node at level {level}, index {index} is missing from the store"
            raise StoreError(message, hint="run etlb ledger verify; the store may have been altered")
        return bytes(row[0])

    return read


def _forbid_changes(connection: sqlite3.Connection, table: str) -> None:
    for operation in ("UPDATE", "DELETE"):
        connection.execute(
            f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is insert-only'); END"
        )


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements; comment lines go first, so a ';' in a comment is harmless."""
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _bearer_not_found(bearer_id: str) -> NotFoundError:
    message = f"bearer {bearer_id} not found"
    return NotFoundError(message, hint="list registered bearers with: etlb bearer list")


def _scope_not_found(scope_id: str) -> NotFoundError:
    message = f"scope {scope_id} not found"
    return NotFoundError(message, hint="list scopes with: etlb scope list")


def _binding_not_found(binding_id: str) -> NotFoundError:
    message = f"binding {binding_id} not found"
    return NotFoundError(message)
