"""Classifiers for programs with subcommands and network clients: git, OpenTofu and Terraform,
kubectl, docker and podman, curl and wget.

Each classifier lists the subcommands that are read-only and the options that would make them write.
Every other subcommand is irreversible, and so is any subcommand after an option the classifier does
not recognise. Resources:

- git names the working tree as `path:<dir>/**`, where `<dir>` is `-C`, `--work-tree` or the working
  directory, and each pathspec as the tree `path:<pathspec>/**`. `git push` names each destination ref as
  `git-ref:<remote>/<branch>`, with the `refs/heads/` prefix removed and other refs such as
  `refs/tags/v1` written in full.
- OpenTofu and Terraform name the root module directory as `path:<dir>`.
- curl and wget name each URL as `url:<url>` and each file they write as `path:`.
- kubectl and docker name no resources, because their objects are not files.
"""

from __future__ import annotations

import re

from etlb.analysis._shell_common import (
    Invocation,
    Outcome,
    Verdict,
    getopt,
    matches_option,
    path_resources,
    read_only,
    tree,
    writer,
)
from etlb.analysis._shell_words import Word, resolve_path

__all__ = [
    "classify_curl",
    "classify_docker",
    "classify_git",
    "classify_kubectl",
    "classify_terraform",
    "classify_wget",
]

# git(1) options that come before the subcommand. `-c`, `--config-env` and `--exec-path` are
# recognised but make any subcommand irreversible, because configuration such as `core.pager` or
# `core.fsmonitor` runs programs.
_GIT_GLOBAL_WITH_VALUE = ("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env", "--attr-source")
_GIT_GLOBAL_FLAGS = frozenset(
    {
        "--no-pager",
        "-P",
        "-p",
        "--paginate",
        "--bare",
        "--no-replace-objects",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-optional-locks",
        "--no-advice",
        "--version",
        "--help",
        "-h",
    }
)

# Subcommands that only read the repository, unless an option in `_GIT_WRITING_OPTIONS` is given.
_GIT_READ_ONLY = frozenset(
    {
        "status",
        "log",
        "show",
        "diff",
        "diff-tree",
        "diff-files",
        "diff-index",
        "blame",
        "annotate",
        "shortlog",
        "describe",
        "rev-parse",
        "rev-list",
        "ls-files",
        "ls-tree",
        "ls-remote",
        "cat-file",
        "grep",
        "show-ref",
        "for-each-ref",
        "merge-base",
        "name-rev",
        "count-objects",
        "whatchanged",
        "cherry",
        "show-branch",
        "check-ignore",
        "check-attr",
        "check-ref-format",
        "verify-commit",
        "verify-tag",
        "version",
        "help",
    }
)

# Options that write a file or run a program: `--output` of the diff family, `-O` of grep (opens a
# pager command), and `--upload-pack`/`-u` of ls-remote and fetch (runs a program for the transport).
_GIT_WRITING_OPTIONS = {
    "log": ("--output",),
    "show": ("--output",),
    "diff": ("--output",),
    "diff-tree": ("--output",),
    "diff-files": ("--output",),
    "diff-index": ("--output",),
    "whatchanged": ("--output",),
    "grep": ("-O", "--open-files-in-pager"),
    "ls-remote": ("-u", "--upload-pack"),
}

# Subcommands whose operands are pathspecs; they name those paths instead of the whole working tree.
_GIT_PATHSPEC_SUBCOMMANDS = frozenset({"add", "rm", "restore", "mv", "clean", "checkout", "reset"})

_GIT_BRANCH_LISTING_FLAGS = frozenset(
    {"-a", "--all", "-r", "--remotes", "-v", "-vv", "--verbose", "-l", "--list", "--show-current", "-q", "--quiet"}
    | {"--no-color", "--color", "--column", "--no-column", "-i", "--ignore-case", "--omit-empty"}
)
_GIT_BRANCH_LISTING_VALUES = (
    "--contains",
    "--no-contains",
    "--merged",
    "--no-merged",
    "--points-at",
    "--sort",
    "--format",
    "--color",
    "--column",
    "--abbrev",
)
_GIT_TAG_LISTING_FLAGS = frozenset({"-l", "--list", "-i", "--ignore-case", "--column", "--no-column", "--omit-empty"})
_GIT_TAG_LISTING_VALUES = (
    "--contains",
    "--no-contains",
    "--merged",
    "--no-merged",
    "--points-at",
    "--sort",
    "--format",
)


def classify_git(invocation: Invocation) -> list[Outcome]:
    words = list(invocation.words)
    worktree = invocation.cwd
    global_flags: list[str] = []
    configuration: str | None = None
    index = 0

    while index < len(words):
        value = words[index].value
        if value is None or not value.startswith("-"):
            break
        name, equals, attached = value.partition("=")
        if name in _GIT_GLOBAL_WITH_VALUE:
            global_flags.append(name)
            if equals:
                argument: Word | None = Word(text=words[index].text, value=attached)
                index += 1
            else:
                argument = words[index + 1] if index + 1 < len(words) else None
                index += 2
            if name in {"-c", "--config-env"}:
                configuration = configuration or f"git {name} sets configuration, which can make git run any program"
            if name in {"-C", "--work-tree"}:
                worktree = _git_directory(argument, worktree, invocation)
            continue
        if name.startswith("--exec-path") and equals:
            global_flags.append(name)
            configuration = configuration or "git --exec-path runs git commands from another directory"
            index += 1
            continue
        if value in _GIT_GLOBAL_FLAGS:
            global_flags.append(value)
            index += 1
            continue
        reason = f"git option {value!r} before the subcommand is not recognised, so the subcommand is unknown"
        return [writer(invocation, reason, flags=[*global_flags, value])]

    if index >= len(words):
        if configuration is not None:
            return [writer(invocation, configuration, flags=global_flags)]
        # Plain `git`, `git --version` or `git --help` prints text.
        return [read_only(invocation, flags=global_flags)]

    subcommand_word = words[index]
    if subcommand_word.value is None:
        return [writer(invocation, "git subcommand is unknown", opaque_reason=subcommand_word.reason)]
    subcommand = subcommand_word.value
    rest = words[index + 1 :]
    git = _Git(invocation, subcommand, rest, worktree, global_flags)
    if configuration is not None:
        return [git.writer(configuration)]
    return [git.classify()]


def _git_directory(argument: Word | None, current: str | None, invocation: Invocation) -> str | None:
    if argument is None or argument.value is None:
        return None
    path, _ = resolve_path(argument.value, current, windows=invocation.windows)
    return path


class _Git:
    def __init__(
        self, invocation: Invocation, subcommand: str, words: list[Word], worktree: str | None, global_flags: list[str]
    ) -> None:
        self.invocation = invocation
        self.subcommand = subcommand
        self.words = words
        self.worktree = worktree
        self.options = getopt(words, "C:m:o:s:b:B:t:n:e:X:U:", long_with_value=_GIT_VALUE_OPTIONS)
        self.flags = [*global_flags, *self.options.flags, *(name for name, _ in self.options.values)]

    def classify(self) -> Verdict:
        subcommand = self.subcommand

        if subcommand in _GIT_READ_ONLY:
            writing = next(
                (
                    name
                    for name in self.flags
                    for option in _GIT_WRITING_OPTIONS.get(subcommand, ())
                    if matches_option(name, option)
                ),
                None,
            )
            if writing is None:
                return self._read_only()
            return self.writer(f"git {subcommand} {writing} writes a file or runs a program")

        handler = {
            "branch": self._branch,
            "tag": self._tag,
            "remote": self._remote,
            "config": self._config,
            "stash": self._stash,
            "worktree": self._worktree_command,
            "reflog": self._reflog,
            "fetch": self._fetch,
            "push": self._push,
            "clean": self._clean,
        }.get(subcommand)
        if handler is not None:
            return handler()

        reason = _GIT_WRITE_REASONS.get(subcommand, f"git {subcommand} is not known to be read-only")
        return self.writer(reason)

    def _worktree_resources(self) -> tuple[list[str], str | None]:
        # NOTE: the repository root can be an ancestor of the working directory, which only the disk
        # shows. A command run in a subdirectory then changes more than the tree named here.
        if self.worktree is None:
            return [], "opaque target: the repository directory cannot be resolved"
        return [f"path:{tree(self.worktree)}"], None

    def _read_only(self) -> Verdict:
        resources, _ = self._worktree_resources()
        return read_only(self.invocation, resources=resources, flags=self.flags, subcommand=self.subcommand)

    def writer(self, reason: str) -> Verdict:
        resources, failure = self._target_resources()
        return writer(
            self.invocation,
            reason,
            resources=resources,
            flags=self.flags,
            subcommand=self.subcommand,
            opaque_reason=failure,
        )

    def _target_resources(self) -> tuple[list[str], str | None]:
        if self.subcommand not in _GIT_PATHSPEC_SUBCOMMANDS:
            return self._worktree_resources()

        pathspecs = self._pathspecs()
        if not pathspecs:
            return self._worktree_resources()
        for word in pathspecs:
            if word.value is not None and word.value.startswith(":"):
                return [], f"opaque target: git pathspec magic in {word.value!r}"

        directory = Invocation(
            program=self.invocation.program,
            words=(),
            cwd=self.worktree,
            windows=self.invocation.windows,
            variables=self.invocation.variables,
        )
        # git matches a pathspec against every path under it, so each one names a tree.
        return path_resources(directory, pathspecs, recursive=True)

    def _pathspecs(self) -> list[Word]:
        words = self.words
        values = [word.value for word in words]
        if "--" in values:
            return words[values.index("--") + 1 :]
        if self.subcommand in {"checkout", "reset"}:
            # Without `--`, an operand may be a branch or a commit as well as a path, so the
            # whole working tree is named instead.
            return []
        return self.options.operands

    def _branch(self) -> Verdict:
        listing = getopt(self.words, "", long_with_value=_GIT_BRANCH_LISTING_VALUES)
        names = listing.all_names()
        only_listing = all(name in _GIT_BRANCH_LISTING_FLAGS or name in _GIT_BRANCH_LISTING_VALUES for name in names)
        if only_listing and (not listing.operands or listing.has("--list", "-l")):
            return self._read_only()
        return self.writer("git branch with a name or a change option creates, moves or deletes a branch")

    def _tag(self) -> Verdict:
        listing = getopt(self.words, "n::", long_with_value=_GIT_TAG_LISTING_VALUES)
        names = [name for name in listing.all_names() if not name.startswith("-n")]
        only_listing = all(name in _GIT_TAG_LISTING_FLAGS or name in _GIT_TAG_LISTING_VALUES for name in names)
        if only_listing and (not listing.operands or listing.has("--list", "-l")):
            return self._read_only()
        return self.writer("git tag with a name or a change option creates or deletes a tag")

    def _remote(self) -> Verdict:
        operands = [word.value for word in self.options.operands]
        if all(flag in {"-v", "--verbose"} for flag in self.options.flags) and (
            not operands or operands[0] in {"show", "get-url"}
        ):
            return self._read_only()
        return self.writer("git remote changes the repository's remotes")

    def _config(self) -> Verdict:
        reading = ("--get", "--get-all", "--get-regexp", "--get-urlmatch", "--list", "-l")
        operands = [word.value for word in self.options.operands]
        if self.options.has(*reading) or (operands and operands[0] in {"get", "list"}):
            return self._read_only()
        return self.writer("git config sets configuration, which can make git run programs")

    def _stash(self) -> Verdict:
        operands = [word.value for word in self.options.operands]
        if operands and operands[0] in {"list", "show"}:
            return self._read_only()
        return self.writer("git stash changes the working tree and the stash")

    def _worktree_command(self) -> Verdict:
        operands = [word.value for word in self.options.operands]
        if operands and operands[0] == "list":
            return self._read_only()
        return self.writer("git worktree adds, moves or removes working trees")

    def _reflog(self) -> Verdict:
        operands = [word.value for word in self.options.operands]
        if not operands or operands[0] in {"show", "exists"}:
            return self._read_only()
        return self.writer("git reflog expire and delete remove reflog entries")

    def _fetch(self) -> Verdict:
        # Decision: a plain fetch is reversible. It adds objects and moves remote-tracking refs,
        # whose earlier values the reflog keeps, and it changes no local branch and no file in the
        # working tree. Pruning, forcing, refspecs with a destination and a custom upload-pack are
        # not plain, so they are irreversible.
        changing = ("--prune", "-p", "--prune-tags", "-P", "--force", "-f", "--update-head-ok", "-u", "--upload-pack")
        changing_flag = next((flag for flag in self.flags for option in changing if matches_option(flag, option)), None)
        if changing_flag is not None:
            return self.writer(f"git fetch {changing_flag} deletes or overwrites refs, or runs a program")
        refspecs = [word.value for word in self.options.operands[1:]]
        if any(refspec is not None and ":" in refspec for refspec in refspecs):
            return self.writer("git fetch with a destination refspec overwrites local refs")
        return self._read_only()

    def _clean(self) -> Verdict:
        if self.options.has("-n", "--dry-run") and not self.options.has("-i", "--interactive"):
            return self._read_only()
        return self.writer("git clean deletes untracked files, which git cannot restore")

    def _push(self) -> Verdict:
        return _push(self)


def _push(git: _Git) -> Verdict:
    options = getopt(git.words, "o:", long_with_value=("--repo", "--push-option", "--receive-pack", "--exec"))
    flags = list(git.flags)
    invocation = git.invocation

    if options.has("-n", "--dry-run"):
        return read_only(invocation, flags=flags, subcommand="push")

    repository = options.value_of("--repo")
    operands = list(options.operands)
    remote_word = repository
    if remote_word is None and operands:
        remote_word = operands.pop(0)
    if remote_word is None:
        return _push_writer(invocation, flags, [], "opaque target: git push without a remote uses configured defaults")
    if remote_word.value is None:
        return _push_writer(invocation, flags, [], remote_word.reason)
    remote = remote_word.value

    if options.has("--all", "--branches", "--mirror", "--prune"):
        return _push_writer(invocation, flags, [f"git-ref:{remote}/**"], None)
    if options.has("--tags") and not operands:
        return _push_writer(invocation, flags, [f"git-ref:{remote}/refs/tags/**"], None)
    if not operands:
        reason = "opaque target: git push without a refspec pushes the branches that push.default selects"
        return _push_writer(invocation, flags, [], reason)

    resources: list[str] = []
    failure: str | None = None
    values = [word.value for word in operands]
    index = 0
    while index < len(values):
        refspec = values[index]
        index += 1
        if refspec is None:
            failure = failure or "opaque target: git push refspec is unknown"
            continue
        if refspec == "tag" and index < len(values) and values[index] is not None:
            resources.append(f"git-ref:{remote}/refs/tags/{values[index]}")
            index += 1
            continue
        destination, refspec_flags = _push_destination(refspec)
        flags.extend(refspec_flags)
        if destination is None:
            failure = failure or f"opaque target: git push refspec {refspec!r} does not name its destination branch"
            continue
        resources.append(f"git-ref:{remote}/{destination}")
    return _push_writer(invocation, flags, resources, failure)


_COMMIT_EXPRESSION = re.compile(r"^(?:HEAD|@|[0-9a-f]{7,40})(?:[~^].*)?$|[~^]")


def _push_destination(refspec: str) -> tuple[str | None, list[str]]:
    """Return the branch or ref a push refspec writes, and the flags the refspec itself implies."""
    flags: list[str] = []
    if refspec.startswith("+"):
        flags.append("--force")
        refspec = refspec[1:]

    source, colon, destination = refspec.partition(":")
    if colon:
        if not source:
            flags.append("--delete")
    else:
        destination = source
        if _COMMIT_EXPRESSION.search(source):
            return None, flags

    if not destination or destination in {"HEAD", "@"}:
        return None, flags
    destination = destination.removeprefix("refs/heads/")
    # A wildcard refspec such as `refs/heads/*:refs/heads/*` can match branch names with slashes.
    destination = destination.replace("*", "**")
    return destination, flags


def _push_writer(invocation: Invocation, flags: list[str], resources: list[str], failure: str | None) -> Verdict:
    return writer(
        invocation,
        "git push changes refs on a remote, which others may fetch before it could be undone",
        resources=resources,
        flags=flags,
        subcommand="push",
        opaque_reason=failure,
    )


# Values of long options that take one, so that the value is not read as a pathspec or refspec.
_GIT_VALUE_OPTIONS = (
    "--source",
    "--exclude",
    "--message",
    "--author",
    "--date",
    "--file",
    "--template",
    "--reuse-message",
    "--reedit-message",
    "--fixup",
    "--squash",
    "--onto",
    "--strategy",
    "--strategy-option",
    "--depth",
    "--shallow-since",
    "--shallow-exclude",
    "--branch",
    "--origin",
    "--reference",
    "--separate-git-dir",
    "--upstream",
    "--set-upstream-to",
    "--format",
    "--pretty",
    "--since",
    "--until",
    "--grep",
    "--max-count",
    "--skip",
    "--contains",
    "--points-at",
    "--sort",
    "--pathspec-from-file",
)

_GIT_WRITE_REASONS = {
    "pull": "git pull merges or rebases fetched commits into the current branch and working tree",
    "reset": "git reset moves the branch and, with --hard, discards uncommitted changes",
    "checkout": "git checkout replaces files in the working tree and can discard uncommitted changes",
    "restore": "git restore discards uncommitted changes in the named files",
    "switch": "git switch changes the working tree to another branch",
    "rm": "git rm deletes files from the working tree and the index",
    "mv": "git mv moves files in the working tree",
    "commit": "git commit records a new commit on the current branch",
    "merge": "git merge changes the current branch and the working tree",
    "rebase": "git rebase rewrites commits on the current branch",
    "cherry-pick": "git cherry-pick adds commits to the current branch",
    "revert": "git revert adds commits to the current branch",
    "gc": "git gc deletes unreachable objects, which the reflog can no longer recover",
    "prune": "git prune deletes unreachable objects",
    "clone": "git clone writes a new repository",
    "init": "git init writes a new repository",
    "add": "git add changes the index",
    "apply": "git apply changes files in the working tree",
    "am": "git am adds commits to the current branch",
    "submodule": "git submodule changes submodules",
}


_TERRAFORM_READ_ONLY = frozenset({"version", "validate", "show", "output", "graph", "providers"})


def classify_terraform(invocation: Invocation) -> list[Outcome]:
    """Classify OpenTofu or Terraform, whose flags are single-dash Go flags such as `-auto-approve`.

    `plan` is irreversible: it runs provider code and `external` data sources, which are programs.
    """
    words = list(invocation.words)
    directory = invocation.cwd
    index = 0
    flags: list[str] = []
    while index < len(words) and words[index].value is not None and str(words[index].value).startswith("-"):
        value = str(words[index].value)
        name, _, attached = value.partition("=")
        flags.append(name)
        if name in {"-chdir", "--chdir"}:
            directory, _ = (
                resolve_path(attached, invocation.cwd, windows=invocation.windows) if attached else (None, None)
            )
        index += 1

    subcommand = words[index].value if index < len(words) else None
    rest = words[index + 1 :]
    flags.extend(
        str(word.value).partition("=")[0] for word in rest if word.value is not None and word.value.startswith("-")
    )
    operands = [word.value for word in rest if word.value is not None and not word.value.startswith("-")]

    resources = [f"path:{directory}"] if directory is not None else []
    failure = None if directory is not None else "opaque target: the root module directory cannot be resolved"

    if subcommand is None:
        return [read_only(invocation, resources=resources, flags=flags)]

    reversible = subcommand in _TERRAFORM_READ_ONLY and not (subcommand == "providers" and operands)
    if subcommand == "fmt":
        reversible = "-check" in flags or any(word.value == "-write=false" for word in rest)
    if subcommand == "state":
        reversible = bool(operands) and operands[0] in {"list", "show", "pull"}
    if subcommand == "workspace":
        reversible = bool(operands) and operands[0] in {"list", "show"}

    if reversible:
        return [read_only(invocation, resources=resources, flags=flags, subcommand=subcommand)]
    reason = f"{invocation.program} {subcommand} can change infrastructure or state"
    if subcommand == "plan":
        reason = f"{invocation.program} plan runs provider code and external data sources, which are programs"
    return [writer(invocation, reason, resources=resources, flags=flags, subcommand=subcommand, opaque_reason=failure)]


_KUBECTL_GLOBAL_WITH_VALUE = (
    "-n",
    "--namespace",
    "--context",
    "--cluster",
    "--user",
    "--kubeconfig",
    "-s",
    "--server",
    "--token",
    "--as",
    "--as-group",
    "--as-uid",
    "--request-timeout",
    "-v",
    "--v",
    "--cache-dir",
    "--certificate-authority",
    "--client-certificate",
    "--client-key",
    "--tls-server-name",
)
_KUBECTL_GLOBAL_FLAGS = frozenset({"--insecure-skip-tls-verify", "--match-server-version", "--warnings-as-errors"})
_KUBECTL_READ_ONLY = frozenset(
    {"get", "describe", "logs", "explain", "version", "api-resources", "api-versions", "top"}
)


def classify_kubectl(invocation: Invocation) -> list[Outcome]:
    subcommand, rest, flags, unknown = _subcommand_after_options(
        invocation.words, _KUBECTL_GLOBAL_WITH_VALUE, _KUBECTL_GLOBAL_FLAGS
    )
    if unknown is not None:
        return [writer(invocation, f"kubectl option {unknown!r} before the subcommand is not recognised", flags=flags)]
    operands = [word.value for word in rest if word.value is not None and not word.value.startswith("-")]
    flags.extend(word.value.partition("=")[0] for word in rest if word.value is not None and word.value.startswith("-"))

    reversible = subcommand in _KUBECTL_READ_ONLY
    if subcommand == "cluster-info":
        reversible = "dump" not in operands
    if subcommand == "config":
        reversible = bool(operands) and operands[0] in {
            "view",
            "get-contexts",
            "current-context",
            "get-clusters",
            "get-users",
        }
    if subcommand == "auth":
        reversible = bool(operands) and operands[0] in {"can-i", "whoami"}

    if reversible or subcommand is None:
        return [read_only(invocation, flags=flags, subcommand=subcommand)]
    return [writer(invocation, f"kubectl {subcommand} can change cluster objects", flags=flags, subcommand=subcommand)]


_DOCKER_GLOBAL_WITH_VALUE = (
    "-H",
    "--host",
    "--context",
    "-c",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
)
_DOCKER_GLOBAL_FLAGS = frozenset({"--tls", "--tlsverify", "-D", "--debug"})
_DOCKER_READ_ONLY = frozenset({"ps", "images", "inspect", "logs", "version", "info", "top", "port", "history", "diff"})


def classify_docker(invocation: Invocation) -> list[Outcome]:
    subcommand, rest, flags, unknown = _subcommand_after_options(
        invocation.words, _DOCKER_GLOBAL_WITH_VALUE, _DOCKER_GLOBAL_FLAGS
    )
    program = invocation.program
    if unknown is not None:
        return [
            writer(invocation, f"{program} option {unknown!r} before the subcommand is not recognised", flags=flags)
        ]
    flags.extend(word.value.partition("=")[0] for word in rest if word.value is not None and word.value.startswith("-"))
    if subcommand is None or subcommand in _DOCKER_READ_ONLY:
        return [read_only(invocation, flags=flags, subcommand=subcommand)]
    reason = f"{program} {subcommand} can change containers, images or volumes"
    return [writer(invocation, reason, flags=flags, subcommand=subcommand)]


def _subcommand_after_options(
    words: tuple[Word, ...], with_value: tuple[str, ...], flag_options: frozenset[str]
) -> tuple[str | None, tuple[Word, ...], list[str], str | None]:
    """Skip known options before a subcommand; return the subcommand, the rest, flags and any unknown option."""
    flags: list[str] = []
    index = 0
    while index < len(words):
        value = words[index].value
        if value is None:
            return None, words[index:], flags, words[index].text
        if not value.startswith("-"):
            return value, words[index + 1 :], flags, None
        name, equals, _ = value.partition("=")
        if name in with_value:
            flags.append(name)
            index += 1 if equals else 2
            continue
        if name in flag_options:
            flags.append(name)
            index += 1
            continue
        return None, words[index:], flags, value
    return None, (), flags, None


# curl(1) options that neither send a body nor write a file. Every other option is irreversible.
_CURL_READ_FLAGS = frozenset(
    {
        "-s",
        "--silent",
        "-S",
        "--show-error",
        "-L",
        "--location",
        "-i",
        "--include",
        "-I",
        "--head",
        "-v",
        "--verbose",
        "-f",
        "--fail",
        "--fail-with-body",
        "-k",
        "--insecure",
        "--compressed",
        "-g",
        "--globoff",
        "-4",
        "-6",
        "-N",
        "--no-buffer",
        "-G",
        "--get",
        "-#",
        "--progress-bar",
        "-sS",
    }
)
_CURL_READ_VALUES = (
    "-H",
    "--header",
    "-A",
    "--user-agent",
    "-e",
    "--referer",
    "-u",
    "--user",
    "-m",
    "--max-time",
    "--connect-timeout",
    "--retry",
    "-x",
    "--proxy",
    "-X",
    "--request",
    "-w",
    "--write-out",
    "--cacert",
    "--resolve",
    "--url",
    "-r",
    "--range",
    "-b",
    "--cookie",
)
_CURL_BODY_OPTIONS = (
    "-d",
    "--data",
    "--data-raw",
    "--data-binary",
    "--data-urlencode",
    "--data-ascii",
    "--json",
    "-F",
    "--form",
)
_CURL_FILE_OPTIONS = (
    "-o",
    "--output",
    "-D",
    "--dump-header",
    "-c",
    "--cookie-jar",
    "--trace",
    "--trace-ascii",
    "--libcurl",
)
_CURL_ALL_VALUES = (
    *_CURL_READ_VALUES,
    *_CURL_BODY_OPTIONS,
    *_CURL_FILE_OPTIONS,
    "-T",
    "--upload-file",
    "-K",
    "--config",
    "--form-string",
    "--output-dir",
)


def classify_curl(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words,
        "H:A:e:u:m:x:X:w:r:b:d:F:o:D:c:T:K:",
        long_with_value=_CURL_ALL_VALUES,
    )
    flags = options.all_names()
    urls = [word.value for word in options.operands if word.value is not None]
    url_value = options.value_of("--url")
    if url_value is not None and url_value.value is not None:
        urls.append(url_value.value)
    resources = [f"url:{url}" for url in urls]

    written = [
        value for name, value in options.values if any(matches_option(name, option) for option in _CURL_FILE_OPTIONS)
    ]
    if written or options.has("-O", "--remote-name", "--remote-name-all", "-J", "--remote-header-name"):
        paths, failure = path_resources(invocation, written)
        if options.has("-O", "--remote-name", "--remote-name-all", "--output-dir"):
            failure = failure or "opaque target: curl -O names the output file after the URL"
        return [
            writer(
                invocation,
                "curl writes the response to a file",
                resources=[*resources, *paths],
                flags=flags,
                opaque_reason=failure,
            )
        ]

    method = options.value_of("-X", "--request")
    method_name = method.value.upper() if method is not None and method.value is not None else None
    sends_body = any(options.has(option) for option in (*_CURL_BODY_OPTIONS, "-T", "--upload-file", "--form-string"))
    if options.has("-K", "--config"):
        return [writer(invocation, "curl -K reads more options from a file", resources=resources, flags=flags)]
    if method_name not in {None, "GET", "HEAD"}:
        return [writer(invocation, f"curl sends an HTTP {method_name} request", resources=resources, flags=flags)]
    if sends_body and not options.has("-G", "--get"):
        return [
            writer(
                invocation, "curl sends a request body, which makes it a POST or PUT", resources=resources, flags=flags
            )
        ]

    unknown = next(
        (
            name
            for name in flags
            if name not in _CURL_READ_FLAGS
            and not any(matches_option(name, option) for option in (*_CURL_READ_VALUES, *_CURL_BODY_OPTIONS))
        ),
        None,
    )
    if unknown is not None:
        return [
            writer(
                invocation, f"curl option {unknown!r} is not known to be read-only", resources=resources, flags=flags
            )
        ]
    return [read_only(invocation, resources=resources, flags=flags)]


def classify_wget(invocation: Invocation) -> list[Outcome]:
    options = getopt(
        invocation.words,
        "O:o:a:P:e:t:T:w:U:i:",
        long_with_value=("--output-document", "--output-file", "--directory-prefix", "--input-file"),
    )
    flags = options.all_names()
    urls = [f"url:{word.value}" for word in options.operands if word.value is not None]
    if options.has("--spider"):
        return [read_only(invocation, resources=urls, flags=flags)]

    document = options.value_of("-O", "--output-document")
    if document is not None and document.value == "-":
        return [read_only(invocation, resources=urls, flags=flags)]
    if document is not None:
        paths, failure = path_resources(invocation, [document])
    else:
        prefix = options.value_of("-P", "--directory-prefix")
        directory = [prefix] if prefix is not None else [Word(text=".", value=".")]
        paths, failure = path_resources(invocation, directory, recursive=True)
    return [
        writer(
            invocation, "wget writes downloaded files", resources=[*urls, *paths], flags=flags, opaque_reason=failure
        )
    ]
