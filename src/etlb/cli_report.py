"""`etlb report` and `etlb notify …`: show bearers what was bound to them, and tell them as it happens."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from etlb.cli_support import EXIT_ERROR, Context, console, errors, pass_context, print_json, time_option
from etlb.notify import Notifier, NotifyState, build_channels
from etlb.report import load_report, print_report, render_html, report_json
from etlb.report.terminal import DEFAULT_BINDING_LINES
from etlb.signing import load_private_key, public_jwk

__all__ = ["notify", "report"]


@click.command()
@click.option("--bearer", help="Only this bearer (default: every bearer, the auditor's view).")
@click.option("--since", help="Only bindings and refusals at or after this time (RFC 3339).")
@click.option("--until", help="Only bindings and refusals before this time (RFC 3339).")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report as one self-contained HTML page with charts to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--lines",
    type=click.IntRange(min=0),
    default=DEFAULT_BINDING_LINES,
    show_default=True,
    help="Latest bindings listed per bearer in the terminal; the counts cover all of them.",
)
@pass_context
def report(
    context: Context,
    bearer: str | None,
    since: str | None,
    until: str | None,
    html_path: Path | None,
    as_json: bool,
    lines: int,
) -> None:
    """Show, per bearer, the bindings made in their name, budget used against each cap, outcomes,
    refusals near their scopes and approval requests waiting for them."""
    with context.gate() as gate:
        built = load_report(
            gate.store,
            now=datetime.now(UTC),
            bearer=bearer,
            since=time_option(since, "--since"),
            until=time_option(until, "--until"),
        )
    if bearer is not None and not built.bearers:
        raise click.ClickException(f"bearer {bearer} has no record in the ledger; list bearers with: etlb bearer list")

    if html_path is not None:
        try:
            html_path.write_text(render_html(built), encoding="utf-8")
        except OSError as error:
            message = f"cannot write the HTML report to {html_path}: {error.strerror}"
            raise click.ClickException(f"{message}; choose a path in a folder that exists and you can write") from error
        errors.print(f"wrote the HTML report to {html_path}")
    if as_json:
        print_json(report_json(built))
    elif html_path is None:
        print_report(console, built, binding_lines=lines)


@click.group(invoke_without_command=True)
@click.option("--once", "mode", flag_value="once", help="Run once and exit (the default).")
@click.option("--follow", "mode", flag_value="follow", help="Keep following the ledger until interrupted.")
@click.pass_context
def notify(click_context: click.Context, mode: str | None) -> None:
    """Notify bearers of bindings made in their name, by webhook and e-mail, as `[notify]` configures.

    A failed delivery is logged and tried again on the next run. A delivered message is not sent again
    after a restart; docs/notifications.md states the exact guarantees.
    """
    if click_context.invoked_subcommand is not None:
        return
    context: Context = click_context.obj
    config = context.config()
    channels = build_channels(config)
    state_path = config.base_dir / config.notify.state

    with context.gate() as gate:
        state = NotifyState(state_path)
        try:
            notifier = Notifier(gate.store, state, channels, config.notify)
            if mode == "follow":
                _follow(notifier)
                return
            summary = notifier.run_once()
        finally:
            state.close()

    click.echo(
        f"read {summary.records} ledger records, queued {summary.queued} notices, sent {summary.sent} messages, "
        f"{summary.failed} failed; {summary.waiting} notices wait for the next run"
    )
    # A scheduler running `etlb notify --once` learns of failed deliveries from the exit status.
    if summary.failed:
        raise SystemExit(EXIT_ERROR)


@notify.command("key")
@pass_context
def notify_key(context: Context) -> None:
    """Print the gate's public JWK, with which webhook receivers verify the ETLB-Signature header."""
    config = context.config()
    print_json(public_jwk(load_private_key(config.key_path)))


def _follow(notifier: Notifier) -> None:
    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        notifier.follow(stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
