"""Storage: the `Store` interface and its backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from etlb.errors import ConfigError, StoreUnavailable
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.store.base import BindingState, DecideRequest, Judge, ScopeState, Store

__all__ = [
    "BindingState",
    "DecideRequest",
    "Judge",
    "ScopeState",
    "Store",
    "UnavailableStore",
    "open_store",
    "redact_url",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class UnavailableStore:
    """A store that could not be opened. Every operation raises the error that opening raised.

    A gate built on it refuses every irreversible action with `store_unavailable`, so an MCP proxy or
    adapter can still start and tell the agent why nothing runs, instead of failing without a word.
    """

    def __init__(self, error: StoreUnavailable) -> None:
        self.error = error

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def unavailable(*_: object, **__: object) -> NoReturn:
            raise StoreUnavailable(self.error.message, hint=self.error.hint)

        return unavailable


def open_store(
    url: str, *, base_dir: Path | None = None, create: bool = True, signer: CheckpointSigner | None = None
) -> Store:
    """Open the store a URL names: `sqlite:///relative/or/absolute/path`, `sqlite:////abs/path`, or
    `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (also `postgres://`, with any libpq URI parameter).

    A relative SQLite path is resolved against `base_dir` (the configuration file's folder). With
    `create=False` a missing SQLite file, or a PostgreSQL database without etlb's tables, is
    `StoreUnavailable` instead of a new, empty store; PostgreSQL databases are never created, only
    their tables. With a `signer`, every write that appends records also stores a signed checkpoint.
    """
    if url.startswith("sqlite:///"):
        from etlb.store.sqlite import SQLiteStore

        raw_path = Path(url.removeprefix("sqlite:///"))
        path = raw_path if raw_path.is_absolute() else (base_dir or Path.cwd()) / raw_path
        return SQLiteStore(path, create=create, signer=signer)

    if url.startswith(POSTGRES_SCHEMES):
        from etlb.store.postgres import PostgresStore

        return PostgresStore(url, create=create, signer=signer)

    message = f"store URL {redact_url(url)!r} is not supported"
    raise ConfigError(
        message,
        hint="use sqlite:///path/to/etlb.db or postgresql://USER@HOST:PORT/DATABASE in [gate] store or ETLB_STORE",
    )


def redact_url(url: str) -> str:
    """Return a store URL with its password, in the user part or a `password` parameter, shown as ***."""
    parts = urlsplit(url)
    parameters = parse_qsl(parts.query, keep_blank_values=True)
    has_parameter = any(name == "password" for name, _ in parameters)
    if parts.password is None and not has_parameter:
        return url

    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if has_parameter:
        redacted = [(name, "***" if name == "password" else value) for name, value in parameters]
        query = urlencode(redacted, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
