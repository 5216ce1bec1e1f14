"""The inbound hot path on PostgreSQL: one statement to load a text's state, one to write it.

The one hand-tuned piece of the consent writes (`app.store.consent_sql` defines
the others once, with SQLAlchemy Core; `tests/test_consent_store_parity.py`
compares the rows both write). Every inbound text pays for this code, and the
ORM's unit of work cost several times more than the whole decision.

Two statements per text, each one round trip, on an autocommit connection (no
BEGIN or COMMIT round trips), and no lock held while Python decides:

1. `load` reads the sender's chain head, subscriptions and language, whether the
   MessageSid is known, and the ledger's newest event (the witness); for a new
   number it reserves the subscriber id, because the event's hash covers it.
2. `write` is one statement, so one transaction: data-modifying CTEs move the
   chain head *only if it is still where `load` saw it* (or create the
   subscriber), and, only then, insert the event, upsert the subscriptions,
   quieten the outbox after an opt-out, queue the replies and NOTIFY the sender.
   When another change of the same number got there first, nothing is written
   and the text is decided again on fresh state (optimistic concurrency, so texts
   from different numbers never wait for each other). A repeated MessageSid
   trips its unique index and changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql

from app.core.consent_plan import ConsentPlan, LoadedState, OutboxQuieting, Written
from app.store.consent_sql import (
    ALLOWED_AFTER_OPT_OUT,
    EVENT_COLUMNS,
    subscription_states,
)
from app.store.models import NOTIFY_CHANNEL, QUEUED, SUPPRESSED, SUPPRESSED_NOTE, ConsentEvent

_ALLOWED_AFTER_OPT_OUT = ", ".join(f"'{kind}'" for kind in ALLOWED_AFTER_OPT_OUT)

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
  SELECT %(subscriber_id)s, %(phone)s::varchar, %(written_at)s, %(seq)s, %(event_hash)s,
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
  UPDATE outbound_messages SET status = '{SUPPRESSED}', error_message = '{SUPPRESSED_NOTE}',
         updated_at = %(occurred_at)s
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


class PostgresHotStore:
    """One statement to read, one to write; autocommit, no lock held in between."""

    def __init__(self, connection, known_texts: set[str]) -> None:
        self.connection = connection
        self.known_texts = known_texts  # texts already in ledger_texts (per process)

    def abandon(self) -> None:
        """Nothing to undo: `load` wrote nothing and holds nothing."""

    def load(self, phone: str, message_sid: str | None, now: datetime) -> LoadedState:
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
            subscriptions=subscription_states(subscriptions),
            witness=(witness_id, witness_hash) if witness_id is not None else None,
            new_subscriber=subscriber_id is None,
            existed=subscriber_id is not None,
        )

    def write(self, plan: ConsentPlan, state: LoadedState) -> Written | None:
        from psycopg.types.json import Json, Jsonb

        row = plan.event.row()
        if plan.quieting is OutboxQuieting.ERASURE:
            raise ValueError("an erasure is not written on the inbound hot path")
        new_texts = [(s, b) for s, b in plan.texts.items() if s not in self.known_texts]
        if new_texts:
            self.connection.execute(
                PG_STORE_TEXTS,
                {
                    "now": plan.written_at,
                    "texts": Jsonb([{"sha256": s, "body": b} for s, b in new_texts]),
                },
            )
            self.known_texts.update(sha for sha, _ in new_texts)
        params = {
            **row,
            "changes": Json(row["changes"]),
            "phone": plan.phone,
            "written_at": plan.written_at,
            "expected_seq": state.chain_seq,
            "new_subscriber": state.new_subscriber,
            "subscriber_language": plan.subscriber_language,
            "opted_out": plan.quieting is OutboxQuieting.OPT_OUT,
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
        return Written(event_id, list(outbound_ids))
