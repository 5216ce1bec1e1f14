"""The figures on the staff dashboard, and its chart drawn as SVG on the server.

Replies are the messages that answer a subscriber's own text (they name an
event); program messages sent through the API are counted by the sending rules'
table instead. Every count here has a matching event-log search, which the
dashboard links to.

`daily_chart_svg` is pure (numbers in, markup out); the rest are read-only
queries. The chart needs no JavaScript, so the strict Content-Security-Policy
holds and the page works with scripts off.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.consent.review import QueueSummary, queue_summary
from app.core.flows import ACTIVE, NONE, OPTED_OUT, PENDING
from app.ledger.binding import LEDGER_MISMATCH
from app.outbox.records import send_time_note
from app.store.models import (
    DELIVERED,
    FAILED,
    SUPPRESSED,
    UNDELIVERED,
    ConsentEvent,
    LedgerCheckpoint,
    OutboundMessage,
    Subscriber,
    Subscription,
)

DAYS = 30
# What a change *to* a status counts as on the chart.
SERIES = (("Opt-ins", PENDING), ("Confirmations", ACTIVE), ("Opt-outs", OPTED_OUT))
COLOURS = {"Opt-ins": "#2563eb", "Confirmations": "#15803d", "Opt-outs": "#b91c1c"}


@dataclass
class DashboardFigures:
    subscribers: dict[str, dict[str, int]]
    days: list[date]
    daily: dict[str, list[int]]
    delivery_rate: float | None
    delivery_counts: dict[str, int]
    failures_by_code: list[tuple[str, int]]
    queue: QueueSummary
    last_check: LedgerCheckpoint | None
    # Replies the sender refused in 30 days: the subscription disagreed with its ledger event.
    ledger_mismatch_refusals: int = 0
    # Numbers on record that never subscribed to a program (they texted HELP, a question…).
    never_subscribed: dict[str, int] | None = None


def _as_date(value) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def collect(session: Session, now: datetime) -> DashboardFigures:
    """Every figure on the dashboard, read in a handful of grouped queries."""
    subscribers: dict[str, dict[str, int]] = defaultdict(dict)
    for program_id, status, count in session.execute(
        select(Subscription.program_id, Subscription.status, func.count())
        .group_by(Subscription.program_id, Subscription.status)
        .order_by(Subscription.program_id)
    ):
        subscribers[program_id][status] = count

    numbers = session.execute(
        select(func.count()).select_from(Subscriber).where(Subscriber.phone.is_not(None))
    ).scalar_one()
    subscribed = dict(
        session.execute(
            select(Subscription.program_id, func.count(func.distinct(Subscription.subscriber_id)))
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.phone.is_not(None), Subscription.status != NONE)
            .group_by(Subscription.program_id)
        ).all()
    )

    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    daily = {name: [0] * DAYS for name, _ in SERIES}
    index = {day: i for i, day in enumerate(days)}
    statuses = {status: name for name, status in SERIES}
    occurred = ConsentEvent.occurred_at
    if session.get_bind().dialect.name == "postgresql":
        occurred = func.timezone("UTC", occurred)  # days in UTC, whatever the server's zone
    day_column = func.date(occurred)
    for day, status_after, count in session.execute(
        select(day_column, ConsentEvent.status_after, func.count())
        .where(
            ConsentEvent.occurred_at >= start,
            ConsentEvent.status_after.in_(list(statuses)),
            ConsentEvent.status_before.is_distinct_from(ConsentEvent.status_after),
        )
        .group_by(day_column, ConsentEvent.status_after)
    ):
        position = index.get(_as_date(day))
        if position is not None:
            daily[statuses[status_after]][position] += count

    delivery_counts = {
        status: count
        for status, count in session.execute(
            select(OutboundMessage.status, func.count())
            .where(OutboundMessage.created_at >= start, OutboundMessage.event_id.is_not(None))
            .group_by(OutboundMessage.status)
        )
    }
    finished = sum(delivery_counts.get(s, 0) for s in (DELIVERED, UNDELIVERED, FAILED))
    rate = delivery_counts.get(DELIVERED, 0) / finished if finished else None
    failures = [
        (str(code) if code is not None else "no code", count)
        for code, count in session.execute(
            select(OutboundMessage.error_code, func.count())
            .where(
                OutboundMessage.created_at >= start,
                OutboundMessage.event_id.is_not(None),
                OutboundMessage.status.in_([UNDELIVERED, FAILED]),
            )
            .group_by(OutboundMessage.error_code)
            .order_by(func.count().desc())
        )
    ]
    ledger_mismatch_refusals = session.execute(
        select(func.count()).where(
            OutboundMessage.created_at >= start,
            OutboundMessage.status == SUPPRESSED,
            OutboundMessage.error_message == send_time_note(LEDGER_MISMATCH),
        )
    ).scalar_one()
    last_check = session.execute(
        select(LedgerCheckpoint).order_by(LedgerCheckpoint.id.desc()).limit(1)
    ).scalar_one_or_none()
    return DashboardFigures(
        subscribers=dict(subscribers),
        days=days,
        daily=daily,
        delivery_rate=rate,
        delivery_counts=delivery_counts,
        failures_by_code=failures,
        queue=queue_summary(session),
        last_check=last_check,
        ledger_mismatch_refusals=ledger_mismatch_refusals,
        never_subscribed={program_id: numbers - count for program_id, count in subscribed.items()}
        | {"*": numbers},
    )


def daily_chart_svg(days: list[date], series: dict[str, list[int]]) -> str:
    """A line chart of the daily series, as a self-contained, accessible SVG element."""
    width, height, left, bottom, top, right = 720, 240, 44, 28, 12, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([1, *(max(values, default=0) for values in series.values())])
    step = plot_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return left + i * step

    def y(value: int) -> float:
        return top + plot_h - value / peak * plot_h

    totals = ", ".join(f"{name}: {sum(values)}" for name, values in series.items())
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Daily consent changes over the last {len(days)} days ({escape(totals)})" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for tick in sorted({0, peak // 2, peak}):
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555">{tick}</text>'
        )
    for i, day in enumerate(days):
        if i % 7 == 0 or (i == len(days) - 1 and i % 7 >= 4):
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="11" '
                f'fill="#555">{day.strftime("%b %d")}</text>'
            )
    for name, values in series.items():
        colour = COLOURS.get(name, "#333")
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{escape(name)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)
