"""The review queue's history (app.reports.review_history) and how the console shows it:
status then and now, the Decided tab, decisions marked on the event log and the timeline,
and a form that says what the subscriber will be sent."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.store.models import ConsentEvent, Subscriber
from tests.staff_helpers import page_csrf, signed_in_client
from tests.twilio_helpers import send_text

PHONE = "+14155550100"
FLAGGED = "We have got to stop this bill"


@pytest.fixture
def flagged_then_resubscribed(client):
    """Subscribed, a possible opt-out, a STOP, then back with START: opted out *then*,
    subscribed *now*."""
    for body in ["JOIN", "YES", "STOP", FLAGGED, "START"]:
        send_text(client, PHONE, body)


def flagged_id(db) -> int:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent.id).where(ConsentEvent.possible_opt_out.is_(True))
        ).scalar_one()


def subscriber_id(db) -> int:
    with db.transaction(write=False) as session:
        return session.execute(select(Subscriber.id).where(Subscriber.phone == PHONE)).scalar_one()


def words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def decide(client, event_id, decision, reason, **extra):
    return client.post(
        f"/staff/review/{event_id}",
        data={
            f"e{event_id}-decision": decision,
            f"e{event_id}-reason": reason,
            "csrf_token": page_csrf(client, "/staff/review"),
            **extra,
        },
    )


def test_the_queue_shows_the_status_then_and_now(app, db, flagged_then_resubscribed):
    client, _ = signed_in_client(app, db, "compliance")
    text = words(client.get("/staff/review").get_data(as_text=True))
    assert "status when it texted: opted out" in text
    assert "now: subscribed" in text


def test_the_form_says_what_the_subscriber_will_be_sent(app, db, client):
    for body in ["JOIN", "YES", FLAGGED]:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance")
    text = words(staff.get("/staff/review").get_data(as_text=True))
    assert "Treat as opt-out Opts the number out of Demo Alerts and sends it the one" in text
    assert "opt-out confirmation: Demo Alerts: you are unsubscribed" in text
    assert "Not an opt-out Releases the hold, changes no status and sends nothing" in text


def test_the_form_says_nothing_is_sent_to_a_number_already_opted_out(app, db, client):
    for body in ["JOIN", "STOP", FLAGGED]:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance")
    text = words(staff.get("/staff/review").get_data(as_text=True))
    assert "Changes nothing and sends nothing: the number is already opted out" in text


def test_a_refused_reason_comes_back_on_its_item_as_typed(app, db, client):
    for body in ["JOIN", "YES", FLAGGED]:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance")
    event_id = flagged_id(db)
    reason = "They said to call 415 555 0100 instead"
    response = decide(staff, event_id, "opt_out", reason)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    item = html[html.index(f'id="review-{event_id}"') :]
    item = item[: item.index("</article>")]
    assert "must not contain a phone number" in item and reason in item
    assert 'aria-invalid="true"' in item


def test_a_decision_appears_in_the_decided_tab(app, db, flagged_then_resubscribed):
    client, staff = signed_in_client(app, db, "compliance")
    event_id = flagged_id(db)
    assert decide(client, event_id, "not_opt_out", "About a bill in Congress").status_code == 302
    html = client.get("/staff/review").get_data(as_text=True)
    assert "Nothing waits for review" in html
    decided = client.get("/staff/review/decided").get_data(as_text=True)
    with db.transaction(write=False) as session:
        decision = session.execute(
            select(ConsentEvent).where(ConsentEvent.subject_event_id == event_id)
        ).scalar_one()
    row = decided[decided.index(f'id="decided-{event_id}"') :]
    row = words(row[row.index(">") + 1 : row.index("</tr>")])
    assert row.startswith("+1 •••• 00")
    assert "Not an opt-out" in row and staff.email in row and "About a bill in Congress" in row
    assert f"ledger event #{decision.seq}" in row and "demo: subscribed active" in row
    sid = subscriber_id(db)
    assert f'href="/staff/subscribers/{sid}#event-{decision.id}"' in decided


def test_decisions_are_marked_on_the_event_log_and_the_timeline(app, db, client):
    for body in ["JOIN", "YES", FLAGGED]:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance")
    event_id = flagged_id(db)
    log = staff.get("/staff/events").get_data(as_text=True)
    assert "possible opt-out, awaiting review" in log
    decide(staff, event_id, "opt_out", "Reads as a request to stop")
    with db.transaction(write=False) as session:
        decision = session.execute(
            select(ConsentEvent).where(ConsentEvent.subject_event_id == event_id)
        ).scalar_one()
    sid = subscriber_id(db)
    log = staff.get("/staff/events").get_data(as_text=True)
    assert "awaiting review" not in log
    assert "possible opt-out, decided: treated as opt-out" in log
    assert f'href="/staff/subscribers/{sid}#event-{decision.id}">decision #{decision.seq}' in log
    assert f'decides <a href="/staff/subscribers/{sid}#event-{event_id}">the flagged text' in log
    timeline = staff.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    flagged_item = timeline[timeline.index(f'id="event-{event_id}"') :]
    flagged_item = words(flagged_item[: flagged_item.index("</li>")])
    assert "possible opt-out, decided Treated as an opt-out by compliance@example.com" in (
        flagged_item
    )
    decision_item = timeline[timeline.index(f'id="event-{decision.id}"') :]
    decision_item = decision_item[: decision_item.index("</li>")]
    assert f'Decides</dt><dd><a href="#event-{event_id}">the text #3</a>' in decision_item
    assert FLAGGED in decision_item


def test_a_number_with_an_open_review_shows_it_and_its_form_on_its_page(app, db, client):
    for body in ["JOIN", "YES", FLAGGED]:
        send_text(client, PHONE, body)
    sid, event_id = subscriber_id(db), flagged_id(db)
    staff, _ = signed_in_client(app, db, "compliance")
    html = staff.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    verdict = words(html[html.index('id="verdict"') : html.index('id="decide-heading"')])
    assert re.search(r"Hold: a possible opt-out from [\d\- :]+UTC awaits review \(due", verdict)
    assert f'href="/staff/subscribers/{sid}#event-{event_id}">the text</a>' in html
    action = f"/staff/review/{event_id}?next=/staff/subscribers/{sid}"
    assert f'action="{action}"' in html
    response = staff.post(
        action,
        data={
            f"e{event_id}-decision": "opt_out",
            f"e{event_id}-reason": "Reads as a request to stop",
            "csrf_token": page_csrf(staff, f"/staff/subscribers/{sid}"),
        },
    )
    assert response.status_code == 302
    assert response.location.startswith(f"/staff/subscribers/{sid}#event-")
    after = words(staff.get(f"/staff/subscribers/{sid}").get_data(as_text=True))
    assert "awaits review" not in after and "No: opted out on" in after
    assert "opted out by a staff decision (compliance@example.com)" in after


def test_viewers_see_no_decision_form(app, db, client):
    for body in ["JOIN", "YES", FLAGGED]:
        send_text(client, PHONE, body)
    viewer, _ = signed_in_client(app, db, "viewer")
    html = viewer.get(f"/staff/subscribers/{subscriber_id(db)}").get_data(as_text=True)
    assert "awaits review" in html and "/staff/review/" not in html
    assert viewer.get("/staff/review/decided").status_code == 403
