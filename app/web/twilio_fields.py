"""Twilio's webhook fields, parsed keeping exact bytes and checked against their documented shapes.

Why so strict: Twilio's signature is an HMAC over the URL followed by every
field's name and value, sorted by name, joined with *no separator*. Whoever holds
one signed request can re-cut that string: drop ``NumMedia=0`` and append
``NumMedia0`` to the ``MessageSid``, and the signature still matches a request
with a new SID, which deduplication then misses (issue 12, finding 1). The
signature cannot tell the cuts apart, so the fields must: every field the
service reads has exactly the shape Twilio documents for it, and a cut that
moves characters into or out of one of them breaks that shape.

- ``MessageSid`` is present and is ``SM`` or ``MM`` followed by 32 lowercase
  hex digits; ``SmsSid`` and ``SmsMessageSid``, where present, equal it.
- ``AccountSid`` is ``AC`` + 32 hex and, when ``TWILIO_ACCOUNT_SID`` is set, that
  account: the one whose token signs (403 otherwise).
- ``From`` and ``To`` are phone numbers: E.164 (``+`` and up to 15 digits) or a
  short code / national number of digits. A digit-only shape cannot absorb a
  neighbouring field name, whose letters would break it.
- ``Body`` is present (possibly empty) and at most 1,600 characters;
  ``NumMedia`` is present, 0–10; ``NumSegments`` and ``MessagingServiceSid``
  have their shapes when present.
- No field appears twice: Twilio never repeats one, and its validator signs a
  repeated field's values sorted, so their order could be changed unseen.
- Status callbacks: the SIDs as above, ``MessageStatus`` one of Twilio's
  message statuses (``SmsStatus``, where present, equal to it), ``ErrorCode``
  five digits, ``AccountSid`` as above.

Fields the service does not read are left alone: Twilio adds fields without
notice (its documentation warns of it), so an unknown name is never an error.
A cut that only moves characters between unread fields leaves everything the
service reads byte for byte as it was: the same text, with the same MessageSid,
so it is that text's duplicate. Pure: no Flask, no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}")
PHONE_ADDRESS = re.compile(r"\+[1-9][0-9]{1,14}|[0-9]{3,15}")
COUNT = re.compile(r"0|[1-9][0-9]{0,2}")
ERROR_CODE = re.compile(r"[1-9][0-9]{4}")
# The sender's region as Twilio geolocates its number: a state or province (two letters in
# North America, a name elsewhere) and a postal code. Read for the sending rules.
FROM_STATE = re.compile(r"[A-Za-z][A-Za-z .'-]{0,39}")
FROM_ZIP = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,15}")
BODY_MAX_CHARACTERS = 1600
NUM_MEDIA_MAX = 10
# Twilio's message statuses (the Message resource's `status`), as status callbacks carry them.
MESSAGE_STATUSES = frozenset(
    {
        "accepted",
        "scheduled",
        "canceled",
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "read",
        "partially_delivered",
    }
)


class FieldError(ValueError):
    """A webhook field is missing or not of its documented shape: answer `status`, write nothing."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass(frozen=True)
class SignedForm:
    """A webhook's form fields: decoded text (what the signature covers), plus exact bytes.

    A repeated field keeps every value in `text` (as a list, which twilio's
    RequestValidator accepts), so the signature check still sees what was sent;
    the field checks then refuse it.
    """

    text: dict[str, str | list[str]]
    raw: dict[str, bytes]

    def first(self, name: str) -> str:
        """The field's first value, stripped; "" when absent. For logs, never for decisions."""
        value = self.text.get(name) or ""
        return (value[0] if isinstance(value, list) else value).strip()

    def repeated(self) -> list[str]:
        """Names sent more than once."""
        return [name for name, value in self.text.items() if isinstance(value, list)]


def _unquote(part: bytes) -> bytes:
    if b"%" in part or b"+" in part:
        return unquote_to_bytes(part.replace(b"+", b" "))
    return part


def parse_form(raw_body: bytes) -> SignedForm:
    """Parse an urlencoded body keeping each value's exact bytes.

    Values are decoded as UTF-8 with replacement for display and matching; the
    raw bytes stay available so an invalid-UTF-8 or NUL-bearing body is stored
    exactly as it arrived.
    """
    text: dict[str, str | list[str]] = {}
    raw: dict[str, bytes] = {}
    for pair in raw_body.split(b"&"):
        if not pair:
            continue
        key_part, _, value_part = pair.partition(b"=")
        key = _unquote(key_part).decode("utf-8", errors="replace")
        value_bytes = _unquote(value_part)
        value = value_bytes.decode("utf-8", errors="replace")
        if key in text:
            previous = text[key]
            text[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            text[key] = value
            raw[key] = value_bytes
    return SignedForm(text, raw)


@dataclass(frozen=True)
class InboundFields:
    """What the inbound-message webhook reads, each field of its documented shape."""

    message_sid: str
    account_sid: str
    from_address: str
    to_address: str
    body_raw: bytes
    num_media: int
    num_segments: int | None
    messaging_service_sid: str | None
    from_state: str | None = None
    from_zip: str | None = None


@dataclass(frozen=True)
class StatusFields:
    """What the status callback reads, each field of its documented shape."""

    message_sid: str
    status: str
    error_code: int | None


def _value(form: SignedForm, name: str) -> str | None:
    """The field's exact (decoded, unstripped) value, or None when absent."""
    value = form.text.get(name)
    return value if isinstance(value, str) else None


def _required(form: SignedForm, name: str) -> str:
    value = _value(form, name)
    if value is None:
        raise FieldError(400, f"{name} is required")
    return value


def _shaped(value: str, pattern: re.Pattern[str], name: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise FieldError(400, f"{name} is not {what}")
    return value


def _no_repeats(form: SignedForm) -> None:
    if form.repeated():
        raise FieldError(400, "a field is sent more than once")


def _message_sid(form: SignedForm, names: tuple[str, ...]) -> str:
    """The SID under `names[0]` (required), equal to those under the other names where present."""
    _required(form, names[0])
    present = [(name, _value(form, name)) for name in names if _value(form, name) is not None]
    for name, value in present:
        _shaped(value, MESSAGE_SID, name, "a Twilio message SID")
    if len({value for _, value in present}) > 1:
        raise FieldError(400, f"{', '.join(name for name, _ in present)} differ")
    return present[0][1]


def _account_sid(form: SignedForm, expected: str | None) -> str:
    """AccountSid, shaped; the configured account's (403 otherwise) when one is configured."""
    value = _shaped(_required(form, "AccountSid"), ACCOUNT_SID, "AccountSid", "a Twilio account")
    if expected and value != expected:
        raise FieldError(403, "AccountSid is not this service's account")
    return value


def _count(form: SignedForm, name: str, *, required: bool, maximum: int) -> int | None:
    value = _required(form, name) if required else _value(form, name)
    if value is None:
        return None
    number = int(_shaped(value, COUNT, name, "a count"))
    if number > maximum:
        raise FieldError(400, f"{name} is more than {maximum}")
    return number


def inbound_fields(form: SignedForm, account_sid: str | None) -> InboundFields:
    """The inbound-message webhook's fields, or `FieldError` (400, or 403 for another account).

    `account_sid` is `TWILIO_ACCOUNT_SID` (None when not configured).
    """
    _no_repeats(form)
    message_sid = _message_sid(form, ("MessageSid", "SmsSid", "SmsMessageSid"))
    from_address = _shaped(_required(form, "From"), PHONE_ADDRESS, "From", "a phone number")
    to_address = _shaped(_required(form, "To"), PHONE_ADDRESS, "To", "a phone number")
    if _value(form, "Body") is None:
        raise FieldError(400, "Body is required")
    body_raw = form.raw["Body"]
    if len(body_raw.decode("utf-8", errors="replace")) > BODY_MAX_CHARACTERS:
        raise FieldError(400, f"Body is longer than {BODY_MAX_CHARACTERS} characters")
    num_media = _count(form, "NumMedia", required=True, maximum=NUM_MEDIA_MAX)
    num_segments = _count(form, "NumSegments", required=False, maximum=999)
    service_sid = _value(form, "MessagingServiceSid")
    if service_sid is not None:
        _shaped(service_sid, MESSAGING_SERVICE_SID, "MessagingServiceSid", "a Messaging Service")
    from_state = _value(form, "FromState") or None
    if from_state is not None:
        _shaped(from_state, FROM_STATE, "FromState", "a state or province")
    from_zip = _value(form, "FromZip") or None
    if from_zip is not None:
        _shaped(from_zip, FROM_ZIP, "FromZip", "a postal code")
    return InboundFields(
        message_sid=message_sid,
        account_sid=_account_sid(form, account_sid),
        from_address=from_address,
        to_address=to_address,
        body_raw=body_raw,
        num_media=num_media or 0,
        num_segments=num_segments,
        messaging_service_sid=service_sid,
        from_state=from_state,
        from_zip=from_zip,
    )


def status_fields(form: SignedForm, account_sid: str | None) -> StatusFields:
    """The status callback's fields, or `FieldError` (400, or 403 for another account)."""
    _no_repeats(form)
    message_sid = _message_sid(form, ("MessageSid", "SmsSid"))
    _required(form, "MessageStatus")
    statuses = [(n, _value(form, n)) for n in ("MessageStatus", "SmsStatus") if _value(form, n)]
    for name, value in statuses:
        if value not in MESSAGE_STATUSES:
            raise FieldError(400, f"{name} is not a Twilio message status")
    if len({value for _, value in statuses}) > 1:
        raise FieldError(400, "MessageStatus and SmsStatus differ")
    error_code = _value(form, "ErrorCode") or None
    if error_code is not None:
        # ASCII digits only (str.isdigit() accepts "²"), and a size the INTEGER column holds.
        _shaped(error_code, ERROR_CODE, "ErrorCode", "a Twilio error code")
    _account_sid(form, account_sid)
    return StatusFields(
        message_sid=message_sid,
        status=statuses[0][1] or "",
        error_code=int(error_code) if error_code else None,
    )
