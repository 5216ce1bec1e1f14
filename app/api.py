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
from app.db import utcnow
from app.flows import NONE
from app.models import ConsentEvent, OutboundMessage, Subscriber, Subscription
from app.phones import parse_phone
from app.tokens import authenticate_api_token

bp = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_PAGE = 100
MAX_PAGE = 1000


class ApiError(Exception):
    """An error answered as JSON `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    response = jsonify(error=error.message)
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
    """The number's status in every program: may we text it, and since when."""
    e164 = _phone_arg(phone)
    catalog = context.programs()
    with context.database().transaction(write=False) as session:
        subscriber = session.execute(
            select(Subscriber).where(Subscriber.phone == e164)
        ).scalar_one_or_none()
        rows = (
            session.execute(
                select(Subscription)
                .where(Subscription.subscriber_id == subscriber.id)
                .order_by(Subscription.id)
            )
            .scalars()
            .all()
            if subscriber
            else []
        )
    by_program = {row.program_id: row for row in rows}
    program_ids = [p.id for p in catalog.programs] + [
        pid for pid in by_program if catalog.get(pid) is None
    ]
    programs = []
    for pid in program_ids:
        row = by_program.get(pid)
        programs.append(
            {
                "program": pid,
                "status": row.status if row else NONE,
                "since": iso(row.since) if row else None,
            }
        )
    return jsonify(phone=e164, programs=programs)


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
    """Outbound messages (replies), newest first, optionally for one phone number."""
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
            "event_id": m.event_id,
            "created_at": iso(m.created_at),
        }
        for m in page
    ]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return jsonify(messages=messages, next_cursor=next_cursor)
