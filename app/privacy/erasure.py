"""Data-subject erasure: forget a person's number and texts, keep proof that we did.

`erase_number` runs in the caller's transaction, so an erasure happens entirely
or not at all:

1. The number's subscriber row loses its phone number and language: the row
   stays, anonymous, because its chain of ledger events hangs from it.
2. Every program the number was in moves to ``opted_out``: an erasure request
   withdraws consent too.
3. One ledger event (kind ``erasure``) records it, naming the actor and the
   reason and carrying only the number's keyed hash, never the number.
4. Every event of the chain loses its personal columns (body, raw body, salt):
   the append-only triggers allow exactly this and nothing else, and the hashes
   cover commitments to those columns, so `ledger verify` still passes.
5. Replies in the outbox lose their recipient; queued ones are suppressed.
   Imported-row fingerprints of the number are dropped.
6. The keyed hash goes on the suppression list (`app.ledger.suppression`).

Kept, because they are not personal data: the disclosure and reply texts
(content-addressed in `ledger_texts`), statuses, intents, times, Twilio SIDs.
Twilio keeps its own copy of every message: the result names their SIDs
(`twilio_sids`), and `flask --app app erase` deletes them at Twilio after the
erasure has committed (the gateway's `delete_message`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.consent.inbound import INBOUND_TEXT
from app.consent.service import apply_status_change, load_subscriptions
from app.core import flows
from app.core.keywords import OPT_OUT
from app.ledger.chain import NewEvent, append_event, lock_subscriber
from app.ledger.suppression import phone_hmac as keyed_phone_hash
from app.ledger.suppression import suppress
from app.store.models import (
    QUEUED,
    SUPPRESSED,
    ConsentEvent,
    ImportedRow,
    OutboundMessage,
    RecipientProfile,
    SendDecisionRecord,
    Subscriber,
)

logger = logging.getLogger(__name__)

ERASURE = "erasure"
REASON_MAX = 500


class ErasureError(ValueError):
    """The request cannot be carried out as given (nothing was changed)."""


@dataclass(frozen=True)
class ErasureResult:
    """What one erasure did."""

    event_id: int
    subscriber_id: int
    known: bool  # False: the number had no history; only the suppression entry was made
    events_redacted: int
    messages_redacted: int
    import_rows_removed: int
    phone_hmac: str
    # Twilio's SIDs of the texts the number sent and the replies it was sent: Twilio keeps
    # its own copies, which the caller deletes there once this erasure has committed.
    twilio_sids: tuple[str, ...] = ()


def check_reason(reason: str, phone: str | None = None) -> str:
    """The reason as recorded; it goes into the ledger for good, so it must not hold a number.

    Refused: anything `phonenumbers` recognises as a phone number (dates and
    ticket references are not), and the erased number's own digits however written.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ErasureError("a reason is required (e.g. the request's ticket reference)")
    if len(reason) > REASON_MAX:
        raise ErasureError(f"the reason is longer than {REASON_MAX} characters")
    digits = "".join(ch for ch in reason if ch.isdigit())
    own = phone_digits(phone) if phone else None
    if (own and own in digits) or _contains_phone_number(reason):
        raise ErasureError(
            "the reason must not contain a phone number (it is kept in the ledger for good)"
        )
    return reason


def phone_digits(phone: str) -> str | None:
    """The national digits of an E.164 number ("4155550100" for +14155550100)."""
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return None


def _contains_phone_number(text: str) -> bool:
    matcher = phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.POSSIBLE)
    return matcher.has_next()


def erase_number(
    session: Session, *, phone: str, reason: str, actor: str, key: bytes, now: datetime
) -> ErasureResult:
    """Erase `phone` (E.164) at its owner's request; see the module docstring for what that is."""
    reason = check_reason(reason, phone)
    actor = actor.strip()[:200] or "unknown"
    known = (
        session.execute(select(Subscriber.id).where(Subscriber.phone == phone)).scalar() is not None
    )
    # An unknown number still gets a (new, at once anonymous) row: the erasure itself is
    # recorded in the ledger, and ledger events hang from a subscriber.
    subscriber = lock_subscriber(session, phone)
    subscriber.phone = None
    subscriber.language = None
    session.flush()

    rows = load_subscriptions(session, subscriber.id)
    changes = [
        flows.StatusChange(pid, row.status, flows.OPTED_OUT)
        for pid, row in sorted(rows.items())
        if row.status != flows.OPTED_OUT
    ]
    digest = keyed_phone_hash(key, phone)
    primary = changes[0] if changes else None
    event = append_event(
        session,
        subscriber,
        NewEvent(
            kind=ERASURE,
            occurred_at=now,
            intent=OPT_OUT,
            rule=ERASURE,
            program_id=primary.program_id if primary else None,
            status_before=primary.before if primary else None,
            status_after=primary.after if primary else None,
            changes=[c.as_record() for c in changes],
            actor=actor,
            note=f"erasure request: {reason} (suppression entry hmac-sha256:{digest})",
        ),
    )
    for change in changes:
        apply_status_change(session, rows, subscriber.id, change, now, event.id)

    twilio_sids = _twilio_sids(session, subscriber.id)
    events_redacted = session.execute(
        update(ConsentEvent)
        .where(
            ConsentEvent.subscriber_id == subscriber.id,
            or_(
                ConsentEvent.body.is_not(None),
                ConsentEvent.body_raw.is_not(None),
                ConsentEvent.personal_salt.is_not(None),
            ),
        )
        .values(body=None, body_raw=None, personal_salt=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    # Twilio's error messages may quote the number, so they go with it.
    messages_redacted = session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.subscriber_id == subscriber.id,
            or_(OutboundMessage.to_number.is_not(None), OutboundMessage.error_message.is_not(None)),
        )
        .values(to_number=None, error_message=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.execute(
        update(OutboundMessage)
        .where(OutboundMessage.subscriber_id == subscriber.id, OutboundMessage.status == QUEUED)
        .values(status=SUPPRESSED, error_message="suppressed: the number was erased")
        .execution_options(synchronize_session=False)
    )
    import_rows_removed = session.execute(
        delete(ImportedRow).where(ImportedRow.subscriber_id == subscriber.id)
    ).rowcount
    # The sending rules' records: the location goes; the decisions stay, without the number.
    session.execute(delete(RecipientProfile).where(RecipientProfile.subscriber_id == subscriber.id))
    session.execute(
        update(SendDecisionRecord)
        .where(
            or_(
                SendDecisionRecord.subscriber_id == subscriber.id,
                SendDecisionRecord.to_number == phone,
            ),
            SendDecisionRecord.to_number.is_not(None),
        )
        .values(to_number=None)
        .execution_options(synchronize_session=False)
    )
    suppress(session, key, phone, now, event.id)
    logger.info(
        "number erased",
        extra={
            "event_id": event.id,
            "subscriber_id": subscriber.id,
            "events_redacted": events_redacted,
        },
    )
    return ErasureResult(
        event_id=event.id,
        subscriber_id=subscriber.id,
        known=known,
        events_redacted=events_redacted,
        messages_redacted=messages_redacted,
        import_rows_removed=import_rows_removed,
        phone_hmac=digest,
        twilio_sids=twilio_sids,
    )


def _twilio_sids(session: Session, subscriber_id: int) -> tuple[str, ...]:
    """The SIDs of the number's texts and of our replies to it that Twilio holds."""
    inbound = session.execute(
        select(ConsentEvent.message_sid).where(
            ConsentEvent.subscriber_id == subscriber_id,
            ConsentEvent.kind == INBOUND_TEXT,
            ConsentEvent.message_sid.is_not(None),
        )
    ).scalars()
    replies = session.execute(
        select(OutboundMessage.twilio_sid).where(
            OutboundMessage.subscriber_id == subscriber_id,
            OutboundMessage.twilio_sid.is_not(None),
        )
    ).scalars()
    return tuple(dict.fromkeys(sid for sid in [*inbound, *replies] if sid))
