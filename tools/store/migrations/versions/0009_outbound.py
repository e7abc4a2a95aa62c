"""outbound calls: reminders, callbacks, do-not-call, SMS confirmations

``outbound_calls``: one row per call Frontdesk is to place (a reminder, a callback, a custom
call), claimed by one worker at a time with a lease (``lease_owner``/``lease_until``), retried
with backoff up to ``max_attempts``; ``dedupe_key`` (unique) keeps a reminder from being
scheduled twice by several workers. ``customers.do_not_call``: the customer asked not to be
called; every outbound call honours it. ``appointments.reminder_outcome``: what the reminder
call came to (confirmed, cancelled, rescheduled, no_answer, voicemail, failed). ``calls.direction``:
inbound or outbound. ``business``: reminders on/off and how long before, the calling hours,
whether callbacks are placed automatically, retries, SMS confirmations on/off.

Revision ID: 0009
Revises: 0008
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
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
            sa.Column("reminders_enabled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        table.add_column(
            sa.Column("reminder_lead_hours", sa.Integer(), server_default="24", nullable=False)
        )
        table.add_column(
            sa.Column(
                "calling_hours_start", sa.String(length=5), server_default="09:00", nullable=False
            )
        )
        table.add_column(
            sa.Column(
                "calling_hours_end", sa.String(length=5), server_default="20:00", nullable=False
            )
        )
        table.add_column(
            sa.Column("auto_callbacks", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        table.add_column(
            sa.Column("outbound_max_attempts", sa.Integer(), server_default="3", nullable=False)
        )
        table.add_column(
            sa.Column("sms_confirmations", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("customers") as table:
        table.add_column(
            sa.Column("do_not_call", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        table.add_column(sa.Column("do_not_call_at", _instant(), nullable=True))
    with op.batch_alter_table("appointments") as table:
        table.add_column(
            sa.Column("reminder_outcome", sa.String(length=20), server_default="", nullable=False)
        )
    with op.batch_alter_table("calls") as table:
        table.add_column(
            sa.Column("direction", sa.String(length=10), server_default="inbound", nullable=False)
        )
    op.create_table(
        "outbound_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("to_phone", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.Column("handoff_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="scheduled", nullable=False),
        sa.Column("outcome", sa.String(length=20), server_default="", nullable=False),
        sa.Column("due_at", _instant(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="3", nullable=False),
        sa.Column("lease_owner", sa.String(length=100), server_default="", nullable=False),
        sa.Column("lease_until", _instant(), nullable=True),
        sa.Column("call_sid", sa.String(length=64), server_default="", nullable=False),
        sa.Column("answered_by", sa.String(length=30), server_default="", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=20), server_default="", nullable=False),
        sa.Column("dedupe_key", sa.String(length=80), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_outbound_calls_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_outbound_calls_appointment_id_appointments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.id"],
            name=op.f("fk_outbound_calls_handoff_id_handoffs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_calls")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_outbound_calls_dedupe_key")),
    )
    op.create_index("ix_outbound_calls_due", "outbound_calls", ["status", "due_at"])
    op.create_index("ix_outbound_calls_call_sid", "outbound_calls", ["call_sid"])


def downgrade() -> None:
    op.drop_index("ix_outbound_calls_call_sid", table_name="outbound_calls")
    op.drop_index("ix_outbound_calls_due", table_name="outbound_calls")
    op.drop_table("outbound_calls")
    with op.batch_alter_table("calls") as table:
        table.drop_column("direction")
    with op.batch_alter_table("appointments") as table:
        table.drop_column("reminder_outcome")
    with op.batch_alter_table("customers") as table:
        table.drop_column("do_not_call_at")
        table.drop_column("do_not_call")
    with op.batch_alter_table("business") as table:
        for column in (
            "sms_confirmations",
            "outbound_max_attempts",
            "auto_callbacks",
            "calling_hours_end",
            "calling_hours_start",
            "reminder_lead_hours",
            "reminders_enabled",
        ):
            table.drop_column(column)
