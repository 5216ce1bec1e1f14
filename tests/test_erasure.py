"""Erasure (`flask --app app erase`): personal data goes, a suppression entry and proof stay."""

from __future__ import annotations

import json

import pytest
import responses
from sqlalchemy import func, inspect, select, text

from app.access.tokens import create_api_token
from app.ledger.chain import verify_ledger
from app.ledger.suppression import phone_hmac
from app.privacy.erasure import ERASURE, ErasureError, check_reason
from app.store.models import (
    SUPPRESSED,
    ConsentEvent,
    OutboundMessage,
    Subscriber,
    Subscription,
    Suppression,
)
from tests.conftest import make_test_app
from tests.ledger_tampering import tamper
from tests.staff_helpers import signed_in_client
from tests.test_sender import RecordingGateway, make_sender
from tests.twilio_helpers import TEST_ACCOUNT_SID, send_text

PHONE = "+14155550100"
OTHER = "+14155550111"
DIGITS = "4155550100"


def erase(runner, phone=PHONE, reason="GDPR request ticket A-17", *extra):
    return runner.invoke(
        args=["erase", phone, "--reason", reason, "--actor", "dpo@example.com", *extra]
    )


def every_stored_value(db) -> str:
    """Every row of every table, as text: where a number could still hide."""
    dump = []
    with db.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(repr(tuple(row)))
    return "\n".join(dump)


def test_erasure_removes_personal_data_keeps_proof_and_the_ledger_verifies(app, db, client, runner):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    send_text(client, PHONE, f"my number is {DIGITS}, HELP")
    send_text(client, OTHER, "JOIN")
    staff_client, _ = signed_in_client(app, db, "compliance")  # searches, then exports, by number
    assert staff_client.get(f"/staff/events?phone={PHONE}").status_code == 200
    export = staff_client.get(f"/staff/events/export.csv?phone={DIGITS}")
    assert DIGITS in export.get_data(as_text=True)  # read to the end: then it is audited
    assert DIGITS in every_stored_value(db)

    result = erase(runner)
    assert result.exit_code == 0, result.output
    assert "erased: ledger event" in result.output and DIGITS not in result.output
    assert "from 4 ledger event(s) and 2 reply(ies)" in result.output  # JOIN and YES were answered

    stored = every_stored_value(db)
    assert DIGITS not in stored and "my number is" not in stored
    key = app.extensions["settings"].suppression_hmac_key
    with db.transaction(write=False) as session:
        suppression = session.execute(select(Suppression)).scalar_one()
        assert suppression.phone_hmac == phone_hmac(key, PHONE)
        erased = session.get(ConsentEvent, suppression.event_id)
        assert erased.kind == ERASURE and erased.actor == "dpo@example.com"
        assert "GDPR request ticket A-17" in erased.note and suppression.phone_hmac in erased.note
        assert (erased.status_before, erased.status_after) == ("active", "opted_out")
        subscriber = session.get(Subscriber, erased.subscriber_id)
        assert subscriber.phone is None and subscriber.chain_seq == 4
        events = session.execute(
            select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id)
        ).scalars()
        assert all(e.body is None and e.personal_salt is None for e in events)
        assert (
            session.execute(
                select(Subscription.status).where(Subscription.subscriber_id == subscriber.id)
            ).scalar_one()
            == "opted_out"
        )
        # The other subscriber keeps everything.
        other = session.execute(select(Subscriber).where(Subscriber.phone == OTHER)).scalar_one()
        assert (
            session.execute(
                select(ConsentEvent.body).where(ConsentEvent.subscriber_id == other.id)
            ).scalar_one()
            == "JOIN"
        )
        check = verify_ledger(session)
    assert check.ok, check.message
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output


def test_queued_replies_to_an_erased_number_are_suppressed(db, client, runner):
    send_text(client, PHONE, "HELP")
    assert erase(runner).exit_code == 0
    with db.transaction(write=False) as session:
        message = session.execute(select(OutboundMessage)).scalar_one()
    assert message.status == SUPPRESSED and message.to_number is None


def test_sender_refuses_a_suppressed_number_outside_a_fresh_history(app, db, client, runner):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    assert erase(runner).exit_code == 0
    # A reply that somehow names the number again on the erased history (a stale row, a
    # bug elsewhere) must still not go out.
    with db.transaction() as session:
        old_id = session.execute(select(Subscriber.id)).scalar_one()
        stale = OutboundMessage(
            subscriber_id=old_id, program_id=None, kind="help", to_number=PHONE, body="hi"
        )
        session.add(stale)
    gateway = RecordingGateway()
    sender = make_sender(app, gateway)
    while sender.process_one():
        pass
    assert gateway.sent == []
    with db.transaction(write=False) as session:
        row = session.get(OutboundMessage, stale.id)
    assert row.status == SUPPRESSED and "suppression list" in row.error_message


def test_erased_number_starts_a_fresh_consumer_history_with_join_then_yes(app, db, client, runner):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    assert erase(runner).exit_code == 0
    with db.transaction() as session:
        _, token = create_api_token(session, "t")
    headers = {"Authorization": f"Bearer {token}"}

    body = client.get(f"/api/v1/subscribers/{PHONE}", headers=headers).get_json()
    assert body["suppressed"] is True
    assert body["programs"][0] == {
        "program": "demo",
        "status": "none",
        "since": None,
        "may_text": False,
        "hold": None,
        "ledger_agrees": True,
        "evidence": None,
    }
    assert "no consent history" in runner.invoke(args=["evidence", PHONE]).output

    # START cannot bring the old confirmed subscription back: the old history is no longer
    # this number's, so START is a fresh opt-in that still needs YES.
    send_text(client, PHONE, "START")
    program = client.get(f"/api/v1/subscribers/{PHONE}", headers=headers).get_json()["programs"][0]
    assert program["status"] == "pending" and program["may_text"] is False
    send_text(client, PHONE, "YES")
    body = client.get(f"/api/v1/subscribers/{PHONE}", headers=headers).get_json()
    [program] = body["programs"]
    assert program["status"] == "active" and program["may_text"] is True
    assert program["evidence"]["kind"] == "inbound_text"

    with db.transaction(write=False) as session:
        subscribers = session.execute(select(Subscriber).order_by(Subscriber.id)).scalars().all()
        assert [s.phone for s in subscribers] == [None, PHONE]
        fresh_events = (
            session.execute(
                select(ConsentEvent).where(ConsentEvent.subscriber_id == subscribers[1].id)
            )
            .scalars()
            .all()
        )
        assert fresh_events[0].seq == 1 and fresh_events[0].body == "START"
        assert verify_ledger(session).ok
    # The fresh history's replies may go out; the sender's suppression check lets them.
    gateway = RecordingGateway()
    sender = make_sender(app, gateway)
    while sender.process_one():
        pass
    assert len(gateway.sent) == 2 and {sms.to for sms in gateway.sent} == {PHONE}
    # Evidence now shows only the fresh history.
    bundle = json.loads(runner.invoke(args=["evidence", PHONE]).output)
    assert [e["body"] for e in bundle["events"]] == ["START", "YES"]


def test_erasing_an_unknown_number_still_suppresses_it_and_is_in_the_ledger(app, db, runner):
    result = erase(runner, OTHER)
    assert result.exit_code == 0, result.output
    assert "no history" in result.output
    with db.transaction(write=False) as session:
        assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() == 1
        event = session.execute(select(ConsentEvent)).scalar_one()
        assert event.kind == ERASURE and event.program_id is None
        assert verify_ledger(session).ok


def test_a_number_can_be_erased_again_after_it_came_back(db, client, runner):
    send_text(client, PHONE, "JOIN")
    assert erase(runner).exit_code == 0
    send_text(client, PHONE, "JOIN")
    assert erase(runner).exit_code == 0
    with db.transaction(write=False) as session:
        assert session.execute(select(Subscriber.phone)).scalars().all() == [None, None]
        assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() == 1
        assert verify_ledger(session).ok


@pytest.mark.parametrize(
    "reason", ["", "   ", f"caller {DIGITS} asked", "asked by +1 (415) 555-0100", "x" * 501]
)
def test_a_reason_is_required_and_may_not_hold_a_number(db, client, runner, reason):
    send_text(client, PHONE, "JOIN")
    result = erase(runner, PHONE, reason)
    assert result.exit_code == 1
    assert "Error" in result.output
    with db.transaction(write=False) as session:
        assert session.execute(select(Subscriber.phone)).scalar_one() == PHONE
        assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() == 0


def test_check_reason_keeps_short_references():
    assert check_reason("  ticket  #4412 from 2026-01-05 ") == "ticket #4412 from 2026-01-05"
    with pytest.raises(ErasureError):
        check_reason("call 555 0100 123")
    with pytest.raises(ErasureError):
        check_reason("digits 415.555.0100", PHONE)


def test_bad_phone_is_refused(runner):
    result = erase(runner, "not-a-number")
    assert result.exit_code == 1 and "not a phone number" in result.output


def test_tampering_after_erasure_is_still_detected(db, client, runner):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    assert erase(runner).exit_code == 0
    tamper(db, "UPDATE consent_events SET status_after = 'active' WHERE kind = 'erasure'")
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert "edited" in result.output


def test_the_triggers_still_refuse_anything_but_removing_personal_data(db, client):
    from sqlalchemy.exc import DBAPIError

    send_text(client, PHONE, "JOIN")
    refused = [
        "UPDATE consent_events SET intent = 'other'",
        "UPDATE consent_events SET body = 'STOP'",
        "UPDATE consent_events SET personal_salt = 'ab'",
        "UPDATE consent_events SET body = NULL, actor = 'someone'",
        "DELETE FROM consent_events",
    ]
    for statement in refused:
        with pytest.raises(DBAPIError):
            with db.engine.begin() as connection:
                connection.execute(text(statement))
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE consent_events SET body = NULL, body_raw = NULL"))
    with db.transaction(write=False) as session:
        assert session.execute(select(ConsentEvent.body)).scalar_one() is None
        assert verify_ledger(session).ok


def test_erasure_is_all_or_nothing(db, client, runner, monkeypatch):
    send_text(client, PHONE, "JOIN")
    import app.privacy.erasure as erasure

    def broken(*_args, **_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(erasure, "suppress", broken)
    result = erase(runner)
    assert result.exit_code != 0
    with db.transaction(write=False) as session:
        assert session.execute(select(Subscriber.phone)).scalar_one() == PHONE
        assert session.execute(select(ConsentEvent.body)).scalar_one() == "JOIN"
        assert session.execute(select(func.count()).select_from(ConsentEvent)).scalar_one() == 1
    # The JOIN's reply was not touched either.
    with db.transaction(write=False) as session:
        assert session.execute(select(OutboundMessage.to_number)).scalar_one() == PHONE


def test_the_console_shows_an_erased_history_without_personal_data(app, db, client, runner):
    from tests.staff_helpers import signed_in_client

    for body in ["JOIN", "YES", "We have got to stop this bill"]:  # the last is flagged
        send_text(client, PHONE, body)
    assert erase(runner).exit_code == 0
    staff, _ = signed_in_client(app, db, "admin")
    with db.transaction(write=False) as session:
        sid = session.execute(select(Subscriber.id)).scalar_one()
    # An anonymous history has no timeline or evidence bundle of its own any more.
    for path in [
        f"/staff/subscribers/{sid}?unmask=1",
        f"/staff/subscribers/{sid}/evidence.html",
        f"/staff/subscribers/{sid}/evidence.json",
    ]:
        assert staff.get(path).status_code == 404, path
    for path in ["/staff/", "/staff/events?unmask=1", "/staff/review?unmask=1"]:
        response = staff.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        assert DIGITS not in html and "•••• 0100" not in html, path
        assert "stop this bill" not in html, path
    found = staff.get(f"/staff/events?phone={DIGITS}").get_data(as_text=True)
    assert "stop this bill" not in found and "/staff/subscribers/" not in found
    events = staff.get("/staff/events?unmask=1").get_data(as_text=True)
    assert "erasure" in events


# --- Twilio's copies ------------------------------------------------------------------------

MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages"


def twilio_app(database_url, tmp_path):
    return make_test_app(database_url, tmp_path, sms_backend="twilio")


def history_sent_through_twilio(app) -> tuple[list[str], list[str]]:
    """JOIN and YES from PHONE, both replies sent through the real client; (inbound, reply) SIDs."""
    client = app.test_client()
    inbound = [send_text(client, PHONE, body)[1] for body in ("JOIN", "YES")]
    replies = [f"SM{n:032x}" for n in (1, 2)]
    for sid in replies:
        responses.post(MESSAGES_URL + ".json", json={"sid": sid, "status": "queued"}, status=201)
    sender = make_sender(app, app.extensions["sms_gateway"])
    while sender.process_one():
        pass
    return inbound, replies


@responses.activate
def test_erasure_deletes_twilio_copies_of_texts_and_replies(database_url, tmp_path):
    app = twilio_app(database_url, tmp_path)
    inbound, replies = history_sent_through_twilio(app)
    deleted = [responses.delete(f"{MESSAGES_URL}/{sid}.json", status=204) for sid in inbound]
    deleted.append(responses.delete(f"{MESSAGES_URL}/{replies[0]}.json", status=204))
    gone = responses.delete(f"{MESSAGES_URL}/{replies[1]}.json", status=404, json={"code": 20404})

    result = erase(app.test_cli_runner())

    assert result.exit_code == 0, result.output
    assert "Twilio's copies: 3 deleted, 1 already gone, 0 not deleted" in result.output
    assert all(call.call_count == 1 for call in [*deleted, gone])
    app.extensions["db"].dispose()


@responses.activate
def test_copies_twilio_keeps_are_named_and_the_exit_code_says_so(database_url, tmp_path):
    app = twilio_app(database_url, tmp_path)
    inbound, replies = history_sent_through_twilio(app)
    for sid in [*inbound, replies[0]]:
        responses.delete(f"{MESSAGES_URL}/{sid}.json", status=204)
    responses.delete(  # Twilio refuses to delete a message it is still sending
        f"{MESSAGES_URL}/{replies[1]}.json",
        status=400,
        json={"code": 20009, "message": "Cannot delete message", "status": 400},
    )

    result = erase(app.test_cli_runner())

    assert result.exit_code == 3
    assert "erased: ledger event" in result.output  # the erasure itself is done and committed
    assert "3 deleted, 0 already gone, 1 not deleted" in result.output
    assert replies[1] in result.output and DIGITS not in result.output
    with app.extensions["db"].transaction(write=False) as session:
        assert session.execute(select(func.count()).select_from(Suppression)).scalar_one() == 1
    app.extensions["db"].dispose()


@responses.activate
def test_keep_twilio_copies_deletes_nothing_at_twilio(database_url, tmp_path):
    app = twilio_app(database_url, tmp_path)
    history_sent_through_twilio(app)
    calls_before = len(responses.calls)

    result = erase(app.test_cli_runner(), PHONE, "ticket 9", "--keep-twilio-copies")

    assert result.exit_code == 0, result.output
    assert len(responses.calls) == calls_before and "Twilio's copies" not in result.output
    app.extensions["db"].dispose()


def test_with_the_console_backend_there_is_nothing_at_twilio_to_delete(client, runner):
    send_text(client, PHONE, "JOIN")
    result = erase(runner)
    assert result.exit_code == 0, result.output
    assert "Twilio's copies: not deleted (the SMS backend is not twilio)" in result.output
