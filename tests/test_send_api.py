"""The send API (POST /api/v1/messages), recipient profiles, GET /api/v1/messages' new fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.store.models import OutboundMessage
from app.store.send_models import SendDecisionRecord
from app.web import api_messages
from tests.sending_helpers import auth, seed_subscribers, send_token
from tests.twilio_helpers import send_text

BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."
# 17:30 UTC on a Wednesday: 1:30pm in Florida and New York, 10:30am in California.
NOON_ISH = datetime(2026, 6, 17, 17, 30, tzinfo=UTC)
# 00:30 UTC: 8:30pm in Florida (closed since 8pm), still open in New York (9pm).
EVENING = datetime(2026, 6, 18, 0, 30, tzinfo=UTC)


@pytest.fixture
def at(monkeypatch):
    """Set the instant the API decides at."""

    def set_now(moment: datetime) -> None:
        monkeypatch.setattr(api_messages, "utcnow", lambda: moment)

    set_now(NOON_ISH)
    return set_now


def post(client, token, **payload):
    request = {"program": "demo", "body": BODY, "idempotency_key": "k1"} | payload
    return client.post("/api/v1/messages", json=request, headers=auth(token))


FL = "+13055550100"  # Miami: Eastern
NY = "+12125550100"


def test_each_recipient_gets_a_decision_in_order(client, db, at):
    seed_subscribers(db, [FL, NY])
    seed_subscribers(db, ["+13055550101"], status="opted_out")
    seed_subscribers(db, ["+13055550102"], status="pending")
    at(EVENING)
    token = send_token(db)
    to = [NY, FL, "+13055550101", "+13055550102", "+13055550199"]
    response = post(client, token, to=to)
    assert response.status_code == 202
    body = response.get_json()
    assert body["batch"].startswith("b_")
    results = body["results"]
    assert [r["to"] for r in results] == to
    assert [(r["decision"], r["reason"]) for r in results] == [
        ("send", None),
        ("deferred", "quiet_hours:US-FL"),
        ("refused", "opted_out"),
        ("refused", "no_consent:pending"),
        ("refused", "no_consent:none"),
    ]
    assert results[1]["not_before"] == "2026-06-18T12:00:00Z"  # 8am in Miami
    assert [r["message_id"] is not None for r in results] == [True, True, False, False, False]
    assert all(r["citation"] for r in results[1:])
    with db.transaction(write=False) as session:
        queued = {m.to_number: m for m in session.execute(select(OutboundMessage)).scalars()}
        decisions = session.execute(select(func.count()).select_from(SendDecisionRecord)).scalar()
    assert set(queued) == {NY, FL}
    assert queued[FL].next_attempt_at == datetime(2026, 6, 18, 12, tzinfo=UTC)
    assert (queued[FL].kind, queued[FL].decision, queued[FL].reason) == (
        "program_message",
        "deferred",
        "quiet_hours:US-FL",
    )
    assert queued[NY].next_attempt_at == EVENING
    assert decisions == 5  # refusals are kept too


def test_a_retry_with_the_same_key_answers_the_same_and_queues_nothing(client, db, at):
    seed_subscribers(db, [FL, NY])
    token = send_token(db)
    first = post(client, token, to=[FL, NY])
    at(EVENING)  # a later retry must not be decided again
    again = post(client, token, to=[FL, NY])
    assert again.status_code == 202
    assert again.get_json() == first.get_json()
    with db.transaction(write=False) as session:
        assert session.execute(select(func.count()).select_from(OutboundMessage)).scalar() == 2


def test_the_same_key_for_another_request_is_409(client, db, at):
    seed_subscribers(db, [FL, NY])
    token = send_token(db)
    assert post(client, token, to=[FL]).status_code == 202
    for change in ({"to": [FL, NY]}, {"to": [FL], "body": BODY + "!"}):
        response = post(client, token, **change)
        assert response.status_code == 409
        assert "idempotency_key" in response.get_json()["error"]
    # Keys belong to a token: another token may use the same key.
    assert post(client, send_token(db), to=[NY]).status_code == 202


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"program": "nope"}, "program"),
        ({"program": None}, "program"),
        ({"body": ""}, "body"),
        ({"body": "x" * 1601}, "body"),
        ({"to": []}, "to"),
        ({"to": "+13055550100"}, "to"),
        ({"to": [FL, "not a number"]}, "to[1]"),
        ({"to": [FL] * 10_001}, "to"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
    ],
)
def test_bad_input_is_400_naming_the_field(client, db, at, payload, field):
    response = post(client, send_token(db), **{"to": [FL]} | payload)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert response.get_json()["error"].startswith(f"{field}:")


def test_a_token_without_the_send_scope_is_403(client, db, at):
    read_only = send_token(db, scopes=None)
    response = post(client, read_only, to=[FL])
    assert response.status_code == 403
    assert "messages:send" in response.get_json()["error"]
    assert client.post("/api/v1/messages", json={}).status_code == 401


def test_a_body_without_stop_is_refused_for_everyone(client, db, at):
    seed_subscribers(db, [FL, NY])
    results = post(client, send_token(db), to=[FL, NY], body="Demo Alerts: sale!").get_json()
    assert {(r["decision"], r["reason"]) for r in results["results"]} == {
        ("refused", "body_lint:missing_stop")
    }


def test_the_same_number_twice_counts_against_the_cap(client, db, at):
    """Florida allows 3 marketing messages per 24 h: the 4th of one batch waits a day."""
    seed_subscribers(db, [FL])
    results = post(client, send_token(db), to=[FL] * 4).get_json()["results"]
    assert [r["decision"] for r in results] == ["send", "send", "send", "deferred"]
    assert results[3]["reason"] == "frequency_cap:US-FL"
    assert results[3]["not_before"] == "2026-06-18T17:30:00Z"


def test_messages_list_shows_each_decision(client, db, at):
    seed_subscribers(db, [FL, NY])
    at(EVENING)
    token = send_token(db)
    batch = post(client, token, to=[FL, NY]).get_json()["batch"]
    send_text(client, "+14155550123", "HELP")  # a reply, never deferred
    messages = client.get("/api/v1/messages", headers=auth(token)).get_json()["messages"]
    by_to = {m["to"]: m for m in messages}
    assert {k: by_to[FL][k] for k in ("program", "decision", "not_before", "reason", "batch")} == {
        "program": "demo",
        "decision": "deferred",
        "not_before": "2026-06-18T12:00:00Z",
        "reason": "quiet_hours:US-FL",
        "batch": batch,
    }
    assert (by_to[NY]["decision"], by_to[NY]["not_before"]) == ("send", None)
    assert (by_to["+14155550123"]["decision"], by_to["+14155550123"]["kind"]) == ("send", "help")


def test_a_stored_zip_settles_the_jurisdiction(client, db, at):
    """A Miami number whose owner lives in Pensacola (Central): 7:30pm there, still open."""
    seed_subscribers(db, [FL])
    token = send_token(db)
    response = client.put(
        f"/api/v1/subscribers/{FL}/profile",
        json={"zip": "32501", "purchased_on": "2026-01-02"},
        headers=auth(token),
    )
    assert response.status_code == 200
    assert response.get_json()["location_source"] == "api"
    at(EVENING)
    result = post(client, token, to=[FL]).get_json()["results"][0]
    assert result["decision"] == "send"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"state": "Florida"}, 200),
        ({"state": None, "zip": None}, 200),
        ({"state": "XX"}, 400),
        ({"zip": "123"}, 400),
        ({"purchased_on": "2999-01-01"}, 400),
        ({"colour": "blue"}, 400),
    ],
)
def test_profile_input(client, db, payload, status):
    seed_subscribers(db, [FL])
    token = send_token(db)
    response = client.put(f"/api/v1/subscribers/{FL}/profile", json=payload, headers=auth(token))
    assert response.status_code == status


def test_a_profile_for_an_unknown_number_is_404(client, db):
    response = client.put(
        f"/api/v1/subscribers/{NY}/profile", json={"state": "NY"}, headers=auth(send_token(db))
    )
    assert response.status_code == 404


def test_the_location_twilio_reports_with_a_text_is_kept_unless_someone_stated_one(client, db):
    from app.store.models import Subscriber
    from app.store.send_models import RecipientProfile
    from tests.twilio_helpers import inbound_params, new_message_sid, post_signed

    def text_from(phone, state, zip_code):
        params = inbound_params(phone, "HELP", message_sid=new_message_sid())
        params.update(FromState=state, FromZip=zip_code)
        assert post_signed(client, "/twilio/sms", params).status_code == 200

    def profile(phone):
        with db.transaction(write=False) as session:
            return tuple(
                session.execute(
                    select(
                        RecipientProfile.state,
                        RecipientProfile.zip_code,
                        RecipientProfile.location_source,
                    )
                    .join(Subscriber, Subscriber.id == RecipientProfile.subscriber_id)
                    .where(Subscriber.phone == phone)
                ).one()
            )

    text_from(FL, "FL", "32501")
    assert profile(FL) == ("FL", "32501", "inbound")
    text_from(FL, "FL", "33101")  # the latest report wins over an earlier one
    assert profile(FL) == ("FL", "33101", "inbound")
    token = send_token(db)
    client.put(f"/api/v1/subscribers/{FL}/profile", json={"zip": "32502"}, headers=auth(token))
    text_from(FL, "GA", "30301")  # a stated location stays
    assert profile(FL) == ("FL", "32502", "api")


def test_erasure_removes_the_number_from_decisions_and_the_profile(client, db, runner, at):
    from app.store.send_models import RecipientProfile

    seed_subscribers(db, [FL], zip_code="33101", state="FL")
    post(client, send_token(db), to=[FL])
    result = runner.invoke(args=["erase", FL, "--reason", "data subject request, ticket 42"])
    assert result.exit_code == 0, result.output
    with db.transaction(write=False) as session:
        numbers = session.execute(select(SendDecisionRecord.to_number)).scalars().all()
        profiles = session.execute(select(func.count()).select_from(RecipientProfile)).scalar()
    assert numbers == [None] and profiles == 0


def test_api_token_create_takes_scopes(client, db, runner, at):
    seed_subscribers(db, [NY])
    created = runner.invoke(args=["api-token", "create", "crm", "--scope", "messages:send"])
    assert created.exit_code == 0
    sender = created.output.strip().splitlines()[-1]
    assert post(client, sender, to=[NY]).status_code == 202
    reader = runner.invoke(args=["api-token", "create", "reports"]).output.strip().splitlines()[-1]
    assert post(client, reader, to=[NY], idempotency_key="k2").status_code == 403
    assert client.get("/api/v1/messages", headers=auth(reader)).status_code == 200
    bad = runner.invoke(args=["api-token", "create", "x", "--scope", "messages:delete"])
    assert bad.exit_code != 0
