"""Many numbers with a consent status, written as a real ledger: for tests and benchmarks.

Tests and benchmarks of the sending rules need thousands of numbers already subscribed.
Writing each through the consent service would take minutes, and writing bare
`subscriptions` rows would leave them unbound to the ledger (`app.ledger.binding`
refuses such rows, as it should). So each number gets one ``import`` event, sealed by
the same pure code as every event (`app.core.ledger_hashing`), chained and witnessed,
and its subscription names that event: `ledger verify` passes, the binding agrees,
and only the insertion is done in bulk.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from app.core.intents import OPT_IN, OPT_OUT
from app.core.ledger_hashing import EventKind, NewEvent, seal_event
from app.store.models import ConsentEvent, Subscriber, Subscription

SOURCE = "seeded for a test or benchmark"


def seed_consents(
    connection: Connection,
    statuses: Iterable[tuple[str, str]],
    *,
    program: str,
    at: datetime,
    chunk: int = 5_000,
) -> dict[str, int]:
    """Give each `(phone, status)` a subscriber, one ledger event setting `status` in
    `program`, and the subscription naming it. Returns `{phone: subscriber id}`.

    The numbers must be new to the database. Run inside the caller's transaction.
    """
    pairs = list(statuses)
    next_subscriber = (connection.execute(select(func.max(Subscriber.id))).scalar() or 0) + 1
    next_event = (connection.execute(select(func.max(ConsentEvent.id))).scalar() or 0) + 1
    witness = connection.execute(
        select(ConsentEvent.id, ConsentEvent.event_hash).order_by(ConsentEvent.id.desc()).limit(1)
    ).first()
    witness = tuple(witness) if witness else None
    ids: dict[str, int] = {}
    for start in range(0, len(pairs), chunk):
        subscribers, events, subscriptions = [], [], []
        for phone, status in pairs[start : start + chunk]:
            subscriber_id, event_id = next_subscriber, next_event
            next_subscriber, next_event = next_subscriber + 1, next_event + 1
            sealed = seal_event(
                NewEvent(
                    kind=EventKind.IMPORT,
                    occurred_at=at,
                    intent=OPT_OUT if status == "opted_out" else OPT_IN,
                    rule="import",
                    program_id=program,
                    status_before="none",
                    status_after=status,
                    changes=[{"program": program, "before": "none", "after": status}],
                    actor=SOURCE,
                    note=SOURCE,
                ),
                subscriber_id=subscriber_id,
                phone=phone,
                chain_seq=0,
                chain_head_hash=None,
                witness=witness,
            )
            witness = (event_id, sealed.event_hash)
            ids[phone] = subscriber_id
            subscribers.append(
                {
                    "id": subscriber_id,
                    "phone": phone,
                    "created_at": at,
                    "chain_seq": 1,
                    "chain_head_hash": sealed.event_hash,
                }
            )
            events.append({"id": event_id, **sealed.row()})
            subscriptions.append(
                {
                    "subscriber_id": subscriber_id,
                    "program_id": program,
                    "status": status,
                    "since": at,
                    "pending_since": at if status == "pending" else None,
                    "confirmed_at": at if status == "active" else None,
                    "last_event_id": event_id,
                }
            )
        connection.execute(insert(Subscriber), subscribers)
        connection.execute(insert(ConsentEvent), events)
        connection.execute(insert(Subscription), subscriptions)
    if connection.dialect.name == "postgresql":
        for table in ("subscribers", "consent_events"):
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
    return ids


__all__ = ["seed_consents"]
