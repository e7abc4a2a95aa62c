"""call slot pools: the browser demo's calls counted apart from phone lines

``call_slots.pool``: ``phone`` (Twilio calls, FRONTDESK_MAX_CALLS) or ``demo`` (browser demo
calls, FRONTDESK_DEMO_MAX_CALLS). Existing slots are phone lines.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_slots") as table:
        table.add_column(sa.Column("pool", sa.String(10), server_default="phone", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("call_slots") as table:
        table.drop_column("pool")
