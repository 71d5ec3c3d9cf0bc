"""The report as rich tables for the terminal: one summary table, then one block of tables per bearer."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from etlb.model import Amount, format_time
from etlb.report.model import (
    OUTCOME_HEADINGS,
    OUTCOME_LABELS,
    OUTCOME_NAMES,
    BearerReport,
    CapUse,
    Report,
    decimal_text,
)

__all__ = ["print_report", "render_report"]

# Bindings listed per bearer by default; the counts above the list always cover every binding.
DEFAULT_BINDING_LINES = 20


def print_report(console: Console, report: Report, *, binding_lines: int = DEFAULT_BINDING_LINES) -> None:
    console.print(render_report(report, binding_lines=binding_lines))


def render_report(report: Report, *, binding_lines: int = DEFAULT_BINDING_LINES) -> RenderableType:
    """Return every table of the report, in reading order; `binding_lines` caps the bindings listed per bearer."""
    parts: list[RenderableType] = [_heading(report), _summary_table(report)]
    for bearer in report.bearers:
        parts.extend(_bearer_tables(report, bearer, binding_lines))
    return Group(*parts)


def _heading(report: Report) -> Text:
    subject = f"bearer {report.bearer_filter}" if report.bearer_filter else "all bearers"
    period = ""
    if report.since is not None:
        period += f" since {format_time(report.since)}"
    if report.until is not None:
        period += f" until {format_time(report.until)}"
    moment = format_time(report.generated_at)
    text = f"etlb report of {subject}{period}, at {moment}, {report.ledger_size} ledger records"
    return Text(text, style="bold")


def _summary_table(report: Report) -> Table:
    # Two-line headings and no vertical rules, so that ten columns fit a terminal of about 95 columns.
    table = Table(title="bearers", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("bearer", overflow="fold", min_width=8)
    table.add_column("name", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    for heading in ("bindings", *OUTCOME_HEADINGS, "refusals nearby", "pending requests"):
        table.add_column(heading.replace(" ", "\n"), justify="right", no_wrap=True)
    for bearer in report.bearers:
        table.add_row(
            bearer.bearer_id,
            bearer.name,
            bearer.status,
            str(len(bearer.bindings)),
            *(str(bearer.outcomes[name]) for name in OUTCOME_NAMES),
            str(len(bearer.refusals)),
            str(len(bearer.pending)),
        )
    return table


def _bearer_tables(report: Report, bearer: BearerReport, binding_lines: int) -> list[RenderableType]:
    parts: list[RenderableType] = [Text(f"\n{bearer.bearer_id} ({bearer.name}), {bearer.status}", style="bold")]

    kinds = Table(title=f"bindings of {bearer.bearer_id} by kind")
    kinds.add_column("kind", no_wrap=True)
    kinds.add_column("bindings", justify="right")
    for kind, count in bearer.bindings_by_kind.items():
        kinds.add_row(kind, str(count))
    parts.append(kinds)

    budget = Table(title=f"budget of {bearer.bearer_id}'s scopes")
    for heading in ("scope", "status", "cap", "used", "allowed", "use"):
        budget.add_column(heading, no_wrap=heading != "scope", justify="right" if heading == "use" else "left")
    for scope in bearer.scopes:
        status = scope.status(report.generated_at)
        if not scope.caps:
            budget.add_row(scope.scope_id, status, "no caps", "", "", "")
        for cap in scope.caps:
            budget.add_row(scope.scope_id, status, cap.cap, _cap_value(cap, used=True), _cap_value(cap), _percent(cap))
    parts.append(budget)

    listed = bearer.bindings[-binding_lines:] if binding_lines > 0 else ()
    title = f"bindings of {bearer.bearer_id}"
    if len(listed) < len(bearer.bindings):
        title += f", latest {len(listed)} of {len(bearer.bindings)}"
    bindings = Table(title=title)
    for heading in ("time", "kind", "resource", "amount", "agent", "outcome", "binding"):
        bindings.add_column(heading, no_wrap=heading in {"time", "amount", "outcome"}, overflow="fold")
    for line in listed:
        bindings.add_row(
            format_time(line.time),
            line.kind,
            line.resource,
            _amount_text(line.amount),
            line.agent,
            OUTCOME_LABELS[line.outcome],
            line.binding_id,
        )
    parts.append(bindings)

    if bearer.refusals:
        refusals = Table(title=f"refusals near {bearer.bearer_id}'s scopes")
        for heading in ("time", "kind", "resource", "amount", "scope", "code", "detail"):
            refusals.add_column(heading, no_wrap=heading in {"time", "amount", "code"}, overflow="fold")
        for refusal in bearer.refusals:
            refusals.add_row(
                format_time(refusal.time),
                refusal.kind,
                refusal.resource,
                _amount_text(refusal.amount),
                refusal.scope_id,
                refusal.code,
                refusal.detail,
            )
        parts.append(refusals)

    if bearer.pending:
        pending = Table(title=f"approval requests waiting for {bearer.bearer_id}")
        for heading in ("request", "kind", "resource", "amount", "agent", "deadline"):
            pending.add_column(heading, no_wrap=heading in {"amount", "deadline"}, overflow="fold")
        for request in bearer.pending:
            pending.add_row(
                request.request_id,
                request.kind,
                request.resource,
                _amount_text(request.amount),
                request.agent,
                format_time(request.deadline),
            )
        parts.append(pending)
    return parts


def _amount_text(amount: Amount | None) -> str:
    return "" if amount is None else str(amount)


def _cap_value(cap: CapUse, *, used: bool = False) -> str:
    value = decimal_text(cap.used if used else cap.allowed)
    return value if cap.unit is None else f"{value} {cap.unit}"


def _percent(cap: CapUse) -> str:
    return f"{cap.fraction * 100:.0f}%"
