"""Shell command analysis: split a command line into simple commands and classify each one.

Parser choice: tree-sitter with the tree-sitter-bash grammar (PyPI packages `tree-sitter` and
`tree-sitter-bash`). bashlex was the alternative. Its last release is from January 2023, and its
issue tracker lists constructs it rejects or mis-parses, among them `case`, `[[ … ]]`, arrays and
comments. tree-sitter-bash is maintained with the tree-sitter project, parses all of those, and marks
input it cannot parse with ERROR nodes, which this module turns into an `opaque_target` error.

Invariants, each enforced below:

- Every simple command in the input becomes at least one `CommandPart`. That includes commands in
  pipelines, lists, subshells, brace groups, control flow, function bodies, command and process
  substitutions and here-documents. It also includes commands run by `bash -c '…'`, `sh -c '…'`,
  `eval`, `trap`, `find -exec`, `xargs` and wrappers such as `sudo`, `env`, `nohup`, `timeout`,
  `nice`, `command` and `exec`. A final pass analyses any command node the walk did not reach, with
  an unknown working directory.
- A part is reversible only when its program is in the read-only table of `_shell_programs` and its
  arguments keep it read-only. Unknown programs are irreversible.
- A part whose words cannot all be expanded (command substitution, unknown variables, unquoted globs,
  …) is irreversible with `opaque=True` and a reason starting "opaque target:". An unknown word
  could expand to an option that makes a read-only program write, such as `git log --output=FILE`.
- Output redirection to a file makes a part irreversible and adds the file as a `path:` resource.
  `/dev/null`, `/dev/stdout`, `/dev/stderr` and `/dev/tty` (and `NUL` for cmd.exe) are not files.
- `cd DIR` changes the working directory for the commands that can only run after it succeeded
  (`cd DIR && …`). After a command that may or may not have changed it (`cd DIR; …`, a loop, a
  function), later relative paths are opaque.
- After an assignment to a variable that may be exported, or to PATH, IFS or another variable the
  shell itself reads, every later part is irreversible, because the variable can change what
  programs run. `HARMLESS_VARIABLES` lists the exceptions.
- Input longer than `max_length` characters or nested deeper than `MAX_NESTING` raises
  `ShellAnalysisError` with code `analysis_limit_exceeded`. Input the grammar cannot parse raises it
  with code `opaque_target`. Neither ever falls back to classifying the command as reversible.
- An empty command, or one that contains only comments, has no parts and is reversible: bash runs
  nothing for it.

The analysis reads no files and runs no programs. It trusts the host's programs and their
configuration: a repository whose own configuration makes `git status` run a program is out of scope.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

from etlb.analysis import ANALYSIS_LIMIT_EXCEEDED, OPAQUE_TARGET, ShellAnalysisError
from etlb.analysis._shell_common import Delegate, Invocation, Script, Verdict
from etlb.analysis._shell_programs import (
    HARMLESS_VARIABLES,
    classify,
    classify_by_path,
    is_harmless_variable,
    program_name,
)
from etlb.analysis._shell_words import Word, WordContext, evaluate_word, is_windows_path, node_text, resolve_path
from etlb.model import Consequence

__all__ = ["HARMLESS_VARIABLES", "MAX_NESTING", "CommandPart", "ShellAnalysis", "analyse_shell"]

# Maximum nesting of subshells, groups, control flow, substitutions and `bash -c` scripts. Deeper
# input is rejected: it would exhaust Python's recursion limit, and no agent needs it.
MAX_NESTING = 32

_LANGUAGE = Language(tree_sitter_bash.language())

# Variables that bash itself reads, so assigning them changes later commands even when not exported.
_SHELL_VARIABLES = frozenset(
    {"PATH", "IFS", "GLOBIGNORE", "BASHOPTS", "SHELLOPTS", "PS4", "BASH_XTRACEFD", "BASH_ENV", "ENV", "CDPATH"}
)

# Output targets that are not files: writing to them changes nothing that persists.
_NON_FILE_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_WINDOWS_NON_FILE_TARGETS = frozenset({"nul", "con"})

_WRITE_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>"})
_SUBSTITUTIONS = frozenset({"command_substitution", "process_substitution"})
_CONTROL_FLOW = frozenset(
    {"if_statement", "while_statement", "for_statement", "c_style_for_statement", "case_statement"}
)
_ASSIGNING_NODES = frozenset({"variable_assignment", "for_statement"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTEGER = re.compile(r"^-?[0-9]+$")
_KIND_UNSAFE = re.compile(r"[^A-Za-z0-9_+-]")


@dataclass(frozen=True, slots=True)
class CommandPart:
    """One simple command and its classification.

    `kind` is `shell.<program>` or `shell.<program>.<subcommand>`, with characters other than
    letters, digits, `_`, `+` and `-` replaced by `_`. It is `shell.by-path` for a program run by path
    and `shell.unknown` when the program name itself is unknown. `resources` are `path:`, `git-ref:`
    and `url:` strings; a `path:<dir>/**` entry names the tree at `<dir>`. `text` is the simple
    command's source, with its redirections. `wrappers` lists the commands that ran this one,
    outermost first, such as `("sudo",)` or `("find -exec",)`.
    """

    program: str
    subcommand: str | None
    kind: str
    consequence: Consequence
    resources: tuple[str, ...]
    flags: tuple[str, ...]
    opaque: bool
    reason: str | None
    text: str
    wrappers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ShellAnalysis:
    """The parts of a command line, in the order their simple commands appear."""

    parts: tuple[CommandPart, ...]

    @property
    def consequence(self) -> Consequence:
        """Irreversible if any part is; reversible for a command line with no parts."""
        if any(part.consequence is Consequence.IRREVERSIBLE for part in self.parts):
            return Consequence.IRREVERSIBLE
        return Consequence.REVERSIBLE

    @property
    def irreversible_parts(self) -> tuple[CommandPart, ...]:
        return tuple(part for part in self.parts if part.consequence is Consequence.IRREVERSIBLE)


def analyse_shell(
    command: str,
    *,
    cwd: str,
    home: str,
    environment: Mapping[str, str] | None = None,
    max_length: int = 8192,
) -> ShellAnalysis:
    """Parse a bash command line and classify every simple command in it.

    `cwd` and `home` must be absolute paths, POSIX (`/srv/app`) or Windows (`C:\\srv\\app`).
    `environment` is the environment the shell starts with. Its values expand `$NAME`, and None
    means that nothing is known about it, so any assignment may change an exported variable.
    Raises `ShellAnalysisError` for input that is too long, too deeply nested or unparseable.
    """
    if len(command) > max_length:
        message = f"shell command is {len(command)} characters long, over the analysis limit of {max_length}"
        raise ShellAnalysisError(message, ANALYSIS_LIMIT_EXCEEDED, hint="split the command into smaller tool calls")

    start_cwd = _absolute_directory(cwd, "cwd")
    home_directory = _absolute_directory(home, "home")

    variables = dict(environment or {})
    variables.setdefault("HOME", home_directory)
    exported = None if environment is None else frozenset(environment) | {"HOME"}
    state = _State(cwd=start_cwd, variables=variables, exported=exported, tainted_by=None)

    analyser = _Analyser(windows=is_windows_path(start_cwd))
    analyser.analyse_text(command, state, depth=0)
    return ShellAnalysis(parts=tuple(analyser.parts))


def _absolute_directory(path: str, name: str) -> str:
    if is_windows_path(path):
        resolved, _ = resolve_path(path, None, windows=True)
        if resolved is not None:
            return resolved
    if path.startswith("/"):
        return posixpath.normpath(path)
    message = (
        f"{name} {path!r} is not an absolute path; pass a POSIX path such as /srv/app or a Windows path such as C:\\srv"
    )
    raise ValueError(message)


@dataclass(frozen=True, slots=True)
class _State:
    """Shell state that later commands depend on.

    `cwd` is None when the working directory is unknown. `variables` contains the known values only.
    `exported` is None when any variable may be exported. `tainted_by` is the reason every later part
    is irreversible, after an assignment that can change what programs run.
    """

    cwd: str | None
    variables: Mapping[str, str]
    exported: frozenset[str] | None
    tainted_by: str | None

    def merge(self, other: _State) -> _State:
        """Return the state that is true whichever of the two actually happened."""
        variables = {name: value for name, value in self.variables.items() if other.variables.get(name) == value}
        if self.exported is None or other.exported is None:
            exported = None
        else:
            exported = self.exported | other.exported
        return _State(
            cwd=self.cwd if self.cwd == other.cwd else None,
            variables=variables,
            exported=exported,
            tainted_by=self.tainted_by or other.tainted_by,
        )

    def unknown(self) -> _State:
        """Return the state after a construct that may change the directory and any variable."""
        return _State(cwd=None, variables={}, exported=self.exported, tainted_by=self.tainted_by)


@dataclass(frozen=True, slots=True)
class _Flow:
    """The state after a statement succeeded and after it failed, which `&&` and `||` follow."""

    success: _State
    failure: _State

    @classmethod
    def same(cls, state: _State) -> _Flow:
        return cls(success=state, failure=state)

    def either(self) -> _State:
        return self.success.merge(self.failure)


@dataclass(slots=True)
class _Analyser:
    windows: bool
    parts: list[CommandPart] = field(default_factory=list)
    # Parts whose output a command substitution captures, so a redirection does not apply to them.
    captured: set[int] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    def analyse_text(self, text: str, state: _State, *, depth: int) -> _Flow:
        """Parse one command line or script string and walk its syntax tree."""
        self._check_depth(depth, text)
        try:
            source = text.encode("utf-8")
        except UnicodeEncodeError as error:
            message = f"shell command contains a character that is not valid UTF-8 at index {error.start}"
            raise ShellAnalysisError(message, OPAQUE_TARGET, hint="remove unpaired surrogate characters") from error

        tree = Parser(_LANGUAGE).parse(source)
        root = tree.root_node
        if root.has_error:
            error_node = _first_error(root)
            where = f" at byte {error_node.start_byte}" if error_node is not None else ""
            message = f"shell command could not be parsed as bash{where}: {text[:200]!r}"
            raise ShellAnalysisError(message, OPAQUE_TARGET, hint="rewrite the command in plain bash syntax")

        walk = _TreeWalk(self, source)
        flow = walk.sequence(root, state, depth)
        walk.analyse_unvisited(root, state, depth)
        return flow

    def _check_depth(self, depth: int, text: str) -> None:
        if depth > MAX_NESTING:
            message = f"shell command is nested more than {MAX_NESTING} levels deep: {text[:200]!r}"
            raise ShellAnalysisError(
                message, ANALYSIS_LIMIT_EXCEEDED, hint="flatten the subshells, substitutions and bash -c strings"
            )


def _first_error(root: Node) -> Node | None:
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            return node
        stack.extend(reversed(node.children))
    return None


class _TreeWalk:
    """A walk over one syntax tree. Statement methods take a start state and return a `_Flow`."""

    def __init__(self, analyser: _Analyser, source: bytes) -> None:
        self.analyser = analyser
        self.source = source
        self.visited: set[int] = set()

    # --- statements -----------------------------------------------------------------------------

    def statement(self, node: Node, state: _State, depth: int, display: Node | None = None) -> _Flow:
        self.analyser._check_depth(depth, node_text(node, self.source))
        kind = node.type

        if kind == "command":
            return self.simple_command(node, state, depth, display or node, [])
        if kind == "list":
            return self.command_list(node, state, depth)
        if kind == "pipeline":
            for stage in node.named_children:
                self.statement(stage, state, depth + 1)
            return _Flow.same(state)
        if kind == "subshell":
            self.sequence(node, state, depth + 1)
            return _Flow.same(state)
        if kind == "compound_statement":
            if node.children and node.children[0].type == "((":
                return _Flow.same(self.arithmetic_command(node, state, depth))
            return self.sequence(node, state, depth + 1)
        if kind == "redirected_statement":
            return self.redirected(node, state, depth)
        if kind == "negated_command":
            inner = self.sequence(node, state, depth + 1)
            return _Flow(success=inner.failure, failure=inner.success)
        if kind in {"variable_assignment", "variable_assignments"}:
            return _Flow.same(self.assignments(node, state, depth, keyword=None))
        if kind == "declaration_command":
            return _Flow.same(self.declaration(node, state, depth))
        if kind == "unset_command":
            return _Flow.same(self.unset(node, state, depth))
        if kind == "test_command":
            return _Flow.same(self.test(node, state, depth))
        if kind in _CONTROL_FLOW:
            return _Flow.same(self.control_flow(node, state, depth))
        if kind == "function_definition":
            return _Flow.same(self.function_definition(node, state, depth))
        if kind == "comment":
            return _Flow.same(state)

        self.add_part(
            CommandPart(
                program="",
                subcommand=None,
                kind="shell.unknown",
                consequence=Consequence.IRREVERSIBLE,
                resources=(),
                flags=(),
                opaque=True,
                reason=f"opaque target: shell syntax {kind!r} is not analysed",
                text=node_text(node, self.source),
            )
        )
        self.substitutions(node, state, depth)
        return _Flow.same(state.unknown())

    def sequence(self, node: Node, state: _State, depth: int) -> _Flow:
        """Walk the statements of a program, group or subshell in order."""
        flow = _Flow.same(state)
        children = node.children
        for index, child in enumerate(children):
            if not child.is_named or child.type in {"heredoc_body", "heredoc_end"}:
                continue
            following = children[index + 1] if index + 1 < len(children) else None
            start = flow.either()
            result = self.statement(child, start, depth)
            # A command ended by `&` runs in a background subshell, so it cannot change this shell.
            flow = _Flow.same(start) if following is not None and following.type == "&" else result
        return flow

    def command_list(self, node: Node, state: _State, depth: int) -> _Flow:
        # tree-sitter-bash nests `a && b || c` to the left; flattening keeps long lists from counting
        # as deep nesting.
        operands: list[Node] = []
        operators: list[str] = []
        current = node
        while current.type == "list":
            named = current.named_children
            operator = next((child.type for child in current.children if child.type in {"&&", "||"}), "&&")
            operands.insert(0, named[-1])
            operators.insert(0, operator)
            current = named[0]
        operands.insert(0, current)

        flow = self.statement(operands[0], state, depth + 1)
        for operator, operand in zip(operators, operands[1:], strict=True):
            if operator == "&&":
                right = self.statement(operand, flow.success, depth + 1)
                flow = _Flow(success=right.success, failure=flow.failure.merge(right.failure))
            else:
                right = self.statement(operand, flow.failure, depth + 1)
                flow = _Flow(success=flow.success.merge(right.success), failure=right.failure)
        return flow

    def redirected(self, node: Node, state: _State, depth: int) -> _Flow:
        body = node.child_by_field_name("body")
        redirects = node.children_by_field_name("redirect")

        # tree-sitter-bash attaches words after a redirection (`ls 2>/dev/null -la`) to it as extra
        # destinations; bash passes them to the command as arguments.
        extra_arguments: list[Node] = []
        for redirect in redirects:
            if redirect.type == "file_redirect":
                extra_arguments.extend(redirect.children_by_field_name("destination")[1:])

        start = len(self.analyser.parts)
        if body is None:
            flow = _Flow.same(state)
        elif body.type == "command":
            flow = self.simple_command(body, state, depth + 1, node, extra_arguments)
        else:
            flow = self.statement(body, state, depth + 1)
            if extra_arguments:
                self.add_part(self.opaque_part(node, "opaque target: words after a redirection of a compound command"))
        end = len(self.analyser.parts)

        writes, reads, failure = self.redirect_targets(redirects, state, depth)
        targets = [index for index in range(start, end) if index not in self.analyser.captured]
        if not targets and (writes or failure):
            self.add_part(
                CommandPart(
                    program="",
                    subcommand=None,
                    kind="shell.redirect",
                    consequence=Consequence.REVERSIBLE,
                    resources=(),
                    flags=(),
                    opaque=False,
                    reason=None,
                    text=node_text(node, self.source),
                )
            )
            targets = [len(self.analyser.parts) - 1]
        for index in targets:
            self.analyser.parts[index] = _with_redirects(self.analyser.parts[index], writes, reads, failure)

        # A here-document can swallow the rest of its line (`cat <<EOF | grep x`, `cat <<EOF && rm y`),
        # which tree-sitter-bash places inside the redirect node.
        for redirect in redirects:
            if redirect.type == "heredoc_redirect":
                for child in redirect.named_children:
                    if child.type in _STATEMENTS:
                        start_state = flow.either()
                        result = self.statement(child, start_state, depth + 1)
                        flow = _Flow.same(start_state.merge(result.either()))
        return flow

    def redirect_targets(
        self, redirects: list[Node], state: _State, depth: int
    ) -> tuple[list[str], list[str], str | None]:
        """Return the files written and read by redirections, and the first target that failed to resolve."""
        writes: list[str] = []
        reads: list[str] = []
        failure: str | None = None
        context = self.word_context(state)

        pending = list(redirects)
        while pending:
            redirect = pending.pop(0)
            self.substitutions(redirect, state, depth)
            if redirect.type == "heredoc_redirect":
                pending.extend(child for child in redirect.named_children if child.type == "file_redirect")
                continue
            if redirect.type != "file_redirect":
                continue

            operator = next((child.type for child in redirect.children if not child.is_named), "")
            destinations = redirect.children_by_field_name("destination")
            if not destinations:
                continue
            destination = destinations[0]
            if operator in {">&", "<&"} and destination.type == "number":
                continue
            word = evaluate_word(destination, self.source, context)
            if operator in {">&", "<&"} and word.value == "-":
                continue
            writing = operator in _WRITE_REDIRECTS or operator == ">&"
            if word.value is None:
                if writing:
                    failure = failure or word.reason
                continue
            if _is_non_file(word.value, windows=context.windows):
                continue
            path, reason = resolve_path(word.value, state.cwd, windows=context.windows)
            if path is None:
                if writing:
                    failure = failure or reason
                continue
            (writes if writing else reads).append(f"path:{path}")
        return writes, reads, failure

    # --- simple commands ------------------------------------------------------------------------

    def simple_command(self, node: Node, state: _State, depth: int, display: Node, extra: list[Node]) -> _Flow:
        self.visited.add(node.id)
        self.substitutions(node, state, depth)
        for argument in extra:
            self.substitutions(argument, state, depth)

        context = self.word_context(state)
        name_node = node.child_by_field_name("name")
        if name_node is None:
            return _Flow.same(self.assignments(node, state, depth, keyword=None))

        prefix = [child for child in node.named_children if child.type == "variable_assignment"]
        environment = [_assignment_name(child, self.source) for child in prefix]
        prefix_values = [
            evaluate_word(value, self.source, context) for child in prefix for value in _assignment_values(child)
        ]

        argument_nodes = sorted([*node.children_by_field_name("argument"), *extra], key=lambda child: child.start_byte)
        name_word_node = name_node.named_children[0] if name_node.named_children else name_node
        words = (
            evaluate_word(name_word_node, self.source, context),
            *(evaluate_word(argument, self.source, context) for argument in argument_nodes),
        )
        unresolved = next((word.reason for word in (*words, *prefix_values) if word.value is None), None)

        return self.run(
            words,
            state=state,
            cwd=state.cwd,
            depth=depth,
            text=node_text(display, self.source),
            wrappers=(),
            environment=tuple(environment),
            opaque_reason=unresolved,
            same_shell=True,
        )

    def run(
        self,
        words: tuple[Word, ...],
        *,
        state: _State,
        cwd: str | None,
        depth: int,
        text: str,
        wrappers: tuple[str, ...],
        environment: tuple[str, ...],
        opaque_reason: str | None,
        same_shell: bool,
    ) -> _Flow:
        """Classify one program run and whatever it runs in turn; return the shell state after it."""
        self.analyser._check_depth(depth, text)
        opaque_reason = opaque_reason or next((word.reason for word in words if word.value is None), None)
        program_word = words[0]

        if program_word.value is None:
            part = CommandPart(
                program=program_word.text,
                subcommand=None,
                kind="shell.unknown",
                consequence=Consequence.IRREVERSIBLE,
                resources=(),
                flags=(),
                opaque=True,
                reason=opaque_reason or f"opaque target: command name {program_word.text!r} is unknown",
                text=text,
                wrappers=wrappers,
            )
            self.add_part(part)
            return _Flow.same(state.unknown())

        name, by_path = program_name(program_word.value, windows=self.analyser.windows)
        invocation = Invocation(
            program=name, words=words[1:], cwd=cwd, windows=self.analyser.windows, variables=state.variables
        )

        if same_shell and not by_path and name in self.analyser.functions:
            self.add_part(
                self.finish(
                    Verdict(
                        program=name,
                        subcommand=None,
                        consequence=Consequence.IRREVERSIBLE,
                        reason=f"runs shell function {name} defined in this command; its body is analysed separately",
                        kind="shell.function",
                    ),
                    state,
                    text,
                    wrappers,
                    environment,
                    opaque_reason,
                )
            )
            return _Flow.same(state.unknown())

        outcomes = [classify_by_path(invocation)] if by_path else classify(invocation)
        flow = _Flow.same(state)
        for outcome in outcomes:
            if isinstance(outcome, Verdict):
                self.add_part(self.finish(outcome, state, text, wrappers, environment, opaque_reason))
                flow = _flow_after(outcome, state, same_shell=same_shell)
            elif isinstance(outcome, Delegate):
                inner = self.run(
                    outcome.words,
                    state=state,
                    cwd=outcome.cwd,
                    depth=depth + 1,
                    text=text,
                    wrappers=(*wrappers, outcome.wrapper),
                    environment=(*environment, *outcome.environment),
                    opaque_reason=opaque_reason,
                    same_shell=same_shell and outcome.same_shell,
                )
                if same_shell and outcome.same_shell:
                    flow = inner
            else:
                flow = self.script(outcome, state, depth, text, wrappers, opaque_reason)
        return flow

    def script(
        self, script: Script, state: _State, depth: int, text: str, wrappers: tuple[str, ...], opaque_reason: str | None
    ) -> _Flow:
        if opaque_reason is not None:
            self.add_part(self.opaque_text(text, opaque_reason, wrappers))
            return _Flow.same(state.unknown())

        if script.same_shell:
            inner_state = replace(state, cwd=script.cwd)
        elif script.positional is None:
            # A trap action runs later, when the directory and variables may differ.
            inner_state = _State(cwd=None, variables={}, exported=state.exported, tainted_by=state.tainted_by)
        else:
            inner_state = _child_shell_state(state, script)

        start = len(self.analyser.parts)
        flow = self.analyser.analyse_text(script.text, inner_state, depth=depth + 1)
        for index in range(start, len(self.analyser.parts)):
            part = self.analyser.parts[index]
            self.analyser.parts[index] = replace(part, wrappers=(*wrappers, script.wrapper, *part.wrappers))
        return flow if script.same_shell else _Flow.same(state)

    def finish(
        self,
        verdict: Verdict,
        state: _State,
        text: str,
        wrappers: tuple[str, ...],
        environment: tuple[str, ...],
        opaque_reason: str | None,
    ) -> CommandPart:
        """Turn a verdict into a part, applying unresolved words, environment assignments and taint."""
        consequence = verdict.consequence
        reason = verdict.reason
        opaque = verdict.opaque

        if opaque_reason is not None:
            consequence, reason, opaque = Consequence.IRREVERSIBLE, opaque_reason, True

        risky = next((name for name in environment if not is_harmless_variable(name)), None)
        if risky is not None and consequence is Consequence.REVERSIBLE:
            consequence = Consequence.IRREVERSIBLE
            reason = f"sets environment variable {risky} for {verdict.program}, which can change what it runs"

        if state.tainted_by is not None and consequence is Consequence.REVERSIBLE:
            consequence, reason = Consequence.IRREVERSIBLE, state.tainted_by

        return CommandPart(
            program=verdict.program,
            subcommand=verdict.subcommand,
            kind=verdict.kind or _kind(verdict.program, verdict.subcommand),
            consequence=consequence,
            resources=verdict.resources,
            flags=verdict.flags,
            opaque=opaque,
            reason=reason,
            text=text,
            wrappers=wrappers,
        )

    # --- assignments and shell state ------------------------------------------------------------

    def assignments(
        self, node: Node, state: _State, depth: int, *, keyword: str | None, export: bool = False
    ) -> _State:
        """Apply `NAME=value` assignments to the state; return the state after them."""
        self.substitutions(node, state, depth)
        context = self.word_context(state)
        variables = dict(state.variables)
        exported = state.exported
        tainted_by = state.tainted_by

        nodes = (
            [node]
            if node.type == "variable_assignment"
            else [child for child in node.named_children if child.type == "variable_assignment"]
        )
        names: list[str] = []
        for assignment in nodes:
            name = _assignment_name(assignment, self.source)
            name_node = assignment.child_by_field_name("name")
            if name_node is not None and name_node.type == "subscript":
                # An array subscript is evaluated as arithmetic, which can run commands.
                self.check_arithmetic(name_node, state, node)
            values = _assignment_values(assignment)
            word = evaluate_word(values[0], self.source, context) if len(values) == 1 else None
            # `NAME+=value` appends, and a subscripted name sets one array element, so neither
            # leaves a value the analyser tracks.
            appends = any(child.type == "+=" for child in assignment.children)
            plain = name_node is not None and name_node.type == "variable_name" and not appends
            if plain and word is not None and word.value is not None:
                variables[name] = word.value
            else:
                variables.pop(name, None)
            names.append(name)

        if export and exported is not None:
            exported = exported | set(names)
        for name in names:
            tainted_by = tainted_by or _taint(name, exported, keyword or "assignment")
        return _State(cwd=state.cwd, variables=variables, exported=exported, tainted_by=tainted_by)

    def declaration(self, node: Node, state: _State, depth: int) -> _State:
        keyword = node.children[0].type if node.children else "declare"
        context = self.word_context(state)
        flags = [
            evaluate_word(child, self.source, context).value or ""
            for child in node.named_children
            if child.type == "word" and node_text(child, self.source).startswith(("-", "+"))
        ]
        export = keyword == "export" or any("x" in flag for flag in flags if flag.startswith("-"))

        # -i makes later assignments arithmetic and -n makes a name refer to another variable,
        # so both change what later expansions mean.
        unsafe = next((flag for flag in flags if any(letter in flag for letter in "in")), None)
        if unsafe is not None:
            reason = f"{keyword} {unsafe} changes how later assignments and expansions are evaluated"
            self.add_part(
                CommandPart(
                    program=keyword,
                    subcommand=None,
                    kind=_kind(keyword, None),
                    consequence=Consequence.IRREVERSIBLE,
                    resources=(),
                    flags=tuple(flags),
                    opaque=False,
                    reason=reason,
                    text=node_text(node, self.source),
                )
            )
            return replace(state.unknown(), cwd=state.cwd)

        after = self.assignments(node, state, depth, keyword=keyword, export=export)
        bare_names = [node_text(child, self.source) for child in node.named_children if child.type == "variable_name"]
        # `local NAME` unsets the name inside a function, so its value is no longer known.
        known = {name: value for name, value in after.variables.items() if name not in bare_names}
        after = replace(after, variables=known)
        if export and bare_names and after.exported is not None:
            after = replace(after, exported=after.exported | set(bare_names))
            risky = next((name for name in bare_names if not is_harmless_variable(name)), None)
            if risky is not None and after.tainted_by is None:
                after = replace(
                    after, tainted_by=f"runs after export of {risky}, which can change what later programs run"
                )
        return after

    def unset(self, node: Node, state: _State, depth: int) -> _State:
        self.substitutions(node, state, depth)
        names = {node_text(child, self.source) for child in node.named_children}
        variables = {name: value for name, value in state.variables.items() if name not in names}
        return replace(state, variables=variables)

    # --- tests, arithmetic and control flow -----------------------------------------------------

    def test(self, node: Node, state: _State, depth: int) -> _State:
        self.visited.add(node.id)
        self.substitutions(node, state, depth)
        double = bool(node.children) and node.children[0].type == "[["
        text = node_text(node, self.source)
        reason = self.unsafe_test_operands(node, state) if double else None
        self.add_part(
            self.finish(
                Verdict(program="test", subcommand=None, consequence=Consequence.REVERSIBLE),
                state,
                text,
                (),
                (),
                reason,
            )
        )
        return state

    def unsafe_test_operands(self, node: Node, state: _State) -> str | None:
        """Return why a `[[ … ]]` arithmetic comparison could run commands, or None when it cannot.

        In `[[ a -eq b ]]` bash evaluates each operand as arithmetic, so an operand whose value is
        `x[$(cmd)]` runs cmd. `[ … ]` and `test` compare integers without arithmetic evaluation.
        """
        context = self.word_context(state)
        for expression in _descendants(node):
            operator = expression.child_by_field_name("operator")
            if expression.type == "unary_expression" and operator is not None:
                # `-v name[index]` evaluates the index as arithmetic.
                operand_text = node_text(expression, self.source)
                if node_text(operator, self.source) == "-v" and "[" in operand_text:
                    return f"opaque target: array index in {operand_text!r}, whose value could run commands"
            if expression.type != "binary_expression":
                continue
            operator = expression.child_by_field_name("operator")
            if operator is None or node_text(operator, self.source) not in {"-eq", "-ne", "-lt", "-le", "-gt", "-ge"}:
                continue
            for side in ("left", "right"):
                operand = expression.child_by_field_name(side)
                if operand is None:
                    continue
                value = evaluate_word(operand, self.source, context).value
                if value is None or not _INTEGER.match(value.strip()):
                    operand_text = node_text(operand, self.source)
                    return f"opaque target: arithmetic comparison of {operand_text!r}, whose value could run commands"
        return None

    def arithmetic_command(self, node: Node, state: _State, depth: int) -> _State:
        self.substitutions(node, state, depth)
        self.check_arithmetic(node, state, node)
        assigned = self.arithmetic_assignments(node)
        variables = {name: value for name, value in state.variables.items() if name not in assigned}
        return replace(state, variables=variables)

    def check_arithmetic(self, node: Node, state: _State, display: Node) -> None:
        """Add an irreversible part when arithmetic reads a variable whose value could run commands.

        bash evaluates a variable's value as an arithmetic expression in turn, so a value such as
        `a[$(cmd)]` runs cmd. Variables with a known integer value, and variables the same
        expression assigns, are safe.
        """
        assigned = self.arithmetic_assignments(node)
        for name in self.arithmetic_references(node):
            value = state.variables.get(name)
            if name in assigned or (value is not None and _INTEGER.match(value.strip())):
                continue
            reason = f"opaque target: arithmetic on variable {name}, whose value could run commands"
            self.add_part(
                CommandPart(
                    program="let",
                    subcommand=None,
                    kind="shell.let",
                    consequence=Consequence.IRREVERSIBLE,
                    resources=(),
                    flags=(),
                    opaque=True,
                    reason=reason,
                    text=node_text(display, self.source),
                )
            )
            return

    def arithmetic_references(self, node: Node) -> list[str]:
        names: list[str] = []
        for descendant in _descendants(node, stop=_SUBSTITUTIONS):
            if descendant.type in {"variable_name", "word"}:
                text = node_text(descendant, self.source)
                if _IDENTIFIER.match(text):
                    names.append(text)
        return names

    def arithmetic_assignments(self, node: Node) -> set[str]:
        assigned: set[str] = set()
        for descendant in _descendants(node, stop=_SUBSTITUTIONS):
            if descendant.type in {"binary_expression", "variable_assignment"}:
                operator = descendant.child_by_field_name("operator")
                left = descendant.child_by_field_name("left") or descendant.child_by_field_name("name")
                is_assignment = descendant.type == "variable_assignment" or (
                    operator is not None
                    and node_text(operator, self.source).endswith("=")
                    and node_text(operator, self.source) not in {"==", "!=", "<=", ">="}
                )
                if is_assignment and left is not None:
                    assigned.add(node_text(left, self.source))
            if descendant.type in {"postfix_expression", "unary_expression"}:
                assigned.update(
                    node_text(child, self.source)
                    for child in descendant.named_children
                    if _IDENTIFIER.match(node_text(child, self.source))
                )
        return assigned

    def control_flow(self, node: Node, state: _State, depth: int) -> _State:
        """Walk every branch and loop body from a state without what the construct may change.

        Branches may or may not run and loop bodies may run many times, so the working directory
        and any variable the construct assigns are unknown inside it and after it.
        """
        widened = self.widen(node, state)
        if node.type == "c_style_for_statement":
            self.check_arithmetic(node, widened, node)
        self.walk_children(node, widened, depth + 1)
        return widened

    def walk_children(self, node: Node, state: _State, depth: int) -> None:
        """Walk a construct's conditions and bodies; statements in one branch run in order."""
        current = state
        for child in node.named_children:
            if child.type == "do_group":
                self.walk_children(child, current, depth + 1)
            elif child.type in {"elif_clause", "else_clause", "case_item"}:
                self.walk_children(child, state, depth + 1)
            elif child.type in _STATEMENTS:
                current = self.statement(child, current, depth).either()
            else:
                self.substitutions(child, current, depth)

    def widen(self, node: Node, state: _State) -> _State:
        cwd = state.cwd
        variables = dict(state.variables)
        tainted_by = state.tainted_by
        empty = WordContext(variables={}, cwd=None, windows=self.analyser.windows)
        for descendant in _descendants(node):
            if descendant.type == "command_name" and descendant.named_children:
                name = evaluate_word(descendant.named_children[0], self.source, empty).value
                if name is None or name in _STATE_CHANGING_BUILTINS or name in self.analyser.functions:
                    cwd = None
                    variables = {}
            parent = descendant.parent
            if descendant.type == "variable_name" and parent is not None and parent.type in _ASSIGNING_NODES:
                name = node_text(descendant, self.source)
                variables.pop(name, None)
                tainted_by = tainted_by or _taint(name, state.exported, "assignment")
            arithmetic = (
                descendant.type == "compound_statement" and descendant.children and descendant.children[0].type == "(("
            )
            if descendant.type in {"declaration_command", "unset_command"} or arithmetic:
                variables = {}
        return _State(cwd=cwd, variables=variables, exported=state.exported, tainted_by=tainted_by)

    def function_definition(self, node: Node, state: _State, depth: int) -> _State:
        name_node = node.child_by_field_name("name")
        if name_node is not None:
            self.analyser.functions.add(node_text(name_node, self.source))
        body = node.child_by_field_name("body")
        if body is not None:
            # The function may be called anywhere later, so its body runs with unknown state.
            self.statement(body, state.unknown(), depth + 1)
        return state

    # --- substitutions and parts ----------------------------------------------------------------

    def substitutions(self, node: Node, state: _State, depth: int) -> None:
        """Walk the commands of every command and process substitution in `node`'s words.

        They run in a subshell before the command that contains them, with the same state, and
        their output is captured, so redirections of the outer command do not apply to them.
        """
        for substitution in _descendants(node, stop=_SUBSTITUTIONS | _STATEMENTS):
            if substitution is node or substitution.type not in _SUBSTITUTIONS or substitution.id in self.visited:
                continue
            self.visited.add(substitution.id)
            start = len(self.analyser.parts)
            self.sequence(substitution, state, depth + 1)
            self.analyser.captured.update(range(start, len(self.analyser.parts)))

    def analyse_unvisited(self, root: Node, state: _State, depth: int) -> None:
        """Analyse command nodes that the walk did not reach, with an unknown working directory."""
        unknown = state.unknown()
        for node in _descendants(root):
            if node.type in {"command", "test_command"} and node.id not in self.visited:
                self.statement(node, unknown, depth + 1)

    def word_context(self, state: _State) -> WordContext:
        return WordContext(variables=state.variables, cwd=state.cwd, windows=self.analyser.windows)

    def add_part(self, part: CommandPart) -> None:
        self.analyser.parts.append(part)

    def opaque_part(self, node: Node, reason: str) -> CommandPart:
        return self.opaque_text(node_text(node, self.source), reason, ())

    def opaque_text(self, text: str, reason: str, wrappers: tuple[str, ...]) -> CommandPart:
        return CommandPart(
            program="",
            subcommand=None,
            kind="shell.unknown",
            consequence=Consequence.IRREVERSIBLE,
            resources=(),
            flags=(),
            opaque=True,
            reason=reason,
            text=text,
            wrappers=wrappers,
        )


_STATEMENTS = frozenset(
    {
        "command",
        "list",
        "pipeline",
        "subshell",
        "compound_statement",
        "redirected_statement",
        "negated_command",
        "variable_assignment",
        "variable_assignments",
        "declaration_command",
        "unset_command",
        "test_command",
        "function_definition",
        *_CONTROL_FLOW,
    }
)

# Builtins after which the working directory or any variable may have changed.
_STATE_CHANGING_BUILTINS = frozenset(
    {
        "cd",
        "pushd",
        "popd",
        "eval",
        "source",
        ".",
        "read",
        "mapfile",
        "readarray",
        "getopts",
        "shift",
        "set",
        "let",
        "printf",
        "builtin",
        "command",
    }
)


def _descendants(node: Node, *, stop: frozenset[str] = frozenset()) -> Iterator[Node]:
    """Yield `node` and its descendants in document order, not descending below `stop` node types."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if current is node or current.type not in stop:
            stack.extend(reversed(current.children))


def _assignment_name(node: Node, source: bytes) -> str:
    name = node.child_by_field_name("name")
    if name is None:
        return ""
    if name.type == "subscript":
        inner = name.child_by_field_name("name")
        return node_text(inner, source) if inner is not None else node_text(name, source)
    return node_text(name, source)


def _assignment_values(node: Node) -> list[Node]:
    return node.children_by_field_name("value")


def _taint(name: str, exported: frozenset[str] | None, source: str) -> str | None:
    """Return why later parts are irreversible after `source` assigns `name`, or None if it cannot matter."""
    possibly_exported = exported is None or name in exported
    if name in _SHELL_VARIABLES or (possibly_exported and not is_harmless_variable(name)):
        return f"runs after {source} to {name}, which can change what later programs run or how the shell reads them"
    return None


def _child_shell_state(state: _State, script: Script) -> _State:
    """Return the state a `bash -c` child starts with: exported variables and its positional parameters."""
    if state.exported is None:
        variables: dict[str, str] = {}
    else:
        variables = {name: value for name, value in state.variables.items() if name in state.exported}
    for index, value in enumerate(script.positional or ()):
        variables[str(index)] = value
    return _State(cwd=script.cwd, variables=variables, exported=state.exported, tainted_by=state.tainted_by)


def _flow_after(verdict: Verdict, state: _State, *, same_shell: bool) -> _Flow:
    if not same_shell:
        return _Flow.same(state)
    after = state
    if verdict.forgets_variables:
        after = replace(after, variables={})
    if verdict.changes_directory:
        return _Flow(success=replace(after, cwd=verdict.new_cwd), failure=after)
    return _Flow.same(after)


def _with_redirects(part: CommandPart, writes: list[str], reads: list[str], failure: str | None) -> CommandPart:
    resources = tuple(dict.fromkeys((*part.resources, *writes, *reads)))
    if failure is not None:
        return replace(part, consequence=Consequence.IRREVERSIBLE, resources=resources, opaque=True, reason=failure)
    if writes:
        reason = (
            part.reason
            if part.consequence is Consequence.IRREVERSIBLE
            else "writes to a file through output redirection"
        )
        return replace(part, consequence=Consequence.IRREVERSIBLE, resources=resources, reason=reason)
    return replace(part, resources=resources)


def _is_non_file(value: str, *, windows: bool) -> bool:
    if windows and value.lower() in _WINDOWS_NON_FILE_TARGETS:
        return True
    return value in _NON_FILE_TARGETS


def _kind(program: str, subcommand: str | None) -> str:
    kind = "shell." + _KIND_UNSAFE.sub("_", program)
    if subcommand:
        kind += "." + _KIND_UNSAFE.sub("_", subcommand)
    return kind
