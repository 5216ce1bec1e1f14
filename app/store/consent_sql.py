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
from sqlalchemy.exc import ResourceClosedError
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
# Locked for the rest of the transaction on PostgreSQL (SQLite's writer holds the database).
LOAD_SUBSCRIBER = _SUBSCRIBER_HEAD.where(Subscriber.phone == bindparam("phone")).with_for_update()
LOAD_SUBSCRIBER_BY_ID = _SUBSCRIBER_HEAD.where(
    Subscriber.id == bindparam("subscriber_id")
).with_for_update()
KNOWN_MESSAGE_SID = select(ConsentEvent.id).where(ConsentEvent.message_sid == bindparam("sid"))
NEWEST_EVENT = (
    select(ConsentEvent.id, ConsentEvent.event_hash).order_by(ConsentEvent.id.desc()).limit(1)
)
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
# The stores: one load and one write, run two ways


class _CoreStore:
    """Loads a number and writes a plan with the statements above; subclasses say how a
    statement runs (`_rows`) and how the transaction begins and ends."""

    dialect: str
    subscriber_id: int | None = None

    def _rows(self, statement, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _begin(self) -> None:
        """Start the transaction the load and the write share, if the store owns it."""

    def _new_texts(self, plan: ConsentPlan) -> list[tuple[str, str]]:
        return list(plan.texts.items())

    def _finish(self, plan: ConsentPlan, new_texts: list[tuple[str, str]]) -> None:
        """End the write: commit, or hand the transaction back to its owner."""

    def _first(self, statement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        rows = self._rows(statement, params)
        return rows[0] if rows else None

    def load(self, phone: str, message_sid: str | None, now: datetime) -> LoadedState:
        self._begin()
        existed = True
        if self.subscriber_id is not None:
            by_id = {"subscriber_id": self.subscriber_id}
            subscriber = self._first(LOAD_SUBSCRIBER_BY_ID, by_id)
        else:
            subscriber = self._first(LOAD_SUBSCRIBER, {"phone": phone})
            if subscriber is None:  # first seen: create the row (a concurrent creator may win)
                existed = False
                self._rows(create_subscriber(self.dialect), {"phone": phone, "at": now})
                subscriber = self._first(LOAD_SUBSCRIBER, {"phone": phone})
        subscriber_id, chain_seq, chain_head_hash, language = subscriber
        duplicate = (
            message_sid is not None
            and self._first(KNOWN_MESSAGE_SID, {"sid": message_sid}) is not None
        )
        witness = self._first(NEWEST_EVENT, {})
        subscriptions = self._rows(LOAD_SUBSCRIPTIONS, {"subscriber_id": subscriber_id})
        return LoadedState(
            subscriber_id=subscriber_id,
            chain_seq=chain_seq,
            chain_head_hash=chain_head_hash,
            language=language,
            duplicate=duplicate,
            subscriptions=subscription_states(subscriptions),
            witness=(witness[0], witness[1]) if witness else None,
            existed=existed,
        )

    def write(self, plan: ConsentPlan, state: LoadedState) -> Written:
        at = plan.written_at
        new_texts = self._new_texts(plan)
        for sha, body in new_texts:
            self._rows(store_text(self.dialect), {"sha256": sha, "body": body, "at": at})
        (event_id,) = self._first(INSERT_EVENT, event_params(plan))
        self._rows(MOVE_CHAIN_HEAD, chain_head_params(plan, state))
        for params in subscription_params(plan, state, event_id):
            self._rows(upsert_subscription(self.dialect), params)
        if plan.quieting is not OutboxQuieting.NONE:
            quiet = {"b_subscriber_id": state.subscriber_id, "b_at": at}
            self._rows(QUIET_OUTBOX[plan.quieting], quiet)
        outbound_ids = [
            self._first(QUEUE_REPLY, params)[0] for params in reply_params(plan, state, event_id)
        ]
        if outbound_ids and self.dialect == "postgresql":
            self._rows(select(func.pg_notify(NOTIFY_CHANNEL, "")), {})
        self._finish(plan, new_texts)
        return Written(event_id, outbound_ids)


class SessionConsentStore(_CoreStore):
    """Consent changes on a SQLAlchemy session, inside the caller's transaction (both databases).

    `load` locks the subscriber row (``FOR UPDATE`` on PostgreSQL; on SQLite the
    writing transaction holds the database) and creates it for a number first
    seen. The caller holds the number's lock (`app.consent.service`) and commits.
    A number already erased has no phone: name its row by `subscriber_id`.
    """

    def __init__(self, session: Session, subscriber_id: int | None = None) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name
        self.subscriber_id = subscriber_id

    def _rows(self, statement, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        result = self.session.execute(statement, params)
        try:
            return list(result)
        except ResourceClosedError:  # an UPDATE or INSERT without RETURNING
            return []

    def _finish(self, plan: ConsentPlan, new_texts: list[tuple[str, str]]) -> None:
        self.session.expire_all()  # ORM objects read earlier in this session are stale now

    def abandon(self) -> None:
        """Nothing to undo: the caller rolls its transaction back or commits it."""


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


_compiled: dict[int, tuple[object, RawStatement]] = {}


def _raw(statement) -> RawStatement:
    """`statement` compiled for sqlite3, once. The statements are module-level constants; the
    cache keeps each one alive, so its id can never be reused by another."""
    cached = _compiled.get(id(statement))
    if cached is None or cached[0] is not statement:
        cached = _compiled[id(statement)] = (statement, RawStatement(statement))
    return cached[1]


class SqliteHotStore(_CoreStore):
    """Load, then write, one change on a sqlite3 connection, inside ``BEGIN IMMEDIATE``.

    SQLite has one writer at a time, so the load's transaction already holds the
    number still until the write commits; `write` never has to retry.
    """

    dialect = "sqlite"

    def __init__(self, connection, known_texts: set[str]) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        self.known_texts = known_texts  # texts already in ledger_texts (per process)

    def _rows(self, statement, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        raw = _raw(statement)
        return self.cursor.execute(raw.sql, raw.params(params)).fetchall()

    def _begin(self) -> None:
        self.cursor.execute("BEGIN IMMEDIATE")

    def _new_texts(self, plan: ConsentPlan) -> list[tuple[str, str]]:
        return [(s, b) for s, b in plan.texts.items() if s not in self.known_texts]

    def _finish(self, plan: ConsentPlan, new_texts: list[tuple[str, str]]) -> None:
        self.cursor.execute("COMMIT")
        self.known_texts.update(sha for sha, _ in new_texts)

    def abandon(self) -> None:
        self.connection.rollback()
