"""Evidence bundles: one number's complete consent history, as JSON or printable HTML.

A bundle answers "did this person consent, when, and what were they told?":
every ledger event with the disclosure text in force, the replies and their
delivery statuses, the current status per program, and the result of verifying
that number's events: their hashes and links, their replay against the
subscription rows (`app.ledger.replay`), and the SHA-256 of every disclosure and
reply text shown, recomputed. "May we text?" is yes only for an active
subscription that agrees with the ledger event it names (`app.ledger.binding`).

With `anchoring` (downloads and the `evidence` command, not the timeline page),
each event also carries its hashed fields exactly as hashed, its salt, and an
inclusion proof to the newest signed checkpoint, so that a third party can check
the bundle offline with `tools/verify_bundle.py` and the ledger's public key: the
event hashes from the fields, the chain links, the proofs and the signature.
`HASH_FORMAT` below, copied into every such bundle, says how.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from flask import render_template
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.consent.holds import HoldPolicy, holds_of
from app.core import ledger_hashing as lh
from app.core.flows import ACTIVE
from app.ledger.binding import recorded_status
from app.ledger.chain import verify_subscriber
from app.ledger.inclusion import Anchoring, prove_events
from app.ledger.replay import chain_disagreement, texts_edited
from app.reports import labels
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


HASH_FORMAT = {
    "version": 1,
    "verifier": "python3 tools/verify_bundle.py BUNDLE.json --key LEDGER_PUBLIC_KEY.pem",
    "event_hash": (
        "SHA-256 of the UTF-8 bytes of a JSON object: the event's ledger_fields plus "
        '"v": 1, keys sorted, no whitespace (separators "," and ":"), non-ASCII '
        "characters written as is (not \\u-escaped), the JSON escapes of Python's json "
        "module otherwise; times as YYYY-MM-DDTHH:MM:SS.ffffffZ"
    ),
    "phone_commitment": 'SHA-256("phone" || 0x00 || personal_salt || 0x00 || phone, UTF-8)',
    "body_commitment": (
        'SHA-256("body" || 0x00 || personal_salt || 0x00 || body bytes); the body bytes are '
        "body_raw_base64 decoded when present, else the body in UTF-8"
    ),
    "chain": (
        "an event's seq is 1 more than the previous event's of the same subscriber and its "
        "prev_hash is that event's hash; the first event's prev_hash is 64 zeros"
    ),
    "disclosure": "disclosure_sha256 is the SHA-256 of the disclosure text in UTF-8",
    "merkle_tree": (
        "RFC 6962 over every ledger event in id order: leaf = SHA-256(0x00 || 32-byte event "
        "hash), node = SHA-256(0x01 || left || right); proofs are RFC 9162 audit paths"
    ),
    "checkpoint": (
        "a C2SP signed-note checkpoint (c2sp.org/tlog-checkpoint): origin, tree size, "
        "base64 root; an Ed25519 signature (type 0x01) and a timestamped cosignature "
        "(type 0x04, c2sp.org/tlog-cosignature) by the ledger key, both under the origin"
    ),
    "rfc3161": "a TimeStampResp over SHA-256 of the whole signed checkpoint note, when present",
}


def _ledger_fields(event: ConsentEvent) -> dict[str, Any]:
    """The hashed fields exactly as hashed: what the event hash is computed from."""
    fields = {}
    for name in lh.HASHED_FIELDS:
        value = getattr(event, name)
        fields[name] = lh.format_time(value) if isinstance(value, datetime) else value
    return fields


def build_evidence(
    session: Session,
    phone: str,
    *,
    anchoring: Anchoring | None = None,
    holds: HoldPolicy | None = None,
) -> dict[str, Any] | None:
    """The evidence bundle of `phone` (E.164 or a verbatim sender), or None if unknown.

    With `anchoring`, the bundle is self-checking: see the module's docstring. With
    `holds`, a possible opt-out awaiting review shows as a hold on the programs it
    would opt out of (`app.consent.holds`), which may then not be texted.
    """
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
    held = holds_of(session, holds.catalog, [subscriber.id]).get(subscriber.id, {}) if holds else {}
    blocks = holds is not None and holds.blocks_sends
    anchors, transparency = prove_events(session, anchoring, events) if anchoring else ({}, None)

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
    bundle = {
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
                "may_text": row.status == ACTIVE
                and agrees[row.program_id]
                and not (blocks and row.program_id in held),
                "ledger_agrees": agrees[row.program_id],
                "hold": held[row.program_id].json() if row.program_id in held else None,
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
                "subject_event_id": event.subject_event_id,
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
        # Possible opt-outs awaiting review, and the programs they hold until decided.
        "holds": [{"program": pid, **hold.json()} for pid, hold in sorted(held.items())],
        # The sending rules' decisions on program messages to this number: what went, what was
        # deferred or refused, by which rule, under which citation.
        "send_decisions": decisions_of(session, subscriber.id),
    }
    if anchoring is not None:
        bundle["hash_format"] = HASH_FORMAT
        bundle["transparency"] = transparency
        for entry, event in zip(bundle["events"], events, strict=True):
            entry["ledger_fields"] = _ledger_fields(event)
            entry["personal_salt"] = event.personal_salt
            entry["body_raw_base64"] = (
                base64.b64encode(event.body_raw).decode() if event.body_raw is not None else None
            )
            entry["anchor"] = anchors.get(event.id)
    return bundle


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


def readable_utc(value: str | None) -> str:
    """An ISO 8601 time from the bundle as people read it: "2026-12-02 12:32:07 UTC"."""
    if not value:
        return "—"
    when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def render_evidence_html(bundle: dict[str, Any]) -> str:
    """The bundle as a self-contained, printable HTML page (autoescaped: bodies are inert).

    Codes read as plain words with the code beside them (`app.reports.labels`), times
    in UTC to the second; the JSON form keeps every value exactly as stored.
    """
    return render_template(
        "evidence.html",
        bundle=bundle,
        labels=labels,
        plural=labels.plural,
        utc=readable_utc,
    )
