"""escalation: several escalation numbers, and what happened to each handoff

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("business") as batch:
        batch.add_column(
            sa.Column("escalation_numbers", sa.Text(), server_default="", nullable=False)
        )
    # Existing profiles keep their one number as the list.
    op.execute("UPDATE business SET escalation_numbers = escalation_number")
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(
            sa.Column("trigger", sa.String(length=20), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("detail", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("callback_after", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("callback_after")
        batch.drop_column("detail")
        batch.drop_column("trigger")
    with op.batch_alter_table("business") as batch:
        batch.drop_column("escalation_numbers")
