"""Fencing tokens and process heartbeats for claims, inbound dead letters in their own table,
per-field change times, marked timeline entries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

from syncd.store.base import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('process_heartbeat',
    sa.Column('process', sa.String(length=128), nullable=False),
    sa.Column('started_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('seen_at', UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('process')
    )
    op.create_table('inbound_dead_letter',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('connector', sa.String(length=64), nullable=False),
    sa.Column('remote_id', sa.String(length=128), nullable=False),
    sa.Column('remote_key', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('dead', 'retrying', 'closed')", name='ck_inbound_dead_letter_state'),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('inbound_dead_letter', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_dead_letter_remote', ['connector', 'remote_id'], unique=False)
        batch_op.create_index('ix_inbound_dead_letter_state', ['state'], unique=False)

    # Inbound dead letters were outbox rows of operation "inbound": move them over.
    op.execute("""
        INSERT INTO inbound_dead_letter (connector, remote_id, remote_key, version, incident_id,
                                         reason, state, attempts, created_at, updated_at)
        SELECT connector, COALESCE(remote_id, ''), COALESCE(remote_id, ''), NULL, incident_id,
               COALESCE(last_error, ''),
               CASE state WHEN 'dead' THEN 'dead' WHEN 'pending' THEN 'retrying' ELSE 'closed' END,
               attempts, created_at, updated_at
        FROM outbox WHERE operation = 'inbound'""")
    op.execute("DELETE FROM outbox WHERE operation = 'inbound'")

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('field_changed_at', sa.JSON(), nullable=False,
                                      server_default='{}'))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by_process', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('claim_token', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('first_attempt_at', UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('incident_id', existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_index(batch_op.f('ix_outbox_remote'))
        batch_op.drop_column('remote_id')
        batch_op.drop_constraint('ck_outbox_operation', type_='check')
        batch_op.create_check_constraint('ck_outbox_operation',
                                         "operation IN ('create', 'update', 'comment')")

    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('marked', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))

    # The defaults above only filled existing rows; the models set these values themselves.
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.alter_column('field_changed_at', server_default=None)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('claim_token', server_default=None)
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.alter_column('marked', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.drop_column('marked')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('ck_outbox_operation', type_='check')
        batch_op.create_check_constraint('ck_outbox_operation',
                                         "operation IN ('create', 'update', 'comment', 'inbound')")
        batch_op.add_column(sa.Column('remote_id', sa.VARCHAR(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_remote'), ['connector', 'remote_id'], unique=False)
        batch_op.alter_column('incident_id', existing_type=sa.INTEGER(), nullable=True)
        batch_op.drop_column('first_attempt_at')
        batch_op.drop_column('claim_token')
        batch_op.drop_column('claimed_by_process')

    op.execute("""
        INSERT INTO outbox (incident_id, connector, operation, fields, remote_id, state, attempts,
                            next_attempt_at, last_error, created_at, updated_at)
        SELECT incident_id, connector, 'inbound', '{}', remote_id,
               CASE state WHEN 'retrying' THEN 'pending' WHEN 'closed' THEN 'done' ELSE 'dead' END,
               attempts, updated_at, reason, created_at, updated_at
        FROM inbound_dead_letter""")

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('field_changed_at')

    with op.batch_alter_table('inbound_dead_letter', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_dead_letter_state')
        batch_op.drop_index('ix_inbound_dead_letter_remote')

    op.drop_table('inbound_dead_letter')
    op.drop_table('process_heartbeat')
