"""The Twilio gateway (app.outbox.twilio_gateway): Twilio's REST API is mocked with `responses`."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs

import pytest
import requests
import responses
from werkzeug.datastructures import MultiDict

from app.config import Settings
from app.outbox.twilio_gateway import (
    ConsoleGateway,
    OutgoingSms,
    SmsSendError,
    TwilioGateway,
    build_gateway,
    validate_signature,
)
from tests.twilio_helpers import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, sign

MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
SID = "SM" + "a" * 32


def gateway(base_url="https://api.twilio.com", timeout=7.5) -> TwilioGateway:
    return TwilioGateway(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, api_base_url=base_url, timeout=timeout)


def created(sid=SID, status="queued") -> dict:
    return {"sid": sid, "status": status, "account_sid": TEST_ACCOUNT_SID}


def form_of(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


@responses.activate
def test_send_from_a_number_with_status_callback():
    responses.post(MESSAGES_URL, json=created(), status=201)
    receipt = gateway().send(
        OutgoingSms(
            to="+14155550100",
            body="Demo Alerts: hello & welcome",
            from_number="12345",
            status_callback="https://gw.example.com/twilio/status",
        )
    )
    assert (receipt.sid, receipt.status) == (SID, "queued")
    [call] = responses.calls
    assert form_of(call) == {
        "To": "+14155550100",
        "From": "12345",
        "Body": "Demo Alerts: hello & welcome",
        "StatusCallback": "https://gw.example.com/twilio/status",
    }
    assert call.request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_messaging_service_wins_over_the_from_number():
    responses.post(MESSAGES_URL, json=created(), status=201)
    gateway().send(
        OutgoingSms(to="+14155550100", body="hi", from_number="12345", messaging_service_sid="MG1")
    )
    form = form_of(responses.calls[0])
    assert form["MessagingServiceSid"] == "MG1" and "From" not in form


def test_without_any_sender_nothing_is_sent():
    with pytest.raises(SmsSendError) as raised:
        gateway().send(OutgoingSms(to="+14155550100", body="hi"))
    assert raised.value.retryable is False


@responses.activate
def test_api_base_url_points_the_client_at_a_fake():
    fake = f"http://127.0.0.1:9999/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    responses.post(fake, json=created(), status=201)
    gateway(base_url="http://127.0.0.1:9999/").send(
        OutgoingSms(to="+14155550100", body="hi", from_number="12345")
    )
    assert responses.calls[0].request.url == fake


def test_the_http_client_has_an_explicit_timeout():
    assert gateway(timeout=4.0).client.http_client.timeout == 4.0


def twilio_error(status: int, code: int | None) -> dict:
    return {"code": code, "message": "refused", "more_info": "", "status": status}


@pytest.mark.parametrize(
    ("status", "code", "retryable", "carrier_opt_out"),
    [
        (429, 20429, True, False),  # too many requests
        (500, None, True, False),
        (502, None, True, False),
        (503, 20503, True, False),
        (400, 21211, False, False),  # invalid To
        (400, 21614, False, False),  # not a mobile number
        (400, 21610, False, True),  # unsubscribed at the carrier
        (401, 20003, False, False),  # bad credentials: retrying will not help
        (400, 21408, False, False),
    ],
)
@responses.activate
def test_errors_map_to_retryable_or_not(status, code, retryable, carrier_opt_out):
    responses.post(MESSAGES_URL, body=json.dumps(twilio_error(status, code)), status=status)
    with pytest.raises(SmsSendError) as raised:
        gateway().send(OutgoingSms(to="+14155550100", body="hi", from_number="12345"))
    error = raised.value
    assert (error.retryable, error.carrier_opt_out) == (retryable, carrier_opt_out)
    assert (error.http_status, error.code) == (status, code)


@pytest.mark.parametrize(
    "exception", [requests.ConnectTimeout(), requests.ReadTimeout(), requests.ConnectionError()]
)
@responses.activate
def test_timeouts_and_connection_errors_are_retryable(exception):
    responses.post(MESSAGES_URL, body=exception)
    with pytest.raises(SmsSendError) as raised:
        gateway().send(OutgoingSms(to="+14155550100", body="hi", from_number="12345"))
    assert raised.value.retryable is True and raised.value.code is None


def test_console_gateway_prints_and_returns_a_sid():
    stream = io.StringIO()
    receipt = ConsoleGateway(stream).send(
        OutgoingSms(to="+14155550100", body="Demo Alerts: hi", from_number="12345")
    )
    assert receipt.sid.startswith("SMconsole") and receipt.status == "sent"
    assert "to +14155550100 from 12345: Demo Alerts: hi" in stream.getvalue()


def test_build_gateway_follows_the_backend_setting():
    base = dict(testing=True, secret_key="x")
    console = Settings.from_env({}, base)
    assert isinstance(build_gateway(console), ConsoleGateway)
    twilio = Settings.from_env(
        {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN}, base
    )
    built = build_gateway(twilio)
    assert isinstance(built, TwilioGateway) and built.account_sid == TEST_ACCOUNT_SID


# --- signatures ------------------------------------------------------------------------------

URL = "https://gw.example.com/twilio/sms"
PARAMS = {"MessageSid": "SM1", "From": "+14155550100", "To": "12345", "Body": "STOP"}


def test_signature_with_the_current_or_previous_token():
    signature = sign(URL, PARAMS, "old-token")
    assert validate_signature(["new-token", "old-token"], URL, PARAMS, signature)
    assert not validate_signature(["new-token"], URL, PARAMS, signature)


@pytest.mark.parametrize("signature", [None, "", "garbage", sign(URL, {**PARAMS, "Body": "JOIN"})])
def test_missing_or_wrong_signatures_are_refused(signature):
    assert not validate_signature([TEST_AUTH_TOKEN], URL, PARAMS, signature)


def test_signature_over_repeated_form_fields():
    params = MultiDict([("MediaUrl", "a"), ("MediaUrl", "b"), ("Body", "hi")])
    signature = sign(URL, params)
    assert validate_signature([TEST_AUTH_TOKEN], URL, params, signature)


@responses.activate
def test_recent_messages_lists_a_recipients_newest_messages():
    responses.get(
        MESSAGES_URL,
        json={
            "messages": [
                {
                    "sid": SID,
                    "status": "sent",
                    "body": "hello",
                    "date_created": "Mon, 23 Nov 2026 04:20:00 +0000",
                }
            ],
            "next_page_uri": None,
            "page": 0,
            "page_size": 20,
        },
    )
    [found] = gateway().recent_messages("+14155550100", "12345")
    assert (found.sid, found.status, found.body) == (SID, "sent", "hello")
    assert found.created_at.isoformat() == "2026-11-23T04:20:00+00:00"
    query = parse_qs(responses.calls[0].request.url.split("?", 1)[1])
    assert query["To"] == ["+14155550100"] and query["From"] == ["12345"]


@responses.activate
def test_recent_messages_maps_failures_like_send():
    responses.get(MESSAGES_URL, json=twilio_error(503, None), status=503)
    with pytest.raises(SmsSendError) as raised:
        gateway().recent_messages("+14155550100", None)
    assert raised.value.retryable


def test_console_gateway_has_no_earlier_messages():
    assert ConsoleGateway(io.StringIO()).recent_messages("+14155550100", None) == []


def test_both_backends_offer_everything_the_gateway_protocol_names():
    """The sender and erasure use only `SmsGateway`; each backend must have all of it."""
    from app.outbox.twilio_gateway import ConsoleGateway, SmsGateway

    twilio = TwilioGateway(
        TEST_ACCOUNT_SID, "token", api_base_url="https://api.twilio.com", timeout=1
    )
    for gateway in (twilio, ConsoleGateway()):
        assert isinstance(gateway, SmsGateway), type(gateway).__name__
    assert ConsoleGateway().delete_message("SM" + "0" * 32) is False
