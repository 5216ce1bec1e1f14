"""Review holds (app.consent.holds, issue 11): a possible opt-out awaiting review holds the number.

"We have got to stop this bill" is flagged for review, not opted out. Until a compliance
officer decides, the number must not be treated like one that never wrote: program
messages wait (HELP and other replies to its own texts still go), the consent API says
`may_text: false` with the reason and the deadline, the console and the evidence bundle
say "hold", and the decision releases the hold or opts the number out with the one
confirmation. Before this, all of them said yes and the sender sent.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from app import context
from app.consent import holds
from app.consent.review import review_deadline
from app.outbox import hold as send_time
from app.store.models import ConsentEvent, OutboundMessage
from app.web import api_messages
from tests.sending_helpers import auth, seed_subscribers, send_token
from tests.staff_helpers import signed_in_client
from tests.test_program_sends import BODY, FL, MIDDAY, message
from tests.test_sender import RecordingGateway, make_sender, status_of
from tests.test_staff_views import decide as decide_in_console
from tests.twilio_helpers import send_text

DOUBTFUL = "We have got to stop this bill"


def flagged_event(db) -> ConsentEvent:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent).where(ConsentEvent.possible_opt_out.is_(True))
        ).scalar_one()


@pytest.fixture
def held(app, client, db, monkeypatch):
    """FL is subscribed, has a program message queued at midday, then writes a doubtful text.

    Returns the program message's id."""
    seed_subscribers(db, [FL])
    monkeypatch.setattr(api_messages, "utcnow", lambda: MIDDAY)
    response = client.post(
        "/api/v1/messages",
        json={"program": "demo", "body": BODY, "to": [FL], "idempotency_key": "before-hold"},
        headers=auth(send_token(db)),
    )
    [result] = response.get_json()["results"]
    assert result["decision"] == "send"
    send_text(client, FL, DOUBTFUL)
    assert flagged_event(db).intent == "other"  # flagged, not opted out
    monkeypatch.setattr(send_time, "utcnow", lambda: MIDDAY)
    return result["message_id"]


def send_all(app, **settings) -> RecordingGateway:
    """Let the sender take what is due, a few rounds (the clock it decides by stands still at
    MIDDAY while the claims use the real one, so a deferred message is due again at once)."""
    gateway = RecordingGateway()
    sender = make_sender(app, gateway, **settings)
    for _round in range(3):
        claimed = sender.claim(20)
        if not claimed:
            break
        for message_in_hand in claimed:
            sender.deliver(message_in_hand)
    return gateway


def test_a_flagged_text_holds_program_messages_but_help_still_goes(app, client, db, held):
    send_text(client, FL, "HELP")
    gateway = send_all(app)
    assert [sms.body for sms in gateway.sent if sms.body == BODY] == []  # the program message
    assert any("help" in sms.body.lower() or "HELP" in sms.body for sms in gateway.sent)
    waiting = message(db, held)
    assert (waiting.status, waiting.decision, waiting.reason) == (
        "queued",
        "deferred",
        "no_consent:review_hold",
    )
    assert status_of(db, FL) == "active"  # nothing was decided for the subscriber


def test_the_consent_api_says_hold_with_the_deadline(client, db, held):
    token = send_token(db, scopes=("consent:read",))
    body = client.get(f"/api/v1/subscribers/{FL}", headers=auth(token)).get_json()
    [demo] = body["programs"]
    flagged = flagged_event(db)
    due = review_deadline(flagged.occurred_at).isoformat().replace("+00:00", "Z")
    assert demo["status"] == "active" and demo["may_text"] is False
    assert demo["hold"]["reason"] == "awaiting review of a possible opt-out"
    assert demo["hold"]["due"] == due and demo["hold"]["event_id"] == flagged.id
    checks = client.post(
        "/api/v1/consent-checks",
        json={"program": "demo", "phones": [FL]},
        headers=auth(token),
    ).get_json()["results"]
    assert checks[0]["may_text"] is False and checks[0]["hold"]["due"] == due


def test_the_console_says_hold_with_the_deadline_and_offers_the_decision(app, db, held):
    client, _ = signed_in_client(app, db, "compliance")
    flagged = flagged_event(db)
    html = client.get(f"/staff/subscribers/{flagged.subscriber_id}").get_data(as_text=True)
    due = review_deadline(flagged.occurred_at).strftime("%Y-%m-%d %H:%M:%S")
    assert ">Hold<" in html and ">Yes<" not in html
    assert "Hold: a possible opt-out from" in html and f"(due {due} UTC)" in html
    assert f'action="/staff/review/{flagged.id}?next=' in html  # the decision form, here
    assert "sends it the one opt-out confirmation" in html


def test_the_evidence_bundle_shows_the_hold(app, db, held, runner):
    result = runner.invoke(args=["evidence", FL, "--format", "json", "--no-checkpoint"])
    import json

    bundle = json.loads(result.stdout)
    [hold] = bundle["holds"]
    assert hold["program"] == "demo" and hold["event_id"] == flagged_event(db).id
    [status] = bundle["current_status"]
    assert status["status"] == "active" and status["may_text"] is False
    assert status["hold"]["reason"] == "awaiting review of a possible opt-out"


def test_not_an_opt_out_releases_the_hold_and_the_message_goes(app, client, db, held):
    send_all(app)  # deferred by the hold
    console, _ = signed_in_client(app, db, "compliance")
    response = decide_in_console(console, flagged_event(db).id, "not_opt_out", "about a bill")
    assert response.status_code == 302
    token = send_token(db, scopes=("consent:read",))
    [demo] = client.get(f"/api/v1/subscribers/{FL}", headers=auth(token)).get_json()["programs"]
    assert demo["may_text"] is True and demo["hold"] is None
    gateway = send_all(app)
    assert [sms.body for sms in gateway.sent] == [BODY]
    assert message(db, held).status == "sent"


def test_treat_as_opt_out_opts_out_with_the_one_confirmation(app, client, db, held):
    console, _ = signed_in_client(app, db, "compliance")
    response = decide_in_console(console, flagged_event(db).id, "opt_out", "asked us to stop")
    assert response.status_code == 302
    assert status_of(db, FL) == "opted_out"
    gateway = send_all(app)
    assert [sms.body for sms in gateway.sent if sms.body == BODY] == []
    with db.transaction(write=False) as session:
        kinds = list(
            session.execute(
                select(OutboundMessage.kind).where(OutboundMessage.to_number == FL)
            ).scalars()
        )
    assert kinds.count("opt_out_confirmation") == 1
    assert message(db, held).status == "suppressed"


def test_the_send_api_defers_a_held_number_and_rules_explain_agrees(app, client, db, held, runner):
    token = send_token(db)
    response = client.post(
        "/api/v1/messages",
        json={"program": "demo", "body": BODY, "to": [FL], "idempotency_key": "during-hold"},
        headers=auth(token),
    )
    [result] = response.get_json()["results"]
    assert (result["decision"], result["reason"]) == ("deferred", "no_consent:review_hold")
    import json

    explained = json.loads(
        runner.invoke(
            args=["rules", "explain", FL, "--program", "demo", "--at", MIDDAY.isoformat()]
        ).stdout
    )
    assert (explained["decision"], explained["reason"]) == ("deferred", "no_consent:review_hold")


def test_with_holds_turned_off_the_hold_is_reported_but_sends_go(app, client, db, held):
    settings = dataclasses.replace(app.extensions["settings"], review_holds_sends=False)
    app.extensions["settings"] = settings
    token = send_token(db, scopes=("consent:read",))
    [demo] = client.get(f"/api/v1/subscribers/{FL}", headers=auth(token)).get_json()["programs"]
    assert demo["may_text"] is True and demo["hold"]["reason"]
    gateway = send_all(app, review_holds_sends=False)
    assert [sms.body for sms in gateway.sent] == [BODY]


def test_a_large_batch_finds_the_same_holds_as_a_small_one(app, db, held):
    """Up to `FEW` numbers, holds are looked up by number; beyond, every undecided flagged
    text is read once. Both ways give the held number its hold and the others none."""
    others = [f"+1305555{n:04d}" for n in range(holds.FEW + 1)]
    with app.app_context(), db.transaction(write=False) as session:
        catalog = context.programs()
        subscriber_id = flagged_event(db).subscriber_id
        small = holds.holds_of_numbers(session, catalog, [FL])
        large = holds.holds_of_numbers(session, catalog, [FL, *others])
        by_id_small = holds.holds_of(session, catalog, [subscriber_id])
        by_id_large = holds.holds_of(
            session, catalog, [subscriber_id, *range(10**6, 10**6 + holds.FEW + 1)]
        )
    assert set(small) == {FL} and set(small[FL]) == {"demo"}
    assert large == small
    assert by_id_small == by_id_large == {subscriber_id: small[FL]}
