"""Scope conditions: CEL (Common Expression Language) expressions over the action. No I/O.

A scope's `when` is a CEL expression that must evaluate to `true` for the scope to cover an action.
It sees one variable, `action`, with the fields `kind`, `resource`, `agent`, `tool`, `server`,
`arguments` (the call's JSON arguments) and `amount` (`{"value": "<decimal text>", "unit": …}` or
null). Amount values are strings, because CEL has no decimal type and a float would round: caps on
amounts belong in the scope's limits, which compare decimals exactly.

The `common-expression-language` package (Rust CEL behind Python bindings) compiles and evaluates.
Programs are compiled once per expression and process, when a declaration is checked or a scope is
first judged. Evaluation fails closed: an error, a missing field or a non-boolean result is a false
condition, reported with its cause.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from etlb.errors import DeclarationError
from etlb.model import Action

__all__ = ["MAX_CONDITION_LENGTH", "check_condition", "condition_failure"]

MAX_CONDITION_LENGTH = 4096

_ACTION_PATH = re.compile(r"\baction(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def check_condition(expression: str) -> None:
    """Compile a condition when a scope is declared; raises `DeclarationError` naming the syntax error."""
    if len(expression) > MAX_CONDITION_LENGTH:
        message = f"condition of {len(expression)} characters is longer than {MAX_CONDITION_LENGTH}"
        raise DeclarationError(message)
    for clause in _clauses(expression):
        try:
            _compile(clause)
        except ValueError as error:
            message = f"condition {expression!r} is not valid CEL: {error}"
            raise DeclarationError(message, hint="see docs/scopes.md for the fields a condition can use") from error


def condition_failure(expression: str, action: Action) -> str | None:
    """Evaluate a condition; return None when it holds, else which clause failed and the values it saw.

    A condition `a && b && c` is evaluated clause by clause, so the explanation names the first false
    clause instead of the whole expression.
    """
    context = {"action": _action_context(action)}
    for clause in _clauses(expression):
        try:
            result = _compile(clause).execute(context)
        except Exception as error:
            return f"condition `{clause}` could not be evaluated ({type(error).__name__}: {error})"
        if result is not True:
            seen = _values_seen(clause, context)
            suffix = f" with {seen}" if seen else ""
            return f"condition `{clause}` is {str(result).lower()}{suffix}"
    return None


@functools.lru_cache(maxsize=1024)
def _compile(expression: str) -> Any:
    # Imported here: the `cel` package loads its interactive shell on import (a quarter of a second),
    # which every short-lived process (hooks, CLI commands) would pay without a condition to compile.
    import cel

    return cel.compile(expression)


def _clauses(expression: str) -> list[str]:
    """Split an expression at its top-level `&&`; strings and brackets keep their `&&` inside."""
    clauses: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    index = 0
    while index < len(expression):
        character = expression[index]
        if quote is not None:
            if character == "\\":
                index += 1
            elif character == quote:
                quote = None
        elif character in "\"'":
            quote = character
        elif character in "([{":
            depth += 1
        elif character in ")]}":
            depth -= 1
        elif expression.startswith("&&", index) and depth == 0:
            clauses.append(expression[start:index].strip())
            start = index + 2
            index += 1
        index += 1
    clauses.append(expression[start:].strip())
    return [clause for clause in clauses if clause] or [expression]


def _action_context(action: Action) -> dict[str, Any]:
    amount = action.amount.to_json() if action.amount is not None else None
    return {
        "kind": action.kind,
        "resource": action.resource,
        "agent": action.agent,
        "tool": action.tool,
        "server": action.server or "",
        "arguments": action.arguments,
        "amount": amount,
    }


def _values_seen(clause: str, context: dict[str, Any]) -> str:
    values = []
    for path in dict.fromkeys(_ACTION_PATH.findall(clause)):
        value: Any = context
        for name in path.split("."):
            value = value.get(name) if isinstance(value, dict) else None
        values.append(f"{path} = {value!r}")
    return ", ".join(values)
