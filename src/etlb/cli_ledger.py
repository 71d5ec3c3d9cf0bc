"""`etlb ledger …` and `etlb receipt …`: show, verify, export and prove the ledger."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click
from rich.table import Table

from etlb.cli_support import EXIT_DECISION, Context, console, errors, pass_context, print_json, time_option
from etlb.errors import EtlbError
from etlb.gate_key import verifier_path
from etlb.ledger.checkpoint import Checkpoint, CheckpointError, NoteVerifier, parse_verifier_key, verify_checkpoint
from etlb.ledger.receipt import ReceiptError, ReceiptSummary, verify_receipt
from etlb.ledger.records import GENESIS_CHAIN_HASH, LedgerEntry, chain_hash, leaf_hash
from etlb.ledger.verify import VerificationReport, verify_ledger
from etlb.store.base import LedgerQuery

__all__ = ["ledger", "receipt", "record_summary"]

EXPORT_FORMAT = "etlb-ledger-export/v1"

# `ledger show --decision` names the outcome of a decision; the ledger stores record types.
_DECISIONS = {"bound": "binding", "refused": "refusal", "outcome": "outcome"}


@click.group()
def ledger() -> None:
    """Show, verify, checkpoint and export the ledger."""


@ledger.command("show")
@click.option(
    "--from", "start", type=click.IntRange(min=0), default=0, show_default=True, help="First sequence number."
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Maximum number of records.")
@click.option("--bearer", help="Only records of this bearer.")
@click.option("--scope", "scope_id", help="Only records of this scope.")
@click.option("--agent", help="Only decisions about actions of this agent.")
@click.option("--kind", help="Only decisions about actions of this kind.")
@click.option("--decision", type=click.Choice(sorted(_DECISIONS)), help="Only bindings, refusals or outcomes.")
@click.option("--digest", "action_digest", help="Only records of this action digest (sha256:…).")
@click.option("--binding", "binding_id", help="Only the binding and the outcome of this binding id.")
@click.option("--since", help="Only records at or after this time (RFC 3339).")
@click.option("--until", help="Only records before this time (RFC 3339).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as a JSON array.")
@pass_context
def ledger_show(
    context: Context,
    start: int,
    limit: int,
    bearer: str | None,
    scope_id: str | None,
    agent: str | None,
    kind: str | None,
    decision: str | None,
    action_digest: str | None,
    binding_id: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Show ledger records in order, filtered. `--digest` shows who carried the consequence of an action."""
    query = LedgerQuery(
        start=start,
        limit=limit,
        bearer=bearer,
        scope_id=scope_id,
        agent=agent,
        kind=kind,
        record_type=_DECISIONS[decision] if decision else None,
        action_digest=action_digest,
        binding_id=binding_id,
        since=time_option(since, "--since"),
        until=time_option(until, "--until"),
    )
    with context.gate() as gate:
        entries = gate.store.find_entries(query)

    if as_json:
        print_json([{**json.loads(entry.record), "leaf_hash": entry.leaf_hash.hex()} for entry in entries])
        return

    table = Table(title="ledger")
    for heading in ("seq", "time", "type"):
        table.add_column(heading, no_wrap=True)
    table.add_column("summary", overflow="fold")
    for entry in entries:
        record = json.loads(entry.record)
        table.add_row(str(record["seq"]), record["time"], record["type"], record_summary(record))
    console.print(table)


@ledger.command("verify")
@click.option(
    "--against",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="An earlier checkpoint note: prove the ledger still extends it.",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Verify this `ledger export` file instead of the store; needs --gate-key.",
)
@click.option("--gate-key", help="Checkpoint verifier key, or a file holding it (default: the gate's .pub file).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def ledger_verify(
    context: Context, against: Path | None, export_path: Path | None, gate_key: str | None, as_json: bool
) -> None:
    """Recompute every hash and the Merkle root, check every checkpoint, and replay every decision.

    Exits 3 and names the first bad record when anything is wrong.
    """
    if export_path is not None:
        if gate_key is None:
            raise click.UsageError("--export needs --gate-key: the key you trust, not one taken from the export")
        verifier = _verifier(gate_key)
        old = _old_checkpoint(against, verifier)
        with export_path.open(encoding="utf-8") as handle:
            records, checkpoints = _read_export(handle)
        report = verify_ledger(_entries(records), checkpoints=checkpoints, verifier=verifier, against=old)
    else:
        config = context.config()
        verifier = _verifier(gate_key or str(verifier_path(config.key_path)))
        old = _old_checkpoint(against, verifier)
        with context.gate() as gate:
            store = gate.store
            report = verify_ledger(
                store.ledger_entries(),
                usage_table=store.usage_table(),
                checkpoints=store.checkpoints(),
                verifier=verifier,
                against=old,
            )
            if old is not None and report.ok:
                _check_consistency(store.consistency_proof, old, report)

    _print_report(report, as_json=as_json, against=old)
    if not report.ok:
        sys.exit(EXIT_DECISION)


@ledger.command("checkpoint")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the note to this file.")
@pass_context
def ledger_checkpoint(context: Context, output: Path | None) -> None:
    """Print or save the latest signed checkpoint (a C2SP signed note), to check the log against later."""
    with context.gate() as gate:
        note = gate.store.latest_checkpoint()
    if note is None:
        raise click.ClickException("the ledger has no checkpoint yet: nothing has been recorded")

    if output is None:
        click.echo(note, nl=False)
    else:
        output.write_text(note, encoding="utf-8")
        errors.print(f"wrote checkpoint to {output}")


@ledger.command("export")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write (default stdout).")
@pass_context
def ledger_export(context: Context, output: Path | None) -> None:
    """Write every record and checkpoint as JSON Lines, for auditors and `ledger verify --export`."""
    config = context.config()
    verifier_file = verifier_path(config.key_path)
    verifier = verifier_file.read_text(encoding="utf-8").strip() if verifier_file.exists() else None

    with context.gate() as gate:
        handle: TextIO = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            count = _write_export(handle, gate.store.ledger_entries(), gate.store.checkpoints(), verifier)
        finally:
            if output:
                handle.close()
    errors.print(f"exported {count} records")


@click.group()
def receipt() -> None:
    """Get and verify offline receipts of bindings."""


@receipt.command("get")
@click.argument("binding_id")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write (default stdout).")
@pass_context
def receipt_get(context: Context, binding_id: str, output: Path | None) -> None:
    """Write the receipt of BINDING_ID: records, inclusion proofs and a signed checkpoint, as one JSON file."""
    with context.gate() as gate:
        document = gate.receipt(binding_id)

    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        errors.print(f"wrote receipt of {binding_id} to {output}")


@receipt.command("verify")
@click.argument("receipt_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--gate-key", required=True, help="The gate's checkpoint verifier key, or a file holding it.")
@click.option("--json", "as_json", is_flag=True, help="Print what the receipt proves as JSON.")
def receipt_verify(receipt_file: Path, gate_key: str, as_json: bool) -> None:
    """Check every signature and proof of a receipt offline. Exits 3 and names the part that failed."""
    verifier = _verifier(gate_key)
    try:
        document = json.loads(receipt_file.read_text(encoding="utf-8"))
        summary = verify_receipt(document, verifier)
    except json.JSONDecodeError as error:
        errors.print(f"[red]receipt is not valid[/red]: {receipt_file} is not JSON: {error}", highlight=False)
        sys.exit(EXIT_DECISION)
    except ReceiptError as error:
        errors.print(f"[red]receipt is not valid[/red]: {error.message}", highlight=False)
        sys.exit(EXIT_DECISION)
    except (KeyError, TypeError, ValueError) as error:
        message = f"a record is malformed: {type(error).__name__}: {error}"
        errors.print(f"[red]receipt is not valid[/red]: {message}", highlight=False)
        sys.exit(EXIT_DECISION)

    if as_json:
        print_json({"valid": True, **_summary_json(summary)})
        return
    _print_summary(summary)


# helpers


def _verifier(gate_key: str) -> NoteVerifier:
    """Read a verifier key given inline (`name+hash+key`) or as the path of a file holding one."""
    text = gate_key
    path = Path(gate_key)
    if "+" not in gate_key or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            message = f"cannot read gate key {gate_key}: {error.strerror}"
            raise EtlbError(message, hint="pass the .pub file that etlb init wrote beside the gate key") from error
    return parse_verifier_key(text)


def _old_checkpoint(path: Path | None, verifier: NoteVerifier) -> Checkpoint | None:
    if path is None:
        return None
    try:
        return verify_checkpoint(path.read_text(encoding="utf-8"), verifier)
    except CheckpointError as error:
        message = f"earlier checkpoint {path} is not valid: {error.message}"
        raise EtlbError(message, hint="pass a checkpoint that etlb ledger checkpoint wrote for this gate") from error


def _check_consistency(prove: Any, old: Checkpoint, report: VerificationReport) -> None:
    """Also check the store's consistency proof from the old checkpoint to the recomputed current root."""
    from etlb.ledger import merkle
    from etlb.ledger.verify import Problem

    proof = prove(old.size, report.size)
    if not merkle.verify_consistency(old.size, report.size, old.root, report.root_hash, proof):
        message = f"the store's consistency proof from size {old.size} to {report.size} does not verify"
        report.problems.append(Problem(None, message))


def _entries(records: list[bytes]) -> Iterator[LedgerEntry]:
    """Rebuild ledger entries from exported record bytes; hashes are computed, never read from the export."""
    previous = GENESIS_CHAIN_HASH
    for sequence, record in enumerate(records):
        leaf = leaf_hash(record)
        previous = chain_hash(previous, leaf)
        declared = json.loads(record).get("seq", sequence)
        yield LedgerEntry(declared if isinstance(declared, int) else -1, record, leaf, previous)


def _write_export(
    handle: TextIO, entries: Iterator[LedgerEntry], checkpoints: Iterator[tuple[int, str]], verifier: str | None
) -> int:
    handle.write(json.dumps({"type": "header", "format": EXPORT_FORMAT, "verifier_key": verifier}) + "\n")
    count = 0
    for entry in entries:
        handle.write(json.dumps({"type": "record", "record": entry.record.decode("utf-8")}) + "\n")
        count += 1
        if count % 100_000 == 0:
            errors.print(f"exported {count} records …")
    for size, note in checkpoints:
        handle.write(json.dumps({"type": "checkpoint", "size": size, "note": note}) + "\n")
    return count


def _read_export(handle: TextIO) -> tuple[list[bytes], list[tuple[int, str]]]:
    records: list[bytes] = []
    checkpoints: list[tuple[int, str]] = []
    for number, line in enumerate(handle, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"export line {number} is not JSON: {error}"
            raise EtlbError(message) from error
        kind = item.get("type") if isinstance(item, dict) else None
        if number == 1:
            if kind != "header" or item.get("format") != EXPORT_FORMAT:
                message = f"export does not start with a {EXPORT_FORMAT} header line"
                raise EtlbError(message, hint="create the file with: etlb ledger export -o FILE")
        elif kind == "record" and isinstance(item.get("record"), str):
            records.append(item["record"].encode("utf-8"))
        elif kind == "checkpoint" and isinstance(item.get("size"), int) and isinstance(item.get("note"), str):
            checkpoints.append((item["size"], item["note"]))
        else:
            message = f"export line {number} is neither a record nor a checkpoint"
            raise EtlbError(message)
    checkpoints.sort()
    return records, checkpoints


def _print_report(report: VerificationReport, *, as_json: bool, against: Checkpoint | None) -> None:
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "size": report.size,
                "counts": dict(report.counts),
                "root_hash": report.root_hash.hex(),
                "head_chain_hash": report.head_chain_hash.hex(),
                "checkpoints_checked": report.checkpoints,
                "against_size": against.size if against is not None else None,
                "problems": [{"sequence": problem.sequence, "message": problem.message} for problem in report.problems],
            }
        )
        return

    if report.ok:
        counts = ", ".join(f"{count} {name}" for name, count in sorted(report.counts.items()))
        console.print(f"[green]ledger verified[/green]: {report.size} records ({counts})")
        console.print(f"Merkle root {report.root_hash.hex()}, {report.checkpoints} signed checkpoints checked")
        if against is not None:
            console.print(f"the ledger extends the earlier checkpoint of {against.size} records")
        return
    for problem in report.problems:
        where = f"record {problem.sequence}" if problem.sequence is not None else "store"
        errors.print(f"[red]ledger verification failed[/red] at {where}: {problem.message}", highlight=False)


def _summary_json(summary: ReceiptSummary) -> dict[str, Any]:
    return {
        "bearer": summary.bearer,
        "bearer_name": summary.bearer_name,
        "scope_id": summary.scope_id,
        "terms": summary.terms,
        "binding_id": summary.binding_id,
        "action": summary.action,
        "bound_at": summary.bound_at,
        "outcome": summary.outcome,
        "outcome_detail": summary.outcome_detail,
        "origin": summary.origin,
        "tree_size": summary.tree_size,
    }


def _print_summary(summary: ReceiptSummary) -> None:
    action = summary.action
    amount = action.get("amount")
    amount_text = f" of {amount['value']} {amount['unit']}" if amount else ""
    console.print("[green]receipt verified[/green]")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in (
        ("bearer", f"{summary.bearer} ({summary.bearer_name}) carried the consequence"),
        ("action", f"{action['kind']} on {action['resource']}{amount_text} by agent {action['agent']}"),
        ("digest", action["digest"]),
        ("scope", summary.scope_id),
        ("bound at", summary.bound_at),
        ("outcome", f"{summary.outcome} {summary.outcome_detail}".strip()),
        ("checkpoint", f"{summary.origin}, tree size {summary.tree_size}"),
    ):
        grid.add_row(f"[bold]{label}[/bold]", value)
    console.print(grid)
    console.print(f"terms accepted: {summary.terms}")


def record_summary(record: dict[str, Any]) -> str:
    data = record["data"]
    record_type = record["type"]
    if record_type == "binding":
        action = data["action"]
        return (
            f"{action['kind']} on {action['resource']} by {action['agent']} -> {data['bearer']} ({data['binding_id']})"
        )
    if record_type == "refusal":
        action = data["action"]
        return f"{action['kind']} on {action['resource']} by {action['agent']}: {data['code']}"
    if record_type == "outcome":
        return f"{data['binding_id']}: {data['status']}"
    if record_type == "scope.declared":
        return f"{data['scope_id']} by {data['bearer']}"
    if record_type == "scope.revoked":
        return f"{data['scope_id']} by {data['by']} {data['actor']}"
    if record_type == "bearer.registered":
        return f"{data['bearer']['id']} ({data['bearer']['name']})"
    if record_type == "bearer.status":
        return f"{data['bearer_id']} -> {data['status']}"
    return ""
