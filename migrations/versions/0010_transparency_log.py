"""transparency log: the Merkle tree blocks that signed checkpoints are computed from

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Each row is the Merkle root of 1,024 consecutive ledger events (id order) and
the ids of the first and last of them. The rows are derived data, checked
against the signed checkpoints kept outside the database (LEDGER_CHECKPOINT_DIR);
the checkpoints themselves are never stored here.
"""

from alembic import op
import sqlalchemy as sa


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_tree_blocks",
        sa.Column("block", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("first_event_id", BigId, nullable=False),
        sa.Column("last_event_id", BigId, nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("block"),
    )


def downgrade() -> None:
    op.drop_table("ledger_tree_blocks")
