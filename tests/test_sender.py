"""The outbox (app.outbox): consent at send time, pacing, retries, leases, callbacks."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from datetime import timedelta

import pytest
import responses
from sqlalchemy import func, select, update

from app.ledger.chain import verify_ledger
from app.outbox.callbacks import record_delivery_status
from app.outbox.pacing import MAX_RESLOTS, PACING_HEADROOM, reserve_send_slot
from app.outbox.records import backoff_delay
from app.outbox.twilio_gateway import SendReceipt, SmsSendError, TwilioGateway
from app.outbox.worker import Sender
from app.store.db import utcnow
from app.store.models import ConsentEvent, OutboundMessage, Subscription
from tests.twilio_helpers import SHORT_CODE, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, send_text

PHONE = "+14155550100"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"


class RecordingGateway:
    """A gateway that records what it is asked to send and answers from a script."""

    name = "recording"

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent = []
        self.lock = threading.Lock()

    def warm_up(self):
        pass

    def send(self, sms):
        with self.lock:
            self.sent.append(sms)
            outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            raise outcome
        return SendReceipt(sid="SM" + f"{len(self.sent):032x}", status="queued")

    def recent_messages(self, to, from_number):
        """Nothing earlier is known to this gateway: a retry sends again."""
        return []


def make_sender(app, gateway, worker_id="worker-1", **settings_changes) -> Sender:
    settings = dataclasses.replace(
        app.extensions["settings"], **{"sender_mps": 1000.0, **settings_changes}
    )
    return Sender(
        app.extensions["db"], gateway, settings, app.extensions["programs"], worker_id=worker_id
    )


def messages(db) -> list[OutboundMessage]:
    with db.transaction(write=False) as session:
        return list(session.execute(select(OutboundMessage).order_by(OutboundMessage.id)).scalars())


def status_of(db, phone=PHONE, program="demo") -> str | None:
    with db.transaction(write=False) as session:
        return session.execute(
            select(Subscription.status).where(Subscription.program_id == program)
        ).scalar_one_or_none()


def test_a_reply_is_sent_from_the_number_texted_with_a_status_callback(app, client, db):
    send_text(client, PHONE, "HELP")
    gateway = RecordingGateway()
    assert make_sender(app, gateway).process_one() is True
    assert make_sender(app, gateway).process_one() is False  # nothing else is due
    [sms] = gateway.sent
    assert (sms.to, sms.from_number, sms.messaging_service_sid) == (PHONE, SHORT_CODE, None)
    [message] = messages(db)
    # The callback URL names the outbox row, so a callback can find it without its SID.
    assert sms.status_callback == f"https://gateway.example.com/twilio/status?outbox={message.id}"
    assert (message.status, message.attempts, message.twilio_sid) == (
        "sent",
        1,
        "SM" + "0" * 31 + "1",
    )
    assert message.sent_at is not None and message.lease_expires_at is None


def test_configured_sender_overrides_the_number_texted(app, client):
    send_text(client, PHONE, "HELP")
    send_text(client, PHONE, "HELP")
    gateway = RecordingGateway()
    make_sender(app, gateway, twilio_from_number="+18005550100").process_one()
    make_sender(app, gateway, twilio_messaging_service_sid="MG123").process_one()
    assert gateway.sent[0].from_number == "+18005550100"
    assert gateway.sent[1].messaging_service_sid == "MG123"


@responses.activate
def test_end_to_end_through_the_real_twilio_client(app, client, db):
    responses.post(MESSAGES_URL, json={"sid": "SM" + "b" * 32, "status": "queued"}, status=201)
    send_text(client, PHONE, "JOIN")
    gateway = TwilioGateway(
        TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, api_base_url="https://api.twilio.com", timeout=5
    )
    assert make_sender(app, gateway).process_one()
    body = responses.calls[0].request.body
    assert "To=%2B14155550100" in body and f"From={SHORT_CODE}" in body and "YES" in body
    assert messages(db)[0].twilio_sid == "SM" + "b" * 32


def test_consent_is_checked_again_just_before_sending(app, client, db):
    """A STOP that arrives after the worker claimed a welcome still stops it."""
    send_text(client, PHONE, "JOIN")
    sender = make_sender(app, RecordingGateway())
    [claimed] = sender.claim(1)
    send_text(client, PHONE, "STOP")  # the inbound suppression only reaches *queued* messages
    assert sender.deliver(claimed) == "suppressed"
    assert sender.gateway.sent == []
    # the opt-out confirmation itself is allowed through
    assert sender.process_one()
    assert len(sender.gateway.sent) == 1
    assert [(m.kind, m.status) for m in messages(db)] == [
        ("confirm_request", "suppressed"),
        ("opt_out_confirmation", "sent"),
    ]


def test_claiming_suppresses_what_consent_no_longer_allows(app, client, db):
    send_text(client, PHONE, "HELP")
    send_text(client, PHONE, "STOP")  # the number opts out (the HELP answer stays queued)
    subscriber_id = messages(db)[0].subscriber_id
    with db.transaction() as session:  # a welcome still queued for the number now opted out
        session.add(
            OutboundMessage(
                subscriber_id=subscriber_id,
                program_id="demo",
                kind="welcome",
                to_number=PHONE,
                from_number=SHORT_CODE,
                body="Welcome!",
            )
        )
    gateway = RecordingGateway()
    sender = make_sender(app, gateway)
    while sender.process_one():
        pass
    assert len(gateway.sent) == 2  # HELP and the confirmation still reach an opted-out number
    assert [(m.kind, m.status) for m in messages(db)] == [
        ("help", "sent"),
        ("opt_out_confirmation", "sent"),
        ("welcome", "suppressed"),
    ]


def test_retryable_errors_back_off_then_fail(app, client, db):
    send_text(client, PHONE, "HELP")
    busy = SmsSendError("busy", retryable=True, http_status=503)
    sender = make_sender(
        app, RecordingGateway(busy, busy, busy), sender_max_attempts=3, sender_backoff_base=2.0
    )
    delays = []
    for attempt in (1, 2):
        before = utcnow()
        assert sender.process_one()
        [message] = messages(db)
        assert (message.status, message.attempts) == ("queued", attempt)
        delay = (message.next_attempt_at - before).total_seconds()
        base = 2.0 * 2 ** (attempt - 1)
        assert base / 2 - 0.5 <= delay <= base + 0.5
        delays.append(delay)
        assert sender.process_one() is False  # not due yet
        with db.transaction() as session:
            session.execute(update(OutboundMessage).values(next_attempt_at=utcnow()))
    assert sender.process_one()
    [message] = messages(db)
    assert (message.status, message.attempts, message.error_code) == ("failed", 3, None)
    assert "busy" in message.error_message


def test_invalid_number_fails_at_once(app, client, db):
    send_text(client, PHONE, "HELP")
    invalid = SmsSendError("invalid To", retryable=False, code=21211, http_status=400)
    assert make_sender(app, RecordingGateway(invalid)).process_one()
    [message] = messages(db)
    assert (message.status, message.attempts, message.error_code) == ("failed", 1, 21211)


def test_error_21610_records_a_carrier_opt_out(app, client, db):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    unsubscribed = SmsSendError("unsubscribed", retryable=False, code=21610, http_status=400)
    gateway = RecordingGateway(unsubscribed)
    sender = make_sender(app, gateway)
    assert sender.process_one()  # the confirmation request fails with 21610
    assert status_of(db) == "opted_out"
    assert sender.process_one() is False  # the welcome was suppressed, not sent
    assert [m.status for m in messages(db)] == ["failed", "suppressed"]
    with db.transaction(write=False) as session:
        event = session.execute(
            select(ConsentEvent).where(ConsentEvent.kind == "carrier_opt_out")
        ).scalar_one()
        assert (event.intent, event.rule, event.status_before, event.status_after) == (
            "opt_out",
            "twilio.error:21610",
            "active",
            "opted_out",
        )
        assert verify_ledger(session).ok
    # a second 21610 adds nothing: already opted out everywhere
    send_text(client, PHONE, "HELP")
    sender.gateway.outcomes = [unsubscribed]
    sender.process_one()
    with db.transaction(write=False) as session:
        carrier_events = select(func.count()).where(ConsentEvent.kind == "carrier_opt_out")
        assert session.execute(carrier_events).scalar_one() == 1


def test_a_message_whose_worker_died_is_retried_after_its_lease(app, client, db):
    send_text(client, PHONE, "HELP")
    dead = make_sender(app, RecordingGateway(), worker_id="dead")
    [claimed] = dead.claim(1)
    alive = make_sender(app, RecordingGateway(), worker_id="alive")
    assert alive.claim(1) == []  # leased
    with db.transaction() as session:
        session.execute(update(OutboundMessage).values(lease_expires_at=utcnow() - timedelta(1)))
    assert alive.process_one()
    assert len(alive.gateway.sent) == 1
    # the first worker wakes up late: it must not send the message a second time
    assert dead.deliver(claimed) == "sent"
    assert dead.gateway.sent == []
    [message] = messages(db)
    assert (message.attempts, message.claimed_by) == (2, "alive")


def test_concurrent_workers_never_send_one_message_twice(app, client, db):
    for i in range(30):
        send_text(client, f"+1415555{i:04d}", "HELP")
    gateway = RecordingGateway()

    def work(name):
        sender = make_sender(app, gateway, worker_id=name)
        idle = 0
        while idle < 3:
            idle = 0 if sender.process_one() else idle + 1

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sms.to for sms in gateway.sent) == sorted(f"+1415555{i:04d}" for i in range(30))
    assert {m.status for m in messages(db)} == {"sent"}


def take_slot(app, rate: float, now: float) -> float:
    """A slot as the worker takes it (on PostgreSQL an autocommit statement of its own)."""
    sender = make_sender(app, RecordingGateway(), sender_mps=rate / PACING_HEADROOM)
    sender.clock = lambda: now
    with app.extensions["db"].transaction() as session:
        return sender._reserve_slot(session)


def test_send_slots_are_shared_and_spaced_by_the_rate(app):
    now = 1_000_000.0
    slots = [take_slot(app, 10.0, now) for _ in range(5)]
    assert slots == pytest.approx([now + i * 0.1 for i in range(5)])
    assert take_slot(app, 10.0, now + 60) == now + 60  # after an idle spell: "now"


def test_the_first_slot_creates_the_shared_row(db):
    with db.transaction() as session:  # the ORM path, used inside SQLite's write transaction
        assert reserve_send_slot(session, 10.0, 5.0) == 5.0
        assert reserve_send_slot(session, 10.0, 5.0) == pytest.approx(5.1)


def test_send_slots_from_many_threads_never_collide(app):
    now = time.time() + 100
    slots = []
    lock = threading.Lock()

    def reserve():
        for _ in range(10):
            slot = take_slot(app, 50.0, now)
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert len(slots) == 40 and min(gaps) == pytest.approx(0.02)


def test_the_worker_waits_for_its_slot(app, client):
    send_text(client, PHONE, "HELP")
    send_text(client, PHONE, "HELP")
    clock = [5_000_000.0]
    waits = []
    sender = make_sender(app, RecordingGateway(), sender_mps=2.0)
    sender.clock = lambda: clock[0]
    sender.sleep = waits.append
    sender.process_one()
    sender.process_one()
    assert waits == [pytest.approx(1 / (2.0 * PACING_HEADROOM))]  # 3% under the cap


def test_backoff_is_exponential_capped_and_jittered(app):
    settings = dataclasses.replace(
        app.extensions["settings"], sender_backoff_base=2.0, sender_backoff_max=60.0
    )
    rng = random.Random(7)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)]:
        samples = [backoff_delay(attempts, settings, rng) for _ in range(200)]
        assert min(samples) >= ceiling / 2 and max(samples) <= ceiling
        assert len(set(samples)) > 100  # jittered


def test_a_status_callback_that_beats_the_worker_is_applied_when_the_sid_is_stored(app, client, db):
    send_text(client, PHONE, "HELP")

    class CallbackFirst(RecordingGateway):
        def send(self, sms):
            receipt = super().send(sms)
            with db.transaction() as session:  # Twilio calls back before we commit the SID
                record_delivery_status(
                    session, message_sid=receipt.sid, status="delivered", error_code=None
                )
            return receipt

    make_sender(app, CallbackFirst()).process_one()
    [message] = messages(db)
    assert (message.status, message.delivery_status) == ("delivered", "delivered")


def test_run_sends_until_stopped_and_finishes_the_message_in_hand(app, client, db):
    release = threading.Event()
    started = threading.Event()

    class SlowGateway(RecordingGateway):
        def send(self, sms):
            started.set()
            release.wait(5)
            return super().send(sms)

    sender = make_sender(app, SlowGateway(), sender_poll_interval=0.01)
    stop = threading.Event()
    runner = threading.Thread(target=sender.run, args=(stop,), kwargs={"threads": 2})
    runner.start()
    send_text(client, PHONE, "HELP")
    assert started.wait(5), "the worker did not pick up the new message"
    stop.set()
    time.sleep(0.1)
    assert runner.is_alive()  # still finishing the send in hand
    release.set()
    runner.join(5)
    assert not runner.is_alive()
    assert [m.status for m in messages(db)] == ["sent"]


def test_run_picks_up_new_messages_promptly(app, client, db):
    sender = make_sender(app, RecordingGateway())
    stop = threading.Event()
    runner = threading.Thread(target=sender.run, args=(stop,))
    runner.start()
    try:
        time.sleep(0.3)  # idle
        send_text(client, PHONE, "HELP")
        deadline = time.monotonic() + 5
        while not sender.gateway.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sender.gateway.sent, "not sent within 5 s"
    finally:
        stop.set()
        runner.join(5)


def test_a_sender_that_wakes_late_takes_a_fresh_slot_instead_of_bunching(app, client, db):
    send_text(client, PHONE, "HELP")
    clock = [2_000_000.0]
    sleeps = []

    def oversleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds + 0.05  # the thread wakes 50 ms late every time

    with db.transaction() as session:  # someone else holds the current slot
        reserve_send_slot(session, 10.0 * PACING_HEADROOM, clock[0])
    sender = make_sender(app, RecordingGateway(), sender_mps=10.0)
    sender.clock = lambda: clock[0]
    sender.sleep = oversleep
    assert sender.process_one()
    # one wait per slot taken: the first, then a fresh one each time it woke late
    assert len(sleeps) == 1 + MAX_RESLOTS
    assert len(sender.gateway.sent) == 1


class TwilioHasIt(RecordingGateway):
    """Twilio accepted earlier attempts that we never recorded; its list shows them."""

    def __init__(self, *listed, fail_listing=None):
        super().__init__()
        self.listed = list(listed)
        self.fail_listing = fail_listing

    def send(self, sms):
        super().send(sms)
        return SendReceipt(sid="SM" + f"{len(self.sent):02d}" + "b" * 30, status="queued")

    def recent_messages(self, to, from_number):
        if self.fail_listing:
            raise self.fail_listing
        return [m for m in self.listed if m.created_at is not None]


def _died_mid_send(app, db) -> None:
    """A worker claimed the only message and died before recording anything."""
    make_sender(app, RecordingGateway(), worker_id="dead").claim(1)
    with db.transaction() as session:
        session.execute(update(OutboundMessage).values(lease_expires_at=utcnow() - timedelta(1)))


def test_a_retry_adopts_the_message_twilio_already_has_instead_of_sending_again(app, client, db):
    from app.outbox.twilio_gateway import SentMessage

    send_text(client, PHONE, "HELP")
    [queued] = messages(db)
    _died_mid_send(app, db)
    earlier = SentMessage("SM" + "e" * 32, "sent", queued.body, utcnow())
    other_text = SentMessage("SM" + "f" * 32, "sent", "another text", utcnow())
    gateway = TwilioHasIt(other_text, earlier)
    assert make_sender(app, gateway, worker_id="alive").process_one()
    assert gateway.sent == []
    [message] = messages(db)
    assert (message.status, message.twilio_sid, message.attempts) == ("sent", earlier.sid, 2)


def test_a_retry_does_not_adopt_another_reply_with_the_same_text(app, client, db):
    """Two HELP answers to one number: the first one's SID is not the second one's."""
    from app.outbox.twilio_gateway import SentMessage

    send_text(client, PHONE, "HELP")
    make_sender(app, RecordingGateway()).process_one()
    [first] = messages(db)
    send_text(client, PHONE, "HELP")
    _died_mid_send(app, db)
    gateway = TwilioHasIt(SentMessage(first.twilio_sid, "delivered", first.body, utcnow()))
    assert make_sender(app, gateway, worker_id="alive").process_one()
    assert len(gateway.sent) == 1  # not found at Twilio: sent now
    assert len({m.twilio_sid for m in messages(db)}) == 2


def test_a_retry_whose_lookup_fails_waits_instead_of_sending_blind(app, client, db):
    send_text(client, PHONE, "HELP")
    _died_mid_send(app, db)
    gateway = TwilioHasIt(fail_listing=SmsSendError("Twilio unreachable", retryable=True))
    assert make_sender(app, gateway, worker_id="alive").process_one()
    assert gateway.sent == []
    [message] = messages(db)
    assert (message.status, message.twilio_sid) == ("queued", None)


def test_a_callback_naming_the_outbox_row_attaches_a_sid_the_worker_never_stored(app, client, db):
    send_text(client, PHONE, "HELP")
    _died_mid_send(app, db)
    [message] = messages(db)
    sid = "SM" + "c" * 32
    with db.transaction() as session:
        record_delivery_status(
            session, message_sid=sid, status="sent", error_code=None, outbound_id=message.id
        )
    with db.transaction() as session:  # the same callback again, and a later one
        for status in ("sent", "delivered"):
            record_delivery_status(
                session, message_sid=sid, status=status, error_code=None, outbound_id=message.id
            )
    [message] = messages(db)
    assert (message.status, message.twilio_sid) == ("delivered", sid)
    gateway = RecordingGateway()
    assert make_sender(app, gateway).process_one() is False  # nothing left to send
    assert gateway.sent == []


def test_a_callback_for_a_second_copy_leaves_the_first_sid(app, client, db):
    send_text(client, PHONE, "HELP")
    make_sender(app, RecordingGateway()).process_one()
    [message] = messages(db)
    with db.transaction() as session:
        record_delivery_status(
            session,
            message_sid="SM" + "d" * 32,
            status="delivered",
            error_code=None,
            outbound_id=message.id,
        )
    [after] = messages(db)
    assert (after.twilio_sid, after.status) == (message.twilio_sid, "sent")


def test_consent_is_read_again_after_the_wait_for_a_send_slot(app, client, db):
    """A STOP that commits while the reply waits for its slot suppresses it."""
    send_text(client, PHONE, "JOIN")
    sender = make_sender(app, RecordingGateway())
    [claimed] = sender.claim(1)
    real_wait = sender._wait_for_slot

    def stop_arrives_meanwhile(slot):
        send_text(client, PHONE, "STOP")
        real_wait(slot)

    sender._wait_for_slot = stop_arrives_meanwhile
    assert sender.deliver(claimed) == "suppressed"
    assert sender.gateway.sent == []
