"""Domain records of etlb: tool calls, actions, bearers, scopes, bindings, refusals and outcomes.

This module does no I/O. Every record is a frozen dataclass, so a value that was checked once cannot
change afterwards. Amounts are `Decimal` values with a unit and never floats, because a float cannot
represent most currency amounts exactly.

Times are timezone-aware `datetime` values in UTC. `format_time` and `parse_time` convert them to and
from RFC 3339 strings with a trailing `Z`, the form used in signed payloads and ledger records.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "Action",
    "ActionPart",
    "Amount",
    "Bearer",
    "BearerKey",
    "BearerStatus",
    "Binding",
    "Consequence",
    "Limits",
    "Outcome",
    "OutcomeStatus",
    "ReasonCode",
    "Refusal",
    "Scope",
    "ScopeReason",
    "ScopeUsage",
    "ToolCall",
    "WindowLimit",
    "describe_seconds",
    "format_time",
    "parse_time",
]


class ReasonCode(enum.StrEnum):
    """Refusal reason codes. They are part of the public API and never change meaning."""

    NO_COVERING_SCOPE = "no_covering_scope"
    AGENT_NOT_COVERED = "agent_not_covered"
    RESOURCE_NOT_COVERED = "resource_not_covered"
    CONDITION_FALSE = "condition_false"
    SCOPE_NOT_YET_VALID = "scope_not_yet_valid"
    SCOPE_EXPIRED = "scope_expired"
    SCOPE_REVOKED = "scope_revoked"
    BEARER_SUSPENDED = "bearer_suspended"
    SIGNATURE_INVALID = "signature_invalid"
    DEFINITION_CHANGED = "definition_changed"
    AMOUNT_EXCEEDS_SCOPE = "amount_exceeds_scope"
    BUDGET_EXHAUSTED = "budget_exhausted"
    COUNT_EXHAUSTED = "count_exhausted"
    WINDOW_EXHAUSTED = "window_exhausted"
    UNIT_MISMATCH = "unit_mismatch"
    BINDING_CONSUMED = "binding_consumed"
    OPAQUE_TARGET = "opaque_target"
    ANALYSIS_LIMIT_EXCEEDED = "analysis_limit_exceeded"
    APPROVAL_DECLINED = "approval_declined"
    APPROVAL_TIMED_OUT = "approval_timed_out"
    NO_APPROVERS = "no_approvers"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL_ERROR = "internal_error"
    # The operator's rule for the tool could not be applied to the call's arguments.
    CLASSIFICATION_FAILED = "classification_failed"
    # Not a final refusal: an approval request waits for an answer, and the action has not run.
    APPROVAL_PENDING = "approval_pending"


class Consequence(enum.StrEnum):
    REVERSIBLE = "reversible"
    IRREVERSIBLE = "irreversible"


class BearerStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class OutcomeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with millisecond precision and a `Z` suffix."""
    if moment.tzinfo is None:
        message = f"time {moment.isoformat()} has no timezone; pass an aware datetime in UTC"
        raise ValueError(message)

    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; a timestamp without an offset is rejected, not guessed."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        message = f"invalid timestamp {text!r}: expected RFC 3339, such as 2026-12-31T23:59:59Z"
        raise ValueError(message) from error

    if moment.tzinfo is None:
        message = f"timestamp {text!r} has no offset: add Z or +HH:MM"
        raise ValueError(message)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Amount:
    """A decimal quantity with its unit: an ISO 4217 currency code or a label such as `records`."""

    value: Decimal
    unit: str

    def __post_init__(self) -> None:
        if not self.value.is_finite():
            message = f"amount {self.value} is not a finite number"
            raise ValueError(message)
        if not self.unit:
            message = f"amount {self.value} has no unit; give a currency code or a label"
            raise ValueError(message)

    @classmethod
    def parse(cls, value: str | int | Decimal, unit: str) -> Amount:
        """Build an amount from text or an integer; floats are rejected because they round."""
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            message = f"amount {value!r} must be a decimal string or an integer, not {type(value).__name__}"
            raise ValueError(message)
        try:
            number = Decimal(value)
        except InvalidOperation as error:
            message = f"amount {value!r} is not a decimal number"
            raise ValueError(message) from error
        return cls(number, unit)

    def to_json(self) -> dict[str, str]:
        return {"value": _decimal_text(self.value), "unit": self.unit}

    def __str__(self) -> str:
        return f"{_decimal_text(self.value)} {self.unit}"


def _decimal_text(number: Decimal) -> str:
    # Plain notation without exponent or trailing zeros, so that equal amounts canonicalise equally.
    text = format(number.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


@dataclass(frozen=True, slots=True)
class ToolCall:
    """What an agent asks to run: an optional server name, a tool name and JSON arguments.

    `definition_digest` is set by an adapter that knows the tool's definition as its server lists it
    (for MCP, the `sha256:` digest of the tool's canonical JSON); scopes can pin it.
    """

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    server: str | None = None
    call_id: str | None = None
    definition_digest: str | None = None


@dataclass(frozen=True, slots=True)
class ActionPart:
    """One irreversible effect of a compound action, such as one command of a shell pipeline.

    `resources` are the targets it touches; a value ending in `/**` is a whole tree. `opaque` marks a
    part whose targets could not be resolved, and `reason` says why.
    """

    kind: str
    resources: tuple[str, ...]
    text: str = ""
    opaque: bool = False
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resources": list(self.resources),
            "text": self.text,
            "opaque": self.opaque,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionPart:
        return cls(
            kind=data["kind"],
            resources=tuple(data["resources"]),
            text=data.get("text", ""),
            opaque=bool(data.get("opaque", False)),
            reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class Action:
    """A classified tool call. `digest` is the SHA-256 of `canonical_fields()` in RFC 8785 form.

    `parts` lists the irreversible effects of an analysed compound call (a shell command line, a SQL
    statement list); a scope covers the action only if it covers every part. A plain call has no
    parts and is covered through its own kind and resource. `definition_digest` is the digest of the
    tool definition the server showed, when an adapter knows it. `call_id` is the runtime's id for
    the call; it is recorded beside the action but is not part of the digest, so the same action
    asked for twice has one digest.
    """

    kind: str
    resource: str
    consequence: Consequence
    agent: str
    tool: str
    server: str | None
    arguments: dict[str, Any]
    amount: Amount | None
    digest: str
    parts: tuple[ActionPart, ...] = ()
    definition_digest: str | None = None
    call_id: str | None = None

    @property
    def requirements(self) -> tuple[ActionPart, ...]:
        """Return what a covering scope must cover: every part, or the action's own kind and resource."""
        if self.parts:
            return self.parts
        return (ActionPart(self.kind, (self.resource,)),)

    def canonical_fields(self) -> dict[str, Any]:
        return action_fields(
            kind=self.kind,
            resource=self.resource,
            consequence=self.consequence,
            agent=self.agent,
            tool=self.tool,
            server=self.server,
            arguments=self.arguments,
            amount=self.amount,
            parts=self.parts,
            definition_digest=self.definition_digest,
        )


def action_fields(
    *,
    kind: str,
    resource: str,
    consequence: Consequence,
    agent: str,
    tool: str,
    server: str | None,
    arguments: dict[str, Any],
    amount: Amount | None,
    parts: tuple[ActionPart, ...] = (),
    definition_digest: str | None = None,
) -> dict[str, Any]:
    """Return the JSON object whose canonical form the action digest covers.

    `parts` and `definition_digest` are written only when present, so that a plain action keeps the
    same digest whether or not the gate could analyse parts or knew the tool's definition.
    """
    fields: dict[str, Any] = {
        "kind": kind,
        "resource": resource,
        "consequence": consequence.value,
        "agent": agent,
        "server": server,
        "tool": tool,
        "arguments": arguments,
        "amount": amount.to_json() if amount is not None else None,
    }
    if parts:
        fields["parts"] = [part.to_json() for part in parts]
    if definition_digest is not None:
        fields["definition_digest"] = definition_digest
    return fields


@dataclass(frozen=True, slots=True)
class BearerKey:
    """An Ed25519 public key registered to a bearer, as an RFC 8037 OKP JWK with its RFC 7638 thumbprint."""

    key_id: str
    public_jwk: dict[str, str]


@dataclass(frozen=True, slots=True)
class Bearer:
    """A human who can carry liability."""

    id: str
    name: str
    keys: tuple[BearerKey, ...]
    status: BearerStatus = BearerStatus.ACTIVE
    attributes: dict[str, str] = field(default_factory=dict)

    def key(self, key_id: str) -> BearerKey | None:
        return next((key for key in self.keys if key.key_id == key_id), None)


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """A rolling-window cap: at most `max_count` executions and `max_amount` in any `seconds` before now."""

    seconds: int
    max_amount: Decimal | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            message = f"window of {self.seconds} seconds must be positive"
            raise ValueError(message)
        if self.max_amount is None and self.max_count is None:
            message = f"window of {self.seconds} seconds caps nothing: give max_amount, max_count or both"
            raise ValueError(message)
        if self.max_count is not None and self.max_count < 0:
            message = f"window max_count {self.max_count} is negative; use 0 or more"
            raise ValueError(message)
        if self.max_amount is not None and (not self.max_amount.is_finite() or self.max_amount < 0):
            message = f"window max_amount {self.max_amount} must be a finite amount of 0 or more"
            raise ValueError(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "max_amount": _decimal_text(self.max_amount) if self.max_amount is not None else None,
            "max_count": self.max_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowLimit:
        seconds = data.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            message = f"window seconds {seconds!r} must be an integer"
            raise ValueError(message)
        amount = data.get("max_amount")
        return cls(
            seconds=seconds,
            max_amount=None if amount is None else Amount.parse(amount, "x").value,
            max_count=data.get("max_count"),
        )

    def describe(self) -> str:
        return describe_seconds(self.seconds)


def describe_seconds(seconds: int) -> str:
    """Write a window length the way people say it: 24h, 7d, 90m or 45s (one day reads as 24h)."""
    if seconds % 86400 == 0 and seconds > 86400:
        return f"{seconds // 86400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of a scope. `unit` applies to every amount cap; `None` means no limit of that sort."""

    max_amount: Decimal | None = None
    max_total: Decimal | None = None
    max_count: int | None = None
    unit: str | None = None
    windows: tuple[WindowLimit, ...] = ()

    @property
    def caps_amounts(self) -> bool:
        return (
            self.max_amount is not None
            or self.max_total is not None
            or any(window.max_amount is not None for window in self.windows)
        )

    def __post_init__(self) -> None:
        has_amount_cap = self.caps_amounts
        if has_amount_cap and not self.unit:
            message = "an amount cap needs a unit: set limits.unit, for example EUR"
            raise ValueError(message)
        if self.max_count is not None and self.max_count < 0:
            message = f"max_count {self.max_count} is negative; use 0 or more"
            raise ValueError(message)
        for name in ("max_amount", "max_total"):
            cap = getattr(self, name)
            if cap is not None and (not cap.is_finite() or cap < 0):
                message = f"{name} {cap} must be a finite amount of 0 or more"
                raise ValueError(message)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "max_amount": _decimal_text(self.max_amount) if self.max_amount is not None else None,
            "max_total": _decimal_text(self.max_total) if self.max_total is not None else None,
            "max_count": self.max_count,
            "unit": self.unit,
        }
        # Written only when present, so that scopes without windows keep the payload they always had.
        if self.windows:
            data["windows"] = [window.to_json() for window in self.windows]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        def decimal_or_none(name: str) -> Decimal | None:
            value = data.get(name)
            return None if value is None else Amount.parse(value, "x").value

        windows = data.get("windows", [])
        if not isinstance(windows, list):
            message = f"limits.windows must be a list, got {type(windows).__name__}"
            raise ValueError(message)
        return cls(
            max_amount=decimal_or_none("max_amount"),
            max_total=decimal_or_none("max_total"),
            max_count=data.get("max_count"),
            unit=data.get("unit"),
            windows=tuple(WindowLimit.from_json(window) for window in windows),
        )


@dataclass(frozen=True, slots=True)
class Scope:
    """A bearer's signed declaration of the actions they accept liability for.

    `jws` is the compact JWS the bearer signed; every other field is decoded from its payload, so the
    two cannot disagree. `key_id` names the bearer key that signed it.
    """

    id: str
    bearer: str
    key_id: str
    kinds: tuple[str, ...]
    resources: tuple[str, ...]
    agents: tuple[str, ...]
    limits: Limits
    valid_from: datetime
    valid_until: datetime
    domain: str
    terms: str
    jws: str
    when: str | None = None
    definitions: dict[str, str] = field(default_factory=dict)
    # A delegated scope: signed by its stand-in bearer, and carrying the offer its delegator signed
    # (`delegation`, a compact JWS) for the scope `parent_id`, which belongs to `delegator`.
    parent_id: str | None = None
    delegator: str | None = None
    delegation: str | None = None
    # An approval's one-execution scope covers exactly this action digest, for the request `approval`.
    action_digest: str | None = None
    approval: str | None = None

    @property
    def delegated(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    """Budget a scope has used: bindings made and the amount they reserved, in total and per window.

    `windows` holds (count, amount) for each of the scope's rolling windows, in the order of
    `Limits.windows`, counted over the window that ends at the decision's time.
    """

    count: int = 0
    amount: Decimal = Decimal(0)
    windows: tuple[tuple[int, Decimal], ...] = ()


@dataclass(frozen=True, slots=True)
class ScopeReason:
    """The reason one scope that came close did not cover an action."""

    scope_id: str
    bearer: str
    code: ReasonCode
    detail: str

    def to_json(self) -> dict[str, str]:
        return {
            "scope_id": self.scope_id,
            "bearer": self.bearer,
            "code": self.code.value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """The record that an action found no bearer. `code` is the overall reason."""

    id: str
    action: Action
    code: ReasonCode
    reasons: tuple[ScopeReason, ...]
    message: str
    time: datetime

    @property
    def bearers_nearby(self) -> tuple[str, ...]:
        """Bearers whose scopes came close, in the order of `reasons`, each named once."""
        return tuple(dict.fromkeys(reason.bearer for reason in self.reasons))


@dataclass(frozen=True, slots=True)
class Binding:
    """The record that ties one action digest to one bearer under one scope. Single-use."""

    id: str
    action: Action
    bearer: str
    scope_id: str
    reserved_amount: Amount | None
    reserved_count: int
    time: datetime
    sequence: int
    # For a delegated scope: (scope id, bearer) of each ancestor, parent first. The reservation
    # counted against each of them too.
    chain: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a bound action after it ran. `detail` is a result digest or the error text."""

    status: OutcomeStatus
    detail: str = ""

    @classmethod
    def succeeded(cls, detail: str = "") -> Outcome:
        return cls(OutcomeStatus.SUCCEEDED, detail)

    @classmethod
    def failed(cls, detail: str) -> Outcome:
        return cls(OutcomeStatus.FAILED, detail)
