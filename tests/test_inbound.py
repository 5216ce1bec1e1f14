"""Keyword flows end to end through the signed webhook: status changes, replies, the ledger."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.ledger.chain import verify_ledger
from app.store.models import ConsentEvent, OutboundMessage, Subscriber, Subscription
from tests.twilio_helpers import new_message_sid, send_text

PHONE = "+14155550100"


def status(db, phone=PHONE, program="demo") -> str:
    with db.transaction(write=False) as session:
        row = session.execute(
            select(Subscription.status)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.phone == phone, Subscription.program_id == program)
        ).scalar_one_or_none()
    return row or "none"


def replies(db, sid) -> list[OutboundMessage]:
    with db.transaction(write=False) as session:
        event_id = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.message_sid == sid)
        ).scalar_one()
        return list(
            session.execute(
                select(OutboundMessage)
                .where(OutboundMessage.event_id == event_id)
                .order_by(OutboundMessage.id)
            ).scalars()
        )


def text(client, body, phone=PHONE):
    response, sid = send_text(client, phone, body)
    assert response.status_code == 200
    return sid


def test_join_yes_stop_help_start(client, db, app):
    catalog = app.extensions["programs"]
    demo = catalog.get("demo")
    en = demo.texts_for(["en"])

    sid = text(client, "JOIN")
    assert status(db) == "pending"
    [reply] = replies(db, sid)
    assert (reply.kind, reply.body, reply.to_number) == (
        "confirm_request",
        en.confirm_request,
        PHONE,
    )
    assert "YES" in reply.body

    sid = text(client, "yes")
    assert status(db) == "active"
    assert [r.body for r in replies(db, sid)] == [en.welcome]

    sid = text(client, "JOIN")
    assert status(db) == "active"
    assert [r.kind for r in replies(db, sid)] == ["already_subscribed"]

    sid = text(client, "Stop. Thank you")
    assert status(db) == "opted_out"
    assert [r.body for r in replies(db, sid)] == [en.opt_out_confirmation]

    sid = text(client, "STOP")
    assert status(db) == "opted_out"
    assert replies(db, sid) == []  # exactly one confirmation

    sid = text(client, "HELP")
    assert [r.body for r in replies(db, sid)] == [en.help]  # even after opt-out

    sid = text(client, "UNSTOP")
    assert status(db) == "active"
    assert [r.kind for r in replies(db, sid)] == ["resubscribed"]

    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_yes_without_pending_records_no_consent(client, db):
    sid = text(client, "YES")
    assert status(db) == "none"
    assert [r.kind for r in replies(db, sid)] == ["how_to_join"]


def test_yes_after_the_window_records_no_consent(client, db, app):
    text(client, "JOIN")
    window = app.extensions["programs"].get("demo").confirmation_window
    with db.transaction() as session:
        row = session.execute(select(Subscription)).scalar_one()
        row.pending_since = row.pending_since - window - timedelta(seconds=1)
    sid = text(client, "YES")
    assert status(db) == "pending"
    assert [r.kind for r in replies(db, sid)] == ["how_to_join"]


@pytest.mark.parametrize(
    "body",
    [
        "YES STOP",
        "stop please",
        "please stop texting me",
        "remove me from this list",
        "wrong number",
        "UNSUBSCRIBE",
        "ＳＴＯＰ",
        "Cancel",
        "opt-out",
    ],
)
def test_opt_out_variants_win(client, db, body):
    text(client, "JOIN")
    text(client, "YES")
    sid = text(client, body)
    assert status(db) == "opted_out"
    assert [r.kind for r in replies(db, sid)] == ["opt_out_confirmation"]


def test_stop_inside_a_sentence_is_flagged_not_an_opt_out(client, db):
    text(client, "JOIN")
    text(client, "YES")
    sid = text(client, "We have got to stop this bill")
    assert status(db) == "active"
    assert replies(db, sid) == []
    with db.transaction(write=False) as session:
        event = session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == sid)
        ).scalar_one()
    assert (event.intent, event.possible_opt_out) == ("other", True)


def test_other_text_is_recorded_without_reply(client, db):
    sid = text(client, "what time is the event?")
    assert replies(db, sid) == []
    with db.transaction(write=False) as session:
        event = session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == sid)
        ).scalar_one()
    assert (event.intent, event.possible_opt_out) == ("other", False)


@pytest.mark.parametrize(
    ("join", "confirm", "stop", "help_word", "language"),
    [
        ("JOIN", "SI", "ALTO", "AYUDA", "es"),
        ("JOIN", "OUI", "ARRÊT", "AIDE", "fr"),
        ("JOIN", "ДА", "ОТПИСАТЬСЯ", "ПОМОЩЬ", "ru"),
        ("JOIN", "ДА", "СТОП", "ПОМОЩ", "bg"),
    ],
)
def test_replies_in_the_language_used(client, db, app, join, confirm, stop, help_word, language):
    texts = app.extensions["programs"].get("demo").texts_for([language])
    assert texts.language == language
    text(client, help_word)  # sets the subscriber's language
    text(client, join)
    sid = text(client, confirm)
    assert status(db) == "active"
    assert [r.body for r in replies(db, sid)] == [texts.welcome]
    sid = text(client, stop)
    assert [r.body for r in replies(db, sid)] == [texts.opt_out_confirmation]
    sid = text(client, help_word)
    assert [r.body for r in replies(db, sid)] == [texts.help]


def test_event_records_disclosure_and_reply(client, db, app):
    sid = text(client, "JOIN")
    en = app.extensions["programs"].get("demo").texts_for(["en"])
    with db.transaction(write=False) as session:
        event = session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == sid)
        ).scalar_one()
        from app.store.models import LedgerText

        disclosure = session.get(LedgerText, event.disclosure_sha256).body
        reply = session.get(LedgerText, event.reply_sha256).body
    assert disclosure == en.disclosure
    assert reply == en.confirm_request
    assert (event.status_before, event.status_after, event.program_id) == (
        "none",
        "pending",
        "demo",
    )
    assert event.changes == [{"program": "demo", "before": "none", "after": "pending"}]


def test_opt_out_suppresses_replies_still_queued(client, db):
    join_sid = text(client, "JOIN")
    text(client, "STOP")
    [confirm_request] = replies(db, join_sid)
    assert confirm_request.status == "suppressed"


def post_at_once(app, texts: list[tuple[str, str, str | None]]) -> list[int]:
    """Post (phone, body, MessageSid) texts from one thread each, all at once; their statuses."""
    codes = []

    def post(phone, body, sid):
        response, _ = send_text(app.test_client(), phone, body, message_sid=sid)
        codes.append(response.status_code)

    threads = [threading.Thread(target=post, args=text) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def test_concurrent_duplicates_record_once(app, db):
    """Twilio retries can race: the same MessageSid posted from many threads at once."""
    sid = new_message_sid()
    results = post_at_once(app, [(PHONE, "JOIN", sid)] * 8)
    assert results == [200] * 8
    with db.transaction(write=False) as session:
        assert session.execute(select(func.count(ConsentEvent.id))).scalar_one() == 1
        assert session.execute(select(func.count(OutboundMessage.id))).scalar_one() == 1


def test_concurrent_stops_from_one_number_confirm_once(app, db):
    client = app.test_client()
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    codes = post_at_once(app, [(PHONE, "STOP", None)] * 6)
    assert codes == [200] * 6
    with db.transaction(write=False) as session:
        confirmations = session.execute(
            select(func.count(OutboundMessage.id)).where(
                OutboundMessage.kind == "opt_out_confirmation"
            )
        ).scalar_one()
        assert confirmations == 1
        assert verify_ledger(session).ok


def test_short_code_senders_kept_verbatim_and_other_senders_refused(client, db):
    """Twilio documents From as a phone number (or a channel address, which an SMS short code
    never receives): a sender name or channel address is refused and writes nothing."""
    text(client, "HELP", phone="55555")
    for sender in ("ACME", "whatsapp:+14155550100", "<b>x</b>"):
        response, _ = send_text(client, sender, "HELP")
        assert response.status_code == 400
    with db.transaction(write=False) as session:
        phones = set(session.execute(select(Subscriber.phone)).scalars())
    assert phones == {"55555"}


def test_a_text_that_loses_a_race_is_decided_again_on_fresh_state(app):
    """The store reports that another text from the number got there first: plan again."""
    from app.consent.inbound import InboundText, LoadedState, record_inbound_text
    from app.core.flows import PENDING, SubscriptionState
    from app.store.db import utcnow

    class RacingStore:
        def __init__(self):
            self.loads, self.writes = 0, []

        def load(self, phone, message_sid, now):
            self.loads += 1
            # First read: nothing known. Second read: a JOIN was written meanwhile.
            subscriptions = (
                {} if self.loads == 1 else {"demo": SubscriptionState(PENDING, now, None)}
            )
            return LoadedState(1, self.loads - 1, None, None, False, subscriptions, None)

        def write(self, plan, state):
            self.writes.append(plan)
            return None if len(self.writes) == 1 else (42, [7])

        def abandon(self):
            raise AssertionError("not a duplicate")

    store = RacingStore()
    text = InboundText("SM" + "1" * 32, None, PHONE, "12345", "YES", None, utcnow())
    result = record_inbound_text(store, app.extensions["programs"], text)
    assert (result.event_id, result.outbound_ids) == (42, [7])
    first, second = store.writes
    assert first.event.fields["status_after"] == "none"  # YES with nothing pending
    assert second.event.fields["status_after"] == "active"  # decided again: confirms
    assert second.event.fields["seq"] == 2


def test_concurrent_first_texts_from_a_new_number(app, db):
    """Both create the subscriber row; one wins, the other is decided again and appended."""
    phone = "+14155550177"
    codes = post_at_once(app, [(phone, body, None) for body in ["JOIN", "HELP"] * 3])
    assert codes == [200] * 6
    with db.transaction(write=False) as session:
        assert session.execute(select(func.count(Subscriber.id))).scalar_one() == 1
        seqs = session.execute(select(ConsentEvent.seq).order_by(ConsentEvent.seq)).scalars()
        assert list(seqs) == [1, 2, 3, 4, 5, 6]
        assert verify_ledger(session).ok
