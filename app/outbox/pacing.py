"""Pacing: `SENDER_MPS` shared by every worker through one row holding the next free slot.

Each send reserves the slot `1/SENDER_MPS` after the previous one (with 3% headroom
for timing jitter), so the handoffs to Twilio never exceed the cap in any
one-second window, however many workers share the database.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ledger.chain import insert_ignoring_conflicts
from app.store.db import Database
from app.store.models import SenderPace

# Send slots are spaced for 97% of SENDER_MPS: a request that leaves a few milliseconds
# late must never push a one-second window at Twilio over the cap.
PACING_HEADROOM = 0.97
# A send that would leave this long (seconds) after its slot takes a new slot instead.
LATE_SEND_LIMIT = 0.005
MAX_RESLOTS = 3


def reserve_send_slot(session: Session, messages_per_second: float, now: float) -> float:
    """Reserve the next send slot (a Unix time) shared by every worker; returns it.

    Slots are `1 / messages_per_second` apart, so however many workers share
    the database, no more than `messages_per_second` handoffs start in any one
    second.
    """
    pace = session.execute(
        select(SenderPace).where(SenderPace.id == 1).with_for_update()
    ).scalar_one_or_none()
    if pace is None:
        insert_ignoring_conflicts(session, SenderPace, {"id": 1, "next_slot": 0.0}, ["id"])
        pace = session.execute(
            select(SenderPace).where(SenderPace.id == 1).with_for_update()
        ).scalar_one()
    slot = max(now, pace.next_slot)
    pace.next_slot = slot + 1.0 / messages_per_second
    return slot


# One statement, so the shared row is locked for the statement alone (autocommit), not for
# a transaction whose holder may be kept off the CPU for milliseconds by its neighbours.
_TAKE_SLOT_POSTGRESQL = """
INSERT INTO sender_pace (id, next_slot) VALUES (1, %(now)s + %(step)s)
ON CONFLICT (id) DO UPDATE SET next_slot = GREATEST(%(now)s, sender_pace.next_slot) + %(step)s
RETURNING next_slot - %(step)s
"""


def take_send_slot_autocommit(connection, messages_per_second: float, now: float) -> float:
    """`reserve_send_slot` for PostgreSQL in one autocommit statement (a psycopg connection)."""
    row = connection.execute(
        _TAKE_SLOT_POSTGRESQL, {"now": now, "step": 1.0 / messages_per_second}
    ).fetchone()
    return float(row[0])


def take_slot(
    database: Database, session: Session, messages_per_second: float, now: float
) -> float:
    """The next send slot, for `SENDER_MPS` less the headroom.

    On PostgreSQL in a statement of its own (autocommit), not in `session`: every
    sending thread of every worker takes slots from one row, and a lock held to the
    end of a transaction made that row the bottleneck (a wasted slot, if the
    transaction then fails, only leaves a gap in the pacing). On SQLite, in
    `session`, whose write lock already orders the writers.
    """
    rate = messages_per_second * PACING_HEADROOM
    if database.is_postgresql:
        with database.hot_connection() as connection:
            return take_send_slot_autocommit(connection, rate, now)
    return reserve_send_slot(session, rate, now)
