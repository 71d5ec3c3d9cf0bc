"""Feedback to bearers: a message for every action bound to them, by signed webhook or by e-mail.

`Notifier` follows the ledger from a cursor kept in its own state file (`NotifyState`), queues one
notice per binding and channel, and sends them one by one or, when they are frequent, as one
digest. `verify_notification` is what a webhook receiver written in Python calls to check the
gate's signature.
"""

from __future__ import annotations

from etlb.notify.channels import (
    NOTIFICATION_TYP,
    SIGNATURE_HEADER,
    Channel,
    DeliveryError,
    EmailChannel,
    Recipient,
    WebhookChannel,
    verify_notification,
)
from etlb.notify.messages import Notice, plan_messages
from etlb.notify.notifier import SMTP_PASSWORD_VARIABLE, Notifier, RunSummary, build_channels
from etlb.notify.state import NotifyState

__all__ = [
    "NOTIFICATION_TYP",
    "SIGNATURE_HEADER",
    "SMTP_PASSWORD_VARIABLE",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "Notice",
    "Notifier",
    "NotifyState",
    "Recipient",
    "RunSummary",
    "WebhookChannel",
    "build_channels",
    "plan_messages",
    "verify_notification",
]
