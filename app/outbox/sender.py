"""The outbox worker: claim a reply, check consent, wait for a send slot, send, record.

Replies are written to `outbound_messages` in the same transaction as the text
that caused them (`app.consent.inbound`); this module hands them to the SMS gateway.
The message status machine is drawn on `app.store.models.OutboundMessage`.

- **Claiming.** A worker claims due messages (`FOR UPDATE SKIP LOCKED` on
  PostgreSQL, the database write lock on SQLite) by moving them to ``sending``
  with a lease. A message whose lease expired (its worker died) is claimed again.
- **Consent at send time.** Just before sending (after the wait for a send
  slot), the subscriber's status in the message's program is read again; only
  the opt-out confirmation and HELP answers may reach an opted-out number, and
  nothing reaches an erased or suppressed one. Anything else becomes
  ``suppressed``. The check is made once, in the one place where it can be
  *held* until Twilio has answered: on PostgreSQL the subscriber row is locked ``FOR SHARE``
  (every text appended to that number's chain updates the row, so an opt-out
  waits), on SQLite a shared lock on the number (`Database.number_guard`) that
  every opt-out path (texts, carrier opt-outs, erasure, staff decisions) takes
  exclusively. An opt-out therefore commits either before
  the check (the reply is suppressed) or after Twilio accepted the reply, never
  in between. Only texts from a number with a reply in flight wait, at most one
  Twilio round trip.
- **Pacing.** `SENDER_MPS` is shared by every worker through one database row
  holding the next free send slot: each send reserves the slot `1/SENDER_MPS`
  after the previous one (with 3% headroom for timing jitter), so the handoffs
  to Twilio never exceed the cap in any one-second window.
- **Retries.** 429, 5xx and timeouts go back to ``queued`` with exponential
  backoff and jitter, up to `SENDER_MAX_ATTEMPTS`, then ``failed``; invalid
  numbers and other refusals fail at once; error 21610 (the recipient opted out
  at the carrier) fails at once and records a carrier opt-out in the ledger.
- **No duplicates after a crash.** Twilio may accept a message whose acceptance
  we never record (the worker dies, the database goes away, the answer times
  out). Two things find it again: the StatusCallback URL names the outbox row
  (``/twilio/status?outbox=<id>``, covered by Twilio's signature), so a callback
  for a SID we never stored attaches it to its row; and before any retry of a
  message with no SID, the worker lists the recipient's recent messages at
  Twilio and adopts one with the same body created since the row was queued
  (and not already another row's) instead of sending again.
- **Waking up.** A new message wakes the worker through PostgreSQL's
  LISTEN/NOTIFY; SQLite is polled every `SENDER_POLL_INTERVAL` seconds.
- **Heartbeat.** While it runs, a worker refreshes its `sender_heartbeats` row
  every `SENDER_HEARTBEAT_SECONDS`, so `/readyz` and `/metrics` can tell that
  something is sending; the row is removed when the worker stops cleanly.
- **Stopping.** `Sender.run` stops claiming when `stop` is set (a `StopFlag`,
  safe to set from a signal handler), finishes the messages in hand, and returns.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.consent.service import record_carrier_opt_out
from app.core import flows
from app.core.programs import Catalog
from app.ledger.chain import insert_ignoring_conflicts
from app.ledger.suppression import history_may_be_texted, phone_hmac
from app.outbox.twilio_gateway import (
    ERROR_UNSUBSCRIBED,
    OutgoingSms,
    SendReceipt,
    SmsGateway,
    SmsSendError,
)
from app.store.db import Database, make_engine, utcnow
from app.store.models import (
    DELIVERED,
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    UNDELIVERED,
    DeliveryReceipt,
    OutboundMessage,
    SenderHeartbeat,
    SenderPace,
    Subscriber,
    Subscription,
    Suppression,
)

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"
# Send slots are spaced for 97% of SENDER_MPS: a request that leaves a few milliseconds
# late must never push a one-second window at Twilio over the cap.
PACING_HEADROOM = 0.97
# A send that would leave this long (seconds) after its slot takes a new slot instead.
LATE_SEND_LIMIT = 0.005
MAX_RESLOTS = 3

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
# row still counts as an earlier attempt of it.
CLOCK_SKEW = timedelta(seconds=60)
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


# ----------------------------------------------------------------------------------------------
# Delivery status callbacks


def record_delivery_status(
    session: Session,
    *,
    message_sid: str,
    status: str,
    error_code: int | None,
    catalog: Catalog | None = None,
    outbound_id: int | None = None,
) -> OutboundMessage | None:
    """Keep a status callback and move its message forward (never back).

    The receipt is kept even when no message has this SID yet: the callback can
    beat the worker's own commit, and `record_sent` applies it then. When the
    callback names its outbox row (`outbound_id`, from the signed callback URL)
    and that row has no SID yet, the SID is attached to it: Twilio accepted the
    message even if the worker never lived to record it, and it must not be sent
    again.
    """
    now = utcnow()
    session.add(
        DeliveryReceipt(
            message_sid=message_sid, status=status, error_code=error_code, received_at=now
        )
    )
    message = session.execute(
        select(OutboundMessage).where(OutboundMessage.twilio_sid == message_sid).with_for_update()
    ).scalar_one_or_none()
    if message is None and outbound_id is not None:
        message = session.get(OutboundMessage, outbound_id, with_for_update=True)
        if message is None:
            return None
        if message.twilio_sid is not None and message.twilio_sid != message_sid:
            logger.warning(
                "status callback for a second copy of a message",
                extra={"outbound_id": message.id, "message_sid": message_sid},
            )
            return None
        if message.twilio_sid is None:  # else a concurrent callback attached it just now
            logger.info(
                "status callback names a send we never recorded; SID attached",
                extra={"outbound_id": message.id, "message_sid": message_sid},
            )
            session.flush()  # the receipt above is applied with the others
            record_sent(session, message.id, SendReceipt(sid=message_sid, status=status), now)
    if message is None:
        return None
    _apply_receipt(message, status, error_code)
    if error_code == ERROR_UNSUBSCRIBED and catalog is not None:
        _carrier_opt_out(session, catalog, message, error_code, now)
    return message


def _apply_receipt(message: OutboundMessage, status: str, error_code: int | None) -> None:
    if STATUS_RANK.get(status, 0) <= STATUS_RANK.get(message.delivery_status or "", 0):
        return
    message.delivery_status = status
    message.status = CALLBACK_MESSAGE_STATUS.get(status, message.status)
    if error_code is not None:
        message.error_code = error_code


# ----------------------------------------------------------------------------------------------
# Claiming, consent and pacing


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


def consent_refusal(
    session: Session,
    message: OutboundMessage | ClaimedMessage,
    suppression_key: bytes | None = None,
    *,
    hold: bool = False,
) -> str | None:
    """Why this reply may not go out now, or None when it may.

    Only the opt-out confirmation and HELP reach opted-out numbers. Never to a
    recipient erased since the message was queued (no number left), and never
    to a number on the suppression list unless the message belongs to a history
    the consumer began after the erasure (`app.ledger.suppression`).

    With `hold` (PostgreSQL), the same statement locks the subscriber row FOR SHARE
    until the transaction ends, so an opt-out of the number waits for it.
    """
    if not message.to_number:
        return "the number was erased"
    # One round trip: the subscription's status and, when the number is on the
    # suppression list, when it was erased.
    digest = phone_hmac(suppression_key, message.to_number) if suppression_key else ""
    query = (
        select(Subscriber.created_at, Subscription.status, Suppression.suppressed_at)
        .outerjoin(
            Subscription,
            (Subscription.subscriber_id == Subscriber.id)
            & (Subscription.program_id == message.program_id),
        )
        .outerjoin(Suppression, Suppression.phone_hmac == digest)
        .where(Subscriber.id == message.subscriber_id)
    )
    if hold:
        query = query.with_for_update(read=True, of=Subscriber)
    subscriber_created_at, status, erased_at = session.execute(query).one()
    if not history_may_be_texted(subscriber_created_at, erased_at):
        return "the number is on the suppression list"
    if message.program_id is not None and not flows.reply_allowed(
        status or flows.NONE, message.kind
    ):
        return "the recipient has opted out"
    return None


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


def _suppress(message: OutboundMessage, reason: str) -> None:
    message.status = SUPPRESSED
    message.lease_expires_at = None
    message.error_message = f"suppressed at send time: {reason}"
    logger.info("reply suppressed: no consent", extra={"outbound_id": message.id})


def reserve_send_slot(session: Session, messages_per_second: float, now: float) -> float:
    """Reserve the next send slot (a Unix time) shared by every worker; returns it.

    Slots are `1 / messages_per_second` apart, so however many workers share
    the database, no more than `messages_per_second` handoffs start in any one
    second.
    """
    pace = session.execute(
        select(SenderPace).where(SenderPace.id == 1).with_for_update()
    ).scalar_one_or_none()
    if pace is None:
        insert_ignoring_conflicts(session, SenderPace, {"id": 1, "next_slot": 0.0}, ["id"])
        pace = session.execute(
            select(SenderPace).where(SenderPace.id == 1).with_for_update()
        ).scalar_one()
    slot = max(now, pace.next_slot)
    pace.next_slot = slot + 1.0 / messages_per_second
    return slot


# One statement, so the shared row is locked for the statement alone (autocommit), not for
# a transaction whose holder may be kept off the CPU for milliseconds by its neighbours.
_TAKE_SLOT_POSTGRESQL = """
INSERT INTO sender_pace (id, next_slot) VALUES (1, %(now)s + %(step)s)
ON CONFLICT (id) DO UPDATE SET next_slot = GREATEST(%(now)s, sender_pace.next_slot) + %(step)s
RETURNING next_slot - %(step)s
"""


def take_send_slot_autocommit(connection, messages_per_second: float, now: float) -> float:
    """`reserve_send_slot` for PostgreSQL in one autocommit statement (a psycopg connection)."""
    row = connection.execute(
        _TAKE_SLOT_POSTGRESQL, {"now": now, "step": 1.0 / messages_per_second}
    ).fetchone()
    return float(row[0])


# ----------------------------------------------------------------------------------------------
# Recording the outcome


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
        _apply_receipt(message, callback.status, callback.error_code)


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
        _carrier_opt_out(session, catalog, message, error.code or 0, now)
    return message.status


def recipient_of(session: Session, message_sid: str, outbound_id: int | None) -> str:
    """The number a reply went to, by its SID or its outbox id ("" when unknown)."""
    condition = OutboundMessage.twilio_sid == message_sid
    if outbound_id is not None:
        condition = or_(condition, OutboundMessage.id == outbound_id)
    phone = session.execute(select(OutboundMessage.to_number).where(condition).limit(1)).scalar()
    return phone or ""


def _carrier_opt_out(
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


# ----------------------------------------------------------------------------------------------
# The worker


class StopFlag:
    """A stop request that a signal handler may set.

    `threading.Event.set` takes a lock; a second SIGTERM arriving while the
    handler holds it deadlocks the process. Setting a plain attribute takes
    none; the worker loop looks at it at least every `SENDER_POLL_INTERVAL`.
    """

    def __init__(self) -> None:
        self._requested = False

    def set(self) -> None:
        self._requested = True

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early once stop is requested."""
        deadline = time.monotonic() + timeout
        while not self._requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self._requested


class Sender:
    """Sends claimed messages through one gateway, with the settings' pacing and retries."""

    def __init__(
        self,
        database: Database,
        gateway: SmsGateway,
        settings: Settings,
        catalog: Catalog,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.gateway = gateway
        self.settings = settings
        self.catalog = catalog
        self.worker_id = worker_id
        self.clock = clock
        self.sleep = sleep
        self._heartbeat_lock = threading.Lock()
        self._heartbeat_stopped = False
        self._hold_sessions: sessionmaker | None = None
        self._hold_lock = threading.Lock()

    def claim(self, limit: int) -> list[ClaimedMessage]:
        with self.database.transaction() as session:
            return claim_due(
                session,
                worker_id=self.worker_id,
                limit=limit,
                lease=timedelta(seconds=self.settings.sender_lease_seconds),
                now=utcnow(),
            )

    def deliver(self, claimed: ClaimedMessage) -> str:
        """Take a send slot, wait for it, check consent and hold it while sending, record.

        Consent is checked after the wait, inside the hold (`_consent_held`), so no
        opt-out can commit between the check and Twilio's answer. A message that
        turns out to be suppressed has spent a send slot, which costs nothing but a
        gap in the pacing.
        """
        if claimed.earlier_attempt_unknown:
            try:
                earlier = self._find_earlier_attempt(claimed)
            except SmsSendError as error:
                # Sending blind could duplicate; try again later (bounded by the attempts).
                return self._record_failure(claimed, error)
            if earlier is not None:
                return self._adopt(claimed, earlier)
        with self.database.transaction() as session:
            message = session.get(OutboundMessage, claimed.id, with_for_update=True)
            if message.status != SENDING or message.claimed_by != self.worker_id[:100]:
                return message.status  # another worker took over after our lease ran out
            if message.twilio_sid is not None:
                return message.status  # a status callback showed Twilio has it already
            slot = self._reserve_slot(session)
        self._wait_for_slot(slot)

        try:
            with self._consent_held(claimed) as refusal:
                receipt = self.gateway.send(self._outgoing(claimed)) if refusal is None else None
        except SmsSendError as error:
            return self._record_failure(claimed, error)
        if receipt is None:
            with self.database.transaction() as session:
                message = session.get(OutboundMessage, claimed.id, with_for_update=True)
                if message.status == SENDING and message.claimed_by == self.worker_id[:100]:
                    _suppress(message, refusal)
                return message.status
        with self.database.transaction() as session:
            record_sent(session, claimed.id, receipt, utcnow())
        logger.info(
            "reply sent",
            extra={"outbound_id": claimed.id, "message_sid": receipt.sid, "kind": claimed.kind},
        )
        return SENT

    @contextmanager
    def _consent_held(self, claimed: ClaimedMessage) -> Iterator[str | None]:
        """Why `claimed` may not go out now, or None; opt-outs of its number wait for the block."""
        key = self.settings.suppression_hmac_key
        if self.database.is_postgresql:
            with self._hold_session() as session, session.begin():
                yield consent_refusal(session, claimed, key, hold=True)
            return
        with self.database.number_guard(claimed.to_number, exclusive=False):
            with self.database.transaction(write=False) as session:
                refusal = consent_refusal(session, claimed, key)
            yield refusal

    def _hold_session(self) -> Session:
        """A session for a consent hold, from a pool of its own (PostgreSQL).

        Each reply in flight holds a connection until Twilio answers, so the holds
        get one connection per sending thread and never starve the claims and
        records that share the app's pool.
        """
        with self._hold_lock:
            if self._hold_sessions is None:
                engine = make_engine(
                    self.database.url, pool_size=self.settings.sender_threads, max_overflow=2
                )
                self._hold_sessions = sessionmaker(engine)
        return self._hold_sessions()

    def close(self) -> None:
        """Close the consent holds' connections (the app's database is the app's to close)."""
        if self._hold_sessions is not None:
            self._hold_sessions.kw["bind"].dispose()
            self._hold_sessions = None

    def _find_earlier_attempt(self, claimed: ClaimedMessage) -> SendReceipt | None:
        """A message at Twilio that an earlier, unrecorded attempt of `claimed` created.

        Same recipient, same sender when we chose it, same body, created after the
        outbox row (less clock skew), and not the SID of another outbox row: two
        replies with the same text to the same number stay two messages.
        """
        if not claimed.to_number:
            return None  # nothing to look up; the send itself will fail and say why
        from_number = (
            None
            if self.settings.twilio_messaging_service_sid
            else self.settings.twilio_from_number or claimed.from_number
        )
        since = (claimed.created_at - CLOCK_SKEW) if claimed.created_at else None
        candidates = [
            m
            for m in self.gateway.recent_messages(claimed.to_number, from_number)
            if m.body == claimed.body
            and (since is None or m.created_at is None or m.created_at >= since)
        ]
        if not candidates:
            return None
        with self.database.transaction(write=False) as session:
            taken = set(
                session.execute(
                    select(OutboundMessage.twilio_sid).where(
                        OutboundMessage.twilio_sid.in_([m.sid for m in candidates]),
                        OutboundMessage.id != claimed.id,
                    )
                ).scalars()
            )
        for candidate in reversed(candidates):  # the oldest untaken one was our first attempt
            if candidate.sid not in taken:
                return SendReceipt(sid=candidate.sid, status=candidate.status)
        return None

    def _adopt(self, claimed: ClaimedMessage, earlier: SendReceipt) -> str:
        with self.database.transaction() as session:
            message = session.get(OutboundMessage, claimed.id, with_for_update=True)
            if message.twilio_sid is None:
                record_sent(session, claimed.id, earlier, utcnow())
            status = message.status
        logger.info(
            "reply found at Twilio from an earlier attempt; not sent again",
            extra={"outbound_id": claimed.id, "message_sid": earlier.sid, "kind": claimed.kind},
        )
        return status

    def _record_failure(self, claimed: ClaimedMessage, error: SmsSendError) -> str:
        # A carrier opt-out is an opt-out like any other: on SQLite it waits for replies in
        # flight to the number (`Database.number_guard`); elsewhere the guard does nothing.
        guard_phone = claimed.to_number if error.carrier_opt_out else ""
        with (
            self.database.number_guard(guard_phone, exclusive=True),
            self.database.transaction() as session,
        ):
            status = record_failure(
                session,
                claimed.id,
                error,
                settings=self.settings,
                catalog=self.catalog,
                now=utcnow(),
            )
        logger.warning(
            "reply not sent: %s",
            "will retry" if status == QUEUED else "failed",
            extra={
                "outbound_id": claimed.id,
                "attempt": claimed.attempts,
                "error_code": error.code,
                "http_status": error.http_status,
            },
        )
        return status

    def _wait_for_slot(self, slot: float) -> None:
        """Sleep until `slot`; a thread that wakes too late takes a fresh slot instead.

        Sending late would bunch this message up with the ones after it and could
        crowd a one-second window past the cap; taking the next free slot cannot.
        """
        for reslots in range(MAX_RESLOTS + 1):
            wait_for = slot - self.clock()
            if wait_for > 0:
                self.sleep(wait_for)
            if reslots == MAX_RESLOTS or self.clock() - slot <= LATE_SEND_LIMIT:
                return
            with self.database.transaction() as session:
                slot = self._reserve_slot(session)

    def _reserve_slot(self, session: Session) -> float:
        """The next send slot. On PostgreSQL in a statement of its own (autocommit), not in
        `session`: every sending thread of every worker takes slots from one row, and a lock
        held to the end of a transaction made that row the bottleneck (a wasted slot, if the
        transaction then fails, only leaves a gap in the pacing). On SQLite, in `session`,
        whose write lock already orders the writers."""
        rate = self.settings.sender_mps * PACING_HEADROOM
        if self.database.is_postgresql:
            with self.database.hot_connection() as connection:
                return take_send_slot_autocommit(connection, rate, self.clock())
        return reserve_send_slot(session, rate, self.clock())

    def _outgoing(self, claimed: ClaimedMessage) -> OutgoingSms:
        settings = self.settings
        return OutgoingSms(
            to=claimed.to_number,
            body=claimed.body,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from_number or claimed.from_number,
            # The row's id rides in the callback URL (Twilio signs the whole URL), so a
            # callback can find its row even if the SID was never recorded.
            status_callback=(
                f"{settings.public_base_url}/twilio/status?outbox={claimed.id}"
                if settings.public_base_url
                else None
            ),
        )

    def process_one(self) -> bool:
        """Claim and deliver one due message; False when none is due."""
        claimed = self.claim(1)
        for message in claimed:
            self.deliver(message)
        return bool(claimed)

    def run(self, stop: StopFlag | threading.Event, threads: int | None = None) -> None:
        """Send until `stop` is set, then finish the messages in hand and return."""
        threads = threads or self.settings.sender_threads
        self.gateway.warm_up()
        self._beat()
        threading.Thread(
            target=self._keep_beating, args=(stop,), name="sender-heartbeat", daemon=True
        ).start()
        try:
            self._send_until(stop, threads)
        finally:
            self._stop_beating()

    def _send_until(self, stop: StopFlag | threading.Event, threads: int) -> None:
        wake = threading.Event()
        if self.database.is_postgresql:
            threading.Thread(
                target=_listen_for_outbox, args=(self.database.url, wake, stop), daemon=True
            ).start()
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(threads, thread_name_prefix="sender") as pool:
            while not stop.is_set():
                in_flight = {f for f in in_flight if not f.done()}
                free = threads - len(in_flight)
                if free <= 0:
                    wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                try:
                    claimed = self.claim(free)
                except Exception:  # the database may be away for a moment; keep trying
                    logger.exception("could not claim outbox messages")
                    stop.wait(1.0)
                    continue
                if not claimed:
                    wake.wait(self.settings.sender_poll_interval)
                    wake.clear()
                    continue
                for message in claimed:
                    in_flight.add(pool.submit(self._deliver_logged, message))
            if in_flight:
                logger.info(
                    "stop requested: finishing the messages in hand",
                    extra={"in_hand": sum(not f.done() for f in in_flight)},
                )
            wait(in_flight)
        self.close()

    def _beat(self) -> bool:
        # The lock keeps a beat from landing after `_stop_beating` removed the row.
        with self._heartbeat_lock:
            if self._heartbeat_stopped:
                return False
            try:
                with self.database.transaction() as session:
                    record_heartbeat(session, self.worker_id, utcnow())
            except Exception:  # the database may be away for a moment; the next beat retries
                logger.warning("sender heartbeat not recorded", exc_info=True)
                return False
            return True

    def _keep_beating(self, stop: StopFlag | threading.Event) -> None:
        while not stop.wait(self.settings.sender_heartbeat_seconds):
            self._beat()

    def _stop_beating(self) -> None:
        with self._heartbeat_lock:
            self._heartbeat_stopped = True
        try:
            with self.database.transaction() as session:
                clear_heartbeat(session, self.worker_id)
        except Exception:  # it goes stale instead
            logger.warning("sender heartbeat not cleared", exc_info=True)

    def _deliver_logged(self, claimed: ClaimedMessage) -> None:
        try:
            self.deliver(claimed)
        except Exception:
            # The lease runs out and another attempt is made; nothing is lost.
            logger.exception("reply delivery crashed", extra={"outbound_id": claimed.id})


def _listen_for_outbox(url: str, wake: threading.Event, stop: StopFlag | threading.Event) -> None:
    """LISTEN for new outbox messages on PostgreSQL and wake the worker loop."""
    import psycopg

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for _notification in connection.notifies(timeout=1.0, stop_after=1):
                        wake.set()
        except psycopg.Error:
            logger.warning("outbox LISTEN connection lost; polling until it is back", exc_info=True)
            stop.wait(2.0)
