"""Change the ledger behind the application's back, as an attacker with database access would.

Both backends refuse such changes with triggers (and foreign keys); tampering here
gets past them (PostgreSQL: `session_replication_role = replica`, which also
silences the foreign keys; SQLite: `PRAGMA foreign_keys=OFF`, and the triggers
are dropped for the statement and put back), so the tests can show that `ledger
verify` still notices.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import text

from app.core import ledger_hashing as lh
from app.store.db import utcnow
from app.store.models import ConsentEvent, LedgerCheckpoint


@contextmanager
def triggers_off(db):
    """A connection in one transaction with the append-only triggers out of the way."""
    if db.is_postgresql:
        with db.engine.begin() as connection:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield connection
        return
    with db.engine.connect() as connection:
        # Before the transaction begins: SQLite ignores this PRAGMA inside one.
        driver = connection.connection.driver_connection
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                triggers = connection.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
                ).all()
                for name, _ in triggers:
                    connection.execute(text(f'DROP TRIGGER "{name}"'))
                yield connection
                for _, create in triggers:
                    connection.exec_driver_sql(create)
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def tamper(db, sql: str, **params) -> None:
    """Run `sql` with the append-only triggers out of the way."""
    with triggers_off(db) as connection:
        connection.execute(text(sql), params)


def rewrite_history_without(db, event_id: int) -> None:
    """Delete one event and rewrite everything after it so that the ledger verifies again.

    What the database owner can do: with the triggers off, delete the event (and the
    reply it caused), renumber and re-link its subscriber's later events, re-point
    every witness at the rewritten hashes, recompute every later hash, fix the chain
    heads, and record a fresh successful `ledger verify` in `ledger_checkpoints`.
    """
    table = ConsentEvent.__table__
    with triggers_off(db) as connection:
        rows = [
            dict(row._mapping)
            for row in connection.execute(table.select().order_by(table.c.id)).all()
        ]
        connection.execute(
            text("DELETE FROM outbound_messages WHERE event_id = :id"), {"id": event_id}
        )
        connection.execute(table.delete().where(table.c.id == event_id))
        hashes: dict[int, str] = {}
        heads: dict[int, tuple[int, str]] = {}
        previous_id = None
        for row in rows:
            if row["id"] == event_id:
                continue
            if row["id"] > event_id:
                fields = {name: row[name] for name in lh.HASHED_FIELDS}
                seq, head = heads.get(row["subscriber_id"], (0, lh.GENESIS_HASH))
                fields["seq"], fields["prev_hash"] = seq + 1, head
                if fields["witness_id"] == event_id:
                    fields["witness_id"] = previous_id
                if fields["witness_id"] in hashes:
                    fields["witness_hash"] = hashes[fields["witness_id"]]
                row.update(fields, event_hash=lh.event_hash(fields))
                connection.execute(
                    table.update()
                    .where(table.c.id == row["id"])
                    .values(**fields, event_hash=row["event_hash"])
                )
            hashes[row["id"]] = row["event_hash"]
            heads[row["subscriber_id"]] = (row["seq"], row["event_hash"])
            previous_id = row["id"]
        subscribers = text(
            "UPDATE subscribers SET chain_seq = :seq, chain_head_hash = :head WHERE id = :id"
        )
        for subscriber_id, (seq, head) in heads.items():
            connection.execute(subscribers, {"seq": seq, "head": head, "id": subscriber_id})
        last_id = max(hashes)
        connection.execute(
            LedgerCheckpoint.__table__.insert().values(
                checked_at=utcnow(),
                ok=True,
                event_count=len(hashes),
                last_event_id=last_id,
                last_event_hash=hashes[last_id],
                message="ledger intact",
            )
        )
