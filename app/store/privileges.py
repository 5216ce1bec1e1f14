"""Least privilege on PostgreSQL: what the app's own role may do, table by table.

The owner of a table can disable its triggers (``ALTER TABLE … DISABLE
TRIGGER``), and then delete and rewrite ledger rows at will (issue 12, finding
3). So the web, worker and clock processes connect as a role that owns
nothing; `db upgrade` connects as the owner (``MIGRATION_DATABASE_URL``) and,
when ``APP_DATABASE_ROLE`` names the app's role, grants it exactly this:

- the ledger (``consent_events``, ``ledger_texts``, ``ledger_checkpoints``) and the
  access audit log (``staff_audit``): SELECT and INSERT, nothing else; on
  ``consent_events`` also UPDATE of the three personal columns, which the
  append-only trigger lets only be set to NULL (retention and erasure);
- the consent state (``subscribers``, ``subscriptions``, ``suppressions``): SELECT,
  INSERT and UPDATE of the columns the service changes; never DELETE;
- operational tables (outbox, receipts, pacing, heartbeats, staff accounts and
  sessions, API tokens, import fingerprints): what the service does to them,
  DELETE only where retention, erasure or a clean stop removes rows;
- USAGE on the schema and its sequences; SELECT on ``alembic_version``.

No TRUNCATE, REFERENCES, TRIGGER or ALTER anywhere: without ownership the role
can neither disable a trigger nor drop one, and ``session_replication_role`` is
a superuser's setting. The statements are generated here, printed by
``flask --app app db grants ROLE`` and listed in docs/deployment.md.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, text

# table -> privileges. "UPDATE (a, b)" is a column privilege.
APP_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "consent_events": ("SELECT", "INSERT", "UPDATE (body, body_raw, personal_salt)"),
    "ledger_texts": ("SELECT", "INSERT"),
    "ledger_checkpoints": ("SELECT", "INSERT"),
    "staff_audit": ("SELECT", "INSERT"),
    "subscribers": (
        "SELECT",
        "INSERT",
        "UPDATE (phone, language, chain_seq, chain_head_hash)",
    ),
    "subscriptions": (
        "SELECT",
        "INSERT",
        "UPDATE (status, since, pending_since, confirmed_at, language, last_event_id)",
    ),
    "suppressions": ("SELECT", "INSERT", "UPDATE (suppressed_at, event_id)"),
    "imported_rows": ("SELECT", "INSERT", "DELETE"),
    "outbound_messages": ("SELECT", "INSERT", "UPDATE"),
    "delivery_receipts": ("SELECT", "INSERT", "DELETE"),
    "sender_pace": ("SELECT", "INSERT", "UPDATE"),
    "sender_heartbeats": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "api_tokens": ("SELECT", "INSERT", "UPDATE"),
    "staff_users": ("SELECT", "INSERT", "UPDATE"),
    "staff_sessions": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "staff_enrolments": ("SELECT", "INSERT", "UPDATE"),
    "key_records": ("SELECT", "INSERT", "UPDATE"),
    "ledger_tree_blocks": ("SELECT", "INSERT"),
    "ledger_verify_jobs": ("SELECT", "INSERT", "UPDATE"),
    "recipient_profiles": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "send_batches": ("SELECT", "INSERT"),
    "send_decisions": ("SELECT", "INSERT", "UPDATE (to_number)"),
    "alembic_version": ("SELECT",),
}


def grant_statements(role: str, quote: Callable[[str], str] | None = None) -> list[str]:
    """The SQL that gives `role` exactly `APP_PRIVILEGES` (after taking away anything else)."""
    quote = quote or _quote
    who = quote(role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {who};",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {who};",
        f"GRANT USAGE ON SCHEMA public TO {who};",
    ]
    for table, privileges in APP_PRIVILEGES.items():
        statements.append(f"GRANT {', '.join(privileges)} ON {quote(table)} TO {who};")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who};")
    return statements


def _quote(identifier: str) -> str:
    """A PostgreSQL identifier, quoted only when it must be (as `db grants` prints it)."""
    if identifier.isidentifier() and identifier == identifier.lower() and identifier.isascii():
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


class PrivilegeError(RuntimeError):
    """The app role cannot be given least privilege as configured."""


def apply_grants(connection: Connection, role: str) -> None:
    """Grant `role` its privileges, connected as the tables' owner (PostgreSQL only).

    Refuses when `role` is the connected role or owns any table of the schema: a
    role that owns a ledger table can disable its triggers, whatever it is granted.
    """
    current = connection.execute(text("SELECT current_user")).scalar_one()
    if role == current:
        raise PrivilegeError(
            f"APP_DATABASE_ROLE ({role}) is the role that owns the tables; the app must "
            "connect as another role (see docs/deployment.md)"
        )
    owned = connection.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = :role"
        ),
        {"role": role},
    ).scalars()
    owned = sorted(owned)
    if owned:
        raise PrivilegeError(f"APP_DATABASE_ROLE ({role}) owns {', '.join(owned)}")
    quote = connection.dialect.identifier_preparer.quote
    for statement in grant_statements(role, quote):
        connection.execute(text(statement))
