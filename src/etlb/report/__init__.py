"""Reports for bearers and auditors: what was bound in each bearer's name, read from the ledger.

`build_report` (no I/O) builds the model; `render_report` draws it as rich tables for the terminal and
`render_html` as one self-contained HTML page. `load_report` reads the records from a store.
"""

from __future__ import annotations

import json
from datetime import datetime

from etlb.report.html import render_html
from etlb.report.model import (
    BearerReport,
    BindingLine,
    CapUse,
    PendingRequest,
    RefusalLine,
    Report,
    ScopeSummary,
    TimeBucket,
    build_report,
    report_json,
)
from etlb.report.terminal import print_report, render_report
from etlb.store.base import Store

__all__ = [
    "BearerReport",
    "BindingLine",
    "CapUse",
    "PendingRequest",
    "RefusalLine",
    "Report",
    "ScopeSummary",
    "TimeBucket",
    "build_report",
    "load_report",
    "print_report",
    "render_html",
    "render_report",
    "report_json",
]


def load_report(
    store: Store,
    *,
    now: datetime,
    bearer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Build the report from every record of `store`'s ledger, read page by page."""
    records = (json.loads(entry.record) for entry in store.ledger_entries())
    return build_report(records, now=now, bearer=bearer, since=since, until=until)
