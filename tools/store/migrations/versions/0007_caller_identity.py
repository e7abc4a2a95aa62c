"""caller identity: trusting unverified caller ID, names given at booking, SMS codes

``business.trust_unverified_caller_id`` (off): whether a caller ID Twilio could not verify
(STIR/SHAKEN) still proves who is calling. ``appointments.booked_name``: the name a caller gave
when booking, kept on the appointment rather than written over the customer record.
``caller_verifications``: one SMS code per call (hashed, with its expiry and the tries used).

Revision ID: 0007
Revises: 0006
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _instant() -> sa.types.TypeEngine[Any]:
    """How the store keeps instants here: timestamptz on PostgreSQL, ISO strings on SQLite."""
    if op.get_bind().dialect.name == "postgresql":
        return sa.TIMESTAMP(timezone=True)
    return sa.String(length=40)


def upgrade() -> None:
    with op.batch_alter_table("business") as table:
        table.add_column(
            sa.Column(
                "trust_unverified_caller_id",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )
    with op.batch_alter_table("appointments") as table:
        table.add_column(
            sa.Column("booked_name", sa.String(length=200), server_default="", nullable=False)
        )
    op.create_table(
        "caller_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_at", _instant(), nullable=False),
        sa.Column("verified_at", _instant(), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_verifications")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_caller_verifications_call_sid")),
    )


def downgrade() -> None:
    op.drop_table("caller_verifications")
    with op.batch_alter_table("appointments") as table:
        table.drop_column("booked_name")
    with op.batch_alter_table("business") as table:
        table.drop_column("trust_unverified_caller_id")
