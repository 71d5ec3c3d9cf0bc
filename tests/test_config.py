"""Loading and validating `etlb.toml`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etlb.config import Config, default_config_text, load_config, parse_config
from etlb.errors import ConfigError
from etlb.model import Consequence

FULL_CONFIG = """\
[gate]
store = "sqlite:///data/gate.db"
agent = "treasury-bot"

[servers.payments]
trusted = true

[servers.shell]
trusted = false

[[rules]]
server = "payments"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"
amount_scale = 2

[[rules]]
tool = "read_*"
kind = "files.read"
consequence = "reversible"
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etlb.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_store_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETLB_STORE", raising=False)


def test_full_config_gate(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, FULL_CONFIG))

    assert config.store_url == "sqlite:///data/gate.db"
    assert config.agent == "treasury-bot"


def test_full_config_rules_in_order(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, FULL_CONFIG))

    assert [rule.kind for rule in config.rules] == ["payments.transfer", "files.read"]


def test_full_config_rule_fields(tmp_path: Path) -> None:
    rule = load_config(write_config(tmp_path, FULL_CONFIG)).rules[0]

    assert rule.model_dump() == {
        "tool": "transfer",
        "kind": "payments.transfer",
        "server": "payments",
        "consequence": Consequence.IRREVERSIBLE,
        "resource": "account:{from_account}",
        "amount": "{amount}",
        "unit": "{currency}",
        "amount_scale": 2,
        "arguments": None,
        "analyser": None,
        "command": None,
        "cwd": None,
        "home": None,
        "database": None,
        "dialect": None,
    }


def test_rule_defaults(tmp_path: Path) -> None:
    rule = load_config(write_config(tmp_path, FULL_CONFIG)).rules[1]

    assert rule.server == "*"
    assert rule.consequence is Consequence.REVERSIBLE
    assert rule.amount_scale == 0


def test_config_path_and_base_dir(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    config = load_config(path)

    assert config.path == path.resolve()
    assert config.base_dir == tmp_path.resolve()


def test_empty_file_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ""))

    assert config.store_url == "sqlite:///etlb.db"
    assert config.agent == "local-agent"
    assert config.servers == {}
    assert config.rules == ()


def test_default_path_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[gate]\nagent = "from-cwd"\n')
    monkeypatch.chdir(tmp_path)

    assert load_config().agent == "from-cwd"


def test_parsed_text_base_dir_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert parse_config("").base_dir == tmp_path


@pytest.mark.parametrize(
    ("server", "expected"),
    [("payments", True), ("shell", False), ("unknown", False), (None, False)],
    ids=["trusted", "listed-untrusted", "unlisted", "no-server"],
)
def test_trusts_server(server: str | None, expected: bool) -> None:
    config = parse_config(FULL_CONFIG)

    assert config.trusts(server) is expected


def test_store_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLB_STORE", "sqlite:////var/lib/etlb/override.db")

    config = load_config(write_config(tmp_path, FULL_CONFIG))

    assert config.store_url == "sqlite:////var/lib/etlb/override.db"


def test_empty_store_environment_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETLB_STORE", "")

    config = load_config(write_config(tmp_path, FULL_CONFIG))

    assert config.store_url == "sqlite:///data/gate.db"


def test_missing_file_hint(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError, match=re.escape(f"configuration file {path} not found")) as caught:
        load_config(path)

    assert caught.value.hint == "create one with: etlb init, or pass --config PATH"


def test_directory_as_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"cannot read configuration file {tmp_path}")):
        load_config(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[gate\nstore = 1\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path.resolve()} is not valid TOML")):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param('[gatee]\nstore = "x"\n', "gatee", id="unknown-section"),
        pytest.param('[gate]\nstor = "x"\n', "gate.stor", id="unknown-gate-key"),
        pytest.param("[servers.git]\ntrust = true\n", "servers.git.trust", id="unknown-server-key"),
        pytest.param('[[rules]]\ntool = "t"\nkind = "k"\nkinds = "k"\n', "rules.0.kinds", id="unknown-rule-key"),
    ],
)
def test_unknown_key_named(text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: Extra inputs are not permitted")) as caught:
        parse_config(text)

    assert caught.value.hint == "see docs/configuration.md for every setting"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param('[[rules]]\nkind = "k"\n', "rules.0.tool: Field required", id="rule-without-tool"),
        pytest.param('[[rules]]\ntool = "t"\n', "rules.0.kind: Field required", id="rule-without-kind"),
        pytest.param(
            '[[rules]]\ntool = "t"\nkind = "payments.*"\n',
            "rules.0.kind: Value error, kind 'payments.*' must be a dotted name",
            id="kind-with-wildcard",
        ),
        pytest.param(
            '[[rules]]\ntool = "t"\nkind = "pay ments"\n',
            "rules.0.kind: Value error, kind 'pay ments' must be a dotted name",
            id="kind-with-space",
        ),
        pytest.param(
            '[[rules]]\ntool = "t"\nkind = "k"\nconsequence = "maybe"\n',
            "rules.0.consequence: Input should be 'reversible' or 'irreversible'",
            id="unknown-consequence",
        ),
        pytest.param(
            '[[rules]]\ntool = "t"\nkind = "k"\namount_scale = 19\n',
            "rules.0.amount_scale: Input should be less than or equal to 18",
            id="scale-above-18",
        ),
        pytest.param(
            '[[rules]]\ntool = "t"\nkind = "k"\namount_scale = -1\n',
            "rules.0.amount_scale: Input should be greater than or equal to 0",
            id="negative-scale",
        ),
        pytest.param(
            '[servers.git]\ntrusted = "yes please"\n',
            "servers.git.trusted: Input should be a valid boolean",
            id="trusted-not-boolean",
        ),
        pytest.param("[gate]\nagent = 7\n", "gate.agent: Input should be a valid string", id="agent-not-string"),
    ],
)
def test_invalid_value_named(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config(text)


def test_all_problems_listed() -> None:
    with pytest.raises(ConfigError, match=r"gate\.stor: .*; rules\.0\.kind: Field required"):
        parse_config('[gate]\nstor = "x"\n\n[[rules]]\ntool = "t"\n')


def test_default_text_parses() -> None:
    config = parse_config(default_config_text())

    assert isinstance(config, Config)
    assert config.store_url == "sqlite:///etlb.db"
    assert config.rules == ()
