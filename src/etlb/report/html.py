"""The report as one self-contained HTML page: inline CSS, inline SVG charts, no script, no external URL.

The page's Content-Security-Policy allows nothing but its own inline styles, so a browser opening
it fetches nothing. Every value from the ledger is HTML-escaped, because bearer names, resources and
refusal details are written by agents and operators.

Stable hooks for tests and for styling:
- `svg#bindings-over-time` contains one `rect.bar` per time bucket, with `data-start` and `data-count`;
- `svg#budget-use` contains one `rect.budget-bar` per scope cap, with `data-scope`, `data-cap` and
  `data-fraction`;
- `table#bearers` has one `tr[data-bearer]` per bearer;
- each bearer has a `section.bearer[data-bearer]` with `table.kinds`, `table.budget`, `table.bindings`
  and, when not empty, `table.refusals` and `table.pending`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from etlb.model import Amount, format_time
from etlb.report.model import (
    OUTCOME_HEADINGS,
    OUTCOME_LABELS,
    OUTCOME_NAMES,
    BearerReport,
    CapUse,
    Report,
    TimeBucket,
    decimal_text,
)

__all__ = ["render_html"]

_CHART_WIDTH = 900
_TIMELINE_HEIGHT = 240
_BUDGET_ROW = 28
# Left margin of the budget chart, where each bar's scope and cap are written.
_BUDGET_LABEL_WIDTH = 380

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d2330; background: #ffffff; }
main { max-width: 960px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d5dd; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.meta { color: #5b6472; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 4px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d0d5dd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { display: block; margin: 4px 0 16px; background: #fafbfc; border: 1px solid #d0d5dd; }
svg text { font-size: 11px; fill: #1d2330; }
rect.bar { fill: #3461c1; }
rect.track { fill: #e4e8ee; }
rect.budget-bar.low { fill: #2f9e5b; }
rect.budget-bar.high { fill: #e0a100; }
rect.budget-bar.full { fill: #c93c37; }
line.axis { stroke: #5b6472; stroke-width: 1; }
p.empty { color: #5b6472; font-style: italic; }
"""


def render_html(report: Report) -> str:
    """Return the whole page as text."""
    subject = f"bearer {report.bearer_filter}" if report.bearer_filter else "all bearers"
    title = f"etlb report of {subject}"
    body = [
        f"<h1>{_text(title)}</h1>",
        f'<p class="meta" id="generated">{_text(_period(report))}</p>',
        "<h2>Bindings over time</h2>",
        _timeline_chart(report.timeline),
        "<h2>Budget use per scope</h2>",
        _budget_chart(report),
        "<h2>Bearers</h2>",
        _summary_table(report),
        *(_bearer_section(report, bearer) for bearer in report.bearers),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f'<body>\n<main id="report">\n{chr(10).join(body)}\n</main>\n</body>\n</html>\n'
    )


def _period(report: Report) -> str:
    text = f"generated {format_time(report.generated_at)} from {report.ledger_size} ledger records"
    if report.since is not None:
        text += f"; bindings and refusals since {format_time(report.since)}"
    if report.until is not None:
        text += f"; until {format_time(report.until)}"
    return text


def _timeline_chart(buckets: Sequence[TimeBucket]) -> str:
    if not buckets:
        return '<p class="empty" id="bindings-over-time-empty">No bindings in this period.</p>'

    left, bottom, top = 40, 30, 16
    plot_width = _CHART_WIDTH - left - 10
    plot_height = _TIMELINE_HEIGHT - bottom - top
    highest = max(bucket.count for bucket in buckets) or 1
    slot = plot_width / len(buckets)
    unit = "hour" if buckets[0].length.total_seconds() == 3600 else "day"

    shapes = [
        f'<line class="axis" x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{highest}</text>',
        f'<text x="{left - 6}" y="{top + plot_height}" text-anchor="end">0</text>',
    ]
    for index, bucket in enumerate(buckets):
        height = plot_height * bucket.count / highest
        x = left + index * slot + slot * 0.1
        y = top + plot_height - height
        start = format_time(bucket.start)
        label = f"{bucket.count} binding{'s' if bucket.count != 1 else ''} in the {unit} from {start}"
        shapes.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{height:.1f}"'
            f' data-start="{_attribute(start)}" data-count="{bucket.count}"><title>{_text(label)}</title></rect>'
        )
    first, last = format_time(buckets[0].start), format_time(buckets[-1].start)
    baseline = top + plot_height + 18
    shapes.append(f'<text x="{left}" y="{baseline}">{_text(first)}</text>')
    if len(buckets) > 1:
        shapes.append(f'<text x="{left + plot_width}" y="{baseline}" text-anchor="end">{_text(last)}</text>')
    return _svg("bindings-over-time", _TIMELINE_HEIGHT, f"bindings per {unit}", shapes)


def _budget_chart(report: Report) -> str:
    rows = [(scope.scope_id, cap) for scope in report.scopes for cap in scope.caps]
    if not rows:
        return '<p class="empty" id="budget-use-empty">No scope in this report has a cap.</p>'

    height = 16 + _BUDGET_ROW * len(rows)
    bar_width = _CHART_WIDTH - _BUDGET_LABEL_WIDTH - 70
    shapes = []
    for index, (scope_id, cap) in enumerate(rows):
        y = 8 + index * _BUDGET_ROW
        filled = bar_width * min(cap.fraction, 1.0)
        shade = "low"
        if cap.fraction >= 1:
            shade = "full"
        elif cap.fraction >= 0.8:
            shade = "high"
        label = f"{scope_id}: {cap.cap}"
        shapes.append(f'<text x="8" y="{y + 15}">{_text(label)}</text>')
        shapes.append(f'<rect class="track" x="{_BUDGET_LABEL_WIDTH}" y="{y + 3}" width="{bar_width}" height="16"/>')
        shapes.append(
            f'<rect class="budget-bar {shade}" x="{_BUDGET_LABEL_WIDTH}" y="{y + 3}" width="{filled:.1f}"'
            f' height="16" data-scope="{_attribute(scope_id)}" data-cap="{_attribute(cap.cap)}"'
            f' data-fraction="{cap.fraction:.4f}"><title>{_text(_cap_title(cap))}</title></rect>'
        )
        shapes.append(f'<text x="{_BUDGET_LABEL_WIDTH + bar_width + 8}" y="{y + 15}">{cap.fraction * 100:.0f}%</text>')
    return _svg("budget-use", height, "budget used against each cap", shapes)


def _svg(element_id: str, height: int, label: str, shapes: Iterable[str]) -> str:
    content = "\n".join(shapes)
    return (
        f'<svg id="{element_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{_CHART_WIDTH}"'
        f' height="{height}" viewBox="0 0 {_CHART_WIDTH} {height}" role="img" aria-label="{_attribute(label)}">\n'
        f"{content}\n</svg>"
    )


def _summary_table(report: Report) -> str:
    headings = ("bearer", "name", "status", "bindings", *OUTCOME_HEADINGS, "refusals nearby", "pending requests")
    rows = []
    for bearer in report.bearers:
        numbers = (len(bearer.bindings), *(bearer.outcomes[name] for name in OUTCOME_NAMES))
        numbers += (len(bearer.refusals), len(bearer.pending))
        cells = [_cell(bearer.bearer_id), _cell(bearer.name), _cell(bearer.status)]
        cells += [_cell(str(number), number=True) for number in numbers]
        rows.append(f'<tr data-bearer="{_attribute(bearer.bearer_id)}">{"".join(cells)}</tr>')
    return _table("bearers", "", headings, rows, element_id="bearers")


def _bearer_section(report: Report, bearer: BearerReport) -> str:
    heading = f"{bearer.bearer_id} ({bearer.name}), {bearer.status}"
    parts = [f'<section class="bearer" data-bearer="{_attribute(bearer.bearer_id)}">', f"<h2>{_text(heading)}</h2>"]

    kinds = [
        f"<tr>{_cell(kind)}{_cell(str(count), number=True)}</tr>" for kind, count in bearer.bindings_by_kind.items()
    ]
    parts.append(_table("kinds", "Bindings by kind", ("kind", "bindings"), kinds))

    budget = []
    for scope in bearer.scopes:
        status = scope.status(report.generated_at)
        if not scope.caps:
            cells = _cell(scope.scope_id) + _cell(status) + _cell("no caps") + "<td></td>" * 3
            budget.append(f"<tr>{cells}</tr>")
        for cap in scope.caps:
            cells = _cell(scope.scope_id) + _cell(status) + _cell(cap.cap)
            cells += _cell(_cap_value(cap, used=True), number=True) + _cell(_cap_value(cap), number=True)
            cells += _cell(f"{cap.fraction * 100:.0f}%", number=True)
            budget.append(f'<tr data-scope="{_attribute(scope.scope_id)}">{cells}</tr>')
    parts.append(_table("budget", "Budget of the scopes", ("scope", "status", "cap", "used", "allowed", "use"), budget))

    bindings = [
        f'<tr data-binding="{_attribute(line.binding_id)}">'
        + "".join(
            _cell(value)
            for value in (
                format_time(line.time),
                line.kind,
                line.resource,
                _amount_text(line.amount),
                line.agent,
                OUTCOME_LABELS[line.outcome],
                line.binding_id,
            )
        )
        + "</tr>"
        for line in bearer.bindings
    ]
    headings = ("time", "kind", "resource", "amount", "agent", "outcome", "binding")
    parts.append(_table("bindings", "Bindings", headings, bindings))

    if bearer.refusals:
        refusals = [
            "<tr>"
            + "".join(
                _cell(value)
                for value in (
                    format_time(refusal.time),
                    refusal.kind,
                    refusal.resource,
                    _amount_text(refusal.amount),
                    refusal.scope_id,
                    refusal.code,
                    refusal.detail,
                )
            )
            + "</tr>"
            for refusal in bearer.refusals
        ]
        refusal_headings = ("time", "kind", "resource", "amount", "scope", "code", "detail")
        parts.append(_table("refusals", "Refusals near these scopes", refusal_headings, refusals))

    if bearer.pending:
        pending = [
            f'<tr data-request="{_attribute(request.request_id)}">'
            + "".join(
                _cell(value)
                for value in (
                    request.request_id,
                    request.kind,
                    request.resource,
                    _amount_text(request.amount),
                    request.agent,
                    format_time(request.deadline),
                )
            )
            + "</tr>"
            for request in bearer.pending
        ]
        pending_headings = ("request", "kind", "resource", "amount", "agent", "deadline")
        parts.append(_table("pending", "Approval requests waiting", pending_headings, pending))

    parts.append("</section>")
    return "\n".join(parts)


def _table(
    css_class: str, caption: str, headings: Sequence[str], rows: Sequence[str], *, element_id: str | None = None
) -> str:
    identifier = f' id="{element_id}"' if element_id else ""
    head = "".join(f"<th>{_text(heading)}</th>" for heading in headings)
    title = f"<h3>{_text(caption)}</h3>\n" if caption else ""
    return f'{title}<table class="{css_class}"{identifier}>\n<tr>{head}</tr>\n' + "\n".join(rows) + "\n</table>"


def _cell(value: str, *, number: bool = False) -> str:
    return f'<td class="number">{_text(value)}</td>' if number else f"<td>{_text(value)}</td>"


def _cap_title(cap: CapUse) -> str:
    return f"{cap.cap}: {_cap_value(cap, used=True)} of {_cap_value(cap)}"


def _cap_value(cap: CapUse, *, used: bool = False) -> str:
    value = decimal_text(cap.used if used else cap.allowed)
    return value if cap.unit is None else f"{value} {cap.unit}"


def _amount_text(amount: Amount | None) -> str:
    return "" if amount is None else str(amount)


def _text(value: str) -> str:
    return escape(value, quote=False)


def _attribute(value: str) -> str:
    return escape(value, quote=True)
