"""console answers first: a display time zone per staff member, and "Verify now" jobs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-16

`staff_users.time_zone` is the IANA zone a staff member reads the console's times
in (NULL: UTC). `ledger_verify_jobs` keeps each `ledger verify` started from the
dashboard and its progress, so every web process reads the same progress; the
unique `running` column lets only one run at a time.
"""

from alembic import op
import sqlalchemy as sa


revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
    op.create_table(
        "ledger_verify_jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("requested_by", sa.String(length=254), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("running", sa.Integer(), nullable=True),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("checkpoint_id", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("running"),
    )


def downgrade() -> None:
    op.drop_table("ledger_verify_jobs")
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("time_zone")
