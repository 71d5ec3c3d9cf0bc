"""The report model: what was done in each bearer's name, built from ledger records. No I/O.

`build_report` reads the records once, in ledger order, and returns per-bearer summaries: bindings
by kind, budget used against every cap of every scope, outcomes, refusals whose reasons name the
bearer's scopes, and approval requests still waiting for the bearer. The renderers in
`etlb.report.terminal` and `etlb.report.html` only format this model.

Contracts:
- Budget use counts every binding of a scope in the whole ledger, as the store reserves it, whatever
  `since` and `until` select, because a cap applies to a scope's whole life. Rolling windows count
  the bindings in the window that ends at `now`, with the store's rule that a binding exactly one
  window old has left it.
- `since` (inclusive) and `until` (exclusive) select the bindings, refusals and outcomes listed.
- Scopes are decoded from their tokens without checking signatures. The report shows what the
  ledger records, and `etlb ledger verify` proves it.
- Approval records (`approval.requested`, `approval.closed`) are read by their type names. A
  request is pending while it has no closing record and its deadline is after `now`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from etlb.declarations import scope_from_payload
from etlb.errors import LedgerIntegrityError, SignatureError
from etlb.model import Amount, Limits, format_time, parse_time
from etlb.signing import read_unverified

__all__ = [
    "OUTCOME_HEADINGS",
    "OUTCOME_LABELS",
    "OUTCOME_NAMES",
    "BearerReport",
    "BindingLine",
    "CapUse",
    "PendingRequest",
    "RefusalLine",
    "Report",
    "ScopeSummary",
    "TimeBucket",
    "build_report",
    "decimal_text",
    "report_json",
]

# Outcome columns in display order. `none` counts bindings whose outcome is not recorded (yet).
OUTCOME_NAMES = ("succeeded", "failed", "unknown", "none")
OUTCOME_HEADINGS = ("succeeded", "failed", "unknown", "no outcome")
OUTCOME_LABELS = dict(zip(OUTCOME_NAMES, OUTCOME_HEADINGS, strict=True))

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
# Bindings over time are counted per hour when they span at most this long, otherwise per day.
_HOURLY_SPAN = timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class CapUse:
    """One cap of a scope with the budget used against it. `unit` is None for execution counts."""

    cap: str
    used: Decimal
    allowed: Decimal
    unit: str | None

    @property
    def fraction(self) -> float:
        """Return used / allowed, 1.0 for a cap of zero that is used, 0.0 for one that is not."""
        if self.allowed == 0:
            return 1.0 if self.used > 0 else 0.0
        return float(self.used / self.allowed)


@dataclass(frozen=True, slots=True)
class ScopeSummary:
    scope_id: str
    bearer: str
    kinds: tuple[str, ...]
    resources: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime
    revoked: bool
    bindings: int
    caps: tuple[CapUse, ...]

    def status(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        if now < self.valid_from:
            return "not yet valid"
        if now >= self.valid_until:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class BindingLine:
    """One binding as the report lists it. `outcome` is one of `OUTCOME_NAMES`."""

    binding_id: str
    sequence: int
    time: datetime
    bearer: str
    scope_id: str
    kind: str
    resource: str
    agent: str
    amount: Amount | None
    outcome: str = "none"


@dataclass(frozen=True, slots=True)
class RefusalLine:
    """One reason of a refusal that names a scope of the bearer: how close the action came."""

    refusal_id: str
    sequence: int
    time: datetime
    scope_id: str
    kind: str
    resource: str
    agent: str
    amount: Amount | None
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request_id: str
    sequence: int
    time: datetime
    deadline: datetime
    kind: str
    resource: str
    agent: str
    amount: Amount | None
    approvers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BearerReport:
    bearer_id: str
    name: str
    status: str
    attributes: dict[str, str]
    bindings: tuple[BindingLine, ...]
    bindings_by_kind: dict[str, int]
    outcomes: dict[str, int]
    scopes: tuple[ScopeSummary, ...]
    refusals: tuple[RefusalLine, ...]
    pending: tuple[PendingRequest, ...]


@dataclass(frozen=True, slots=True)
class TimeBucket:
    """Bindings that started in [start, start + length)."""

    start: datetime
    length: timedelta
    count: int


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    since: datetime | None
    until: datetime | None
    bearer_filter: str | None
    ledger_size: int
    bearers: tuple[BearerReport, ...]
    timeline: tuple[TimeBucket, ...]

    @property
    def scopes(self) -> tuple[ScopeSummary, ...]:
        return tuple(scope for bearer in self.bearers for scope in bearer.scopes)


@dataclass
class _ScopeState:
    scope_id: str
    bearer: str
    kinds: tuple[str, ...]
    resources: tuple[str, ...]
    limits: Limits
    valid_from: datetime
    valid_until: datetime
    revoked: bool = False
    count: int = 0
    amount: Decimal = Decimal(0)
    largest: Decimal = Decimal(0)
    history: list[tuple[datetime, Decimal]] = field(default_factory=list)


@dataclass
class _BearerState:
    bearer_id: str
    name: str
    status: str = "active"
    attributes: dict[str, str] = field(default_factory=dict)
    scope_ids: list[str] = field(default_factory=list)
    binding_ids: list[str] = field(default_factory=list)
    refusals: list[RefusalLine] = field(default_factory=list)


@dataclass
class _Builder:
    now: datetime
    since: datetime | None
    until: datetime | None
    bearers: dict[str, _BearerState] = field(default_factory=dict)
    scopes: dict[str, _ScopeState] = field(default_factory=dict)
    bindings: dict[str, BindingLine] = field(default_factory=dict)
    requests: dict[str, PendingRequest] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    size: int = 0

    def bearer(self, bearer_id: str) -> _BearerState:
        # A record can name a bearer whose registration the ledger lacks; the report still shows them.
        if bearer_id not in self.bearers:
            self.bearers[bearer_id] = _BearerState(bearer_id, bearer_id)
        return self.bearers[bearer_id]

    def selected(self, time: datetime) -> bool:
        return (self.since is None or time >= self.since) and (self.until is None or time < self.until)

    def apply(self, record: dict[str, Any]) -> None:
        self.size += 1
        record_type = record["type"]
        data = record["data"]
        sequence = int(record["seq"])
        time = parse_time(record["time"])

        if record_type == "bearer.registered":
            bearer = data["bearer"]
            state = self.bearer(bearer["id"])
            state.name = bearer["name"]
            state.status = bearer["status"]
            state.attributes = dict(bearer.get("attributes") or {})
        elif record_type == "bearer.status":
            self.bearer(data["bearer_id"]).status = data["status"]
        elif record_type == "scope.declared":
            self._declare(data)
        elif record_type == "scope.revoked":
            if data["scope_id"] in self.scopes:
                self.scopes[data["scope_id"]].revoked = True
        elif record_type == "binding":
            self._bind(data, sequence, time)
        elif record_type == "outcome":
            line = self.bindings.get(data["binding_id"])
            if line is not None and self.selected(line.time):
                outcome = data["status"] if data["status"] in OUTCOME_NAMES else "unknown"
                self.bindings[line.binding_id] = dataclasses.replace(line, outcome=outcome)
        elif record_type == "refusal":
            self._refuse(data, sequence, time)
        elif record_type == "approval.requested":
            self._request(data, sequence, time)
        elif record_type == "approval.closed":
            self.closed.add(data["request_id"])

    def _declare(self, data: dict[str, Any]) -> None:
        _, payload = read_unverified(data["jws"])
        scope = scope_from_payload(payload, jws=data["jws"], key_id=data["key_id"])
        self.scopes[data["scope_id"]] = _ScopeState(
            scope_id=data["scope_id"],
            bearer=data["bearer"],
            kinds=scope.kinds,
            resources=scope.resources,
            limits=scope.limits,
            valid_from=scope.valid_from,
            valid_until=scope.valid_until,
        )
        self.bearer(data["bearer"]).scope_ids.append(data["scope_id"])

    def _bind(self, data: dict[str, Any], sequence: int, time: datetime) -> None:
        reserved = _amount(data["reserved"].get("amount"))
        value = reserved.value if reserved is not None else Decimal(0)
        # A binding under a delegated scope spends each ancestor's budget too, as the gate counts it.
        spent = [data["scope_id"], *(link["scope_id"] for link in data.get("chain", []))]
        for scope_id in spent:
            scope = self.scopes.get(scope_id)
            if scope is None:
                continue
            scope.count += 1
            scope.amount += value
            scope.largest = max(scope.largest, value)
            scope.history.append((time, value))

        if not self.selected(time):
            return
        action = data["action"]
        line = BindingLine(
            binding_id=data["binding_id"],
            sequence=sequence,
            time=time,
            bearer=data["bearer"],
            scope_id=data["scope_id"],
            kind=action["kind"],
            resource=action["resource"],
            agent=action["agent"],
            amount=_amount(action.get("amount")),
        )
        self.bindings[line.binding_id] = line
        self.bearer(line.bearer).binding_ids.append(line.binding_id)

    def _refuse(self, data: dict[str, Any], sequence: int, time: datetime) -> None:
        if not self.selected(time):
            return
        action = data["action"]
        for reason in data.get("reasons", []):
            self.bearer(reason["bearer"]).refusals.append(
                RefusalLine(
                    refusal_id=data["refusal_id"],
                    sequence=sequence,
                    time=time,
                    scope_id=reason["scope_id"],
                    kind=action["kind"],
                    resource=action["resource"],
                    agent=action["agent"],
                    amount=_amount(action.get("amount")),
                    code=reason["code"],
                    detail=reason["detail"],
                )
            )

    def _request(self, data: dict[str, Any], sequence: int, time: datetime) -> None:
        action = data["action"]
        self.requests[data["request_id"]] = PendingRequest(
            request_id=data["request_id"],
            sequence=sequence,
            time=time,
            deadline=parse_time(data["deadline"]),
            kind=action["kind"],
            resource=action["resource"],
            agent=action["agent"],
            amount=_amount(action.get("amount")),
            approvers=tuple(data.get("approvers", [])),
        )

    def caps(self, scope: _ScopeState) -> tuple[CapUse, ...]:
        limits = scope.limits
        caps: list[CapUse] = []
        if limits.max_count is not None:
            caps.append(CapUse("executions", Decimal(scope.count), Decimal(limits.max_count), None))
        if limits.max_total is not None:
            caps.append(CapUse("total", scope.amount, limits.max_total, limits.unit))
        if limits.max_amount is not None:
            caps.append(CapUse("largest action", scope.largest, limits.max_amount, limits.unit))
        for window in limits.windows:
            # The store's rule: a binding exactly `seconds` old has left the window.
            start = self.now - timedelta(seconds=window.seconds)
            inside = [value for moment, value in scope.history if start < moment <= self.now]
            if window.max_count is not None:
                cap = f"executions per {window.describe()}"
                caps.append(CapUse(cap, Decimal(len(inside)), Decimal(window.max_count), None))
            if window.max_amount is not None:
                cap = f"amount per {window.describe()}"
                caps.append(CapUse(cap, sum(inside, Decimal(0)), window.max_amount, limits.unit))
        return tuple(caps)

    def finish(self, bearer_filter: str | None) -> Report:
        pending_by_bearer: dict[str, list[PendingRequest]] = {}
        for request_id, request in self.requests.items():
            if request_id in self.closed or request.deadline <= self.now:
                continue
            for approver in request.approvers:
                pending_by_bearer.setdefault(approver, []).append(request)
                self.bearer(approver)

        reports = []
        for bearer_id in sorted(self.bearers):
            if bearer_filter is not None and bearer_id != bearer_filter:
                continue
            reports.append(self._bearer_report(self.bearers[bearer_id], pending_by_bearer.get(bearer_id, [])))

        lines = [line for report in reports for line in report.bindings]
        return Report(
            generated_at=self.now,
            since=self.since,
            until=self.until,
            bearer_filter=bearer_filter,
            ledger_size=self.size,
            bearers=tuple(reports),
            timeline=_timeline([line.time for line in lines]),
        )

    def _bearer_report(self, state: _BearerState, pending: list[PendingRequest]) -> BearerReport:
        lines = tuple(self.bindings[binding_id] for binding_id in state.binding_ids)
        outcomes = Counter({name: 0 for name in OUTCOME_NAMES})
        outcomes.update(line.outcome for line in lines)
        scopes = tuple(
            ScopeSummary(
                scope_id=scope.scope_id,
                bearer=scope.bearer,
                kinds=scope.kinds,
                resources=scope.resources,
                valid_from=scope.valid_from,
                valid_until=scope.valid_until,
                revoked=scope.revoked,
                bindings=scope.count,
                caps=self.caps(scope),
            )
            for scope in (self.scopes[scope_id] for scope_id in state.scope_ids)
        )
        return BearerReport(
            bearer_id=state.bearer_id,
            name=state.name,
            status=state.status,
            attributes=state.attributes,
            bindings=lines,
            bindings_by_kind=dict(sorted(Counter(line.kind for line in lines).items())),
            outcomes=dict(outcomes),
            scopes=scopes,
            refusals=tuple(state.refusals),
            pending=tuple(sorted(pending, key=lambda request: request.deadline)),
        )


def build_report(
    records: Iterable[dict[str, Any]],
    *,
    now: datetime,
    bearer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Build the report of every bearer, or of `bearer` alone, from parsed ledger records in order.

    Raises `LedgerIntegrityError` naming the record when a record is malformed, because a report that
    skipped records would understate what was done in a bearer's name.
    """
    builder = _Builder(now=now, since=since, until=until)
    for record in records:
        try:
            builder.apply(record)
        except (KeyError, TypeError, ValueError, SignatureError) as error:
            sequence = record.get("seq")
            message = (
                f"ledger record {sequence} ({record.get('type', '?')}) is malformed: {type(error).__name__}: {error}"
            )
            raise LedgerIntegrityError(
                message,
                sequence=sequence if isinstance(sequence, int) else None,
                hint="run etlb ledger verify to find what changed",
            ) from error
    return builder.finish(bearer)


def _amount(data: dict[str, str] | None) -> Amount | None:
    return None if data is None else Amount.parse(data["value"], data["unit"])


def _timeline(times: list[datetime]) -> tuple[TimeBucket, ...]:
    """Count bindings per hour, or per day when they span more than 48 hours, with empty buckets kept."""
    if not times:
        return ()
    first, last = min(times), max(times)
    length = _HOUR if last - first <= _HOURLY_SPAN else _DAY
    if length == _HOUR:
        start = first.replace(minute=0, second=0, microsecond=0)
    else:
        start = first.replace(hour=0, minute=0, second=0, microsecond=0)

    counts: Counter[int] = Counter((moment - start) // length for moment in times)
    buckets = (last - start) // length + 1
    return tuple(TimeBucket(start + index * length, length, counts[index]) for index in range(buckets))


def decimal_text(number: Decimal) -> str:
    """Write a decimal in plain notation without trailing zeros, as the ledger writes amounts."""
    text = format(number.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def report_json(report: Report) -> dict[str, Any]:
    """Return the report as JSON-ready data: times in RFC 3339, amounts and caps as decimal strings."""
    data: dict[str, Any] = _json_value(report)
    return data


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, Amount):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _json_value(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return value
