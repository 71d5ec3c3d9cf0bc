"""The `etlb` command line. It parses options, calls the public API, and prints tables or JSON.

Every etlb error is caught once, in `main`, and printed with its hint; the exit status is 1 for an
error, 2 for bad usage (click's own), and 3 when `etlb check` or `ledger verify` reports a refusal or
a problem, so that scripts can tell a decision from a failure.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from etlb.analysis import AnalysisError
from etlb.approval.model import ApprovalPlan, plan_for
from etlb.cli_approve import approve
from etlb.cli_ledger import ledger, receipt
from etlb.cli_report import notify, report
from etlb.cli_support import (
    EXIT_DECISION,
    EXIT_ERROR,
    Context,
    console,
    errors,
    pass_context,
    print_json,
    read_passphrase,
    time_option,
)
from etlb.config import DEFAULT_CONFIG_NAME, default_config_text, load_config
from etlb.declarations import (
    DELEGATION_TYP,
    REVOCATION_TYP,
    SCOPE_TYP,
    acceptance_payload,
    delegation_payload,
    revocation_payload,
    scope_payload,
)
from etlb.errors import ClassificationError, EtlbError, KeyFileError
from etlb.gate import Gate
from etlb.gate_key import create_gate_key, load_gate_signer, verifier_path
from etlb.model import (
    Bearer,
    BearerKey,
    BearerStatus,
    Limits,
    ReasonCode,
    ToolCall,
    WindowLimit,
    format_time,
)
from etlb.signing import (
    generate_private_key,
    key_id,
    load_private_key,
    load_public_jwk,
    public_jwk,
    read_unverified,
    sign_payload,
    write_private_key,
    write_public_jwk,
)
from etlb.store import ScopeState, open_store, redact_url

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        errors.print("aborted")
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except EtlbError as error:
        errors.print(f"[red]error:[/red] {error.message}", highlight=False)
        if error.hint:
            errors.print(f"  [bold]hint:[/bold] {error.hint}", highlight=False)
        sys.exit(EXIT_ERROR)
    except SystemExit:
        raise


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="ETLB_CONFIG",
    default=None,
    help=f"Configuration file (default ./{DEFAULT_CONFIG_NAME}, or $ETLB_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log decisions and store activity to standard error.")
@click.version_option(package_name="etlb")
@click.pass_context
def cli(context: click.Context, config_path: Path | None, verbose: bool) -> None:
    """etlb: no irreversible agent action runs unless one named human signed for it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    # sqlglot warns about each statement it keeps unparsed, which the SQL analyser already treats
    # as irreversible; the warning is noise on the command line unless -v asks for detail.
    if not verbose:
        logging.getLogger("sqlglot").setLevel(logging.ERROR)
    context.obj = Context(config_path)


# init and keygen


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Write a commented etlb.toml if there is none, and create or migrate the store."""
    path = context.config_path or Path(DEFAULT_CONFIG_NAME)
    if path.exists():
        console.print(f"using existing configuration {path}")
    else:
        path.write_text(default_config_text(), encoding="utf-8")
        console.print(f"wrote configuration {path}")

    config = load_config(path)
    if config.key_path.exists():
        signer = load_gate_signer(config.key_path, config.origin)
        console.print(f"using existing gate key {config.key_path}")
    else:
        signer = create_gate_key(config.key_path, config.origin)
        console.print(f"wrote gate key {config.key_path} (mode 600); keep it apart from backups of the store")

    store = open_store(config.store_url, base_dir=config.base_dir, create=True, signer=signer)
    try:
        size = store.ledger_size()
    finally:
        store.close()
    console.print(f"store {redact_url(config.store_url)} is ready; its ledger has {size} records")
    console.print(f"checkpoint verifier key (also in {verifier_path(config.key_path)}):\n{signer.verifier}")


@cli.command()
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Private key file.")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Encrypt the key with the first line of this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the key id and paths as JSON.")
def keygen(out: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Create an Ed25519 key pair: OUT (private, mode 600) and OUT without suffix + .pub.jwk (public)."""
    passphrase = read_passphrase(passphrase_file)
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    public_path = out.with_suffix(".pub.jwk")
    # Both files are checked before either is written, so a failed keygen never leaves half a pair.
    for path in (out, public_path):
        if path.exists():
            message = f"key file {path} already exists"
            raise KeyFileError(message, hint="choose another --out path or move the old key away")

    write_private_key(out, private_key, passphrase)
    write_public_jwk(public_path, jwk)
    if passphrase is None:
        errors.print(f"[yellow]warning:[/yellow] {out} is not encrypted; pass --passphrase-file to encrypt it")

    result = {"key_id": key_id(jwk), "private_key": str(out), "public_key": str(public_path)}
    if as_json:
        print_json(result)
    else:
        console.print(f"private key {out}\npublic key  {public_path}\nkey id      {result['key_id']}")


# bearers


@cli.group()
def bearer() -> None:
    """Register, list and suspend bearers (administrator commands)."""


@bearer.command("add")
@click.argument("bearer_id")
@click.option("--name", required=True, help="Display name of the person.")
@click.option(
    "--key",
    "keys",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    required=True,
    help="Public key file (.pub.jwk from etlb keygen); repeat for several keys.",
)
@click.option("--attr", "attributes", multiple=True, help="Attribute KEY=VALUE, e.g. role=treasurer; repeatable.")
@click.option("--actor", default="administrator", show_default=True, help="Who registers the bearer, for the ledger.")
@pass_context
def bearer_add(
    context: Context, bearer_id: str, name: str, keys: Sequence[Path], attributes: Sequence[str], actor: str
) -> None:
    """Register BEARER_ID with their public keys."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", bearer_id):
        message = f"bearer id {bearer_id!r} is invalid: use letters, digits, '.', '_', '@' or '-' (at most 128)"
        raise click.BadParameter(message, param_hint="BEARER_ID")

    bearer_keys = []
    for path in keys:
        jwk = load_public_jwk(path)
        bearer_keys.append(BearerKey(key_id(jwk), jwk))
    record = Bearer(bearer_id, name, tuple(bearer_keys), BearerStatus.ACTIVE, _parse_attributes(attributes))

    with context.gate() as gate:
        entry = gate.register_bearer(record, actor=actor)
    console.print(f"registered bearer {bearer_id} with {len(bearer_keys)} key(s), ledger record {entry.sequence}")


@bearer.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def bearer_list(context: Context, as_json: bool) -> None:
    """List registered bearers."""
    with context.gate() as gate:
        bearers = gate.store.list_bearers()

    if as_json:
        print_json(
            [
                {
                    "id": item.id,
                    "name": item.name,
                    "status": item.status.value,
                    "keys": [key.key_id for key in item.keys],
                    "attributes": item.attributes,
                }
                for item in bearers
            ]
        )
        return

    table = Table(title="bearers")
    for heading in ("id", "name", "status"):
        table.add_column(heading, overflow="fold")
    table.add_column("keys", overflow="fold", min_width=43)
    table.add_column("attributes", overflow="fold")
    for item in bearers:
        status = item.status.value if item.status is BearerStatus.ACTIVE else f"[red]{item.status.value}[/red]"
        attributes = ", ".join(f"{key}={value}" for key, value in sorted(item.attributes.items()))
        table.add_row(item.id, item.name, status, "\n".join(key.key_id for key in item.keys), attributes)
    console.print(table)


@bearer.command("suspend")
@click.argument("bearer_id")
@click.option("--actor", default="administrator", show_default=True, help="Who suspends the bearer, for the ledger.")
@pass_context
def bearer_suspend(context: Context, bearer_id: str, actor: str) -> None:
    """Suspend BEARER_ID: none of their scopes covers anything until they are reinstated."""
    with context.gate() as gate:
        entry = gate.set_bearer_status(bearer_id, BearerStatus.SUSPENDED, actor=actor)
    console.print(f"suspended bearer {bearer_id}, ledger record {entry.sequence}")


@cli.group()
def agent() -> None:
    """Register agents that call the HTTP service (administrator commands)."""


@agent.command("add")
@click.argument("agent_id")
@click.option("--actor", default="administrator", show_default=True, help="Who registers the agent, for the ledger.")
@click.option("--json", "as_json", is_flag=True, help="Print the agent id and API key as JSON.")
@pass_context
def agent_add(context: Context, agent_id: str, actor: str, as_json: bool) -> None:
    """Register AGENT_ID and print its API key once; the store keeps only the key's hash."""
    with context.gate() as gate:
        api_key = gate.register_agent(agent_id, actor=actor)
    if as_json:
        print_json({"agent_id": agent_id, "api_key": api_key})
    else:
        console.print(f"registered agent {agent_id}; its API key, shown only now:")
        click.echo(api_key)


@bearer.command("reinstate")
@click.argument("bearer_id")
@click.option("--actor", default="administrator", show_default=True, help="Who reinstates the bearer, for the ledger.")
@pass_context
def bearer_reinstate(context: Context, bearer_id: str, actor: str) -> None:
    """Make a suspended bearer active again."""
    with context.gate() as gate:
        entry = gate.set_bearer_status(bearer_id, BearerStatus.ACTIVE, actor=actor)
    console.print(f"reinstated bearer {bearer_id}, ledger record {entry.sequence}")


# scopes


@cli.group()
def scope() -> None:
    """Declare, list, show, revoke and delegate scopes."""


@scope.command("declare")
@click.option(
    "--from-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML file with the scope's fields; options given on the command line override it.",
)
@click.option("--bearer", "bearer_id", help="Bearer id who signs.")
@click.option("--key", "key_path", type=click.Path(path_type=Path, dir_okay=False), help="Bearer's private key file.")
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--kind", "kinds", multiple=True, help="Kind pattern, e.g. payments.transfer or git.*; repeatable.")
@click.option("--resource", "resources", multiple=True, help="Resource pattern, e.g. 'repo:/srv/app'; repeatable.")
@click.option("--agent", "agents", multiple=True, help="Agent id pattern (default '*': every agent); repeatable.")
@click.option("--max-amount", help="Cap per action, a decimal in --unit.")
@click.option("--max-total", help="Cap on the sum of all actions, a decimal in --unit.")
@click.option("--unit", help="Unit of the amount caps: a currency code such as EUR, or a label.")
@click.option("--max-count", type=click.IntRange(min=0), help="Maximum number of executions.")
@click.option(
    "--window",
    "windows",
    multiple=True,
    help="Rolling-window cap LENGTH:count=N,amount=D, e.g. 24h:count=30,amount=20000 (amount in --unit); repeatable.",
)
@click.option("--valid-from", help="Start, RFC 3339 (default now).")
@click.option("--valid-until", help="End, RFC 3339.")
@click.option("--valid-for", help="Length of validity from --valid-from, e.g. 90m, 8h, 30d (default 30d).")
@click.option("--domain", help="Free label such as payments or clinical.")
@click.option("--when", "when", help="CEL condition over `action`, e.g. 'action.arguments.branch != \"main\"'.")
@click.option(
    "--definition",
    "definitions",
    multiple=True,
    help="Pin a tool definition SERVER/TOOL=sha256:… (from etlb mcp-proxy logs or a tool listing); repeatable.",
)
@click.option("--terms", help="The text the bearer accepts.")
@click.option("--terms-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Read the terms here.")
@click.option("--yes", is_flag=True, help="Sign without asking; the terms are still printed.")
@click.option("--json", "as_json", is_flag=True, help="Print the declared scope as JSON.")
@pass_context
def scope_declare(context: Context, /, **options: Any) -> None:
    """Build a scope, show the bearer its terms, sign it with the bearer's key and declare it."""
    fields = _scope_fields(options)
    payload = scope_payload(issued_at=datetime.now(UTC), **fields)

    _show_terms(payload)
    if not options["yes"] and not click.confirm("Sign this scope and accept liability for it?", err=True):
        raise click.exceptions.Abort

    private_key = load_private_key(
        _required_path(options, "key_path", "--key"), read_passphrase(options["passphrase_file"])
    )
    jws = sign_payload(private_key, payload, typ=SCOPE_TYP)
    with context.gate() as gate:
        declared = gate.declare_scope(jws)
        state = gate.store.get_scope(declared.id)

    if options["as_json"]:
        print_json(_scope_json(state) if state else {"scope_id": declared.id})
    else:
        console.print(f"declared scope [bold]{declared.id}[/bold] for bearer {declared.bearer}")
    if declared.valid_until <= datetime.now(UTC):
        errors.print(f"warning: scope {declared.id} expired at {format_time(declared.valid_until)} and covers nothing")


@scope.group("template")
def scope_template() -> None:
    """Starting points for scopes in finance, medicine, law and infrastructure."""


@scope_template.command("list")
def scope_template_list() -> None:
    """List the scope templates with their domain and first comment line."""
    table = Table("name", "domain", "what it covers", title="scope templates")
    for name in template_names():
        text = template_text(name)
        domain = str(tomllib.loads(text).get("domain", ""))
        summary = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        table.add_row(name, domain, summary)
    console.print(table)


@scope_template.command("show")
@click.argument("name")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the template here to edit."
)
def scope_template_show(name: str, output: Path | None) -> None:
    """Print template NAME, or write it to a file to edit and sign with scope declare --from-file."""
    if name not in template_names():
        message = f"no scope template named {name!r}; choose one of: {', '.join(template_names())}"
        raise click.BadParameter(message, param_hint="NAME")
    text = template_text(name)
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        raise click.BadParameter(f"{output} already exists; choose another path", param_hint="--output")
    output.write_text(text, encoding="utf-8")
    errors.print(f"wrote template {name} to {output}; edit it, then: etlb scope declare --from-file {output}")


def template_names() -> list[str]:
    folder = resources.files("etlb") / "templates"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def template_text(name: str) -> str:
    return (resources.files("etlb") / "templates" / f"{name}.toml").read_text(encoding="utf-8")


@scope.command("list")
@click.option("--bearer", "bearer_id", help="Only scopes of this bearer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def scope_list(context: Context, bearer_id: str | None, as_json: bool) -> None:
    """List declared scopes with their use so far."""
    with context.gate() as gate:
        states = gate.store.list_scopes(bearer=bearer_id)

    if as_json:
        print_json([_scope_json(state) for state in states])
        return

    now = datetime.now(UTC)
    table = Table(title="scopes")
    table.add_column("id", overflow="fold", min_width=38)
    for heading in ("bearer", "kinds", "resources", "agents", "used", "valid until", "status"):
        table.add_column(heading, overflow="fold")
    for state in states:
        item = state.scope
        table.add_row(
            item.id,
            item.bearer,
            "\n".join(item.kinds),
            "\n".join(item.resources),
            "\n".join(item.agents),
            _usage_text(state),
            format_time(item.valid_until),
            _status_text(state, now),
        )
    console.print(table)


@scope.command("show")
@click.argument("scope_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, including the signed token.")
@pass_context
def scope_show(context: Context, scope_id: str, as_json: bool) -> None:
    """Show one scope, its terms and its use."""
    with context.gate() as gate:
        state = gate.store.get_scope(scope_id)
    if state is None:
        raise click.BadParameter(
            f"scope {scope_id} not found; list scopes with: etlb scope list", param_hint="SCOPE_ID"
        )

    if as_json:
        print_json(_scope_json(state))
        return

    item = state.scope
    table = Table.grid(padding=(0, 2))
    rows = [
        ("scope", item.id),
        ("bearer", item.bearer),
        ("signed with key", item.key_id),
        ("kinds", ", ".join(item.kinds)),
        ("resources", ", ".join(item.resources)),
        ("agents", ", ".join(item.agents)),
        ("limits", _limits_text(item.limits)),
        ("used", _usage_text(state)),
        ("valid", f"{format_time(item.valid_from)} to {format_time(item.valid_until)}"),
        ("domain", item.domain or "-"),
        ("condition", item.when or "none"),
        ("pinned tools", _pinned_text(item.definitions)),
        ("delegated from", f"{item.parent_id} of {item.delegator}" if item.delegated else "-"),
        ("status", _status_text(state, datetime.now(UTC))),
    ]
    for label, value in rows:
        table.add_row(f"[bold]{label}[/bold]", value)
    console.print(table)
    console.print(Panel(item.terms, title="terms accepted by the bearer"))


@scope.command("revoke")
@click.argument("scope_id")
@click.option("--key", "key_path", type=click.Path(path_type=Path, dir_okay=False), help="Bearer's private key file.")
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--as-admin", "administrator", help="Revoke as this administrator, without the bearer's signature.")
@click.option("--reason", default="", help="Why the scope ends, recorded in the ledger.")
@pass_context
def scope_revoke(
    context: Context,
    scope_id: str,
    key_path: Path | None,
    passphrase_file: Path | None,
    administrator: str | None,
    reason: str,
) -> None:
    """Revoke SCOPE_ID for every later binding, signed by its bearer or recorded as an administrator's act."""
    if (key_path is None) == (administrator is None):
        raise click.UsageError("pass exactly one of --key (the bearer signs) or --as-admin NAME")

    with context.gate() as gate:
        if key_path is not None:
            state = gate.store.get_scope(scope_id)
            if state is None:
                raise click.BadParameter(f"scope {scope_id} not found", param_hint="SCOPE_ID")
            private_key = load_private_key(key_path, read_passphrase(passphrase_file))
            payload = revocation_payload(
                scope_id=scope_id, bearer=state.scope.bearer, reason=reason, issued_at=datetime.now(UTC)
            )
            entry = gate.revoke_scope(scope_id, jws=sign_payload(private_key, payload, typ=REVOCATION_TYP))
        else:
            entry = gate.revoke_scope(scope_id, administrator=administrator, reason=reason)
    console.print(f"revoked scope {scope_id}, ledger record {entry.sequence}")


@scope.command("delegate")
@click.argument("parent_id")
@click.option("--to", "stand_in", required=True, help="Bearer id of the stand-in who may accept the offer.")
@click.option(
    "--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Your key file."
)
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--kind", "kinds", multiple=True, help="Kind pattern inside the parent's (default: the parent's).")
@click.option("--resource", "resources", multiple=True, help="Resource pattern inside the parent's (default: its).")
@click.option("--agent", "agents", multiple=True, help="Agent pattern inside the parent's (default: the parent's).")
@click.option("--max-amount", help="Cap per action, at most the parent's (default: the parent's).")
@click.option("--max-total", help="Cap on the sum, at most the parent's (default: the parent's).")
@click.option("--max-count", type=click.IntRange(min=0), help="Executions, at most the parent's (default: its).")
@click.option("--valid-for", help="Length of the hand-over from now, e.g. 8h or 14d (default: to the parent's end).")
@click.option("--when", help="An extra CEL condition; the parent's own condition applies as well.")
@click.option("--terms", help="The text the stand-in accepts.")
@click.option("--terms-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Read the terms here.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the offer here.")
@click.option("--yes", is_flag=True, help="Sign without asking; the offer is still printed.")
@pass_context
def scope_delegate(context: Context, /, parent_id: str, **options: Any) -> None:
    """Sign an offer handing PARENT_ID, or a narrower part of it, to a stand-in for a window.

    The offer covers nothing until the stand-in accepts it with their own key: etlb scope accept.
    """
    with context.gate() as gate:
        state = gate.store.get_scope(parent_id)
        stand_in = gate.store.get_bearer(options["stand_in"])
        delegator = gate.store.get_bearer(state.scope.bearer) if state is not None else None
    if state is None:
        raise click.BadParameter(
            f"scope {parent_id} not found; list scopes with: etlb scope list", param_hint="PARENT_ID"
        )
    if stand_in is None:
        message = f"bearer {options['stand_in']} is not registered; register them first with: etlb bearer add"
        raise click.BadParameter(message, param_hint="--to")
    parent = state.scope
    terms = options["terms"]
    if options["terms_file"] is not None:
        terms = options["terms_file"].read_text(encoding="utf-8")
    if not terms:
        raise click.UsageError("missing --terms or --terms-file: the stand-in must see what they accept")

    now = datetime.now(UTC)
    valid_until = now + _duration(options["valid_for"]) if options["valid_for"] else parent.valid_until
    max_amount = _decimal_option(options["max_amount"], "--max-amount")
    max_total = _decimal_option(options["max_total"], "--max-total")
    limits = Limits(
        max_amount=max_amount if max_amount is not None else parent.limits.max_amount,
        max_total=max_total if max_total is not None else parent.limits.max_total,
        max_count=options["max_count"] if options["max_count"] is not None else parent.limits.max_count,
        unit=parent.limits.unit,
    )
    payload = delegation_payload(
        parent=parent,
        delegate=options["stand_in"],
        kinds=list(options["kinds"]) or list(parent.kinds),
        resources=list(options["resources"]) or list(parent.resources),
        agents=list(options["agents"]) or list(parent.agents),
        limits=limits,
        valid_from=max(now, parent.valid_from),
        valid_until=valid_until,
        terms=terms,
        issued_at=now,
        when=options["when"],
    )

    errors.print(f"offer of scope {parent_id} of {parent.bearer} to {options['stand_in']}:")
    _show_terms(payload)
    if not options["yes"] and not click.confirm("Sign this offer?", err=True):
        raise click.exceptions.Abort
    private_key = load_private_key(options["key_path"], read_passphrase(options["passphrase_file"]))
    if delegator is None or delegator.key(key_id(public_jwk(private_key))) is None:
        message = f"{options['key_path']} is not a key registered to {parent.bearer}, the bearer of scope {parent_id}"
        raise click.BadParameter(message, param_hint="--key")
    offer = sign_payload(private_key, payload, typ=DELEGATION_TYP)

    if options["output"] is None:
        click.echo(offer)
        return
    options["output"].write_text(offer + "\n", encoding="utf-8")
    errors.print(f"wrote the offer to {options['output']}; the stand-in accepts it with: etlb scope accept FILE")


@scope.command("accept")
@click.argument("offer_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Your key file."
)
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--yes", is_flag=True, help="Sign without asking; the terms are still printed.")
@click.option("--json", "as_json", is_flag=True, help="Print the declared scope as JSON.")
@pass_context
def scope_accept(
    context: Context, offer_file: Path, key_path: Path, passphrase_file: Path | None, yes: bool, as_json: bool
) -> None:
    """Accept a delegation offer with your own signature; from then on its bindings name you."""
    offer = offer_file.read_text(encoding="utf-8").strip()
    try:
        _, fields = read_unverified(offer)
        payload = acceptance_payload(fields, offer, issued_at=datetime.now(UTC))
    except EtlbError as error:
        raise click.BadParameter(f"{offer_file} is not a delegation offer: {error}", param_hint="OFFER_FILE") from error

    errors.print(f"delegation from {fields['delegator']} of scope {fields['parent']}:")
    _show_terms(payload)
    if not yes and not click.confirm("Accept liability for this delegated scope?", err=True):
        raise click.exceptions.Abort
    private_key = load_private_key(key_path, read_passphrase(passphrase_file))
    with context.gate() as gate:
        declared = gate.declare_scope(sign_payload(private_key, payload, typ=SCOPE_TYP))
        state = gate.store.get_scope(declared.id)

    if as_json:
        print_json(_scope_json(state) if state else {"scope_id": declared.id})
    else:
        console.print(
            f"declared delegated scope [bold]{declared.id}[/bold] for {declared.bearer}, from {declared.parent_id}"
        )


# check


@cli.command()
@click.option("--tool", required=True, help="Tool name.")
@click.option("--server", help="Server name, as the MCP proxy or adapter reports it.")
@click.option("--args", "arguments", default="{}", help="Tool arguments as a JSON object.")
@click.option("--agent", help="Agent id (default: [gate] agent of the configuration).")
@click.option("--read-only-hint", is_flag=True, help="Pretend the server declared readOnlyHint: true.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def check(
    context: Context,
    tool: str,
    server: str | None,
    arguments: str,
    agent: str | None,
    read_only_hint: bool,
    as_json: bool,
) -> None:
    """Explain the decision for a tool call without binding or recording it. Exit 3 if it would be refused."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--args") from error
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object such as {"repo_path": "/srv/app"}', param_hint="--args")

    annotations = {"readOnlyHint": True} if read_only_hint else None
    with context.gate() as gate:
        try:
            action, resolution = gate.explain(
                ToolCall(tool=tool, arguments=parsed, server=server), agent=agent, annotations=annotations
            )
        except ClassificationError as error:
            # The gate refuses such a call; check says so with the same code instead of failing.
            code = error.code if isinstance(error, AnalysisError) else ReasonCode.CLASSIFICATION_FAILED.value
            if as_json:
                print_json({"decision": "refuse", "action": None, "code": code, "reasons": [], "detail": str(error)})
            else:
                console.print(f"[red]refuse[/red]: {code}: {escape(str(error))}")
            sys.exit(EXIT_DECISION)
        approvals = gate.config.approvals
        plan = plan_for(approvals, action) if approvals.enabled else None

    reversible = action.consequence.value == "reversible"
    chosen = resolution.covering[0].scope if resolution.covering else None
    if reversible:
        decision = "pass"
    elif chosen is not None:
        decision = "bind"
    else:
        decision = "refuse"
    if as_json:
        print_json(
            {
                "decision": decision,
                "action": {**action.canonical_fields(), "digest": action.digest},
                "bearer": chosen.bearer if chosen and not reversible else None,
                "scope_id": chosen.id if chosen and not reversible else None,
                "code": None if decision != "refuse" else resolution.overall_code.value,
                "reasons": [reason.to_json() for reason in resolution.reasons],
                "approval": _approval_json(decision, approvals.enabled, plan),
            }
        )
    else:
        console.print(
            f"action  {action.kind} on {action.resource} ({action.consequence.value}), digest {action.digest}"
        )
        if decision == "pass":
            console.print("[green]pass[/green]: reversible, runs without a binding")
        elif chosen is not None:
            console.print(f"[green]bind[/green] to bearer [bold]{chosen.bearer}[/bold] under scope {chosen.id}")
        else:
            console.print(f"[red]refuse[/red]: {resolution.overall_code.value}")
        for reason in resolution.reasons:
            console.print(f"  scope {reason.scope_id} of {reason.bearer}: {reason.code.value}: {reason.detail}")
        if decision == "refuse" and plan is not None:
            console.print(
                f"approval: a real call opens a request to {', '.join(plan.approvers)} ({plan.order}), "
                f"answered within {plan.deadline_seconds} s, instead of this refusal"
            )
        elif decision == "refuse" and approvals.enabled:
            console.print(f"approval: no route names kind {action.kind}, so a real call is refused with no_approvers")
    if decision == "refuse":
        sys.exit(EXIT_DECISION)


def _approval_json(decision: str, enabled: bool, plan: ApprovalPlan | None) -> dict[str, Any] | None:
    """Describe what a real call would do where `check` refuses: ask approvers, or refuse with no_approvers."""
    if decision != "refuse" or not enabled:
        return None
    if plan is None:
        return {"approvers": [], "code": ReasonCode.NO_APPROVERS.value}
    return {"approvers": list(plan.approvers), "order": plan.order, "deadline_seconds": plan.deadline_seconds}


# ledger


@cli.command("mcp-proxy", context_settings={"ignore_unknown_options": True})
@click.option("--agent", help="Agent id the gate binds calls to (default: [gate] agent of the configuration).")
@click.option("--server", "server_name", help="Server name for classification (default: from COMMAND).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_context
def mcp_proxy(context: Context, agent: str | None, server_name: str | None, command: tuple[str, ...]) -> None:
    """Run an MCP server (COMMAND, after --) behind the gate, speaking MCP over stdio."""
    import anyio

    from etlb.mcp_proxy import default_server_name, run_proxy

    logging.getLogger().setLevel(logging.INFO)
    # The proxy starts even when the store cannot be opened, so that each call is refused with
    # store_unavailable and the agent learns why, instead of the server failing to start.
    with Gate.from_config(context.config_path, require_store=False) as gate:
        anyio.run(
            _run_proxy,
            run_proxy,
            gate,
            list(command),
            server_name or default_server_name(list(command)),
            agent,
        )


async def _run_proxy(run: Any, gate: Gate, command: list[str], server_name: str, agent: str | None) -> None:
    await run(gate, command=command, server_name=server_name, agent=agent)


@cli.command()
@click.option("--host", help="Address to listen on (default: [service] host, or 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="TCP port (default: [service] port, or 8470).")
@click.option(
    "--group-commit/--no-group-commit",
    default=None,
    help="Decide bind requests that arrive together in one store transaction (default: [service] group_commit).",
)
@pass_context
def serve(context: Context, host: str | None, port: int | None, group_commit: bool | None) -> None:
    """Run the HTTP service: agents bind tool calls with API keys; see docs/service.md."""
    from etlb.server import serve as run_service

    logging.getLogger().setLevel(logging.INFO)
    run_service(context.config_path, host=host, port=port, group_commit=group_commit)


# helpers


def _scope_fields(options: dict[str, Any]) -> dict[str, Any]:
    """Merge `--from-file` with the command-line options into the arguments of `scope_payload`."""
    data: dict[str, Any] = {}
    if options["from_file"] is not None:
        try:
            data = tomllib.loads(options["from_file"].read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise click.BadParameter(f"not valid TOML: {error}", param_hint="--from-file") from error
    limits_data = data.pop("limits", {})

    def pick(name: str, file_name: str | None = None) -> Any:
        value = options.get(name)
        if value not in (None, ()):
            return list(value) if isinstance(value, tuple) else value
        return data.get(file_name or name, limits_data.get(file_name or name))

    bearer_id = pick("bearer_id", "bearer")
    if not bearer_id:
        raise click.UsageError('missing --bearer (or bearer = "…" in --from-file)')
    # Paths inside the file are relative to the file, so a scope file can sit beside its key.
    base = options["from_file"].parent if options["from_file"] is not None else Path()
    if options.get("key_path") is None and data.get("key"):
        options["key_path"] = base / str(data["key"])

    terms = pick("terms")
    terms_file = options["terms_file"] or (base / str(data["terms_file"]) if data.get("terms_file") else None)
    if terms_file is not None:
        terms = terms_file.read_text(encoding="utf-8")
    if not terms:
        raise click.UsageError("missing --terms or --terms-file: the bearer must see what they accept")

    valid_from = time_option(pick("valid_from"), "--valid-from") or datetime.now(UTC)
    valid_until = time_option(pick("valid_until"), "--valid-until")
    if valid_until is None:
        valid_until = valid_from + _duration(pick("valid_for") or "30d")

    unit = pick("unit")
    max_count = pick("max_count")
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int)):
        raise click.BadParameter(f"{max_count!r} is not a whole number", param_hint="--max-count")
    window_specs = options.get("windows") or ()
    if window_specs:
        windows = tuple(_window(spec) for spec in window_specs)
    else:
        windows = tuple(_window_from_file(item) for item in limits_data.get("windows", []))
    try:
        limits = Limits(
            max_amount=_decimal_option(pick("max_amount"), "--max-amount"),
            max_total=_decimal_option(pick("max_total"), "--max-total"),
            max_count=max_count,
            unit=unit,
            windows=windows,
        )
    except ValueError as error:
        # Limits rejects an amount cap without a unit, and negative or non-finite caps.
        raise click.UsageError(str(error)) from error

    return {
        "bearer": bearer_id,
        "kinds": _pattern_list(pick("kinds"), "--kind"),
        "resources": _pattern_list(pick("resources"), "--resource"),
        "agents": _pattern_list(pick("agents") or ["*"], "--agent"),
        "limits": limits,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "terms": terms,
        "domain": pick("domain") or "",
        "when": pick("when"),
        "definitions": _definitions(options.get("definitions") or (), data.get("definitions", {})),
    }


def _definitions(specs: Sequence[str], from_file: Any) -> dict[str, str] | None:
    """Merge `--definition SERVER/TOOL=DIGEST` options over a `[definitions]` table of the scope file."""
    if not isinstance(from_file, dict):
        raise click.BadParameter("definitions must be a table of 'server/tool' = 'sha256:…'", param_hint="--from-file")
    definitions = {str(name): str(digest) for name, digest in from_file.items()}
    for spec in specs:
        name, separator, digest = spec.partition("=")
        if not separator or "/" not in name:
            raise click.BadParameter(f"{spec!r} is not SERVER/TOOL=sha256:…", param_hint="--definition")
        definitions[name.strip()] = digest.strip()
    return definitions or None


def _window(spec: str) -> WindowLimit:
    """Parse `24h:count=30,amount=20000` into a rolling-window cap."""
    length, separator, caps = spec.partition(":")
    if not separator:
        raise click.BadParameter(f"{spec!r} is not LENGTH:count=N,amount=D", param_hint="--window")
    values: dict[str, str] = {}
    for part in caps.split(","):
        name, equals, value = part.partition("=")
        if not equals or name.strip() not in {"count", "amount"}:
            raise click.BadParameter(f"{part!r} in {spec!r} is not count=N or amount=D", param_hint="--window")
        values[name.strip()] = value.strip()
    return _window_from_file(
        {"length": length, "max_count": values.get("count"), "max_amount": values.get("amount")}, option="--window"
    )


def _window_from_file(item: Any, option: str = "--from-file") -> WindowLimit:
    if not isinstance(item, dict):
        raise click.BadParameter(
            f"window {item!r} must be a table with length, max_count, max_amount", param_hint=option
        )
    count = item.get("max_count")
    try:
        return WindowLimit(
            seconds=int(_duration(str(item.get("length", ""))).total_seconds()),
            max_amount=_decimal_option(item.get("max_amount"), option),
            max_count=int(count) if count is not None else None,
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from error


def _pattern_list(value: Any, option: str) -> list[str]:
    if not value:
        raise click.UsageError(f"missing {option}: give at least one pattern")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise click.BadParameter(f"{value!r} is not a list of patterns", param_hint=option)
    return list(value)


def _decimal_option(value: Any, option: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise click.BadParameter(f"{value!r} is a float; quote it as a decimal string", param_hint=option)
    try:
        return Decimal(str(value))
    except InvalidOperation as error:
        raise click.BadParameter(f"{value!r} is not a decimal number", param_hint=option) from error


_DURATION = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(str(text).strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 90m, 8h or 30d", param_hint="--valid-for")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def _required_path(options: dict[str, Any], name: str, option: str) -> Path:
    value = options.get(name)
    if value is None:
        raise click.UsageError(f"missing {option}: the bearer's private key file signs the scope")
    return Path(value)


def _parse_attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--attr")
        attributes[name] = value
    return attributes


def _show_terms(payload: dict[str, Any]) -> None:
    limits = Limits.from_json(payload["limits"])
    summary = Table.grid(padding=(0, 2))
    for label, value in [
        ("bearer", payload["bearer"]),
        ("kinds", ", ".join(payload["kinds"])),
        ("resources", ", ".join(payload["resources"])),
        ("agents", ", ".join(payload["agents"])),
        ("limits", _limits_text(limits)),
        ("valid", f"{payload['valid_from']} to {payload['valid_until']}"),
        ("condition", payload.get("when") or "none"),
        (
            "pinned tools",
            ", ".join(f"{name} = {digest}" for name, digest in payload.get("definitions", {}).items()) or "none",
        ),
    ]:
        summary.add_row(f"[bold]{label}[/bold]", value)
    errors.print(Panel(summary, title="scope to sign"))
    errors.print(Panel(payload["terms"], title="terms you accept"))


def _pinned_text(definitions: dict[str, str]) -> str:
    return ", ".join(f"{name} = {digest}" for name, digest in definitions.items()) or "none"


def _limits_text(limits: Limits) -> str:
    parts = []
    if limits.max_amount is not None:
        parts.append(f"at most {limits.max_amount} {limits.unit} per action")
    if limits.max_total is not None:
        parts.append(f"at most {limits.max_total} {limits.unit} in total")
    if limits.max_count is not None:
        parts.append(f"at most {limits.max_count} executions")
    return ", ".join(parts) or "none"


def _usage_text(state: ScopeState) -> str:
    limits = state.scope.limits
    text = f"{state.usage.count}" + (f"/{limits.max_count}" if limits.max_count is not None else "")
    if limits.max_total is not None:
        text += f", {state.usage.amount}/{limits.max_total} {limits.unit}"
    return text


def _status_text(state: ScopeState, now: datetime) -> str:
    if state.revoked:
        return "[red]revoked[/red]"
    if state.bearer is None or state.bearer.status is not BearerStatus.ACTIVE:
        return "[red]bearer suspended[/red]"
    if now >= state.scope.valid_until:
        return "[yellow]expired[/yellow]"
    if now < state.scope.valid_from:
        return "[yellow]not yet valid[/yellow]"
    return "[green]active[/green]"


def _scope_json(state: ScopeState) -> dict[str, Any]:
    item = state.scope
    return {
        "scope_id": item.id,
        "bearer": item.bearer,
        "key_id": item.key_id,
        "kinds": list(item.kinds),
        "resources": list(item.resources),
        "agents": list(item.agents),
        "limits": item.limits.to_json(),
        "valid_from": format_time(item.valid_from),
        "valid_until": format_time(item.valid_until),
        "domain": item.domain,
        "when": item.when,
        "definitions": item.definitions,
        "terms": item.terms,
        "parent": item.parent_id,
        "delegator": item.delegator,
        "revoked": state.revoked,
        "used": {"count": state.usage.count, "amount": str(state.usage.amount)},
        "jws": item.jws,
    }


@cli.group()
def hook() -> None:
    """Hooks for coding agents that call etlb before each tool runs."""


@hook.command("claude-code")
@click.option("--agent", help="Agent id the gate binds calls to (default: [gate] agent of the configuration).")
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds before denying."
)
@pass_context
def hook_claude_code(context: Context, agent: str | None, timeout: float) -> None:
    """Read a Claude Code PreToolUse or PostToolUse input on stdin; print the decision JSON.

    Anything but a binding or a reversible action is a deny: a refusal, bad input, a missing store,
    an error or a decision slower than --timeout.
    """
    import signal

    from etlb.integrations.claude_code import decide_hook, deny

    def too_slow(*_: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            payload = json.loads(sys.stdin.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            answer = deny(f"etlb: the hook input is not JSON, so the call is denied: {error}")
        else:
            answer = decide_hook(payload, lambda: Gate.from_config(context.config_path), agent=agent)
    except TimeoutError:
        answer = deny(f"etlb: the liability gate did not decide within {timeout:g} s, so the call is denied")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    click.echo(json.dumps(answer))


cli.add_command(approve)
cli.add_command(ledger)
cli.add_command(receipt)
cli.add_command(report)
cli.add_command(notify)
