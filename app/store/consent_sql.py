"""The consent writes, each defined once with SQLAlchemy Core, and the stores that run them.

A `ConsentPlan` (`app.core.consent_plan`) is written as: the texts it references,
the ledger event, the chain head, the subscription rows (an upsert), the outbox
quietened after an opt-out, and the replies queued. The statements below are
the one definition of each of those writes, and of the reads that load a
number's state. Two stores run them:

- `SessionConsentStore`, on a SQLAlchemy session (both databases): every
  consent change but the inbound hot path, inside the caller's transaction.
- `SqliteHotStore`, the inbound hot path on SQLite: the same statements,
  compiled once for SQLite and run on the sqlite3 connection with SQLAlchemy's
  own bind processing (`RawStatement`), because SQLAlchemy's per-statement
  execution cost more than the whole decision.

PostgreSQL's hot path is the one hand-tuned exception (`app.store.pg_hot_store`:
one statement per text); `tests/test_consent_store_parity.py` writes the same
plans through all three and compares the rows field by field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.core import flows
from app.core.consent_plan import ConsentPlan, LoadedState, OutboxQuieting, Written
from app.core.ledger_hashing import HASHED_FIELDS
from app.store.models import (
    NOTIFY_CHANNEL,
    QUEUED,
    SUPPRESSED,
    SUPPRESSED_NOTE,
    ConsentEvent,
    LedgerText,
    OutboundMessage,
    Subscriber,
    Subscription,
)

EVENT_COLUMNS = (*HASHED_FIELDS, "event_hash", "body", "body_raw", "personal_salt")
SUBSCRIPTION_COLUMNS = (
    "subscriber_id",
    "program_id",
    "status",
    "since",
    "pending_since",
    "confirmed_at",
    "language",
    "last_event_id",
)
OUTBOX_COLUMNS = (
    "event_id",
    "subscriber_id",
    "program_id",
    "kind",
    "language",
    "to_number",
    "from_number",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
ERASED_NOTE = "suppressed: the number was erased"
ALLOWED_AFTER_OPT_OUT = sorted(flows.REPLIES_ALLOWED_AFTER_OPT_OUT)

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


# ----------------------------------------------------------------------------------------------
# The statements


@cache
def store_text(dialect: str):
    """A disclosure or reply text, stored once under its SHA-256."""
    return (
        _INSERTS[dialect](LedgerText)
        .values(sha256=bindparam("sha256"), body=bindparam("body"), created_at=bindparam("at"))
        .on_conflict_do_nothing(index_elements=["sha256"])
    )


@cache
def create_subscriber(dialect: str):
    """The subscriber row of a number first seen; nothing if it exists. Returns the new id."""
    return (
        _INSERTS[dialect](Subscriber)
        .values(phone=bindparam("phone"), created_at=bindparam("at"), chain_seq=0)
        .on_conflict_do_nothing(index_elements=["phone"])
        .returning(Subscriber.id)
    )


INSERT_EVENT = (
    ConsentEvent.__table__.insert()
    .values({name: bindparam(name) for name in EVENT_COLUMNS})
    .returning(ConsentEvent.id)
)

MOVE_CHAIN_HEAD = (
    update(Subscriber)
    .where(Subscriber.id == bindparam("b_subscriber_id"))
    .values(
        chain_seq=bindparam("b_seq"),
        chain_head_hash=bindparam("b_event_hash"),
        language=bindparam("b_language"),
        phone=bindparam("b_phone"),
    )
)


@cache
def upsert_subscription(dialect: str):
    """A program's subscription after the change, naming the event that set it."""
    statement = _INSERTS[dialect](Subscription).values(
        {name: bindparam(name) for name in SUBSCRIPTION_COLUMNS}
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["subscriber_id", "program_id"],
        set_={
            "status": excluded.status,
            "since": excluded.since,
            "pending_since": excluded.pending_since,
            "confirmed_at": excluded.confirmed_at,
            "language": func.coalesce(excluded.language, Subscription.language),
            "last_event_id": excluded.last_event_id,
        },
    )


def _queued_for(*extra):
    return (
        update(OutboundMessage)
        .where(
            OutboundMessage.subscriber_id == bindparam("b_subscriber_id"),
            OutboundMessage.status == QUEUED,
            *extra,
        )
        .execution_options(synchronize_session=False)
    )


# What each kind of quieting does to the messages still queued for the number.
QUIET_OUTBOX = {
    # `kind != …` for each allowed kind rather than NOT IN: the same test, in a form that
    # compiles once to plain SQL (`RawStatement`) without an expanding parameter.
    OutboxQuieting.OPT_OUT: _queued_for(
        *(OutboundMessage.kind != kind for kind in ALLOWED_AFTER_OPT_OUT)
    ).values(status=SUPPRESSED, error_message=SUPPRESSED_NOTE, updated_at=bindparam("b_at")),
    OutboxQuieting.ERASURE: _queued_for().values(
        status=SUPPRESSED, error_message=ERASED_NOTE, updated_at=bindparam("b_at")
    ),
}

QUEUE_REPLY = (
    OutboundMessage.__table__.insert()
    .values({name: bindparam(name) for name in OUTBOX_COLUMNS})
    .returning(OutboundMessage.id)
)

_SUBSCRIBER_HEAD = select(
    Subscriber.id, Subscriber.chain_seq, Subscriber.chain_head_hash, Subscriber.language
)
LOAD_SUBSCRIBER = _SUBSCRIBER_HEAD.where(Subscriber.phone == bindparam("phone"))
LOAD_SUBSCRIBER_BY_ID = _SUBSCRIBER_HEAD.where(Subscriber.id == bindparam("subscriber_id"))
KNOWN_MESSAGE_SID = select(ConsentEvent.id).where(ConsentEvent.message_sid == bindparam("sid"))
NEWEST_EVENT = select(ConsentEvent.id, ConsentEvent.event_hash).order_by(ConsentEvent.id.desc())
LOAD_SUBSCRIPTIONS = select(
    Subscription.program_id,
    Subscription.status,
    Subscription.pending_since,
    Subscription.confirmed_at,
).where(Subscription.subscriber_id == bindparam("subscriber_id"))


# ----------------------------------------------------------------------------------------------
# The parameters of each statement, from a plan


def event_params(plan: ConsentPlan) -> dict[str, Any]:
    return plan.event.row()


def chain_head_params(plan: ConsentPlan, state: LoadedState) -> dict[str, Any]:
    return {
        "b_subscriber_id": state.subscriber_id,
        "b_seq": plan.event.fields["seq"],
        "b_event_hash": plan.event.event_hash,
        "b_language": plan.subscriber_language,
        "b_phone": plan.phone,
    }


def subscription_params(
    plan: ConsentPlan, state: LoadedState, event_id: int
) -> list[dict[str, Any]]:
    return [
        {
            "subscriber_id": state.subscriber_id,
            "program_id": s.program_id,
            "status": s.status,
            "since": s.since,
            "pending_since": s.pending_since,
            "confirmed_at": s.confirmed_at,
            "language": s.language,
            "last_event_id": event_id,
        }
        for s in plan.subscriptions
    ]


def reply_params(plan: ConsentPlan, state: LoadedState, event_id: int) -> list[dict[str, Any]]:
    at = plan.written_at
    return [
        {
            "event_id": event_id,
            "subscriber_id": state.subscriber_id,
            "program_id": o.program_id,
            "kind": o.kind,
            "language": o.language,
            "to_number": o.to_number,
            "from_number": o.from_number,
            "body": o.body,
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
            "updated_at": at,
        }
        for o in plan.outbound
    ]


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def subscription_states(rows: Sequence[Sequence[Any]]) -> dict[str, flows.SubscriptionState]:
    """The flow's view of (program_id, status, pending_since, confirmed_at) rows."""
    return {
        program_id: flows.SubscriptionState(status, _utc(pending_since), _utc(confirmed_at))
        for program_id, status, pending_since, confirmed_at in rows
    }


# ----------------------------------------------------------------------------------------------
# On a SQLAlchemy session


class SessionConsentStore:
    """Consent changes on a session, inside the caller's transaction (both databases).

    `load` locks the subscriber row (``FOR UPDATE`` on PostgreSQL; on SQLite the
    writing transaction holds the database) and creates it for a number first
    seen. The caller holds the number's lock (`app.consent.service`) and commits.
    A number already erased has no phone: name its row by `subscriber_id`.
    """

    def __init__(self, session: Session, subscriber_id: int | None = None) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name
        self.subscriber_id = subscriber_id

    def load(self, phone: str, message_sid: str | None, now: datetime) -> LoadedState:
        session = self.session
        if self.subscriber_id is not None:
            existed = True
            subscriber = session.execute(
                LOAD_SUBSCRIBER_BY_ID.with_for_update(), {"subscriber_id": self.subscriber_id}
            ).one()
        else:
            locked = LOAD_SUBSCRIBER.with_for_update()
            subscriber = session.execute(locked, {"phone": phone}).first()
            existed = subscriber is not None
            if subscriber is None:  # first seen: create the row (a concurrent creator may win)
                session.execute(create_subscriber(self.dialect), {"phone": phone, "at": now})
                subscriber = session.execute(locked, {"phone": phone}).one()
        duplicate = (
            message_sid is not None
            and session.execute(KNOWN_MESSAGE_SID, {"sid": message_sid}).first() is not None
        )
        witness = session.execute(NEWEST_EVENT.limit(1)).first()
        rows = session.execute(LOAD_SUBSCRIPTIONS, {"subscriber_id": subscriber.id}).all()
        return LoadedState(
            subscriber_id=subscriber.id,
            chain_seq=subscriber.chain_seq,
            chain_head_hash=subscriber.chain_head_hash,
            language=subscriber.language,
            duplicate=duplicate,
            subscriptions=subscription_states(rows),
            witness=(witness.id, witness.event_hash) if witness else None,
            existed=existed,
        )

    def write(self, plan: ConsentPlan, state: LoadedState) -> Written:
        session = self.session
        at = plan.written_at
        if plan.texts:
            session.execute(
                store_text(self.dialect),
                [{"sha256": sha, "body": body, "at": at} for sha, body in plan.texts.items()],
            )
        event_id = session.execute(INSERT_EVENT, event_params(plan)).scalar_one()
        session.execute(MOVE_CHAIN_HEAD, chain_head_params(plan, state))
        subscriptions = subscription_params(plan, state, event_id)
        if subscriptions:
            session.execute(upsert_subscription(self.dialect), subscriptions)
        if plan.quieting is not OutboxQuieting.NONE:
            session.execute(
                QUIET_OUTBOX[plan.quieting], {"b_subscriber_id": state.subscriber_id, "b_at": at}
            )
        outbound_ids = [
            session.execute(QUEUE_REPLY, params).scalar_one()
            for params in reply_params(plan, state, event_id)
        ]
        if outbound_ids and self.dialect == "postgresql":
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
        session.expire_all()  # ORM objects read earlier in this session are stale now
        return Written(event_id, outbound_ids)

    def abandon(self) -> None:
        """Nothing to undo: the caller's transaction is rolled back or committed by the caller."""


# ----------------------------------------------------------------------------------------------
# On the sqlite3 connection (the inbound hot path)

_SQLITE = sqlite.dialect(paramstyle="named")


class RawStatement:
    """A Core statement compiled once for SQLite, run on the sqlite3 connection.

    Parameters go through the same bind processors SQLAlchemy would apply (UTC
    timestamps as text, JSON, booleans), so the rows are those the session store
    writes; only SQLAlchemy's per-execution overhead is skipped.
    """

    def __init__(self, statement) -> None:
        compiled = statement.compile(dialect=_SQLITE)
        self.sql = str(compiled)
        # The constants the statement carries (e.g. the statuses it compares); the values
        # of the named parameters come with each execution.
        self.defaults = dict(compiled.construct_params(_check=False))
        self.processors = {
            key: processor
            for key, bind in compiled.binds.items()
            if (processor := bind.type.bind_processor(_SQLITE)) is not None
        }

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self.defaults, **values}
        for key, processor in self.processors.items():
            if key in params:
                params[key] = processor(params[key])
        return params

    def run(self, cursor, values: Mapping[str, Any]):
        return cursor.execute(self.sql, self.params(values))


class _SqliteStatements:
    """Every statement of the SQLite hot path, compiled on first use."""

    def __init__(self) -> None:
        self.create_subscriber = RawStatement(create_subscriber("sqlite"))
        self.load_subscriber = RawStatement(LOAD_SUBSCRIBER)
        self.known_message_sid = RawStatement(KNOWN_MESSAGE_SID)
        self.newest_event = RawStatement(NEWEST_EVENT.limit(1))
        self.load_subscriptions = RawStatement(LOAD_SUBSCRIPTIONS)
        self.store_text = RawStatement(store_text("sqlite"))
        self.insert_event = RawStatement(INSERT_EVENT)
        self.move_chain_head = RawStatement(MOVE_CHAIN_HEAD)
        self.upsert_subscription = RawStatement(upsert_subscription("sqlite"))
        self.quiet_outbox = {kind: RawStatement(s) for kind, s in QUIET_OUTBOX.items()}
        self.queue_reply = RawStatement(QUEUE_REPLY)


@cache
def _sqlite_statements() -> _SqliteStatements:
    return _SqliteStatements()


class SqliteHotStore:
    """Load, then write, one change on a sqlite3 connection, inside ``BEGIN IMMEDIATE``.

    SQLite has one writer at a time, so the load's transaction already holds the
    number still until the write commits; `write` never has to retry.
    """

    def __init__(self, connection, known_texts: set[str]) -> None:
        self.connection = connection
        self.known_texts = known_texts  # texts already in ledger_texts (per process)
        self.sql = _sqlite_statements()

    def load(self, phone: str, message_sid: str | None, now: datetime) -> LoadedState:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        created = self.sql.create_subscriber.run(cursor, {"phone": phone, "at": now}).fetchone()
        subscriber_id, chain_seq, chain_head_hash, language = self.sql.load_subscriber.run(
            cursor, {"phone": phone}
        ).fetchone()
        duplicate = (
            message_sid is not None
            and self.sql.known_message_sid.run(cursor, {"sid": message_sid}).fetchone() is not None
        )
        witness = self.sql.newest_event.run(cursor, {}).fetchone()
        rows = self.sql.load_subscriptions.run(cursor, {"subscriber_id": subscriber_id}).fetchall()
        return LoadedState(
            subscriber_id=subscriber_id,
            chain_seq=chain_seq,
            chain_head_hash=chain_head_hash,
            language=language,
            duplicate=duplicate,
            subscriptions=subscription_states(rows),
            witness=tuple(witness) if witness else None,
            existed=created is None,
        )

    def abandon(self) -> None:
        self.connection.rollback()

    def write(self, plan: ConsentPlan, state: LoadedState) -> Written:
        sql, cursor = self.sql, self.connection.cursor()
        at = plan.written_at
        new_texts = [(s, b) for s, b in plan.texts.items() if s not in self.known_texts]
        for sha, body in new_texts:
            sql.store_text.run(cursor, {"sha256": sha, "body": body, "at": at})
        (event_id,) = sql.insert_event.run(cursor, event_params(plan)).fetchone()
        sql.move_chain_head.run(cursor, chain_head_params(plan, state))
        for params in subscription_params(plan, state, event_id):
            sql.upsert_subscription.run(cursor, params)
        if plan.quieting is not OutboxQuieting.NONE:
            sql.quiet_outbox[plan.quieting].run(
                cursor, {"b_subscriber_id": state.subscriber_id, "b_at": at}
            )
        outbound_ids = [
            sql.queue_reply.run(cursor, params).fetchone()[0]
            for params in reply_params(plan, state, event_id)
        ]
        cursor.execute("COMMIT")
        self.known_texts.update(sha for sha, _ in new_texts)
        return Written(event_id, outbound_ids)
