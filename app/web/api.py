"""Blueprint for the JSON API v1: subscriber status, consent events and outbound messages.

Every route needs `Authorization: Bearer <token>` (tokens from
`flask --app app api-token create NAME`); shapes follow the service contract.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from app import context
from app.access.tokens import authenticate_api_token, token_has_scope
from app.consent.checks import IMPORT_KIND, ProgramConsent, consent_of_numbers
from app.core.phones import parse_phone
from app.store.db import utcnow
from app.store.models import ConsentEvent, OutboundMessage, SendBatch, Subscriber

bp = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_PAGE = 100
MAX_PAGE = 1000


class ApiError(Exception):
    """An error answered as JSON `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    response = jsonify(error=error.message, **({"field": error.field} if error.field else {}))
    response.status_code = error.status
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    response = jsonify(error=error.description or error.name)
    response.status_code = error.code or 500
    return response


@bp.errorhandler(DBAPIError)
def _database_error(_error: DBAPIError):
    response = jsonify(error="database unavailable")
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    return response


@bp.before_request
def require_token():
    """401 unless the request carries a live bearer token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "a valid bearer token is required")
    with context.database().transaction() as session:
        row = authenticate_api_token(session, token.strip())
        if row is None:
            raise ApiError(401, "a valid bearer token is required")
        row.last_used_at = utcnow()
        g.api_token_name = row.name
        g.api_token = row


def require_scope(scope: str) -> None:
    """403 unless the request's token has `scope` (`app.access.tokens.token_has_scope`)."""
    if not token_has_scope(g.api_token, scope):
        raise ApiError(403, f"this token lacks the {scope} scope")


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _phone_arg(raw: str) -> str:
    phone = parse_phone(raw)
    if phone is None:
        raise ApiError(400, f"not a phone number: {raw!r}")
    return phone


def _time_arg(name: str, *, end_of_day: bool = False) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = datetime.fromisoformat(raw).date()
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise ApiError(400, f"{name} must be an ISO 8601 date or time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, f"{name} must be a positive whole number")
    return min(int(raw), maximum)


def _cursor_arg() -> int:
    raw = request.args.get("cursor", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ApiError(400, "cursor is not valid")
    return int(raw)


@bp.get("/subscribers/<path:phone>")
def subscriber_status(phone: str):
    """The number's status in every program (or `?program=`): may we text it, on what evidence."""
    e164 = _phone_arg(phone)
    catalog = context.programs()
    program_filter = request.args.get("program", "").strip() or None
    with context.database().transaction(write=False) as session:
        answer = consent_of_numbers(
            session, context.settings().suppression_hmac_key, [e164], program_filter
        )[e164]
    if program_filter is not None:
        if catalog.get(program_filter) is None and program_filter not in answer.programs:
            raise ApiError(404, f"no such program: {program_filter!r}")
        program_ids = [program_filter]
    else:
        program_ids = [p.id for p in catalog.programs] + [
            pid for pid in answer.programs if catalog.get(pid) is None
        ]
    programs = [program_consent_json(answer.for_program(pid)) for pid in program_ids]
    return jsonify(phone=e164, suppressed=answer.suppressed, programs=programs)


def program_consent_json(consent: ProgramConsent) -> dict:
    """One program's standing: the contract's fields, then `may_text` and `evidence`."""
    evidence = consent.evidence
    return {
        "program": consent.program_id,
        "status": consent.status,
        "since": iso(consent.since),
        "may_text": consent.may_text,
        "evidence": (
            {
                "event_id": evidence.event_id,
                "at": iso(evidence.at),
                "kind": evidence.kind,
                "intent": evidence.intent,
                "rule": evidence.rule,
                "message_sid": evidence.message_sid,
                "disclosure_sha256": evidence.disclosure_sha256,
                "disclosure_text": evidence.disclosure_text,
                "source": evidence.actor if evidence.kind == IMPORT_KIND else None,
                "actor": evidence.actor,
                "note": evidence.note,
            }
            if evidence
            else None
        ),
    }


MAX_CONSENT_CHECKS = 1000


@bp.post("/consent-checks")
def consent_checks():
    """May we text each of up to 1,000 numbers for one program? One answer per number, in order.

    A number that does not parse gets an `error` of its own; the rest are answered.
    """
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, 'the body must be a JSON object: {"program": "…", "phones": […]}')
    program_id = payload.get("program")
    phones = payload.get("phones")
    if not isinstance(program_id, str) or not program_id.strip():
        raise ApiError(400, "program is required")
    program_id = program_id.strip()
    if context.programs().get(program_id) is None:
        raise ApiError(400, f"no such program: {program_id!r}")
    if not isinstance(phones, list) or not phones:
        raise ApiError(400, "phones must be a non-empty list of phone numbers")
    if len(phones) > MAX_CONSENT_CHECKS:
        raise ApiError(
            400, f"at most {MAX_CONSENT_CHECKS} phones per request ({len(phones)} given)"
        )
    parsed = [
        (raw, parse_phone(raw) if isinstance(raw, str) and len(raw) <= 64 else None)
        for raw in phones
    ]
    valid = [e164 for _raw, e164 in parsed if e164]
    with context.database().transaction(write=False) as session:
        answers = consent_of_numbers(
            session, context.settings().suppression_hmac_key, valid, program_id
        )
    results = []
    for raw, e164 in parsed:
        if e164 is None:
            results.append(
                {"input": raw, "phone": None, "may_text": False, "error": "not a phone number"}
            )
            continue
        answer = answers[e164]
        results.append(
            {
                "input": raw,
                "phone": e164,
                "suppressed": answer.suppressed,
                **program_consent_json(answer.for_program(program_id)),
            }
        )
    return jsonify(program=program_id, results=results)


@bp.get("/events")
def list_events():
    """Consent events, oldest first, filtered and paged by cursor."""
    limit = _int_arg("limit", DEFAULT_PAGE, MAX_PAGE)
    cursor = _cursor_arg()
    query = (
        select(ConsentEvent, Subscriber.phone)
        .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .where(ConsentEvent.id > cursor)
    )
    if request.args.get("phone", "").strip():
        query = query.where(Subscriber.phone == _phone_arg(request.args["phone"]))
    if request.args.get("program", "").strip():
        query = query.where(ConsentEvent.program_id == request.args["program"].strip())
    since = _time_arg("since")
    until = _time_arg("until", end_of_day=True)
    if since:
        query = query.where(ConsentEvent.occurred_at >= since)
    if until:
        query = query.where(ConsentEvent.occurred_at <= until)
    query = query.order_by(ConsentEvent.id).limit(limit + 1)

    with context.database().transaction(write=False) as session:
        rows = session.execute(query).all()
        page = rows[:limit]
        replies: dict[int, OutboundMessage] = {}
        if page:
            for message in session.execute(
                select(OutboundMessage)
                .where(OutboundMessage.event_id.in_([event.id for event, _ in page]))
                .order_by(OutboundMessage.id)
            ).scalars():
                replies.setdefault(message.event_id, message)

    events = [event_json(event, phone, replies.get(event.id)) for event, phone in page]
    next_cursor = str(page[-1][0].id) if len(rows) > limit else None
    return jsonify(events=events, next_cursor=next_cursor)


def event_json(event: ConsentEvent, phone: str | None, reply: OutboundMessage | None) -> dict:
    """One event in the contract's shape (with a few extra, documented fields)."""
    return {
        "id": event.id,
        "at": iso(event.occurred_at),
        "phone": phone,
        "program": event.program_id,
        "body": event.body,
        "intent": event.intent,
        "status_before": event.status_before,
        "status_after": event.status_after,
        "message_sid": event.message_sid,
        "reply": (
            {"body": reply.body, "sid": reply.twilio_sid, "status": reply.status} if reply else None
        ),
        "kind": event.kind,
        "rule": event.rule,
        "language": event.language,
        "possible_opt_out": event.possible_opt_out,
        "changes": event.changes,
    }


@bp.get("/messages")
def list_messages():
    """Outbound messages (replies and program messages), newest first, optionally for one number.

    `decision`, `not_before` and `reason` are the sending rules' decision on a program
    message; a reply is always ``send`` (answers are never deferred).
    """
    limit = _int_arg("limit", DEFAULT_PAGE, MAX_PAGE)
    cursor = _cursor_arg()
    query = select(OutboundMessage)
    if request.args.get("phone", "").strip():
        query = query.where(OutboundMessage.to_number == _phone_arg(request.args["phone"]))
    if cursor:
        query = query.where(OutboundMessage.id < cursor)
    query = query.order_by(OutboundMessage.id.desc()).limit(limit + 1)
    with context.database().transaction(write=False) as session:
        rows = session.execute(query).scalars().all()
        page = rows[:limit]
        batch_ids = {m.batch_id for m in page if m.batch_id}
        public_ids = (
            dict(
                session.execute(
                    select(SendBatch.id, SendBatch.public_id).where(SendBatch.id.in_(batch_ids))
                ).all()
            )
            if batch_ids
            else {}
        )
    messages = [
        {
            "id": m.id,
            "to": m.to_number,
            "body": m.body,
            "status": m.status,
            "sid": m.twilio_sid,
            "attempts": m.attempts,
            "error_code": m.error_code,
            "kind": m.kind,
            "program": m.program_id,
            "decision": m.decision or "send",
            "not_before": iso(m.not_before),
            "reason": m.reason,
            "batch": public_ids.get(m.batch_id),
            "event_id": m.event_id,
            "created_at": iso(m.created_at),
        }
        for m in page
    ]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return jsonify(messages=messages, next_cursor=next_cursor)


# The send API and recipient profiles (`POST /messages`, `PUT /subscribers/…/profile`).
from app.web import api_messages  # noqa: E402, F401
