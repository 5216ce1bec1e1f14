"""Build Twilio-shaped, correctly signed webhook requests for tests.

Signatures come from twilio's own `RequestValidator.compute_signature`, so the
tests exercise the same algorithm Twilio uses, not a copy of it.
"""

from __future__ import annotations

import itertools
import uuid

from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"
TEST_ACCOUNT_SID = "AC" + "0" * 32
PUBLIC_BASE_URL = "https://gateway.example.com"
SHORT_CODE = "12345"

_counter = itertools.count(1)


def new_message_sid() -> str:
    """A fresh, Twilio-looking MessageSid."""
    return "SM" + uuid.uuid4().hex


def sign(url: str, params: dict, token: str = TEST_AUTH_TOKEN) -> str:
    """The X-Twilio-Signature Twilio would send for `params` posted to `url`.

    A list value is a repeated field: Twilio signs each of its values.
    """
    pairs = [
        (name, item)
        for name, value in params.items()
        for item in (value if isinstance(value, list) else [value])
    ]
    return RequestValidator(token).compute_signature(url, MultiDict(pairs))


def inbound_params(
    from_number: str, body: str, *, to: str = SHORT_CODE, message_sid: str | None = None
) -> dict[str, str]:
    """The form fields of an inbound SMS webhook, as Twilio sends them."""
    return {
        "ToCountry": "US",
        "ToState": "",
        "SmsMessageSid": message_sid or "",
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "94105",
        "SmsSid": message_sid or "",
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": message_sid or "",
        "AccountSid": TEST_ACCOUNT_SID,
        "From": from_number,
        "ApiVersion": "2010-04-01",
    }


def post_signed(client, path: str, params: dict, *, token: str = TEST_AUTH_TOKEN, url=None, **kw):
    """POST form `params` to `path` with a valid signature for PUBLIC_BASE_URL + path."""
    signature = sign(url or PUBLIC_BASE_URL + path, params, token)
    headers = {"X-Twilio-Signature": signature, **kw.pop("headers", {})}
    return client.post(path, data=params, headers=headers, **kw)


def send_text(client, from_number: str, body: str, *, to: str = SHORT_CODE, message_sid=None):
    """Post one signed inbound text; returns (response, message_sid)."""
    sid = message_sid or new_message_sid()
    params = inbound_params(from_number, body, to=to, message_sid=sid)
    return post_signed(client, "/twilio/sms", params), sid


def status_params(sid: str, status: str, error_code: str | None = None) -> dict[str, str]:
    """The form fields of a status callback for the reply with `sid`, as Twilio sends them."""
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+14155550100",
        "From": "12345",
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params
