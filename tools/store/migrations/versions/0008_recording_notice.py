"""recording notice: what callers hear about recording, in the greeting

``business.recording_notice``: the sentence spoken right after the greeting whenever calls are
recorded ("This call may be recorded ..."); the admin may reword it but not remove it while
recording is on. Empty: the default wording.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("business") as table:
        table.add_column(
            sa.Column("recording_notice", sa.Text(), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("business") as table:
        table.drop_column("recording_notice")
