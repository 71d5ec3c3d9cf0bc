"""Storage: the `Store` interface and its backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from etlb.errors import ConfigError, StoreUnavailable
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.store.base import BindingState, Judge, ScopeState, Store

__all__ = ["BindingState", "Judge", "ScopeState", "Store", "UnavailableStore", "open_store"]


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
    """Open the store a URL names: `sqlite:///relative/or/absolute/path` or `sqlite:////abs/path`.

        A relative SQLite path is resolved against `base_dir` (the configuration file's folder). With
        `create=False` a missing database is `StoreUnavailable` instead of a new, empty store. With a
    `signer`, every write that appends records also stores a signed checkpoint.
    """
    if url.startswith("sqlite:///"):
        from etlb.store.sqlite import SQLiteStore

        raw_path = Path(url.removeprefix("sqlite:///"))
        path = raw_path if raw_path.is_absolute() else (base_dir or Path.cwd()) / raw_path
        return SQLiteStore(path, create=create, signer=signer)

    message = f"store URL {url!r} is not supported"
    raise ConfigError(message, hint="use sqlite:///path/to/etlb.db in [gate] store or ETLB_STORE")
