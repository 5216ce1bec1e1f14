"""sending rules: recipient profiles, send batches, send decisions, program messages in the outbox

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14

Program messages sent through `POST /api/v1/messages` go through the same outbox as
replies; each keeps the sending rules' decision (send, or deferred until
`not_before`, with its reason) and its batch. Every decision is kept in
`send_decisions` with its rule, citation and rule-set version. (The `messages:send`
scope is one of the API token scopes of migration 0008.)
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('recipient_profiles',
    sa.Column('subscriber_id', BigId, nullable=False),
    sa.Column('state', sa.String(length=2), nullable=True),
    sa.Column('zip_code', sa.String(length=5), nullable=True),
    sa.Column('location_source', sa.String(length=24), nullable=True),
    sa.Column('purchased_on', sa.Date(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ),
    sa.PrimaryKeyConstraint('subscriber_id')
    )
    op.create_table('send_batches',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('api_token_id', BigId, nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('program_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('recipients', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['api_token_id'], ['api_tokens.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('api_token_id', 'idempotency_key'),
    sa.UniqueConstraint('public_id')
    )
    op.create_table('send_decisions',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('batch_id', BigId, nullable=True),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('subscriber_id', BigId, nullable=True),
    sa.Column('to_number', sa.String(length=64), nullable=True),
    sa.Column('program_id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=120), nullable=True),
    sa.Column('rule_id', sa.String(length=64), nullable=True),
    sa.Column('citation', sa.Text(), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('local_time', sa.String(length=40), nullable=True),
    sa.Column('jurisdiction', sa.String(length=200), nullable=True),
    sa.Column('ruleset', sa.String(length=32), nullable=False),
    sa.Column('outbound_id', BigId, nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['send_batches.id'], ),
    sa.ForeignKeyConstraint(['outbound_id'], ['outbound_messages.id'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('send_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_send_decisions_batch_position', ['batch_id', 'position'], unique=False)
        batch_op.create_index('ix_send_decisions_decided_at', ['decided_at', 'decision'], unique=False)
        batch_op.create_index('ix_send_decisions_outbound_id', ['outbound_id'], unique=False)
        batch_op.create_index('ix_send_decisions_subscriber', ['subscriber_id', 'id'], unique=False)
    with op.batch_alter_table('outbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('batch_id', BigId, nullable=True))
        batch_op.create_index('ix_outbound_messages_batch_id', ['batch_id'], unique=False)
        batch_op.create_foreign_key(
            'fk_outbound_messages_batch_id', 'send_batches', ['batch_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('outbound_messages', schema=None) as batch_op:
        batch_op.drop_constraint('fk_outbound_messages_batch_id', type_='foreignkey')
        batch_op.drop_index('ix_outbound_messages_batch_id')
        batch_op.drop_column('batch_id')
        batch_op.drop_column('reason')
        batch_op.drop_column('not_before')
        batch_op.drop_column('decision')
    with op.batch_alter_table('send_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_send_decisions_subscriber')
        batch_op.drop_index('ix_send_decisions_outbound_id')
        batch_op.drop_index('ix_send_decisions_decided_at')
        batch_op.drop_index('ix_send_decisions_batch_position')
    op.drop_table('send_decisions')
    op.drop_table('send_batches')
    op.drop_table('recipient_profiles')
