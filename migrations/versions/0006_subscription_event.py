"""consent state bound to the ledger: every subscription names the event that set it

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03

`subscriptions.last_event_id` becomes required and a foreign key to
`consent_events`: the consent decision at send time, in the API and in the
console is taken only when the row agrees with that event (issue 12). Every
code path has always set it; a row without one (there should be none) is given
the newest event of its chain that records a change of its program, and the
migration stops, naming the row, if there is no such event.
"""

import json

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, subscriber_id, program_id FROM subscriptions WHERE last_event_id IS NULL"
        )
    ).all()
    for row_id, subscriber_id, program_id in rows:
        events = bind.execute(
            sa.text(
                "SELECT id, changes FROM consent_events WHERE subscriber_id = :s ORDER BY seq DESC"
            ),
            {"s": subscriber_id},
        ).all()
        found = None
        for event_id, changes in events:
            if isinstance(changes, str):
                changes = json.loads(changes)
            if any(change.get("program") == program_id for change in changes or []):
                found = event_id
                break
        if found is None:
            raise RuntimeError(
                f"subscription {row_id} names no ledger event and its chain records no change "
                f"of program {program_id!r}: fix it by hand before migrating"
            )
        bind.execute(
            sa.text("UPDATE subscriptions SET last_event_id = :e WHERE id = :id"),
            {"e": found, "id": row_id},
        )


def upgrade() -> None:
    _backfill()
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.alter_column("last_event_id", existing_type=BigId, nullable=False)
        batch_op.create_foreign_key(
            "fk_subscriptions_last_event_id", "consent_events", ["last_event_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_subscriptions_last_event_id", type_="foreignkey")
        batch_op.alter_column("last_event_id", existing_type=BigId, nullable=True)
