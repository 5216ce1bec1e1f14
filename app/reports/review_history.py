"""The review queue's history: what was decided, by whom, when and why, and statuses now.

The queue itself (`app.consent.review.open_items`) lists texts awaiting a
decision. This module answers the questions around it: which flagged texts are
decided and by which ledger event (the event log and the timeline mark them),
the Decided tab (who, when, why, a link to the decision), and each number's
status *now*, beside the status it had when it texted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.consent.review import ReviewItem, review_deadline
from app.reports.verdicts import Hold
from app.store.models import ConsentEvent, Subscriber, Subscription

PAGE = 50


@dataclass(frozen=True)
class DecisionRef:
    """The ledger event that decided a flagged text."""

    event_id: int
    seq: int
    at: datetime
    actor: str | None
    treat_as_opt_out: bool
    reason: str | None


@dataclass(frozen=True)
class DecidedItem:
    flagged: ConsentEvent
    phone: str | None
    decision: DecisionRef
    deadline: datetime
    status_now: dict[str, str]

    @property
    def late(self) -> bool:
        return self.decision.at > self.deadline


def _ref(event: ConsentEvent) -> DecisionRef:
    return DecisionRef(
        event_id=event.id,
        seq=event.seq,
        at=event.occurred_at,
        actor=event.actor,
        treat_as_opt_out=(event.rule or "").endswith(":opt_out"),
        reason=event.note,
    )


def decisions_for(session: Session, flagged_ids: list[int]) -> dict[int, DecisionRef]:
    """{flagged event id: the decision on it} for those of `flagged_ids` that are decided."""
    if not flagged_ids:
        return {}
    rows = session.execute(
        select(ConsentEvent).where(ConsentEvent.subject_event_id.in_(flagged_ids))
    ).scalars()
    return {event.subject_event_id: _ref(event) for event in rows}


def statuses_now(session: Session, subscriber_ids: list[int]) -> dict[int, dict[str, str]]:
    """{subscriber id: {program id: status}} as the subscriptions stand now."""
    found: dict[int, dict[str, str]] = {sid: {} for sid in subscriber_ids}
    if subscriber_ids:
        for subscriber_id, program_id, status in session.execute(
            select(Subscription.subscriber_id, Subscription.program_id, Subscription.status).where(
                Subscription.subscriber_id.in_(subscriber_ids)
            )
        ):
            found[subscriber_id][program_id] = status
    return found


def decided_items(
    session: Session, *, before: int | None = None, limit: int = PAGE
) -> tuple[list[DecidedItem], int | None]:
    """Decided texts, the latest decision first, a page at a time (`before`: a decision id).

    Returns the page and the cursor of the next (older) page, if any.
    """
    decision = aliased(ConsentEvent)
    query = (
        select(ConsentEvent, decision, Subscriber.phone)
        .join(decision, decision.subject_event_id == ConsentEvent.id)
        .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .order_by(decision.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(decision.id < before)
    rows = session.execute(query).all()
    page = rows[:limit]
    now = statuses_now(session, sorted({flagged.subscriber_id for flagged, _, _ in page}))
    items = [
        DecidedItem(
            flagged=flagged,
            phone=phone,
            decision=_ref(decided),
            deadline=review_deadline(flagged.occurred_at),
            status_now=now.get(flagged.subscriber_id, {}),
        )
        for flagged, decided, phone in page
    ]
    return items, (page[-1][1].id if len(rows) > limit else None)


def open_reviews_of(session: Session, subscriber_id: int) -> list[Hold]:
    """The number's flagged texts that await a decision, oldest first, as holds."""
    decision = aliased(ConsentEvent)
    rows = session.execute(
        select(ConsentEvent)
        .where(
            ConsentEvent.subscriber_id == subscriber_id,
            ConsentEvent.possible_opt_out.is_(True),
            ~select(decision.id).where(decision.subject_event_id == ConsentEvent.id).exists(),
        )
        .order_by(ConsentEvent.id)
    ).scalars()
    return [
        Hold(
            flagged_event_id=event.id,
            flagged_at=_iso(event.occurred_at),
            due=_iso(review_deadline(event.occurred_at)),
        )
        for event in rows
    ]


def with_status_now(session: Session, items: list[ReviewItem]) -> dict[int, dict[str, str]]:
    """{flagged event id: the number's statuses now} for the open items of the queue."""
    now = statuses_now(session, sorted({item.event.subscriber_id for item in items}))
    return {item.event.id: now.get(item.event.subscriber_id, {}) for item in items}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
