"""The classifier: operator rules and server annotations turn tool calls into actions."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from etlb.classify import Classifier
from etlb.config import parse_config
from etlb.errors import ClassificationError
from etlb.model import Amount, Consequence, ToolCall

RULES = """\
[servers.git]
trusted = true

[servers.notes]
trusted = false

[[rules]]
server = "payments"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"

[[rules]]
server = "payments"
tool = "transfer_cents"
kind = "payments.transfer"
resource = "iban:{payee.iban}"
amount = "{cents}"
unit = "EUR"
amount_scale = 2

[[rules]]
server = "pay*"
tool = "*"
kind = "payments.other"

[[rules]]
server = "git"
tool = "git_commit"
kind = "git.commit"
resource = "repo:{repo_path}"

[[rules]]
tool = "read_*"
kind = "files.read"
consequence = "reversible"
resource = "file:{path}"

[[rules]]
tool = "read_secret"
kind = "secrets.read"

[[rules]]
tool = "spec"
kind = "test.spec"
resource = "{name:>10}"

[[rules]]
tool = "conversion"
kind = "test.conversion"
resource = "{name!r}"

[[rules]]
tool = "unclosed"
kind = "test.unclosed"
resource = "{name"

[[rules]]
tool = "no_unit"
kind = "test.no_unit"
amount = "{amount}"
"""

AGENT = "bot-1"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(parse_config(RULES))


def transfer(**overrides: Any) -> ToolCall:
    arguments: dict[str, Any] = {"from_account": "DE01", "amount": "250.00", "currency": "EUR"}
    arguments.update(overrides)
    return ToolCall(tool="transfer", arguments=arguments, server="payments")


# Rule matching


def test_rule_sets_kind(classifier: Classifier) -> None:
    action = classifier.classify(transfer(), agent=AGENT)

    assert action.kind == "payments.transfer"
    assert action.consequence is Consequence.IRREVERSIBLE


def test_rule_fills_resource(classifier: Classifier) -> None:
    action = classifier.classify(transfer(), agent=AGENT)

    assert action.resource == "account:DE01"


def test_rule_reads_amount_and_unit(classifier: Classifier) -> None:
    action = classifier.classify(transfer(), agent=AGENT)

    assert action.amount == Amount(Decimal("250.00"), "EUR")


def test_action_keeps_call_fields(classifier: Classifier) -> None:
    call = transfer()
    action = classifier.classify(call, agent=AGENT)

    assert action.agent == AGENT
    assert action.tool == "transfer"
    assert action.server == "payments"
    assert action.arguments == call.arguments


def test_first_matching_rule_wins(classifier: Classifier) -> None:
    # "transfer" on "payments" also matches the later rule for server "pay*" and tool "*".
    action = classifier.classify(transfer(), agent=AGENT)

    assert action.kind == "payments.transfer"


def test_server_glob_matches(classifier: Classifier) -> None:
    call = ToolCall(tool="refund", arguments={}, server="payroll")

    assert classifier.classify(call, agent=AGENT).kind == "payments.other"


def test_rule_without_resource_default(classifier: Classifier) -> None:
    call = ToolCall(tool="refund", arguments={}, server="payroll")

    assert classifier.classify(call, agent=AGENT).resource == "tool:payroll/refund"


def test_rule_without_amount_has_none(classifier: Classifier) -> None:
    call = ToolCall(tool="refund", arguments={"amount": "5"}, server="payroll")

    assert classifier.classify(call, agent=AGENT).amount is None


def test_server_glob_needs_server(classifier: Classifier) -> None:
    # Server "pay*" does not match a call without a server, so the default kind applies.
    call = ToolCall(tool="refund", arguments={})

    assert classifier.classify(call, agent=AGENT).kind == "tool.refund"


def test_star_server_matches_serverless(classifier: Classifier) -> None:
    call = ToolCall(tool="read_file", arguments={"path": "/etc/hosts"})

    assert classifier.classify(call, agent=AGENT).kind == "files.read"


def test_tool_glob_before_exact_rule(classifier: Classifier) -> None:
    # The "read_*" rule comes first, so the later exact "read_secret" rule never applies.
    call = ToolCall(tool="read_secret", arguments={"path": "/root/key"})

    assert classifier.classify(call, agent=AGENT).kind == "files.read"


def test_rule_consequence_reversible(classifier: Classifier) -> None:
    call = ToolCall(tool="read_file", arguments={"path": "/etc/hosts"}, server="files")

    assert classifier.classify(call, agent=AGENT).consequence is Consequence.REVERSIBLE


def test_tool_glob_is_case_sensitive(classifier: Classifier) -> None:
    call = ToolCall(tool="READ_file", arguments={}, server="files")

    assert classifier.classify(call, agent=AGENT).kind == "tool.files.READ_file"


# Templates


def test_nested_template_field(classifier: Classifier) -> None:
    call = ToolCall(
        tool="transfer_cents", arguments={"payee": {"iban": "DE89370400440532013000"}, "cents": 2500}, server="payments"
    )

    assert classifier.classify(call, agent=AGENT).resource == "iban:DE89370400440532013000"


def test_template_integer_value(classifier: Classifier) -> None:
    call = transfer(from_account=4711)

    assert classifier.classify(call, agent=AGENT).resource == "account:4711"


def test_missing_argument_named(classifier: Classifier) -> None:
    call = ToolCall(tool="transfer", arguments={"amount": "1", "currency": "EUR"}, server="payments")
    message = (
        "tool 'transfer' was called without argument 'from_account', which template 'account:{from_account}' needs"
    )

    with pytest.raises(ClassificationError, match=re.escape(message)):
        classifier.classify(call, agent=AGENT)


def test_missing_nested_argument_named(classifier: Classifier) -> None:
    call = ToolCall(tool="transfer_cents", arguments={"payee": {"name": "Bob"}, "cents": 1}, server="payments")

    with pytest.raises(ClassificationError, match=r"without argument 'payee\.iban'"):
        classifier.classify(call, agent=AGENT)


def test_nested_path_through_string(classifier: Classifier) -> None:
    call = ToolCall(tool="transfer_cents", arguments={"payee": "DE89", "cents": 1}, server="payments")

    with pytest.raises(ClassificationError, match=r"without argument 'payee\.iban'"):
        classifier.classify(call, agent=AGENT)


@pytest.mark.parametrize(
    ("tool", "error"),
    [
        pytest.param("spec", r"template '\{name:>10\}' uses a format spec or conversion", id="format-spec"),
        pytest.param("conversion", r"template '\{name!r\}' uses a format spec or conversion", id="conversion"),
        pytest.param("unclosed", r"template '\{name' is invalid", id="unclosed-brace"),
    ],
)
def test_template_form_rejected(classifier: Classifier, tool: str, error: str) -> None:
    call = ToolCall(tool=tool, arguments={"name": "x"})

    with pytest.raises(ClassificationError, match=error):
        classifier.classify(call, agent=AGENT)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(True, "True", id="bool"),
        pytest.param({"iban": "DE01"}, r"\{'iban': 'DE01'\}", id="dict"),
        pytest.param(["DE01"], r"\['DE01'\]", id="list"),
        pytest.param(None, "None", id="null"),
    ],
)
def test_template_value_type_rejected(classifier: Classifier, value: object, shown: str) -> None:
    with pytest.raises(ClassificationError, match=f"template value {shown} must be a string or a number"):
        classifier.classify(transfer(from_account=value), agent=AGENT)


# Amounts


def test_amount_scale_cents(classifier: Classifier) -> None:
    call = ToolCall(tool="transfer_cents", arguments={"payee": {"iban": "DE89"}, "cents": 2500}, server="payments")

    assert classifier.classify(call, agent=AGENT).amount == Amount(Decimal("25.00"), "EUR")


def test_amount_scale_json_value(classifier: Classifier) -> None:
    call = ToolCall(tool="transfer_cents", arguments={"payee": {"iban": "DE89"}, "cents": 2599}, server="payments")
    amount = classifier.classify(call, agent=AGENT).amount

    assert amount is not None
    assert amount.to_json() == {"value": "25.99", "unit": "EUR"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(12.5, Decimal("12.5"), id="float"),
        pytest.param(0.1, Decimal("0.1"), id="float-shortest-repr"),
        pytest.param(1e-7, Decimal("1E-7"), id="float-exponent"),
        pytest.param(250, Decimal(250), id="integer"),
        pytest.param("1e3", Decimal(1000), id="exponent-string"),
        pytest.param("-0", Decimal(0), id="minus-zero"),
    ],
)
def test_amount_values(classifier: Classifier, value: object, expected: Decimal) -> None:
    amount = classifier.classify(transfer(amount=value), agent=AGENT).amount

    assert amount is not None
    assert amount.value == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param("-5", "amount -5 of tool 'transfer' is negative", id="negative"),
        pytest.param(-0.01, "amount -0.01 of tool 'transfer' is negative", id="negative-float"),
        pytest.param("abc", "amount 'abc' of tool 'transfer' is not a decimal number", id="not-a-number"),
        pytest.param("NaN", "amount 'NaN' of tool 'transfer' is not a finite number", id="nan"),
        pytest.param("Infinity", "amount 'Infinity' of tool 'transfer' is not a finite number", id="infinity"),
        pytest.param("", "amount '' of tool 'transfer' is not a decimal number", id="empty"),
    ],
)
def test_amount_rejected(classifier: Classifier, value: object, error: str) -> None:
    with pytest.raises(ClassificationError, match=re.escape(error)):
        classifier.classify(transfer(amount=value), agent=AGENT)


def test_amount_without_unit(classifier: Classifier) -> None:
    call = ToolCall(tool="no_unit", arguments={"amount": "5"})

    with pytest.raises(ClassificationError, match="rule for tool 'no_unit' sets an amount without a unit") as caught:
        classifier.classify(call, agent=AGENT)

    assert caught.value.hint == 'add unit = "EUR" (or a template) to the rule in etlb.toml'


def test_empty_unit_rejected(classifier: Classifier) -> None:
    with pytest.raises(ClassificationError, match="has no unit"):
        classifier.classify(transfer(currency=""), agent=AGENT)


# Annotations and unknown tools


@pytest.mark.parametrize(
    ("server", "annotations", "expected"),
    [
        pytest.param("git", {"readOnlyHint": True}, Consequence.REVERSIBLE, id="trusted-hint"),
        pytest.param("notes", {"readOnlyHint": True}, Consequence.IRREVERSIBLE, id="untrusted-server"),
        pytest.param("web", {"readOnlyHint": True}, Consequence.IRREVERSIBLE, id="unlisted-server"),
        pytest.param(None, {"readOnlyHint": True}, Consequence.IRREVERSIBLE, id="no-server"),
        pytest.param("git", {"readOnlyHint": "true"}, Consequence.IRREVERSIBLE, id="string-true"),
        pytest.param("git", {"readOnlyHint": 1}, Consequence.IRREVERSIBLE, id="integer-one"),
        pytest.param("git", {"readOnlyHint": False}, Consequence.IRREVERSIBLE, id="hint-false"),
        pytest.param("git", {"destructiveHint": False}, Consequence.IRREVERSIBLE, id="other-hint"),
        pytest.param("git", None, Consequence.IRREVERSIBLE, id="no-annotations"),
    ],
)
def test_read_only_hint(
    classifier: Classifier, server: str | None, annotations: dict[str, object] | None, expected: Consequence
) -> None:
    call = ToolCall(tool="git_status", arguments={}, server=server)

    assert classifier.classify(call, agent=AGENT, annotations=annotations).consequence is expected


def test_rule_overrides_read_only_hint(classifier: Classifier) -> None:
    call = ToolCall(tool="git_commit", arguments={"repo_path": "/srv/app"}, server="git")
    action = classifier.classify(call, agent=AGENT, annotations={"readOnlyHint": True})

    assert action.consequence is Consequence.IRREVERSIBLE


def test_unknown_tool_with_server(classifier: Classifier) -> None:
    action = classifier.classify(ToolCall(tool="rm", arguments={"path": "/"}, server="shell"), agent=AGENT)

    assert action.kind == "tool.shell.rm"
    assert action.resource == "tool:shell/rm"
    assert action.consequence is Consequence.IRREVERSIBLE
    assert action.amount is None


def test_unknown_tool_without_server(classifier: Classifier) -> None:
    action = classifier.classify(ToolCall(tool="rm", arguments={"path": "/"}), agent=AGENT)

    assert action.kind == "tool.rm"
    assert action.resource == "tool:rm"
    assert action.consequence is Consequence.IRREVERSIBLE


# Call validation


def test_empty_tool_name(classifier: Classifier) -> None:
    with pytest.raises(ClassificationError, match="tool call has no tool name"):
        classifier.classify(ToolCall(tool="", arguments={}), agent=AGENT)


def test_arguments_not_object(classifier: Classifier) -> None:
    call = ToolCall(tool="rm", arguments=["/"])  # type: ignore[arg-type]

    with pytest.raises(ClassificationError, match="arguments of tool 'rm' must be a JSON object, got list"):
        classifier.classify(call, agent=AGENT)


def test_arguments_not_plain_json(classifier: Classifier) -> None:
    call = ToolCall(tool="rm", arguments={"paths": {"/tmp"}})

    with pytest.raises(ClassificationError, match="arguments of tool 'rm' are not plain JSON"):
        classifier.classify(call, agent=AGENT)


# Digests


def independent_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of sorted, compact JSON, which equals RFC 8785 for ASCII strings and small integers."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_digest_exact_value(classifier: Classifier) -> None:
    action = classifier.classify(transfer(amount="250"), agent=AGENT)
    fields = {
        "kind": "payments.transfer",
        "resource": "account:DE01",
        "consequence": "irreversible",
        "agent": AGENT,
        "server": "payments",
        "tool": "transfer",
        "arguments": {"from_account": "DE01", "amount": "250", "currency": "EUR"},
        "amount": {"value": "250", "unit": "EUR"},
    }

    assert action.digest == independent_digest(fields)


def test_digest_matches_canonical_fields(classifier: Classifier) -> None:
    action = classifier.classify(transfer(amount="250"), agent=AGENT)

    assert action.digest == independent_digest(action.canonical_fields())


def test_digest_equal_for_equal_calls(classifier: Classifier) -> None:
    first = ToolCall(
        tool="transfer", arguments={"from_account": "DE01", "amount": "5", "currency": "EUR"}, server="payments"
    )
    second = ToolCall(
        tool="transfer", arguments={"currency": "EUR", "amount": "5", "from_account": "DE01"}, server="payments"
    )

    assert classifier.classify(first, agent=AGENT).digest == classifier.classify(second, agent=AGENT).digest


def test_digest_changes_with_argument(classifier: Classifier) -> None:
    first = classifier.classify(transfer(amount="250"), agent=AGENT)
    second = classifier.classify(transfer(amount="251"), agent=AGENT)

    assert first.digest != second.digest


def test_digest_changes_with_unused_argument(classifier: Classifier) -> None:
    first = classifier.classify(transfer(memo="rent"), agent=AGENT)
    second = classifier.classify(transfer(memo="rent!"), agent=AGENT)

    assert first.digest != second.digest


def test_digest_changes_with_agent(classifier: Classifier) -> None:
    first = classifier.classify(transfer(), agent="bot-1")
    second = classifier.classify(transfer(), agent="bot-2")

    assert first.digest != second.digest


def test_digest_changes_with_server(classifier: Classifier) -> None:
    first = classifier.classify(ToolCall(tool="rm", arguments={}, server="shell"), agent=AGENT)
    second = classifier.classify(ToolCall(tool="rm", arguments={}, server="shell2"), agent=AGENT)

    assert first.digest != second.digest
