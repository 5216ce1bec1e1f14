"""The review queue (app.consent.review): deadlines in business days, the queue, decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from app.consent.review import ReviewError, decide, is_business_day, queue_summary, review_deadline
from app.store.db import utcnow
from app.store.models import ConsentEvent, Subscription
from tests.twilio_helpers import send_text


@pytest.mark.parametrize(
    ("received", "deadline"),
    [
        # Monday 2026-11-02 -> ten business days later: Tuesday 2026-11-17,
        # skipping Veterans Day (Wed 2026-11-11)
        (datetime(2026, 11, 2, 9, 0, tzinfo=UTC), date(2026, 11, 17)),
        # Friday before Thanksgiving week: Thanksgiving (Thu 2026-11-26) is skipped
        (datetime(2026, 11, 20, 23, 0, tzinfo=UTC), date(2026, 12, 7)),
        # a Saturday counts from the next business day
        (datetime(2026, 12, 5, 12, 0, tzinfo=UTC), date(2026, 12, 18)),
        # across Christmas and New Year's Day
        (datetime(2026, 12, 21, 12, 0, tzinfo=UTC), date(2027, 1, 6)),
    ],
)
def test_deadline_is_ten_business_days_after_receipt(received, deadline):
    due = review_deadline(received)
    assert due.date() == deadline
    assert (due.hour, due.minute, due.tzinfo) == (23, 59, UTC)


def test_business_days_skip_weekends_and_federal_holidays():
    assert is_business_day(date(2026, 11, 23))  # Monday
    assert not is_business_day(date(2026, 11, 21))  # Saturday
    assert not is_business_day(date(2026, 11, 26))  # Thanksgiving
    assert not is_business_day(date(2026, 7, 3))  # Independence Day observed (Friday)


def test_queue_summary_counts_undecided_flagged_texts(app, client, db):
    for body in ["JOIN", "YES", "we need to stop the bill", "time to end this, no?", "HELP"]:
        send_text(client, "+14155550100", body)
    with db.transaction(write=False) as session:
        summary = queue_summary(session)
        first = (
            session.execute(select(ConsentEvent).where(ConsentEvent.possible_opt_out.is_(True)))
            .scalars()
            .first()
        )
    assert summary.size == 2
    assert summary.oldest_deadline == review_deadline(first.occurred_at)
    with db.transaction() as session:
        decide(
            session,
            app.extensions["programs"],
            event_id=first.id,
            treat_as_opt_out=False,
            reason="about a bill",
            staff_email="officer@example.com",
            now=utcnow(),
        )
    with db.transaction(write=False) as session:
        assert queue_summary(session).size == 1


def test_staff_can_never_opt_a_number_in(app, client, db):
    """Even for a number that opted out, "not an opt-out" leaves it opted out."""
    for body in ["JOIN", "YES", "STOP", "you have to stop the bill"]:
        send_text(client, "+14155550100", body)
    with db.transaction(write=False) as session:
        flagged = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.possible_opt_out.is_(True))
        ).scalar_one()
    with db.transaction() as session:
        event = decide(
            session,
            app.extensions["programs"],
            event_id=flagged,
            treat_as_opt_out=False,
            reason="not about us",
            staff_email="officer@example.com",
            now=utcnow(),
        )
        assert event.changes == [] and event.status_after == "opted_out"
    with db.transaction(write=False) as session:
        assert session.execute(select(Subscription.status)).scalar_one() == "opted_out"


def test_decisions_need_a_reason(app, client, db):
    send_text(client, "+14155550100", "I had to stop the car")
    with db.transaction() as session:
        flagged = session.execute(select(ConsentEvent.id)).scalar_one()
        with pytest.raises(ReviewError, match="reason"):
            decide(
                session,
                app.extensions["programs"],
                event_id=flagged,
                treat_as_opt_out=True,
                reason="  ",
                staff_email="officer@example.com",
                now=utcnow(),
            )


@pytest.mark.parametrize(
    "reason",
    [
        "Called Jane Doe back on 415-555-0123",
        "spoke to them at (415) 555 0123 today",
        "their other phone is +44 7700 900461",
    ],
)
def test_a_reason_holding_a_phone_number_is_refused(app, client, db, reason):
    """Finding 5: the reason sits in a hashed ledger field that erasure cannot remove."""
    send_text(client, "+14155550100", "I had to stop the car")
    with db.transaction() as session:
        flagged = session.execute(select(ConsentEvent.id)).scalar_one()
        with pytest.raises(ReviewError, match="phone number"):
            decide(
                session,
                app.extensions["programs"],
                event_id=flagged,
                treat_as_opt_out=True,
                reason=reason,
                staff_email="officer@example.com",
                now=utcnow(),
            )
    with db.transaction(write=False) as session:
        assert session.execute(select(ConsentEvent.id)).scalars().all() == [flagged]


def test_dates_and_ticket_numbers_are_fine_in_a_reason(app, client, db):
    send_text(client, "+14155550100", "I had to stop the car")
    with db.transaction() as session:
        flagged = session.execute(select(ConsentEvent.id)).scalar_one()
        decide(
            session,
            app.extensions["programs"],
            event_id=flagged,
            treat_as_opt_out=False,
            reason="ticket DPO-123, checked on 2026-12-02",
            staff_email="officer@example.com",
            now=utcnow(),
        )
