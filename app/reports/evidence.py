"""Evidence bundles: one number's complete consent history, as JSON or printable HTML.

A bundle answers "did this person consent, when, and what were they told?":
every ledger event with the disclosure text in force, the replies and their
delivery statuses, the current status per program, and the result of verifying
that number's events: their hashes and links, their replay against the
subscription rows (`app.ledger.replay`), and the SHA-256 of every disclosure and
reply text shown, recomputed. "May we text?" is yes only for an active
subscription that agrees with the ledger event it names (`app.ledger.binding`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import render_template
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.flows import ACTIVE
from app.ledger.binding import recorded_status
from app.ledger.chain import verify_subscriber
from app.ledger.replay import chain_disagreement, texts_edited
from app.reports.send_reports import decisions_of
from app.store.models import (
    ConsentEvent,
    DeliveryReceipt,
    LedgerText,
    OutboundMessage,
    Subscriber,
    Subscription,
)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def build_evidence(session: Session, phone: str) -> dict[str, Any] | None:
    """The evidence bundle of `phone` (E.164 or a verbatim sender), or None if unknown."""
    subscriber = session.execute(
        select(Subscriber).where(Subscriber.phone == phone)
    ).scalar_one_or_none()
    if subscriber is None:
        return None
    events = (
        session.execute(
            select(ConsentEvent)
            .where(ConsentEvent.subscriber_id == subscriber.id)
            .order_by(ConsentEvent.seq)
        )
        .scalars()
        .all()
    )
    messages = (
        session.execute(
            select(OutboundMessage)
            .where(OutboundMessage.subscriber_id == subscriber.id)
            .order_by(OutboundMessage.id)
        )
        .scalars()
        .all()
    )
    text_hashes = {e.disclosure_sha256 for e in events} | {e.reply_sha256 for e in events}
    texts = {
        row.sha256: row.body
        for row in session.execute(
            select(LedgerText).where(LedgerText.sha256.in_([h for h in text_hashes if h]))
        ).scalars()
    }
    sids = [m.twilio_sid for m in messages if m.twilio_sid]
    receipts: dict[str, list[dict[str, Any]]] = {}
    if sids:
        for receipt in session.execute(
            select(DeliveryReceipt)
            .where(DeliveryReceipt.message_sid.in_(sids))
            .order_by(DeliveryReceipt.id)
        ).scalars():
            receipts.setdefault(receipt.message_sid, []).append(
                {
                    "status": receipt.status,
                    "error_code": receipt.error_code,
                    "received_at": _iso(receipt.received_at),
                }
            )
    subscriptions = (
        session.execute(
            select(Subscription)
            .where(Subscription.subscriber_id == subscriber.id)
            .order_by(Subscription.program_id)
        )
        .scalars()
        .all()
    )
    verification = verify_subscriber(session, subscriber)
    edited = texts_edited({sha: texts.get(sha) for sha in text_hashes if sha})
    if verification.ok:
        problem = chain_disagreement(events, subscriptions, "this number")
        if problem:
            verification.fail(None, problem)
    if verification.ok and edited:
        first = next(e for e in events if edited[0] in (e.disclosure_sha256, e.reply_sha256))
        verification.fail(
            first.id,
            f"event {first.id}: the text {edited[0]} it shows was edited (it no longer hashes "
            "to its SHA-256)",
        )
    agrees = {row.program_id: _row_agrees(row, events) for row in subscriptions}

    replies_by_event: dict[int, list[dict[str, Any]]] = {}
    for message in messages:
        replies_by_event.setdefault(message.event_id or 0, []).append(
            {
                "id": message.id,
                "kind": message.kind,
                "body": message.body,
                "status": message.status,
                "sid": message.twilio_sid,
                "attempts": message.attempts,
                "error_code": message.error_code,
                "sent_at": _iso(message.sent_at),
                "delivery_receipts": receipts.get(message.twilio_sid or "", []),
            }
        )
    return {
        "phone": subscriber.phone,
        "generated_at": _iso(datetime.now(UTC)),
        "verification": {
            "ok": verification.ok,
            "events_checked": verification.events,
            "message": verification.message,
            "first_bad_event_id": verification.first_bad_event_id,
            "texts_checked": len([sha for sha in text_hashes if sha]),
            "texts_edited": edited,
        },
        "current_status": [
            {
                "program": row.program_id,
                "status": row.status,
                "since": _iso(row.since),
                "confirmed_at": _iso(row.confirmed_at),
                "may_text": row.status == ACTIVE and agrees[row.program_id],
                "ledger_agrees": agrees[row.program_id],
            }
            for row in subscriptions
        ],
        "events": [
            {
                "id": event.id,
                "seq": event.seq,
                "kind": event.kind,
                "at": _iso(event.occurred_at),
                "message_sid": event.message_sid,
                "to": event.to_number,
                "body": event.body,
                "body_removed": event.body is None and event.body_commitment is not None,
                "intent": event.intent,
                "rule": event.rule,
                "language": event.language,
                "program": event.program_id,
                "status_before": event.status_before,
                "status_after": event.status_after,
                "changes": event.changes,
                "possible_opt_out": event.possible_opt_out,
                "actor": event.actor,
                "note": event.note,
                "disclosure": texts.get(event.disclosure_sha256 or ""),
                "disclosure_sha256": event.disclosure_sha256,
                "disclosure_verified": _verified(event.disclosure_sha256, edited),
                "reply_text": texts.get(event.reply_sha256 or ""),
                "reply_text_verified": _verified(event.reply_sha256, edited),
                "replies": replies_by_event.get(event.id, []),
                "event_hash": event.event_hash,
                "prev_hash": event.prev_hash,
            }
            for event in events
        ],
        "other_messages": replies_by_event.get(0, []),
        # The sending rules' decisions on program messages to this number: what went, what was
        # deferred or refused, by which rule, under which citation.
        "send_decisions": decisions_of(session, subscriber.id),
    }


def _verified(sha: str | None, edited: list[str]) -> bool | None:
    """Does the text at `sha` still hash to it? None when the event names no text."""
    return None if sha is None else sha not in edited


def _row_agrees(row: Subscription, events: list[ConsentEvent]) -> bool:
    """The subscription row agrees with the event it names (`app.ledger.binding`), in memory."""
    named = next((e for e in events if e.id == row.last_event_id), None)
    if named is None:
        return False
    changed_later = any(
        e.seq > named.seq and any(c.get("program") == row.program_id for c in e.changes or ())
        for e in events
    )
    recorded = recorded_status(row.program_id, named.changes, named.program_id, named.status_after)
    return not changed_later and recorded == row.status


def render_evidence_html(bundle: dict[str, Any]) -> str:
    """The bundle as a self-contained, printable HTML page (autoescaped: bodies are inert)."""
    return render_template("evidence.html", bundle=bundle)
