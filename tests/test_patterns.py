"""Glob patterns for kinds, resources and agents, and their literal prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etlb.patterns import (
    AGENT_SEPARATOR,
    KIND_SEPARATOR,
    RESOURCE_SEPARATOR,
    glob_match,
    is_pattern,
    literal_prefix,
    pattern_within,
)


@pytest.mark.parametrize(
    ("pattern", "value", "separator", "expected"),
    [
        pytest.param("payments.transfer", "payments.transfer", KIND_SEPARATOR, True, id="kind-literal"),
        pytest.param("payments.transfer", "payments.transfers", KIND_SEPARATOR, False, id="kind-literal-is-full-match"),
        pytest.param("payments", "payments.transfer", KIND_SEPARATOR, False, id="kind-prefix-is-not-match"),
        pytest.param("payments.*", "payments.transfer", KIND_SEPARATOR, True, id="kind-star-one-segment"),
        pytest.param("payments.*", "payments.transfer.sepa", KIND_SEPARATOR, False, id="kind-star-stops-at-dot"),
        pytest.param("payments.*", "payments.", KIND_SEPARATOR, True, id="kind-star-matches-empty"),
        pytest.param("payments.**", "payments.transfer.sepa", KIND_SEPARATOR, True, id="kind-double-star-crosses"),
        pytest.param("**", "git.commit", KIND_SEPARATOR, True, id="kind-double-star-alone"),
        pytest.param("*", "git.commit", KIND_SEPARATOR, False, id="kind-star-alone-one-segment"),
        pytest.param("*.commit", "git.commit", KIND_SEPARATOR, True, id="kind-leading-star"),
        pytest.param("git.?ommit", "git.commit", KIND_SEPARATOR, True, id="kind-question-mark"),
        pytest.param("git?commit", "git.commit", KIND_SEPARATOR, False, id="kind-question-not-dot"),
        pytest.param("payments.transfer", "paymentsXtransfer", KIND_SEPARATOR, False, id="kind-dot-is-literal"),
        pytest.param("repo:/srv/*", "repo:/srv/app", RESOURCE_SEPARATOR, True, id="resource-star"),
        pytest.param("repo:/srv/*", "repo:/srv/app/sub", RESOURCE_SEPARATOR, False, id="resource-star-stops-at-slash"),
        pytest.param("repo:/srv/**", "repo:/srv/app/sub", RESOURCE_SEPARATOR, True, id="resource-double-star"),
        pytest.param("account:*", "account:DE.01", RESOURCE_SEPARATOR, True, id="resource-star-crosses-dot"),
        pytest.param("account:[DE]*", "account:D1", RESOURCE_SEPARATOR, False, id="resource-bracket-is-literal"),
        pytest.param("account:[DE]*", "account:[DE]1", RESOURCE_SEPARATOR, True, id="resource-bracket-literal-match"),
        pytest.param("a+b", "aab", RESOURCE_SEPARATOR, False, id="resource-plus-is-literal"),
        pytest.param("*", "team/bot.7", AGENT_SEPARATOR, True, id="agent-star-matches-all"),
        pytest.param("bot-?", "bot-1", AGENT_SEPARATOR, True, id="agent-question-one-char"),
        pytest.param("bot-?", "bot-12", AGENT_SEPARATOR, False, id="agent-question-not-two"),
        pytest.param("bot-*", "bot-1/sub.task", AGENT_SEPARATOR, True, id="agent-star-no-separator"),
        pytest.param("*", "line\nbreak", AGENT_SEPARATOR, True, id="agent-star-matches-newline"),
        pytest.param("", "", AGENT_SEPARATOR, True, id="empty-matches-empty"),
        pytest.param("", "a", AGENT_SEPARATOR, False, id="empty-matches-only-empty"),
    ],
)
def test_glob_match(pattern: str, value: str, separator: str, expected: bool) -> None:
    assert glob_match(pattern, value, separator) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("payments.transfer", False),
        ("payments.*", True),
        ("bot-?", True),
        ("**", True),
        ("account:[DE]", False),
    ],
)
def test_is_pattern(text: str, expected: bool) -> None:
    assert is_pattern(text) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("payments.transfer", "payments.transfer"),
        ("payments.tr*", "payments.tr"),
        ("payments.*", "payments."),
        ("pay?ents.*", "pay"),
        ("**", ""),
        ("", ""),
    ],
)
def test_literal_prefix(pattern: str, expected: str) -> None:
    assert literal_prefix(pattern) == expected


WITHIN_CASES = [
    ("payments.transfer", "payments.*", ".", True),
    ("payments.*", "payments.*", ".", True),
    ("payments.*", "payments.**", ".", True),
    ("payments.**", "payments.*", ".", False),
    ("payments.?x", "payments.*", ".", True),
    ("payments.*", "payments.?", ".", False),
    ("payments.*", "refunds.*", ".", False),
    ("repo:/srv/app/**", "repo:/srv/**", "/", True),
    ("repo:/srv/**", "repo:/srv/app/**", "/", False),
    ("repo:/srv/*/x", "repo:/srv/*", "/", False),
    ("agent-*", "agent-*", "", True),
    ("agent-1*", "agent-*", "", True),
    ("agent-*", "agent-1*", "", False),
    ("**", "**", "/", True),
]


@pytest.mark.parametrize(("inner", "outer", "separator", "expected"), WITHIN_CASES)
def test_pattern_within_cases(inner: str, outer: str, separator: str, expected: bool) -> None:
    assert pattern_within(inner, outer, separator) is expected


_PIECES = st.sampled_from(["a", "b", ".", "/", "*", "**", "?"])


@given(
    inner=st.lists(_PIECES, max_size=6).map("".join),
    outer=st.lists(_PIECES, max_size=6).map("".join),
    value=st.text(alphabet="ab./", max_size=8),
    separator=st.sampled_from([".", "/", ""]),
)
@settings(max_examples=3000, deadline=None)
def test_pattern_within_is_sound(inner: str, outer: str, value: str, separator: str) -> None:
    # Whatever the inner pattern matches, a pattern said to contain it matches too.
    if pattern_within(inner, outer, separator) and glob_match(inner, value, separator):
        assert glob_match(outer, value, separator)
