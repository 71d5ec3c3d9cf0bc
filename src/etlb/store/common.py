"""The store logic that SQLite and PostgreSQL share: every query, the decision and the ledger append.

A backend subclasses `RelationalStore` and provides its transactions and its ledger head:

- `_write` opens a transaction that holds the store's single write lock before it reads anything, so
  that every read in it sees all committed writes and no other writer commits until it ends. Before
  committing it calls `_finish_write`, which signs a checkpoint in the same transaction when records
  were appended. Driver errors become `StoreError`, or `StoreUnavailable` when the store cannot be
  reached or locked.
- `_read` opens a transaction that reads one consistent snapshot.
- `_ledger_head` returns the next sequence number and the chain hash before it, under the write
  lock, and `_advance_head` records an appended entry there; together they keep sequence numbers
  gapless from 0.

Statements here use qmark placeholders (`?`) and contain no other `?`, so a driver with another
placeholder style can translate them by replacing that character. Times are stored as the fixed-width
RFC 3339 UTC text of `format_time`, which sorts as the times do, so window and filter queries
compare text on every backend.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NoReturn, Protocol

from etlb.approval.model import ApprovalPlan, ApprovalRequest, ApprovalStatus, new_request_id
from etlb.declarations import scope_from_payload
from etlb.errors import (
    ApprovalClosed,
    BindingConsumed,
    DeclarationError,
    NotFoundError,
    StoreError,
    StoreUnavailable,
)
from etlb.ledger import merkle
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.ledger.receipt import ReceiptMaterial
from etlb.ledger.records import (
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
    ReasonCode,
    Refusal,
    Scope,
    ScopeReason,
    ScopeUsage,
    format_time,
    parse_time,
)
from etlb.patterns import is_pattern, literal_prefix
from etlb.resolve import refusal_message, reservation_for
from etlb.signing import read_unverified
from etlb.store.base import BindingState, DecideRequest, Decision, Judge, LedgerQuery, ScopeState

__all__ = ["RelationalStore", "Rows", "Transaction", "check_schema_version"]

logger = logging.getLogger(__name__)

# Kind prefixes are queried in chunks: SQLite takes at most 32766 parameters a statement since 3.32
# and PostgreSQL at most 65535.
_PARAMETER_CHUNK = 500

# Rows read per transaction by `ledger_entries`, so that a long ledger is never all in memory.
_LEDGER_PAGE = 1000


class Rows(Protocol):
    """The result of one statement, as both sqlite3 and psycopg cursors provide it."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Transaction(abc.ABC):
    """One open transaction of a backend. `appended` is set once a ledger record was appended in it."""

    def __init__(self) -> None:
        self.appended = False

    @abc.abstractmethod
    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Rows: ...

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class RelationalStore(abc.ABC):
    """The `Store` protocol over SQL tables; subclasses provide transactions and the ledger head."""

    # The driver's error for a violated unique constraint, which `redeem` reports as a second use.
    _unique_violation: ClassVar[type[Exception]]

    def __init__(self, *, location: str, signer: CheckpointSigner | None) -> None:
        # `location` names the store in messages and logs, so it never contains a password.
        self._location = location
        self._signer = signer

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Transaction]: ...

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Transaction]: ...

    @abc.abstractmethod
    def _ledger_head(self, transaction: Transaction) -> tuple[int, bytes]:
        """Return the next sequence number and the chain hash of the record before it."""

    @abc.abstractmethod
    def _advance_head(self, transaction: Transaction, entry: LedgerEntry) -> None:
        """Record that `entry` was appended, for the next `_ledger_head` in any transaction."""

    def _finish_write(self, transaction: Transaction) -> None:
        """Sign a checkpoint of the new tree head if the transaction appended records. Call it before commit."""
        if transaction.appended and self._signer is not None:
            size = self._size(transaction)
            root = merkle.root_hash(size, _node_reader(transaction))
            transaction.execute(
                "INSERT INTO checkpoints (size, note) VALUES (?, ?)", (size, self._signer.sign(size, root))
            )

    # Ledger

    def _append(
        self, connection: Transaction, record_type: RecordType, time: datetime, data: dict[str, Any]
    ) -> LedgerEntry:
        sequence, previous = self._ledger_head(connection)
        record = envelope(sequence=sequence, record_type=record_type, time=time, data=data)
        leaf = leaf_hash(record)
        entry = LedgerEntry(sequence, record, leaf, chain_hash(previous, leaf))
        connection.execute(
            "INSERT INTO ledger (seq, record, leaf_hash, chain_hash) VALUES (?, ?, ?, ?)",
            (entry.sequence, entry.record, entry.leaf_hash, entry.chain_hash),
        )
        self._advance_head(connection, entry)
        self._index_entry(connection, entry, record_type, time, data)
        connection.appended = True
        return entry

    def _index_entry(
        self,
        connection: Transaction,
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

    def _size(self, connection: Transaction) -> int:
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

    def _check_size(self, connection: Transaction, size: int) -> None:
        current = self._size(connection)
        if size > current:
            message = f"tree size {size} is larger than the ledger, which has {current} records"
            raise NotFoundError(message)

    def entry(self, sequence: int) -> LedgerEntry | None:
        with self._read() as connection:
            row = connection.execute(
                "SELECT seq, record, leaf_hash, chain_hash FROM ledger WHERE seq = ?", (sequence,)
            ).fetchone()
        return None if row is None else _ledger_entry(row)

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
        return [_ledger_entry(row) for row in rows]

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

            # A delegated scope's ancestors, parent first; they were declared before the binding, so
            # the checkpoint covers them too.
            chain = []
            ancestors = connection.execute(
                "SELECT s.declared_seq, r.registered_seq FROM bindings b"
                " JOIN scope_lineage l ON l.scope_id = b.scope_id JOIN scopes s ON s.id = l.ancestor_id"
                " JOIN bearers r ON r.id = s.bearer_id WHERE b.id = ? ORDER BY l.depth",
                (binding_id,),
            ).fetchall()
            for scope_seq, bearer_seq in ancestors:
                link = {}
                for name, sequence in (("scope", scope_seq), ("bearer", bearer_seq)):
                    record = connection.execute("SELECT record FROM ledger WHERE seq = ?", (sequence,)).fetchone()[0]
                    link[name] = (int(sequence), bytes(record), merkle.inclusion_proof(int(sequence), size, reader))
                chain.append(link)
        return ReceiptMaterial(records=records, checkpoint=str(checkpoint[1]), chain=chain)

    def ledger_size(self) -> int:
        with self._read() as connection:
            row = connection.execute("SELECT count(*) FROM ledger").fetchone()
        return int(row[0])

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Yield ledger entries in sequence order, reading in pages so a long ledger is never all in memory."""
        position = start
        while stop is None or position < stop:
            limit = _LEDGER_PAGE if stop is None else min(_LEDGER_PAGE, stop - position)
            with self._read() as connection:
                rows = connection.execute(
                    "SELECT seq, record, leaf_hash, chain_hash FROM ledger WHERE seq >= ? ORDER BY seq LIMIT ?",
                    (position, limit),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _ledger_entry(row)
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

    def _load_bearer(self, connection: Transaction, bearer_id: str) -> Bearer | None:
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
            return self._add_scope(connection, scope, time)

    def _add_scope(self, connection: Transaction, scope: Scope, time: datetime) -> LedgerEntry:
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
        if scope.parent_id is not None:
            self._add_lineage(connection, scope)
        return entry

    def _add_lineage(self, connection: Transaction, scope: Scope) -> None:
        parent_id = scope.parent_id
        if not connection.execute("SELECT 1 FROM scopes WHERE id = ?", (parent_id,)).fetchone():
            raise _scope_not_found(str(parent_id))
        # One offer makes one scope: accepting it twice would double the budget the delegator handed over.
        siblings = connection.execute(
            "SELECT s.id, s.jws, s.key_id, s.bearer_id FROM scope_lineage l JOIN scopes s ON s.id = l.scope_id"
            " WHERE l.ancestor_id = ? AND l.depth = 1",
            (parent_id,),
        ).fetchall()
        for sibling_id, jws, key_id, bearer_id in siblings:
            if _scope_from_row(jws, key_id, bearer_id).delegation == scope.delegation:
                message = f"this delegation offer was already accepted as scope {sibling_id}"
                raise DeclarationError(message, hint="ask the delegator for a new offer to hand over more")
        inherited = connection.execute(
            "SELECT ancestor_id, depth FROM scope_lineage WHERE scope_id = ?", (parent_id,)
        ).fetchall()
        rows = [(scope.id, parent_id, 1)] + [(scope.id, row[0], int(row[1]) + 1) for row in inherited]
        connection.executemany("INSERT INTO scope_lineage (scope_id, ancestor_id, depth) VALUES (?, ?, ?)", rows)

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
        self, connection: Transaction, scope_id: str, *, now: datetime | None = None
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
        ancestors: tuple[ScopeState, ...] = ()
        if scope.parent_id is not None:
            ancestors = self._load_ancestors(connection, scope_id, now=now)
        return ScopeState(
            scope=scope,
            bearer=bearer,
            revoked=revoked is not None,
            usage=ScopeUsage(int(usage[0]), Decimal(usage[1]), windows) if usage else ScopeUsage(windows=windows),
            ancestors=ancestors,
        )

    def _load_ancestors(
        self, connection: Transaction, scope_id: str, *, now: datetime | None
    ) -> tuple[ScopeState, ...]:
        rows = connection.execute(
            "SELECT ancestor_id FROM scope_lineage WHERE scope_id = ? ORDER BY depth", (scope_id,)
        ).fetchall()
        states = []
        for row in rows:
            state = self._load_scope_state(connection, row[0], now=now)
            if state is None:
                message = f"ancestor {row[0]} of scope {scope_id} is missing from the store"
                raise StoreError(message, hint="run etlb ledger verify; the scope tables may have been altered")
            # Each ancestor is judged on its own; its own ancestors are already in this list.
            states.append(dataclasses.replace(state, ancestors=()))
        return tuple(states)

    def _window_usage(self, connection: Transaction, scope: Scope, now: datetime) -> tuple[tuple[int, Decimal], ...]:
        usage = []
        for window in scope.limits.windows:
            # A binding exactly `seconds` old has left the window; times are stored in one sortable format.
            since = format_time(now - timedelta(seconds=window.seconds))
            # Bindings under scopes delegated from this one use its windows too.
            rows = connection.execute(
                "SELECT reserved_amount FROM bindings WHERE time > ? AND (scope_id = ? OR scope_id IN"
                " (SELECT scope_id FROM scope_lineage WHERE ancestor_id = ?))",
                (since, scope.id, scope.id),
            ).fetchall()
            amount = sum((Decimal(json.loads(row[0])["value"]) for row in rows if row[0]), Decimal(0))
            usage.append((len(rows), amount))
        return tuple(usage)

    def _candidate_scope_ids(self, connection: Transaction, kind: str) -> list[str]:
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

    def decide(
        self,
        action: Action,
        *,
        time: datetime,
        judge: Judge,
        redeem: bool = False,
        approval: ApprovalPlan | None = None,
    ) -> Decision:
        """Judge the candidate scopes and record a binding, a refusal or an approval request, in one transaction."""
        return self.decide_many([DecideRequest(action, judge, redeem, approval)], time=time)[0]

    def decide_many(self, requests: Sequence[DecideRequest], *, time: datetime) -> list[Decision]:
        """Decide every request in order in one write transaction: one commit and one checkpoint.

        Each request is judged against usage reloaded inside the transaction, so it sees the
        reservations of the requests before it. A judge that raises refuses only its own request with
        `internal_error`, and the refusal is recorded. Any other error raises and commits nothing.
        """
        with self._write() as connection:
            return [self._decide_one(connection, request, time) for request in requests]

    def candidates(self, action: Action, *, time: datetime) -> list[ScopeState]:
        """Return the scopes the kind index finds for an action, with their usage at `time`; writes nothing."""
        with self._read() as connection:
            return self._candidates(connection, action, time)

    def _candidates(self, connection: Transaction, action: Action, time: datetime) -> list[ScopeState]:
        # A scope that covers a compound action covers its first part too, so that part's kind finds it.
        return [
            state
            for scope_id in self._candidate_scope_ids(connection, action.kind)
            if (state := self._load_scope_state(connection, scope_id, now=time)) is not None
        ]

    def _decide_one(self, connection: Transaction, request: DecideRequest, time: datetime) -> Decision:
        action = request.action
        states = self._candidates(connection, action, time)
        try:
            resolution = request.judge(states)
        except Exception as error:
            logger.exception("judge of action %s failed, so it is refused with internal_error", action.digest)
            code = ReasonCode.INTERNAL_ERROR
            # The same message as the gate's own internal_error refusals: the reason text, then the error.
            message = f"{refusal_message(action, code, ())}: {type(error).__name__}: {error}"
            return self._record_refusal(connection, action, code, (), message, time)

        if not resolution.covering:
            plan = request.approval
            if plan is not None and plan.approvers:
                return self._approval_for(connection, action, resolution.reasons, plan, time)
            code = resolution.overall_code
            message = refusal_message(action, code, resolution.reasons)
            if plan is not None:
                code = ReasonCode.NO_APPROVERS
                missing = f"no approver is configured for kind {action.kind}"
                message = f"{refusal_message(action, code, resolution.reasons)}\n{missing}"
            return self._record_refusal(connection, action, code, resolution.reasons, message, time)

        covering = resolution.covering[0]
        chosen = covering.scope
        # A delegated scope spends its ancestors' budgets as well as its own, so the action's amount
        # is reserved when any scope of the chain caps amounts, and counted against each of them.
        chain = (covering, *covering.ancestors)
        reserved = next((amount for link in chain if (amount := reservation_for(link.scope, action)) is not None), None)
        value = reserved.value if reserved is not None else Decimal(0)
        for link in chain:
            self._reserve(connection, link.scope.id, link.usage, value)

        binding = Binding(
            id=_new_id("binding"),
            action=action,
            bearer=chosen.bearer,
            scope_id=chosen.id,
            reserved_amount=reserved,
            reserved_count=1,
            time=time,
            sequence=-1,
            chain=tuple((ancestor.scope.id, ancestor.scope.bearer) for ancestor in covering.ancestors),
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
        if request.redeem:
            connection.execute("INSERT INTO redemptions (binding_id) VALUES (?)", (binding.id,))
        return binding

    # Approval requests

    def _approval_for(
        self,
        connection: Transaction,
        action: Action,
        reasons: Sequence[ScopeReason],
        plan: ApprovalPlan,
        time: datetime,
    ) -> ApprovalRequest | Refusal:
        """Return the open request for this action digest, refuse one declined before its deadline, or open one.

        An agent that asks again while its request waits must not reach the approvers twice, and one
        whose request was declined must not ask again until that request's deadline has passed.
        """
        rows = connection.execute(
            "SELECT id FROM approval_requests WHERE action_digest = ? AND deadline > ? ORDER BY seq DESC",
            (action.digest, format_time(time)),
        ).fetchall()
        for row in rows:
            earlier = self._load_approval(connection, row[0])
            if earlier is None or earlier.action.agent != action.agent:
                continue
            if earlier.pending:
                return earlier
            if earlier.status is ApprovalStatus.DECLINED:
                code = ReasonCode.APPROVAL_DECLINED
                detail = f"approval request {earlier.id} for this action was {earlier.detail}"
                message = f"{refusal_message(action, code, reasons)}\n{detail}"
                return self._record_refusal(connection, action, code, reasons, message, time)
        return self._open_approval(connection, action, reasons, plan, time)

    def _open_approval(
        self,
        connection: Transaction,
        action: Action,
        reasons: Sequence[ScopeReason],
        plan: ApprovalPlan,
        time: datetime,
    ) -> ApprovalRequest:
        request = ApprovalRequest(
            id=new_request_id(),
            action=action,
            reasons=tuple(reasons),
            approvers=plan.approvers,
            order=plan.order,
            created=time,
            deadline=time + timedelta(seconds=plan.deadline_seconds),
            sequence=-1,
        )
        data = {
            "request_id": request.id,
            "action": action_json(action),
            "reasons": [reason.to_json() for reason in reasons],
            "approvers": list(plan.approvers),
            "order": plan.order,
            "deadline": format_time(request.deadline),
        }
        entry = self._append(connection, RecordType.APPROVAL_REQUESTED, time, data)
        connection.execute(
            "INSERT INTO approval_requests (id, action, action_digest, reasons, approvers, approval_order,"
            " created, deadline, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request.id,
                json.dumps(action_json(action)),
                action.digest,
                json.dumps(data["reasons"]),
                json.dumps(list(plan.approvers)),
                plan.order,
                format_time(time),
                format_time(request.deadline),
                entry.sequence,
            ),
        )
        return dataclasses.replace(request, sequence=entry.sequence)

    def get_approval(self, request_id: str) -> ApprovalRequest | None:
        with self._read() as connection:
            return self._load_approval(connection, request_id)

    def list_approvals(self, *, pending: bool = False) -> list[ApprovalRequest]:
        """Return approval requests, oldest first; with `pending`, only those not closed yet."""
        sql = "SELECT r.id FROM approval_requests r"
        if pending:
            sql += " LEFT JOIN approval_closures c ON c.request_id = r.id WHERE c.request_id IS NULL"
        with self._read() as connection:
            ids = [row[0] for row in connection.execute(sql + " ORDER BY r.seq").fetchall()]
            requests = [self._load_approval(connection, request_id) for request_id in ids]
        return [request for request in requests if request is not None]

    def accept_approval(
        self, request_id: str, scope: Scope, *, time: datetime, judge: Judge, redeem: bool = False
    ) -> ApprovalRequest:
        """Declare an approver's one-execution scope and bind the request's action under it, in one transaction.

        Raises `ApprovalClosed` when the request was already answered or has expired, and records
        the expiry first when the deadline has passed. When the binding fails (the approver was
        suspended meanwhile, say) the request closes as failed with the refusal.
        """
        with self._write() as connection:
            request = self._open_request(connection, request_id, time)
            if request is None:
                closed = None
            else:
                closed = self._accept(connection, request, scope, time, judge, redeem)
        return closed or _expired(request_id)

    def _accept(
        self,
        connection: Transaction,
        request: ApprovalRequest,
        scope: Scope,
        time: datetime,
        judge: Judge,
        redeem: bool,
    ) -> ApprovalRequest:
        self._add_scope(connection, scope, time)
        result = self._decide_one(connection, DecideRequest(request.action, judge, redeem), time)
        if isinstance(result, Binding):
            self._close_approval(connection, request, ApprovalStatus.ACCEPTED, scope.bearer, time, binding=result.id)
        else:
            message = result.message if isinstance(result, Refusal) else "another approval request was opened"
            detail = f"the acceptance by {scope.bearer} could not bind the action: {message}"
            refusal = result if isinstance(result, Refusal) else None
            self._close_approval(
                connection, request, ApprovalStatus.FAILED, scope.bearer, time, refusal=refusal, detail=detail
            )
        closed = self._load_approval(connection, request.id)
        assert closed is not None
        return closed

    def decline_approval(
        self, request_id: str, bearer: str, jws: str, reason: str, *, time: datetime
    ) -> ApprovalRequest:
        """Close a request as declined by `bearer`, whose signed statement `jws` the gate has verified."""
        with self._write() as connection:
            request = self._open_request(connection, request_id, time)
            closed = None
            if request is not None:
                detail = f"declined by {bearer}" + (f": {reason}" if reason else "")
                refusal = self._refuse_request(connection, request, ReasonCode.APPROVAL_DECLINED, detail, time)
                self._close_approval(
                    connection,
                    request,
                    ApprovalStatus.DECLINED,
                    bearer,
                    time,
                    refusal=refusal,
                    detail=detail,
                    statement=jws,
                )
                closed = self._load_approval(connection, request_id)
        return closed or _expired(request_id)

    def expire_approvals(self, *, time: datetime, request_id: str | None = None) -> list[ApprovalRequest]:
        """Refuse every pending request whose deadline is not after `time` (or only `request_id`)."""
        sql = (
            "SELECT r.id FROM approval_requests r LEFT JOIN approval_closures c ON c.request_id = r.id"
            " WHERE c.request_id IS NULL AND r.deadline <= ?"
        )
        parameters: list[Any] = [format_time(time)]
        if request_id is not None:
            sql += " AND r.id = ?"
            parameters.append(request_id)
        with self._write() as connection:
            expired = []
            for row in connection.execute(sql + " ORDER BY r.seq", parameters).fetchall():
                request = self._load_approval(connection, row[0])
                assert request is not None
                self._expire(connection, request, time)
                expired.append(self._load_approval(connection, row[0]))
        return [request for request in expired if request is not None]

    def approved_binding(self, action_digest: str) -> Binding | None:
        """Return the oldest binding an approver's acceptance made for this action digest and nobody has run yet."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT b.id FROM approval_closures c JOIN bindings b ON b.id = c.binding_id"
                " LEFT JOIN redemptions r ON r.binding_id = b.id"
                " WHERE c.status = 'accepted' AND b.action_digest = ? AND r.binding_id IS NULL"
                " ORDER BY b.seq LIMIT 1",
                (action_digest,),
            ).fetchone()
        if row is None:
            return None
        state = self.get_binding(row[0])
        return state.binding if state is not None else None

    def _open_request(self, connection: Transaction, request_id: str, time: datetime) -> ApprovalRequest | None:
        """Load a request that can still be answered, under the write lock.

        Raises `NotFoundError` or `ApprovalClosed`. Returns None when the deadline has passed, after
        recording the expiry in this transaction; the caller commits it, then raises `ApprovalClosed`.
        """
        request = self._load_approval(connection, request_id)
        if request is None:
            message = f"approval request {request_id} not found"
            raise NotFoundError(message, hint="list pending requests with: etlb approve --list")
        if not request.pending:
            message = f"approval request {request_id} is already closed: {request.status.value}"
            if request.bearer:
                message += f" by {request.bearer}"
            raise ApprovalClosed(message)
        if time >= request.deadline:
            self._expire(connection, request, time)
            return None
        return request

    def _expire(self, connection: Transaction, request: ApprovalRequest, time: datetime) -> None:
        detail = f"no approver answered before the deadline {format_time(request.deadline)}"
        refusal = self._refuse_request(connection, request, ReasonCode.APPROVAL_TIMED_OUT, detail, time)
        self._close_approval(connection, request, ApprovalStatus.TIMED_OUT, None, time, refusal=refusal, detail=detail)

    def _refuse_request(
        self, connection: Transaction, request: ApprovalRequest, code: ReasonCode, detail: str, time: datetime
    ) -> Refusal:
        message = f"{refusal_message(request.action, code, request.reasons)}\napproval request {request.id}: {detail}"
        return self._record_refusal(connection, request.action, code, request.reasons, message, time)

    def _close_approval(
        self,
        connection: Transaction,
        request: ApprovalRequest,
        status: ApprovalStatus,
        bearer: str | None,
        time: datetime,
        *,
        binding: str | None = None,
        refusal: Refusal | None = None,
        detail: str = "",
        statement: str | None = None,
    ) -> None:
        refusal_id = refusal.id if refusal is not None else None
        code = refusal.code.value if refusal is not None else None
        data: dict[str, Any] = {
            "request_id": request.id,
            "status": status.value,
            "bearer": bearer,
            "binding_id": binding,
            "refusal_id": refusal_id,
            "code": code,
            "detail": detail,
        }
        if statement is not None:
            data["jws"] = statement
        entry = self._append(connection, RecordType.APPROVAL_CLOSED, time, data)
        # The primary key allows one closure per request: a second answer racing this one fails here.
        connection.execute(
            "INSERT INTO approval_closures (request_id, status, bearer, binding_id, refusal_id, code, detail, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request.id, status.value, bearer, binding, refusal_id, code, detail, entry.sequence),
        )

    def _load_approval(self, connection: Transaction, request_id: str) -> ApprovalRequest | None:
        row = connection.execute(
            "SELECT r.id, r.action, r.reasons, r.approvers, r.approval_order, r.created, r.deadline, r.seq,"
            " c.status, c.bearer, c.binding_id, c.refusal_id, c.detail, c.code"
            " FROM approval_requests r LEFT JOIN approval_closures c ON c.request_id = r.id WHERE r.id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        return ApprovalRequest(
            id=row[0],
            action=action_from_json(json.loads(row[1])),
            reasons=tuple(_scope_reason(reason) for reason in json.loads(row[2])),
            approvers=tuple(json.loads(row[3])),
            order=row[4],
            created=parse_time(row[5]),
            deadline=parse_time(row[6]),
            sequence=int(row[7]),
            status=ApprovalStatus(row[8]) if row[8] is not None else ApprovalStatus.PENDING,
            bearer=row[9],
            binding_id=row[10],
            refusal_id=row[11],
            detail=row[12] or "",
            code=ReasonCode(row[13]) if row[13] is not None else None,
        )

    def _reserve(self, connection: Transaction, scope_id: str, usage: ScopeUsage, amount: Decimal) -> None:
        # Under the write lock the condition always holds. It still stops a reservation of a budget
        # other than the one the judge saw if the usage row is ever changed behind the store.
        updated = connection.execute(
            "UPDATE scope_usage SET count = ?, amount = ?"
            " WHERE scope_id = ? AND count = ? AND amount = ? RETURNING count",
            (usage.count + 1, str(usage.amount + amount), scope_id, usage.count, str(usage.amount)),
        ).fetchall()
        if len(updated) != 1:
            message = f"usage of scope {scope_id} changed during its reservation"
            raise StoreError(message, hint="run etlb ledger verify; the usage table may have been altered")

    def _record_refusal(
        self,
        connection: Transaction,
        action: Action,
        code: ReasonCode,
        reasons: Sequence[ScopeReason],
        message: str,
        time: datetime,
    ) -> Refusal:
        refusal = Refusal(
            id=_new_id("refusal"),
            action=action,
            code=code,
            reasons=tuple(reasons),
            message=message,
            time=time,
        )
        self._append(connection, RecordType.REFUSAL, time, refusal_data(refusal))
        return refusal

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
            except self._unique_violation as error:
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


def check_schema_version(location: str, current: int, known: int) -> None:
    """Raise `StoreUnavailable` when the store was migrated by a newer etlb than this one."""
    if current > known:
        message = f"store {location} has schema version {current}, but this etlb knows versions up to {known}"
        raise StoreUnavailable(message, hint="upgrade etlb on this host to the version that migrated the store")


def _scope_reason(data: dict[str, str]) -> ScopeReason:
    return ScopeReason(data["scope_id"], data["bearer"], ReasonCode(data["code"]), data["detail"])


def _expired(request_id: str) -> NoReturn:
    message = f"approval request {request_id} expired before the answer arrived, and was refused"
    raise ApprovalClosed(message)


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


def _ledger_entry(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(int(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]))


def _node_reader(connection: Transaction) -> merkle.NodeReader:
    def read(level: int, index: int) -> bytes:
        row = connection.execute("SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
        if row is None:
            message = f"Merkle node at level {level}, index {index} is missing from the store"
            raise StoreError(message, hint="run etlb ledger verify; the store may have been altered")
        return bytes(row[0])

    return read


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
