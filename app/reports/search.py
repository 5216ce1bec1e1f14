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
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from app.core.flows import STATUSES
from app.core.keywords import INTENTS
from app.core.phones import mask_for_display, phone_candidates
from app.ledger.suppression import phone_hmac
from app.reports.exports import csv_columns
from app.store.models import ConsentEvent, MessageStatus, OutboundMessage, Subscriber, Subscription

PAGE_SIZE = 50
COUNT_CAP = 10_000  # counted exactly up to here; beyond, "more than 10,000"
# "any": the status moved; "none": it did not; a status: it moved to that status.
CHANGE_CHOICES = ("any", "none", *(status for status in STATUSES if status != "none"))
REPLY_STATUSES = tuple(MessageStatus)
FIELD_NAMES = {
    "phone": "Phone",
    "program": "Program",
    "intent": "Intent",
    "change": "Status change",
    "status_now": "Status now",
    "reply_status": "Reply",
    "error_code": "Error code",
    "since": "From",
    "until": "To",
    "text": "Text contains",
    "page": "Page",
}


class SearchError(ValueError):
    """Search fields that cannot be understood: `errors` maps each field to what is wrong."""

    def __init__(self, errors: dict[str, str] | str) -> None:
        self.errors = errors if isinstance(errors, dict) else {"page": errors}
        super().__init__("; ".join(self.errors.values()))


@dataclass(frozen=True)
class EventFilter:
    """What to look for. Empty fields match everything.

    `change`: "any" (the status moved), "none" (it did not), or a status the
    event moved *to* (e.g. "opted_out"). `status_now`: the number's status in
    `program` (in any program when none is given) as it stands today; "none"
    means never subscribed. `reply_status` and `error_code`: the event's reply.
    Dates are whole days in `zone` (the reader's display zone).
    """

    phone: str | None = None
    program: str | None = None
    intent: str | None = None
    change: str | None = None
    status_now: str | None = None
    reply_status: str | None = None
    error_code: int | None = None
    since: date | None = None
    until: date | None = None
    text: str | None = None
    flagged: bool = False
    region: str = "US"  # how a number typed without a country code is read
    zone: str = "UTC"  # the zone whose days `since` and `until` name

    def as_query(self) -> dict[str, Any]:
        """The filter as put back into links (the audit log keeps `as_audit_query`)."""
        values = asdict(self)
        for key in ("since", "until"):
            values[key] = values[key].isoformat() if values[key] else None
        values["flagged"] = "1" if self.flagged else None
        values.pop("region")
        values.pop("zone")
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
    def from_args(cls, args, region: str = "US", zone: str = "UTC") -> EventFilter:
        """Parse request arguments; `SearchError` names every field that is wrong."""
        errors: dict[str, str] = {}

        def text(name: str, limit: int = 200) -> str | None:
            value = (args.get(name) or "").strip()
            if len(value) > limit:
                errors[name] = f"{FIELD_NAMES[name]} is too long (at most {limit} characters)"
                return None
            return value or None

        def choice(name: str, choices, message: str) -> str | None:
            value = text(name)
            if value and value not in choices:
                errors[name] = message
                return None
            return value

        intent = choice("intent", INTENTS, f"intent must be one of {', '.join(INTENTS)}")
        change = choice(
            "change", CHANGE_CHOICES, f"status change must be one of {', '.join(CHANGE_CHOICES)}"
        )
        status_now = choice(
            "status_now", STATUSES, f"status now must be one of {', '.join(STATUSES)}"
        )
        reply_status = choice(
            "reply_status", REPLY_STATUSES, f"reply must be one of {', '.join(REPLY_STATUSES)}"
        )
        error_code = text("error_code", 10)
        if error_code and not error_code.isdigit():
            errors["error_code"] = "Error code must be a number, like 30003"
            error_code = None
        since, until = _date(args, "since", errors), _date(args, "until", errors)
        if since and until and since > until:
            errors["until"] = "To must not be before From (the start date is after the end date)"
        phone, program, body = text("phone", 64), text("program", 64), text("text")
        if errors:
            raise SearchError(errors)
        return cls(
            phone=phone,
            program=program,
            intent=intent,
            change=change,
            status_now=status_now,
            reply_status=reply_status,
            error_code=int(error_code) if error_code else None,
            since=since,
            until=until,
            text=body,
            flagged=(args.get("flagged") or "") in {"1", "on", "true"},
            region=region,
            zone=zone,
        )


def _date(args, name: str, errors: dict[str, str]) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = f"{FIELD_NAMES[name]} must be a date like 2026-11-23"
        return None


def day_start(day: date, zone: str = "UTC") -> datetime:
    """The first instant of `day` in `zone`, in UTC."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(zone)).astimezone(UTC)


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
    if f.status_now:
        query = query.where(_status_now(f.status_now, f.program))
    if f.reply_status or f.error_code is not None:
        replies = select(OutboundMessage.event_id).where(OutboundMessage.event_id.is_not(None))
        if f.reply_status:
            replies = replies.where(OutboundMessage.status == f.reply_status)
        if f.error_code is not None:
            replies = replies.where(OutboundMessage.error_code == f.error_code)
        query = query.where(ConsentEvent.id.in_(replies))
    if f.since:
        query = query.where(ConsentEvent.occurred_at >= day_start(f.since, f.zone))
    if f.until:
        query = query.where(
            ConsentEvent.occurred_at < day_start(f.until + timedelta(days=1), f.zone)
        )
    if f.text:
        query = query.where(ConsentEvent.body.icontains(f.text, autoescape=True))
    if f.flagged:
        query = query.where(ConsentEvent.possible_opt_out.is_(True))
    return query


def _status_now(status: str, program: str | None):
    """The event's number has `status` now (in `program`, or in any program)."""
    rows = select(Subscription.subscriber_id)
    if program:
        rows = rows.where(Subscription.program_id == program)
    if status == "none":  # never subscribed: no row that ever left "none"
        return ConsentEvent.subscriber_id.not_in(rows.where(Subscription.status != "none"))
    return ConsentEvent.subscriber_id.in_(rows.where(Subscription.status == status))


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
    next_cursor: str | None  # older events
    newer_cursor: str | None = None


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
        raise SearchError({"page": "that page link is not valid"}) from exc


def search_events(
    session: Session,
    event_filter: EventFilter,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> EventPage:
    """One page of matching events, newest first: older than the `before` cursor, or the
    page just newer than the `after` cursor.

    Ordered by (occurred_at, id) and read through the index on those columns, so
    a date-range search reads only the page it shows, even among millions.
    """
    query = select(ConsentEvent, Subscriber.phone).join(
        Subscriber, Subscriber.id == ConsentEvent.subscriber_id
    )
    query = apply_filter(query, event_filter)
    position = tuple_(ConsentEvent.occurred_at, ConsentEvent.id)
    if after:
        oldest_first = (ConsentEvent.occurred_at.asc(), ConsentEvent.id.asc())
        found = session.execute(
            query.where(position > decode_cursor(after)).order_by(*oldest_first).limit(limit + 1)
        ).all()
        page = list(reversed(found[:limit]))
        newer = encode_cursor(page[0][0]) if len(found) > limit else None
        older = encode_cursor(page[-1][0]) if page else None
    else:
        if before:
            query = query.where(position < decode_cursor(before))
        newest_first = (ConsentEvent.occurred_at.desc(), ConsentEvent.id.desc())
        found = session.execute(query.order_by(*newest_first).limit(limit + 1)).all()
        page = found[:limit]
        older = encode_cursor(page[-1][0]) if len(found) > limit else None
        newer = encode_cursor(page[0][0]) if before and page else None
    replies = first_replies(session, [event.id for event, _ in page])
    rows = [EventRow(event, phone, replies.get(event.id)) for event, phone in page]
    return EventPage(rows, older, newer)


@dataclass(frozen=True)
class MatchCount:
    """How many events match, and from how many numbers; `capped`: more than `events`."""

    events: int
    numbers: int | None
    capped: bool


def count_matches(session: Session, event_filter: EventFilter, cap: int = COUNT_CAP) -> MatchCount:
    """The number of matching events (exact up to `cap`) and of the numbers they come from."""
    matching = apply_filter(
        select(ConsentEvent.id, ConsentEvent.subscriber_id).join(
            Subscriber, Subscriber.id == ConsentEvent.subscriber_id
        ),
        event_filter,
    ).limit(cap + 1)
    found = matching.subquery()
    events, numbers = session.execute(
        select(func.count(), func.count(func.distinct(found.c.subscriber_id)))
    ).one()
    if events > cap:
        return MatchCount(cap, None, True)
    return MatchCount(events, numbers, False)


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


# The CSV's columns: the numbers as E.164 digits (`app.reports.exports`).
CSV_COLUMNS = csv_columns(EXPORT_COLUMNS)


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
