"""The API's paged feeds: consent events (oldest first) and outbound messages (newest first).

Keyset pages by id, so a page costs the same however deep it is. The JSON shapes
are the API's (`app.web.api`); this module only finds the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.models import ConsentEvent, OutboundMessage, SendBatch, Subscriber


@dataclass(frozen=True)
class EventFilter:
    """What `GET /api/v1/events` may filter on."""

    phone: str | None = None
    program_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class EventsPage:
    """One page of events with each one's first reply, and where the next page starts."""

    events: list[tuple[ConsentEvent, str | None]]
    replies: dict[int, OutboundMessage]
    next_cursor: int | None


def events_page(session: Session, where: EventFilter, *, after: int, limit: int) -> EventsPage:
    """Events with an id above `after`, oldest first, at most `limit` of them."""
    query = (
        select(ConsentEvent, Subscriber.phone)
        .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        .where(ConsentEvent.id > after)
    )
    if where.phone:
        query = query.where(Subscriber.phone == where.phone)
    if where.program_id:
        query = query.where(ConsentEvent.program_id == where.program_id)
    if where.since:
        query = query.where(ConsentEvent.occurred_at >= where.since)
    if where.until:
        query = query.where(ConsentEvent.occurred_at <= where.until)
    rows = session.execute(query.order_by(ConsentEvent.id).limit(limit + 1)).all()
    page = [(event, phone) for event, phone in rows[:limit]]
    replies: dict[int, OutboundMessage] = {}
    if page:
        for message in session.execute(
            select(OutboundMessage)
            .where(OutboundMessage.event_id.in_([event.id for event, _ in page]))
            .order_by(OutboundMessage.id)
        ).scalars():
            replies.setdefault(message.event_id, message)
    next_cursor = page[-1][0].id if len(rows) > limit else None
    return EventsPage(page, replies, next_cursor)


def messages_page(
    session: Session, *, phone: str | None, before: int, limit: int
) -> tuple[list[OutboundMessage], int | None, dict[int, str]]:
    """Outbound messages, newest first (below id `before` when it is set), the next cursor,
    and the public id of each send batch they belong to."""
    query = select(OutboundMessage)
    if phone:
        query = query.where(OutboundMessage.to_number == phone)
    if before:
        query = query.where(OutboundMessage.id < before)
    rows = session.execute(query.order_by(OutboundMessage.id.desc()).limit(limit + 1)).scalars()
    rows = rows.all()
    page = rows[:limit]
    batch_ids = {m.batch_id for m in page if m.batch_id}
    public_ids = (
        dict(
            session.execute(
                select(SendBatch.id, SendBatch.public_id).where(SendBatch.id.in_(batch_ids))
            ).all()
        )
        if batch_ids
        else {}
    )
    return page, (page[-1].id if len(rows) > limit else None), public_ids
