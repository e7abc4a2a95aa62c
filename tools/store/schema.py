"""Database schema (SQLAlchemy Core); the Alembic migrations in tools/store/migrations follow it.

Times are timezone-aware UTC instants (:class:`UtcTime`): ISO-8601 strings on SQLite,
``timestamptz`` on PostgreSQL, ISO-8601 strings to the code either way. Money is integer cents;
phone numbers are E.164.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


def iso_utc(value: datetime) -> str:
    """``value`` in UTC as ISO-8601, as the store writes it: whole seconds bare, else
    milliseconds (or microseconds when there are any)."""
    value = value.astimezone(UTC)
    if value.microsecond and value.microsecond % 1000 == 0:
        return value.isoformat(timespec="milliseconds")
    return value.isoformat()


class UtcTime(sa.TypeDecorator[str]):
    """An instant, handed to and from the code as a UTC ISO-8601 string (``datetime`` values
    are accepted too). SQLite keeps the string (ISO strings in one zone sort as time does);
    PostgreSQL keeps a ``timestamptz``, compared and ordered as time. A naive value is UTC."""

    impl = sa.String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.String(40))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        return iso_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if isinstance(value, datetime):
            return iso_utc(value if value.tzinfo else value.replace(tzinfo=UTC))
        return None if value is None else str(value)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

business = sa.Table(
    "business",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("address", sa.String(400), nullable=False, server_default=""),
    sa.Column("phone", sa.String(20), nullable=False, server_default=""),
    sa.Column("escalation_number", sa.String(20), nullable=False, server_default=""),
    # All numbers a transfer rings at once, comma-separated E.164 (the first is escalation_number).
    sa.Column("escalation_numbers", sa.Text, nullable=False, server_default=""),
    sa.Column("warm_transfer", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("greeting", sa.Text, nullable=False, server_default=""),
    sa.Column("persona", sa.Text, nullable=False, server_default=""),
    sa.Column("slot_minutes", sa.Integer, nullable=False, server_default="15"),
    sa.Column("booking_horizon_days", sa.Integer, nullable=False, server_default="60"),
    sa.Column("disabled_tools", sa.Text, nullable=False, server_default=""),  # comma-separated
    # Caller ID Twilio could not verify still proves who is calling (tools.registry.ToolContext).
    sa.Column("trust_unverified_caller_id", sa.Boolean, nullable=False, server_default=sa.false()),
    # Said in the greeting while calls are recorded ("": the default wording; migration 0008).
    sa.Column("recording_notice", sa.Text, nullable=False, server_default=""),
    # Outbound calls (migration 0009): reminders, calling hours (business time zone, "HH:MM"),
    # callbacks placed at the promised time, attempts per call, SMS confirmations.
    sa.Column("reminders_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reminder_lead_hours", sa.Integer, nullable=False, server_default="24"),
    sa.Column("calling_hours_start", sa.String(5), nullable=False, server_default="09:00"),
    sa.Column("calling_hours_end", sa.String(5), nullable=False, server_default="20:00"),
    sa.Column("auto_callbacks", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("outbound_max_attempts", sa.Integer, nullable=False, server_default="3"),
    sa.Column("sms_confirmations", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UtcTime, nullable=False),
)

opening_hours = sa.Table(
    "opening_hours",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("weekday", sa.Integer, nullable=False),  # 0 = Monday
    sa.Column("opens", sa.String(5), nullable=False),  # "09:00"
    sa.Column("closes", sa.String(5), nullable=False),  # "17:30"
    sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
)

holidays = sa.Table(
    "holidays",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("day", sa.String(10), nullable=False, unique=True),  # "2026-12-25"
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
)

services = sa.Table(
    "services",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("aliases", sa.Text, nullable=False, server_default=""),  # comma-separated
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
)

staff = sa.Table(
    "staff",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
)

staff_services = sa.Table(
    "staff_services",
    metadata,
    sa.Column("staff_id", sa.ForeignKey("staff.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("service_id", sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("phone", sa.String(20), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("email", sa.String(320), nullable=False, server_default=""),
    sa.Column("created_at", UtcTime, nullable=False),
    sa.Column("updated_at", UtcTime, nullable=False),
    # Asked not to be called (migration 0009): no outbound call of any kind is placed to them.
    sa.Column("do_not_call", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("do_not_call_at", UtcTime, nullable=True),
)

customer_notes = sa.Table(
    "customer_notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("call_sid", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", UtcTime, nullable=False),
)

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("service_id", sa.ForeignKey("services.id"), nullable=False),
    sa.Column("staff_id", sa.ForeignKey("staff.id"), nullable=True),
    sa.Column("starts_at", UtcTime, nullable=False),
    sa.Column("ends_at", UtcTime, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="booked"),
    sa.Column("call_sid", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", UtcTime, nullable=False),
    sa.Column("updated_at", UtcTime, nullable=False),
    # The name the caller gave when booking ("": the customer's own, from a proven caller).
    sa.Column("booked_name", sa.String(200), nullable=False, server_default=""),
    # What the reminder call came to: confirmed | cancelled | rescheduled | no_answer |
    # voicemail | failed ("" : no reminder call yet).
    sa.Column("reminder_outcome", sa.String(20), nullable=False, server_default=""),
    sa.Index("ix_appointments_starts_at", "starts_at"),
    sa.Index("ix_appointments_customer", "customer_id"),
)

kb_articles = sa.Table(
    "kb_articles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(300), nullable=False, unique=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("tags", sa.String(300), nullable=False, server_default=""),
    sa.Column("updated_at", UtcTime, nullable=False),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_sid", sa.String(64), nullable=False, unique=True),
    sa.Column("stream_sid", sa.String(64), nullable=False, server_default=""),
    sa.Column("source", sa.String(20), nullable=False, server_default="twilio"),
    sa.Column("from_number", sa.String(32), nullable=False, server_default=""),
    sa.Column("to_number", sa.String(32), nullable=False, server_default=""),
    sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=True),
    sa.Column("started_at", UtcTime, nullable=False),
    sa.Column("ended_at", UtcTime, nullable=True),
    sa.Column("outcome", sa.String(40), nullable=False, server_default="in_progress"),
    sa.Column("providers", sa.String(200), nullable=False, server_default=""),
    sa.Column("recording_path", sa.String(500), nullable=False, server_default=""),
    sa.Column("faults", sa.Text, nullable=False, server_default=""),
    # The process that runs the call (instances.id); its reaper closes it if that one dies.
    sa.Column("instance_id", sa.String(100), nullable=False, server_default=""),
    sa.Column("direction", sa.String(10), nullable=False, server_default="inbound"),  # | outbound
    sa.Index("ix_calls_started_at", "started_at"),
    sa.Index("ix_calls_instance_id", "instance_id"),
    sa.Index("ix_calls_ended_at", "ended_at"),  # the open calls (NULL), which the reaper reads
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("role", sa.String(10), nullable=False),  # caller | bot
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("timings", sa.JSON, nullable=False),  # named instants and durations, see records.py
    sa.Column("created_at", UtcTime, nullable=False),
    sa.UniqueConstraint("call_id", "idx", name="uq_turns_call_idx"),
)

tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("arguments", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("created_at", UtcTime, nullable=False),
)

handoffs = sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.ForeignKey("calls.id", ondelete="SET NULL"), nullable=True),
    sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=True),
    sa.Column("kind", sa.String(20), nullable=False),  # transfer | message
    # What started it: llm | dtmf | misunderstood | provider_failure | message
    sa.Column("trigger", sa.String(20), nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("target", sa.String(32), nullable=False, server_default=""),
    sa.Column("caller_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("caller_number", sa.String(32), nullable=False, server_default=""),
    # transfer: requested -> dialing -> answered | no_answer | busy | failed | caller_hung_up
    # | rest_error; message: message_taken | callback_requested
    sa.Column("outcome", sa.String(40), nullable=False, server_default="requested"),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),  # e.g. a Twilio error
    sa.Column("callback_after", UtcTime, nullable=True),  # promised callback (UTC ISO)
    sa.Column("created_at", UtcTime, nullable=False),
    sa.Column("updated_at", UtcTime, nullable=False),
)

# --- Admin console (migration 0004) ------------------------------------------------------------

caller_verifications = sa.Table(
    "caller_verifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_sid", sa.String(64), nullable=False, unique=True),  # one code per call
    sa.Column("phone", sa.String(20), nullable=False),  # where the code was sent
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),  # HMAC-SHA256(salt, code), hex
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", UtcTime, nullable=False),
    sa.Column("verified_at", UtcTime, nullable=True),
    sa.Column("created_at", UtcTime, nullable=False),
)

admin_auth = sa.Table(
    "admin_auth",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # one row: the admin password
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("updated_at", UtcTime, nullable=False),
)

admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the cookie value
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UtcTime, nullable=False),
    sa.Column("expires_at", UtcTime, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UtcTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),  # create | update | delete | login ...
    sa.Column("entity", sa.String(40), nullable=False),  # profile | hours | service | ...
    sa.Column("entity_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("changes", sa.JSON, nullable=False),  # {field: [before, after]}
    sa.Index("ix_audit_log_at", "at"),
)

# --- Shared state of several workers (migration 0006) -----------------------------------------
# Instants here are epoch seconds (floats), compared as numbers on both backends.

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),  # host-pid-random
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

call_slots = sa.Table(
    "call_slots",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # random, one per call taking a line
    sa.Column("instance_id", sa.String(100), nullable=False),
    sa.Column("taken_at", sa.Float, nullable=False),
    # phone (FRONTDESK_MAX_CALLS) | demo (FRONTDESK_DEMO_MAX_CALLS); migration 0010.
    sa.Column("pool", sa.String(10), nullable=False, server_default="phone"),
    sa.Index("ix_call_slots_instance_id", "instance_id"),
)

stream_nonces = sa.Table(
    "stream_nonces",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),  # a used media stream token's nonce
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_stream_nonces_expires_at", "expires_at"),
)

rate_events = sa.Table(
    "rate_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("scope", sa.String(20), nullable=False),  # demo_call | admin_login_failure
    sa.Column("key", sa.String(100), nullable=False),  # the client (telephony.ratelimit)
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_rate_events_scope_key_at", "scope", "key", "at"),
)


# --- Outbound calls (migration 0009) -------------------------------------------------------------
outbound_calls = sa.Table(
    "outbound_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("purpose", sa.String(20), nullable=False),  # reminder | callback | custom
    sa.Column("to_phone", sa.String(20), nullable=False),  # E.164
    sa.Column("customer_id", sa.ForeignKey("customers.id", ondelete="SET NULL"), nullable=True),
    sa.Column(
        "appointment_id", sa.ForeignKey("appointments.id", ondelete="SET NULL"), nullable=True
    ),
    # The message (take_message) whose callback this is.
    sa.Column("handoff_id", sa.ForeignKey("handoffs.id", ondelete="SET NULL"), nullable=True),
    sa.Column("message", sa.Text, nullable=False, server_default=""),  # custom text / reason
    # scheduled -> dialing -> in_progress -> done | given_up | cancelled (by admin or DNC)
    sa.Column("status", sa.String(20), nullable=False, server_default="scheduled"),
    # confirmed | cancelled | rescheduled | no_answer | busy | voicemail | failed | completed |
    # opted_out ("" while not finished)
    sa.Column("outcome", sa.String(20), nullable=False, server_default=""),
    sa.Column("due_at", UtcTime, nullable=False),  # next attempt not before this
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
    sa.Column("lease_owner", sa.String(100), nullable=False, server_default=""),  # instances.id
    sa.Column("lease_until", UtcTime, nullable=True),
    sa.Column("call_sid", sa.String(64), nullable=False, server_default=""),  # latest attempt
    # Twilio's AnsweredBy for the latest attempt (human | machine_end_beep | ... | unknown; "":
    # not known yet): the agent speaks only once this says a person answered.
    sa.Column("answered_by", sa.String(30), nullable=False, server_default=""),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.String(20), nullable=False, server_default=""),  # reminder|...
    sa.Column("dedupe_key", sa.String(80), nullable=True, unique=True),  # "reminder:<appt id>"
    sa.Column("created_at", UtcTime, nullable=False),
    sa.Column("updated_at", UtcTime, nullable=False),
    sa.Index("ix_outbound_calls_due", "status", "due_at"),
    sa.Index("ix_outbound_calls_call_sid", "call_sid"),
)
