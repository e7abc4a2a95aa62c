"""postgresql: timestamptz, no overlapping bookings, full-text search (nothing on SQLite)

On PostgreSQL the instants become ``timestamptz``; booked appointments of one staff member (or
of nobody, for businesses without staff) may not overlap, by an exclusion constraint over the
staff and the appointment's time range (btree_gist, a trusted extension); and the knowledge base
gets a weighted ``tsvector`` (title A, tags B, body C) with a GIN index. SQLite keeps its
strings, BEGIN IMMEDIATE and its FTS5 index (migration 0001).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INSTANTS = {
    "business": ("updated_at",),
    "customers": ("created_at", "updated_at"),
    "customer_notes": ("created_at",),
    "appointments": ("starts_at", "ends_at", "created_at", "updated_at"),
    "kb_articles": ("updated_at",),
    "calls": ("started_at", "ended_at"),
    "turns": ("created_at",),
    "tool_calls": ("created_at",),
    "handoffs": ("created_at", "updated_at", "callback_after"),
    "admin_auth": ("updated_at",),
    "admin_sessions": ("created_at", "expires_at"),
    "audit_log": ("at",),
}

NO_OVERLAP = (
    "ALTER TABLE appointments ADD CONSTRAINT ex_appointments_no_overlap "
    "EXCLUDE USING gist (COALESCE(staff_id, 0) WITH =, tstzrange(starts_at, ends_at) WITH &&) "
    "WHERE (status = 'booked')"
)

SEARCH = (
    "ALTER TABLE kb_articles ADD COLUMN search tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', title), 'A') || "
    "setweight(to_tsvector('english', tags), 'B') || "
    "setweight(to_tsvector('english', body), 'C')) STORED"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in INSTANTS.items():
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE timestamptz USING NULLIF({c}, '')::timestamptz" for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute(NO_OVERLAP)
    op.execute(SEARCH)
    op.execute("CREATE INDEX ix_kb_articles_search ON kb_articles USING gin (search)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_kb_articles_search")
    op.execute("ALTER TABLE kb_articles DROP COLUMN search")
    op.execute("ALTER TABLE appointments DROP CONSTRAINT ex_appointments_no_overlap")
    for table, columns in INSTANTS.items():
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE varchar(40) "
            f"USING to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"')"
            for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
