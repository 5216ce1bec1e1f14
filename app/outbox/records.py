"""Outbox rows: claiming them, recording what Twilio said, and the delivery-status table.

The message status machine is drawn on `app.store.models.OutboundMessage`. Every
function here runs in the caller's transaction.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, text
from sqlalchemy.orm import Session, object_session

from app.config import Settings
from app.consent.service import record_carrier_opt_out
from app.core.programs import Catalog
from app.outbox.rules_check import HeldBack, record_send_time_decision
from app.outbox.twilio_gateway import SendReceipt, SmsSendError
from app.store.db import utcnow
from app.store.models import (
    DELIVERED,
    FAILED,
    NOTIFY_CHANNEL,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    UNDELIVERED,
    DeliveryReceipt,
    OutboundMessage,
    SenderHeartbeat,
)

logger = logging.getLogger(__name__)


# Twilio's message statuses in the order a message moves through them. Callbacks can
# arrive duplicated, out of order and concurrently, so a message only ever moves to a
# higher rank. The final statuses are ranked too (no ties), so the outcome depends on
# which callbacks arrived, never on their order; a report of failure outranks one of
# delivery, so bad news from the carrier is never hidden by an earlier "delivered".
STATUS_RANK = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "read": 5,
    "undelivered": 6,
    "canceled": 7,
    "failed": 8,
}
# Twilio's clock and ours may differ; a message created this long (s) before its outbox
# What a callback status means for `OutboundMessage.status`.
CALLBACK_MESSAGE_STATUS = {
    "delivered": DELIVERED,
    "read": DELIVERED,
    "undelivered": UNDELIVERED,
    "failed": FAILED,
    "canceled": FAILED,
}


def notify_outbox(session: Session) -> None:
    """Wake the workers when this transaction commits (PostgreSQL); SQLite workers poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


def apply_receipt(message: OutboundMessage, status: str, error_code: int | None) -> None:
    if STATUS_RANK.get(status, 0) <= STATUS_RANK.get(message.delivery_status or "", 0):
        return
    message.delivery_status = status
    message.status = CALLBACK_MESSAGE_STATUS.get(status, message.status)
    if error_code is not None:
        message.error_code = error_code


@dataclass(frozen=True)
class ClaimedMessage:
    """A message a worker holds: what to send, and to whom."""

    id: int
    subscriber_id: int
    program_id: str | None
    kind: str
    to_number: str
    from_number: str | None
    body: str
    attempts: int
    created_at: datetime | None = None
    # An earlier attempt left no SID: Twilio may hold it already (see `Sender.deliver`).
    earlier_attempt_unknown: bool = False


def claim_due(
    session: Session,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    now: datetime,
) -> list[ClaimedMessage]:
    """Claim up to `limit` due messages (consent is checked later, just before each send)."""
    due = or_(
        (OutboundMessage.status == QUEUED) & (OutboundMessage.next_attempt_at <= now),
        (OutboundMessage.status == SENDING) & (OutboundMessage.lease_expires_at < now),
    )
    query = (
        select(OutboundMessage)
        .where(due)
        .order_by(OutboundMessage.next_attempt_at, OutboundMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed: list[ClaimedMessage] = []
    for message in session.execute(query).scalars():
        earlier_attempt_unknown = message.attempts > 0 and message.twilio_sid is None
        message.status = SENDING
        message.attempts += 1
        message.lease_expires_at = now + lease
        message.claimed_by = worker_id[:100]
        claimed.append(
            ClaimedMessage(
                id=message.id,
                subscriber_id=message.subscriber_id,
                program_id=message.program_id,
                kind=message.kind,
                to_number=message.to_number or "",
                from_number=message.from_number,
                body=message.body,
                attempts=message.attempts,
                created_at=message.created_at,
                earlier_attempt_unknown=earlier_attempt_unknown,
            )
        )
    return claimed


def send_time_note(reason: str) -> str:
    """The error message of a reply the consent check refused (metrics count some by it)."""
    return f"suppressed at send time: {reason}"


def suppress_at_send_time(message: OutboundMessage, reason: str) -> None:
    """The send-time check held `message` back: suppress it, or (a program message the
    sending rules defer, `reason.retry_at`) queue it again for later; no send was made."""
    retry_at = None
    if isinstance(reason, HeldBack):
        record_send_time_decision(object_session(message), message, reason, utcnow())
        retry_at = reason.retry_at
    if retry_at is not None:
        message.status = QUEUED
        message.next_attempt_at = retry_at
        message.not_before = retry_at
        message.decision = "deferred"
        message.reason = reason.decision.reason if reason.decision else str(reason)[:120]
        message.lease_expires_at = None
        message.claimed_by = None
        message.attempts = max(0, message.attempts - 1)  # nothing was sent
        logger.info("program message deferred at send time", extra={"outbound_id": message.id})
        return
    message.status = SUPPRESSED
    message.lease_expires_at = None
    message.error_message = send_time_note(reason)
    logger.info("reply suppressed: no consent", extra={"outbound_id": message.id})


def record_sent(session: Session, message_id: int, receipt: SendReceipt, now: datetime) -> None:
    """Twilio accepted the message: keep its SID and apply any callback that came first."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    message.status = SENT
    message.twilio_sid = receipt.sid
    message.sent_at = now
    message.lease_expires_at = None
    message.error_code = None
    message.error_message = None
    early = session.execute(
        select(DeliveryReceipt)
        .where(DeliveryReceipt.message_sid == receipt.sid)
        .order_by(DeliveryReceipt.id)
    ).scalars()
    for callback in early:
        apply_receipt(message, callback.status, callback.error_code)


def backoff_delay(attempts: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempts + 1`: exponential, capped, with jitter.

    "Equal jitter": half the exponential delay is fixed, the other half random,
    so retries of many messages after one outage spread out instead of
    hammering Twilio together.
    """
    rng = rng or random
    delay = min(settings.sender_backoff_max, settings.sender_backoff_base * 2 ** (attempts - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


def record_failure(
    session: Session,
    message_id: int,
    error: SmsSendError,
    *,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    rng: random.Random | None = None,
) -> str:
    """Retry later or fail for good; a carrier opt-out is recorded. Returns the new status."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    if message.twilio_sid is not None:
        # A status callback showed meanwhile that Twilio has this message after all.
        return message.status
    message.error_code = error.code
    message.error_message = str(error)[:2000]
    message.lease_expires_at = None
    if error.retryable and message.attempts < settings.sender_max_attempts:
        message.status = QUEUED
        message.next_attempt_at = now + timedelta(
            seconds=backoff_delay(message.attempts, settings, rng)
        )
    else:
        message.status = FAILED
    if error.carrier_opt_out:
        carrier_opt_out(session, catalog, message, error.code or 0, now)
    return message.status


def carrier_opt_out(
    session: Session, catalog: Catalog, message: OutboundMessage, code: int, now: datetime
) -> None:
    if message.to_number:
        record_carrier_opt_out(
            session,
            catalog,
            phone=message.to_number,
            number_texted=message.from_number,
            program_id=message.program_id,
            occurred_at=now,
            error_code=code,
            message_sid=message.twilio_sid,
        )


# ----------------------------------------------------------------------------------------------
# Heartbeats


def record_heartbeat(session: Session, worker_id: str, now: datetime) -> None:
    """Mark `worker_id` as alive now (its row is made on the first beat)."""
    beat = session.get(SenderHeartbeat, worker_id[:100])
    if beat is None:
        session.add(SenderHeartbeat(worker_id=worker_id[:100], started_at=now, beat_at=now))
    else:
        beat.beat_at = now


def clear_heartbeat(session: Session, worker_id: str) -> None:
    """Forget `worker_id`: it stopped cleanly, so nothing should count on it."""
    session.execute(delete(SenderHeartbeat).where(SenderHeartbeat.worker_id == worker_id[:100]))
