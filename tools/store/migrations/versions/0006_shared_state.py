"""shared state: instances, call slots, used stream-token nonces, rate-limit events

Several worker processes (on one machine or several) share what one process used to keep in
memory: which processes are alive (``instances``, with a heartbeat), the lines taken across all
of them (``call_slots``), the stream tokens already used (``stream_nonces``) and the per-client
rate limits (``rate_events``). Calls record the instance that runs them, so a dead instance's
open calls can be closed. Same on both backends.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("instance_id", sa.String(length=100), server_default="", nullable=False)
        )
        batch.create_index("ix_calls_instance_id", ["instance_id"])
        batch.create_index("ix_calls_ended_at", ["ended_at"])
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_table(
        "call_slots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=100), nullable=False),
        sa.Column("taken_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_slots")),
    )
    op.create_index("ix_call_slots_instance_id", "call_slots", ["instance_id"])
    op.create_table(
        "stream_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_stream_nonces")),
    )
    op.create_index("ix_stream_nonces_expires_at", "stream_nonces", ["expires_at"])
    op.create_table(
        "rate_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_events")),
    )
    op.create_index("ix_rate_events_scope_key_at", "rate_events", ["scope", "key", "at"])


def downgrade() -> None:
    op.drop_index("ix_rate_events_scope_key_at", table_name="rate_events")
    op.drop_table("rate_events")
    op.drop_index("ix_stream_nonces_expires_at", table_name="stream_nonces")
    op.drop_table("stream_nonces")
    op.drop_index("ix_call_slots_instance_id", table_name="call_slots")
    op.drop_table("call_slots")
    op.drop_table("instances")
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_ended_at")
        batch.drop_index("ix_calls_instance_id")
        batch.drop_column("instance_id")
