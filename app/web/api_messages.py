"""The send API (`POST /api/v1/messages`) and recipient profiles, on the API blueprint.

Both need the ``messages:send`` scope. A batch is decided by the sending rules and
queued in one transaction (`app.sending.batches.submit_batch`); the answer holds one
decision per recipient, in the order given.
"""

from __future__ import annotations

from datetime import date

from flask import g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import context
from app.access.tokens import MESSAGES_SEND
from app.consent.holds import HoldPolicy
from app.core.phones import parse_phone
from app.core.places import normalize_state, normalize_zip
from app.sending.batches import (
    MAX_RECIPIENTS,
    IdempotencyConflict,
    request_fingerprint,
    submit_batch,
)
from app.store.db import utcnow
from app.store.models import Subscriber
from app.store.profiles import API_SOURCE, set_profile
from app.web.api import ApiError, bp, iso, record_read, requires_scope

BODY_MAX = 1600  # Twilio's limit for one message's body
KEY_MAX = 200
# 10,000 numbers of up to 64 characters and a body fit; MAX_REQUEST_BYTES is for webhooks.
SEND_REQUEST_BYTES = 1024 * 1024


def _field_error(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", field=field)


@bp.post("/messages")
@requires_scope(MESSAGES_SEND)
def send_messages():
    """Decide, queue and answer a batch of program messages (service contract)."""
    request.max_content_length = max(SEND_REQUEST_BYTES, context.settings().max_request_bytes)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(
            400,
            'the body must be a JSON object: {"program", "body", "to": [...], "idempotency_key"}',
        )
    program_id = payload.get("program")
    if not isinstance(program_id, str) or not program_id.strip():
        raise _field_error("program", "required")
    program = context.programs().get(program_id.strip())
    if program is None:
        raise _field_error("program", f"no such program: {program_id!r}")
    body = payload.get("body")
    if not isinstance(body, str) or not body.strip():
        raise _field_error("body", "required: the message text")
    if len(body) > BODY_MAX:
        raise _field_error("body", f"at most {BODY_MAX} characters")
    key = payload.get("idempotency_key")
    if not isinstance(key, str) or not key.strip() or len(key) > KEY_MAX:
        raise _field_error("idempotency_key", f"required: 1 to {KEY_MAX} characters")
    recipients = payload.get("to")
    if not isinstance(recipients, list) or not recipients:
        raise _field_error("to", "required: a list of 1 to 10,000 phone numbers")
    if len(recipients) > MAX_RECIPIENTS:
        raise _field_error("to", f"at most {MAX_RECIPIENTS:,} numbers ({len(recipients):,} given)")
    phones = []
    for position, raw in enumerate(recipients):
        phone = parse_phone(raw) if isinstance(raw, str) and len(raw) <= 64 else None
        if phone is None or not phone.startswith("+"):
            raise _field_error(f"to[{position}]", f"not a phone number: {raw!r}")
        phones.append(phone)

    settings = context.settings()
    fingerprint = request_fingerprint(program.id, body, recipients)
    database = context.database()
    for attempt in (1, 2):
        try:
            with database.transaction() as session:
                answer = submit_batch(
                    session,
                    program=program,
                    body=body,
                    phones=phones,
                    fingerprint=fingerprint,
                    idempotency_key=key,
                    api_token_id=g.api_token_id,
                    key=settings.suppression_hmac_key,
                    book=context.sending_rules(),
                    now=utcnow(),
                    holds=HoldPolicy(context.programs(), settings.review_holds_sends),
                )
            break
        except IdempotencyConflict as error:
            raise ApiError(409, "idempotency_key: already used for a different request") from error
        except IntegrityError:
            # A twin request with the same key committed first: the second attempt answers it.
            if attempt == 2:
                raise
    response = jsonify(
        batch=answer.batch,
        results=[
            {
                "to": result.to,
                "decision": result.decision,
                "not_before": iso(result.not_before),
                "reason": result.reason,
                "message_id": result.message_id,
                "rule": result.rule,
                "citation": result.citation,
            }
            for result in answer.results
        ],
    )
    response.status_code = 202
    record_read(phones=phones, rows=len(answer.results), query={"program": program.id})
    return response


@bp.put("/subscribers/<path:phone>/profile")
@requires_scope(MESSAGES_SEND)
def set_recipient_profile(phone: str):
    """Where a known number is (`state`, `zip`) and its last purchase (`purchased_on`).

    Only the fields given change; null clears one. 404 for a number we have never
    seen: a profile is never a reason to keep a number.
    """
    e164 = parse_phone(phone)
    if e164 is None:
        raise ApiError(400, f"not a phone number: {phone!r}")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not set(payload) <= {"state", "zip", "purchased_on"}:
        raise ApiError(400, 'the body must be a JSON object of "state", "zip", "purchased_on"')
    changes: dict = {}
    if "state" in payload:
        changes["state"] = _optional(payload["state"], normalize_state, "state", "a US state")
    if "zip" in payload:
        changes["zip_code"] = _optional(payload["zip"], normalize_zip, "zip", "a 5-digit ZIP code")
    if "purchased_on" in payload:
        changes["purchased_on"] = _optional(
            payload["purchased_on"], _date, "purchased_on", "a date (YYYY-MM-DD)"
        )
    with context.database().transaction() as session:
        subscriber = session.execute(
            select(Subscriber).where(Subscriber.phone == e164).with_for_update()
        ).scalar_one_or_none()
        if subscriber is None:
            raise ApiError(404, "unknown number")
        profile = set_profile(session, subscriber.id, source=API_SOURCE, now=utcnow(), **changes)
        answer = {
            "phone": e164,
            "state": profile.state,
            "zip": profile.zip_code,
            "purchased_on": profile.purchased_on.isoformat() if profile.purchased_on else None,
            "location_source": profile.location_source,
            "updated_at": iso(profile.updated_at),
        }
    record_read(phones=[e164], rows=1, query={"fields": sorted(payload)})
    return jsonify(answer)


def _optional(value, parse, field: str, what: str):
    if value is None:
        return None
    parsed = parse(value) if isinstance(value, str) else None
    if parsed is None:
        raise _field_error(field, f"must be {what} or null")
    return parsed


def _date(value: str) -> date | None:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        return None
    return day if day <= utcnow().date() else None
