"""The SQL of the inbound hot path, for PostgreSQL (psycopg) and SQLite (sqlite3).

Why raw driver SQL here and nowhere else: every inbound text pays for this code,
and the ORM's unit of work cost several times more than the whole decision.

PostgreSQL: two statements per text, each one round trip, on an autocommit
connection (no BEGIN or COMMIT round trips), and no lock held while Python decides:

1. `load` reads the sender's chain head, subscriptions and language, whether the
   MessageSid is known, and the ledger's newest event (the witness); for a new
   number it reserves the subscriber id, because the event's hash covers it.
2. `write` is one statement, so one transaction: data-modifying CTEs move the
   chain head *only if it is still where `load` saw it* (or create the
   subscriber), and, only then, insert the event, upsert the subscriptions,
   quieten the outbox after an opt-out, queue the replies and NOTIFY the sender.
   When another text from the same number got there first, nothing is written
   and the text is decided again on fresh state (optimistic concurrency, so texts
   from different numbers never wait for each other). A repeated MessageSid
   trips its unique index and changes nothing.

SQLite has one writer at a time anyway: the same reads and writes run as plain
statements inside ``BEGIN IMMEDIATE``. The tables and their meaning are those of
`app.store.models`; the tests read every row back through the ORM.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql

from app.consent.inbound import InboundPlan, LoadedState
from app.core import flows
from app.core.ledger_hashing import HASHED_FIELDS
from app.store.models import NOTIFY_CHANNEL, QUEUED, SUPPRESSED, SUPPRESSED_NOTE, ConsentEvent

EVENT_COLUMNS = (*HASHED_FIELDS, "event_hash", "body", "body_raw", "personal_salt")
_ALLOWED_AFTER_OPT_OUT = ", ".join(
    f"'{kind}'" for kind in sorted(flows.REPLIES_ALLOWED_AFTER_OPT_OUT)
)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _subscription_states(rows) -> dict[str, flows.SubscriptionState]:
    return {
        program_id: flows.SubscriptionState(status, _utc(pending_since), _utc(confirmed_at))
        for program_id, status, pending_since, confirmed_at in rows
    }


class InboundStore:
    """Load, then write, one inbound text on one driver connection."""

    def __init__(self, connection, known_texts: set[str]) -> None:
        self.connection = connection
        self.known_texts = known_texts  # texts already in ledger_texts (per process)

    @staticmethod
    def for_connection(connection, known_texts: set[str]) -> InboundStore:
        if isinstance(connection, sqlite3.Connection):
            return SqliteInboundStore(connection, known_texts)
        return PostgresInboundStore(connection, known_texts)

    def abandon(self) -> None:
        """End a load that leads to no write (a known MessageSid)."""

    def _new_texts(self, plan: InboundPlan) -> list[tuple[str, str]]:
        return [(sha, body) for sha, body in plan.texts.items() if sha not in self.known_texts]


# ----------------------------------------------------------------------------------------------
# PostgreSQL

PG_LOAD = """
SELECT b.id, b.chain_seq, b.chain_head_hash, b.language,
  EXISTS (SELECT 1 FROM consent_events WHERE message_sid = %(sid)s),
  (SELECT coalesce(json_agg(json_build_array(
            s.program_id, s.status, s.pending_since, s.confirmed_at)), '[]'::json)
     FROM subscriptions s WHERE s.subscriber_id = b.id),
  w.id, w.event_hash,
  CASE WHEN b.id IS NULL THEN nextval(pg_get_serial_sequence('subscribers', 'id')) END
FROM (SELECT 1) AS one
LEFT JOIN subscribers b ON b.phone = %(phone)s
LEFT JOIN LATERAL (SELECT id, event_hash FROM consent_events ORDER BY id DESC LIMIT 1) AS w
  ON true
"""

_PG_TYPES = {
    column.name: column.type.compile(dialect=postgresql.dialect())
    for column in ConsentEvent.__table__.columns
}
PG_STORE_TEXTS = (
    "INSERT INTO ledger_texts (sha256, body, created_at) "
    "SELECT t.sha256, t.body, %(now)s FROM jsonb_to_recordset(%(texts)s::jsonb) "
    "AS t(sha256 text, body text) ON CONFLICT (sha256) DO NOTHING"
)
PG_WRITE = f"""
WITH head AS (
  UPDATE subscribers SET chain_seq = %(seq)s, chain_head_hash = %(event_hash)s,
         language = %(subscriber_language)s
   WHERE id = %(subscriber_id)s AND chain_seq = %(expected_seq)s AND NOT %(new_subscriber)s
  RETURNING id
), born AS (
  INSERT INTO subscribers (id, phone, created_at, chain_seq, chain_head_hash, language)
  SELECT %(subscriber_id)s, %(phone)s::varchar, %(occurred_at)s, %(seq)s, %(event_hash)s,
         %(subscriber_language)s::varchar
   WHERE %(new_subscriber)s
  ON CONFLICT (phone) DO NOTHING
  RETURNING id
), ok AS (
  SELECT id FROM head UNION ALL SELECT id FROM born
), ev AS (
  INSERT INTO consent_events ({", ".join(EVENT_COLUMNS)})
  SELECT {", ".join(f"%({c})s::{_PG_TYPES[c]}" for c in EVENT_COLUMNS)} FROM ok
  RETURNING id
), subs AS (
  INSERT INTO subscriptions (subscriber_id, program_id, status, since, pending_since,
                             confirmed_at, language, last_event_id)
  SELECT %(subscriber_id)s, s.program_id, s.status, s.since, s.pending_since,
         s.confirmed_at, s.language, ev.id
    FROM ev, jsonb_to_recordset(%(subscriptions)s::jsonb) AS s(
         program_id text, status text, since timestamptz, pending_since timestamptz,
         confirmed_at timestamptz, language text)
  ON CONFLICT (subscriber_id, program_id) DO UPDATE SET
     status = EXCLUDED.status, since = EXCLUDED.since,
     pending_since = EXCLUDED.pending_since, confirmed_at = EXCLUDED.confirmed_at,
     language = coalesce(EXCLUDED.language, subscriptions.language),
     last_event_id = EXCLUDED.last_event_id
), quiet AS (
  UPDATE outbound_messages SET status = '{SUPPRESSED}', error_message = '{SUPPRESSED_NOTE}'
   WHERE %(opted_out)s AND subscriber_id = %(subscriber_id)s AND status = '{QUEUED}'
     AND kind NOT IN ({_ALLOWED_AFTER_OPT_OUT}) AND EXISTS (SELECT 1 FROM ev)
), ob AS (
  INSERT INTO outbound_messages (event_id, subscriber_id, program_id, kind, language, to_number,
                                 from_number, body, status, attempts, next_attempt_at,
                                 created_at, updated_at)
  SELECT ev.id, %(subscriber_id)s, o.program_id, o.kind, o.language, o.to_number,
         o.from_number, o.body, '{QUEUED}', 0, %(occurred_at)s, %(occurred_at)s, %(occurred_at)s
    FROM ev, jsonb_to_recordset(%(outbound)s::jsonb) AS o(
         program_id text, kind text, language text, to_number text, from_number text, body text)
  RETURNING id
), wake AS (
  SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM ob LIMIT 1
)
SELECT (SELECT id FROM ev), (SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM ob),
       (SELECT count(*) FROM wake)
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class PostgresInboundStore(InboundStore):
    """One statement to read, one to write; autocommit, no lock held in between."""

    def load(self, phone: str, message_sid: str, now: datetime) -> LoadedState:
        (
            subscriber_id,
            chain_seq,
            chain_head_hash,
            language,
            duplicate,
            subscriptions,
            witness_id,
            witness_hash,
            reserved_id,
        ) = self.connection.execute(PG_LOAD, {"phone": phone, "sid": message_sid}).fetchone()
        return LoadedState(
            subscriber_id=subscriber_id if subscriber_id is not None else reserved_id,
            chain_seq=chain_seq or 0,
            chain_head_hash=chain_head_hash,
            language=language,
            duplicate=duplicate,
            subscriptions=_subscription_states(subscriptions),
            witness=(witness_id, witness_hash) if witness_id is not None else None,
            new_subscriber=subscriber_id is None,
        )

    def write(self, plan: InboundPlan, state: LoadedState) -> tuple[int, list[int]] | None:
        from psycopg.types.json import Json, Jsonb

        row = plan.event.row()
        new_texts = self._new_texts(plan)
        if new_texts:
            self.connection.execute(
                PG_STORE_TEXTS,
                {
                    "now": row["occurred_at"],
                    "texts": Jsonb([{"sha256": s, "body": b} for s, b in new_texts]),
                },
            )
            self.known_texts.update(sha for sha, _ in new_texts)
        params = {
            **row,
            "changes": Json(row["changes"]),
            "phone": plan.phone,
            "expected_seq": state.chain_seq,
            "new_subscriber": state.new_subscriber,
            "subscriber_language": plan.subscriber_language,
            "opted_out": plan.opted_out,
            "subscriptions": Jsonb(
                [
                    {
                        "program_id": s.program_id,
                        "status": s.status,
                        "since": _iso(s.since),
                        "pending_since": _iso(s.pending_since),
                        "confirmed_at": _iso(s.confirmed_at),
                        "language": s.language,
                    }
                    for s in plan.subscriptions
                ]
            ),
            "outbound": Jsonb([o.__dict__ for o in plan.outbound]),
        }
        event_id, outbound_ids, _ = self.connection.execute(PG_WRITE, params).fetchone()
        if event_id is None:
            return None  # another text from this number moved the chain head first
        return event_id, list(outbound_ids)


# ----------------------------------------------------------------------------------------------
# SQLite


def _sqlite_time(value: datetime | None) -> str | None:
    """The text SQLAlchemy's DateTime type stores on SQLite: naive UTC with microseconds."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


SQLITE_WRITE_EVENT = (
    f"INSERT INTO consent_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
SQLITE_UPSERT_SUBSCRIPTION = """
INSERT INTO subscriptions (subscriber_id, program_id, status, since, pending_since, confirmed_at,
                           language, last_event_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subscriber_id, program_id) DO UPDATE SET
  status = excluded.status, since = excluded.since, pending_since = excluded.pending_since,
  confirmed_at = excluded.confirmed_at,
  language = coalesce(excluded.language, subscriptions.language),
  last_event_id = excluded.last_event_id
"""
SQLITE_QUIET_OUTBOX = (
    f"UPDATE outbound_messages SET status = '{SUPPRESSED}', error_message = '{SUPPRESSED_NOTE}' "
    f"WHERE subscriber_id = ? AND status = '{QUEUED}' AND kind NOT IN ({_ALLOWED_AFTER_OPT_OUT})"
)
SQLITE_QUEUE_REPLY = (
    "INSERT INTO outbound_messages (event_id, subscriber_id, program_id, kind, language, "
    "to_number, from_number, body, status, attempts, next_attempt_at, created_at, updated_at) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{QUEUED}', 0, ?, ?, ?)"
)


class SqliteInboundStore(InboundStore):
    """The same steps inside BEGIN IMMEDIATE (SQLite has one writer at a time)."""

    def load(self, phone: str, message_sid: str, now: datetime) -> LoadedState:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(
            "INSERT INTO subscribers (phone, created_at, chain_seq) VALUES (?, ?, 0) "
            "ON CONFLICT (phone) DO NOTHING",
            (phone, _sqlite_time(now)),
        )
        subscriber_id, chain_seq, chain_head_hash, language = cursor.execute(
            "SELECT id, chain_seq, chain_head_hash, language FROM subscribers WHERE phone = ?",
            (phone,),
        ).fetchone()
        duplicate = (
            cursor.execute(
                "SELECT 1 FROM consent_events WHERE message_sid = ?", (message_sid,)
            ).fetchone()
            is not None
        )
        witness = cursor.execute(
            "SELECT id, event_hash FROM consent_events ORDER BY id DESC LIMIT 1"
        ).fetchone()
        subscriptions = cursor.execute(
            "SELECT program_id, status, pending_since, confirmed_at FROM subscriptions "
            "WHERE subscriber_id = ?",
            (subscriber_id,),
        ).fetchall()
        return LoadedState(
            subscriber_id=subscriber_id,
            chain_seq=chain_seq,
            chain_head_hash=chain_head_hash,
            language=language,
            duplicate=duplicate,
            subscriptions=_subscription_states(subscriptions),
            witness=tuple(witness) if witness else None,
            new_subscriber=False,
        )

    def abandon(self) -> None:
        self.connection.rollback()

    def write(self, plan: InboundPlan, state: LoadedState) -> tuple[int, list[int]]:
        cursor = self.connection.cursor()
        row = plan.event.row()
        occurred_at = _sqlite_time(row["occurred_at"])
        new_texts = self._new_texts(plan)
        if new_texts:
            cursor.executemany(
                "INSERT INTO ledger_texts (sha256, body, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sha256) DO NOTHING",
                [(sha, body, occurred_at) for sha, body in new_texts],
            )
        values = dict(row, occurred_at=occurred_at, changes=json.dumps(row["changes"]))
        values["possible_opt_out"] = int(values["possible_opt_out"])
        cursor.execute(SQLITE_WRITE_EVENT, [values[c] for c in EVENT_COLUMNS])
        event_id = cursor.lastrowid
        cursor.execute(
            "UPDATE subscribers SET chain_seq = ?, chain_head_hash = ?, language = ? WHERE id = ?",
            (row["seq"], plan.event.event_hash, plan.subscriber_language, state.subscriber_id),
        )
        for s in plan.subscriptions:
            cursor.execute(
                SQLITE_UPSERT_SUBSCRIPTION,
                (
                    state.subscriber_id,
                    s.program_id,
                    s.status,
                    _sqlite_time(s.since),
                    _sqlite_time(s.pending_since),
                    _sqlite_time(s.confirmed_at),
                    s.language,
                    event_id,
                ),
            )
        if plan.opted_out:
            cursor.execute(SQLITE_QUIET_OUTBOX, (state.subscriber_id,))
        outbound_ids = []
        for o in plan.outbound:
            cursor.execute(
                SQLITE_QUEUE_REPLY,
                (
                    event_id,
                    state.subscriber_id,
                    o.program_id,
                    o.kind,
                    o.language,
                    o.to_number,
                    o.from_number,
                    o.body,
                    occurred_at,
                    occurred_at,
                    occurred_at,
                ),
            )
            outbound_ids.append(cursor.lastrowid)
        cursor.execute("COMMIT")
        self.known_texts.update(sha for sha, _ in new_texts)
        return event_id, outbound_ids
