"""Loading and validating `etlb.toml`.

The file has three parts: `[gate]` (store URL and the default agent id), `[servers.NAME]` (whether the
operator trusts a server's tool annotations) and `[[rules]]` (the classifier's rules, in order). The
store URL can be overridden with the `ETLB_STORE` environment variable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from etlb.errors import ConfigError
from etlb.model import Consequence

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "Config",
    "RuleConfig",
    "ServerConfig",
    "default_config_text",
    "load_config",
]

DEFAULT_CONFIG_NAME = "etlb.toml"
STORE_ENVIRONMENT_VARIABLE = "ETLB_STORE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSection(_Strict):
    store: str = "sqlite:///etlb.db"
    agent: str = "local-agent"
    key: str = "etlb-gate.key"
    origin: str | None = None


class ServerConfig(_Strict):
    trusted: bool = False


class RuleConfig(_Strict):
    """One classifier rule; `server` and `tool` are globs, `resource`, `amount` and `unit` templates."""

    tool: str
    kind: str
    server: str = "*"
    consequence: Consequence = Consequence.IRREVERSIBLE
    resource: str | None = None
    amount: str | None = None
    unit: str | None = None
    amount_scale: int = Field(default=0, ge=0, le=18)

    @field_validator("kind")
    @classmethod
    def _kind_is_dotted(cls, kind: str) -> str:
        if not kind or any(character.isspace() for character in kind) or "*" in kind:
            message = f"kind {kind!r} must be a dotted name without spaces or wildcards, e.g. payments.transfer"
            raise ValueError(message)
        return kind


class _ConfigFile(_Strict):
    gate: GateSection = GateSection()
    servers: dict[str, ServerConfig] = {}
    rules: list[RuleConfig] = []


@dataclass(frozen=True)
class Config:
    """Validated configuration; `path` is the file it came from, or None for the built-in default."""

    store_url: str
    agent: str
    key_path: Path
    origin: str | None
    servers: dict[str, ServerConfig]
    rules: tuple[RuleConfig, ...]
    path: Path | None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    def trusts(self, server: str | None) -> bool:
        return server is not None and server in self.servers and self.servers[server].trusted


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a configuration file; with no path, `./etlb.toml`."""
    config_path = Path(path) if path is not None else Path(DEFAULT_CONFIG_NAME)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        message = f"configuration file {config_path} not found"
        raise ConfigError(message, hint="create one with: etlb init, or pass --config PATH") from error
    except OSError as error:
        message = f"cannot read configuration file {config_path}: {error.strerror}"
        raise ConfigError(message) from error
    return parse_config(text, path=config_path.resolve())


def parse_config(text: str, *, path: Path | None = None) -> Config:
    where = str(path) if path is not None else "configuration"
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = f"{where} is not valid TOML: {error}"
        raise ConfigError(message) from error

    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        message = f"{where} is invalid: {problems}"
        raise ConfigError(message, hint="see docs/configuration.md for every setting") from error

    store_url = os.environ.get(STORE_ENVIRONMENT_VARIABLE) or parsed.gate.store
    base_dir = path.parent if path is not None else Path.cwd()
    return Config(
        store_url=store_url,
        agent=parsed.gate.agent,
        key_path=base_dir / parsed.gate.key,
        origin=parsed.gate.origin,
        servers=dict(parsed.servers),
        rules=tuple(parsed.rules),
        path=path,
    )


def default_config_text() -> str:
    """Return the commented `etlb.toml` that `etlb init` writes."""
    return _DEFAULT_CONFIG


_DEFAULT_CONFIG = """\
# etlb configuration. Every tool call that no rule below marks reversible is irreversible, and runs
# only when one bearer's signed scope covers it.

[gate]
# sqlite:///relative/path is relative to this file's folder; ETLB_STORE overrides this setting.
store = "sqlite:///etlb.db"
# Agent id for in-process use when bind() is called without one.
agent = "local-agent"
# The gate's own Ed25519 key, which signs ledger checkpoints; created by etlb init, readable by its
# owner only, and kept apart from the store. Relative to this file's folder.
key = "etlb-gate.key"
# Origin line of the signed checkpoints (the log's name); by default derived from the gate key.
# origin = "ledger.example.org/etlb"

# Servers whose readOnlyHint tool annotations you trust to mark a tool reversible.
# [servers.git]
# trusted = true

# Rules match tool calls by server and tool name (globs), first match wins. Templates take argument
# values by name: "{repo_path}", or "{payee.iban}" for a nested value.
# [[rules]]
# server = "payments"
# tool = "transfer"
# kind = "payments.transfer"
# consequence = "irreversible"
# resource = "account:{from_account}"
# amount = "{amount}"
# unit = "{currency}"
"""
