"""Blueprint for Twilio's webhooks: inbound texts and reply status callbacks.

Each handler checks the signature, parses the form, calls one service function
inside one transaction, and answers an empty TwiML `<Response/>` once that
transaction has committed. Replies never go inline as TwiML: they go through the
outbox so every one is stored, consent-checked and tracked.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import psycopg
from flask import Blueprint, Response, abort, g, request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app import context
from app.consent.inbound import InboundText, record_inbound_text
from app.core.phones import normalize_sender
from app.core.places import normalize_state, normalize_zip
from app.outbox import callbacks
from app.outbox.twilio_gateway import ERROR_UNSUBSCRIBED, validate_signature
from app.store.db import utcnow
from app.store.inbound_store import InboundStore
from app.store.models import ConsentEvent
from app.store.profiles import record_inbound_location
from app.web import metrics

logger = logging.getLogger(__name__)

# The hot path talks to the driver directly (app.store.inbound_store), so its errors are the
# drivers' own: psycopg's and sqlite3's, plus SQLAlchemy's for the pool checkout.
DRIVER_INTEGRITY_ERRORS = (psycopg.IntegrityError, sqlite3.IntegrityError, IntegrityError)
DRIVER_DATABASE_ERRORS = (psycopg.Error, sqlite3.Error, DBAPIError)
# A pooled connection that died (the server restarted): psycopg's own errors, raised by a
# statement on an established connection. Failing to connect at all is SQLAlchemy's
# OperationalError from the pool, and is not retried.
LOST_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

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

    database = context.database()
    try:
        result = _record(database, text)
    except DRIVER_INTEGRITY_ERRORS:
        # A concurrent duplicate of this MessageSid (its unique index) gets here.
        if _already_recorded(message_sid):
            logger.info("duplicate MessageSid", extra={"message_sid": message_sid})
            g.webhook_outcome = "duplicate"
            return twiml()
        database.known_texts.clear()  # in case a cached text was not in ledger_texts after all
        logger.exception("inbound text not recorded", extra={"message_sid": message_sid})
        return _unavailable()
    except DRIVER_DATABASE_ERRORS:
        logger.warning(
            "database unavailable; inbound text not recorded",
            extra={"message_sid": message_sid},
            exc_info=True,
        )
        return _unavailable()

    if not result.duplicate:
        _keep_reported_location(database, from_number, form)
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


def _record(database, text: InboundText):
    """Record `text` on the hot path; once more on a fresh connection if the pooled one was dead.

    The hot engine does not ping connections (a round trip per text), so after a
    database restart each pooled connection fails once. That failure is retried
    here rather than answered with a 503: a repeat is safe because the text is
    deduplicated by its MessageSid, whether or not the lost statement committed.
    If the database is really away, the retry cannot connect and the caller
    answers 503.
    """
    for attempt in (1, 2):
        try:
            with (
                database.number_guard(text.from_number, exclusive=True),
                database.writer_lock(),
                database.hot_connection() as connection,
            ):
                store = InboundStore.for_connection(connection, database.known_texts)
                return record_inbound_text(store, context.programs(), text)
        except LOST_CONNECTION_ERRORS:
            if attempt == 2:
                raise
            logger.info(
                "database connection lost; trying once more on a new one",
                extra={"message_sid": text.message_sid},
            )
    raise AssertionError("unreachable")


def _keep_reported_location(database, phone: str, form: SignedForm) -> None:
    """Keep the sender's location Twilio reported (`FromState`, `FromZip`) for the sending rules.

    After the text is recorded and apart from it: a failure here loses a location, never a
    text. A location someone stated (import, API) is never overwritten (`app.store.profiles`).
    """
    state = normalize_state(form.first("FromState"))
    zip_code = normalize_zip(form.first("FromZip"))
    if not (state or zip_code) or not phone.startswith("+1"):
        return
    try:
        with database.writer_lock(), database.hot_connection() as connection:
            record_inbound_location(connection, phone, state, zip_code, utcnow())
    except DRIVER_DATABASE_ERRORS:
        logger.warning("reported location not kept", exc_info=True)


def _already_recorded(message_sid: str) -> bool:
    try:
        with context.database().transaction(write=False) as session:
            return (
                session.execute(
                    select(ConsentEvent.id).where(ConsentEvent.message_sid == message_sid)
                ).first()
                is not None
            )
    except DBAPIError:
        return False


def _unavailable() -> Response:
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
    database = context.database()
    try:
        guard_phone = ""
        if error_code == ERROR_UNSUBSCRIBED and database.is_sqlite:
            # A carrier opt-out: on SQLite it waits for replies in flight to the number.
            with database.transaction(write=False) as session:
                guard_phone = callbacks.recipient_of(session, message_sid, outbound_id)
        with database.number_guard(guard_phone, exclusive=True), database.transaction() as session:
            callbacks.record_delivery_status(
                session,
                message_sid=message_sid,
                status=status,
                error_code=error_code,
                catalog=context.programs(),
                outbound_id=outbound_id,
            )
    except (OperationalError, DBAPIError):
        logger.warning(
            "database unavailable; status callback not recorded",
            extra={"message_sid": message_sid},
            exc_info=True,
        )
        return _unavailable()
    logger.info(
        "status callback recorded",
        extra={"message_sid": message_sid, "status": status, "error_code": error_code},
    )
    return twiml()
