"""usage: a token's last calls in usage_recent instead of an index over every event

Revision ID: b7c1e2f4a9d3
Revises: a006d689e439
Create Date: 2026-11-28 20:10:00.000000

"""
from alembic import op
import sqlalchemy as sa

import datapass.extensions


# revision identifiers, used by Alembic.
revision = 'b7c1e2f4a9d3'
down_revision = 'a006d689e439'
branch_labels = None
depends_on = None

RECENT_CALLS = 10


def upgrade():
    op.create_table('usage_recent',
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', datapass.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('endpoint', sa.String(length=200), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('caller_ip', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('token_id', 'occurred_at', 'provider_id', 'event_id', name=op.f('pk_usage_recent'))
    )
    # Each token's newest events, read while the (token_id, occurred_at) index still exists.
    op.execute(
        "INSERT INTO usage_recent (token_id, occurred_at, provider_id, event_id, endpoint, "
        "status, latency_ms, caller_ip) "
        "SELECT token_id, occurred_at, provider_id, event_id, endpoint, status, latency_ms, "
        "caller_ip FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY token_id "
        "ORDER BY occurred_at DESC, provider_id DESC, event_id DESC) AS n FROM usage_events) "
        f"AS ranked WHERE n <= {RECENT_CALLS}"
    )
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_events_token_time')


def downgrade():
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index('ix_usage_events_token_time', ['token_id', 'occurred_at'], unique=False)

    op.drop_table('usage_recent')
