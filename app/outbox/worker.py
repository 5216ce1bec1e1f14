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
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import Settings
from app.consent.service import run_locked
from app.core.programs import Catalog
from app.outbox.hold import ConsentHold
from app.outbox.pacing import LATE_SEND_LIMIT, MAX_RESLOTS, take_slot
from app.outbox.records import (
    ClaimedMessage,
    claim_due,
    clear_heartbeat,
    record_failure,
    record_heartbeat,
    record_sent,
    suppress_at_send_time,
)
from app.outbox.twilio_gateway import OutgoingSms, SendReceipt, SmsGateway, SmsSendError
from app.store.db import Database, utcnow
from app.store.models import NOTIFY_CHANNEL, QUEUED, SENDING, SENT, OutboundMessage

logger = logging.getLogger(__name__)

# row still counts as an earlier attempt of it.
CLOCK_SKEW = timedelta(seconds=60)


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
        self.hold = ConsentHold(database, settings, catalog)  # catalog: sending rules (issue 14)

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

        Consent is checked after the wait, inside the hold (`app.outbox.hold`), so no
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
            with self.hold.held(claimed) as refusal:
                receipt = self.gateway.send(self._outgoing(claimed)) if refusal is None else None
        except SmsSendError as error:
            return self._record_failure(claimed, error)
        if receipt is None:
            with self.database.transaction() as session:
                message = session.get(OutboundMessage, claimed.id, with_for_update=True)
                if message.status == SENDING and message.claimed_by == self.worker_id[:100]:
                    suppress_at_send_time(message, refusal)
                return message.status
        with self.database.transaction() as session:
            record_sent(session, claimed.id, receipt, utcnow())
        logger.info(
            "reply sent",
            extra={"outbound_id": claimed.id, "message_sid": receipt.sid, "kind": claimed.kind},
        )
        return SENT

    def close(self) -> None:
        """Close the consent holds' connections (the app's database is the app's to close)."""
        self.hold.close()

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
        # A carrier opt-out is a consent change like any other: it takes the number's lock
        # (and waits for replies in flight to it).
        status = run_locked(
            self.database,
            claimed.to_number if error.carrier_opt_out else None,
            lambda session: record_failure(
                session,
                claimed.id,
                error,
                settings=self.settings,
                catalog=self.catalog,
                now=utcnow(),
            ),
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
        """The next send slot (`app.outbox.pacing.take_slot`)."""
        return take_slot(self.database, session, self.settings.sender_mps, self.clock())

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
