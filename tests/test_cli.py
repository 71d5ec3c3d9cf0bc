"""The `etlb` command line, driven through click's test runner against a real store in a temporary folder.

Error paths that end in an etlb error run `python -m etlb` in a subprocess, because only `main()`
prints the error with its hint and sets exit status 1. Click's runner would return the exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import etlb.cli
from etlb.canonical import sha256_digest
from etlb.cli import cli
from etlb.declarations import SCOPE_TYP, scope_id_for
from etlb.signing import key_id, load_private_key, load_public_jwk, public_jwk, verify_jws

CONFIG_TEXT = """\
[gate]
store = "sqlite:///etlb.db"
agent = "treasury-bot"

[servers.files]
trusted = true

[[rules]]
server = "payments"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"
"""

TERMS = "I accept liability for transfers from account DE01 by the treasury bot."
VALID_FROM = "2020-01-01T00:00:00Z"
VALID_UNTIL = "2100-01-01T00:00:00Z"

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DECISION = 3


@dataclass
class Workspace:
    """A folder with `etlb.toml`, an initialised store, and bearer alice registered with her key."""

    root: Path
    config: Path
    alice_key: Path

    def invoke(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.config), *args], input=input)

    def invoke_json(self, *args: str) -> Any:
        result = self.invoke(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `etlb` entry point in a subprocess, so that `main()` handles errors."""
        environment = {key: value for key, value in os.environ.items() if not key.startswith("ETLB_")}
        # A wide terminal keeps rich from wrapping long error lines.
        environment["COLUMNS"] = "400"
        return subprocess.run(
            [sys.executable, "-m", "etlb", "--config", str(self.config), *args],
            cwd=self.root,
            env=environment,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def keygen(self, name: str) -> Path:
        path = self.root / f"{name}.key"
        result = self.invoke("keygen", "--out", str(path))
        assert result.exit_code == 0, result.output
        return path

    def declare(self, *extra: str) -> dict[str, Any]:
        """Declare alice's standard scope with the `extra` options appended, and return its JSON."""
        result = self.invoke(*declare_arguments(self.alice_key), *extra, "--json")
        assert result.exit_code == 0, result.output
        scope: dict[str, Any] = json.loads(result.stdout)
        return scope


def declare_arguments(key: Path, bearer: str = "alice") -> list[str]:
    return [
        "scope",
        "declare",
        "--bearer",
        bearer,
        "--key",
        str(key),
        "--kind",
        "payments.transfer",
        "--resource",
        "account:DE01",
        "--agent",
        "treasury-bot",
        "--max-amount",
        "10000",
        "--max-total",
        "50000",
        "--unit",
        "EUR",
        "--max-count",
        "5",
        "--valid-from",
        VALID_FROM,
        "--valid-until",
        VALID_UNTIL,
        "--domain",
        "payments",
        "--terms",
        TERMS,
        "--yes",
    ]


def transfer_arguments(amount: str) -> str:
    return json.dumps({"from_account": "DE01", "amount": amount, "currency": "EUR"})


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich wraps at 80 columns when output is not a terminal, which would split long paths and ids.
    monkeypatch.setattr(etlb.cli.console, "width", 400)
    monkeypatch.setattr(etlb.cli.errors, "width", 400)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    for name in ("ETLB_CONFIG", "ETLB_STORE"):
        monkeypatch.delenv(name, raising=False)

    config = tmp_path / "etlb.toml"
    config.write_text(CONFIG_TEXT, encoding="utf-8")
    space = Workspace(tmp_path, config, tmp_path / "alice.key")

    assert space.invoke("init").exit_code == 0
    space.keygen("alice")
    added = space.invoke("bearer", "add", "alice", "--name", "Alice Adams", "--key", str(tmp_path / "alice.pub.jwk"))
    assert added.exit_code == 0, added.output
    return space


def alice_key_id(space: Workspace) -> str:
    return key_id(load_public_jwk(space.root / "alice.pub.jwk"))


# init and keygen


def test_init_writes_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ETLB_CONFIG", raising=False)
    monkeypatch.delenv("ETLB_STORE", raising=False)

    result = CliRunner().invoke(cli, ["init"])

    assert result.exit_code == 0
    assert "wrote configuration etlb.toml" in result.stdout
    assert "store sqlite:///etlb.db is ready; its ledger has 0 records" in result.stdout
    assert (tmp_path / "etlb.toml").read_text().startswith("# etlb configuration.")
    assert (tmp_path / "etlb.db").is_file()


def test_init_keeps_existing_config(workspace: Workspace) -> None:
    result = workspace.invoke("init")

    assert result.exit_code == 0
    assert f"using existing configuration {workspace.config}" in result.stdout
    assert "its ledger has 1 records" in result.stdout
    assert workspace.config.read_text() == CONFIG_TEXT


def test_config_from_environment(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLB_CONFIG", str(workspace.config))
    monkeypatch.chdir(workspace.root.parent)

    result = CliRunner().invoke(cli, ["bearer", "list", "--json"])

    assert result.exit_code == 0
    assert [item["id"] for item in json.loads(result.stdout)] == ["alice"]


def test_version_option() -> None:
    result = CliRunner().invoke(cli, ["--version"])

    assert result.exit_code == 0
    assert "0.1.0" in result.stdout


def test_keygen_json_fields(workspace: Workspace) -> None:
    out = workspace.root / "bob.key"

    result = workspace.invoke("keygen", "--out", str(out), "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "key_id": key_id(load_public_jwk(workspace.root / "bob.pub.jwk")),
        "private_key": str(out),
        "public_key": str(workspace.root / "bob.pub.jwk"),
    }


def test_keygen_warns_unencrypted(workspace: Workspace) -> None:
    out = workspace.root / "bob.key"

    result = workspace.invoke("keygen", "--out", str(out))

    assert f"warning: {out} is not encrypted" in result.stderr


def test_keygen_private_mode(workspace: Workspace) -> None:
    assert workspace.alice_key.stat().st_mode & 0o777 == 0o600


def test_keygen_key_pair_matches(workspace: Workspace) -> None:
    private_key = load_private_key(workspace.alice_key)

    assert public_jwk(private_key) == load_public_jwk(workspace.root / "alice.pub.jwk")


def test_keygen_with_passphrase(workspace: Workspace) -> None:
    passphrase_file = workspace.root / "passphrase.txt"
    passphrase_file.write_text("correct horse\nignored second line\n")
    out = workspace.root / "bob.key"

    result = workspace.invoke("keygen", "--out", str(out), "--passphrase-file", str(passphrase_file))

    assert result.exit_code == 0
    assert "is not encrypted" not in result.stderr
    assert public_jwk(load_private_key(out, b"correct horse")) == load_public_jwk(workspace.root / "bob.pub.jwk")


def test_keygen_existing_out_kept(workspace: Workspace) -> None:
    before = workspace.alice_key.read_bytes()
    public_before = (workspace.root / "alice.pub.jwk").read_bytes()

    completed = workspace.run("keygen", "--out", str(workspace.alice_key))

    assert completed.returncode == EXIT_ERROR
    assert f"error: key file {workspace.alice_key} already exists" in completed.stderr
    assert "hint: choose another --out path or move the old key away" in completed.stderr
    assert workspace.alice_key.read_bytes() == before
    assert (workspace.root / "alice.pub.jwk").read_bytes() == public_before


def test_keygen_existing_public_kept(workspace: Workspace) -> None:
    public_path = workspace.root / "carol.pub.jwk"
    public_path.write_text("{}")

    completed = workspace.run("keygen", "--out", str(workspace.root / "carol.key"))

    assert completed.returncode == EXIT_ERROR
    assert f"error: key file {public_path} already exists" in completed.stderr
    assert not (workspace.root / "carol.key").exists()
    assert public_path.read_text() == "{}"


def test_keygen_empty_passphrase_file(workspace: Workspace) -> None:
    passphrase_file = workspace.root / "empty.txt"
    passphrase_file.write_text("")

    completed = workspace.run("keygen", "--out", "bob.key", "--passphrase-file", str(passphrase_file))

    assert completed.returncode == EXIT_ERROR
    assert f"error: passphrase file {passphrase_file} is empty" in completed.stderr
    assert not (workspace.root / "bob.key").exists()


# bearers


def test_bearer_add_output(workspace: Workspace) -> None:
    workspace.keygen("bob")

    result = workspace.invoke("bearer", "add", "bob", "--name", "Bob", "--key", str(workspace.root / "bob.pub.jwk"))

    assert result.exit_code == 0
    assert "registered bearer bob with 1 key(s), ledger record 1" in result.stdout


def test_bearer_list_json(workspace: Workspace) -> None:
    workspace.keygen("bob")
    workspace.keygen("bob2")
    added = workspace.invoke(
        "bearer",
        "add",
        "bob@example.org",
        "--name",
        "Bob Brown",
        "--key",
        str(workspace.root / "bob.pub.jwk"),
        "--key",
        str(workspace.root / "bob2.pub.jwk"),
        "--attr",
        "role=treasurer",
        "--attr",
        "team=finance=ops",
    )
    assert added.exit_code == 0, added.output
    bob_keys = sorted(key_id(load_public_jwk(workspace.root / name)) for name in ("bob.pub.jwk", "bob2.pub.jwk"))

    listed = workspace.invoke_json("bearer", "list")

    assert listed == [
        {
            "attributes": {},
            "id": "alice",
            "keys": [alice_key_id(workspace)],
            "name": "Alice Adams",
            "status": "active",
        },
        {
            "attributes": {"role": "treasurer", "team": "finance=ops"},
            "id": "bob@example.org",
            "keys": bob_keys,
            "name": "Bob Brown",
            "status": "active",
        },
    ]


@pytest.mark.parametrize(
    "bearer_id", ["bad id", "-leading-dash", "a/b", "x" * 129], ids=["space", "dash", "slash", "long"]
)
def test_bad_bearer_id(workspace: Workspace, bearer_id: str) -> None:
    # "--" ends the options, so that an id starting with a dash reaches the id check.
    result = workspace.invoke(
        "bearer", "add", "--name", "X", "--key", str(workspace.root / "alice.pub.jwk"), "--", bearer_id
    )

    assert result.exit_code == EXIT_USAGE
    assert f"bearer id {bearer_id!r} is invalid" in result.stderr


def test_bad_bearer_id_from_main(workspace: Workspace) -> None:
    completed = workspace.run("bearer", "add", "bad id", "--name", "X", "--key", "alice.pub.jwk")

    assert completed.returncode == EXIT_USAGE
    assert "Invalid value for BEARER_ID: bearer id 'bad id' is invalid" in completed.stderr


def test_bad_bearer_attribute(workspace: Workspace) -> None:
    workspace.keygen("bob")

    result = workspace.invoke(
        "bearer", "add", "bob", "--name", "Bob", "--key", str(workspace.root / "bob.pub.jwk"), "--attr", "role"
    )

    assert result.exit_code == EXIT_USAGE
    assert "'role' is not KEY=VALUE" in result.stderr


def test_bearer_registered_twice(workspace: Workspace) -> None:
    workspace.keygen("bob")

    completed = workspace.run("bearer", "add", "alice", "--name", "Again", "--key", "bob.pub.jwk")

    assert completed.returncode == EXIT_ERROR
    assert "error: bearer alice is already registered" in completed.stderr


def test_bearer_private_jwk_rejected(workspace: Workspace) -> None:
    leaked = workspace.root / "leaked.jwk"
    leaked.write_text(json.dumps({**load_public_jwk(workspace.root / "alice.pub.jwk"), "d": "secret"}))

    completed = workspace.run("bearer", "add", "mallory", "--name", "M", "--key", str(leaked))

    assert completed.returncode == EXIT_ERROR
    assert "error: the public key file contains a private key member 'd'" in completed.stderr
    assert "hint: register the .pub.jwk file that etlb keygen wrote, never the key" in completed.stderr


def test_bearer_suspend_and_reinstate(workspace: Workspace) -> None:
    suspended = workspace.invoke("bearer", "suspend", "alice")
    status_after_suspend = workspace.invoke_json("bearer", "list")[0]["status"]
    reinstated = workspace.invoke("bearer", "reinstate", "alice")
    status_after_reinstate = workspace.invoke_json("bearer", "list")[0]["status"]

    assert "suspended bearer alice, ledger record 1" in suspended.stdout
    assert status_after_suspend == "suspended"
    assert "reinstated bearer alice, ledger record 2" in reinstated.stdout
    assert status_after_reinstate == "active"


def test_suspend_unknown_bearer(workspace: Workspace) -> None:
    completed = workspace.run("bearer", "suspend", "nobody")

    assert completed.returncode == EXIT_ERROR
    assert "error: bearer nobody not found" in completed.stderr
    assert "hint: list registered bearers with: etlb bearer list" in completed.stderr


# scope declare


def test_declare_json_fields(workspace: Workspace) -> None:
    scope = workspace.declare()
    fields = {name: value for name, value in scope.items() if name not in {"jws", "scope_id"}}

    assert fields == {
        "agents": ["treasury-bot"],
        "bearer": "alice",
        "definitions": {},
        "delegator": None,
        "domain": "payments",
        "key_id": alice_key_id(workspace),
        "kinds": ["payments.transfer"],
        "limits": {"max_amount": "10000", "max_count": 5, "max_total": "50000", "unit": "EUR"},
        "parent": None,
        "resources": ["account:DE01"],
        "revoked": False,
        "terms": TERMS,
        "used": {"amount": "0", "count": 0},
        "valid_from": "2020-01-01T00:00:00.000Z",
        "valid_until": "2100-01-01T00:00:00.000Z",
        "when": None,
    }


def test_declare_id_names_token(workspace: Workspace) -> None:
    scope = workspace.declare()

    assert scope["scope_id"] == scope_id_for(scope["jws"])


def test_declare_token_signed_by_bearer(workspace: Workspace) -> None:
    scope = workspace.declare()

    payload = verify_jws(scope["jws"], load_public_jwk(workspace.root / "alice.pub.jwk"), typ=SCOPE_TYP)

    assert payload["bearer"] == "alice"
    assert payload["terms_digest"] == sha256_digest(TERMS)


def test_declare_shows_terms(workspace: Workspace) -> None:
    result = workspace.invoke(*declare_arguments(workspace.alice_key))

    assert result.exit_code == 0
    assert "terms you accept" in result.stderr
    assert "declared scope scope-" in result.stdout


def test_declare_prompt_accepted(workspace: Workspace) -> None:
    arguments = [argument for argument in declare_arguments(workspace.alice_key) if argument != "--yes"]

    result = workspace.invoke(*arguments, input="y\n")

    assert result.exit_code == 0
    assert len(workspace.invoke_json("scope", "list")) == 1


def test_declare_prompt_declined(workspace: Workspace) -> None:
    arguments = [argument for argument in declare_arguments(workspace.alice_key) if argument != "--yes"]

    completed = workspace.run(*arguments, input="n\n")

    assert completed.returncode == EXIT_ERROR
    assert "aborted" in completed.stderr
    assert workspace.invoke_json("scope", "list") == []


def test_declare_valid_for(workspace: Workspace) -> None:
    arguments = [*declare_arguments(workspace.alice_key)]
    until = arguments.index("--valid-until")
    del arguments[until : until + 2]

    result = workspace.invoke(*arguments, "--valid-for", "90m", "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout)["valid_until"] == "2020-01-01T01:30:00.000Z"


def test_declare_terms_file(workspace: Workspace) -> None:
    terms_file = workspace.root / "terms.txt"
    terms_file.write_text("Line one.\nLine two.\n", encoding="utf-8")
    arguments = [*declare_arguments(workspace.alice_key)]
    terms = arguments.index("--terms")
    del arguments[terms : terms + 2]

    result = workspace.invoke(*arguments, "--terms-file", str(terms_file), "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout)["terms"] == "Line one.\nLine two.\n"


def test_declare_from_file(workspace: Workspace) -> None:
    scope_file = workspace.root / "scope.toml"
    scope_file.write_text(
        f"""\
bearer = "alice"
key = "{workspace.alice_key}"
kinds = ["payments.transfer", "payments.refund"]
resources = ["account:DE*"]
agents = ["treasury-bot", "audit-bot"]
valid_from = 2020-01-01T00:00:00Z
valid_for = "30d"
domain = "payments"
terms = "{TERMS}"

[limits]
max_amount = "10000"
max_count = 3
unit = "EUR"
""",
        encoding="utf-8",
    )

    scope = workspace.invoke_json("scope", "declare", "--from-file", str(scope_file), "--yes")
    fields = {name: value for name, value in scope.items() if name not in {"jws", "scope_id", "key_id"}}

    assert fields == {
        "agents": ["treasury-bot", "audit-bot"],
        "bearer": "alice",
        "definitions": {},
        "delegator": None,
        "domain": "payments",
        "kinds": ["payments.transfer", "payments.refund"],
        "limits": {"max_amount": "10000", "max_count": 3, "max_total": None, "unit": "EUR"},
        "parent": None,
        "resources": ["account:DE*"],
        "revoked": False,
        "terms": TERMS,
        "used": {"amount": "0", "count": 0},
        "valid_from": "2020-01-01T00:00:00.000Z",
        "valid_until": "2020-01-31T00:00:00.000Z",
        "when": None,
    }


def test_from_file_option_overrides(workspace: Workspace) -> None:
    scope_file = workspace.root / "scope.toml"
    scope_file.write_text(
        f'bearer = "alice"\nkinds = ["payments.transfer"]\nresources = ["account:DE01"]\nterms = "{TERMS}"\n',
        encoding="utf-8",
    )

    scope = workspace.invoke_json(
        "scope",
        "declare",
        "--from-file",
        str(scope_file),
        "--key",
        str(workspace.alice_key),
        "--kind",
        "payments.payout",
        "--yes",
    )

    assert scope["kinds"] == ["payments.payout"]
    assert scope["resources"] == ["account:DE01"]
    assert scope["agents"] == ["*"]


def test_from_file_invalid_toml(workspace: Workspace) -> None:
    scope_file = workspace.root / "scope.toml"
    scope_file.write_text("bearer = \n", encoding="utf-8")

    result = workspace.invoke("scope", "declare", "--from-file", str(scope_file), "--yes")

    assert result.exit_code == EXIT_USAGE
    assert "Invalid value for --from-file: not valid TOML" in result.stderr


def test_from_file_count_not_integer(workspace: Workspace) -> None:
    scope_file = workspace.root / "scope.toml"
    scope_file.write_text(
        f'bearer = "alice"\nkinds = ["k.x"]\nresources = ["r"]\nterms = "t"\nkey = "{workspace.alice_key}"\n'
        '[limits]\nmax_count = "3"\n',
        encoding="utf-8",
    )

    result = workspace.invoke("scope", "declare", "--from-file", str(scope_file), "--yes")

    assert result.exit_code == EXIT_USAGE
    assert "Invalid value for --max-count: '3' is not a whole number" in result.stderr


def test_from_file_kinds_not_list(workspace: Workspace) -> None:
    scope_file = workspace.root / "scope.toml"
    scope_file.write_text(
        f'bearer = "alice"\nkinds = 5\nresources = ["r"]\nterms = "t"\nkey = "{workspace.alice_key}"\n',
        encoding="utf-8",
    )

    result = workspace.invoke("scope", "declare", "--from-file", str(scope_file), "--yes")

    assert result.exit_code == EXIT_USAGE
    assert "Invalid value for --kind: 5 is not a list of patterns" in result.stderr


def without_option(arguments: list[str], option: str) -> list[str]:
    index = arguments.index(option)
    return arguments[:index] + arguments[index + 2 :]


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("--terms", "missing --terms or --terms-file: the bearer must see what they accept"),
        ("--kind", "missing --kind: give at least one pattern"),
        ("--resource", "missing --resource: give at least one pattern"),
        ("--bearer", "missing --bearer"),
        ("--key", "missing --key: the bearer's private key file signs the scope"),
    ],
    ids=["terms", "kind", "resource", "bearer", "key"],
)
def test_declare_missing_option(workspace: Workspace, option: str, error: str) -> None:
    arguments = without_option(declare_arguments(workspace.alice_key), option)

    result = workspace.invoke(*arguments)

    assert result.exit_code == EXIT_USAGE
    assert error in result.stderr


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--valid-for", "8x"], "'8x' is not a duration such as 90m, 8h or 30d"),
        (["--valid-until", "tomorrow"], "invalid timestamp 'tomorrow'"),
        (["--valid-until", "2100-01-01T00:00:00"], "has no offset"),
        (["--max-amount", "ten"], "'ten' is not a decimal number"),
        (["--max-count", "-1"], "-1 is not in the range x>=0"),
    ],
    ids=["duration", "timestamp", "timestamp-without-offset", "amount", "negative-count"],
)
def test_declare_bad_option(workspace: Workspace, extra: list[str], error: str) -> None:
    arguments = declare_arguments(workspace.alice_key)
    for option in ("--valid-until", "--max-amount", "--max-count"):
        if option in extra:
            arguments = without_option(arguments, option)
    if "--valid-for" in extra:
        arguments = without_option(arguments, "--valid-until")

    result = workspace.invoke(*arguments, *extra)

    assert result.exit_code == EXIT_USAGE
    assert error in result.stderr


def test_declare_cap_without_unit(workspace: Workspace) -> None:
    arguments = without_option(declare_arguments(workspace.alice_key), "--unit")

    result = workspace.invoke(*arguments)

    assert result.exit_code == EXIT_USAGE
    assert "an amount cap needs a unit" in result.stderr


def test_declare_negative_cap(workspace: Workspace) -> None:
    arguments = without_option(declare_arguments(workspace.alice_key), "--max-amount")

    result = workspace.invoke(*arguments, "--max-amount", "-5")

    assert result.exit_code == EXIT_USAGE
    assert "max_amount -5 must be a finite amount of 0 or more" in result.stderr


def test_declare_unregistered_bearer(workspace: Workspace) -> None:
    completed = workspace.run(*declare_arguments(workspace.alice_key, bearer="bob"))

    assert completed.returncode == EXIT_ERROR
    assert "error: scope declaration names bearer 'bob', who is not registered" in completed.stderr
    assert "hint: register the bearer first: etlb bearer add" in completed.stderr
    assert workspace.invoke_json("scope", "list") == []


def test_declare_with_other_key(workspace: Workspace) -> None:
    bob_key = workspace.keygen("bob")

    completed = workspace.run(*declare_arguments(bob_key))

    assert completed.returncode == EXIT_ERROR
    assert "which is not registered to bearer alice" in completed.stderr


def test_declare_until_before_from(workspace: Workspace) -> None:
    arguments = without_option(declare_arguments(workspace.alice_key), "--valid-until")

    completed = workspace.run(*arguments, "--valid-until", "2019-01-01T00:00:00Z")

    assert completed.returncode == EXIT_ERROR
    assert "error: scope valid_until 2019-01-01T00:00:00.000Z is not after valid_from" in completed.stderr


def test_declare_encrypted_key(workspace: Workspace) -> None:
    passphrase_file = workspace.root / "passphrase.txt"
    passphrase_file.write_text("correct horse\n")
    key = workspace.root / "alice2.key"
    assert workspace.invoke("keygen", "--out", str(key), "--passphrase-file", str(passphrase_file)).exit_code == 0
    added = workspace.invoke(
        "bearer", "add", "carol", "--name", "Carol", "--key", str(workspace.root / "alice2.pub.jwk")
    )
    assert added.exit_code == 0, added.output

    scope = workspace.invoke_json(*declare_arguments(key, bearer="carol"), "--passphrase-file", str(passphrase_file))

    assert scope["bearer"] == "carol"


def test_declare_encrypted_key_without_passphrase(workspace: Workspace) -> None:
    passphrase_file = workspace.root / "passphrase.txt"
    passphrase_file.write_text("correct horse\n")
    key = workspace.root / "carol.key"
    assert workspace.invoke("keygen", "--out", str(key), "--passphrase-file", str(passphrase_file)).exit_code == 0

    completed = workspace.run(*declare_arguments(key))

    assert completed.returncode == EXIT_ERROR
    assert f"error: key file {key} is encrypted and no passphrase was given" in completed.stderr
    assert "hint: pass --passphrase-file FILE" in completed.stderr


# scope list, show and revoke


def test_scope_list_json(workspace: Workspace) -> None:
    declared = workspace.declare()

    assert workspace.invoke_json("scope", "list") == [declared]


def test_scope_list_by_bearer(workspace: Workspace) -> None:
    workspace.declare()

    assert workspace.invoke_json("scope", "list", "--bearer", "bob") == []


def test_scope_show_json(workspace: Workspace) -> None:
    declared = workspace.declare()

    assert workspace.invoke_json("scope", "show", declared["scope_id"]) == declared


def test_scope_show_text(workspace: Workspace) -> None:
    declared = workspace.declare()

    result = workspace.invoke("scope", "show", declared["scope_id"])

    assert result.exit_code == 0
    assert "terms accepted by the bearer" in result.stdout
    assert "active" in result.stdout


def test_scope_show_unknown(workspace: Workspace) -> None:
    result = workspace.invoke("scope", "show", "scope-unknown")

    assert result.exit_code == EXIT_USAGE
    assert "scope scope-unknown not found; list scopes with: etlb scope list" in result.stderr


def last_record(space: Workspace) -> dict[str, Any]:
    record: dict[str, Any] = space.invoke_json("ledger", "show")[-1]
    return record


def test_revoke_with_key(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]

    result = workspace.invoke("scope", "revoke", scope_id, "--key", str(workspace.alice_key), "--reason", "rotated")
    record = last_record(workspace)

    assert result.exit_code == 0
    assert f"revoked scope {scope_id}, ledger record 2" in result.stdout
    assert record["type"] == "scope.revoked"
    assert {name: record["data"][name] for name in ("scope_id", "by", "actor", "reason")} == {
        "scope_id": scope_id,
        "by": "bearer",
        "actor": "alice",
        "reason": "rotated",
    }
    assert workspace.invoke_json("scope", "show", scope_id)["revoked"] is True


def test_revocation_token_verifies(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    workspace.invoke("scope", "revoke", scope_id, "--key", str(workspace.alice_key))

    token = last_record(workspace)["data"]["jws"]
    payload = verify_jws(token, load_public_jwk(workspace.root / "alice.pub.jwk"), typ="etlb-revocation+jws")

    assert payload["scope_id"] == scope_id
    assert payload["type"] == "etlb.revocation.v1"


def test_revoke_as_admin(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]

    result = workspace.invoke("scope", "revoke", scope_id, "--as-admin", "ops-lead")
    data = last_record(workspace)["data"]

    assert result.exit_code == 0
    assert {name: data[name] for name in ("scope_id", "by", "actor", "jws")} == {
        "scope_id": scope_id,
        "by": "administrator",
        "actor": "ops-lead",
        "jws": None,
    }
    assert workspace.invoke_json("scope", "show", scope_id)["revoked"] is True


@pytest.mark.parametrize("with_key", [False, True], ids=["neither", "both"])
def test_revoke_needs_one_signer(workspace: Workspace, with_key: bool) -> None:
    scope_id = workspace.declare()["scope_id"]
    extra = ["--key", str(workspace.alice_key), "--as-admin", "ops"] if with_key else []

    result = workspace.invoke("scope", "revoke", scope_id, *extra)

    assert result.exit_code == EXIT_USAGE
    assert "pass exactly one of --key (the bearer signs) or --as-admin NAME" in result.stderr


def test_revoke_twice(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    assert workspace.invoke("scope", "revoke", scope_id, "--as-admin", "ops").exit_code == 0

    completed = workspace.run("scope", "revoke", scope_id, "--as-admin", "ops")

    assert completed.returncode == EXIT_ERROR
    assert f"error: scope {scope_id} is already revoked" in completed.stderr


def test_revoke_with_other_bearers_key(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    bob_key = workspace.keygen("bob")
    workspace.invoke("bearer", "add", "bob", "--name", "Bob", "--key", str(workspace.root / "bob.pub.jwk"))

    completed = workspace.run("scope", "revoke", scope_id, "--key", str(bob_key))

    assert completed.returncode == EXIT_ERROR
    assert "error: revocation is not signed by a key registered to bearer alice" in completed.stderr
    assert workspace.invoke_json("scope", "show", scope_id)["revoked"] is False


def test_revoke_unknown_scope(workspace: Workspace) -> None:
    completed = workspace.run("scope", "revoke", "scope-unknown", "--as-admin", "ops")

    assert completed.returncode == EXIT_ERROR
    assert "error: scope scope-unknown not found" in completed.stderr
    assert "hint: list scopes with: etlb scope list" in completed.stderr


# check


def check_json(space: Workspace, *args: str) -> tuple[int, dict[str, Any]]:
    result = space.invoke("check", *args, "--json")
    decision: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, decision


def test_check_binds(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]

    exit_code, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("250")
    )

    assert exit_code == 0
    assert decision["decision"] == "bind"
    assert decision["bearer"] == "alice"
    assert decision["scope_id"] == scope_id
    assert decision["code"] is None
    assert decision["reasons"] == []


def test_check_refuses_amount(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]

    exit_code, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("25000")
    )

    assert exit_code == EXIT_DECISION
    assert decision["decision"] == "refuse"
    assert decision["code"] == "amount_exceeds_scope"
    assert decision["bearer"] is None
    assert decision["scope_id"] is None
    assert decision["reasons"] == [
        {
            "bearer": "alice",
            "code": "amount_exceeds_scope",
            "detail": "cap 10000 EUR per action is below 25000 EUR",
            "scope_id": scope_id,
        }
    ]


def test_check_action_fields(workspace: Workspace) -> None:
    _, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("250")
    )
    action = decision["action"]
    fields = {name: value for name, value in action.items() if name != "digest"}

    assert fields == {
        "agent": "treasury-bot",
        "amount": {"unit": "EUR", "value": "250"},
        "arguments": {"amount": "250", "currency": "EUR", "from_account": "DE01"},
        "consequence": "irreversible",
        "kind": "payments.transfer",
        "resource": "account:DE01",
        "server": "payments",
        "tool": "transfer",
    }
    assert (
        action["digest"]
        == "sha256:" + hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    )


def test_check_no_covering_scope(workspace: Workspace) -> None:
    exit_code, decision = check_json(workspace, "--server", "shell", "--tool", "rm", "--args", '{"path": "/"}')

    assert exit_code == EXIT_DECISION
    assert decision["code"] == "no_covering_scope"
    assert decision["reasons"] == []
    assert decision["action"]["kind"] == "tool.shell.rm"


def test_check_other_agent(workspace: Workspace) -> None:
    workspace.declare()

    exit_code, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("1"), "--agent", "rogue"
    )

    assert exit_code == EXIT_DECISION
    assert decision["code"] == "agent_not_covered"
    assert decision["reasons"][0]["detail"] == "agent rogue is not covered by treasury-bot"


def test_check_suspended_bearer(workspace: Workspace) -> None:
    workspace.declare()
    workspace.invoke("bearer", "suspend", "alice")

    exit_code, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("1")
    )

    assert exit_code == EXIT_DECISION
    assert decision["code"] == "bearer_suspended"


def test_check_revoked_scope(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    workspace.invoke("scope", "revoke", scope_id, "--as-admin", "ops")

    exit_code, decision = check_json(
        workspace, "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("1")
    )

    assert exit_code == EXIT_DECISION
    assert decision["code"] == "scope_revoked"


def test_check_passes_reversible(workspace: Workspace) -> None:
    exit_code, decision = check_json(workspace, "--server", "files", "--tool", "read", "--read-only-hint")

    assert exit_code == 0
    assert decision["decision"] == "pass"
    assert decision["bearer"] is None
    assert decision["code"] is None
    assert decision["action"]["consequence"] == "reversible"


def test_check_untrusted_hint_ignored(workspace: Workspace) -> None:
    exit_code, decision = check_json(workspace, "--server", "web", "--tool", "read", "--read-only-hint")

    assert exit_code == EXIT_DECISION
    assert decision["decision"] == "refuse"


def test_check_records_nothing(workspace: Workspace) -> None:
    workspace.declare()
    before = workspace.invoke_json("ledger", "show")

    workspace.invoke("check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("250"))
    workspace.invoke("check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("25000"))

    assert workspace.invoke_json("ledger", "show") == before
    assert workspace.invoke_json("scope", "list")[0]["used"] == {"amount": "0", "count": 0}


def test_check_text_refusal(workspace: Workspace) -> None:
    workspace.declare()

    result = workspace.invoke(
        "check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("25000")
    )

    assert result.exit_code == EXIT_DECISION
    assert "refuse: amount_exceeds_scope" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{not json", "Invalid value for --args: not JSON"),
        ("[1, 2]", "Invalid value for --args: must be a JSON object"),
    ],
    ids=["not-json", "not-object"],
)
def test_check_bad_args(workspace: Workspace, arguments: str, error: str) -> None:
    result = workspace.invoke("check", "--tool", "rm", "--args", arguments)

    assert result.exit_code == EXIT_USAGE
    assert error in result.stderr


def test_check_missing_template_argument(workspace: Workspace) -> None:
    completed = workspace.run("check", "--server", "payments", "--tool", "transfer", "--args", '{"amount": "1"}')

    assert completed.returncode == EXIT_DECISION
    assert "refuse: classification_failed: tool 'transfer' was called without argument 'from_account'" in (
        completed.stdout
    )


def test_check_tells_what_approvals_would_do(workspace: Workspace) -> None:
    workspace.declare()
    routes = '\n[approvals]\n[[approvals.routes]]\nkinds = ["payments.*"]\napprovers = ["bob", "carol"]\n'
    workspace.config.write_text(CONFIG_TEXT + routes, encoding="utf-8")

    text = workspace.invoke(
        "check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("20000")
    )
    data = workspace.invoke(
        "check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("20000"), "--json"
    )

    assert text.exit_code == EXIT_DECISION
    assert "approval: a real call opens a request to bob, carol (pool), answered within 900 s" in text.output
    assert json.loads(data.stdout)["approval"] == {
        "approvers": ["bob", "carol"],
        "order": "pool",
        "deadline_seconds": 900,
    }


# ledger


def test_ledger_show_records(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]

    records = workspace.invoke_json("ledger", "show")

    assert [(record["seq"], record["type"], record["v"]) for record in records] == [
        (0, "bearer.registered", 1),
        (1, "scope.declared", 1),
    ]
    assert records[0]["data"]["bearer"]["id"] == "alice"
    assert records[1]["data"]["scope_id"] == scope_id


def test_ledger_show_leaf_hash(workspace: Workspace) -> None:
    workspace.declare()

    for record in workspace.invoke_json("ledger", "show"):
        body = {name: value for name, value in record.items() if name != "leaf_hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

        assert record["leaf_hash"] == hashlib.sha256(b"\x00" + canonical).hexdigest()


def test_ledger_show_window(workspace: Workspace) -> None:
    workspace.declare()

    records = workspace.invoke_json("ledger", "show", "--from", "1", "--limit", "1")

    assert [record["seq"] for record in records] == [1]


def test_ledger_verify_ok(workspace: Workspace) -> None:
    workspace.declare()

    report = workspace.invoke_json("ledger", "verify")

    assert report["ok"] is True
    assert report["size"] == 2
    assert report["counts"] == {"bearer.registered": 1, "scope.declared": 1}
    assert report["problems"] == []
    assert len(report["head_chain_hash"]) == 64


def test_ledger_verify_text(workspace: Workspace) -> None:
    workspace.declare()

    result = workspace.invoke("ledger", "verify")

    assert result.exit_code == 0
    assert "ledger verified: 2 records (1 bearer.registered, 1 scope.declared)" in result.stdout


def test_ledger_verify_finds_edited_usage(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    with sqlite3.connect(workspace.root / "etlb.db") as connection:
        connection.execute("UPDATE scope_usage SET count = 2 WHERE scope_id = ?", (scope_id,))
    connection.close()

    result = workspace.invoke("ledger", "verify", "--json")
    report = json.loads(result.stdout)

    assert result.exit_code == EXIT_DECISION
    assert report["ok"] is False
    assert report["problems"] == [
        {
            "sequence": None,
            "message": f"usage of scope {scope_id} in the store is 2 executions and 0, "
            "but its bindings in the ledger add up to 0 and 0",
        }
    ]


def test_ledger_verify_failure_text(workspace: Workspace) -> None:
    scope_id = workspace.declare()["scope_id"]
    with sqlite3.connect(workspace.root / "etlb.db") as connection:
        connection.execute("UPDATE scope_usage SET count = 2 WHERE scope_id = ?", (scope_id,))
    connection.close()

    completed = workspace.run("ledger", "verify")

    assert completed.returncode == EXIT_DECISION
    assert f"ledger verification failed at store: usage of scope {scope_id}" in completed.stderr


# errors from main()


def test_missing_config_error(tmp_path: Path) -> None:
    space = Workspace(tmp_path, tmp_path / "missing.toml", tmp_path / "alice.key")

    completed = space.run("bearer", "list")

    assert completed.returncode == EXIT_ERROR
    assert f"error: configuration file {tmp_path / 'missing.toml'} not found" in completed.stderr
    assert "hint: create one with: etlb init, or pass --config PATH" in completed.stderr


def test_store_not_initialised(tmp_path: Path) -> None:
    config = tmp_path / "etlb.toml"
    config.write_text(CONFIG_TEXT, encoding="utf-8")
    space = Workspace(tmp_path, config, tmp_path / "alice.key")

    completed = space.run("bearer", "list")

    assert completed.returncode == EXIT_ERROR
    assert f"error: gate key {tmp_path / 'etlb-gate.key'} not found" in completed.stderr
    assert "hint: create it with: etlb init" in completed.stderr
    assert not (tmp_path / "etlb.db").exists()


def test_invalid_config_error(tmp_path: Path) -> None:
    config = tmp_path / "etlb.toml"
    config.write_text('[gate]\nstor = "x"\n', encoding="utf-8")
    space = Workspace(tmp_path, config, tmp_path / "alice.key")

    completed = space.run("bearer", "list")

    assert completed.returncode == EXIT_ERROR
    assert "gate.stor: Extra inputs are not permitted" in completed.stderr


def test_unknown_command_usage(workspace: Workspace) -> None:
    completed = workspace.run("bearers")

    assert completed.returncode == EXIT_USAGE
    assert "No such command 'bearers'" in completed.stderr


# delegation


def add_bob(workspace: Workspace) -> Path:
    key = workspace.keygen("bob")
    added = workspace.invoke("bearer", "add", "bob", "--name", "Bob", "--key", str(workspace.root / "bob.pub.jwk"))
    assert added.exit_code == 0, added.output
    return key


def test_delegate_and_accept(workspace: Workspace) -> None:
    parent = workspace.declare()
    bob_key = add_bob(workspace)
    offer = workspace.root / "offer.jws"

    offered = workspace.invoke(
        "scope", "delegate", parent["scope_id"], "--to", "bob", "--key", str(workspace.alice_key),
        "--max-total", "2000", "--valid-for", "8h", "--terms", "Bob stands in for Alice this week.",
        "--output", str(offer), "--yes",
    )  # fmt: skip
    accepted = workspace.invoke("scope", "accept", str(offer), "--key", str(bob_key), "--yes", "--json")
    checked = workspace.invoke(
        "check", "--server", "payments", "--tool", "transfer", "--args", transfer_arguments("900")
    )

    assert offered.exit_code == 0, offered.output
    assert accepted.exit_code == 0, accepted.output
    scope = json.loads(accepted.stdout)
    assert (scope["bearer"], scope["parent"], scope["delegator"]) == ("bob", parent["scope_id"], "alice")
    assert scope["limits"]["max_total"] == "2000"
    assert scope["terms"] == "Bob stands in for Alice this week."
    assert checked.exit_code == 0, checked.output
    assert f"bob under scope {scope['scope_id']}" in checked.output


def test_delegate_wider_than_parent_refused(workspace: Workspace) -> None:
    parent = workspace.declare()
    add_bob(workspace)

    result = workspace.run(
        "scope", "delegate", parent["scope_id"], "--to", "bob", "--key", str(workspace.alice_key),
        "--max-amount", "20000", "--terms", "Bob stands in.", "--yes",
    )  # fmt: skip

    assert result.returncode == EXIT_ERROR
    assert f"the delegation would be wider than scope {parent['scope_id']}: max_amount 20000" in result.stderr


def test_accept_garbage_offer(workspace: Workspace) -> None:
    bob_key = add_bob(workspace)
    offer = workspace.root / "offer.jws"
    offer.write_text("not a token\n", encoding="utf-8")

    result = workspace.invoke("scope", "accept", str(offer), "--key", str(bob_key), "--yes")

    assert result.exit_code == EXIT_USAGE
    assert "is not a delegation offer" in result.output


def test_delegate_with_another_bearers_key_refused(workspace: Workspace) -> None:
    parent = workspace.declare()
    bob_key = add_bob(workspace)

    result = workspace.invoke(
        "scope", "delegate", parent["scope_id"], "--to", "bob", "--key", str(bob_key), "--terms", "t", "--yes"
    )

    assert result.exit_code == EXIT_USAGE
    assert f"is not a key registered to alice, the bearer of scope {parent['scope_id']}" in result.output


def test_delegate_to_unregistered_bearer_refused(workspace: Workspace) -> None:
    parent = workspace.declare()

    result = workspace.invoke(
        "scope", "delegate", parent["scope_id"], "--to", "carol", "--key", str(workspace.alice_key), "--terms", "t"
    )

    assert result.exit_code == EXIT_USAGE
    assert "bearer carol is not registered; register them first with: etlb bearer add" in result.output


def test_scope_show_prints_condition(workspace: Workspace) -> None:
    scope = workspace.declare("--when", 'action.arguments.currency == "EUR"')

    result = workspace.invoke("scope", "show", scope["scope_id"])

    assert result.exit_code == 0, result.output
    assert 'condition        action.arguments.currency == "EUR"' in result.output


def test_declare_expired_scope_warns(workspace: Workspace) -> None:
    result = workspace.invoke(*declare_arguments(workspace.alice_key)[:-5], "--valid-until", "2020-02-01T00:00:00Z",
                              "--domain", "payments", "--terms", TERMS, "--yes")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "covers nothing" in result.output
    assert "warning: scope scope-" in result.output


def test_declare_kind_with_space_rejected(workspace: Workspace) -> None:
    arguments = declare_arguments(workspace.alice_key)
    arguments[arguments.index("payments.transfer")] = "pay ments"

    completed = workspace.run(*arguments)

    assert completed.returncode == EXIT_ERROR
    assert "scope declaration field 'kinds' has a pattern with spaces, 'pay ments', which matches nothing" in (
        completed.stderr
    )
