"""outbox leases: a claimed mail or webhook delivery is ``sending`` until ``lease_until``

Revision ID: c3d4e5f6a7b8
Revises: b7c1d2e3f4a5
Create Date: 2026-12-03 02:40:00

Deliveries claim a few rows (status ``sending`` with a lease), commit, talk to the peer, then
record each outcome in its own transaction: a crash re-sends at most the message in flight,
and rows of a dead worker are claimed again once their lease is over. What receivers
answered is no longer kept (an answer may come from where a redirect pointed): the column is
dropped, with what it held.
"""

import sqlalchemy as sa
from alembic import op

from datapass.extensions import UTCDateTime

revision = "c3d4e5f6a7b8"
down_revision = "b7c1d2e3f4a5"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox_mails") as batch:
        batch.add_column(sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.drop_column("response_excerpt")


def downgrade():
    # a row being sent goes back to the queue (its lease dies with the column)
    op.execute("UPDATE outbox_mails SET status = 'pending' WHERE status = 'sending'")
    op.execute("UPDATE webhook_deliveries SET status = 'pending' WHERE status = 'sending'")
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.add_column(sa.Column("response_excerpt", sa.Text(), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("lease_until")
    with op.batch_alter_table("outbox_mails") as batch:
        batch.drop_column("lease_until")
