"""Opening stores by URL: unreachable and empty PostgreSQL databases, and passwords kept out of messages."""

from __future__ import annotations

import pytest

from etlb.errors import ConfigError, StoreUnavailable
from etlb.store import open_store, redact_url
from tests.backends import Backend


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_without_tables_unavailable(backend: Backend) -> None:
    with pytest.raises(StoreUnavailable, match="has no etlb tables") as caught:
        open_store(backend.url, create=False)

    assert caught.value.hint == "create them with: etlb init"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_migrations_apply_once(backend: Backend) -> None:
    for _ in range(2):
        open_store(backend.url).close()
    connection = backend.connect()

    try:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_version ORDER BY version")]
        tree_state = connection.execute("SELECT size FROM tree_state").fetchall()
    finally:
        connection.close()

    assert versions == [1, 2, 3, 4, 5]
    assert tree_state == [(0,)]


def test_postgres_unreachable_unavailable() -> None:
    # Port 1 on the loopback address has no server, so the connection is refused at once.
    url = "postgresql://etlb:s3cret-word@127.0.0.1:1/etlb"

    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)

    assert "cannot open store postgresql://etlb:***@127.0.0.1:1/etlb" in caught.value.message
    assert "s3cret-word" not in caught.value.diagnostics()


def test_unknown_scheme_rejected_without_password() -> None:
    with pytest.raises(ConfigError, match="is not supported") as caught:
        open_store("mysql://etlb:s3cret-word@db/etlb")

    assert "s3cret-word" not in str(caught.value)


def test_redact_url_hides_passwords() -> None:
    assert redact_url("postgresql://etlb:pw@db:5432/etlb") == "postgresql://etlb:***@db:5432/etlb"
    assert redact_url("postgres://db/etlb?password=pw&sslmode=require") == (
        "postgres://db/etlb?password=***&sslmode=require"
    )
    assert redact_url("postgresql://etlb@db/etlb") == "postgresql://etlb@db/etlb"
    assert redact_url("sqlite:///etlb.db") == "sqlite:///etlb.db"
