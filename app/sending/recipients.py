"""What the sending rules need to know of many recipients at once, in a few queries per chunk.

For each number: its subscriber row, its status in the program, whether it is on
the suppression list, its stored location and last purchase, the number it last
texted, and when the program's earlier messages to it went or will go out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from sqlalchemy import ARRAY, any_, bindparam, select
from sqlalchemy.orm import Session

from app.consent.holds import HoldPolicy, holds_of
from app.core import flows
from app.core.send_decisions import PROGRAM_MESSAGE
from app.ledger.suppression import history_may_be_texted, phone_hmac
from app.outbox.rules_check import HISTORY_DAYS, message_moment
from app.store.models import (
    SUPPRESSED,
    ConsentEvent,
    OutboundMessage,
    Subscriber,
    Subscription,
    Suppression,
)
from app.store.send_models import RecipientProfile

CHUNK = 2000  # SQLite: numbers per IN list
PG_CHUNK = 25_000  # PostgreSQL: numbers per array parameter (= ANY)


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
    held: bool = False  # a possible opt-out awaits review (`app.consent.holds`)


def load_recipients(
    session: Session,
    key: bytes,
    program_id: str,
    phones: Iterable[str],
    now: datetime,
    holds: HoldPolicy | None = None,
) -> dict[str, RecipientFacts]:
    """`{phone: facts}` for the known numbers among `phones` (E.164); with `holds` (when
    they block sends), each says whether a review hold holds it in the program."""
    unique = list(dict.fromkeys(phones))
    facts: dict[str, RecipientFacts] = {}
    size = PG_CHUNK if session.get_bind().dialect.name == "postgresql" else CHUNK
    for start in range(0, len(unique), size):
        facts.update(_load_chunk(session, key, program_id, unique[start : start + size], now))
    if holds is not None and holds.blocks_sends and facts:
        ids = {fact.subscriber_id: phone for phone, fact in facts.items()}
        for subscriber_id, held in holds_of(session, holds.catalog, ids).items():
            if program_id in held:
                phone = ids[subscriber_id]
                facts[phone] = replace(facts[phone], held=True)
    return facts


def _one_of(column, values: list, postgresql: bool):
    """`column IN values`; on PostgreSQL one array parameter (`= ANY`), planned once however
    many values there are, instead of thousands of parameters."""
    if postgresql:
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def _load_chunk(
    session: Session, key: bytes, program_id: str, phones: list[str], now: datetime
) -> dict[str, RecipientFacts]:
    postgresql = session.get_bind().dialect.name == "postgresql"
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
        .where(_one_of(Subscriber.phone, phones, postgresql))
    ).all()
    if not rows:
        return {}
    by_hmac = {phone_hmac(key, row.phone): row.phone for row in rows}
    suppressed_at = {
        by_hmac[digest]: at
        for digest, at in session.execute(
            select(Suppression.phone_hmac, Suppression.suppressed_at).where(
                _one_of(Suppression.phone_hmac, list(by_hmac), postgresql)
            )
        )
    }
    active = [row.id for row in rows if row.status == flows.ACTIVE]
    history = program_history(session, program_id, active, now, postgresql)
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
    session: Session,
    program_id: str,
    subscriber_ids: list[int],
    now: datetime,
    postgresql: bool = False,
) -> dict[int, list[datetime]]:
    """`{subscriber_id: [moments]}` of the program's messages to them that count toward caps."""
    if not subscriber_ids:
        return {}
    moment = message_moment()
    rows = session.execute(
        select(OutboundMessage.subscriber_id, moment).where(
            _one_of(OutboundMessage.subscriber_id, subscriber_ids, postgresql),
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
