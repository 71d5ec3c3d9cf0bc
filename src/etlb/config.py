"""Loading and validating `etlb.toml`.

The file has six parts: `[gate]` (store URL and the default agent id), `[servers.NAME]` (whether the
operator trusts a server's tool annotations), `[[rules]]` (the classifier's rules, in order),
`[service]` (the HTTP service of `etlb serve`), `[notify]` (what `etlb notify` sends to bearers) and
`[approvals]` (who is asked when no scope covers an action).
The store URL can be overridden with the `ETLB_STORE` environment variable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etlb.errors import ConfigError
from etlb.model import Consequence

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ApprovalRoute",
    "ApprovalsSection",
    "Config",
    "NotifySection",
    "RuleConfig",
    "ServerConfig",
    "ServiceSection",
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


class ServiceSection(_Strict):
    """Settings of `etlb serve`, the HTTP service. `ETLB_ADMIN_TOKEN` overrides `admin_token_sha256`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    # SHA-256 (hex) of the administrator token, so the file never contains the token itself.
    admin_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=64, ge=2, le=512)
    group_commit: bool = True
    group_commit_window_ms: float = Field(default=2.0, ge=0, le=1000)
    group_commit_max_batch: int = Field(default=64, ge=1, le=10_000)


class NotifySection(_Strict):
    """Settings of `etlb notify`, which sends bearers a message about each binding made in their name.

    The SMTP password is read from `ETLB_SMTP_PASSWORD` only, so the file never contains it. `state`
    is the notifier's own SQLite file (cursor and outbox), relative to the configuration's folder.
    """

    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_starttls: bool = True
    smtp_username: str | None = None
    # The bearer attribute holding the e-mail address, as set with `etlb bearer add --attr email=…`.
    email_attribute: str = "email"
    digest_after: int = Field(default=3, ge=1)
    digest_interval_seconds: int = Field(default=3600, ge=1)
    poll_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    state: str = "etlb-notify.db"

    @model_validator(mode="after")
    def _smtp_has_sender(self) -> NotifySection:
        if self.smtp_host is not None and not self.smtp_from:
            message = f"notify.smtp_host is {self.smtp_host!r} but notify.smtp_from is missing: set the sender address"
            raise ValueError(message)
        return self


class ApprovalRoute(_Strict):
    """Who is asked to approve actions of the kinds matching `kinds` (globs) that no scope covers.

    With `order = "pool"` any listed approver may answer at any time. With `order = "sequence"`
    the deadline is split into equal turns: the first approver may answer from the start, the
    second from the start of the second turn, and so on; an earlier approver may still answer later.
    """

    kinds: list[str] = Field(min_length=1)
    approvers: list[str] = Field(min_length=1)
    order: Literal["pool", "sequence"] = "pool"
    deadline_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)


class ApprovalsSection(_Strict):
    """Approval requests for irreversible actions that no standing scope covers.

    Approvals are on when at least one route is configured. `wait` makes `Gate.bind` block until
    the request is answered or its deadline passes; without it, `bind` raises `ApprovalPending`
    with the request's id at once. `webhook_url` receives each new request, signed by the gate.
    `page_url` is the service's base address, for links to the approval page.
    """

    routes: list[ApprovalRoute] = []
    deadline_seconds: int = Field(default=900, ge=1, le=30 * 24 * 3600)
    wait: bool = True
    poll_seconds: float = Field(default=0.25, gt=0, le=60)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    page_url: str | None = Field(default=None, pattern=r"^https?://")

    @property
    def enabled(self) -> bool:
        return bool(self.routes)


class RuleConfig(_Strict):
    """One classifier rule; `server` and `tool` are globs, `resource`, `amount` and `unit` templates.

    `arguments` narrows the rule to calls whose arguments have these values (dotted paths allowed).
    `analyser` names a built-in analyser (`shell` or `sql`) that classifies the text in the argument
    the `command` template names; its verdict replaces `consequence`.
    """

    tool: str
    kind: str
    server: str = "*"
    consequence: Consequence = Consequence.IRREVERSIBLE
    resource: str | None = None
    amount: str | None = None
    unit: str | None = None
    amount_scale: int = Field(default=0, ge=0, le=18)
    arguments: dict[str, Any] | None = None
    analyser: Literal["shell", "sql"] | None = None
    command: str | None = None
    cwd: str | None = None
    home: str | None = None
    database: str | None = None
    dialect: str | None = None

    @model_validator(mode="after")
    def _analyser_has_inputs(self) -> RuleConfig:
        if self.analyser is not None and self.command is None:
            message = f"rule for tool {self.tool!r} names analyser {self.analyser!r} but no command template"
            raise ValueError(message)
        if self.analyser == "shell" and self.cwd is None:
            message = f"rule for tool {self.tool!r} uses the shell analyser without cwd (a path or a template)"
            raise ValueError(message)
        if self.analyser == "sql" and self.database is None:
            message = f"rule for tool {self.tool!r} uses the sql analyser without database (a name or a template)"
            raise ValueError(message)
        return self

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
    service: ServiceSection = ServiceSection()
    notify: NotifySection = NotifySection()
    approvals: ApprovalsSection = ApprovalsSection()


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
    service: ServiceSection = field(default_factory=ServiceSection)
    notify: NotifySection = field(default_factory=NotifySection)
    approvals: ApprovalsSection = field(default_factory=ApprovalsSection)

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

    # A shell rule without `home` expands `~` to the home folder of the user running the gate.
    rules = tuple(
        rule.model_copy(update={"home": str(Path.home())}) if rule.analyser == "shell" and rule.home is None else rule
        for rule in parsed.rules
    )
    store_url = os.environ.get(STORE_ENVIRONMENT_VARIABLE) or parsed.gate.store
    base_dir = path.parent if path is not None else Path.cwd()
    return Config(
        store_url=store_url,
        agent=parsed.gate.agent,
        key_path=base_dir / parsed.gate.key,
        origin=parsed.gate.origin,
        servers=dict(parsed.servers),
        rules=rules,
        path=path,
        service=parsed.service,
        notify=parsed.notify,
        approvals=parsed.approvals,
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
