"""What every `etlb` command module shares: the click context object, consoles and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from etlb.config import Config, load_config
from etlb.errors import KeyFileError
from etlb.gate import Gate
from etlb.model import parse_time

__all__ = [
    "EXIT_DECISION",
    "EXIT_ERROR",
    "Context",
    "console",
    "errors",
    "pass_context",
    "print_json",
    "read_passphrase",
    "time_option",
]

EXIT_ERROR = 1
EXIT_DECISION = 3

console = Console()
# Messages are not wrapped, so that a path or an id in an error is never split across lines.
errors = Console(stderr=True, soft_wrap=True)


class Context:
    """The global options, passed to every command."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path

    def config(self) -> Config:
        return load_config(self.config_path)

    def gate(self) -> Gate:
        return Gate.from_config(self.config_path)


pass_context = click.make_pass_decorator(Context)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def read_passphrase(path: Path | None) -> bytes | None:
    """Return the first line of a passphrase file, or None without a file; an empty first line is an error."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise KeyFileError(f"cannot read passphrase file {path}: {error.strerror}") from error
    if not lines or not lines[0]:
        raise KeyFileError(f"passphrase file {path} is empty")
    return lines[0].encode("utf-8")


def time_option(value: Any, option: str) -> datetime | None:
    """Read an RFC 3339 time given to `option`; a TOML datetime without a zone is taken as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return parse_time(str(value))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from error
