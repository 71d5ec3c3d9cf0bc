"""Digest rule and message contents, without servers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from etlb.config import parse_config
from etlb.errors import ConfigError
from etlb.notify import Notice, plan_messages
from etlb.notify.channels import redact_webhook_url
from etlb.notify.messages import email_message, message_id, webhook_body
from tests.conftest import START

HOUR = timedelta(hours=1)


def notice(number: int, amount: str | None = "10 EUR") -> Notice:
    return Notice(
        binding_id=f"binding-{number}",
        sequence=number,
        time="2026-06-01T12:00:00.000Z",
        bearer="alice",
        scope_id="scope-1",
        kind="payments.transfer",
        resource="account:DE01",
        amount=amount,
        agent="agent-1",
        tool="transfer",
        server="bank",
        action_digest=f"sha256:{number:064x}",
    )


# (name, waiting, recent messages, minutes the oldest waited, expected message sizes)
PLAN_CASES = [
    ("nothing waiting", 0, 0, 0, []),
    ("one, quiet bearer", 1, 0, 0, [1]),
    ("up to the limit, one by one", 3, 0, 0, [1, 1, 1]),
    ("burst over the limit", 4, 0, 0, [4]),
    ("frequent, held", 2, 2, 10, []),
    ("frequent, held a whole interval", 2, 2, 60, [2]),
    ("one held a whole interval", 1, 3, 60, [1]),
    ("room for one more", 1, 2, 0, [1]),
]


@pytest.mark.parametrize(
    ("waiting", "recent", "waited", "expected"),
    [case[1:] for case in PLAN_CASES],
    ids=[case[0] for case in PLAN_CASES],
)
def test_plan_messages(waiting: int, recent: int, waited: int, expected: list[int]) -> None:
    notices = [notice(number) for number in range(waiting)]

    planned = plan_messages(
        notices,
        oldest_queued=START,
        recent_messages=recent,
        now=START + timedelta(minutes=waited),
        digest_after=3,
        digest_interval=HOUR,
    )

    assert [len(message) for message in planned] == expected
    assert [item for message in planned for item in message] == (notices if expected else [])


def test_message_id_ignores_order() -> None:
    assert message_id([notice(1), notice(2)]) == message_id([notice(2), notice(1)])
    assert message_id([notice(1)]) != message_id([notice(2)])


def test_webhook_body_single_and_digest() -> None:
    single = webhook_body([notice(1)], origin="etlb/abc", sent_at=START)
    digest = webhook_body([notice(1), notice(2, amount=None)], origin="etlb/abc", sent_at=START)

    assert single["type"] == "etlb.binding"
    assert single["bearer"] == "alice"
    assert single["origin"] == "etlb/abc"
    assert single["sent_at"] == "2026-06-01T12:00:00.000Z"
    assert single["bindings"] == [notice(1).to_json()]
    assert digest["type"] == "etlb.digest"
    assert [item["amount"] for item in digest["bindings"]] == ["10 EUR", None]


def test_email_lists_every_binding() -> None:
    mail = email_message(
        [notice(1), notice(2)],
        sender="gate@example.org",
        recipient="alice@example.org",
        bearer_name="Alice",
        origin="etlb/abc",
    )
    text = mail.get_content()

    assert mail["Subject"] == "etlb: 2 actions were bound to you"
    assert text.startswith("Dear Alice,\n")
    assert "- payments.transfer on account:DE01 of 10 EUR by agent agent-1\n" in text
    assert "binding binding-1, ledger record 1" in text
    assert "binding binding-2, ledger record 2" in text
    assert "etlb report --bearer alice" in text


def test_webhook_url_redacted() -> None:
    url = "https://user:token@hooks.example.org:8443/etlb/in?key=secret#part"

    assert redact_webhook_url(url) == "https://hooks.example.org:8443/etlb/in"


def test_config_notify_section() -> None:
    config = parse_config(
        '[notify]\nwebhook_url = "https://hooks.example.org/etlb"\nsmtp_host = "smtp.example.org"\n'
        'smtp_from = "gate@example.org"\ndigest_after = 5\n'
    )

    assert config.notify.webhook_url == "https://hooks.example.org/etlb"
    assert config.notify.smtp_port == 587
    assert config.notify.smtp_starttls is True
    assert config.notify.digest_after == 5
    assert config.notify.digest_interval_seconds == 3600
    assert config.notify.state == "etlb-notify.db"


def test_config_smtp_needs_sender() -> None:
    with pytest.raises(ConfigError, match=r"notify\.smtp_from is missing"):
        parse_config('[notify]\nsmtp_host = "smtp.example.org"\n')


def test_config_rejects_password_setting() -> None:
    with pytest.raises(ConfigError, match="smtp_password"):
        parse_config('[notify]\nsmtp_password = "secret"\n')
