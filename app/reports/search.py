"""Searching the consent ledger: one filter, one query, keyset pages.

Shared by the staff event log, its exports and the review tooling, so that
"the current search" means the same rows everywhere. Pages are keyset pages on
the event id (newest first), which stay as fast on page 10,000 as on page 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select, tuple_
from sqlalchemy.orm import Session

from app.core.flows import STATUSES
from app.core.keywords import INTENTS
from app.core.phones import mask_for_display, phone_candidates
from app.ledger.suppression import phone_hmac
from app.store.models import ConsentEvent, OutboundMessage, Subscriber

PAGE_SIZE = 50
CHANGE_CHOICES = ("any", "none", *STATUSES)


class SearchError(ValueError):
    """A search field that cannot be understood; the message says which and why."""


@dataclass(frozen=True)
class EventFilter:
    """What to look for. Empty fields match everything.

    `change`: "any" (the status moved), "none" (it did not), or a status the
    event moved *to* (e.g. "opted_out").
    """

    phone: str | None = None
    program: str | None = None
    intent: str | None = None
    change: str | None = None
    since: date | None = None
    until: date | None = None
    text: str | None = None
    flagged: bool = False
    region: str = "US"  # how a number typed without a country code is read

    def as_query(self) -> dict[str, Any]:
        """The filter as put back into links (the audit log keeps `as_audit_query`)."""
        values = asdict(self)
        for key in ("since", "until"):
            values[key] = values[key].isoformat() if values[key] else None
        values["flagged"] = "1" if self.flagged else None
        values.pop("region")
        return {k: v for k, v in values.items() if v not in (None, "")}

    def as_audit_query(self, key: bytes) -> dict[str, Any]:
        """The filter as the access audit log keeps it: a searched number only masked, with
        keyed hashes of every number it may mean.

        The audit log is append-only, so a number kept there in full would outlive its
        erasure. The hashes are the suppression list's (`app.ledger.suppression.phone_hmac`,
        same key): whoever holds the key can still find who searched for a number.
        """
        query = self.as_query()
        if self.phone:
            candidates = phone_candidates(self.phone, self.region)
            query["phone"] = mask_for_display(candidates[0] if candidates else self.phone)
            query["phone_hmac"] = [phone_hmac(key, candidate) for candidate in candidates]
        return query

    @classmethod
    def from_args(cls, args, region: str = "US") -> EventFilter:
        """Parse request arguments; `SearchError` names the field that is wrong."""

        def text(name: str, limit: int = 200) -> str | None:
            value = (args.get(name) or "").strip()
            if len(value) > limit:
                raise SearchError(f"{name} is too long")
            return value or None

        phone = text("phone", 64)
        intent = text("intent")
        if intent and intent not in INTENTS:
            raise SearchError(f"intent must be one of {', '.join(INTENTS)}")
        change = text("change")
        if change and change not in CHANGE_CHOICES:
            raise SearchError(f"status change must be one of {', '.join(CHANGE_CHOICES)}")
        since, until = _date(args, "since"), _date(args, "until")
        if since and until and since > until:
            raise SearchError("the start date is after the end date")
        return cls(
            phone=phone,
            program=text("program", 64),
            intent=intent,
            change=change,
            since=since,
            until=until,
            text=text("text"),
            flagged=(args.get("flagged") or "") in {"1", "on", "true"},
            region=region,
        )


def _date(args, name: str) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise SearchError(f"{name} must be a date like 2026-11-23") from exc


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def apply_filter(query: Select, event_filter: EventFilter) -> Select:
    """Narrow a select over `ConsentEvent` to the events `event_filter` matches."""
    f = event_filter
    if f.phone:
        subscriber_ids = select(Subscriber.id).where(
            Subscriber.phone.in_(phone_candidates(f.phone, f.region))
        )
        query = query.where(ConsentEvent.subscriber_id.in_(subscriber_ids))
    if f.program:
        query = query.where(ConsentEvent.program_id == f.program)
    if f.intent:
        query = query.where(ConsentEvent.intent == f.intent)
    if f.change == "any":
        query = query.where(_status_moved())
    elif f.change == "none":
        query = query.where(~_status_moved())
    elif f.change:
        query = query.where(ConsentEvent.status_after == f.change, _status_moved())
    if f.since:
        query = query.where(ConsentEvent.occurred_at >= day_start(f.since))
    if f.until:
        query = query.where(ConsentEvent.occurred_at < day_start(f.until + timedelta(days=1)))
    if f.text:
        query = query.where(ConsentEvent.body.icontains(f.text, autoescape=True))
    if f.flagged:
        query = query.where(ConsentEvent.possible_opt_out.is_(True))
    return query


def _status_moved():
    before, after = ConsentEvent.status_before, ConsentEvent.status_after
    return or_(
        and_(before.is_not(None), after.is_not(None), before != after),
        and_(before.is_(None), after.is_not(None)),
    )


@dataclass(frozen=True)
class EventRow:
    """One event as the event log shows it."""

    event: ConsentEvent
    phone: str | None
    reply: OutboundMessage | None


@dataclass(frozen=True)
class EventPage:
    rows: list[EventRow]
    next_cursor: str | None


def encode_cursor(event: ConsentEvent) -> str:
    """Where the next page starts: the last event's time and id (a keyset position)."""
    return f"{event.occurred_at.astimezone(UTC).isoformat()}~{event.id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The keyset position in `cursor`; `SearchError` when it was tampered with."""
    at, _, event_id = cursor.partition("~")
    try:
        when = datetime.fromisoformat(at)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)), int(event_id)
    except ValueError as exc:
        raise SearchError("that page link is not valid") from exc


def search_events(
    session: Session,
    event_filter: EventFilter,
    *,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> EventPage:
    """One page of matching events, newest first, starting after the `before` cursor.

    Ordered by (occurred_at, id) and read through the index on those columns, so
    a date-range search reads only the page it shows, even among millions.
    """
    query = select(ConsentEvent, Subscriber.phone).join(
        Subscriber, Subscriber.id == ConsentEvent.subscriber_id
    )
    query = apply_filter(query, event_filter)
    if before:
        at, event_id = decode_cursor(before)
        query = query.where(tuple_(ConsentEvent.occurred_at, ConsentEvent.id) < (at, event_id))
    newest_first = (ConsentEvent.occurred_at.desc(), ConsentEvent.id.desc())
    found = session.execute(query.order_by(*newest_first).limit(limit + 1)).all()
    page = found[:limit]
    replies = first_replies(session, [event.id for event, _ in page])
    rows = [EventRow(event, phone, replies.get(event.id)) for event, phone in page]
    next_cursor = encode_cursor(page[-1][0]) if len(found) > limit else None
    return EventPage(rows, next_cursor)


def first_replies(session: Session, event_ids: list[int]) -> dict[int, OutboundMessage]:
    """The first reply each event caused, by event id."""
    if not event_ids:
        return {}
    replies: dict[int, OutboundMessage] = {}
    for message in session.execute(
        select(OutboundMessage)
        .where(OutboundMessage.event_id.in_(event_ids))
        .order_by(OutboundMessage.id)
    ).scalars():
        replies.setdefault(message.event_id, message)
    return replies


EXPORT_COLUMNS = (
    "id",
    "at",
    "phone",
    "program",
    "kind",
    "intent",
    "rule",
    "language",
    "status_before",
    "status_after",
    "possible_opt_out",
    "message_sid",
    "to",
    "body",
    "actor",
    "note",
    "reply_body",
    "reply_status",
    "reply_sid",
)


def iter_export_rows(
    session: Session, event_filter: EventFilter, *, batch_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every matching event as a flat dict, newest first, in keyset batches (flat memory).

    Events written after the export started (ids above the newest at the start)
    are left out, so the file is one consistent cut of the ledger.
    """
    top = session.execute(select(ConsentEvent.id).order_by(ConsentEvent.id.desc()).limit(1))
    cursor = (top.scalar_one_or_none() or 0) + 1
    columns = (
        ConsentEvent.id,
        ConsentEvent.occurred_at,
        Subscriber.phone,
        ConsentEvent.program_id,
        ConsentEvent.kind,
        ConsentEvent.intent,
        ConsentEvent.rule,
        ConsentEvent.language,
        ConsentEvent.status_before,
        ConsentEvent.status_after,
        ConsentEvent.possible_opt_out,
        ConsentEvent.message_sid,
        ConsentEvent.to_number,
        ConsentEvent.body,
        ConsentEvent.actor,
        ConsentEvent.note,
    )
    while True:
        query = select(*columns).join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
        query = apply_filter(query, event_filter).where(ConsentEvent.id < cursor)
        batch = session.execute(query.order_by(ConsentEvent.id.desc()).limit(batch_size)).all()
        if not batch:
            return
        replies = {
            row.event_id: row
            for row in session.execute(
                select(
                    OutboundMessage.event_id,
                    OutboundMessage.body,
                    OutboundMessage.status,
                    OutboundMessage.twilio_sid,
                )
                .where(OutboundMessage.event_id.in_([row[0] for row in batch]))
                .order_by(OutboundMessage.id.desc())
            )
        }  # descending, so the first reply of each event is the one kept
        for row in batch:
            reply = replies.get(row[0])
            values = dict(zip(EXPORT_COLUMNS[: len(columns)], row, strict=True))
            values["at"] = values["at"].astimezone(UTC).isoformat().replace("+00:00", "Z")
            values["reply_body"] = reply.body if reply else None
            values["reply_status"] = reply.status if reply else None
            values["reply_sid"] = reply.twilio_sid if reply else None
            yield values
        cursor = batch[-1][0]
