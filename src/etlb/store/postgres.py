"""PostgreSQL store: one database shared by many gate processes and hosts, through psycopg 3 and a pool.

Invariants, and why they hold:
- One write lock. Every write transaction first locks the single `tree_state` row, which holds the
  ledger size and chain head, with `SELECT … FOR UPDATE`, and keeps it until commit or rollback.
  Writers on every connection, process and host therefore run one at a time, as SQLite's
  `BEGIN IMMEDIATE` makes them on one file.
- Reservations are exact. Writes run at READ COMMITTED, where each statement sees every transaction
  committed before the statement began. A writer reads scopes and usage only after the lock is
  granted, and the previous holder had committed or rolled back before releasing it. So every
  candidate decision of an action sees all earlier reservations, and no other reservation can
  commit until this one does. The reservation itself is a conditional
  `UPDATE scope_usage … WHERE scope_id = … AND count = … RETURNING`: it writes only the usage the
  judge saw, and a transaction whose condition matches no row fails instead of over-reserving.
- Gapless sequence numbers. The next sequence number is `tree_state.size`, read and advanced under
  the lock in the transaction that inserts the record, never a sequence or identity column (those
  leave gaps when a transaction rolls back). A rolled-back write leaves `tree_state` as it was.
- Durable before the tool runs: every connection sets `synchronous_commit=on`, so COMMIT returns
  only after the transaction's WAL is flushed to disk (and to any synchronous standby).
- Consistent reads: reads run at REPEATABLE READ, READ ONLY, so a read of several statements (a
  proof, a receipt) sees one snapshot.
- Insert-only facts: a trigger on each data table raises on UPDATE, DELETE and TRUNCATE. Only budget
  usage, bearer status and `tree_state` change in place, and `etlb ledger verify` recomputes the first
  two from the ledger. The triggers stop mistakes and the gate's own code, not the tables' owner, who
  can disable them; verification finds what such an owner changes.
- Times are stored as the same fixed-width RFC 3339 UTC text as in SQLite, which sorts as time
  sorts, so rolling windows and ledger filters compare exactly the values they compare in SQLite.
- Migrations are the shared ones of `schema.py`, with the same version numbers as in SQLite, recorded
  in `schema_version`. They are applied at open inside one transaction under an advisory lock, so
  processes that start together apply each version once, completely or not at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from etlb.errors import StoreError, StoreUnavailable
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.ledger.records import LedgerEntry
from etlb.store import redact_url
from etlb.store.common import RelationalStore, Rows, Transaction, check_schema_version
from etlb.store.schema import INSERT_ONLY_TABLES, POSTGRES, migrations

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

# How long a write waits for the write lock, or for a free pooled connection, before the store is
# reported unavailable and the action refused. A writer holds the lock for one commit, so a wait this
# long means a stuck writer. The same default as SQLite's busy timeout.
LOCK_TIMEOUT_SECONDS = 10.0

# Connections each store keeps open at most. Writes run one at a time on the whole database, so more
# connections only help concurrent reads.
POOL_MAX_SIZE = 4

# libpq's connect_timeout, in seconds, unless the URL sets its own.
CONNECT_TIMEOUT_SECONDS = 10

# Key of the transaction-level advisory lock that serialises migrations on one database.
_MIGRATION_LOCK_KEY = 0x65746C62  # "etlb" in ASCII

_INSERT_ONLY_FUNCTION = """
CREATE FUNCTION etlb_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is insert-only', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'etlb records facts once; a change is a new ledger record, never an edit';
END
$$
"""

# Created with the first migration, beside the shared tables: the write lock and ledger head, whose
# size is the next sequence number. It changes in place, so it has no insert-only trigger.
_TREE_STATE = """
CREATE TABLE tree_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    chain_head BYTEA NOT NULL
);
INSERT INTO tree_state (id, size, chain_head) VALUES (1, 0, decode(repeat('00', 32), 'hex'))
"""

_MIGRATIONS = migrations(POSTGRES)


class _PostgresTransaction(Transaction):
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        super().__init__()
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Rows:
        return self._connection.execute(_pyformat(sql), parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(_pyformat(sql), rows)


class PostgresStore(RelationalStore):
    """A store in a PostgreSQL database. Safe to share between threads, and each process opens its own."""

    _unique_violation = psycopg.errors.UniqueViolation

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        signer: CheckpointSigner | None = None,
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
        pool_max_size: int = POOL_MAX_SIZE,
    ) -> None:
        super().__init__(location=redact_url(url), signer=signer)
        self._lock_timeout = lock_timeout
        connection_options = self._connection_options(url)

        try:
            with psycopg.connect(url, **connection_options) as connection:
                self._migrate(connection, create=create)
        except psycopg.Error as error:
            message = f"cannot open store {self._location}: {_first_line(error)}"
            raise StoreUnavailable(
                message, hint="check that the server is running and the URL's host, port, user and database"
            ) from error

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=connection_options,
            min_size=1,
            max_size=pool_max_size,
            open=False,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=lock_timeout,
            name="etlb-store",
        )
        self._pool.open()
        logger.info("opened store %s with at most %d connections", self._location, pool_max_size)

    def close(self) -> None:
        self._pool.close()

    def _connection_options(self, url: str) -> dict[str, Any]:
        try:
            url_options = conninfo_to_dict(url)
        except psycopg.ProgrammingError as error:
            message = f"store URL {self._location} is invalid: {_first_line(error)}"
            raise StoreUnavailable(message, hint="use postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from error
        return {} if "connect_timeout" in url_options else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        """Set the session options every pooled connection needs, once, when the pool opens it."""
        connection.execute("SELECT set_config('synchronous_commit', 'on', false)")
        connection.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(self._lock_timeout * 1000)}ms",))
        connection.commit()

    # Transactions

    @contextmanager
    def _transaction(self, isolation: IsolationLevel, *, read_only: bool) -> Iterator[_PostgresTransaction]:
        """Run one transaction on a pooled connection, which commits when the block ends without an error."""
        with self._pool.connection() as connection:
            connection.isolation_level = isolation
            connection.read_only = read_only
            with connection.transaction():
                yield _PostgresTransaction(connection)

    @contextmanager
    def _write(self) -> Iterator[_PostgresTransaction]:
        try:
            with self._transaction(IsolationLevel.READ_COMMITTED, read_only=False) as transaction:
                # This row lock is the store's write lock, as the module's docstring explains.
                transaction.execute("SELECT size FROM tree_state WHERE id = 1 FOR UPDATE")
                yield transaction
                self._finish_write(transaction)
        except psycopg.errors.LockNotAvailable as error:
            message = (
                f"cannot start a write transaction on store {self._location}: it is locked by another writer"
                f" for more than {self._lock_timeout:g} s"
            )
            raise StoreUnavailable(message, hint="look for a stuck etlb process or a long transaction") from error
        except psycopg.OperationalError as error:
            # NOTE: a connection lost during COMMIT leaves it unknown whether the transaction committed.
            # The caller refuses the action (fail closed); a binding that did commit then has no outcome.
            message = f"store {self._location} is unavailable: {_first_line(error)}"
            raise StoreUnavailable(message) from error
        except psycopg.Error as error:
            message = f"store {self._location} failed: {_first_line(error)}"
            raise StoreError(message) from error

    @contextmanager
    def _read(self) -> Iterator[_PostgresTransaction]:
        try:
            with self._transaction(IsolationLevel.REPEATABLE_READ, read_only=True) as transaction:
                yield transaction
        except psycopg.Error as error:
            message = f"cannot read store {self._location}: {_first_line(error)}"
            raise StoreUnavailable(message) from error

    def _migrate(self, connection: psycopg.Connection[Any], *, create: bool) -> None:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            exists = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not (exists and exists[0]) and not create:
                message = f"store {self._location} has no etlb tables"
                raise StoreUnavailable(message, hint="create them with: etlb init")

            connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] if row and row[0] is not None else 0
            check_schema_version(self._location, current, len(_MIGRATIONS))
            if current == 0:
                connection.execute(_INSERT_ONLY_FUNCTION)
                connection.execute(_TREE_STATE)
            # Each script runs as one multi-statement query, which psycopg sends through the simple
            # query protocol because it has no parameters.
            for version, script in enumerate(_MIGRATIONS[current:], start=current + 1):
                connection.execute(script)
                for table in INSERT_ONLY_TABLES.get(version, ()):
                    connection.execute(_forbid_changes_sql(table))
                connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                logger.info("applied store migration %d to %s", version, self._location)

    # Ledger head: the `tree_state` row, locked by `_write`.

    def _ledger_head(self, transaction: Transaction) -> tuple[int, bytes]:
        row = transaction.execute("SELECT size, chain_head FROM tree_state WHERE id = 1").fetchone()
        if row is None:
            message = f"store {self._location} has no tree_state row"
            raise StoreError(message, hint="run etlb ledger verify; the store may have been altered")
        return int(row[0]), bytes(row[1])

    def _advance_head(self, transaction: Transaction, entry: LedgerEntry) -> None:
        transaction.execute(
            "UPDATE tree_state SET size = ?, chain_head = ? WHERE id = 1", (entry.sequence + 1, entry.chain_hash)
        )


def _forbid_changes_sql(table: str) -> str:
    return (
        f"CREATE TRIGGER {table}_insert_only BEFORE UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION etlb_insert_only();"
        f" CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION etlb_insert_only()"
    )


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """Translate the shared statements' `?` placeholders to psycopg's `%s`, escaping any literal `%`."""
    return sql.replace("%", "%%").replace("?", "%s")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
