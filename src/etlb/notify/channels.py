"""Delivery channels: a signed webhook POST (httpx) and e-mail through an SMTP server (smtplib).

Webhook signature: the body is the RFC 8785 canonical JSON of the notification, and the
`ETLB-Signature` header carries a compact JWS (RFC 7515) over those bytes with its payload part
left empty (detached content, RFC 7515 appendix F): `HEADER..SIGNATURE`. It is signed with the
gate's Ed25519 key (`alg: EdDSA`, RFC 8037), and `typ` is `etlb-notification+jws`. A receiver puts
the base64url of the body between the two dots and verifies the token with the gate's public JWK,
which `etlb notify key` prints. A message can be sent again after a crash, so the receiver drops
one whose `id` it has already seen.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from etlb.canonical import canonical_bytes
from etlb.errors import EtlbError, SignatureError
from etlb.notify.messages import Notice, email_message, webhook_body
from etlb.signing import sign_payload, verify_jws

__all__ = [
    "NOTIFICATION_TYP",
    "SIGNATURE_HEADER",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "Recipient",
    "WebhookChannel",
    "redact_webhook_url",
    "verify_notification",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "ETLB-Signature"
NOTIFICATION_TYP = "etlb-notification+jws"


class DeliveryError(EtlbError):
    """A channel could not deliver a message; the notices stay queued for the next run."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """The bearer a message is for: id, display name and, for e-mail, the address."""

    bearer_id: str
    name: str
    email: str | None


class Channel(Protocol):
    name: str

    def send(self, notices: Sequence[Notice], recipient: Recipient, *, sent_at: datetime) -> None:
        """Deliver one message listing `notices`, or raise `DeliveryError`."""


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, *, key: Ed25519PrivateKey, origin: str, timeout: float) -> None:
        self._url = url
        self._key = key
        self._origin = origin
        self._timeout = timeout

    def send(self, notices: Sequence[Notice], recipient: Recipient, *, sent_at: datetime) -> None:
        body = webhook_body(notices, origin=self._origin, sent_at=sent_at)
        content = canonical_bytes(body)
        token = sign_payload(self._key, body, typ=NOTIFICATION_TYP)
        header, _, signature = token.split(".")
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: f"{header}..{signature}"}

        where = redact_webhook_url(self._url)
        try:
            response = httpx.post(self._url, content=content, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as error:
            message = f"webhook {where} failed for bearer {recipient.bearer_id}: {type(error).__name__}: {error}"
            raise DeliveryError(message, hint="the notices stay queued and are sent again on the next run") from error
        if not response.is_success:
            message = f"webhook {where} returned HTTP {response.status_code} for bearer {recipient.bearer_id}"
            raise DeliveryError(message, hint="the notices stay queued and are sent again on the next run")


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        starttls: bool,
        username: str | None,
        password: str | None,
        origin: str,
        timeout: float,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._username = username
        self._password = password
        self._origin = origin
        self._timeout = timeout

    def send(self, notices: Sequence[Notice], recipient: Recipient, *, sent_at: datetime) -> None:
        if recipient.email is None:
            message = f"bearer {recipient.bearer_id} has no e-mail address"
            raise DeliveryError(message, hint="register the bearer with --attr email=ADDRESS")
        mail = email_message(
            notices, sender=self._sender, recipient=recipient.email, bearer_name=recipient.name, origin=self._origin
        )

        # Errors name the server and the recipient, never the credentials.
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as client:
                if self._starttls:
                    client.starttls(context=ssl.create_default_context())
                if self._username is not None:
                    client.login(self._username, self._password or "")
                client.send_message(mail)
        except (smtplib.SMTPException, OSError) as error:
            message = (
                f"SMTP server {self._host}:{self._port} did not accept the message to {recipient.email} "
                f"(bearer {recipient.bearer_id}): {type(error).__name__}: {error}"
            )
            raise DeliveryError(message, hint="the notices stay queued and are sent again on the next run") from error


def verify_notification(body: bytes, signature: str, gate_jwk: dict[str, str]) -> dict[str, Any]:
    """Check a webhook body against its `ETLB-Signature` header and return the notification.

    Raises `etlb.errors.SignatureError` when the signature does not verify with the gate's key, the
    body was changed, or the body is not canonical JSON.
    """
    header, separator, tail = signature.partition("..")
    if not separator or "." in tail:
        message = f"{SIGNATURE_HEADER} is not a detached compact JWS of the form HEADER..SIGNATURE"
        raise SignatureError(message)
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")
    return verify_jws(f"{header}.{payload}.{tail}", gate_jwk, typ=NOTIFICATION_TYP)


def redact_webhook_url(url: str) -> str:
    """Return the URL without its query, fragment and user information, which often hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
