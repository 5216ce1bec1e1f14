"""Change the ledger behind the application's back, as an attacker with database access would.

Both backends refuse such changes with triggers; tampering here gets past them
(PostgreSQL: `session_replication_role = replica`; SQLite: the triggers are
dropped for the statement and put back), so the tests can show that
`ledger verify` still notices.
"""

from __future__ import annotations

from sqlalchemy import text


def tamper(db, sql: str, **params) -> None:
    """Run `sql` with the append-only triggers out of the way."""
    with db.engine.begin() as connection:
        if db.is_postgresql:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(sql), params)
            return
        triggers = connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        ).all()
        for name, _ in triggers:
            connection.execute(text(f'DROP TRIGGER "{name}"'))
        connection.execute(text(sql), params)
        for _, create in triggers:
            connection.exec_driver_sql(create)
