"""JSON API v1: bearer tokens and the contract's shapes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import ApiToken
from app.tokens import create_api_token
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


@pytest.fixture
def token(db):
    with db.transaction() as session:
        _, plain = create_api_token(session, "tests")
    return plain


def get(client, path, token, **kw):
    return client.get(path, headers={"Authorization": f"Bearer {token}"}, **kw)


@pytest.mark.parametrize(
    "path", ["/api/v1/subscribers/+14155550100", "/api/v1/events", "/api/v1/messages"]
)
@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", "bearer scg_wrong"]
)
def test_requests_without_a_valid_token_are_401(client, token, path, header):
    headers = {"Authorization": header} if header else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "a valid bearer token is required"}
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_token_is_stored_only_as_a_hash(db, token):
    with db.transaction(write=False) as session:
        row = session.execute(select(ApiToken)).scalar_one()
    assert token not in (row.token_sha256, row.name)
    assert len(row.token_sha256) == 64


def test_revoked_token_is_refused(client, db, token):
    from app.db import utcnow

    with db.transaction() as session:
        session.execute(select(ApiToken)).scalar_one().revoked_at = utcnow()
    assert get(client, "/api/v1/events", token).status_code == 401


@pytest.mark.parametrize("form", ["+14155550100", "14155550100", "+1 (415) 555-0100"])
def test_subscriber_status(client, token, form):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    response = get(client, f"/api/v1/subscribers/{form}", token)
    assert response.status_code == 200
    body = response.get_json()
    assert body["phone"] == PHONE
    [program] = body["programs"]
    assert program["program"] == "demo" and program["status"] == "active"
    assert program["since"].endswith("Z")


def test_unknown_subscriber_is_none_everywhere(client, token):
    body = get(client, "/api/v1/subscribers/+14155559999", token).get_json()
    assert body == {
        "phone": "+14155559999",
        "programs": [{"program": "demo", "status": "none", "since": None}],
    }


def test_bad_phone_is_400(client, token):
    response = get(client, "/api/v1/subscribers/not-a-phone", token)
    assert response.status_code == 400
    assert "not a phone number" in response.get_json()["error"]


def test_events_shape_order_and_filters(client, token):
    _, join_sid = send_text(client, PHONE, "JOIN")
    send_text(client, "+14155550111", "HELP")
    send_text(client, PHONE, "<b>hi</b>")
    body = get(client, "/api/v1/events", token).get_json()
    assert [e["intent"] for e in body["events"]] == ["opt_in", "help", "other"]
    assert body["next_cursor"] is None
    first = body["events"][0]
    assert set(first) >= {
        "id",
        "at",
        "phone",
        "program",
        "body",
        "intent",
        "status_before",
        "status_after",
        "message_sid",
        "reply",
    }
    assert first["message_sid"] == join_sid and first["phone"] == PHONE
    assert (first["status_before"], first["status_after"]) == ("none", "pending")
    assert set(first["reply"]) == {"body", "sid", "status"}
    assert body["events"][2]["reply"] is None and body["events"][2]["body"] == "<b>hi</b>"

    mine = get(client, "/api/v1/events?phone=14155550100", token).get_json()["events"]
    assert {e["phone"] for e in mine} == {PHONE} and len(mine) == 2
    assert get(client, "/api/v1/events?program=nope", token).get_json()["events"] == []


def test_events_pagination_by_cursor(client, token):
    for _ in range(5):
        send_text(client, PHONE, "HELP")
    page = get(client, "/api/v1/events?limit=2", token).get_json()
    seen = [e["id"] for e in page["events"]]
    while page["next_cursor"]:
        page = get(client, f"/api/v1/events?limit=2&cursor={page['next_cursor']}", token).get_json()
        seen += [e["id"] for e in page["events"]]
    assert len(seen) == 5 and seen == sorted(seen)


def test_events_time_filters(client, token):
    send_text(client, PHONE, "HELP")
    assert len(get(client, "/api/v1/events?since=2000-01-01", token).get_json()["events"]) == 1
    assert get(client, "/api/v1/events?until=2000-01-01", token).get_json()["events"] == []
    assert get(client, "/api/v1/events?since=yesterday", token).status_code == 400
    assert get(client, "/api/v1/events?cursor=abc", token).status_code == 400


def test_messages(client, token):
    send_text(client, PHONE, "HELP")
    body = get(client, f"/api/v1/messages?phone={PHONE}", token).get_json()
    [message] = body["messages"]
    assert set(message) >= {"id", "to", "body", "status", "sid", "attempts", "error_code"}
    assert message["to"] == PHONE and message["status"] == "queued"
    assert message["attempts"] == 0 and message["sid"] is None


def test_the_plain_token_is_nowhere_in_the_database(db, token):
    """Every text column of every table, not just the token's row (docs/reliability.md)."""
    from sqlalchemy import String, Text, or_

    from app.db import Base

    with db.transaction(write=False) as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if columns:
                hits = session.execute(
                    select(table).where(or_(*(c.contains(token[4:]) for c in columns)))
                ).all()
                assert hits == [], table.name
