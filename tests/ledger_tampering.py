"""Change the ledger behind the application's back, as an attacker with database access would.

Both backends refuse such changes with triggers (and foreign keys); tampering here
gets past them (PostgreSQL: `session_replication_role = replica`, which also
silences the foreign keys; SQLite: `PRAGMA foreign_keys=OFF`, and the triggers
are dropped for the statement and put back), so the tests can show that `ledger
verify` still notices.
"""

from __future__ import annotations

from sqlalchemy import text


def tamper(db, sql: str, **params) -> None:
    """Run `sql` with the append-only triggers out of the way."""
    if db.is_postgresql:
        with db.engine.begin() as connection:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(sql), params)
        return
    pooled = db.engine.raw_connection()  # sqlite3, autocommit: the PRAGMA needs no transaction
    connection = pooled.driver_connection
    try:
        connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute("BEGIN IMMEDIATE")
        triggers = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        for name, _ in triggers:
            connection.execute(f'DROP TRIGGER "{name}"')
        connection.execute(sql, params)
        for _, create in triggers:
            connection.execute(create)
        connection.execute("COMMIT")
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.execute("PRAGMA foreign_keys=ON")
        pooled.close()
