"""data lifecycle: the suppression list of erased numbers, and imported rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Retention and erasure only ever set the ledger's personal columns (body,
body_raw, personal_salt) to NULL, which the append-only triggers of 0001 already
allow and nothing else; they need no schema change. Erasure adds a suppression
entry (a keyed hash of the number, never the number); imports remember each
row's keyed content hash so the same file imported twice adds nothing.
"""

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("phone_hmac", sa.String(length=64), nullable=False),
        sa.Column("suppressed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", BigId, nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["consent_events.id"]),
        sa.PrimaryKeyConstraint("phone_hmac"),
    )
    op.create_table(
        "imported_rows",
        sa.Column("row_hmac", sa.String(length=64), nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("subscriber_id", BigId, nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["consent_events.id"]),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"]),
        sa.PrimaryKeyConstraint("row_hmac"),
    )
    with op.batch_alter_table("imported_rows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imported_rows_subscriber_id"), ["subscriber_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("imported_rows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imported_rows_subscriber_id"))
    op.drop_table("imported_rows")
    op.drop_table("suppressions")
