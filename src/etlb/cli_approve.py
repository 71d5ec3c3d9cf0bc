"""`etlb approve`: list pending approval requests, and accept or decline one with the approver's key.

The approver sees the full canonical action as the store holds it, never a summary an agent wrote,
with the reasons no scope covered it and the exact terms they sign.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from etlb.approval.model import DECLINE_TYP, ApprovalRequest
from etlb.cli_support import Context, console, errors, pass_context, print_json, read_passphrase
from etlb.declarations import SCOPE_TYP
from etlb.model import format_time
from etlb.signing import load_private_key, sign_payload

__all__ = ["approve"]

# A console that wraps long lines instead of cutting them, so the approver reads in full what they
# sign. The shared error console keeps each message on one line.
panels = Console(stderr=True)


@click.command()
@click.argument("request_id", required=False)
@click.option("--list", "list_only", is_flag=True, help="Only list the pending requests (the default without an id).")
@click.option("--bearer", "bearer_id", help="Your bearer id, as one of the request's approvers.")
@click.option("--key", "key_path", type=click.Path(path_type=Path, dir_okay=False), help="Your private key file.")
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--decline", is_flag=True, help="Decline the request instead of accepting it.")
@click.option("--reason", default="", help="Why you decline, recorded in the ledger.")
@click.option("--yes", is_flag=True, help="Sign without asking; the action and terms are still printed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def approve(
    context: Context,
    request_id: str | None,
    list_only: bool,
    bearer_id: str | None,
    key_path: Path | None,
    passphrase_file: Path | None,
    decline: bool,
    reason: str,
    yes: bool,
    as_json: bool,
) -> None:
    """Accept or decline approval request REQUEST_ID; without it, list the pending requests.

    Accepting signs a scope for exactly one execution of exactly that action, until the request's
    deadline; the action is then bound to you. Declining signs a statement that refuses it.
    """
    with context.gate() as gate:
        if request_id is None or list_only:
            pending = gate.pending_approvals()
            if as_json:
                print_json([request.to_json() for request in pending])
            else:
                _print_pending(pending)
            return

        if not bearer_id or key_path is None:
            raise click.UsageError("accepting or declining a request needs --bearer ID and --key FILE")
        if reason and not decline:
            raise click.UsageError("--reason is recorded with a decline only; add --decline, or leave --reason out")
        request = gate.approval(request_id)
        payload = gate.approval_payload(request_id, bearer_id, decline=decline, reason=reason)

        _print_request(request)
        if decline:
            question = f"Decline request {request_id} as {bearer_id}?"
        else:
            panels.print(Panel(payload["terms"], title="terms you accept"))
            question = f"Accept liability for this action as {bearer_id}?"
        if not yes and not click.confirm(question, err=True):
            raise click.exceptions.Abort

        private_key = load_private_key(key_path, read_passphrase(passphrase_file))
        jws = sign_payload(private_key, payload, typ=DECLINE_TYP if decline else SCOPE_TYP)
        closed = gate.answer_approval(request_id, jws)

    if as_json:
        print_json(closed.to_json())
    elif closed.binding_id:
        console.print(f"accepted: request {request_id} is bound to {closed.bearer} as binding {closed.binding_id}")
    else:
        console.print(f"request {request_id} closed: {closed.status.value}, {closed.detail}")


def _print_pending(pending: list[ApprovalRequest]) -> None:
    if not pending:
        console.print("no approval request is pending")
        return

    now = datetime.now(UTC)
    table = Table(title="pending approval requests")
    table.add_column("request", overflow="fold", min_width=33)
    for heading in ("action", "agent", "approvers", "deadline", "left"):
        table.add_column(heading, overflow="fold")
    for request in pending:
        action = request.action
        what = f"{action.kind} on {action.resource}" + (f" of {action.amount}" if action.amount else "")
        left = max(0, int((request.deadline - now).total_seconds()))
        table.add_row(
            request.id,
            what,
            action.agent,
            ", ".join(request.approvers),
            format_time(request.deadline),
            f"{left // 60}m {left % 60}s",
        )
    console.print(table)
    console.print("accept or decline one with: etlb approve REQUEST_ID --bearer ID --key FILE [--decline --reason T]")


def _print_request(request: ApprovalRequest) -> None:
    action = {**request.action.canonical_fields(), "digest": request.action.digest}
    panels.print(Panel(json.dumps(action, indent=2, sort_keys=True), title=f"action of request {request.id}"))
    reasons = "\n".join(f"- {reason.scope_id} of {reason.bearer}: {reason.detail}" for reason in request.reasons)
    panels.print(Panel(reasons or "no scope came close", title="why no standing scope covered it"))
    errors.print(f"approvers: {', '.join(request.approvers)}; deadline {format_time(request.deadline)}")
