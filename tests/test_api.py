"""JSON API v1: bearer tokens and the contract's shapes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.access.tokens import create_api_token
from app.store.models import ApiToken
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
    from app.store.db import utcnow

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
        "suppressed": False,
        "programs": [
            {
                "program": "demo",
                "status": "none",
                "since": None,
                "may_text": False,
                "hold": None,
                "ledger_agrees": True,
                "evidence": None,
            }
        ],
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


def test_subscriber_status_says_whether_we_may_text_and_on_what_evidence(app, client, token):
    send_text(client, PHONE, "JOIN")
    pending = get(client, f"/api/v1/subscribers/{PHONE}", token).get_json()["programs"][0]
    assert pending["status"] == "pending" and pending["may_text"] is False
    _, yes_sid = send_text(client, PHONE, "YES")
    body = get(client, f"/api/v1/subscribers/{PHONE}?program=demo", token).get_json()
    assert body["suppressed"] is False
    [program] = body["programs"]
    assert program["status"] == "active" and program["may_text"] is True
    evidence = program["evidence"]
    assert evidence["message_sid"] == yes_sid and evidence["intent"] == "confirm"
    assert evidence["kind"] == "inbound_text" and evidence["source"] is None
    disclosure = app.extensions["programs"].get("demo").texts_for(["en"]).disclosure
    assert evidence["disclosure_text"] == disclosure
    assert len(evidence["disclosure_sha256"]) == 64 and evidence["at"].endswith("Z")

    send_text(client, PHONE, "STOP")
    stopped = get(client, f"/api/v1/subscribers/{PHONE}", token).get_json()["programs"][0]
    assert stopped["may_text"] is False and stopped["evidence"]["intent"] == "opt_out"


def test_subscriber_status_for_an_unknown_program_is_404(client, token):
    response = get(client, f"/api/v1/subscribers/{PHONE}?program=nope", token)
    assert response.status_code == 404 and "no such program" in response.get_json()["error"]


def test_imported_consent_names_its_source(client, runner, token, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(
        "phone,program,consented_at,method,disclosure_text\n"
        f"{PHONE},demo,2024-01-02T03:04:05Z,web form,Alerts from Demo. STOP to end.\n"
    )
    assert runner.invoke(args=["import", str(path), "--source", "crm"]).exit_code == 0
    [program] = get(client, f"/api/v1/subscribers/{PHONE}", token).get_json()["programs"]
    assert program["may_text"] is True and program["since"] == "2024-01-02T03:04:05Z"
    evidence = program["evidence"]
    assert evidence["kind"] == "import" and evidence["source"] == "crm"
    assert evidence["disclosure_text"] == "Alerts from Demo. STOP to end."
    assert "web form" in evidence["note"]


def post_checks(client, token, payload):
    return client.post(
        "/api/v1/consent-checks", json=payload, headers={"Authorization": f"Bearer {token}"}
    )


def test_consent_checks_answer_each_number_in_order(client, runner, token):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    send_text(client, "+14155550111", "JOIN")
    assert runner.invoke(args=["erase", "+14155550122", "--reason", "ticket 5"]).exit_code == 0
    phones = ["14155550100", "+14155550111", "+14155550199", "+14155550122", "nope", 42]
    response = post_checks(client, token, {"program": "demo", "phones": phones})
    assert response.status_code == 200
    body = response.get_json()
    assert body["program"] == "demo"
    results = body["results"]
    assert [r["input"] for r in results] == phones
    assert [r["may_text"] for r in results] == [True, False, False, False, False, False]
    assert [r.get("status") for r in results] == ["active", "pending", "none", "none", None, None]
    assert results[0]["phone"] == PHONE and results[0]["evidence"]["intent"] == "confirm"
    assert results[2]["evidence"] is None
    assert results[3]["suppressed"] is True and results[0]["suppressed"] is False
    assert results[4] == {
        "input": "nope",
        "phone": None,
        "may_text": False,
        "error": "not a phone number",
    }
    assert results[5]["error"] == "not a phone number"


def test_consent_checks_of_a_thousand_numbers_take_a_fixed_number_of_queries(app, client, token):
    from sqlalchemy import event

    for n in range(3):
        send_text(client, f"+1415555010{n}", "JOIN")
    phones = [f"+1415555{n:04d}" for n in range(100, 1100)]
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    engine = app.extensions["db"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = post_checks(client, token, {"program": "demo", "phones": phones})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == 1000
    assert [r["status"] for r in results[:4]] == ["pending", "pending", "pending", "none"]
    # The token check and its update, the batch (consent, suppressions, review holds), and one
    # access-audit row: never a query per number.
    assert len(statements) <= 9, statements


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "must be a JSON object"),
        ([], "must be a JSON object"),
        ({"phones": [PHONE]}, "program is required"),
        ({"program": "nope", "phones": [PHONE]}, "no such program"),
        ({"program": "demo"}, "phones must be a non-empty list"),
        ({"program": "demo", "phones": []}, "phones must be a non-empty list"),
        ({"program": "demo", "phones": PHONE}, "phones must be a non-empty list"),
        ({"program": "demo", "phones": [PHONE] * 1001}, "at most 1000 phones"),
    ],
)
def test_consent_checks_refuse_bad_requests_clearly(client, token, payload, message):
    if payload is None:
        response = client.post(
            "/api/v1/consent-checks",
            data="not json",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    else:
        response = post_checks(client, token, payload)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_consent_checks_need_a_token(client):
    response = client.post("/api/v1/consent-checks", json={"program": "demo", "phones": [PHONE]})
    assert response.status_code == 401


def test_the_plain_token_is_nowhere_in_the_database(db, token):
    """Every text column of every table, not just the token's row (docs/reliability.md)."""
    from sqlalchemy import String, Text, or_

    from app.store.db import Base

    with db.transaction(write=False) as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if columns:
                hits = session.execute(
                    select(table).where(or_(*(c.contains(token[4:]) for c in columns)))
                ).all()
                assert hits == [], table.name


# --- scopes, expiry, audit, rate limit (issue 13) -----------------------------------------------


def make_token(db, scopes=None, **kw) -> str:
    with db.transaction() as session:
        return create_api_token(session, "scoped", scopes, **kw)[1]


def test_a_token_reads_only_what_its_scopes_allow(client, db):
    """Finding 3: any token read every number, body and reply."""
    send_text(client, PHONE, "JOIN")
    consent_only = make_token(db, ["consent:read"])
    assert get(client, f"/api/v1/subscribers/{PHONE}", consent_only).status_code == 200
    for path in ("/api/v1/events", f"/api/v1/messages?phone={PHONE}"):
        response = get(client, path, consent_only)
        assert response.status_code == 403
        assert response.get_json() == {"error": "this token lacks the scope events:read"}
    sender = make_token(db, ["messages:send"])
    assert get(client, f"/api/v1/subscribers/{PHONE}", sender).status_code == 403
    assert get(client, "/api/v1/events", sender).status_code == 403


def test_tokens_from_before_scopes_keep_the_read_scopes(client, db, token):
    with db.transaction() as session:
        session.execute(select(ApiToken)).scalar_one().scopes = None  # as migrated
    assert get(client, "/api/v1/events", token).status_code == 200
    assert get(client, f"/api/v1/subscribers/{PHONE}", token).status_code == 200


def test_an_expired_token_is_refused(client, db):
    from datetime import timedelta

    from app.store.db import utcnow

    short = make_token(db, expires_in_days=1)
    assert get(client, "/api/v1/events", short).status_code == 200
    with db.transaction() as session:
        row = session.execute(select(ApiToken)).scalar_one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert get(client, "/api/v1/events", short).status_code == 401


def test_unknown_scopes_are_refused():
    from app.access.tokens import TokenError, create_api_token

    with pytest.raises(TokenError, match="unknown scope"):
        create_api_token(None, "x", ["admin:all"])  # refused before anything is stored


def test_every_api_read_of_personal_data_is_audited_with_the_numbers_keyed_hash(app, client, db):
    """Finding 3 (ASVS 8.3.5): API reads left no audit record."""
    from app.ledger.suppression import phone_hmac
    from app.store.models import StaffAuditEntry

    send_text(client, PHONE, "JOIN")
    plain = make_token(db)
    with db.transaction(write=False) as session:
        token_id = session.execute(select(ApiToken.id)).scalar_one()
    get(client, f"/api/v1/subscribers/{PHONE}", plain)
    get(client, f"/api/v1/events?phone={PHONE}", plain)
    get(client, "/api/v1/messages", plain)
    post_checks(client, plain, {"program": "demo", "phones": [PHONE, "+14155550111"]})
    with db.transaction(write=False) as session:
        entries = list(
            session.execute(
                select(StaffAuditEntry).where(StaffAuditEntry.action == "api_read")
            ).scalars()
        )
    key = app.extensions["settings"].suppression_hmac_key
    assert [e.target for e in entries] == [
        "GET /api/v1/subscribers/<path:phone>",
        "GET /api/v1/events",
        "GET /api/v1/messages",
        "POST /api/v1/consent-checks",
    ]
    assert all(e.api_token_id == token_id and e.staff_id is None for e in entries)
    assert entries[0].query["phone_hmac"] == [phone_hmac(key, PHONE)]
    assert entries[1].query["phone_hmac"] == [phone_hmac(key, PHONE)]
    assert entries[1].row_count == 1
    assert "phone_hmac" not in (entries[2].query or {})
    assert set(entries[3].query["phone_hmac"]) == {
        phone_hmac(key, PHONE),
        phone_hmac(key, "+14155550111"),
    }
    text = " ".join(str(e.query) + str(e.target) for e in entries)
    assert "4155550100" not in text and "4155550111" not in text


def test_each_token_has_its_own_rate_limit(database_url, tmp_path):
    from tests.conftest import make_test_app

    app = make_test_app(database_url, tmp_path, api_rate_limit="3 per minute")
    db = app.extensions["db"]
    client = app.test_client()
    first, second = make_token(db), make_token(db)
    codes = [get(client, "/api/v1/events", first).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert "rate limit" in get(client, "/api/v1/events", first).get_json()["error"]
    assert get(client, "/api/v1/events", second).status_code == 200
    db.dispose()


def test_api_answers_are_never_cached_and_refusals_are_logged(client, db, caplog):
    import logging

    reader = make_token(db)
    response = get(client, "/api/v1/events", reader)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"] == 'attachment; filename="api.json"'
    with caplog.at_level(logging.WARNING):
        get(client, "/api/v1/events", make_token(db, ["consent:read"]))
    assert any(r.getMessage() == "API access denied: scope missing" for r in caplog.records)
