"""job heartbeats: each scheduled job's last run (start, end, outcome, duration), and the
scheduler's own sign of life (row ``_scheduler``)

Revision ID: e1f2a3b4c5d6
Revises: c3d4e5f6a7b8
Create Date: 2026-12-03 07:10:00
"""

import sqlalchemy as sa
from alembic import op

from datapass.extensions import UTCDateTime

revision = "e1f2a3b4c5d6"
down_revision = "c3d4e5f6a7b8"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "job_heartbeats",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('running', 'ok', 'error')", name=op.f("ck_job_heartbeats_outcome_known")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_heartbeats")),
    )


def downgrade():
    op.drop_table("job_heartbeats")
