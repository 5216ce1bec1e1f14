"""What the sending rules need to know of many recipients at once, in a few queries per chunk.

For each number: its subscriber row, its status in the program, whether it is on
the suppression list, its stored location and last purchase, the number it last
texted, and when the program's earlier messages to it went or will go out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import flows
from app.core.send_decisions import PROGRAM_MESSAGE
from app.ledger.suppression import history_may_be_texted, suppressions_for
from app.outbox.rules_check import HISTORY_DAYS, message_moment
from app.store.models import SUPPRESSED, ConsentEvent, OutboundMessage, Subscriber, Subscription
from app.store.send_models import RecipientProfile

CHUNK = 2000


@dataclass(frozen=True)
class RecipientFacts:
    """One known number's facts (an unknown number has none: it never consented)."""

    subscriber_id: int
    status: str
    suppressed: bool
    state: str | None
    zip_code: str | None
    purchased_on: date | None
    last_number_texted: str | None
    history: tuple[datetime, ...]


def load_recipients(
    session: Session, key: bytes, program_id: str, phones: Iterable[str], now: datetime
) -> dict[str, RecipientFacts]:
    """`{phone: facts}` for the known numbers among `phones` (E.164)."""
    unique = list(dict.fromkeys(phones))
    facts: dict[str, RecipientFacts] = {}
    for start in range(0, len(unique), CHUNK):
        facts.update(_load_chunk(session, key, program_id, unique[start : start + CHUNK], now))
    return facts


def _load_chunk(
    session: Session, key: bytes, program_id: str, phones: list[str], now: datetime
) -> dict[str, RecipientFacts]:
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.phone,
            Subscriber.created_at,
            Subscription.status,
            ConsentEvent.to_number,
            RecipientProfile.state,
            RecipientProfile.zip_code,
            RecipientProfile.purchased_on,
        )
        .select_from(Subscriber)
        .outerjoin(
            Subscription,
            (Subscription.subscriber_id == Subscriber.id) & (Subscription.program_id == program_id),
        )
        .outerjoin(ConsentEvent, ConsentEvent.id == Subscription.last_event_id)
        .outerjoin(RecipientProfile, RecipientProfile.subscriber_id == Subscriber.id)
        .where(Subscriber.phone.in_(phones))
    ).all()
    if not rows:
        return {}
    suppressed_at = suppressions_for(session, key, [row.phone for row in rows])
    active = [row.id for row in rows if row.status == flows.ACTIVE]
    history = program_history(session, program_id, active, now)
    return {
        row.phone: RecipientFacts(
            subscriber_id=row.id,
            status=row.status or flows.NONE,
            suppressed=not history_may_be_texted(row.created_at, suppressed_at.get(row.phone)),
            state=row.state,
            zip_code=row.zip_code,
            purchased_on=row.purchased_on,
            last_number_texted=row.to_number,
            history=tuple(history.get(row.id, ())),
        )
        for row in rows
    }


def program_history(
    session: Session, program_id: str, subscriber_ids: list[int], now: datetime
) -> dict[int, list[datetime]]:
    """`{subscriber_id: [moments]}` of the program's messages to them that count toward caps."""
    if not subscriber_ids:
        return {}
    moment = message_moment()
    rows = session.execute(
        select(OutboundMessage.subscriber_id, moment).where(
            OutboundMessage.subscriber_id.in_(subscriber_ids),
            OutboundMessage.kind == PROGRAM_MESSAGE,
            OutboundMessage.program_id == program_id,
            OutboundMessage.status != SUPPRESSED,
            moment >= now - timedelta(days=HISTORY_DAYS),
        )
    )
    history: dict[int, list[datetime]] = defaultdict(list)
    for subscriber_id, at in rows:
        history[subscriber_id].append(at)
    return history
