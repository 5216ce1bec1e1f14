"""operations: sender heartbeats for /readyz and /metrics

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Each running sender worker keeps one row here, refreshed every few seconds.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sender_heartbeats',
    sa.Column('worker_id', sa.String(length=100), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('worker_id')
    )
    with op.batch_alter_table('sender_heartbeats', schema=None) as batch_op:
        batch_op.create_index('ix_sender_heartbeats_beat_at', ['beat_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sender_heartbeats', schema=None) as batch_op:
        batch_op.drop_index('ix_sender_heartbeats_beat_at')
    op.drop_table('sender_heartbeats')
