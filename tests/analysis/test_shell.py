"""Tests of the shell analyser: a table of command forms with their exact parts, limits, errors and
a property test that joining commands never makes the result more permissive than its parts."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etlb.analysis import AnalysisError, ShellAnalysisError
from etlb.analysis.shell import MAX_NESTING, CommandPart, ShellAnalysis, analyse_shell
from etlb.errors import ClassificationError
from etlb.model import Consequence

R = Consequence.REVERSIBLE
I = Consequence.IRREVERSIBLE  # noqa: E741

CWD = "/srv/repo-a"
HOME = "/home/user-a"
ENVIRONMENT = {"HOME": HOME, "PATH": "/usr/bin:/bin"}

# One expected part: kind, consequence, resources, opaque.
Part = tuple[str, Consequence, tuple[str, ...], bool]


def summary(analysis: ShellAnalysis) -> list[Part]:
    return [(part.kind, part.consequence, part.resources, part.opaque) for part in analysis.parts]


def analyse(command: str, *, cwd: str = CWD, environment: Mapping[str, str] | None = ENVIRONMENT) -> ShellAnalysis:
    return analyse_shell(command, cwd=cwd, home=HOME, environment=environment)


def case(name: str, command: str, *parts: Part, cwd: str = CWD) -> object:
    return pytest.param(command, cwd, list(parts), id=name)


FORMS = [
    case(
        "chained-git-clean",
        "git fetch && git pull && git clean -fd",
        ("shell.git.fetch", R, ("path:/srv/repo-a/**",), False),
        ("shell.git.pull", I, ("path:/srv/repo-a/**",), False),
        ("shell.git.clean", I, ("path:/srv/repo-a/**",), False),
    ),
    case(
        "cd-then-tofu-apply",
        "cd tofu && tofu apply -auto-approve",
        ("shell.cd", R, ("path:/srv/infra-a/tofu",), False),
        ("shell.tofu.apply", I, ("path:/srv/infra-a/tofu",), False),
        cwd="/srv/infra-a",
    ),
    case("git-reset-hard", "git reset --hard HEAD~1", ("shell.git.reset", I, ("path:/srv/repo-a/**",), False)),
    case(
        "git-push-feature",
        "git push origin feature/login-form",
        ("shell.git.push", I, ("git-ref:origin/feature/login-form",), False),
    ),
    case("git-push-force", "git push --force origin main", ("shell.git.push", I, ("git-ref:origin/main",), False)),
    case(
        "git-push-refspecs",
        "git push origin main:refs/heads/prod +dev :old",
        ("shell.git.push", I, ("git-ref:origin/prod", "git-ref:origin/dev", "git-ref:origin/old"), False),
    ),
    case("git-push-no-refspec", "git push origin", ("shell.git.push", I, (), True)),
    case("git-push-head", "git push origin HEAD", ("shell.git.push", I, (), True)),
    case("git-push-dry-run", "git push -n origin main", ("shell.git.push", R, (), False)),
    case("git-fetch-prune", "git fetch --prune", ("shell.git.fetch", I, ("path:/srv/repo-a/**",), False)),
    case(
        "git-checkout-path",
        "git checkout -- src/app.py",
        ("shell.git.checkout", I, ("path:/srv/repo-a/src/app.py/**",), False),
    ),
    case("git-branch-list", "git branch -a", ("shell.git.branch", R, ("path:/srv/repo-a/**",), False)),
    case("git-branch-delete", "git branch -D old", ("shell.git.branch", I, ("path:/srv/repo-a/**",), False)),
    case("git-config-option", "git -c core.pager=evil log", ("shell.git.log", I, ("path:/srv/repo-a/**",), False)),
    case("git-log-output", "git log --outp=/tmp/x", ("shell.git.log", I, ("path:/srv/repo-a/**",), False)),
    case("git-directory-option", "git -C /srv/other status", ("shell.git.status", R, ("path:/srv/other/**",), False)),
    case(
        "rm-absolute",
        "rm -rf /home/user-a/src/project-a/services/auth",
        ("shell.rm", I, ("path:/home/user-a/src/project-a/services/auth/**",), False),
    ),
    case("rm-home-tilde", "rm -rf ~/", ("shell.rm", I, ("path:/home/user-a/**",), False)),
    case("rm-home-variable", "rm -rf $HOME/x", ("shell.rm", I, ("path:/home/user-a/x/**",), False)),
    case("rm-unknown-variable", "rm -rf $UNKNOWN/x", ("shell.rm", I, (), True)),
    case("rm-glob", "rm -rf *", ("shell.rm", I, (), True)),
    case("rm-quoted-wildcard", "rm 'a*b'", ("shell.rm", I, (), True)),
    case("rm-brace-expansion", "rm -rf {/,x}", ("shell.rm", I, (), True)),
    case("rm-dotdot", "rm ../other/./f", ("shell.rm", I, ("path:/srv/other/f",), False)),
    case(
        "rm-substitution",
        "rm $(cat list.txt)",
        ("shell.cat", R, ("path:/srv/repo-a/list.txt",), False),
        ("shell.rm", I, (), True),
    ),
    case("rm-backticks", "rm `ls`", ("shell.ls", R, (), False), ("shell.rm", I, (), True)),
    case(
        "find-exec-rm",
        "find . -name '*.tmp' -exec rm {} \\;",
        ("shell.find", R, ("path:/srv/repo-a/**",), False),
        ("shell.rm", I, ("path:/srv/repo-a/**",), False),
    ),
    case("find-delete", "find . -delete", ("shell.find", I, ("path:/srv/repo-a/**",), False)),
    case("find-unquoted-glob", "find . -name *.tmp", ("shell.find", I, ("path:/srv/repo-a/**",), True)),
    case("xargs-rm", "ls | xargs rm", ("shell.ls", R, (), False), ("shell.rm", I, (), True)),
    case("bash-c", "bash -c 'rm -rf build'", ("shell.rm", I, ("path:/srv/repo-a/build/**",), False)),
    case("sh-c-positional", "sh -c 'rm \"$1\"' _ notes.txt", ("shell.rm", I, ("path:/srv/repo-a/notes.txt",), False)),
    case("eval-string", "eval 'rm -f a.txt'", ("shell.rm", I, ("path:/srv/repo-a/a.txt",), False)),
    case("trap-action", "trap 'rm -rf /tmp/lock' EXIT", ("shell.rm", I, ("path:/tmp/lock/**",), False)),
    case("sudo-rm", "sudo rm -rf /var/log/x", ("shell.rm", I, ("path:/var/log/x/**",), False)),
    case("timeout-rm", "timeout 5 rm z", ("shell.rm", I, ("path:/srv/repo-a/z",), False)),
    case("env-rm", "env A=1 rm w", ("shell.rm", I, ("path:/srv/repo-a/w",), False)),
    case("nohup-background", "nohup rm a &", ("shell.rm", I, ("path:/srv/repo-a/a",), False)),
    case("command-prefix", "command rm a", ("shell.rm", I, ("path:/srv/repo-a/a",), False)),
    case("exec-prefix", "exec rm a", ("shell.rm", I, ("path:/srv/repo-a/a",), False)),
    case("redirect-passwd", "echo hi > /etc/passwd", ("shell.echo", I, ("path:/etc/passwd",), False)),
    case("redirect-append", "date >> log.txt", ("shell.date", I, ("path:/srv/repo-a/log.txt",), False)),
    case("redirect-devnull", "ls missing 2>/dev/null", ("shell.ls", R, ("path:/srv/repo-a/missing",), False)),
    case("redirect-unknown", 'echo hi > "$OUT"', ("shell.echo", I, (), True)),
    case("bare-redirect", "> trunc.txt", ("shell.redirect", I, ("path:/srv/repo-a/trunc.txt",), False)),
    case(
        "tee-file",
        "cat a | tee out.txt",
        ("shell.cat", R, ("path:/srv/repo-a/a",), False),
        ("shell.tee", I, ("path:/srv/repo-a/out.txt",), False),
    ),
    case(
        "subshell-cd",
        "(cd sub && rm x)",
        ("shell.cd", R, ("path:/srv/repo-a/sub",), False),
        ("shell.rm", I, ("path:/srv/repo-a/sub/x",), False),
    ),
    case(
        "subshell-keeps-cwd",
        "(cd sub) && rm x",
        ("shell.cd", R, ("path:/srv/repo-a/sub",), False),
        ("shell.rm", I, ("path:/srv/repo-a/x",), False),
    ),
    case("brace-group", "{ ls; rm y; }", ("shell.ls", R, (), False), ("shell.rm", I, ("path:/srv/repo-a/y",), False)),
    case(
        "cd-semicolon",
        "cd /tmp; rm x",
        ("shell.cd", R, ("path:/tmp",), False),
        ("shell.rm", I, (), True),
    ),
    case(
        "cd-or",
        "cd sub || rm x",
        ("shell.cd", R, ("path:/srv/repo-a/sub",), False),
        ("shell.rm", I, ("path:/srv/repo-a/x",), False),
    ),
    case("assigned-variable", 'D=build && rm -rf "$D"', ("shell.rm", I, ("path:/srv/repo-a/build/**",), False)),
    case("path-assignment", "PATH=/tmp/evil:$PATH; ls", ("shell.ls", I, (), False)),
    case("locale-prefix", "LC_ALL=C grep -n TODO main.py", ("shell.grep", R, ("path:/srv/repo-a/main.py",), False)),
    case("pager-prefix", "GIT_PAGER=less git log", ("shell.git.log", I, ("path:/srv/repo-a/**",), False)),
    case(
        "heredoc-substitution",
        "cat <<END\n$(rm -rf /tmp/cache)\nEND",
        ("shell.cat", R, (), False),
        ("shell.rm", I, ("path:/tmp/cache/**",), False),
    ),
    case(
        "function-call",
        "cleanup() { rm -rf /tmp/work; }; cleanup",
        ("shell.rm", I, ("path:/tmp/work/**",), False),
        ("shell.function", I, (), False),
    ),
    case("arithmetic-variable", "(( total = count + 1 ))", ("shell.let", I, (), True)),
    case("double-bracket-arithmetic", "[[ $n -eq 1 ]]", ("shell.test", I, (), True)),
    case("loop-variable", 'for f in a b; do rm "$f"; done', ("shell.rm", I, (), True)),
    case("by-path", "./deploy.sh --prod", ("shell.by-path", I, ("path:/srv/repo-a/deploy.sh",), False)),
    case("system-path", "/usr/bin/rm notes.txt", ("shell.rm", I, ("path:/srv/repo-a/notes.txt",), False)),
    case("unknown-program", "frobnicate --all", ("shell.frobnicate", I, (), False)),
    case("program-from-variable", "$TOOL --all", ("shell.unknown", I, (), True)),
    case("ls-la", "ls -la", ("shell.ls", R, (), False)),
    case("git-status", "git status", ("shell.git.status", R, ("path:/srv/repo-a/**",), False)),
    case(
        "git-log-head",
        "git log --oneline | head",
        ("shell.git.log", R, ("path:/srv/repo-a/**",), False),
        ("shell.head", R, (), False),
    ),
    case("wc-l", "wc -l file", ("shell.wc", R, ("path:/srv/repo-a/file",), False)),
    case("grep-r", "grep -r foo .", ("shell.grep", R, ("path:/srv/repo-a",), False)),
    case("sed-print", "sed -n 1,5p notes.txt", ("shell.sed", R, ("path:/srv/repo-a/notes.txt",), False)),
    case("sed-in-place", "sed -i s/a/b/ notes.txt", ("shell.sed", I, ("path:/srv/repo-a/notes.txt",), False)),
    case("sort-output", "sort -o out.txt in.txt", ("shell.sort", I, ("path:/srv/repo-a/out.txt",), False)),
    case(
        "curl-get", "curl -s https://example.com/status", ("shell.curl", R, ("url:https://example.com/status",), False)
    ),
    case(
        "curl-post",
        "curl -X POST --data x=1 https://example.com/api",
        ("shell.curl", I, ("url:https://example.com/api",), False),
    ),
    case("kubectl-get", "kubectl -n prod get pods", ("shell.kubectl.get", R, (), False)),
    case("kubectl-delete", "kubectl delete pod web-1", ("shell.kubectl.delete", I, (), False)),
    case("kubectl-apply", "kubectl apply -f deploy.yaml", ("shell.kubectl.apply", I, (), False)),
    case("terraform-destroy", "terraform destroy", ("shell.terraform.destroy", I, ("path:/srv/repo-a",), False)),
    case("terraform-plan", "terraform plan", ("shell.terraform.plan", I, ("path:/srv/repo-a",), False)),
    case("psql", "psql -c 'DROP TABLE users'", ("shell.psql", I, (), False)),
    case("chmod-recursive", "chmod -R 755 public", ("shell.chmod", I, ("path:/srv/repo-a/public/**",), False)),
    case("dd-device", "dd if=/dev/zero of=/dev/sda", ("shell.dd", I, ("path:/dev/sda",), False)),
    case("mkfs", "mkfs.ext4 /dev/sdb1", ("shell.mkfs_ext4", I, ("path:/dev/sdb1",), False)),
    case(
        "mv-may-be-directory",
        "mv draft.md docs/",
        ("shell.mv", I, ("path:/srv/repo-a/draft.md/**", "path:/srv/repo-a/docs/**"), False),
    ),
    case("cp-destination", "cp a.txt b.txt", ("shell.cp", I, ("path:/srv/repo-a/b.txt/**",), False)),
    case("rmdir", "rmdir empty", ("shell.rmdir", I, ("path:/srv/repo-a/empty",), False)),
    case(
        "background", "sleep 1 & rm y", ("shell.sleep", R, (), False), ("shell.rm", I, ("path:/srv/repo-a/y",), False)
    ),
    case(
        "test-then-cat",
        "[ -f a ] && cat a",
        ("shell.test", R, (), False),
        ("shell.cat", R, ("path:/srv/repo-a/a",), False),
    ),
    case(
        "windows-rmdir",
        'rmdir /s /q "D:\\AI Projects\\app-a\\.vite"',
        ("shell.rmdir", I, ("path:D:/AI Projects/app-a/.vite/**",), False),
        cwd="D:\\AI Projects\\app-a",
    ),
    case(
        "windows-rmdir-posix-cwd",
        'rmdir /s /q "D:\\AI Projects\\app-a\\.vite"',
        ("shell.rmdir", I, ("path:D:/AI Projects/app-a/.vite/**",), False),
    ),
    case(
        "windows-move",
        "move report-1.md ..\\archive-a",
        ("shell.move", I, ("path:C:/srv/folder-a/report-1.md/**", "path:C:/srv/archive-a/**"), False),
        cwd="C:\\srv\\folder-a",
    ),
    case("windows-variable", "del %TEMP%\\x.txt", ("shell.del", I, (), True), cwd="C:\\srv\\folder-a"),
    case("windows-nul", "dir > nul", ("shell.dir", R, (), False), cwd="C:\\srv\\folder-a"),
    case("comment-only", "# nothing to run"),
    case("empty", ""),
]


@pytest.mark.parametrize(("command", "cwd", "expected"), FORMS)
def test_shell_form(command: str, cwd: str, expected: list[Part]) -> None:
    assert summary(analyse(command, cwd=cwd)) == expected


def test_part_fields_for_sudo() -> None:
    (part,) = analyse("sudo rm -rf /var/log/x").parts

    assert part == CommandPart(
        program="rm",
        subcommand=None,
        kind="shell.rm",
        consequence=I,
        resources=("path:/var/log/x/**",),
        flags=("-r", "-f"),
        opaque=False,
        reason="rm deletes files, which cannot be restored",
        text="sudo rm -rf /var/log/x",
        wrappers=("sudo",),
    )


def test_part_fields_for_git_push() -> None:
    (part,) = analyse("git push --force origin main").parts

    assert part.program == "git"
    assert part.subcommand == "push"
    assert part.flags == ("--force",)
    assert part.text == "git push --force origin main"


def test_opaque_reason_names_cause() -> None:
    (part,) = analyse("rm -rf $UNKNOWN/x").parts

    assert part.reason == "opaque target: variable $UNKNOWN whose value is unknown in '$UNKNOWN/x'"


def test_redirect_text_and_reason() -> None:
    (part,) = analyse("echo hi > /etc/passwd").parts

    assert part.text == "echo hi > /etc/passwd"
    assert part.reason == "writes to a file through output redirection"


def test_find_exec_wrapper() -> None:
    parts = analyse("find . -name '*.tmp' -exec rm {} \\;").parts

    assert parts[1].wrappers == ("find -exec",)
    assert parts[1].text == "find . -name '*.tmp' -exec rm {} \\;"


def test_bash_c_part_text() -> None:
    (part,) = analyse("bash -c 'rm -rf build'").parts

    assert part.text == "rm -rf build"
    assert part.wrappers == ("bash -c",)


def test_words_after_redirect_are_arguments() -> None:
    (part,) = analyse("ls 2>/dev/null -la").parts

    assert part.flags == ("-l", "-a")
    assert part.consequence is R


def test_unexported_variable_in_child_shell() -> None:
    (part,) = analyse("Y=/data; bash -c 'rm -rf $Y/cache'").parts

    assert part.opaque is True
    assert part.resources == ()


def test_exported_variable_in_child_shell() -> None:
    (part,) = analyse("export X=/data; bash -c 'rm -rf $X/cache'").parts

    assert part.resources == ("path:/data/cache/**",)
    assert part.opaque is False


def test_unknown_environment_taints_assignment() -> None:
    analysis = analyse("x=1; ls", environment=None)

    assert analysis.consequence is I
    assert analysis.parts[0].reason == (
        "runs after assignment to x, which can change what later programs run or how the shell reads them"
    )


def test_known_environment_allows_local_variable() -> None:
    assert analyse("x=1; ls").consequence is R


def test_empty_command_is_reversible() -> None:
    analysis = analyse("")

    assert analysis.parts == ()
    assert analysis.consequence is R
    assert analysis.irreversible_parts == ()


def test_irreversible_parts_property() -> None:
    analysis = analyse("ls && rm x && pwd")

    assert [part.kind for part in analysis.irreversible_parts] == ["shell.rm"]
    assert analysis.consequence is I


def test_length_limit() -> None:
    command = "ls " + "a" * 9997

    with pytest.raises(ShellAnalysisError) as raised:
        analyse(command)

    assert len(command) == 10000
    assert raised.value.code == "analysis_limit_exceeded"


def test_custom_length_limit() -> None:
    with pytest.raises(ShellAnalysisError) as raised:
        analyse_shell("ls -la", cwd=CWD, home=HOME, max_length=5)

    assert raised.value.code == "analysis_limit_exceeded"


def test_nesting_limit() -> None:
    command = "$(" * (MAX_NESTING + 1) + "ls" + ")" * (MAX_NESTING + 1)

    with pytest.raises(ShellAnalysisError) as raised:
        analyse("echo " + command)

    assert raised.value.code == "analysis_limit_exceeded"


def test_long_list_is_not_nesting() -> None:
    analysis = analyse(" && ".join(["ls"] * 300))

    assert len(analysis.parts) == 300
    assert analysis.consequence is R


@pytest.mark.parametrize("command", ["if then fi (", "rm 'unterminated", "echo $(", "cmd <> file", "ls \ud800"])
def test_unparseable_is_opaque(command: str) -> None:
    with pytest.raises(ShellAnalysisError) as raised:
        analyse(command)

    assert raised.value.code == "opaque_target"
    assert isinstance(raised.value, ClassificationError)
    assert isinstance(raised.value, AnalysisError)


def test_error_code_is_checked() -> None:
    with pytest.raises(ValueError, match="analysis error code 'nope' is invalid"):
        ShellAnalysisError("message", "nope")


def test_relative_cwd_is_rejected() -> None:
    with pytest.raises(ValueError, match="cwd 'repo' is not an absolute path"):
        analyse_shell("ls", cwd="repo", home=HOME)


# Commands whose classification does not depend on what runs before them: no cd, no assignments.
POOL = [
    "git status",
    "ls -la",
    "wc -l file",
    "grep -r foo .",
    "git log --oneline",
    "head",
    "cat a",
    "curl -s https://example.com",
    "rm -rf /tmp/x",
    "git push origin feature/login-form",
    "git clean -fd",
    "echo hi > /etc/passwd",
    "tee out.txt",
    "rm $(cat list.txt)",
    "find . -delete",
    "tofu apply -auto-approve",
    "sudo rm -rf /var/log/x",
    "bash -c 'rm -rf build'",
    "timeout 5 rm z",
    "rm -rf *",
    "xargs rm",
    "kubectl delete pod web-1",
]
OPERATORS = ["&&", "||", ";", "|"]


@settings(max_examples=300, deadline=None)
@given(
    commands=st.lists(st.sampled_from(POOL), min_size=1, max_size=6),
    operators=st.lists(st.sampled_from(OPERATORS), min_size=5, max_size=5),
)
def test_compound_never_more_permissive(commands: list[str], operators: list[str]) -> None:
    compound = commands[0]
    for operator, command in zip(operators, commands[1:], strict=False):
        compound += f" {operator} {command}"

    analysis = analyse(compound)
    alone = [analyse(command) for command in commands]
    compound_kinds = {part.kind for part in analysis.irreversible_parts}

    if any(single.consequence is I for single in alone):
        assert analysis.consequence is I
    for single in alone:
        for part in single.irreversible_parts:
            assert part.kind in compound_kinds


TOKENS = [
    *POOL,
    *OPERATORS,
    "&",
    "cd sub",
    "x=1",
    "export PATH=/tmp",
    "$X",
    '"$HOME"',
    "(",
    ")",
    "{",
    "}",
    ">",
    "2>&1",
    "<<END\nbody\nEND\n",
    "for f in a; do",
    "done",
    "if true; then",
    "fi",
    "((",
    "))",
    "[[",
    "]]",
    "-eq",
    "'",
    '"',
    "`",
    "$(",
    "\\",
    "\n",
    "#",
    "C:\\x",
    "/s",
]


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12))
def test_arbitrary_text_fails_closed(tokens: list[str]) -> None:
    command = " ".join(tokens)

    try:
        analysis = analyse(command)
    except ShellAnalysisError as error:
        assert error.code in {"opaque_target", "analysis_limit_exceeded"}
        return

    for part in analysis.parts:
        assert part.kind.startswith("shell.")
        if part.opaque:
            assert part.consequence is I
