"""Subscription rows and the consent events that change them outside an inbound text.

`app.consent.inbound` records a subscriber's own texts; this module holds what it shares
with the other consent-changing paths (a carrier opt-out reported by Twilio's
error 21610, and staff decisions on the review queue): reading and writing the
`subscriptions` cache and keeping the outbox quiet after an opt-out. Callers
own the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core import flows
from app.core.keywords import OPT_OUT
from app.core.programs import Catalog
from app.ledger.chain import NewEvent, append_event, lock_subscriber
from app.store.models import (
    QUEUED,
    SUPPRESSED,
    SUPPRESSED_NOTE,
    ConsentEvent,
    OutboundMessage,
    Subscription,
)

logger = logging.getLogger(__name__)

CARRIER_OPT_OUT = "carrier_opt_out"


def load_subscriptions(
    session: Session, subscriber_id: int, program_ids: Iterable[str] | None = None
) -> dict[str, Subscription]:
    """The subscriber's subscription rows by program id (all of them when `program_ids` is None)."""
    query = select(Subscription).where(Subscription.subscriber_id == subscriber_id)
    if program_ids is not None:
        program_ids = list(program_ids)
        if not program_ids:
            return {}
        query = query.where(Subscription.program_id.in_(program_ids))
    return {row.program_id: row for row in session.execute(query).scalars()}


def states_of(rows: dict[str, Subscription]) -> dict[str, flows.SubscriptionState]:
    """The flow's view of subscription rows."""
    return {
        pid: flows.SubscriptionState(row.status, row.pending_since, row.confirmed_at)
        for pid, row in rows.items()
    }


def apply_status_change(
    session: Session,
    rows: dict[str, Subscription],
    subscriber_id: int,
    change: flows.StatusChange,
    now: datetime,
    event_id: int,
    language: str | None = None,
) -> Subscription:
    """Write one status change to the subscriptions cache (creating the row if new)."""
    row = rows.get(change.program_id)
    before = (
        flows.SubscriptionState(row.status, row.pending_since, row.confirmed_at)
        if row
        else flows.SubscriptionState()
    )
    state = flows.apply_change(before, change, now)
    if row is None:
        row = Subscription(subscriber_id=subscriber_id, program_id=change.program_id)
        session.add(row)
        rows[change.program_id] = row
    row.status = state.status
    row.since = now
    row.pending_since = state.pending_since
    row.confirmed_at = state.confirmed_at
    row.last_event_id = event_id
    if language:
        row.language = language
    return row


def suppress_queued_after_opt_out(session: Session, subscriber_id: int) -> None:
    """Replies still waiting in the outbox must not reach a number that just opted out."""
    session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.subscriber_id == subscriber_id,
            OutboundMessage.status == QUEUED,
            OutboundMessage.kind.not_in(flows.REPLIES_ALLOWED_AFTER_OPT_OUT),
        )
        .values(status=SUPPRESSED, error_message=SUPPRESSED_NOTE)
    )


def record_carrier_opt_out(
    session: Session,
    catalog: Catalog,
    *,
    phone: str,
    number_texted: str | None,
    program_id: str | None,
    occurred_at: datetime,
    error_code: int,
    message_sid: str | None = None,
) -> ConsentEvent | None:
    """Twilio says the recipient opted out at the carrier: record it and stop texting them.

    Every program on the number they texted moves to ``opted_out``; no reply is
    sent (the carrier blocks it anyway). Returns the ledger event, or None when
    the number was already opted out everywhere (nothing new to record).
    """
    subscriber = lock_subscriber(session, phone)
    program_ids = [p.id for p in catalog.for_number(number_texted)] if number_texted else []
    if program_id and program_id not in program_ids:
        program_ids.append(program_id)
    rows = load_subscriptions(session, subscriber.id, program_ids or None)
    if not program_ids:
        program_ids = list(rows)
    states = states_of(rows)
    decision = flows.decide(
        OPT_OUT,
        programs_on_number=program_ids,
        states=states,
        confirmation_windows={},
        now=occurred_at,
    )
    if not decision.changes:
        return None
    primary = decision.change_for(decision.primary_program_id) or decision.changes[0]
    event = append_event(
        session,
        subscriber,
        NewEvent(
            kind=CARRIER_OPT_OUT,
            occurred_at=occurred_at,
            intent=OPT_OUT,
            to_number=number_texted,
            rule=f"twilio.error:{error_code}",
            program_id=primary.program_id,
            status_before=primary.before,
            status_after=primary.after,
            changes=[c.as_record() for c in decision.changes],
            note=f"Twilio refused a reply ({message_sid or 'no SID'}) with error {error_code}: "
            "the recipient has opted out at the carrier",
        ),
    )
    for change in decision.changes:
        apply_status_change(session, rows, subscriber.id, change, occurred_at, event.id)
    suppress_queued_after_opt_out(session, subscriber.id)
    logger.info(
        "carrier opt-out recorded",
        extra={"event_id": event.id, "error_code": error_code, "message_sid": message_sid},
    )
    return event
