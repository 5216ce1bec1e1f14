"""The review queue: texts that might be opt-outs, and staff decisions on them.

A text like "We have got to stop this bill" is recorded as `other` and flagged
`possible_opt_out` (see `app.core.keywords`). A compliance officer decides each one
before its deadline: 10 business days after receipt, the FCC's limit for
honouring a revocation made by "any reasonable means" (2024 TCPA order).

A decision is itself a ledger event (kind ``staff_decision``) that names the
staff member, their reason and the flagged event. "Treat as opt-out" moves the
number to ``opted_out`` in every program on the number texted and sends the
opt-out confirmation; "not an opt-out" changes nothing. No staff action can
opt a number *in*. A decision is a consent change like any other
(`app.consent.service`): `record_decision` takes the number's lock and commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache

import holidays
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from app.consent.service import change_in_session, run_locked
from app.core import flows
from app.core.consent_plan import (
    ConsentPlan,
    LoadedState,
    OutboundRow,
    OutboxQuieting,
    primary_statuses,
    seal,
    subscription_rows,
    texts_of,
)
from app.core.keywords import OPT_OUT, OTHER
from app.core.ledger_hashing import EventKind, NewEvent
from app.core.opt_out_scope import opt_out_scope
from app.core.phones import contains_phone_number
from app.core.programs import Catalog
from app.core.send_decisions import NO_CONSENT, REVIEW_HOLD
from app.store.db import Database
from app.store.models import QUEUED, ConsentEvent, OutboundMessage, Subscriber, Subscription

STAFF_DECISION = EventKind.STAFF_DECISION
REVIEW_BUSINESS_DAYS = 10
REASON_MIN, REASON_MAX = 3, 500


class ReviewError(ValueError):
    """A decision that cannot be recorded; the message says why. `about_reason`: the reason
    given is what is wrong (the form keeps it and shows the error beside it)."""

    def __init__(self, message: str, *, about_reason: bool = False) -> None:
        super().__init__(message)
        self.about_reason = about_reason


@cache
def _us_holidays(year: int) -> holidays.HolidayBase:
    return holidays.US(years=year)


def is_business_day(day: date) -> bool:
    """Monday to Friday, except US federal holidays."""
    return day.weekday() < 5 and day not in _us_holidays(day.year)


def review_deadline(received_at: datetime, business_days: int = REVIEW_BUSINESS_DAYS) -> datetime:
    """The end (UTC) of the `business_days`-th business day after the day of receipt."""
    day = received_at.astimezone(UTC).date()
    counted = 0
    while counted < business_days:
        day += timedelta(days=1)
        if is_business_day(day):
            counted += 1
    return datetime.combine(day, time.max, tzinfo=UTC)


@dataclass(frozen=True)
class ReviewItem:
    """A flagged text waiting for a decision."""

    event: ConsentEvent
    phone: str | None
    deadline: datetime

    def overdue(self, now: datetime) -> bool:
        return now > self.deadline


def _undecided():
    decision = aliased(ConsentEvent)
    return ~select(decision.id).where(decision.subject_event_id == ConsentEvent.id).exists()


def open_items(session: Session, limit: int = 100) -> list[ReviewItem]:
    """Flagged texts without a decision, oldest (most urgent) first."""
    rows = session.execute(
        select(ConsentEvent, Subscriber.phone)
        .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .where(ConsentEvent.possible_opt_out.is_(True), _undecided())
        .order_by(ConsentEvent.id)
        .limit(limit)
    ).all()
    return [ReviewItem(event, phone, review_deadline(event.occurred_at)) for event, phone in rows]


@dataclass(frozen=True)
class QueueSummary:
    size: int
    oldest_deadline: datetime | None


def queue_summary(session: Session) -> QueueSummary:
    """How many items wait, and the deadline of the oldest."""
    size, oldest = session.execute(
        select(func.count(ConsentEvent.id), func.min(ConsentEvent.occurred_at)).where(
            ConsentEvent.possible_opt_out.is_(True), _undecided()
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)  # SQLite's min() bypasses the column type
    return QueueSummary(size, review_deadline(oldest) if oldest else None)


def subject_phone(session: Session, event_id: int) -> str:
    """The number that sent the flagged text `event_id` ("" when unknown or erased)."""
    phone = session.execute(
        select(Subscriber.phone)
        .join(ConsentEvent, ConsentEvent.subscriber_id == Subscriber.id)
        .where(ConsentEvent.id == event_id)
    ).scalar()
    return phone or ""


def decide(
    session: Session,
    catalog: Catalog,
    *,
    event_id: int,
    treat_as_opt_out: bool,
    reason: str,
    staff_email: str,
    now: datetime,
) -> ConsentEvent:
    """Record a staff decision on a flagged text in the caller's transaction; returns its event.

    The caller holds the number's lock (`record_decision` takes it).
    """
    reason = checked_reason(reason)
    flagged = session.get(ConsentEvent, event_id)
    if flagged is None or not flagged.possible_opt_out:
        raise ReviewError("that text is not in the review queue")
    phone = session.execute(
        select(Subscriber.phone).where(Subscriber.id == flagged.subscriber_id)
    ).scalar_one()
    # What "treat as opt-out" covers: the opt-out scope of the flagged text, as if it had
    # been a clear request to stop when it came (the review hold covers the same).
    scope = opt_out_scope(
        catalog, flagged.to_number, flagged.occurred_at, also=[flagged.program_id]
    )
    program_ids = list(scope.program_ids)

    def plan(state: LoadedState, session: Session) -> ConsentPlan:
        already = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.subject_event_id == event_id)
        ).first()
        if already:
            raise ReviewError("that text has already been decided")
        return plan_decision(
            catalog,
            state,
            flagged,
            phone=phone,
            program_ids=program_ids,
            treat_as_opt_out=treat_as_opt_out,
            reason=reason,
            staff_email=staff_email,
            now=now,
            scope_note=scope.note if treat_as_opt_out else None,
        )

    change = change_in_session(
        session, phone, plan, now=now, subscriber_id=None if phone else flagged.subscriber_id
    )
    if not treat_as_opt_out:
        _release_held_messages(session, flagged.subscriber_id, now)
    return session.get(ConsentEvent, change.event_id)


def _release_held_messages(session: Session, subscriber_id: int, now: datetime) -> None:
    """ "Not an opt-out": program messages the review hold deferred may go at once (the
    send-time check still applies every other rule, and any other hold)."""
    session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.subscriber_id == subscriber_id,
            OutboundMessage.status == QUEUED,
            OutboundMessage.reason == f"{NO_CONSENT}:{REVIEW_HOLD}",
        )
        .values(next_attempt_at=now, not_before=None)
        .execution_options(synchronize_session=False)
    )


def record_decision(
    database: Database,
    catalog: Catalog,
    *,
    also: Callable[[Session, ConsentEvent], None] | None = None,
    **decision,
) -> ConsentEvent:
    """Record a staff decision (`decision`: the keyword arguments of `decide`) under the
    number's lock and commit; `also` joins the transaction.

    A decision may opt the number out, so it waits for a reply in flight to it.
    """
    checked_reason(decision["reason"])
    with database.transaction(write=False) as session:
        phone = subject_phone(session, decision["event_id"])

    def work(session: Session) -> ConsentEvent:
        event = decide(session, catalog, **decision)
        if also is not None:
            also(session, event)
        return event

    return run_locked(database, phone, work)


def checked_reason(reason: str | None) -> str:
    """The reason as recorded: white space folded, 3 to 500 characters."""
    reason = " ".join((reason or "").split())
    if not REASON_MIN <= len(reason) <= REASON_MAX:
        raise ReviewError(
            f"give a reason of {REASON_MIN} to {REASON_MAX} characters for the decision",
            about_reason=True,
        )
    if contains_phone_number(reason):
        raise ReviewError(
            "the reason must not contain a phone number (it is kept in the ledger)",
            about_reason=True,
        )
    return reason


def plan_decision(
    catalog: Catalog,
    state: LoadedState,
    flagged: ConsentEvent,
    *,
    phone: str | None,
    program_ids: list[str],
    treat_as_opt_out: bool,
    reason: str,
    staff_email: str,
    now: datetime,
    scope_note: str | None = None,
) -> ConsentPlan:
    """The decision's ledger event, its opt-out (if so decided) and the one confirmation."""
    states = {pid: s for pid, s in state.subscriptions.items() if pid in program_ids}
    decision = (
        flows.opt_out(program_ids, states, now)
        if treat_as_opt_out
        else flows.Decision(primary_program_id=flagged.program_id)
    )
    assert all(c.after == flows.OPTED_OUT for c in decision.changes)  # never an opt-in

    primary_id = decision.primary_program_id or flagged.program_id
    status_before, status_after = primary_statuses(decision, states, primary_id)
    confirmation = _confirmation(catalog, decision, state.language)
    outbound = []
    if confirmation and phone:
        program_id, body, language = confirmation
        outbound.append(
            OutboundRow(
                program_id=program_id,
                kind=flows.OPT_OUT_CONFIRMATION,
                language=language,
                to_number=phone,
                from_number=flagged.to_number,
                body=body,
            )
        )
    texts = texts_of(confirmation[1] if confirmation else None)
    event = seal(
        state,
        NewEvent(
            kind=STAFF_DECISION,
            occurred_at=now,
            intent=OPT_OUT if treat_as_opt_out else OTHER,
            to_number=flagged.to_number,
            rule="staff.review:" + ("opt_out" if treat_as_opt_out else "not_opt_out"),
            program_id=primary_id,
            status_before=status_before,
            status_after=status_after,
            changes=[c.as_record() for c in decision.changes],
            reply_sha256=next(iter(texts), None),
            actor=staff_email,
            note=reason + (f" ({scope_note})" if scope_note else ""),
            subject_event_id=flagged.id,
        ),
        phone,
    )
    return ConsentPlan(
        event=event,
        intent=event.fields["intent"],
        phone=phone,
        subscriber_language=state.language,
        subscriptions=subscription_rows(decision.changes, states, now),
        outbound=outbound,
        texts=texts,
        quieting=OutboxQuieting.OPT_OUT if decision.changes else OutboxQuieting.NONE,
    )


def _confirmation(
    catalog: Catalog, decision: flows.Decision, language: str | None
) -> tuple[str, str, str] | None:
    """(program id, text, language) of the opt-out confirmation the decision sends, if any."""
    for reply in decision.replies:
        program = catalog.get(reply.program_id)
        if program is not None:
            texts = program.texts_for([language] if language else [])
            return program.id, getattr(texts, reply.text_name), texts.language
    return None


@dataclass(frozen=True)
class DecisionPreview:
    """What "treat as opt-out" would do to the number, told on the form before anyone clicks."""

    programs: list[str]  # the programs it would opt out of
    confirmation: str | None  # the text the subscriber would be sent, if any
    language: str | None


def preview_opt_out(
    session: Session, catalog: Catalog, flagged: ConsentEvent, now: datetime
) -> DecisionPreview:
    """The programs a "treat as opt-out" on `flagged` would opt out of, and the confirmation
    it would send (the same planner the decision runs, on today's subscriptions)."""
    scope = opt_out_scope(
        catalog, flagged.to_number, flagged.occurred_at, also=[flagged.program_id]
    )
    program_ids = list(scope.program_ids)  # what `decide` covers: the text's opt-out scope
    subscriber = session.get(Subscriber, flagged.subscriber_id)
    rows = session.execute(
        select(Subscription).where(
            Subscription.subscriber_id == flagged.subscriber_id,
            Subscription.program_id.in_(program_ids),
        )
    ).scalars()
    states = {
        row.program_id: flows.SubscriptionState(
            flows.Status(row.status), row.pending_since, row.confirmed_at
        )
        for row in rows
    }
    decision = flows.opt_out(program_ids, states, now)
    language = subscriber.language if subscriber is not None else None
    confirmation = _confirmation(catalog, decision, language)
    return DecisionPreview(
        programs=[change.program_id for change in decision.changes],
        confirmation=confirmation[1] if confirmation and subscriber and subscriber.phone else None,
        language=confirmation[2] if confirmation else None,
    )
