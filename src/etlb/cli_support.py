"""What every `etlb` command module shares: the click context object, consoles and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from etlb.config import Config, load_config
from etlb.gate import Gate

__all__ = ["EXIT_DECISION", "EXIT_ERROR", "Context", "console", "errors", "pass_context", "print_json"]

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
