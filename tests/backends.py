"""The two store backends as tests see them: a SQLite file, or a PostgreSQL schema of the test's own.

PostgreSQL tests run against the server that ETLB_TEST_POSTGRES_URL names, which
`scripts/with-postgres.sh` starts for `make test`. Each test gets a new schema in that database,
selected through the connection's search_path, and drops it afterwards, so tests share no rows.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from etlb.ledger.checkpoint import CheckpointSigner
from etlb.store import Store
from etlb.store.postgres import PostgresStore
from etlb.store.sqlite import SQLiteStore

BACKENDS = ("sqlite", "postgres")
POSTGRES_URL_VARIABLE = "ETLB_TEST_POSTGRES_URL"

both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def postgres_server_url() -> str:
    """Return the test server's URL; skip the test without one, or fail it in CI, where one must exist."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        return url
    reason = (
        f"{POSTGRES_URL_VARIABLE} is not set, so there is no PostgreSQL server to test against;"
        " run make test, make test-postgres or scripts/with-postgres.sh COMMAND to start one"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class PostgresRawConnection:
    """An autocommit psycopg connection that takes the `?` placeholders the SQLite tests write."""

    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.connection.execute(sql.replace("?", "%s"), parameters)

    def close(self) -> None:
        self.connection.close()


@dataclass
class Backend:
    """Where one test's store lives, and raw SQL access to it that bypasses the store."""

    name: str
    url: str
    sqlite_path: Path | None = None

    @property
    def insert_only_error(self) -> type[Exception]:
        """The driver error raised when an insert-only trigger rejects an UPDATE or DELETE."""
        return sqlite3.IntegrityError if self.name == "sqlite" else psycopg.errors.RestrictViolation

    def open_store(self, *, signer: CheckpointSigner | None = None, timeout: float | None = None) -> Store:
        """Open a new store on this backend; `timeout` is the wait for the write lock, in seconds."""
        if self.sqlite_path is not None:
            if timeout is None:
                return SQLiteStore(self.sqlite_path, signer=signer)
            return SQLiteStore(self.sqlite_path, signer=signer, busy_timeout=timeout)
        if timeout is None:
            return PostgresStore(self.url, signer=signer)
        return PostgresStore(self.url, signer=signer, lock_timeout=timeout)

    def connect(self) -> Any:
        """Open an autocommit connection for raw SQL with `?` placeholders."""
        if self.sqlite_path is not None:
            return sqlite3.connect(self.sqlite_path, isolation_level=None)
        return PostgresRawConnection(self.url)

    def allow_changes(self, connection: Any, table: str) -> None:
        """Switch off the insert-only triggers of `table`, as someone with the database's files or ownership can."""
        if self.sqlite_path is not None:
            for operation in ("update", "delete"):
                connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
        else:
            # As the table owner; ALL also switches off foreign keys, as a raw SQLite connection has them off.
            connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")

    @contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Hold the store's write lock from another connection until the block ends."""
        connection = self.connect()
        try:
            if self.sqlite_path is not None:
                connection.execute("BEGIN EXCLUSIVE")
            else:
                connection.execute("BEGIN")
                connection.execute("SELECT size FROM tree_state WHERE id = 1 FOR UPDATE")
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()

    def stored_bytes(self) -> bytes:
        """Everything the store holds on disk (SQLite) or in its tables as text (PostgreSQL)."""
        if self.sqlite_path is not None:
            return b"".join(path.read_bytes() for path in self.sqlite_path.parent.glob(f"{self.sqlite_path.name}*"))
        connection = PostgresRawConnection(self.url)
        try:
            tables = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
            # A row cast to text shows BYTEA columns in hex, one of the forms the tests look for.
            rows = [text for (table,) in tables for (text,) in connection.execute(f"SELECT t::text FROM {table} t")]
        finally:
            connection.close()
        return "\n".join(rows).encode()


@contextmanager
def backend_for(name: str, folder: Path) -> Iterator[Backend]:
    """Provide a backend for one test: a SQLite file in `folder`, or a new PostgreSQL schema."""
    if name == "sqlite":
        path = folder / "etlb.db"
        yield Backend("sqlite", f"sqlite:///{path}", path)
        return

    server_url = postgres_server_url()
    schema = f"etlb_test_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield Backend("postgres", _with_search_path(server_url, schema))
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def _with_search_path(url: str, schema: str) -> str:
    """Add a libpq `options` parameter that makes `schema` the first one searched and created in."""
    parts = urlsplit(url)
    parameters = [*parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(parameters), parts.fragment))
