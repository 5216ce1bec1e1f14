"""Blueprint for Twilio's webhooks: inbound texts and reply status callbacks.

Each handler checks the signature, parses the form, calls one service function
inside one transaction, and answers an empty TwiML `<Response/>` once that
transaction has committed. Replies never go inline as TwiML: they go through the
outbox so every one is stored, consent-checked and tracked.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from flask import Blueprint, Response, abort, g, request

from app import context
from app.consent import service as consent_service
from app.consent.inbound import InboundText
from app.core.phones import normalize_sender
from app.outbox import callbacks
from app.outbox.twilio_gateway import validate_signature
from app.store.db import utcnow
from app.store.errors import DatabaseUnavailable, DuplicateKey
from app.web import metrics

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/twilio")
WEBHOOK_NAMES = {"webhooks.inbound_sms": "sms", "webhooks.status_callback": "status"}


@bp.before_request
def _start_timer() -> None:
    metrics.webhook_started()


@bp.after_request
def _count_webhook(response: Response) -> Response:
    """Every answer counts, refusals (403, 400, 413, 503) included."""
    return metrics.webhook_answered(WEBHOOK_NAMES.get(request.endpoint or "", "other"), response)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Twilio SIDs are two letters and 32 hex digits; accept any short token of that alphabet.
SID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{2,64}$")
ADDRESS_MAX = 64
# Twilio error codes are five digits; nine ASCII digits always fit a 32-bit INTEGER column.
ERROR_CODE_PATTERN = re.compile(r"^[0-9]{1,9}$")


def twiml(status: int = 200) -> Response:
    return Response(EMPTY_TWIML, status=status, mimetype="text/xml")


@dataclass(frozen=True)
class SignedForm:
    """A webhook's form fields: decoded text (what the signature covers), plus exact bytes.

    Twilio never repeats a field in these webhooks; if a client did, the text
    keeps every value (as a list, which twilio's RequestValidator accepts) and
    the raw bytes keep the first.
    """

    text: dict[str, str | list[str]]
    raw: dict[str, bytes]

    def first(self, name: str) -> str:
        value = self.text.get(name) or ""
        return (value[0] if isinstance(value, list) else value).strip()


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


def signed_url() -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL + path + raw query, else the request's own URL."""
    settings = context.settings()
    query = request.query_string.decode("latin-1")
    base = settings.public_base_url or (request.host_url.rstrip("/") + request.script_root)
    return base + request.path + (f"?{query}" if query else "")


def check_signature(form: SignedForm) -> None:
    """403 unless X-Twilio-Signature is valid for the current or previous auth token."""
    valid = validate_signature(
        context.settings().auth_tokens,
        signed_url(),
        form.text,
        request.headers.get("X-Twilio-Signature"),
    )
    if not valid:
        logger.warning(
            "webhook signature rejected",
            extra={
                "path": request.path,
                "remote_addr": request.remote_addr,
                "message_sid": _safe_sid(form.first("MessageSid")),
                "signature_present": bool(request.headers.get("X-Twilio-Signature")),
            },
        )
        abort(403)


def _safe_sid(value: str) -> str | None:
    return value if SID_PATTERN.match(value or "") else None


def _address(form: SignedForm, name: str) -> str:
    value = form.first(name)
    if not value:
        abort(400, description=f"{name} is required")
    if len(value) > ADDRESS_MAX or not value.isprintable():
        abort(400, description=f"{name} is not a valid address")
    return value


@bp.post("/sms")
def inbound_sms():
    """Twilio's inbound message webhook."""
    started = time.perf_counter()
    form = parse_form(request.get_data(cache=False))
    check_signature(form)

    message_sid = form.first("MessageSid")
    if not message_sid:
        abort(400, description="MessageSid is required")
    if not SID_PATTERN.match(message_sid):
        abort(400, description="MessageSid is not a valid SID")
    from_number = normalize_sender(_address(form, "From"))
    to_number = normalize_sender(_address(form, "To"))
    account_sid = form.first("AccountSid")
    account_sid = account_sid if SID_PATTERN.match(account_sid) else None

    raw_body = form.raw.get("Body", b"")
    body = raw_body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    text = InboundText(
        message_sid=message_sid,
        account_sid=account_sid,
        from_number=from_number,
        to_number=to_number,
        body=body,
        body_raw=None if body.encode("utf-8") == raw_body else raw_body,
        received_at=utcnow(),
    )

    try:
        result = consent_service.record_text(context.database(), context.programs(), text)
    except DuplicateKey:
        # A concurrent duplicate of this MessageSid (its unique index) gets here.
        if consent_service.message_recorded(context.database(), message_sid):
            logger.info("duplicate MessageSid", extra={"message_sid": message_sid})
            g.webhook_outcome = "duplicate"
            return twiml()
        logger.exception("inbound text not recorded", extra={"message_sid": message_sid})
        return _retry_later()
    except DatabaseUnavailable:
        return _unavailable("inbound text", message_sid)

    g.webhook_intent = result.intent
    if result.duplicate:
        g.webhook_outcome = "duplicate"
        logger.info("duplicate MessageSid", extra={"message_sid": message_sid})
    else:
        g.webhook_outcome = "recorded"  # app.consent.inbound logs the event's ids
    logger.debug(
        "inbound handled in %.1f ms",
        (time.perf_counter() - started) * 1000,
        extra={"message_sid": message_sid},
    )
    return twiml()


def _unavailable(what: str, message_sid: str) -> Response:
    """503: the database could not record it; Twilio tries again."""
    logger.warning(
        "database unavailable; %s not recorded",
        what,
        extra={"message_sid": message_sid},
        exc_info=True,
    )
    return _retry_later()


def _retry_later() -> Response:
    response = Response(
        '<?xml version="1.0" encoding="UTF-8"?><Response/>', status=503, mimetype="text/xml"
    )
    response.headers["Retry-After"] = "5"
    return response


@bp.post("/status")
def status_callback():
    """Twilio's status callback for a reply we sent: record the delivery status."""
    form = parse_form(request.get_data(cache=False))
    check_signature(form)
    message_sid = form.first("MessageSid") or form.first("SmsSid")
    status = (form.first("MessageStatus") or form.first("SmsStatus")).lower()
    if not message_sid or not SID_PATTERN.match(message_sid):
        abort(400, description="MessageSid is required")
    if not status or len(status) > 24 or not status.replace("_", "").isalpha():
        abort(400, description="MessageStatus is required")
    error_code_text = form.first("ErrorCode")
    if error_code_text and not ERROR_CODE_PATTERN.fullmatch(error_code_text):
        # str.isdigit() accepts "²" (int() does not) and no size limit: ASCII digits that fit
        # the column only, or a 400 that writes nothing.
        abort(400, description="ErrorCode is not a Twilio error code")
    error_code = int(error_code_text) if error_code_text else None
    # The sender puts the outbox row's id in the StatusCallback URL; the signature covers it.
    outbox = request.args.get("outbox", "")
    outbound_id = (
        int(outbox) if outbox.isascii() and outbox.isdigit() and len(outbox) <= 18 else None
    )
    try:
        callbacks.record_status_callback(
            context.database(),
            context.programs(),
            message_sid=message_sid,
            status=status,
            error_code=error_code,
            outbound_id=outbound_id,
        )
    except DatabaseUnavailable:
        return _unavailable("status callback", message_sid)
    logger.info(
        "status callback recorded",
        extra={"message_sid": message_sid, "status": status, "error_code": error_code},
    )
    return twiml()
