"""The notifier's own state: a SQLite file with its ledger cursor, its outbox and the messages it sent.

The notifier keeps this apart from the store on purpose. It writes nothing to the store, so the
gate's write path never waits for notification bookkeeping, and the store's schema, which the gate's
migrations own, stays the gate's alone.

Invariants:
- A binding is queued once per channel: the outbox key is (channel, binding id), and the cursor moves
  past a record in the same transaction that queues its notices. A crash never loses a notice.
- A notice leaves the queue only when its message was delivered (`sent_at` is set in the
  transaction right after delivery). A crash between delivery and that commit sends it again, with
  the same message id, so delivery is at least once.
- The cursor remembers the chain hash of the last record it passed, so a state file used with
  another ledger is rejected instead of skipping or repeating records.
- One notifier at a time: the connection holds SQLite's exclusive lock for its whole life.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etlb.errors import StoreError, StoreUnavailable
from etlb.model import format_time, parse_time
from etlb.notify.messages import Notice

__all__ = ["NotifyState", "QueuedNotice"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq INTEGER NOT NULL,
    chain_hash BLOB
);
CREATE TABLE IF NOT EXISTS outbox (
    channel TEXT NOT NULL,
    binding_id TEXT NOT NULL,
    bearer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    notice TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at TEXT,
    PRIMARY KEY (channel, binding_id)
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox(channel, bearer, sent_at);
CREATE TABLE IF NOT EXISTS messages (
    channel TEXT NOT NULL,
    bearer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    notices INTEGER NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_bearer ON messages(channel, bearer, sent_at);
"""

# How long a second notifier waits for the state file's lock before it gives up, in seconds.
_LOCK_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class QueuedNotice:
    notice: Notice
    queued_at: datetime
    attempts: int
    last_error: str | None


class NotifyState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # One notifier uses the state at a time, but it may be opened in one thread and run in another.
            self._connection = sqlite3.connect(
                path, isolation_level=None, timeout=_LOCK_TIMEOUT_SECONDS, check_same_thread=False
            )
            self._connection.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._connection.execute("PRAGMA synchronous=FULL")
            # The first write takes the exclusive lock, which the connection then keeps until it closes.
            self._connection.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        except sqlite3.OperationalError as error:
            message = f"cannot open notifier state {path}: {error}"
            hint = "another etlb notify may be running with this state file; stop it or set notify.state"
            raise StoreUnavailable(message, hint=hint) from error

    def close(self) -> None:
        self._connection.close()

    def cursor(self) -> tuple[int, bytes | None]:
        """Return the next ledger sequence number to read and the chain hash of the record before it."""
        row = self._connection.execute("SELECT next_seq, chain_hash FROM cursor WHERE id = 1").fetchone()
        return (0, None) if row is None else (int(row[0]), bytes(row[1]) if row[1] is not None else None)

    def advance(
        self, *, next_seq: int, chain_hash: bytes, queued: Iterable[tuple[str, Notice]], queued_at: datetime
    ) -> None:
        """Queue `(channel, notice)` pairs and move the cursor, in one transaction."""
        when = format_time(queued_at)
        rows = [
            (channel, notice.binding_id, notice.bearer, notice.sequence, json.dumps(notice.to_json()), when)
            for channel, notice in queued
        ]
        with self._transaction():
            self._connection.executemany(
                "INSERT OR IGNORE INTO outbox (channel, binding_id, bearer, seq, notice, queued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._connection.execute(
                "INSERT INTO cursor (id, next_seq, chain_hash) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET next_seq = excluded.next_seq, chain_hash = excluded.chain_hash",
                (next_seq, chain_hash),
            )

    def waiting_bearers(self, channel: str) -> list[str]:
        rows = self._connection.execute(
            "SELECT DISTINCT bearer FROM outbox WHERE channel = ? AND sent_at IS NULL ORDER BY bearer", (channel,)
        ).fetchall()
        return [str(row[0]) for row in rows]

    def waiting(self, channel: str, bearer: str) -> list[QueuedNotice]:
        rows = self._connection.execute(
            "SELECT notice, queued_at, attempts, last_error FROM outbox"
            " WHERE channel = ? AND bearer = ? AND sent_at IS NULL ORDER BY seq",
            (channel, bearer),
        ).fetchall()
        return [QueuedNotice(Notice.from_json(json.loads(row[0])), parse_time(row[1]), row[2], row[3]) for row in rows]

    def count_waiting(self) -> int:
        row = self._connection.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        return int(row[0])

    def recent_messages(self, channel: str, bearer: str, since: datetime) -> int:
        row = self._connection.execute(
            "SELECT count(*) FROM messages WHERE channel = ? AND bearer = ? AND sent_at > ?",
            (channel, bearer, format_time(since)),
        ).fetchone()
        return int(row[0])

    def mark_sent(self, channel: str, message_id: str, notices: Sequence[Notice], sent_at: datetime) -> None:
        with self._transaction():
            self._connection.executemany(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE channel = ? AND binding_id = ?",
                [(format_time(sent_at), channel, notice.binding_id) for notice in notices],
            )
            self._connection.execute(
                "INSERT INTO messages (channel, bearer, message_id, notices, sent_at) VALUES (?, ?, ?, ?, ?)",
                (channel, notices[0].bearer, message_id, len(notices), format_time(sent_at)),
            )

    def mark_failed(self, channel: str, notices: Sequence[Notice], error: str) -> None:
        with self._transaction():
            self._connection.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE channel = ? AND binding_id = ?",
                [(error, channel, notice.binding_id) for notice in notices],
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection, self.path)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self._path = path

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, error_type: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if error_type is None:
            self._connection.execute("COMMIT")
            return
        self._connection.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            message = f"notifier state {self._path} failed: {error}"
            raise StoreError(message) from error
