"""Blueprint for the JSON API v1: subscriber status, consent events and outbound messages.

Every route needs `Authorization: Bearer <token>` (tokens from
`flask --app app api-token create NAME [--scope SCOPE]…`) holding the scope the
route declares with `@requires_scope` (403 without it); shapes follow the
service contract. Each token has its own rate limit (`API_RATE_LIMIT`, 429
beyond it), and every answer that carries personal data is recorded in the
access audit log with the token, the endpoint and the keyed hash of each number
asked about (`record_read`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request
from limits import parse as parse_limit
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from app import context
from app.access import audit
from app.access.tokens import CONSENT_READ, EVENTS_READ, authenticate_api_token, scopes_of
from app.consent.checks import IMPORT_KIND, ProgramConsent, consent_of_numbers
from app.consent.holds import HoldPolicy
from app.core.phones import mask_for_display, parse_phone
from app.ledger.suppression import phone_hmac
from app.reports.feeds import EventFilter, events_page, messages_page
from app.store.db import utcnow
from app.store.models import ConsentEvent, OutboundMessage

bp = Blueprint("api", __name__, url_prefix="/api/v1")
logger = logging.getLogger(__name__)

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
    """401 unless the request carries a live bearer token; 429 past the token's rate limit."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "a valid bearer token is required")
    now = utcnow()
    with context.database().transaction() as session:
        row = authenticate_api_token(session, token.strip(), now)
        if row is None:
            raise ApiError(401, "a valid bearer token is required")
        row.last_used_at = now
        g.api_token_id = row.id
        g.api_token_name = row.name
        g.api_scopes = scopes_of(row)
    limit = parse_limit(context.settings().api_rate_limit)
    if not _rate_limiter().hit(limit, context.settings().ratelimit_key_prefix, "api", str(row.id)):
        error = ApiError(429, f"this token's rate limit ({limit}) is used up; slow down")
        raise error


@bp.after_request
def _private_answer(response):
    """Personal data: never cached on the way (ASVS 8.1.1), and a download, not a page (14.4.2)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("Content-Disposition", 'attachment; filename="api.json"')
    return response


def _rate_limiter() -> MovingWindowRateLimiter:
    limiter = current_app.extensions.get("api_rate_limiter")
    if limiter is None:
        limiter = MovingWindowRateLimiter(context.rate_storage())
        current_app.extensions["api_rate_limiter"] = limiter
    return limiter


def requires_scope(scope: str) -> Callable:
    """The route needs a token holding `scope`; without it, 403."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if scope not in g.get("api_scopes", ()):
                logger.warning(
                    "API access denied: scope missing",
                    extra={"api_token_id": g.get("api_token_id"), "scope": scope},
                )
                raise ApiError(403, f"this token lacks the scope {scope}")
            return view(*args, **kwargs)

        wrapped.required_scope = scope  # read by the route-inventory test
        return wrapped

    return decorate


def record_read(*, phones: Iterable[str] = (), rows: int, query: dict | None = None) -> None:
    """Put this API read in the access audit log: token, endpoint, and each number's keyed
    hash (masked, never in full: the log is append-only and outlives erasure)."""
    key = context.settings().suppression_hmac_key
    phones = sorted(set(phones))
    details = dict(query or {})
    if phones:
        details["phone"] = mask_for_display(phones[0]) if len(phones) == 1 else len(phones)
        details["phone_hmac"] = [phone_hmac(key, phone) for phone in phones]
    route = request.url_rule.rule if request.url_rule else request.path
    with context.database().transaction() as session:
        audit.record_access(
            session,
            staff=None,
            staff_email=f"api token {g.api_token_id} ({g.api_token_name})"[:254],
            action=audit.API_READ,
            at=utcnow(),
            target=f"{request.method} {route}",
            query=details,
            row_count=rows,
            ip=request.remote_addr,
            api_token_id=g.api_token_id,
        )


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
@requires_scope(CONSENT_READ)
def subscriber_status(phone: str):
    """The number's status in every program (or `?program=`): may we text it, on what evidence."""
    e164 = _phone_arg(phone)
    catalog = context.programs()
    program_filter = request.args.get("program", "").strip() or None
    with context.database().transaction(write=False) as session:
        answer = consent_of_numbers(
            session,
            context.settings().suppression_hmac_key,
            [e164],
            program_filter,
            holds=_hold_policy(),
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
    record_read(phones=[e164], rows=len(programs), query={"program": program_filter})
    return jsonify(phone=e164, suppressed=answer.suppressed, programs=programs)


def _hold_policy() -> HoldPolicy:
    return HoldPolicy(context.programs(), context.settings().review_holds_sends)


def program_consent_json(consent: ProgramConsent) -> dict:
    """One program's standing: the contract's fields, then `may_text` and `evidence`."""
    evidence = consent.evidence
    return {
        "program": consent.program_id,
        "status": consent.status,
        "since": iso(consent.since),
        "may_text": consent.may_text,
        "hold": consent.hold.json() if consent.hold else None,
        "ledger_agrees": consent.ledger_agrees,
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
@requires_scope(CONSENT_READ)
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
            session,
            context.settings().suppression_hmac_key,
            valid,
            program_id,
            holds=_hold_policy(),
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
    record_read(phones=valid, rows=len(results), query={"program": program_id})
    return jsonify(program=program_id, results=results)


@bp.get("/events")
@requires_scope(EVENTS_READ)
def list_events():
    """Consent events, oldest first, filtered and paged by cursor."""
    limit = _int_arg("limit", DEFAULT_PAGE, MAX_PAGE)
    cursor = _cursor_arg()
    where = EventFilter(
        phone=_phone_arg(request.args["phone"]) if request.args.get("phone", "").strip() else None,
        program_id=request.args.get("program", "").strip() or None,
        since=_time_arg("since"),
        until=_time_arg("until", end_of_day=True),
    )
    with context.database().transaction(write=False) as session:
        page = events_page(session, where, after=cursor, limit=limit)
    events = [event_json(event, phone, page.replies.get(event.id)) for event, phone in page.events]
    next_cursor = str(page.next_cursor) if page.next_cursor is not None else None
    asked = [where.phone] if where.phone else []
    record_read(phones=asked, rows=len(events), query=_listing_query("program", "since", "until"))
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
@requires_scope(EVENTS_READ)
def list_messages():
    """Outbound messages (replies and program messages), newest first, optionally for one number.

    `decision`, `not_before` and `reason` are the sending rules' decision on a program
    message; a reply is always ``send`` (answers are never deferred).
    """
    limit = _int_arg("limit", DEFAULT_PAGE, MAX_PAGE)
    cursor = _cursor_arg()
    phone = _phone_arg(request.args["phone"]) if request.args.get("phone", "").strip() else None
    with context.database().transaction(write=False) as session:
        page, next_id, public_ids = messages_page(session, phone=phone, before=cursor, limit=limit)
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
    record_read(phones=[phone] if phone else [], rows=len(messages), query=_listing_query())
    return jsonify(messages=messages, next_cursor=str(next_id) if next_id is not None else None)


def _listing_query(*names: str) -> dict:
    """The non-personal arguments of a listing, with its page position, for the audit log."""
    return {name: request.args.get(name, "").strip() for name in (*names, "cursor", "limit")}


# The send API and recipient profiles (`POST /messages`, `PUT /subscribers/…/profile`).
from app.web import api_messages  # noqa: E402, F401
