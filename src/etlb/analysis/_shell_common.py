"""Records and helpers shared by the shell analyser's program classifiers.

A classifier receives an `Invocation`, which is the program name and its expanded argument words. It
returns a list of outcomes. A `Verdict` classifies the program itself, a `Delegate` is a command that
a wrapper such as `sudo` or `find -exec` runs, and a `Script` is text that `bash -c` or `eval` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from etlb.analysis._shell_words import Word, resolve_path
from etlb.model import Consequence

__all__ = [
    "Delegate",
    "Invocation",
    "Options",
    "Outcome",
    "Script",
    "Verdict",
    "getopt",
    "matches_option",
    "path_resources",
    "read_only",
    "tree",
    "writer",
]


@dataclass(frozen=True, slots=True)
class Invocation:
    """A program and its arguments, with the shell state that resolves them."""

    program: str
    words: tuple[Word, ...]
    cwd: str | None
    windows: bool
    variables: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classification of one program run.

    `kind` overrides the default `shell.<program>[.<subcommand>]`. `new_cwd` is set by `cd`,
    `pushd` and `popd`, with `changes_directory` true and `new_cwd` None when the target is unknown.
    `forgets_variables` marks builtins that can assign any shell variable, such as `read`.
    """

    program: str
    subcommand: str | None
    consequence: Consequence
    resources: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    reason: str | None = None
    opaque: bool = False
    kind: str | None = None
    changes_directory: bool = False
    new_cwd: str | None = None
    forgets_variables: bool = False


@dataclass(frozen=True, slots=True)
class Delegate:
    """A command line that a wrapper runs. `words[0]` is the program.

    `same_shell` is true for `command` and `builtin`, whose command can change the shell's working
    directory. `environment` names the variables the wrapper sets for the command.
    """

    words: tuple[Word, ...]
    wrapper: str
    cwd: str | None
    same_shell: bool = False
    environment: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Script:
    """Shell text that `bash -c`, `sh -c` or `eval` parses and runs.

    `positional` is `$0`, `$1`, … for `bash -c` and None for `eval`, which keeps the caller's.
    """

    text: str
    wrapper: str
    cwd: str | None
    positional: tuple[str, ...] | None
    same_shell: bool


Outcome = Verdict | Delegate | Script


@dataclass(slots=True)
class Options:
    """Arguments split by getopt rules: option names, option values and operands, in order."""

    flags: list[str] = field(default_factory=list)
    values: list[tuple[str, Word]] = field(default_factory=list)
    operands: list[Word] = field(default_factory=list)

    def value_of(self, *names: str) -> Word | None:
        """Return the last value given to any of `names` (long names match GNU abbreviations)."""
        found = None
        for name, value in self.values:
            if any(matches_option(name, candidate) for candidate in names):
                found = value
        return found

    def has(self, *names: str) -> bool:
        return any(matches_option(flag, candidate) for flag in self.all_names() for candidate in names)

    def all_names(self) -> list[str]:
        return [*self.flags, *(name for name, _ in self.values)]


def matches_option(written: str, known: str) -> bool:
    """Return whether the option `written` on the command line selects the option `known`.

    GNU getopt_long and git's parse-options accept any unambiguous prefix of a long option, so
    `--out` selects `--output`. Every prefix counts here, even an ambiguous one, which can only add
    matches.
    """
    if written == known:
        return True
    return written.startswith("--") and len(written) > 2 and known.startswith("--") and known.startswith(written)


def getopt(
    words: Sequence[Word],
    short_spec: str = "",
    *,
    long_with_value: Iterable[str] = (),
    stop_at_operand: bool = False,
    split_short: bool = True,
) -> Options:
    """Split words by POSIX getopt and GNU getopt_long rules.

    `short_spec` uses getopt's notation: `n:` takes a value, `e::` takes an optional attached value.
    GNU programs accept options after operands unless `stop_at_operand` is set, as wrappers do.
    A word whose value is unknown is kept as an operand; the caller marks the part opaque.
    """
    long_values = tuple(long_with_value)
    options = Options()
    index = 0
    while index < len(words):
        word = words[index]
        value = word.value
        index += 1

        if value is None or value == "-" or not value.startswith("-"):
            options.operands.append(word)
            if stop_at_operand:
                options.operands.extend(words[index:])
                return options
            continue

        if value == "--":
            options.operands.extend(words[index:])
            return options

        if value.startswith("--"):
            name, equals, attached = value.partition("=")
            if equals:
                options.values.append((name, Word(text=word.text, value=attached)))
            elif any(matches_option(name, known) for known in long_values) and index < len(words):
                options.values.append((name, words[index]))
                index += 1
            else:
                options.flags.append(name)
            continue

        if not split_short:
            options.flags.append(value.partition("=")[0])
            continue

        index = _short_cluster(value, word, words, index, short_spec, options)
    return options


def _short_cluster(value: str, word: Word, words: Sequence[Word], index: int, spec: str, options: Options) -> int:
    position = 1
    while position < len(value):
        letter = value[position]
        name = "-" + letter
        spec_at = spec.find(letter) if letter not in ":+" else -1
        takes = ""
        if spec_at != -1:
            takes = spec[spec_at + 1 : spec_at + 3]

        rest = value[position + 1 :]
        if takes.startswith("::"):
            if rest:
                options.values.append((name, Word(text=word.text, value=rest)))
            else:
                options.flags.append(name)
            return index
        if takes.startswith(":"):
            if rest:
                options.values.append((name, Word(text=word.text, value=rest)))
            elif index < len(words):
                options.values.append((name, words[index]))
                index += 1
            else:
                options.flags.append(name)
            return index

        options.flags.append(name)
        position += 1
    return index


def path_resources(
    invocation: Invocation, words: Iterable[Word], *, recursive: bool = False
) -> tuple[list[str], str | None]:
    """Resolve operand words to `path:` resources; return them with the first reason one failed.

    `recursive` names the tree under each path as `path:<path>/**`. The `{}` of `find -exec`
    stands for the trees under find's starting points.
    """
    resources: list[str] = []
    failure: str | None = None
    for word in words:
        if word.find_roots:
            resources.extend(f"path:{tree(root)}" for root in word.find_roots)
            continue
        if word.value is None:
            failure = failure or word.reason
            continue
        if word.value == "":
            continue
        path, reason = resolve_path(word.value, invocation.cwd, windows=invocation.windows)
        if path is None:
            failure = failure or reason
            continue
        resources.append(f"path:{tree(path)}" if recursive else f"path:{path}")
    return resources, failure


def tree(path: str) -> str:
    """Name the tree at `path`: the path itself and everything under it.

    NOTE: `etlb.patterns.glob_match` reads the `**` of such a value as two literal characters, so a
    scope pattern `path:/a/*` matches the value `path:/a/**`. The resolver must compare a tree value
    with a pattern as a tree before relying on these resources.
    """
    return path.rstrip("/") + "/**"


def read_only(
    invocation: Invocation, *, resources: Iterable[str] = (), flags: Iterable[str] = (), subcommand: str | None = None
) -> Verdict:
    return Verdict(
        program=invocation.program,
        subcommand=subcommand,
        consequence=Consequence.REVERSIBLE,
        resources=tuple(dict.fromkeys(resources)),
        flags=tuple(dict.fromkeys(flags)),
    )


def writer(
    invocation: Invocation,
    reason: str,
    *,
    resources: Iterable[str] = (),
    flags: Iterable[str] = (),
    subcommand: str | None = None,
    opaque_reason: str | None = None,
    kind: str | None = None,
) -> Verdict:
    """Build an irreversible verdict; an `opaque_reason` marks a target that could not be resolved."""
    return Verdict(
        program=invocation.program,
        subcommand=subcommand,
        consequence=Consequence.IRREVERSIBLE,
        resources=tuple(dict.fromkeys(resources)),
        flags=tuple(dict.fromkeys(flags)),
        reason=opaque_reason or reason,
        opaque=opaque_reason is not None,
        kind=kind,
    )
