"""Word expansion and path resolution for the shell analyser.

A word from the tree-sitter-bash syntax tree becomes a `Word` whose `value` is the single string that
bash would pass to the program, or `None` with a `reason` when that string cannot be known without
running something. The expansions follow the bash manual, section "Shell Expansions":

- Quotes and backslashes are removed. Single quotes keep everything literal; in double quotes a
  backslash escapes only `$`, backquote, `"`, `\\` and newline.
- `~`, `~/…`, `~+` and `~-` expand from HOME, the working directory and OLDPWD. `~user` is unknown.
- `$NAME` and `${NAME}` expand when the variable's value is known. Unquoted, the value must not
  contain whitespace, because word splitting would turn it into several arguments.
- Command substitution, arithmetic expansion, `${…}` with an operator, special parameters such as
  `$@`, ANSI-C and locale strings, brace expansion and unquoted glob patterns are unknown.

Paths resolve lexically: `..` removes the previous component without looking at symbolic links,
because the analyser reads nothing from disk.

Windows forms: a path with a drive letter (`D:\\dir` or `D:/dir`) is a Windows path wherever it
appears. Its backslashes become `/` and the drive letter is upper-cased, so `"D:\\AI Projects\\x"` is
`D:/AI Projects/x`. When the working directory itself has a drive letter, the command is read the way
cmd.exe reads it. A backslash is then a path separator rather than an escape, double quotes only
group, `%VAR%` is unknown, and relative paths resolve against that directory.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tree_sitter import Node

__all__ = [
    "Word",
    "WordContext",
    "evaluate_word",
    "is_windows_path",
    "node_text",
    "resolve_path",
]

_DRIVE_PATH = re.compile(r"^[A-Za-z]:[\\/]")
_BRACE_EXPANSION = re.compile(r"\{[^{}]*(?:,|\.\.)[^{}]*\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^[0-9]$")

# A masked character stands for one quoted or expanded character in brace and glob checks, so that
# `"*"` or `'{a,b}'` is not mistaken for a pattern.
_MASK = "\0"

# Node types whose value depends on running something or on shell state the analyser does not track.
_UNKNOWN_NODE_REASONS = {
    "command_substitution": "command substitution",
    "process_substitution": "process substitution",
    "arithmetic_expansion": "arithmetic expansion",
    "ansi_c_string": "ANSI-C quoted string",
    "translated_string": "locale-translated string",
    "brace_expression": "brace expansion",
    "extglob_pattern": "extended glob pattern",
    "array": "array literal",
}


@dataclass(frozen=True, slots=True)
class Word:
    """One argument as the program receives it.

    `value` is None when the analyser cannot know it, and `reason` then gives the cause. `find_roots` is
    set only for the `{}` that find's `-exec` replaces with each file found: it contains the find
    starting points whose trees the placeholder ranges over.
    """

    text: str
    value: str | None
    reason: str | None = None
    find_roots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WordContext:
    """Known shell state that expansions read: variable values and the working directory."""

    variables: Mapping[str, str]
    cwd: str | None
    windows: bool


class _Unknown(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def node_text(node: Node, source: bytes) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8")


def evaluate_word(node: Node, source: bytes, context: WordContext) -> Word:
    """Expand one argument node the way bash (or cmd.exe, for a Windows working directory) would."""
    text = node_text(node, source)
    try:
        if context.windows:
            value = _windows_value(node, source, text)
        else:
            value = _posix_value(node, source, context)
    except _Unknown as unknown:
        return Word(text=text, value=None, reason=f"opaque target: {unknown.reason} in {text!r}")
    return Word(text=text, value=value)


# A segment is a run of characters with its origin. "literal" is unquoted source text, which tilde,
# brace and glob expansion apply to. "quoted" text is never expanded. "expanded" is a variable's
# value, which word splitting and globbing apply to, but not tilde or brace expansion.
_Segment = tuple[str, str]


def _posix_value(node: Node, source: bytes, context: WordContext) -> str:
    segments = _segments(node, source, context, quoted=False)

    if segments and all(origin == "expanded" for _, origin in segments) and not "".join(t for t, _ in segments):
        raise _Unknown("unquoted expansion that is empty, which removes the argument")

    segments = _expand_tilde(segments, context)

    literal_mask = "".join(text if origin == "literal" else _MASK * len(text) for text, origin in segments)
    if _BRACE_EXPANSION.search(literal_mask):
        raise _Unknown("brace expansion")

    glob_mask = "".join(text if origin != "quoted" else _MASK * len(text) for text, origin in segments)
    if _has_glob(glob_mask):
        raise _Unknown("glob pattern")

    return "".join(text for text, _ in segments)


def _has_glob(mask: str) -> bool:
    if "*" in mask or "?" in mask:
        return True
    opening = mask.find("[")
    return opening != -1 and "]" in mask[opening + 1 :]


def _segments(node: Node, source: bytes, context: WordContext, *, quoted: bool) -> list[_Segment]:
    kind = node.type
    text = node_text(node, source)

    if kind in _UNKNOWN_NODE_REASONS:
        raise _Unknown(_UNKNOWN_NODE_REASONS[kind])

    if kind == "word":
        return _unquoted_word(text)
    if kind == "number":
        return [(text, "quoted" if quoted else "literal")]
    if kind == "raw_string":
        return [(text[1:-1], "quoted")]
    if kind == "string":
        return _double_quoted(node, source, context)
    if kind in {"simple_expansion", "expansion"}:
        return [(_expand_variable(node, source, context, quoted=quoted), "quoted" if quoted else "expanded")]
    if kind == "concatenation":
        return _children_with_gaps(node, source, context)

    raise _Unknown(f"shell syntax {kind!r}")


def _children_with_gaps(node: Node, source: bytes, context: WordContext) -> list[_Segment]:
    # tree-sitter-bash leaves no gap between the parts of a concatenation, but reading gaps as
    # unquoted text keeps any that a grammar change introduces from being dropped.
    segments: list[_Segment] = []
    position = node.start_byte
    for child in node.children:
        if child.start_byte > position:
            segments.extend(_unquoted_word(source[position : child.start_byte].decode("utf-8")))
        segments.extend(_segments(child, source, context, quoted=False))
        position = child.end_byte
    if node.end_byte > position:
        segments.extend(_unquoted_word(source[position : node.end_byte].decode("utf-8")))
    return segments


def _unquoted_word(text: str) -> list[_Segment]:
    """Split an unquoted word into literal runs and backslash-escaped characters."""
    segments: list[_Segment] = []
    index = 0
    while index < len(text):
        character = text[index]
        if character == "\\" and index + 1 < len(text):
            escaped = text[index + 1]
            # A backslash before a newline is a line continuation and disappears with it.
            if escaped != "\n":
                segments.append((escaped, "quoted"))
            index += 2
            continue
        segments.append((character, "literal"))
        index += 1
    return _merge_runs(segments)


def _merge_runs(segments: list[_Segment]) -> list[_Segment]:
    merged: list[_Segment] = []
    for text, origin in segments:
        if merged and merged[-1][1] == origin:
            merged[-1] = (merged[-1][0] + text, origin)
        else:
            merged.append((text, origin))
    return merged


def _double_quoted(node: Node, source: bytes, context: WordContext) -> list[_Segment]:
    pieces: list[str] = []
    position = node.start_byte + 1
    end = node.end_byte - 1
    for child in node.children:
        if not child.is_named:
            continue
        if child.start_byte > position:
            pieces.append(_double_quoted_text(source[position : child.start_byte].decode("utf-8")))
        if child.type == "string_content":
            pieces.append(_double_quoted_text(node_text(child, source)))
        elif child.type in {"simple_expansion", "expansion"}:
            pieces.append(_expand_variable(child, source, context, quoted=True))
        elif child.type in _UNKNOWN_NODE_REASONS:
            raise _Unknown(_UNKNOWN_NODE_REASONS[child.type])
        else:
            raise _Unknown(f"shell syntax {child.type!r} inside double quotes")
        position = child.end_byte
    if end > position:
        pieces.append(_double_quoted_text(source[position:end].decode("utf-8")))
    return [("".join(pieces), "quoted")]


def _double_quoted_text(text: str) -> str:
    result: list[str] = []
    index = 0
    while index < len(text):
        character = text[index]
        if character == "\\" and index + 1 < len(text) and text[index + 1] in '$`"\\\n':
            if text[index + 1] != "\n":
                result.append(text[index + 1])
            index += 2
            continue
        result.append(character)
        index += 1
    return "".join(result)


def _expand_variable(node: Node, source: bytes, context: WordContext, *, quoted: bool) -> str:
    named = [child for child in node.children if child.is_named]
    text = node_text(node, source)

    # Only a plain `$NAME` or `${NAME}` is expanded: operators such as `${X:-…}`, `${#X}` or
    # subscripts make the value depend on rules the analyser does not model.
    if len(named) != 1 or named[0].type != "variable_name":
        raise _Unknown("parameter expansion with an operator or special parameter")
    if node.type == "expansion" and text != "${" + node_text(named[0], source) + "}":
        raise _Unknown("parameter expansion with an operator")

    name = node_text(named[0], source)
    if not _VARIABLE_NAME.match(name):
        raise _Unknown(f"special parameter ${name}")

    value = _variable_value(name, context)
    if value is None:
        raise _Unknown(f"variable ${name} whose value is unknown")
    if not quoted and any(character in value for character in " \t\n"):
        raise _Unknown(f"unquoted ${name} whose value splits into several words")
    return value


def _variable_value(name: str, context: WordContext) -> str | None:
    if name == "PWD":
        return context.cwd
    return context.variables.get(name)


def _expand_tilde(segments: list[_Segment], context: WordContext) -> list[_Segment]:
    if not segments or segments[0][1] != "literal" or not segments[0][0].startswith("~"):
        return segments

    first = segments[0][0]
    slash = first.find("/")
    if slash == -1 and len(segments) > 1:
        raise _Unknown("tilde prefix that contains quoted characters")
    prefix = first if slash == -1 else first[:slash]
    rest = "" if slash == -1 else first[slash:]

    if prefix == "~":
        home = context.variables.get("HOME")
    elif prefix == "~+":
        home = context.cwd
    elif prefix == "~-":
        home = context.variables.get("OLDPWD")
    else:
        raise _Unknown(f"home directory of user {prefix[1:]!r}")
    if home is None:
        raise _Unknown(f"tilde prefix {prefix!r} whose directory is unknown")

    return [(home, "quoted"), (rest, "literal"), *segments[1:]]


_WINDOWS_UNKNOWN = {
    "simple_expansion": "variable expansion",
    "expansion": "variable expansion",
    **_UNKNOWN_NODE_REASONS,
}


def _windows_value(node: Node, source: bytes, text: str) -> str:
    for descendant in _descendants(node):
        if descendant.type in _WINDOWS_UNKNOWN:
            raise _Unknown(_WINDOWS_UNKNOWN[descendant.type])

    if node.type == "raw_string":
        # PowerShell quoting; cmd.exe would keep the quotes, which no Windows path contains.
        value = text[1:-1]
    else:
        value = text.replace('"', "")

    if "%" in value:
        raise _Unknown("cmd.exe variable")
    if "^" in value:
        raise _Unknown("cmd.exe escape character")
    if "*" in value or "?" in value:
        raise _Unknown("wildcard")
    return value


def _descendants(node: Node) -> list[Node]:
    found: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(current.children)
    return found


def is_windows_path(value: str) -> bool:
    """Return whether `value` starts with a drive letter and a separator, as in `C:\\x` or `C:/x`."""
    return _DRIVE_PATH.match(value) is not None


def resolve_path(value: str, cwd: str | None, *, windows: bool) -> tuple[str | None, str | None]:
    """Resolve an operand to an absolute, normalised path, or return None with the reason.

    A path containing `*` or `?` is rejected even when it was quoted, because resource patterns read
    those characters as wildcards.
    """
    if "*" in value or "?" in value:
        return None, f"opaque target: path {value!r} contains a wildcard character"

    if is_windows_path(value):
        return _normalise_windows(value), None

    if windows:
        return _resolve_windows(value, cwd)

    if value.startswith("/"):
        return _normalise_posix(value), None
    if cwd is None:
        return None, f"opaque target: relative path {value!r} after a directory change that cannot be resolved"
    if is_windows_path(cwd):
        return _normalise_windows(cwd + "/" + value), None
    return _normalise_posix(posixpath.join(cwd, value)), None


def _normalise_posix(path: str) -> str:
    normalised = posixpath.normpath(path)
    # POSIX leaves a leading `//` implementation-defined; Linux treats it as `/`.
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    return normalised


def _resolve_windows(value: str, cwd: str | None) -> tuple[str | None, str | None]:
    if value.startswith(("\\\\", "//")):
        return None, f"opaque target: network path {value!r}"
    if re.match(r"^[A-Za-z]:", value):
        return None, f"opaque target: drive-relative path {value!r}"
    if cwd is None or not is_windows_path(cwd):
        return None, f"opaque target: relative Windows path {value!r} without a Windows working directory"
    if value.startswith(("\\", "/")):
        return _normalise_windows(cwd[:2] + value), None
    return _normalise_windows(cwd + "/" + value), None


def _normalise_windows(path: str) -> str:
    drive = path[0].upper() + ":"
    components: list[str] = []
    for component in path[2:].replace("\\", "/").split("/"):
        if component in {"", "."}:
            continue
        if component == "..":
            if components:
                components.pop()
            continue
        components.append(component)
    return drive + "/" + "/".join(components)
