"""The notifier: follows the ledger from its cursor and sends each bearer a message about their bindings.

One run reads the ledger records after the cursor, queues a notice per binding and channel, then
delivers what the digest rule of `etlb.notify.messages.plan_messages` releases. A failed delivery
is logged and its notices stay queued for the next run, so nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etlb.config import Config, NotifySection
from etlb.errors import ConfigError, StoreError
from etlb.gate_key import load_gate_signer
from etlb.model import Bearer
from etlb.notify.channels import Channel, DeliveryError, EmailChannel, Recipient, WebhookChannel
from etlb.notify.messages import Notice, message_id, notice_from_record, plan_messages
from etlb.notify.state import NotifyState
from etlb.signing import load_private_key
from etlb.store.base import Store

__all__ = ["SMTP_PASSWORD_VARIABLE", "Notifier", "RunSummary", "build_channels"]

logger = logging.getLogger(__name__)

# The name of the environment variable with the SMTP password; the name is not a secret.
SMTP_PASSWORD_VARIABLE = "ETLB_SMTP_PASSWORD"  # noqa: S105

# Records read between two commits of the cursor, so a long backlog is never held in one transaction.
_PAGE = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Counts of one run: ledger records read, notices queued, messages sent and failed, notices left."""

    records: int
    queued: int
    sent: int
    failed: int
    waiting: int


class Notifier:
    def __init__(
        self,
        store: Store,
        state: NotifyState,
        channels: Sequence[Channel],
        settings: NotifySection,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._state = state
        self._channels = {channel.name: channel for channel in channels}
        self._settings = settings
        self._clock = clock

    def run_once(self) -> RunSummary:
        """Queue the notices of new bindings, then deliver what is due. Returns what was done."""
        bearers: dict[str, Bearer | None] = {}
        records, queued = self._scan(bearers)

        sent = failed = 0
        for name, channel in self._channels.items():
            for bearer_id in self._state.waiting_bearers(name):
                recipient = self._recipient(bearer_id, bearers)
                for notices in self._due(name, bearer_id):
                    if self._deliver(channel, notices, recipient):
                        sent += 1
                    else:
                        failed += 1
        return RunSummary(records, queued, sent, failed, self._state.count_waiting())

    def follow(self, stop: threading.Event) -> None:
        """Run every `poll_seconds` until `stop` is set. A failed run is logged and tried again."""
        logger.info("notifier started, polling the ledger every %.1f s", self._settings.poll_seconds)
        while not stop.is_set():
            try:
                summary = self.run_once()
                if summary.queued or summary.sent or summary.failed:
                    logger.info("notifier run: %s", summary)
            except StoreError as error:
                logger.warning("notifier run failed, retrying in %.1f s: %s", self._settings.poll_seconds, error)
            stop.wait(self._settings.poll_seconds)
        logger.info("notifier stopped")

    def _scan(self, bearers: dict[str, Bearer | None]) -> tuple[int, int]:
        start, expected_hash = self._state.cursor()
        if start > 0:
            self._check_same_ledger(start, expected_hash)

        records = queued = 0
        batch: list[tuple[str, Notice]] = []
        last_sequence, last_hash = start - 1, expected_hash
        for entry in self._store.ledger_entries(start):
            records += 1
            record = json.loads(entry.record)
            if record["type"] == "binding":
                notice = notice_from_record(record)
                batch.extend((channel, notice) for channel in self._channels_for(notice, bearers))
            last_sequence, last_hash = entry.sequence, entry.chain_hash
            if records % _PAGE == 0:
                queued += self._commit(batch, last_sequence, last_hash)
                batch = []
        if last_hash is not None and last_sequence >= start:
            queued += self._commit(batch, last_sequence, last_hash)
        return records, queued

    def _commit(self, batch: list[tuple[str, Notice]], last_sequence: int, last_hash: bytes) -> int:
        self._state.advance(next_seq=last_sequence + 1, chain_hash=last_hash, queued=batch, queued_at=self._clock())
        return len(batch)

    def _check_same_ledger(self, start: int, expected_hash: bytes | None) -> None:
        entry = self._store.entry(start - 1)
        if entry is None or entry.chain_hash != expected_hash:
            message = (
                f"notifier state {self._state.path} has read {start} records of another ledger: "
                f"record {start - 1} of this store {'is missing' if entry is None else 'has another chain hash'}"
            )
            raise ConfigError(message, hint="point notify.state at a new file for this store")

    def _channels_for(self, notice: Notice, bearers: dict[str, Bearer | None]) -> list[str]:
        channels = []
        for name in self._channels:
            if name == "email" and self._email(notice.bearer, bearers) is None:
                # Not queued, so that a bearer without an address does not keep a queue that never empties.
                logger.warning(
                    "binding %s is not e-mailed: bearer %s has no %r attribute",
                    notice.binding_id,
                    notice.bearer,
                    self._settings.email_attribute,
                )
                continue
            channels.append(name)
        return channels

    def _due(self, channel: str, bearer_id: str) -> list[list[Notice]]:
        waiting = self._state.waiting(channel, bearer_id)
        now = self._clock()
        interval = timedelta(seconds=self._settings.digest_interval_seconds)
        oldest = min(queued.queued_at for queued in waiting)
        return plan_messages(
            [queued.notice for queued in waiting],
            oldest_queued=oldest,
            recent_messages=self._state.recent_messages(channel, bearer_id, oldest - interval),
            now=now,
            digest_after=self._settings.digest_after,
            digest_interval=interval,
        )

    def _deliver(self, channel: Channel, notices: list[Notice], recipient: Recipient) -> bool:
        now = self._clock()
        identifier = message_id(notices)
        try:
            channel.send(notices, recipient, sent_at=now)
        except DeliveryError as error:
            logger.warning(
                "%s message %s to bearer %s with %d notice(s) failed and stays queued: %s",
                channel.name,
                identifier,
                recipient.bearer_id,
                len(notices),
                error.message,
            )
            self._state.mark_failed(channel.name, notices, error.message)
            return False

        self._state.mark_sent(channel.name, identifier, notices, now)
        logger.info(
            "%s message %s sent to bearer %s with %d notice(s)",
            channel.name,
            identifier,
            recipient.bearer_id,
            len(notices),
        )
        return True

    def _recipient(self, bearer_id: str, bearers: dict[str, Bearer | None]) -> Recipient:
        bearer = self._bearer(bearer_id, bearers)
        return Recipient(bearer_id, bearer.name if bearer else bearer_id, self._email(bearer_id, bearers))

    def _email(self, bearer_id: str, bearers: dict[str, Bearer | None]) -> str | None:
        bearer = self._bearer(bearer_id, bearers)
        return bearer.attributes.get(self._settings.email_attribute) if bearer else None

    def _bearer(self, bearer_id: str, bearers: dict[str, Bearer | None]) -> Bearer | None:
        if bearer_id not in bearers:
            bearers[bearer_id] = self._store.get_bearer(bearer_id)
        return bearers[bearer_id]


def build_channels(config: Config) -> list[Channel]:
    """Build the channels `[notify]` configures; raise `ConfigError` when it configures none."""
    settings = config.notify
    signer = load_gate_signer(config.key_path, config.origin)
    channels: list[Channel] = []
    if settings.webhook_url is not None:
        key = load_private_key(config.key_path)
        channels.append(
            WebhookChannel(settings.webhook_url, key=key, origin=signer.origin, timeout=settings.timeout_seconds)
        )
    if settings.smtp_host is not None and settings.smtp_from is not None:
        channels.append(
            EmailChannel(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=os.environ.get(SMTP_PASSWORD_VARIABLE),
                origin=signer.origin,
                timeout=settings.timeout_seconds,
            )
        )
    if not channels:
        message = "no notification channel is configured"
        raise ConfigError(message, hint="set notify.webhook_url or notify.smtp_host and notify.smtp_from in etlb.toml")
    return channels
