"""The messages a bearer receives about bindings made in their name, and when they are sent. No I/O.

A `Notice` is one binding as a notification carries it. `plan_messages` applies the digest rule to
the notices waiting for one bearer on one channel:

- more than `digest_after` notices waiting: one digest now, listing them all;
- otherwise, when the messages the bearer received since one `digest_interval` before the oldest
  waiting notice was queued, plus the waiting notices, are at most `digest_after`: one message per
  notice now;
- otherwise the notices wait, and go as one message once the oldest has waited a whole interval.

So a bearer receives at most `digest_after` single messages per interval, a burst becomes one
digest, and notices held back because messages were frequent stay together in one digest.
`webhook_body` and `email_message` build the two channels' payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from etlb.canonical import sha256_digest
from etlb.model import format_time

__all__ = [
    "DIGEST_TYPE",
    "NOTICE_TYPE",
    "Notice",
    "email_message",
    "message_id",
    "notice_from_record",
    "plan_messages",
    "webhook_body",
]

NOTICE_TYPE = "etlb.binding"
DIGEST_TYPE = "etlb.digest"


@dataclass(frozen=True, slots=True)
class Notice:
    """One binding as notifications show it. `amount` is "VALUE UNIT", or None for an action without one."""

    binding_id: str
    sequence: int
    time: str
    bearer: str
    scope_id: str
    kind: str
    resource: str
    amount: str | None
    agent: str
    tool: str
    server: str | None
    action_digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "binding_id": self.binding_id,
            "sequence": self.sequence,
            "time": self.time,
            "bearer": self.bearer,
            "scope_id": self.scope_id,
            "kind": self.kind,
            "resource": self.resource,
            "amount": self.amount,
            "agent": self.agent,
            "tool": self.tool,
            "server": self.server,
            "action_digest": self.action_digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        return cls(**data)

    def describe(self) -> str:
        amount = f" of {self.amount}" if self.amount else ""
        return f"{self.kind} on {self.resource}{amount} by agent {self.agent}"


def notice_from_record(record: dict[str, Any]) -> Notice:
    """Build the notice of a parsed `binding` ledger record."""
    data = record["data"]
    action = data["action"]
    amount = action.get("amount")
    return Notice(
        binding_id=data["binding_id"],
        sequence=int(record["seq"]),
        time=record["time"],
        bearer=data["bearer"],
        scope_id=data["scope_id"],
        kind=action["kind"],
        resource=action["resource"],
        amount=f"{amount['value']} {amount['unit']}" if amount else None,
        agent=action["agent"],
        tool=action["tool"],
        server=action.get("server"),
        action_digest=action["digest"],
    )


def plan_messages(
    waiting: Sequence[Notice],
    *,
    oldest_queued: datetime,
    recent_messages: int,
    now: datetime,
    digest_after: int,
    digest_interval: timedelta,
) -> list[list[Notice]]:
    """Return the messages to send now to one bearer on one channel, each a list of notices; [] to wait.

    `oldest_queued` is when the oldest waiting notice was queued, and `recent_messages` counts the
    messages the bearer received on the channel since `oldest_queued - digest_interval`. Counting from
    there, not from `now`, keeps notices that were held back from leaking out one by one later.
    """
    if not waiting:
        return []
    if len(waiting) > digest_after:
        return [list(waiting)]
    if recent_messages + len(waiting) <= digest_after:
        return [[notice] for notice in waiting]
    if now - oldest_queued >= digest_interval:
        return [list(waiting)]
    return []


def message_id(notices: Sequence[Notice]) -> str:
    """Name a message by the bindings it lists, so that a message sent again keeps its id."""
    return sha256_digest(sorted(notice.binding_id for notice in notices))


def webhook_body(notices: Sequence[Notice], *, origin: str, sent_at: datetime) -> dict[str, Any]:
    """Return the JSON body of a webhook notification: one binding, or a digest of several."""
    return {
        "type": NOTICE_TYPE if len(notices) == 1 else DIGEST_TYPE,
        "id": message_id(notices),
        "origin": origin,
        "bearer": notices[0].bearer,
        "sent_at": format_time(sent_at),
        "bindings": [notice.to_json() for notice in notices],
    }


def email_message(
    notices: Sequence[Notice], *, sender: str, recipient: str, bearer_name: str, origin: str
) -> EmailMessage:
    """Return the plain-text e-mail telling a bearer about one binding, or a digest of several."""
    message = EmailMessage()
    if len(notices) == 1:
        message["Subject"] = f"etlb: {notices[0].describe()} was bound to you"
    else:
        message["Subject"] = f"etlb: {len(notices)} actions were bound to you"
    message["From"] = sender
    message["To"] = recipient
    message["X-Etlb-Message-Id"] = message_id(notices)

    lines = [
        f"Dear {bearer_name},",
        "",
        f"the liability gate {origin} bound {'this action' if len(notices) == 1 else 'these actions'} to you,",
        "under a scope you signed. You carry their consequences.",
        "",
    ]
    for notice in notices:
        lines += [
            f"- {notice.describe()}",
            f"  at {notice.time}, binding {notice.binding_id}, ledger record {notice.sequence}",
            f"  tool {notice.server + '/' if notice.server else ''}{notice.tool}, scope {notice.scope_id}",
            f"  action digest {notice.action_digest}",
        ]
    lines += [
        "",
        "See everything bound to you with: etlb report --bearer " + notices[0].bearer,
        "If you did not expect this, revoke the scope: etlb scope revoke SCOPE_ID --key YOUR_KEY_FILE",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message
