"""Program messages in the outbox: the send-time re-check, deferral, and STOP mid-campaign."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.outbox import hold
from app.store.models import SUPPRESSED_NOTE, OutboundMessage
from app.store.send_models import SEND_TIME_STAGE, SendDecisionRecord
from app.web import api_messages
from tests.sending_helpers import auth, seed_subscribers, send_token
from tests.test_sender import RecordingGateway, make_sender
from tests.twilio_helpers import send_text

BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."
FL = "+13055550100"
MIDDAY = datetime(2026, 6, 17, 17, 30, tzinfo=UTC)  # 1:30pm in Miami
NIGHT = datetime(2026, 6, 18, 3, 0, tzinfo=UTC)  # 11pm in Miami
NEXT_OPENING = datetime(2026, 6, 18, 12, 0, tzinfo=UTC)  # 8am in Miami


@pytest.fixture
def queued(client, db, monkeypatch):
    """One program message to FL, decided "send" at midday."""
    seed_subscribers(db, [FL])
    monkeypatch.setattr(api_messages, "utcnow", lambda: MIDDAY)
    response = client.post(
        "/api/v1/messages",
        json={"program": "demo", "body": BODY, "to": [FL], "idempotency_key": "k"},
        headers=auth(send_token(db)),
    )
    assert response.get_json()["results"][0]["decision"] == "send"
    return response.get_json()["results"][0]["message_id"]


def sent_at_time(monkeypatch, moment):
    monkeypatch.setattr(hold, "utcnow", lambda: moment)


def message(db, message_id) -> OutboundMessage:
    with db.transaction(write=False) as session:
        return session.get(OutboundMessage, message_id)


def send_time_decisions(db) -> list[SendDecisionRecord]:
    with db.transaction(write=False) as session:
        return list(
            session.execute(
                select(SendDecisionRecord).where(SendDecisionRecord.stage == SEND_TIME_STAGE)
            ).scalars()
        )


def test_a_program_message_goes_while_its_window_is_open(app, db, queued, monkeypatch):
    sent_at_time(monkeypatch, MIDDAY)
    gateway = RecordingGateway()
    assert make_sender(app, gateway).process_one() is True
    assert [sms.to for sms in gateway.sent] == [FL]
    assert message(db, queued).status == "sent"


def test_a_window_that_closed_before_the_send_defers_it_again(app, db, queued, monkeypatch):
    sent_at_time(monkeypatch, NIGHT)
    gateway = RecordingGateway()
    make_sender(app, gateway).process_one()
    assert gateway.sent == []
    held = message(db, queued)
    assert (held.status, held.next_attempt_at, held.not_before) == (
        "queued",
        NEXT_OPENING,
        NEXT_OPENING,
    )
    assert (held.decision, held.reason, held.attempts) == ("deferred", "quiet_hours:US-FL", 0)
    [record] = send_time_decisions(db)
    assert (record.decision, record.reason, record.outbound_id) == (
        "deferred",
        "quiet_hours:US-FL",
        queued,
    )
    # When the window opens, it goes.
    sent_at_time(monkeypatch, NEXT_OPENING)
    make_sender(app, gateway).process_one()
    assert [sms.to for sms in gateway.sent] == [FL]


def test_a_stop_quietens_the_queued_campaign_message(app, client, db, queued, monkeypatch):
    send_text(client, FL, "STOP")
    assert message(db, queued).status == "suppressed"
    assert message(db, queued).error_message == SUPPRESSED_NOTE
    sent_at_time(monkeypatch, MIDDAY)
    gateway = RecordingGateway()
    while make_sender(app, gateway).process_one():
        pass
    assert gateway.sent and all(sms.body != BODY for sms in gateway.sent)  # the confirmation only


@pytest.mark.parametrize("status", ["opted_out", "pending"])
def test_without_an_active_subscription_at_send_time_it_is_suppressed(
    app, db, queued, monkeypatch, status
):
    """A status that changed after the message was queued (and not quietened) is caught by the
    send-time check, held until Twilio answers. The change is a real ledger event (a row
    changed behind the ledger's back is refused for that reason: test_consent_binding)."""
    record_status_without_quietening(app, FL, "demo", status)
    sent_at_time(monkeypatch, MIDDAY)
    gateway = RecordingGateway()
    make_sender(app, gateway).process_one()
    assert gateway.sent == []
    assert message(db, queued).status == "suppressed"
    [record] = send_time_decisions(db)  # the refusal is kept as evidence
    expected = "opted_out" if status == "opted_out" else "no_consent:pending"
    assert (record.decision, record.reason, record.purpose) == ("refused", expected, "marketing")


def test_replies_are_never_deferred(app, client, db, monkeypatch):
    """HELP at 11pm in Miami is answered at once: a reply is not a solicitation."""
    seed_subscribers(db, [FL])
    send_text(client, FL, "HELP")
    sent_at_time(monkeypatch, NIGHT)
    gateway = RecordingGateway()
    make_sender(app, gateway).process_one()
    assert [sms.to for sms in gateway.sent] == [FL]
    assert send_time_decisions(db) == []


def record_status_without_quietening(app, phone: str, program: str, status: str) -> None:
    """Move `phone` to `status` in `program` through the consent service, as a ledger event,
    but leave the outbox as it is: the case the send-time check exists for."""
    from app.consent.service import change_consent
    from app.core import flows
    from app.core.consent_plan import ConsentPlan, OutboxQuieting, seal, subscription_rows
    from app.core.ledger_hashing import NewEvent
    from app.store.db import utcnow

    def plan(state, _session):
        before = state.subscriptions[program].status
        change = flows.StatusChange(program, before, status)
        now = utcnow()
        event = seal(
            state,
            NewEvent(
                kind="import",
                occurred_at=now,
                intent="other",
                program_id=program,
                status_before=before,
                status_after=status,
                changes=[change.as_record()],
                actor="test",
            ),
            phone,
        )
        return ConsentPlan(
            event=event,
            intent="other",
            phone=phone,
            subscriber_language=state.language,
            subscriptions=subscription_rows([change], state.subscriptions, now),
            outbound=[],
            texts={},
            quieting=OutboxQuieting.NONE,
        )

    change_consent(app.extensions["db"], phone, plan, now=utcnow())
