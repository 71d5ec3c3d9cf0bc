"""Glob patterns for kinds, resources and agents, and the literal prefix that orders them.

`*` matches any run of characters except the field's separator, `**` matches any run including it,
and `?` matches one character other than the separator. Kinds separate with `.`, resources with `/`,
and agent ids have no separator. `fnmatch` and `wcmatch` fix the separator to `/` or to none, so this
small translation to a regular expression is written here instead.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "AGENT_SEPARATOR",
    "KIND_SEPARATOR",
    "RESOURCE_SEPARATOR",
    "glob_match",
    "is_pattern",
    "literal_prefix",
    "pattern_within",
]

KIND_SEPARATOR = "."
RESOURCE_SEPARATOR = "/"
AGENT_SEPARATOR = ""

_WILDCARDS = frozenset("*?")


def is_pattern(text: str) -> bool:
    return any(character in _WILDCARDS for character in text)


def literal_prefix(pattern: str) -> str:
    """Return the characters before the first wildcard; the whole text for a literal."""
    for index, character in enumerate(pattern):
        if character in _WILDCARDS:
            return pattern[:index]
    return pattern


def glob_match(pattern: str, value: str, separator: str) -> bool:
    return _compile(pattern, separator).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, separator: str) -> re.Pattern[str]:
    one_segment = f"[^{re.escape(separator)}]*" if separator else ".*"
    one_character = f"[^{re.escape(separator)}]" if separator else "."
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append(one_segment)
            index += 1
        elif pattern[index] == "?":
            parts.append(one_character)
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts), re.DOTALL)


def resource_covered(pattern: str, value: str) -> bool:
    """Return whether a scope's resource pattern covers a resource value.

    A value ending in `/**` is a whole tree (a recursive delete, a find root), not a name with stars:
    only a pattern that itself ends in `/**` and covers the tree's root covers it, or `**` alone.
    """
    if not value.endswith("/**"):
        return glob_match(pattern, value, RESOURCE_SEPARATOR)

    root = value[:-3]
    if pattern == "**":
        return True
    if not pattern.endswith("/**"):
        return False
    return glob_match(pattern, root, RESOURCE_SEPARATOR) or glob_match(pattern[:-3], root, RESOURCE_SEPARATOR)


def pattern_within(inner: str, outer: str, separator: str) -> bool:
    """Return whether every value `inner` matches is also matched by `outer`, for delegation checks.

    The answer is sound but not complete: True is a proof of inclusion, False means inclusion could
    not be shown this way (two different patterns for the same set can say False). Each wildcard of
    `inner` must fall under a wildcard of `outer` at least as broad: `**` under `**`; `*` under `*`
    or `**`; `?` under `?`, `*` or `**`. Without a separator `*` is as broad as `**`.
    """
    inner_tokens = _tokens(inner, separator)
    outer_tokens = _tokens(outer, separator)
    return _within(tuple(inner_tokens), tuple(outer_tokens), separator)


def _tokens(pattern: str, separator: str) -> list[str]:
    tokens: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            tokens.append("**")
            index += 2
        elif pattern[index] == "*":
            tokens.append("**" if not separator else "*")
            index += 1
        else:
            tokens.append(pattern[index])
            index += 1
    return tokens


@functools.lru_cache(maxsize=4096)
def _within(inner: tuple[str, ...], outer: tuple[str, ...], separator: str) -> bool:
    if not outer:
        return not inner
    head, rest = outer[0], outer[1:]

    if head == "**":
        # `**` absorbs any run of inner tokens, from none to all of them.
        return any(_within(inner[start:], rest, separator) for start in range(len(inner) + 1))
    if head == "*":
        # `*` absorbs a run of tokens that never stands for the separator.
        for end in range(len(inner) + 1):
            if _within(inner[end:], rest, separator):
                return True
            if end < len(inner) and (inner[end] == "**" or inner[end] == separator):
                return False
        return False
    if not inner:
        return False
    first = inner[0]
    if head == "?":
        fits = first == "?" or (first not in {"*", "**"} and first != separator)
    else:
        fits = first == head
    return fits and _within(inner[1:], rest, separator)
