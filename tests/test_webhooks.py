"""POST /twilio/sms and /twilio/status: signatures, parsing, durability, error answers."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from app.store.models import ConsentEvent, DeliveryReceipt, OutboundMessage, Subscriber
from tests.conftest import make_test_app
from tests.twilio_helpers import (
    PUBLIC_BASE_URL,
    TEST_AUTH_TOKEN,
    inbound_params,
    new_message_sid,
    post_signed,
    send_text,
    sign,
    status_params,
)

PHONE = "+14155550100"


def count(db, model) -> int:
    with db.transaction(write=False) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def event_for(db, sid) -> ConsentEvent | None:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == sid)
        ).scalar_one_or_none()


def test_valid_text_answers_empty_twiml_and_is_recorded(client, db):
    response, sid = send_text(client, PHONE, "HELP")
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.data.decode().endswith("<Response/>")
    event = event_for(db, sid)
    assert event is not None and event.intent == "help" and event.body == "HELP"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": ""}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}],
    ids=["missing", "empty", "wrong"],
)
def test_bad_signature_is_403_and_stores_nothing(client, db, headers, caplog):
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    with caplog.at_level(logging.WARNING):
        response = client.post("/twilio/sms", data=params, headers=headers)
    assert response.status_code == 403
    assert count(db, ConsentEvent) == 0 and count(db, Subscriber) == 0
    assert any("signature rejected" in r.getMessage() for r in caplog.records)


def test_signature_with_another_token_is_rejected(client, db):
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    response = post_signed(client, "/twilio/sms", params, token="someone-elses-token")
    assert response.status_code == 403
    assert count(db, ConsentEvent) == 0


def test_tampered_body_is_rejected(client, db):
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms", params)
    params["Body"] = "STOP"
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_signature_for_another_url_is_rejected(client):
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    response = post_signed(
        client, "/twilio/sms", params, url="https://attacker.example.com/twilio/sms"
    )
    assert response.status_code == 403


def test_query_string_is_part_of_the_signed_url(client, db):
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    url = PUBLIC_BASE_URL + "/twilio/sms?source=sc"
    response = client.post(
        "/twilio/sms?source=sc", data=params, headers={"X-Twilio-Signature": sign(url, params)}
    )
    assert response.status_code == 200
    unsigned = client.post(
        "/twilio/sms?source=other", data=params, headers={"X-Twilio-Signature": sign(url, params)}
    )
    assert unsigned.status_code == 403


def test_previous_token_is_accepted_during_rotation(database_url, tmp_path):
    app = make_test_app(
        database_url,
        tmp_path,
        twilio_auth_token="the-new-token",
        twilio_auth_token_previous=TEST_AUTH_TOKEN,
    )
    client = app.test_client()
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    assert post_signed(client, "/twilio/sms", params).status_code == 200
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    assert post_signed(client, "/twilio/sms", params, token="the-new-token").status_code == 200
    app.extensions["db"].dispose()


def test_without_public_base_url_the_request_url_is_used(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, public_base_url=None)
    client = app.test_client()
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    ok = post_signed(client, "/twilio/sms", params, url="http://localhost/twilio/sms")
    assert ok.status_code == 200
    app.extensions["db"].dispose()


def test_https_behind_a_proxy_with_proxy_fix(database_url, tmp_path):
    """Behind a TLS-terminating proxy Twilio signs https://; ProxyFix rebuilds that URL."""
    app = make_test_app(
        database_url, tmp_path, public_base_url=None, proxy_fix_x_proto=1, proxy_fix_x_host=1
    )
    client = app.test_client()
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.org"}
    response = post_signed(
        client, "/twilio/sms", params, url="https://sms.example.org/twilio/sms", headers=headers
    )
    assert response.status_code == 200
    wrong_scheme = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    response = post_signed(
        client,
        "/twilio/sms",
        wrong_scheme,
        url="http://sms.example.org/twilio/sms",
        headers=headers,
    )
    assert response.status_code == 403
    app.extensions["db"].dispose()


@pytest.mark.parametrize("missing", ["MessageSid", "From", "To"])
def test_missing_required_field_is_400(client, db, missing):
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    del params[missing]
    if missing == "MessageSid":
        params.pop("SmsSid"), params.pop("SmsMessageSid")
    assert post_signed(client, "/twilio/sms", params).status_code == 400
    assert count(db, ConsentEvent) == 0


def test_oversized_request_is_413(client, db):
    params = inbound_params(PHONE, "x" * 70_000, message_sid=new_message_sid())
    assert post_signed(client, "/twilio/sms", params).status_code == 413
    assert count(db, ConsentEvent) == 0


def test_repeated_message_sid_changes_nothing(client, db):
    sid = new_message_sid()
    first, _ = send_text(client, PHONE, "JOIN", message_sid=sid)
    second, _ = send_text(client, PHONE, "JOIN", message_sid=sid)
    assert first.status_code == second.status_code == 200
    assert count(db, ConsentEvent) == 1
    assert count(db, OutboundMessage) == 1


@pytest.mark.parametrize(
    "body",
    [
        "x" * 1600,
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "'; DROP TABLE consent_events; --",
        "Robert'); DELETE FROM subscribers;--",
        "emoji 🙂 and ｆｕｌｌ-width",
        "",
    ],
    ids=["1600-chars", "script", "img-onerror", "sql-drop", "sql-delete", "unicode", "empty"],
)
def test_hostile_or_large_bodies_are_stored_exactly(client, db, body):
    response, sid = send_text(client, PHONE, body)
    assert response.status_code == 200
    assert event_for(db, sid).body == body


def test_invalid_utf8_and_nul_bytes_are_stored_faithfully(client, db):
    sid = new_message_sid()
    params = inbound_params(PHONE, "", message_sid=sid)
    del params["Body"]
    raw_body = b"STOP \xff\xfe and a NUL \x00 here"
    encoded = urlencode(params) + "&Body=" + "".join(f"%{b:02X}" for b in raw_body)
    signed_params = dict(params, Body=raw_body.decode("utf-8", errors="replace"))
    response = client.post(
        "/twilio/sms",
        data=encoded,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sign(PUBLIC_BASE_URL + "/twilio/sms", signed_params)},
    )
    assert response.status_code == 200
    event = event_for(db, sid)
    assert event.body_raw == raw_body
    assert "\x00" not in event.body and event.body.startswith("STOP")
    assert event.intent == "opt_out"


def test_from_is_normalised_to_e164(client, db):
    response, sid = send_text(client, "14155550100", "HELP")
    assert response.status_code == 200
    with db.transaction(write=False) as session:
        phones = session.execute(select(Subscriber.phone)).scalars().all()
    assert phones == ["+14155550100"]


def test_database_unavailable_is_503_quickly(database_url, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    broken = (
        f"sqlite:///{tmp_path / 'a-file' / 'db.sqlite3'}"
        if database_url.startswith("sqlite")
        else "postgresql+psycopg://postgres@127.0.0.1:1/test"
    )
    app = make_test_app(broken, tmp_path)
    client = app.test_client()
    response, _ = send_text(client, PHONE, "JOIN")
    assert response.status_code == 503
    assert client.get("/healthz").status_code == 503


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def mark_sent(db, message_id: int, sid: str) -> None:
    with db.transaction() as session:
        message = session.get(OutboundMessage, message_id)
        message.status = "sent"
        message.twilio_sid = sid


def test_status_callbacks_move_forward_only(client, db):
    send_text(client, PHONE, "HELP")
    with db.transaction(write=False) as session:
        message_id = session.execute(select(OutboundMessage.id)).scalar_one()
    sid = "SM" + "f" * 32
    mark_sent(db, message_id, sid)
    for status in ["sent", "delivered", "sent", "queued"]:
        response = post_signed(client, "/twilio/status", status_params(sid, status))
        assert response.status_code == 200
    with db.transaction(write=False) as session:
        assert session.get(OutboundMessage, message_id).status == "delivered"
        assert session.execute(select(func.count(DeliveryReceipt.id))).scalar_one() == 4


def test_status_callback_with_error_code(client, db):
    send_text(client, PHONE, "HELP")
    with db.transaction(write=False) as session:
        message_id = session.execute(select(OutboundMessage.id)).scalar_one()
    sid = "SM" + "e" * 32
    mark_sent(db, message_id, sid)
    post_signed(client, "/twilio/status", status_params(sid, "undelivered", "30003"))
    with db.transaction(write=False) as session:
        message = session.get(OutboundMessage, message_id)
        assert (message.status, message.error_code) == ("undelivered", 30003)


def test_status_callback_needs_a_signature(client, db):
    response = client.post("/twilio/status", data=status_params("SM" + "1" * 32, "delivered"))
    assert response.status_code == 403
    assert count(db, DeliveryReceipt) == 0


def test_status_callback_for_unknown_sid_is_kept(client, db):
    response = post_signed(client, "/twilio/status", status_params("SM" + "2" * 32, "delivered"))
    assert response.status_code == 200
    assert count(db, DeliveryReceipt) == 1


def test_logs_at_info_carry_ids_not_bodies_or_numbers(client, caplog):
    with caplog.at_level(logging.INFO):
        _, sid = send_text(client, PHONE, "JOIN secret-body-words")
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.levelno >= logging.INFO
    )
    assert sid in text
    assert "secret-body-words" not in text
    assert PHONE not in text and PHONE[1:] not in text


def test_status_callback_with_21610_records_a_carrier_opt_out(client, db):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    with db.transaction(write=False) as session:
        first_id = session.execute(select(func.min(OutboundMessage.id))).scalar_one()
    sid = "SM" + "c" * 32
    mark_sent(db, first_id, sid)
    response = post_signed(client, "/twilio/status", status_params(sid, "failed", "21610"))
    assert response.status_code == 200
    with db.transaction(write=False) as session:
        kinds = session.execute(select(ConsentEvent.kind).order_by(ConsentEvent.id)).scalars()
        assert list(kinds) == ["inbound_text", "inbound_text", "carrier_opt_out"]
        welcome = session.execute(
            select(OutboundMessage).where(OutboundMessage.kind == "welcome")
        ).scalar_one()
        assert welcome.status == "suppressed"


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_status_callback_without_sid_or_status_is_400(client, missing):
    params = status_params("SM" + "3" * 32, "delivered")
    params.pop(missing)
    params.pop("SmsSid" if missing == "MessageSid" else "SmsStatus")
    assert post_signed(client, "/twilio/status", params).status_code == 400


# --- hostile input: signatures and typed fields (docs/reliability.md, "Hostile input") --------


def test_an_added_parameter_breaks_the_signature(client, db):
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms", params)
    response = client.post(
        "/twilio/sms",
        data={**params, "OptOutType": "START"},
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 403
    assert count(db, ConsentEvent) == 0


def test_a_removed_parameter_breaks_the_signature(client, db):
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms", params)
    del params["FromCity"]
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_reordered_parameters_keep_a_valid_signature(client, db):
    """Twilio signs the sorted fields, so the order on the wire does not matter."""
    sid = new_message_sid()
    params = inbound_params(PHONE, "HELP", message_sid=sid)
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms", params)
    reordered = urlencode(sorted(params.items(), reverse=True))
    response = client.post(
        "/twilio/sms",
        data=reordered,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 200
    assert event_for(db, sid) is not None


@pytest.mark.parametrize(
    ("public_base_url", "signed_url", "expected"),
    [
        # Twilio may sign the URL with or without the default port; both are accepted.
        ("https://gateway.example.com", "https://gateway.example.com:443/twilio/sms", 200),
        ("https://gateway.example.com:443", "https://gateway.example.com/twilio/sms", 200),
        ("https://gateway.example.com:8443", "https://gateway.example.com:8443/twilio/sms", 200),
        # twilio's validator also tries the configured URL without its port (Twilio's own
        # signing has varied), but never adds a port that is not the scheme's default.
        ("https://gateway.example.com:8443", "https://gateway.example.com/twilio/sms", 200),
        ("https://gateway.example.com", "https://gateway.example.com:8443/twilio/sms", 403),
        ("https://gateway.example.com", "http://gateway.example.com:443/twilio/sms", 403),
    ],
)
def test_port_in_the_signed_url(database_url, tmp_path, public_base_url, signed_url, expected):
    app = make_test_app(database_url, tmp_path, public_base_url=public_base_url)
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    response = post_signed(app.test_client(), "/twilio/sms", params, url=signed_url)
    assert response.status_code == expected
    app.extensions["db"].dispose()


def test_http_signature_is_refused_behind_a_tls_proxy_without_proxy_fix(database_url, tmp_path):
    """Without PUBLIC_BASE_URL or ProxyFix the app sees http://; Twilio signed https://."""
    app = make_test_app(database_url, tmp_path, public_base_url=None)
    params = inbound_params(PHONE, "HELP", message_sid=new_message_sid())
    response = post_signed(
        app.test_client(),
        "/twilio/sms",
        params,
        url="https://localhost/twilio/sms",
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 403  # forwarded headers are not trusted by default
    app.extensions["db"].dispose()


def test_status_callback_signatures(client, db):
    params = status_params("SM" + "4" * 32, "delivered")
    assert post_signed(client, "/twilio/status", params, token="wrong").status_code == 403
    url = "https://attacker.example.com/twilio/status"
    assert post_signed(client, "/twilio/status", params, url=url).status_code == 403
    signature = sign(PUBLIC_BASE_URL + "/twilio/status", params)
    tampered = {**params, "MessageStatus": "failed", "ErrorCode": "21610"}
    response = client.post(
        "/twilio/status", data=tampered, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 403
    assert count(db, DeliveryReceipt) == 0
    assert post_signed(client, "/twilio/status", params).status_code == 200
    assert count(db, DeliveryReceipt) == 1


def test_status_callback_with_the_previous_token_during_rotation(database_url, tmp_path):
    app = make_test_app(
        database_url,
        tmp_path,
        twilio_auth_token="the-new-token",
        twilio_auth_token_previous=TEST_AUTH_TOKEN,
    )
    params = status_params("SM" + "5" * 32, "delivered")
    assert post_signed(app.test_client(), "/twilio/status", params).status_code == 200
    app.extensions["db"].dispose()


@pytest.mark.parametrize("path", ["/twilio/sms", "/twilio/status"])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "forged"])
def test_a_repeated_field_is_refused_and_never_a_500(client, db, path, signed):
    """Found by the fuzz run: twilio's validator raised TypeError on a repeated field.

    Twilio never repeats a field, and its validator signs a repeated field's values
    sorted, so which value comes first is not signed: a repeat is refused (400).
    """
    sid = new_message_sid()
    base = (
        inbound_params(PHONE, "HELP", message_sid=sid)
        if path.endswith("sms")
        else (status_params(sid, "delivered"))
    )
    name, values = (
        ("Body", ["HELP", "STOP"])
        if path.endswith("sms")
        else ("MessageStatus", ["delivered", "failed"])
    )
    fields = {**base, name: values}
    url = PUBLIC_BASE_URL + path
    assert sign(url, fields) == sign(url, {**base, name: values[::-1]})  # the order is not signed
    signature = sign(url, fields) if signed else "Zm9yZ2Vk"
    body = urlencode(fields, doseq=True)
    response = client.post(
        path,
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == (400 if signed else 403)
    assert count(db, ConsentEvent) == count(db, DeliveryReceipt) == 0


@pytest.mark.parametrize(
    "error_code", ["xyz", "²³", "-1", "1.5", "99999999999999999999999", "9" * 5000]
)
def test_a_status_callback_with_a_malformed_error_code_is_400_and_writes_nothing(
    client, db, error_code
):
    """Found by the fuzz run: "²" passed str.isdigit() and huge numbers overflowed: 500s."""
    params = status_params("SM" + "6" * 32, "failed", error_code)
    response = post_signed(client, "/twilio/status", params)
    assert response.status_code == 400
    assert b"ErrorCode" in response.data
    assert count(db, DeliveryReceipt) == 0


def test_a_console_url_with_connection_overrides_still_validates(client, db):
    """The `#rc=…` fragment configured in Twilio's console never reaches us: the request and
    the URL we rebuild from PUBLIC_BASE_URL carry no fragment, so the signature still holds."""
    params = inbound_params(PHONE, "JOIN", message_sid=new_message_sid())
    signature = sign(PUBLIC_BASE_URL + "/twilio/sms", params)
    response = client.post(
        "/twilio/sms#rc=5&ct=2000", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200
    assert event_for(db, params["MessageSid"]) is not None


def test_status_callback_url_naming_the_outbox_row_attaches_the_sid(client, db):
    """The sender's StatusCallback carries ?outbox=<id> (signed with the URL)."""
    send_text(client, PHONE, "HELP")
    with db.transaction(write=False) as session:
        message_id = session.execute(select(OutboundMessage.id)).scalar_one()
    sid = "SM" + "a" * 32
    path = f"/twilio/status?outbox={message_id}"
    assert post_signed(client, path, status_params(sid, "delivered")).status_code == 200
    with db.transaction(write=False) as session:
        message = session.get(OutboundMessage, message_id)
        assert (message.twilio_sid, message.status) == (sid, "delivered")


def test_status_callback_with_a_malformed_outbox_id_is_only_kept(client, db):
    send_text(client, PHONE, "HELP")
    path = "/twilio/status?outbox=1x"
    assert post_signed(client, path, status_params("SM" + "b" * 32, "sent")).status_code == 200
    assert count(db, DeliveryReceipt) == 1
    with db.transaction(write=False) as session:
        assert session.execute(select(OutboundMessage.twilio_sid)).scalar_one() is None
