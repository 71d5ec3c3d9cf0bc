"""The classifier: operator rules that turn a tool call into an action.

Invariants, each enforced below:
- The first rule whose `server` and `tool` globs match decides kind, consequence, resource and amount.
- Without a matching rule, a tool is reversible only when a server the operator marked trusted
  declares `readOnlyHint: true` for it. Every other tool is irreversible, with kind
  `tool.<server>.<name>` (`tool.<name>` when the call names no server).
- Nothing the agent sends decides the consequence: `ToolCall` has no field for it, and annotations
  count only as the server's word about its own tools.
- A template that cannot be filled raises `ClassificationError`, which the gate turns into a refusal.
- A rule with an analyser takes its verdict from the analysis of the command text, never from the
  rule's `consequence`; each irreversible simple command or statement becomes a part that the
  covering scope must cover.
"""

from __future__ import annotations

import fnmatch
import string
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from etlb.analysis.shell import analyse_shell
from etlb.canonical import canonical_bytes, sha256_digest, sha256_hex
from etlb.config import Config, RuleConfig
from etlb.errors import ClassificationError
from etlb.model import Action, ActionPart, Amount, Consequence, ToolCall, action_fields

__all__ = ["Classifier", "unclassified_action"]

_FORMATTER = string.Formatter()


class Classifier:
    def __init__(self, config: Config) -> None:
        self._config = config

    def classify(self, call: ToolCall, *, agent: str, annotations: Mapping[str, Any] | None = None) -> Action:
        """Build the action for a tool call made by `agent`.

        `annotations` are the MCP tool annotations the server declared for this tool, if any.
        """
        if not isinstance(call.tool, str) or not call.tool:
            message = f"tool call has no tool name (got {call.tool!r})"
            raise ClassificationError(message)
        if not isinstance(call.arguments, dict):
            message = f"arguments of tool {call.tool!r} must be a JSON object, got {type(call.arguments).__name__}"
            raise ClassificationError(message)

        rule = self._match_rule(call)
        parts: tuple[ActionPart, ...] = ()
        if rule is not None:
            kind = rule.kind
            consequence = rule.consequence
            resource = _fill(rule.resource, call) if rule.resource else _default_resource(call)
            amount = _amount(rule, call)
            if rule.analyser is not None:
                consequence, parts = _analyse(rule, call, resource)
                if parts:
                    # The first irreversible part names the action in the ledger and in refusals.
                    kind, resource = parts[0].kind, parts[0].resources[0]
        else:
            kind = _default_kind(call)
            consequence = self._consequence_from_annotations(call, annotations)
            resource = _default_resource(call)
            amount = None

        fields = action_fields(
            kind=kind,
            resource=resource,
            consequence=consequence,
            agent=agent,
            tool=call.tool,
            server=call.server,
            arguments=call.arguments,
            amount=amount,
            parts=parts,
            definition_digest=call.definition_digest,
        )
        try:
            digest = "sha256:" + sha256_hex(canonical_bytes(fields))
        except ValueError as error:
            message = f"arguments of tool {call.tool!r} are not plain JSON: {error}"
            raise ClassificationError(message) from error

        return Action(
            kind=kind,
            resource=resource,
            consequence=consequence,
            agent=agent,
            tool=call.tool,
            server=call.server,
            arguments=call.arguments,
            amount=amount,
            digest=digest,
            parts=parts,
            definition_digest=call.definition_digest,
            call_id=call.call_id,
        )

    def _match_rule(self, call: ToolCall) -> RuleConfig | None:
        server = call.server or ""
        for rule in self._config.rules:
            if not (fnmatch.fnmatchcase(server, rule.server) and fnmatch.fnmatchcase(call.tool, rule.tool)):
                continue
            if rule.arguments is not None and not _arguments_match(rule.arguments, call.arguments):
                continue
            return rule
        return None

    def _consequence_from_annotations(self, call: ToolCall, annotations: Mapping[str, Any] | None) -> Consequence:
        # Only the literal value True counts: a string "true" or a missing key keeps the tool irreversible.
        read_only = annotations is not None and annotations.get("readOnlyHint") is True
        if read_only and self._config.trusts(call.server):
            return Consequence.REVERSIBLE
        return Consequence.IRREVERSIBLE


def _arguments_match(expected: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """Return whether every expected dotted path is present with exactly the expected JSON value.

    Booleans and numbers compare by type too, so `dryRun = true` does not match the string "true".
    """
    for path, value in expected.items():
        current: Any = arguments
        for name in path.split("."):
            if not isinstance(current, dict) or name not in current:
                return False
            current = current[name]
        if type(current) is not type(value) or current != value:
            return False
    return True


def _analyse(rule: RuleConfig, call: ToolCall, fallback_resource: str) -> tuple[Consequence, tuple[ActionPart, ...]]:
    """Run the rule's analyser; return the consequence and the irreversible parts it found.

    A part without resources (a `kubectl delete`, an unknown program) gets the rule's resource, so a
    scope must still name where it may act. Analysis errors propagate as `AnalysisError`, which the
    gate turns into a refusal with the analyser's own code.
    """
    assert rule.command is not None
    text = _fill(rule.command, call)

    if rule.analyser == "shell":
        assert rule.cwd is not None and rule.home is not None
        home = rule.home
        shell = analyse_shell(text, cwd=_fill(rule.cwd, call), home=home, environment={"HOME": home})
        found = [
            ActionPart(part.kind, part.resources or (fallback_resource,), part.text, part.opaque, part.reason)
            for part in shell.irreversible_parts
        ]
        return shell.consequence, tuple(found)

    assert rule.database is not None
    # Imported here: sqlglot takes a tenth of a second to load, and only SQL rules need it.
    from etlb.analysis.sql import analyse_sql

    sql = analyse_sql(text, database=_fill(rule.database, call), dialect=rule.dialect)
    statements = [
        ActionPart(part.kind, part.resources or (fallback_resource,), part.text, False, part.reason)
        for part in sql.irreversible_parts
    ]
    return sql.consequence, tuple(statements)


def _default_kind(call: ToolCall) -> str:
    return f"tool.{call.server}.{call.tool}" if call.server else f"tool.{call.tool}"


def _default_resource(call: ToolCall) -> str:
    return f"tool:{call.server}/{call.tool}" if call.server else f"tool:{call.tool}"


def _fill(template: str, call: ToolCall) -> str:
    """Fill a template such as `account:{payee.iban}` from the call's arguments.

    Only plain field names and dotted paths into nested objects are allowed: no format specs,
    conversions or attribute access, so a template can read argument values and nothing else.
    """
    pieces: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as error:
        message = f"template {template!r} is invalid: {error}"
        raise ClassificationError(message) from error

    for literal, field_name, format_spec, conversion in parsed:
        pieces.append(literal)
        if field_name is None:
            continue
        if format_spec or conversion:
            message = f"template {template!r} uses a format spec or conversion; write plain {{name}} fields"
            raise ClassificationError(message)
        pieces.append(_scalar_text(_lookup(call, field_name, template)))
    return "".join(pieces)


def _lookup(call: ToolCall, path: str, template: str) -> Any:
    value: Any = call.arguments
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            message = f"tool {call.tool!r} was called without argument {path!r}, which template {template!r} needs"
            raise ClassificationError(message)
        value = value[part]
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        message = f"template value {value!r} must be a string or a number"
        raise ClassificationError(message)
    return str(value)


def _amount(rule: RuleConfig, call: ToolCall) -> Amount | None:
    if rule.amount is None:
        return None
    if rule.unit is None:
        message = f"rule for tool {rule.tool!r} sets an amount without a unit"
        raise ClassificationError(message, hint='add unit = "EUR" (or a template) to the rule in etlb.toml')

    text = _fill(rule.amount, call)
    unit = _fill(rule.unit, call)
    try:
        # Arguments arrive as parsed JSON, so a float is read through its shortest repr, which is
        # the decimal text the agent sent for any amount with fewer than 16 significant digits.
        value = Decimal(text).scaleb(-rule.amount_scale)
    except InvalidOperation as error:
        message = f"amount {text!r} of tool {call.tool!r} is not a decimal number"
        raise ClassificationError(message) from error
    if not value.is_finite():
        # Checked before the sign, because comparing a NaN raises InvalidOperation.
        message = f"amount {text!r} of tool {call.tool!r} is not a finite number"
        raise ClassificationError(message)
    if value < 0:
        # A negative amount would hand budget back to the scope, so it is never classified.
        message = f"amount {text} of tool {call.tool!r} is negative"
        raise ClassificationError(message)
    try:
        return Amount(value, unit)
    except ValueError as error:
        raise ClassificationError(str(error)) from error


def unclassified_action(call: ToolCall, agent: str) -> Action:
    """Describe a call without classifying it, as an unknown irreversible tool, so that its refusal names it.

    Arguments that are not plain JSON are left out of the digest rather than failing again.
    """
    kind = _default_kind(call)
    arguments = call.arguments if isinstance(call.arguments, dict) else {}
    fields = action_fields(
        kind=kind,
        resource=_default_resource(call),
        consequence=Consequence.IRREVERSIBLE,
        agent=agent,
        tool=str(call.tool),
        server=call.server,
        arguments=arguments,
        amount=None,
    )
    try:
        digest = sha256_digest(fields)
    except ValueError:
        fields = {**fields, "arguments": {}}
        digest = sha256_digest(fields)
    return Action(
        kind=kind,
        resource=fields["resource"],
        consequence=Consequence.IRREVERSIBLE,
        agent=agent,
        tool=str(call.tool),
        server=call.server,
        arguments=fields["arguments"],
        amount=None,
        digest=digest,
        call_id=call.call_id,
    )
