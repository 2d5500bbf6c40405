"""mail bodies shared by the outbox rows of one message's recipients

Revision ID: b7c1d2e3f4a5
Revises: b7c1e2f4a9d3
Create Date: 2026-11-28 20:20:00

A reminder goes to three people: its text and HTML were stored three times. They move to
``mail_bodies``; each outbox row points at its message's body. Existing rows keep their own
body (one body per row, same id).
"""

import sqlalchemy as sa
from alembic import op

revision = "b7c1d2e3f4a5"
down_revision = "b7c1e2f4a9d3"
branch_labels = None
depends_on = None


def _restart_sequence() -> None:
    """PostgreSQL: the sequence continues after the ids copied explicitly."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('mail_bodies', 'id'), "
            "coalesce(max(id), 0) + 1, false) FROM mail_bodies"
        )


def upgrade():
    op.create_table(
        "mail_bodies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_bodies")),
    )
    op.execute(
        "INSERT INTO mail_bodies (id, body_text, body_html) "
        "SELECT id, body_text, body_html FROM outbox_mails"
    )
    _restart_sequence()
    with op.batch_alter_table("outbox_mails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_id", sa.Integer(), nullable=True))
    op.execute("UPDATE outbox_mails SET body_id = id")
    with op.batch_alter_table("outbox_mails", schema=None) as batch_op:
        batch_op.alter_column("body_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_mails_body_id_mail_bodies"), "mail_bodies", ["body_id"], ["id"]
        )
        batch_op.drop_column("body_text")
        batch_op.drop_column("body_html")


def downgrade():
    with op.batch_alter_table("outbox_mails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("body_html", sa.Text(), nullable=True))
    op.execute(
        "UPDATE outbox_mails SET "
        "body_text = (SELECT body_text FROM mail_bodies WHERE mail_bodies.id = body_id), "
        "body_html = (SELECT body_html FROM mail_bodies WHERE mail_bodies.id = body_id)"
    )
    with op.batch_alter_table("outbox_mails", schema=None) as batch_op:
        batch_op.alter_column("body_text", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("body_html", existing_type=sa.Text(), nullable=False)
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_mails_body_id_mail_bodies"), type_="foreignkey"
        )
        batch_op.drop_column("body_id")
    op.drop_table("mail_bodies")
