"""The consent ledger in the database: append, verify, and per-subscriber checks.

Hashing itself lives in the pure `app.core.ledger_hashing`; this module moves events
between it and the database. Callers own the transaction.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core import ledger_hashing as lh
from app.core.ledger_hashing import NewEvent, body_bytes, seal_event
from app.store import consent_sql
from app.store.db import utcnow
from app.store.models import ConsentEvent, LedgerCheckpoint, Subscriber

if TYPE_CHECKING:
    from app.ledger.checkpoints import AnchorReport, LedgerAnchors

__all__ = [
    "NewEvent",
    "append_event",
    "lock_subscriber",
    "store_text",
    "verify_ledger",
    "verify_subscriber",
]


def insert_ignoring_conflicts(session: Session, model, values: dict, conflict_columns: list[str]):
    """INSERT … ON CONFLICT DO NOTHING on either backend; returns the executed result."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
    )
    return session.execute(statement)


def store_text(session: Session, text: str) -> str:
    """Store a disclosure or reply text once; return its SHA-256."""
    sha = lh.text_sha256(text)
    session.execute(
        consent_sql.store_text(session.get_bind().dialect.name),
        {"sha256": sha, "body": text, "at": utcnow()},
    )
    return sha


def lock_subscriber(session: Session, phone: str) -> Subscriber:
    """The subscriber row for `phone`, created if new and locked for this transaction.

    For tools and tests that append events directly; consent changes go through
    `app.consent.service`, whose store takes the same lock.
    """
    session.execute(
        consent_sql.create_subscriber(session.get_bind().dialect.name),
        {"phone": phone, "at": utcnow()},
    )
    return session.execute(
        select(Subscriber)
        .where(Subscriber.phone == phone)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def newest_event(session: Session) -> tuple[int, str] | None:
    """(id, hash) of the newest event in the whole ledger: the next event's witness."""
    row = session.execute(consent_sql.NEWEST_EVENT).first()
    return (row.id, row.event_hash) if row else None


def append_event(session: Session, subscriber: Subscriber, new: NewEvent) -> ConsentEvent:
    """Append one event to `subscriber`'s chain, with no status change (tools and tests).

    The subscriber must be locked by the caller. The event and the chain head are
    written by the same statements as every consent change (`app.store.consent_sql`).
    """
    sealed = seal_event(
        new,
        subscriber_id=subscriber.id,
        phone=subscriber.phone,
        chain_seq=subscriber.chain_seq,
        chain_head_hash=subscriber.chain_head_hash,
        witness=newest_event(session),
    )
    event_id = session.execute(consent_sql.INSERT_EVENT, sealed.row()).scalar_one()
    session.execute(
        consent_sql.MOVE_CHAIN_HEAD,
        {
            "b_subscriber_id": subscriber.id,
            "b_seq": sealed.fields["seq"],
            "b_event_hash": sealed.event_hash,
            "b_language": subscriber.language,
            "b_phone": subscriber.phone,
        },
    )
    session.refresh(subscriber)
    return session.get(ConsentEvent, event_id)


# ----------------------------------------------------------------------------------------------
# Verification


@dataclass
class VerifyResult:
    """The outcome of a verification: `ok`, the first failure, and counts."""

    ok: bool = True
    events: int = 0
    subscribers: int = 0
    redacted: int = 0
    first_bad_event_id: int | None = None
    message: str = "ledger intact"
    last_event_id: int | None = None
    last_event_hash: str | None = None
    anchors: AnchorReport | None = None  # the published checkpoints, when they were checked

    def fail(self, event_id: int | None, message: str) -> None:
        if self.ok:
            self.ok = False
            self.first_bad_event_id = event_id
            self.message = message


@dataclass
class _ChainState:
    seq: int = 0
    head: str = lh.GENESIS_HASH


def _check_event(event: Any, chain: _ChainState, phone: str | None, result: VerifyResult) -> bool:
    """Check one event (a row from `_iter_events`) against its hash, chain and commitments."""
    fields = dict(zip(lh.HASHED_FIELDS, event[1:_HASHED_END], strict=True))
    if not lh.hashes_equal(lh.event_hash(fields), event.event_hash):
        result.fail(event.id, f"event {event.id}: contents do not match its hash (edited)")
        return False
    if event.seq != chain.seq + 1:
        result.fail(
            event.id,
            f"event {event.id}: subscriber {event.subscriber_id} expected event #{chain.seq + 1} "
            f"of its chain, found #{event.seq} (an event was deleted or the order changed)",
        )
        return False
    if not lh.hashes_equal(event.prev_hash, chain.head):
        result.fail(
            event.id,
            f"event {event.id}: does not link to the previous event of subscriber "
            f"{event.subscriber_id} (an event was deleted, replaced or reordered)",
        )
        return False
    salt = event.personal_salt
    if salt is not None:
        if phone is not None and not lh.hashes_equal(
            lh.phone_commitment(salt, phone), event.phone_commitment
        ):
            result.fail(event.id, f"event {event.id}: the subscriber's phone number was changed")
            return False
        raw = body_bytes(event.body, event.body_raw)
        if raw is not None and not lh.hashes_equal(
            lh.body_commitment(salt, raw), event.body_commitment
        ):
            result.fail(event.id, f"event {event.id}: the message body was changed")
            return False
    elif event.body is not None or event.body_raw is not None:
        result.fail(event.id, f"event {event.id}: a body without its salt cannot be checked")
        return False
    if event.body is None and event.body_commitment is not None:
        result.redacted += 1
    chain.seq = event.seq
    chain.head = event.event_hash
    return True


# What verification reads of each event: plain rows, not ORM objects (a million of them).
_VERIFY_COLUMNS = [
    getattr(ConsentEvent, name)
    for name in ("id", *lh.HASHED_FIELDS, "event_hash", "body", "body_raw", "personal_salt")
]


_HASHED_END = 1 + len(lh.HASHED_FIELDS)


def _iter_events(session: Session, batch_size: int, **filters) -> Iterator[Any]:
    """All events in id order, as rows, in keyset batches so memory stays flat.

    On PostgreSQL the rows come straight from psycopg (named tuples): half the
    cost of SQLAlchemy's result processing, which matters at a million events.
    """
    if session.get_bind().dialect.name == "postgresql":
        yield from _iter_event_rows_psycopg(session, batch_size, filters)
        return
    last_id = 0
    while True:
        query = select(*_VERIFY_COLUMNS).where(ConsentEvent.id > last_id)
        for column, value in filters.items():
            query = query.where(getattr(ConsentEvent, column) == value)
        batch = session.execute(query.order_by(ConsentEvent.id).limit(batch_size)).all()
        if not batch:
            return
        yield from batch
        last_id = batch[-1].id


def _iter_event_rows_psycopg(session: Session, batch_size: int, filters: dict) -> Iterator[Any]:
    from psycopg.rows import namedtuple_row

    columns = ", ".join(column.key for column in _VERIFY_COLUMNS)
    conditions = "".join(f" AND {name} = %({name})s" for name in filters)
    sql = (
        f"SELECT {columns} FROM consent_events WHERE id > %(last_id)s{conditions} "
        "ORDER BY id LIMIT %(limit)s"
    )
    connection = session.connection().connection.driver_connection
    params = {**filters, "limit": batch_size, "last_id": 0}
    with connection.cursor(row_factory=namedtuple_row) as cursor:
        while True:
            batch = cursor.execute(sql, params).fetchall()
            if not batch:
                return
            yield from batch
            params["last_id"] = batch[-1].id


def verify_ledger(
    session: Session,
    *,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    suppression_key: bytes | None = None,
    anchors: LedgerAnchors | None = None,
) -> VerifyResult:
    """Recompute every hash, chain link, witness and chain head; report the first failure.

    Then compare what the chains lead to with the tables the service decides from
    (`app.ledger.replay`: subscriptions, suppression list, texts); a number is
    named by its keyed hash under `suppression_key` (by subscriber id without one).
    With `anchors`, the events also go into the Merkle tree that the published
    checkpoints are then checked against (`app.ledger.checkpoints`).
    """
    from app.ledger.replay import LedgerReplay  # it imports suppression, which imports this

    replay = LedgerReplay(suppression_key)
    result = VerifyResult()
    total = session.execute(select(func.count(ConsentEvent.id))).scalar_one()
    subscribers = {
        row.id: (row.phone, row.chain_seq, row.chain_head_hash)
        for row in session.execute(
            select(
                Subscriber.id, Subscriber.phone, Subscriber.chain_seq, Subscriber.chain_head_hash
            )
        )
    }
    result.subscribers = len(subscribers)
    chains: dict[int, _ChainState] = {}
    # Witness look-ups: event ids (ascending, as read) and the first 8 bytes of each hash.
    seen_ids = array("q")
    seen_prefixes = array("Q")

    for event in _iter_events(session, batch_size):
        result.events += 1
        if progress and result.events % 10000 == 0:
            progress(result.events, total)
        if event.subscriber_id not in subscribers:
            result.fail(event.id, f"event {event.id}: its subscriber row was deleted")
            break
        chain = chains.setdefault(event.subscriber_id, _ChainState())
        if not _check_event(event, chain, subscribers[event.subscriber_id][0], result):
            break
        if event.witness_id is not None:
            if (
                _position_seen(seen_ids, seen_prefixes, event.witness_id, event.witness_hash)
                is None
            ):
                result.fail(
                    event.id,
                    f"event {event.id}: the event it witnessed ({event.witness_id}) is missing "
                    "or was changed (events were deleted)",
                )
                break
        problem = replay.observe(event)
        if problem:
            result.fail(event.id, problem)
            break
        seen_ids.append(event.id)
        seen_prefixes.append(_hash_prefix(event.event_hash))
        if anchors is not None:
            anchors.add(event.id, event.event_hash)
        result.last_event_id = event.id
        result.last_event_hash = event.event_hash
    if progress and result.events % 10000:
        progress(result.events, total)

    if result.ok:
        for subscriber_id, (_phone, chain_seq, head) in sorted(subscribers.items()):
            chain = chains.get(subscriber_id, _ChainState())
            if chain.seq != chain_seq or (chain_seq and not lh.hashes_equal(chain.head, head)):
                result.fail(
                    None,
                    f"subscriber {subscriber_id}: the chain head records {chain_seq} events but "
                    f"{chain.seq} were found (events after #{chain.seq} were deleted)",
                )
                break
    if result.ok:
        phones = {subscriber_id: row[0] for subscriber_id, row in subscribers.items()}
        replay.finish(session, phones, result, batch_size=batch_size)
    if result.ok:
        _check_checkpoints(session, result, seen_ids, seen_prefixes)
    if result.ok and anchors is not None:
        result.anchors = anchors.check(session)
        if not result.anchors.ok:
            result.fail(None, result.anchors.message)
    return result


def _hash_prefix(event_hash: str) -> int:
    """The first 8 bytes of a hash: enough to tell events apart, small enough to keep millions."""
    return int(event_hash[:16], 16)


def _position_seen(ids: array, prefixes: array, event_id: int, event_hash: str) -> int | None:
    """Where `event_id` stands among the events read so far, if it is there with `event_hash`."""
    position = bisect.bisect_left(ids, event_id)
    if position < len(ids) and ids[position] == event_id:
        if prefixes[position] == _hash_prefix(event_hash):
            return position
    return None


def _check_checkpoints(session: Session, result: VerifyResult, ids: array, prefixes: array) -> None:
    """The newest successful checkpoint's last event must still be there, and nothing before it."""
    checkpoint = session.execute(
        select(LedgerCheckpoint)
        .where(LedgerCheckpoint.ok.is_(True), LedgerCheckpoint.last_event_id.is_not(None))
        .order_by(LedgerCheckpoint.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if checkpoint is None:
        return
    position = _position_seen(ids, prefixes, checkpoint.last_event_id, checkpoint.last_event_hash)
    if position is None:
        result.fail(
            checkpoint.last_event_id,
            f"event {checkpoint.last_event_id}: verified on {lh.format_time(checkpoint.checked_at)}"
            " but now missing or changed (events were deleted from the end of the ledger)",
        )
        return
    if position + 1 < checkpoint.event_count:
        result.fail(
            None,
            f"{checkpoint.event_count - position - 1} events up to event "
            f"{checkpoint.last_event_id} were deleted since the check of "
            f"{lh.format_time(checkpoint.checked_at)}",
        )


def record_checkpoint(session: Session, result: VerifyResult) -> LedgerCheckpoint:
    """Keep the outcome of a full verification (the staff dashboard shows the latest)."""
    checkpoint = LedgerCheckpoint(
        checked_at=utcnow(),
        ok=result.ok,
        event_count=result.events,
        last_event_id=result.last_event_id if result.ok else None,
        last_event_hash=result.last_event_hash if result.ok else None,
        message=result.message,
    )
    session.add(checkpoint)
    return checkpoint


def verify_subscriber(session: Session, subscriber: Subscriber) -> VerifyResult:
    """Verify one subscriber's chain: hashes, links, commitments and the recorded head."""
    result = VerifyResult(subscribers=1)
    chain = _ChainState()
    for event in _iter_events(session, 1000, subscriber_id=subscriber.id):
        result.events += 1
        if not _check_event(event, chain, subscriber.phone, result):
            return result
        result.last_event_id = event.id
        result.last_event_hash = event.event_hash
    if chain.seq != subscriber.chain_seq or (
        subscriber.chain_seq and not lh.hashes_equal(chain.head, subscriber.chain_head_hash)
    ):
        result.fail(
            None,
            f"subscriber {subscriber.id}: the chain head records {subscriber.chain_seq} events "
            f"but {chain.seq} were found (events were deleted)",
        )
    return result
