"""Program table of the shell analyser: read-only programs, programs that write the paths they are
given, and wrappers that run another command.

`classify` is the entry point. A program is reversible only when it is in `_READ_ONLY`, or when a
classifier below finds that its arguments keep it read-only. Every other program is irreversible,
including any name this module does not list. Wrappers (`sudo`, `env`, `timeout`, `xargs`,
`find -exec`, …) return a `Delegate` for the command they run, and `bash -c`, `sh -c`, `eval` and
`trap` return a `Script` that the analyser parses again.

Paths in resources: `path:<p>` names one file or directory, and `path:<p>/**` names the tree at `<p>`
(the path itself and everything under it). A tree is named when a flag makes the command work on whole
trees (`rm -r`, `chmod -R`, `rmdir /s`, a find starting point), and for every operand that may be a
directory whose contents change: the operands of `mv`, `move`, `ren` and `del`, and the destination of
`cp`, `copy`, `ln` and `install`. The analyser cannot look at the disk to tell a file from a directory,
and naming only `path:<p>` would let a scope for that one path cover a change to everything under it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from etlb.analysis._shell_common import (
    Delegate,
    Invocation,
    Outcome,
    Script,
    Verdict,
    getopt,
    matches_option,
    path_resources,
    read_only,
    tree,
    writer,
)
from etlb.analysis._shell_tools import (
    classify_curl,
    classify_docker,
    classify_git,
    classify_kubectl,
    classify_terraform,
    classify_wget,
)
from etlb.analysis._shell_words import Word, is_windows_path, resolve_path

__all__ = ["HARMLESS_VARIABLES", "classify", "is_harmless_variable", "program_name"]

# Directories whose programs are the system's own, so `/usr/bin/rm` is classified as `rm`. A program
# run from any other path is a script or binary whose behaviour is unknown.
_SYSTEM_DIRECTORIES = frozenset({"/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin", "/usr/local/sbin"})

# Environment variables that change only how output looks. Setting any other variable for a
# program (`PATH`, `LD_PRELOAD`, `GIT_EXTERNAL_DIFF`, `PAGER`, `HOME`, …) can change what it runs.
HARMLESS_VARIABLES = frozenset(
    {"LANG", "LANGUAGE", "TZ", "COLUMNS", "LINES", "NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "TERM"}
)


def is_harmless_variable(name: str) -> bool:
    return name in HARMLESS_VARIABLES or name.startswith("LC_")


def program_name(value: str, *, windows: bool) -> tuple[str, bool]:
    """Return the name a command word is classified by, and whether it runs a program by path."""
    name = value
    if windows:
        name = name.lower()
        for suffix in (".exe", ".com", ".cmd", ".bat"):
            name = name.removesuffix(suffix)

    if "/" in name or (windows and "\\" in name):
        directory, _, base = name.replace("\\", "/").rpartition("/")
        if not windows and directory in _SYSTEM_DIRECTORIES and base:
            return base, False
        return value, True

    if name == "[":
        return "test", False
    if name == ":":
        return "true", False
    return name, False


def classify(invocation: Invocation) -> list[Outcome]:
    """Classify one program run; see the module docstring for the rules."""
    windows = invocation.windows or any(
        word.value is not None and is_windows_path(word.value) for word in invocation.words
    )
    if windows and invocation.program.lower() in _WINDOWS:
        windows_invocation = Invocation(
            program=invocation.program.lower(),
            words=invocation.words,
            cwd=invocation.cwd,
            windows=True,
            variables=invocation.variables,
        )
        return [_WINDOWS[windows_invocation.program](windows_invocation)]

    classifier = _CLASSIFIERS.get(invocation.program)
    if classifier is not None:
        return classifier(invocation)

    if invocation.program in _READ_ONLY:
        return [_read_only_program(invocation, _READ_ONLY[invocation.program])]

    if invocation.program.startswith("mkfs"):
        resources, failure = path_resources(invocation, getopt(invocation.words, "t:b:L:").operands)
        return [writer(invocation, "mkfs formats a device, erasing it", resources=resources, opaque_reason=failure)]

    return [writer(invocation, f"{invocation.program} is not in the table of read-only programs")]


def classify_by_path(invocation: Invocation) -> Verdict:
    """Classify a program run by its path, such as `./deploy.sh`, as `shell.by-path` on that path."""
    resources, failure = path_resources(invocation, [Word(text=invocation.program, value=invocation.program)])
    return writer(
        invocation,
        f"{invocation.program} is run by path, so what it does is unknown",
        resources=resources,
        opaque_reason=failure,
        kind="shell.by-path",
    )


# --- Read-only programs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ReadOnlySpec:
    """Argument rules of a read-only program.

    `operands` is "paths" (every operand is a file read), "none", or "pattern" (the first operand is a
    pattern or filter and the rest are files, unless `-e` or `-f` gives the pattern). `writing` lists
    options that make the program write a file or run another program.
    """

    operands: str = "paths"
    short_spec: str = ""
    long_values: tuple[str, ...] = ()
    writing: tuple[str, ...] = ()
    max_operands: int | None = None


_PATHS = _ReadOnlySpec()
_NO_OPERANDS = _ReadOnlySpec(operands="none")
_GREP = _ReadOnlySpec(
    operands="pattern",
    short_spec="e:f:m:A:B:C:d:D:",
    long_values=("--regexp", "--file", "--max-count", "--include", "--exclude", "--exclude-dir", "--label"),
)

_READ_ONLY: dict[str, _ReadOnlySpec] = {
    "ls": _ReadOnlySpec(short_spec="I:w:T:", long_values=("--ignore", "--hide", "--width", "--format", "--sort")),
    "cat": _PATHS,
    "head": _ReadOnlySpec(short_spec="n:c:", long_values=("--lines", "--bytes")),
    "tail": _ReadOnlySpec(short_spec="n:c:s:", long_values=("--lines", "--bytes", "--pid", "--sleep-interval")),
    "wc": _PATHS,
    "grep": _GREP,
    "egrep": _GREP,
    "fgrep": _GREP,
    # ripgrep's --pre runs a program on every file it searches.
    "rg": _ReadOnlySpec(
        operands="pattern",
        short_spec="e:f:g:t:T:m:A:B:C:j:M:",
        long_values=("--regexp", "--file", "--glob", "--type", "--type-not", "--max-count", "--pre", "--pre-glob"),
        writing=("--pre",),
    ),
    "pwd": _NO_OPERANDS,
    "echo": _NO_OPERANDS,
    "stat": _ReadOnlySpec(short_spec="c:", long_values=("--format", "--printf")),
    "du": _ReadOnlySpec(short_spec="d:B:t:X:", long_values=("--max-depth", "--exclude", "--threshold")),
    "df": _ReadOnlySpec(short_spec="B:t:x:", long_values=("--type", "--exclude-type", "--output")),
    "which": _NO_OPERANDS,
    "whereis": _NO_OPERANDS,
    "type": _NO_OPERANDS,
    # file -C compiles a magic file and writes magic.mgc.
    "file": _ReadOnlySpec(short_spec="m:F:", long_values=("--magic-file", "--separator"), writing=("-C", "--compile")),
    "basename": _ReadOnlySpec(operands="none", short_spec="s:"),
    "dirname": _NO_OPERANDS,
    "realpath": _PATHS,
    "readlink": _PATHS,
    "id": _NO_OPERANDS,
    "whoami": _NO_OPERANDS,
    "groups": _NO_OPERANDS,
    "uname": _NO_OPERANDS,
    "true": _NO_OPERANDS,
    "false": _NO_OPERANDS,
    "test": _NO_OPERANDS,
    "diff": _PATHS,
    "cmp": _PATHS,
    "comm": _PATHS,
    "md5sum": _PATHS,
    "sha1sum": _PATHS,
    "sha256sum": _PATHS,
    "sha512sum": _PATHS,
    "cksum": _PATHS,
    "cut": _ReadOnlySpec(short_spec="b:c:d:f:", long_values=("--bytes", "--characters", "--delimiter", "--fields")),
    "tr": _NO_OPERANDS,
    "nl": _PATHS,
    "column": _PATHS,
    "seq": _NO_OPERANDS,
    "sleep": _NO_OPERANDS,
    "printenv": _NO_OPERANDS,
    "jq": _ReadOnlySpec(operands="pattern", long_values=("--arg", "--argjson", "--indent")),
    # tree -o and sort -o write their output to a file; sort --compress-program runs a program.
    "tree": _ReadOnlySpec(short_spec="o:L:P:I:", writing=("-o",)),
    "sort": _ReadOnlySpec(
        short_spec="k:t:o:S:T:",
        long_values=("--key", "--field-separator", "--output", "--buffer-size", "--temporary-directory"),
        writing=("-o", "--output", "--compress-program"),
    ),
    # uniq writes its second operand.
    "uniq": _ReadOnlySpec(short_spec="f:s:w:", max_operands=1),
    "tac": _PATHS,
    "rev": _PATHS,
    "od": _PATHS,
    "hexdump": _PATHS,
    "strings": _PATHS,
    "ps": _NO_OPERANDS,
    "free": _NO_OPERANDS,
    "uptime": _NO_OPERANDS,
    "nproc": _NO_OPERANDS,
    "lscpu": _NO_OPERANDS,
    # hostname NAME and date MMDDhhmm set the host name and the clock.
    "hostname": _ReadOnlySpec(operands="none", writing=("-F", "--file", "-b", "--boot"), max_operands=0),
    "date": _ReadOnlySpec(operands="none", short_spec="d:f:r:", writing=("-s", "--set")),
    "exit": _NO_OPERANDS,
    "return": _NO_OPERANDS,
    "break": _NO_OPERANDS,
    "continue": _NO_OPERANDS,
    "wait": _NO_OPERANDS,
    "jobs": _NO_OPERANDS,
}


def _read_only_program(invocation: Invocation, spec: _ReadOnlySpec) -> Verdict:
    options = getopt(invocation.words, spec.short_spec, long_with_value=spec.long_values)
    flags = options.all_names()

    writing = next((name for name in flags for option in spec.writing if matches_option(name, option)), None)
    if writing is not None:
        written = [value for name, value in options.values if name == writing]
        files, failure = path_resources(invocation, written)
        reason = f"{invocation.program} {writing} writes a file or runs a program"
        return writer(invocation, reason, resources=files, flags=flags, opaque_reason=failure)

    operands = list(options.operands)
    if invocation.program == "date" and any(
        word.value is not None and not word.value.startswith("+") for word in operands
    ):
        return writer(invocation, "date with an operand other than +FORMAT sets the system clock", flags=flags)
    if spec.max_operands is not None and len(operands) > spec.max_operands:
        return writer(
            invocation, f"{invocation.program} with more than {spec.max_operands} operands writes", flags=flags
        )

    if spec.operands == "none":
        return read_only(invocation, flags=flags)
    if spec.operands == "pattern" and not options.has("-e", "--regexp", "-f", "--file"):
        operands = operands[1:]
    resources, _ = path_resources(invocation, operands)
    return read_only(invocation, resources=resources, flags=flags)


def _printf(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "v:", stop_at_operand=True)
    verdict = read_only(invocation, flags=options.all_names())
    if options.has("-v"):
        # printf -v assigns a shell variable instead of printing.
        return [_with(verdict, forgets_variables=True)]
    return [verdict]


def _sed(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words,
        "e:f:i::l:E",
        long_with_value=("--expression", "--file", "--line-length"),
    )
    flags = options.all_names()
    operands = list(options.operands)
    scripts = [value for name, value in options.values if matches_option(name, "--expression") or name == "-e"]
    if not scripts and operands:
        scripts = [operands.pop(0)]
    files, failure = path_resources(invocation, operands)

    if options.has("-i", "--in-place"):
        return [
            writer(invocation, "sed -i rewrites files in place", resources=files, flags=flags, opaque_reason=failure)
        ]
    if options.has("-f", "--file"):
        return [writer(invocation, "sed -f reads a script that may write files", flags=flags)]
    # GNU sed writes files only with the w and W commands (and the w flag of s), and runs commands only
    # with e (and the e flag of s). A script without those letters can do neither.
    if any(word.value is None or any(letter in word.value for letter in "wWe") for word in scripts):
        return [
            writer(invocation, "sed script may write files (w, W) or run commands (e)", resources=files, flags=flags)
        ]
    return [read_only(invocation, resources=files, flags=flags)]


def _awk(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words, "F:v:f:i:", long_with_value=("--field-separator", "--assign", "--file", "--include")
    )
    flags = options.all_names()
    operands = list(options.operands)
    if options.has("-f", "--file", "-i", "--include") or not operands:
        return [writer(invocation, "awk program read from a file may write files or run commands", flags=flags)]

    program = operands.pop(0).value
    # awk writes only through `>`, `>>` or `|` redirections and runs commands only through `|` and
    # system(); gawk loads extensions with @load. A program without those cannot do either.
    if program is None or any(marker in program for marker in (">", "|", "system", "@")):
        return [writer(invocation, "awk program may write files or run commands", flags=flags)]
    files, _ = path_resources(invocation, [word for word in operands if word.value is None or "=" not in word.value])
    return [read_only(invocation, resources=files, flags=flags)]


def _tee(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "aip")
    flags = options.all_names()
    if not options.operands:
        return [read_only(invocation, flags=flags)]
    files, failure = path_resources(invocation, options.operands)
    return [writer(invocation, "tee writes its input to files", resources=files, flags=flags, opaque_reason=failure)]


# --- Programs that write the paths they are given -----------------------------------------------


def _rm(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "")
    recursive = options.has("-r", "-R", "--recursive")
    files, failure = path_resources(invocation, options.operands, recursive=recursive)
    reason = "rm deletes files, which cannot be restored"
    return [writer(invocation, reason, resources=files, flags=options.all_names(), opaque_reason=failure)]


def _rmdir(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "")
    operands: list[Word] = list(options.operands)
    if options.has("-p", "--parents"):
        # rmdir -p a/b/c also removes a/b and a.
        for word in options.operands:
            parent = posixpath.dirname(word.value.rstrip("/")) if word.value else ""
            while parent not in {"", "/", "."}:
                operands.append(Word(text=word.text, value=parent))
                parent = posixpath.dirname(parent)
    files, failure = path_resources(invocation, operands)
    return [
        writer(
            invocation, "rmdir deletes directories", resources=files, flags=options.all_names(), opaque_reason=failure
        )
    ]


def _mv(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "t:S:", long_with_value=("--target-directory", "--suffix"))
    target = options.value_of("-t", "--target-directory")
    words = [*options.operands, *([target] if target is not None else [])]
    files, failure = path_resources(invocation, words, recursive=True)
    reason = "mv removes its sources and can overwrite its destination"
    return [writer(invocation, reason, resources=files, flags=options.all_names(), opaque_reason=failure)]


def _cp(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "t:S:", long_with_value=("--target-directory", "--suffix"))
    target = options.value_of("-t", "--target-directory")
    destination = [target] if target is not None else options.operands[-1:]
    # The destination may be a directory that receives the sources, so its tree is named.
    files, failure = path_resources(invocation, destination, recursive=True)
    reason = "cp overwrites files at its destination"
    return [writer(invocation, reason, resources=files, flags=options.all_names(), opaque_reason=failure)]


def _ln(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "t:S:", long_with_value=("--target-directory", "--suffix"))
    target = options.value_of("-t", "--target-directory")
    operands = options.operands
    if target is not None:
        files, failure = path_resources(invocation, [target], recursive=True)
    elif len(operands) == 1 and operands[0].value is not None:
        name = posixpath.basename(operands[0].value.rstrip("/"))
        files, failure = path_resources(invocation, [Word(text=operands[0].text, value=name)], recursive=True)
    else:
        files, failure = path_resources(invocation, operands[-1:], recursive=True)
    return [
        writer(
            invocation,
            "ln creates or replaces links",
            resources=files,
            flags=options.all_names(),
            opaque_reason=failure,
        )
    ]


def _paths_writer(
    reason: str, short_spec: str = "", *, skip_first: bool = False, recursive_flags: tuple[str, ...] = ()
) -> Callable[[Invocation], list[Outcome]]:
    """Build a classifier for a program that changes every operand, such as touch or chmod."""

    def classify_paths(invocation: Invocation) -> list[Outcome]:
        options = getopt(invocation.words, short_spec, long_with_value=("--reference",))
        operands = list(options.operands)
        if skip_first and not options.has("--reference") and operands:
            operands = operands[1:]
        recursive = bool(recursive_flags) and options.has(*recursive_flags)
        files, failure = path_resources(invocation, operands, recursive=recursive)
        return [writer(invocation, reason, resources=files, flags=options.all_names(), opaque_reason=failure)]

    return classify_paths


def _dd(invocation: Invocation) -> list[Outcome]:
    outputs = [
        Word(text=word.text, value=word.value.removeprefix("of="))
        for word in invocation.words
        if word.value is not None and word.value.startswith("of=")
    ]
    files, failure = path_resources(invocation, outputs)
    return [
        writer(
            invocation, "dd writes raw blocks and can overwrite whole devices", resources=files, opaque_reason=failure
        )
    ]


def _install(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words, "t:m:o:g:S:", long_with_value=("--target-directory", "--mode", "--owner", "--group")
    )
    target = options.value_of("-t", "--target-directory")
    if options.has("-d", "--directory"):
        words = options.operands
    elif target is not None:
        words = [target]
    else:
        words = options.operands[-1:]
    files, failure = path_resources(invocation, words, recursive=True)
    return [
        writer(
            invocation,
            "install copies files over their destination",
            resources=files,
            flags=options.all_names(),
            opaque_reason=failure,
        )
    ]


# --- Windows cmd.exe commands -------------------------------------------------------------------


def _windows_switches(invocation: Invocation) -> tuple[list[str], list[Word]]:
    """Split cmd.exe arguments into `/x` switches (lower-cased) and operands."""
    switches: list[str] = []
    operands: list[Word] = []
    for word in invocation.words:
        if word.value is not None and word.value.startswith("/") and not is_windows_path(word.value):
            switches.append(word.value.lower().partition(":")[0])
        else:
            operands.append(word)
    return switches, operands


def _windows_rmdir(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    files, failure = path_resources(invocation, operands, recursive="/s" in switches)
    return writer(
        invocation, f"{invocation.program} deletes directories", resources=files, flags=switches, opaque_reason=failure
    )


def _windows_del(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    # del on a directory deletes the files in it, and del /s deletes the named files in every
    # subdirectory of their directory.
    files, failure = path_resources(invocation, operands, recursive=True)
    if "/s" in switches:
        files = [
            f"path:{tree(posixpath.dirname(resource.removeprefix('path:').removesuffix('/**')))}" for resource in files
        ]
    return writer(invocation, "del deletes files", resources=files, flags=switches, opaque_reason=failure)


def _windows_move(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    files, failure = path_resources(invocation, operands, recursive=True)
    reason = "move removes its sources and can overwrite its destination"
    return writer(invocation, reason, resources=files, flags=switches, opaque_reason=failure)


def _windows_copy(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    if invocation.program == "robocopy":
        destination = operands[1:2]
    elif len(operands) >= 2:
        destination = operands[-1:]
    else:
        destination = [Word(text=".", value=".")]
    files, failure = path_resources(invocation, destination, recursive=True)
    reason = f"{invocation.program} overwrites files at its destination"
    return writer(invocation, reason, resources=files, flags=switches, opaque_reason=failure)


def _windows_rename(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    words = list(operands[:1])
    if len(operands) >= 2 and operands[0].value is not None and operands[1].value is not None:
        # The new name is a bare file name in the directory of the old one.
        directory = operands[0].value.replace("\\", "/").rpartition("/")[0]
        new_name = f"{directory}/{operands[1].value}" if directory else operands[1].value
        words.append(Word(text=operands[1].text, value=new_name))
    files, failure = path_resources(invocation, words, recursive=True)
    return writer(invocation, "ren renames files", resources=files, flags=switches, opaque_reason=failure)


def _windows_mkdir(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    files, failure = path_resources(invocation, operands)
    return writer(invocation, "mkdir creates directories", resources=files, flags=switches, opaque_reason=failure)


def _windows_read(invocation: Invocation) -> Verdict:
    switches, operands = _windows_switches(invocation)
    files, _ = path_resources(invocation, operands) if invocation.program in {"dir", "type"} else ([], None)
    return read_only(invocation, resources=files, flags=switches)


_WINDOWS: dict[str, Callable[[Invocation], Verdict]] = {
    "rmdir": _windows_rmdir,
    "rd": _windows_rmdir,
    "del": _windows_del,
    "erase": _windows_del,
    "move": _windows_move,
    "copy": _windows_copy,
    "xcopy": _windows_copy,
    "robocopy": _windows_copy,
    "ren": _windows_rename,
    "rename": _windows_rename,
    "mkdir": _windows_mkdir,
    "md": _windows_mkdir,
    "dir": _windows_read,
    "type": _windows_read,
    "where": _windows_read,
}


# --- find ---------------------------------------------------------------------------------------

# GNU findutils primaries, by how many arguments follow them.
_FIND_ONE_ARGUMENT = frozenset(
    {
        "-name",
        "-iname",
        "-path",
        "-ipath",
        "-wholename",
        "-iwholename",
        "-regex",
        "-iregex",
        "-lname",
        "-ilname",
        "-type",
        "-xtype",
        "-size",
        "-perm",
        "-user",
        "-group",
        "-uid",
        "-gid",
        "-mtime",
        "-atime",
        "-ctime",
        "-mmin",
        "-amin",
        "-cmin",
        "-newer",
        "-anewer",
        "-cnewer",
        "-used",
        "-links",
        "-inum",
        "-samefile",
        "-fstype",
        "-maxdepth",
        "-mindepth",
        "-regextype",
        "-printf",
        "-context",
        "-files0-from",
    }
)
_FIND_NO_ARGUMENT = frozenset(
    {
        "-print",
        "-print0",
        "-ls",
        "-prune",
        "-quit",
        "-true",
        "-false",
        "-depth",
        "-d",
        "-xdev",
        "-mount",
        "-noleaf",
        "-follow",
        "-daystart",
        "-warn",
        "-nowarn",
        "-ignore_readdir_race",
        "-noignore_readdir_race",
        "-readable",
        "-writable",
        "-executable",
        "-empty",
        "-nouser",
        "-nogroup",
        "-not",
        "-and",
        "-or",
        "-a",
        "-o",
        "(",
        ")",
        "!",
        ",",
    }
)
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_WRITE_FILE = {"-fprint": 1, "-fprint0": 1, "-fls": 1, "-fprintf": 2}


def _find(invocation: Invocation) -> list[Outcome]:
    words = list(invocation.words)
    flags, index = _find_options(words)

    roots: list[Word] = []
    while index < len(words):
        value = words[index].value
        if value is not None and (value.startswith("-") or value in {"(", ")", "!", ","}):
            break
        roots.append(words[index])
        index += 1
    if not roots:
        roots = [Word(text=".", value=".")]
    root_resources, root_failure = path_resources(invocation, roots, recursive=True)
    root_paths = tuple(resource.removeprefix("path:").removesuffix("/**") for resource in root_resources)

    expression = _FindExpression(flags=flags)
    expression.read(words, index, root_paths if root_failure is None else ())
    commands: list[Outcome] = [
        Delegate(words=tuple(command), wrapper=f"find {primary}", cwd=invocation.cwd)
        for primary, command in expression.commands
    ]

    files, failure = path_resources(invocation, expression.written)
    if expression.deletes:
        reason = "find -delete deletes every file it matches"
        verdict = writer(invocation, reason, resources=root_resources, flags=flags, opaque_reason=root_failure)
    elif expression.written:
        reason = "find writes its output to a file"
        verdict = writer(invocation, reason, resources=files, flags=flags, opaque_reason=failure)
    elif expression.unknown_primary is not None:
        reason = f"find primary {expression.unknown_primary!r} is not known to be read-only"
        verdict = writer(invocation, reason, resources=root_resources, flags=flags)
    else:
        verdict = read_only(invocation, resources=root_resources, flags=flags)
    return [verdict, *commands]


def _find_options(words: list[Word]) -> tuple[list[str], int]:
    """Skip the options before find's starting points: -H, -L, -P, -D debugopts and -Olevel."""
    flags: list[str] = []
    index = 0
    while index < len(words):
        value = words[index].value
        if value is None or not (value in {"-H", "-L", "-P", "-D"} or value.startswith("-O")):
            break
        flags.append(value)
        index += 2 if value == "-D" else 1
    return flags, index


@dataclass(slots=True)
class _FindExpression:
    """Effects of a find expression besides printing: the commands it runs, files it writes, -delete."""

    flags: list[str]
    commands: list[tuple[str, list[Word]]] = field(default_factory=list)
    written: list[Word] = field(default_factory=list)
    deletes: bool = False
    unknown_primary: str | None = None

    def read(self, words: list[Word], index: int, roots: tuple[str, ...]) -> None:
        while index < len(words):
            value = words[index].value
            index += 1
            if value is None:
                continue
            if value in _FIND_EXEC:
                self.flags.append(value)
                command, index = _find_exec_command(words, index, roots)
                if command:
                    self.commands.append((value, command))
            elif value == "-delete":
                self.flags.append(value)
                self.deletes = True
            elif value in _FIND_WRITE_FILE:
                self.flags.append(value)
                self.written.extend(words[index : index + 1])
                index += _FIND_WRITE_FILE[value]
            elif value in _FIND_ONE_ARGUMENT or (value.startswith("-newer") and len(value) == len("-newerXY")):
                index += 1
            elif value not in _FIND_NO_ARGUMENT and value.startswith("-"):
                self.unknown_primary = self.unknown_primary or value


def _find_exec_command(words: list[Word], index: int, roots: tuple[str, ...]) -> tuple[list[Word], int]:
    """Collect the command of `-exec … ;` or `-exec … {} +`, with `{}` standing for the found files."""
    command: list[Word] = []
    while index < len(words):
        word = words[index]
        index += 1
        if word.value == ";" or (word.value == "+" and command and command[-1].value == "{}"):
            return command, index
        if word.value == "{}":
            if roots:
                command.append(Word(text=word.text, value="{}", find_roots=roots))
            else:
                command.append(
                    Word(text=word.text, value=None, reason="opaque target: files found under an unresolved find root")
                )
        elif word.value is not None and "{}" in word.value:
            command.append(
                Word(
                    text=word.text,
                    value=None,
                    reason=f"opaque target: argument {word.text!r} is built from find results",
                )
            )
        else:
            command.append(word)
    # find rejects an -exec without its terminator, so nothing runs; the command is still reported.
    return command, index


# --- Wrappers that run another command ----------------------------------------------------------


def _wrapper(
    invocation: Invocation,
    short_spec: str,
    long_values: tuple[str, ...] = (),
    *,
    skip_operands: int = 0,
) -> tuple[list[str], list[tuple[str, Word]], list[Word]]:
    options = getopt(invocation.words, short_spec, long_with_value=long_values, stop_at_operand=True)
    operands = options.operands[skip_operands:]
    return options.flags, options.values, operands


def _leading_assignments(words: list[Word]) -> tuple[list[str], list[Word]]:
    names: list[str] = []
    index = 0
    while index < len(words):
        value = words[index].value
        if value is None or "=" not in value or value.startswith("="):
            break
        name = value.partition("=")[0]
        if not name.replace("_", "a").isalnum():
            break
        names.append(name)
        index += 1
    return names, words[index:]


def _sudo(invocation: Invocation) -> list[Outcome]:
    flags, values, operands = _wrapper(
        invocation,
        "g:p:r:t:T:U:u:C:D:R:h:",
        (
            "--user",
            "--group",
            "--prompt",
            "--role",
            "--type",
            "--command-timeout",
            "--other-user",
            "--close-from",
            "--chdir",
            "--chroot",
            "--host",
        ),
    )
    names = [*flags, *(name for name, _ in values)]
    if any(matches_option(name, option) for name in names for option in ("-e", "--edit")):
        files, failure = path_resources(invocation, operands)
        return [writer(invocation, "sudo -e edits files", resources=files, flags=names, opaque_reason=failure)]
    if any(matches_option(name, option) for name in names for option in ("-R", "--chroot")):
        return [
            writer(
                invocation,
                "sudo --chroot changes what every path means",
                flags=names,
                opaque_reason="opaque target: paths inside a chroot",
            )
        ]

    environment, command = _leading_assignments(operands)
    if not command:
        return [writer(invocation, "sudo without a command changes credentials or runs a shell", flags=names)]

    cwd = invocation.cwd
    directory = next((value for name, value in values if matches_option(name, "--chdir") or name == "-D"), None)
    if directory is not None:
        cwd = _directory(invocation, directory)
    elif any(matches_option(name, option) for name in names for option in ("-i", "--login")):
        cwd = None
    return [Delegate(words=tuple(command), wrapper=invocation.program, cwd=cwd, environment=tuple(environment))]


def _env(invocation: Invocation) -> list[Outcome]:
    flags, values, operands = _wrapper(
        invocation,
        "0iu:vC:S:P:",
        ("--unset", "--chdir", "--split-string", "--default-signal", "--ignore-signal", "--block-signal"),
    )
    names = [*flags, *(name for name, _ in values)]
    if any(matches_option(name, option) for name in names for option in ("-S", "--split-string", "-P")):
        return [
            writer(
                invocation,
                "env -S splits a string into a command",
                flags=names,
                opaque_reason="opaque target: command built by env -S",
            )
        ]
    environment, command = _leading_assignments(operands)
    if not command:
        return [read_only(invocation, flags=names)]
    cwd = invocation.cwd
    directory = next((value for name, value in values if matches_option(name, "--chdir") or name == "-C"), None)
    if directory is not None:
        cwd = _directory(invocation, directory)
    return [Delegate(words=tuple(command), wrapper="env", cwd=cwd, environment=tuple(environment))]


def _directory(invocation: Invocation, word: Word) -> str | None:
    if word.value is None:
        return None
    path, _ = resolve_path(word.value, invocation.cwd, windows=invocation.windows)
    return path


def _simple_wrapper(
    short_spec: str, long_values: tuple[str, ...] = (), *, skip_operands: int = 0, same_shell: bool = False
) -> Callable[[Invocation], list[Outcome]]:
    """Build a classifier for a wrapper whose command follows its options (and `skip_operands` operands)."""

    def classify_wrapper(invocation: Invocation) -> list[Outcome]:
        flags, _, operands = _wrapper(invocation, short_spec, long_values, skip_operands=skip_operands)
        if not operands:
            return [
                writer(invocation, f"{invocation.program} without a command is not known to be read-only", flags=flags)
            ]
        return [Delegate(words=tuple(operands), wrapper=invocation.program, cwd=invocation.cwd, same_shell=same_shell)]

    return classify_wrapper


def _command(invocation: Invocation) -> list[Outcome]:
    flags, _, operands = _wrapper(invocation, "")
    if "-v" in flags or "-V" in flags:
        return [read_only(invocation, flags=flags)]
    if not operands:
        return [read_only(invocation, flags=flags)]
    return [Delegate(words=tuple(operands), wrapper="command", cwd=invocation.cwd, same_shell=True)]


def _exec(invocation: Invocation) -> list[Outcome]:
    flags, _, operands = _wrapper(invocation, "a:")
    if not operands:
        # `exec` alone only applies its redirections, which the analyser adds to this part.
        return [read_only(invocation, flags=flags)]
    return [Delegate(words=tuple(operands), wrapper="exec", cwd=invocation.cwd)]


def _time(invocation: Invocation) -> list[Outcome]:
    flags, values, operands = _wrapper(invocation, "f:o:", ("--format", "--output"))
    output = next((value for name, value in values if name == "-o" or matches_option(name, "--output")), None)
    if output is not None:
        # GNU time -o writes its report to a file.
        files, failure = path_resources(invocation, [output])
        return [writer(invocation, "time -o writes a file", resources=files, flags=flags, opaque_reason=failure)]
    if not operands:
        return [read_only(invocation, flags=flags)]
    return [Delegate(words=tuple(operands), wrapper="time", cwd=invocation.cwd)]


def _ionice(invocation: Invocation) -> list[Outcome]:
    flags, values, operands = _wrapper(invocation, "c:n:p:P:u:", ("--class", "--classdata", "--pid", "--pgid", "--uid"))
    if any(name in {"-p", "-P", "-u", "--pid", "--pgid", "--uid"} for name, _ in values) or not operands:
        return [writer(invocation, "ionice changes the I/O priority of running processes", flags=flags)]
    return [Delegate(words=tuple(operands), wrapper="ionice", cwd=invocation.cwd)]


def _xargs(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words,
        "0a:d:E:e::I:i::L:l::n:oP:prs:tx",
        long_with_value=(
            "--arg-file",
            "--delimiter",
            "--max-lines",
            "--max-args",
            "--max-procs",
            "--max-chars",
            "--process-slot-var",
        ),
        stop_at_operand=True,
    )
    command = list(options.operands) or [Word(text="echo", value="echo")]
    replace = options.value_of("-I", "-i", "--replace")
    stdin_reason = "opaque target: arguments read from standard input by xargs"
    if replace is not None and replace.value:
        marker = replace.value
        command = [
            Word(text=word.text, value=None, reason=stdin_reason)
            if word.value is not None and marker in word.value
            else word
            for word in command
        ]
    else:
        command.append(Word(text="<standard input>", value=None, reason=stdin_reason))
    return [Delegate(words=tuple(command), wrapper="xargs", cwd=invocation.cwd)]


# --- Shells, eval, source and trap --------------------------------------------------------------

_SHELLS = frozenset({"bash", "sh", "dash"})


def _shell(invocation: Invocation) -> list[Outcome]:
    words = list(invocation.words)
    index = 0
    command_mode = False
    flags: list[str] = []
    while index < len(words):
        value = words[index].value
        if value is None:
            break
        if value in {"-", "--"}:
            index += 1
            break
        if value.startswith("--"):
            flags.append(value)
            index += 2 if value in {"--rcfile", "--init-file"} else 1
            continue
        if value.startswith(("-", "+")) and len(value) > 1:
            flags.append(value)
            letters = value[1:]
            command_mode = command_mode or (value.startswith("-") and "c" in letters)
            index += 1
            # -o NAME and -O NAME take the option name as the next word.
            index += sum(1 for letter in letters if letter in "oO")
            continue
        break
    operands = words[index:]

    if command_mode:
        if not operands or operands[0].value is None:
            reason = operands[0].reason if operands else "opaque target: bash -c without a command string"
            return [writer(invocation, "shell command string is unknown", flags=flags, opaque_reason=reason)]
        positional = [word.value for word in operands[1:]]
        if any(value is None for value in positional):
            return [
                writer(
                    invocation,
                    "shell arguments are unknown",
                    flags=flags,
                    opaque_reason=next(w.reason for w in operands[1:] if w.value is None),
                )
            ]
        known = tuple(value for value in positional if value is not None) or (invocation.program,)
        return [
            Script(
                text=operands[0].value,
                wrapper=f"{invocation.program} -c",
                cwd=invocation.cwd,
                positional=known,
                same_shell=False,
            )
        ]

    if operands:
        files, _ = path_resources(invocation, operands[:1])
        reason = f"opaque target: commands read from the script file {operands[0].text!r}"
        return [writer(invocation, "shell runs a script file", resources=files, flags=flags, opaque_reason=reason)]
    return [
        writer(
            invocation,
            "shell reads commands",
            flags=flags,
            opaque_reason="opaque target: commands read from standard input",
        )
    ]


def _eval(invocation: Invocation) -> list[Outcome]:
    unknown = next((word for word in invocation.words if word.value is None), None)
    if unknown is not None:
        return [writer(invocation, "eval text is unknown", opaque_reason=unknown.reason)]
    text = " ".join(str(word.value) for word in invocation.words)
    return [Script(text=text, wrapper="eval", cwd=invocation.cwd, positional=None, same_shell=True)]


def _source(invocation: Invocation) -> list[Outcome]:
    files, _ = path_resources(invocation, invocation.words[:1])
    reason = (
        f"opaque target: commands read from {invocation.words[0].text!r}"
        if invocation.words
        else "opaque target: source without a file"
    )
    return [writer(invocation, "source runs the commands in a file", resources=files, opaque_reason=reason)]


def _trap(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "", stop_at_operand=True)
    if not options.operands or options.has("-l", "-p"):
        return [read_only(invocation, flags=options.all_names())]
    action = options.operands[0]
    if action.value is None:
        return [writer(invocation, "trap action is unknown", opaque_reason=action.reason)]
    # The action runs later, when the signal arrives or the shell exits, so it is analysed now.
    return [Script(text=action.value, wrapper="trap", cwd=None, positional=None, same_shell=False)]


# --- Builtins that change the shell's state -----------------------------------------------------


def _cd(invocation: Invocation) -> list[Outcome]:
    options = getopt(invocation.words, "", stop_at_operand=True)
    flags = options.all_names()
    operands = options.operands
    if invocation.program == "popd" or (invocation.program == "pushd" and not operands):
        return [_with(read_only(invocation, flags=flags), changes_directory=True, new_cwd=None)]

    if not operands:
        target: str | None = invocation.variables.get("HOME")
    else:
        target = operands[0].value
    if target is None or target == "-" or target.startswith(("+", "-")):
        return [_with(read_only(invocation, flags=flags), changes_directory=True, new_cwd=None)]

    relative = not target.startswith(("/", ".", "~")) and not is_windows_path(target)
    if relative and invocation.variables.get("CDPATH"):
        # CDPATH makes `cd name` search other directories first.
        return [_with(read_only(invocation, flags=flags), changes_directory=True, new_cwd=None)]

    path, _ = resolve_path(target, invocation.cwd, windows=invocation.windows)
    resources = [f"path:{path}"] if path is not None else []
    return [_with(read_only(invocation, resources=resources, flags=flags), changes_directory=True, new_cwd=path)]


_SET_OPTIONS = frozenset(
    {"pipefail", "errexit", "nounset", "xtrace", "verbose", "noclobber", "noglob", "errtrace", "functrace"}
)


def _set(invocation: Invocation) -> list[Outcome]:
    values = [word.value for word in invocation.words]
    index = 0
    while index < len(values):
        value = values[index]
        if value is None or value[:1] not in {"-", "+"} or value in {"-", "--"}:
            break
        letters = value[1:]
        if any(letter not in "euxvoECTfhB" for letter in letters):
            break
        if "o" in letters:
            index += 1
            if index >= len(values) or values[index] not in _SET_OPTIONS:
                break
        index += 1
    else:
        return [read_only(invocation, flags=[value for value in values if value is not None and value[:1] in "-+"])]
    reason = "set with these arguments changes positional parameters or how later commands behave"
    return [_with(writer(invocation, reason), forgets_variables=True)]


def _assigning_builtin(invocation: Invocation) -> list[Outcome]:
    """Classify read, mapfile, readarray, getopts and shift, which only assign shell variables."""
    return [
        _with(read_only(invocation, flags=getopt(invocation.words, "a:d:n:p:t:u:").all_names()), forgets_variables=True)
    ]


def _with(verdict: Verdict, **changes: object) -> Verdict:
    fields = {name: getattr(verdict, name) for name in Verdict.__dataclass_fields__}
    fields.update(changes)
    return Verdict(**fields)


_CLASSIFIERS: dict[str, Callable[[Invocation], list[Outcome]]] = {
    "git": classify_git,
    "tofu": classify_terraform,
    "terraform": classify_terraform,
    "kubectl": classify_kubectl,
    "docker": classify_docker,
    "podman": classify_docker,
    "curl": classify_curl,
    "wget": classify_wget,
    "printf": _printf,
    "sed": _sed,
    "awk": _awk,
    "gawk": _awk,
    "mawk": _awk,
    "nawk": _awk,
    "tee": _tee,
    "rm": _rm,
    "rmdir": _rmdir,
    "mv": _mv,
    "cp": _cp,
    "ln": _ln,
    "touch": _paths_writer("touch creates files or changes their times", "d:r:t:"),
    "mkdir": _paths_writer("mkdir creates directories", "m:"),
    "truncate": _paths_writer("truncate changes the size of files, discarding data", "s:r:"),
    "shred": _paths_writer("shred overwrites files so that they cannot be recovered", "n:s:"),
    "unlink": _paths_writer("unlink deletes a file"),
    "chmod": _paths_writer("chmod changes file permissions", skip_first=True, recursive_flags=("-R", "--recursive")),
    "chown": _paths_writer("chown changes file owners", skip_first=True, recursive_flags=("-R", "--recursive")),
    "chgrp": _paths_writer("chgrp changes file groups", skip_first=True, recursive_flags=("-R", "--recursive")),
    "dd": _dd,
    "install": _install,
    "find": _find,
    "sudo": _sudo,
    "doas": _sudo,
    "env": _env,
    "nohup": _simple_wrapper(""),
    "timeout": _simple_wrapper("k:s:", ("--kill-after", "--signal"), skip_operands=1),
    "nice": _simple_wrapper("n:", ("--adjustment",)),
    "stdbuf": _simple_wrapper("i:o:e:", ("--input", "--output", "--error")),
    "time": _time,
    "builtin": _simple_wrapper("", same_shell=True),
    "command": _command,
    "exec": _exec,
    "ionice": _ionice,
    "xargs": _xargs,
    "bash": _shell,
    "sh": _shell,
    "dash": _shell,
    "eval": _eval,
    "source": _source,
    ".": _source,
    "trap": _trap,
    "cd": _cd,
    "pushd": _cd,
    "popd": _cd,
    "set": _set,
    "read": _assigning_builtin,
    "mapfile": _assigning_builtin,
    "readarray": _assigning_builtin,
    "getopts": _assigning_builtin,
    "shift": _assigning_builtin,
}
