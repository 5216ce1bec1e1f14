"""Pre-built, correctly signed Twilio webhooks for the load generator.

Each request is distinct (its own MessageSid and signature), over many numbers,
with a JOIN / YES / STOP / HELP / other mix. The file format is what
`bench/loadgen` reads: a 4-byte little-endian length, then the raw HTTP request.
"""

from __future__ import annotations

import random
import struct
import uuid
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

MIX = (("JOIN", 30), ("YES", 25), ("HELP", 15), ("Thanks, see you at the event", 20), ("STOP", 10))
ACCOUNT_SID = "AC" + "b" * 32
SHORT_CODE = "12345"


def webhook_params(phone: str, body: str, message_sid: str) -> dict[str, str]:
    return {
        "ToCountry": "US",
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "SmsSid": message_sid,
        "SmsStatus": "received",
        "Body": body,
        "FromCountry": "US",
        "To": SHORT_CODE,
        "NumSegments": "1",
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": phone,
        "ApiVersion": "2010-04-01",
    }


def raw_request(host: str, path: str, params: dict[str, str], signature: str) -> bytes:
    body = urlencode(params).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def write_requests(
    path: Path,
    *,
    count: int,
    base_url: str,
    auth_token: str,
    numbers: int = 20_000,
    seed: int = 1,
    number_offset: int = 0,
) -> list[str]:
    """Write `count` signed webhooks to `path`; returns their MessageSids in order."""
    rng = random.Random(seed)
    validator = RequestValidator(auth_token)
    host = base_url.split("://", 1)[1]
    url = base_url + "/twilio/sms"
    words = [word for word, weight in MIX for _ in range(weight)]
    sids = []
    with open(path, "wb") as out:
        for _ in range(count):
            phone = f"+1415{number_offset + rng.randrange(numbers):07d}"
            sid = "SM" + uuid.UUID(int=rng.getrandbits(128)).hex
            params = webhook_params(phone, rng.choice(words), sid)
            signature = validator.compute_signature(url, params)
            request = raw_request(host, "/twilio/sms", params, signature)
            out.write(struct.pack("<I", len(request)) + request)
            sids.append(sid)
    return sids
