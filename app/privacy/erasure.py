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

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.consent.inbound import INBOUND_TEXT
from app.consent.service import change_in_session, run_locked
from app.core import flows
from app.core.consent_plan import ConsentPlan, LoadedState, OutboxQuieting, seal, subscription_rows
from app.core.keywords import OPT_OUT
from app.core.ledger_hashing import EventKind, NewEvent
from app.core.phones import contains_phone_number
from app.ledger.suppression import phone_hmac as keyed_phone_hash
from app.ledger.suppression import suppress
from app.store.db import Database
from app.store.models import (
    ConsentEvent,
    ImportedRow,
    OutboundMessage,
    RecipientProfile,
    SendDecisionRecord,
    Subscriber,
)

logger = logging.getLogger(__name__)

ERASURE = EventKind.ERASURE
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
    if contains_phone_number(reason, phone):
        raise ErasureError(
            "the reason must not contain a phone number (it is kept in the ledger for good)"
        )
    return reason


def erase(
    database: Database, *, phone: str, reason: str, actor: str, key: bytes, now: datetime
) -> ErasureResult:
    """Erase `phone` under its lock and commit (an erasure is an opt-out: it waits for a
    reply in flight to the number)."""
    check_reason(reason, phone)
    return run_locked(
        database,
        phone,
        lambda session: erase_number(
            session, phone=phone, reason=reason, actor=actor, key=key, now=now
        ),
    )


def erase_number(
    session: Session, *, phone: str, reason: str, actor: str, key: bytes, now: datetime
) -> ErasureResult:
    """Erase `phone` (E.164) in the caller's transaction, which holds the number's lock
    (`erase` takes it); see the module docstring for what that is."""
    reason = check_reason(reason, phone)
    actor = actor.strip()[:200] or "unknown"
    digest = keyed_phone_hash(key, phone)
    # An unknown number still gets a (new, at once anonymous) row: the erasure itself is
    # recorded in the ledger, and ledger events hang from a subscriber.

    def plan(state: LoadedState, _session: Session) -> ConsentPlan:
        return plan_erasure(state, actor=actor, reason=reason, digest=digest, now=now)

    known_id = session.execute(select(Subscriber.id).where(Subscriber.phone == phone)).scalar()
    # Twilio's error messages may quote the number, so they go with it. Before the change:
    # the replies it suppresses keep the note that says why.
    messages_redacted = 0
    if known_id is not None:
        messages_redacted = _clear(
            session,
            OutboundMessage,
            known_id,
            OutboundMessage.to_number,
            OutboundMessage.error_message,
        )
    change = change_in_session(session, phone, plan, now=now)
    subscriber_id = change.state.subscriber_id
    twilio_sids = _twilio_sids(session, subscriber_id)
    events_redacted = _clear(
        session,
        ConsentEvent,
        subscriber_id,
        ConsentEvent.body,
        ConsentEvent.body_raw,
        ConsentEvent.personal_salt,
    )
    import_rows_removed = session.execute(
        delete(ImportedRow).where(ImportedRow.subscriber_id == subscriber_id)
    ).rowcount
    # The sending rules' records: the location goes; the decisions stay, without the number.
    session.execute(delete(RecipientProfile).where(RecipientProfile.subscriber_id == subscriber_id))
    session.execute(
        update(SendDecisionRecord)
        .where(
            or_(
                SendDecisionRecord.subscriber_id == subscriber_id,
                SendDecisionRecord.to_number == phone,
            ),
            SendDecisionRecord.to_number.is_not(None),
        )
        .values(to_number=None)
        .execution_options(synchronize_session=False)
    )
    suppress(session, key, phone, now, change.event_id)
    logger.info(
        "number erased",
        extra={
            "event_id": change.event_id,
            "subscriber_id": subscriber_id,
            "events_redacted": events_redacted,
        },
    )
    return ErasureResult(
        event_id=change.event_id,
        subscriber_id=subscriber_id,
        known=change.state.existed,
        events_redacted=events_redacted,
        messages_redacted=messages_redacted,
        import_rows_removed=import_rows_removed,
        phone_hmac=digest,
        twilio_sids=twilio_sids,
    )


def plan_erasure(
    state: LoadedState, *, actor: str, reason: str, digest: str, now: datetime
) -> ConsentPlan:
    """Every program to ``opted_out``, one ``erasure`` event sealed without the number, the
    number and language taken off the subscriber row, everything queued suppressed."""
    changes = [
        flows.StatusChange(pid, s.status, flows.OPTED_OUT)
        for pid, s in sorted(state.subscriptions.items())
        if s.status != flows.OPTED_OUT
    ]
    primary = changes[0] if changes else None
    event = seal(
        state,
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
        None,
    )
    return ConsentPlan(
        event=event,
        intent=OPT_OUT,
        phone=None,
        subscriber_language=None,
        subscriptions=subscription_rows(changes, state.subscriptions, now),
        outbound=[],
        texts={},
        quieting=OutboxQuieting.ERASURE,
    )


def _clear(session: Session, model, subscriber_id: int, *columns) -> int:
    """Set `columns` to NULL in the subscriber's rows of `model`; the number of rows changed."""
    return session.execute(
        update(model)
        .where(model.subscriber_id == subscriber_id, or_(*(c.is_not(None) for c in columns)))
        .values({c.key: None for c in columns})
        .execution_options(synchronize_session=False)
    ).rowcount


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
