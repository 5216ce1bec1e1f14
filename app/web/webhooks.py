"""Blueprint for Twilio's webhooks: inbound texts and reply status callbacks.

Each handler checks the signature, parses the form, calls one service function
inside one transaction, and answers an empty TwiML `<Response/>` once that
transaction has committed. Replies never go inline as TwiML: they go through the
outbox so every one is stored, consent-checked and tracked.
"""

from __future__ import annotations

import logging
import time
from typing import NoReturn

from flask import Blueprint, Response, abort, g, request

from app import context
from app.consent import service as consent_service
from app.consent.inbound import InboundText
from app.core.phones import normalize_sender
from app.core.places import normalize_state, normalize_zip
from app.outbox import callbacks
from app.outbox.twilio_gateway import validate_signature
from app.store.db import utcnow
from app.store.errors import DatabaseUnavailable, DuplicateKey, translate_errors
from app.store.profiles import record_inbound_location
from app.web import metrics
from app.web.twilio_fields import (
    MESSAGE_SID,
    FieldError,
    InboundFields,
    SignedForm,
    inbound_fields,
    parse_form,
    status_fields,
)

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


def twiml(status: int = 200) -> Response:
    return Response(EMPTY_TWIML, status=status, mimetype="text/xml")


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
    return value if MESSAGE_SID.fullmatch(value or "") else None


def refuse(error: FieldError, form: SignedForm) -> NoReturn:
    """Answer a request whose fields are not Twilio's (400, or 403 for another account)."""
    logger.warning(
        "webhook fields refused: %s",
        error.description,
        extra={"path": request.path, "message_sid": _safe_sid(form.first("MessageSid"))},
    )
    abort(error.status, description=error.description)
    raise AssertionError("unreachable")  # abort raised


@bp.post("/sms")
def inbound_sms():
    """Twilio's inbound message webhook."""
    started = time.perf_counter()
    form = parse_form(request.get_data(cache=False))
    check_signature(form)

    try:
        fields = inbound_fields(form, context.settings().twilio_account_sid)
    except FieldError as error:
        refuse(error, form)
    message_sid = fields.message_sid
    from_number = normalize_sender(fields.from_address)
    to_number = normalize_sender(fields.to_address)

    raw_body = fields.body_raw
    body = raw_body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    text = InboundText(
        message_sid=message_sid,
        account_sid=fields.account_sid,
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

    if not result.duplicate:
        _keep_reported_location(context.database(), from_number, fields)
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


def _keep_reported_location(database, phone: str, fields: InboundFields) -> None:
    """Keep the sender's location Twilio reported (`FromState`, `FromZip`) for the sending rules.

    After the text is recorded and apart from it: a failure here loses a location, never a
    text. A location someone stated (import, API) is never overwritten (`app.store.profiles`).
    """
    state = normalize_state(fields.from_state or "")
    zip_code = normalize_zip(fields.from_zip or "")
    if not (state or zip_code) or not phone.startswith("+1"):
        return
    try:
        with translate_errors(), database.writer_lock(), database.hot_connection() as connection:
            record_inbound_location(connection, phone, state, zip_code, utcnow())
    except DatabaseUnavailable:
        logger.warning("reported location not kept", exc_info=True)


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
    try:
        fields = status_fields(form, context.settings().twilio_account_sid)
    except FieldError as error:
        refuse(error, form)
    message_sid, status, error_code = fields.message_sid, fields.status, fields.error_code
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
