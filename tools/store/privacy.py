"""Deleting personal data: transcripts and recordings past their retention, and everything kept
about one caller on request (the right to be forgotten).

Both work inside the caller's write transaction and return the recording files to delete, so
the rows and the files go together: the caller deletes the files once the transaction commits
(a file left behind by a crash is unreferenced, not a record pointing nowhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.audit import record_audit


@dataclass
class Deleted:
    """What a deletion removed: row counts by kind, and the recording files to remove."""

    counts: dict[str, int] = field(default_factory=dict)
    recordings: list[str] = field(default_factory=list)

    def count(self, kind: str, rows: int) -> None:
        if rows:
            self.counts[kind] = self.counts.get(kind, 0) + rows


async def expire_call_content(conn: AsyncConnection, before: datetime) -> Deleted:
    """Delete the transcripts (turns, tool calls with their arguments) and recordings of calls
    that started before ``before``. The call rows stay, without content: when, how long, the
    outcome and the latency figures remain for the business's statistics."""
    calls, deleted = schema.calls, Deleted()
    old = sa.select(calls.c.id).where(calls.c.started_at < before)
    rows = await conn.execute(
        sa.select(calls.c.recording_path).where(
            calls.c.started_at < before, calls.c.recording_path != ""
        )
    )
    deleted.recordings = [str(path) for (path,) in rows]
    for kind, table in (("turns", schema.turns), ("tool_calls", schema.tool_calls)):
        result = await conn.execute(table.delete().where(table.c.call_id.in_(old)))
        deleted.count(kind, result.rowcount or 0)
    if deleted.recordings:
        await conn.execute(
            calls.update()
            .where(calls.c.started_at < before, calls.c.recording_path != "")
            .values(recording_path="")
        )
        deleted.count("recordings", len(deleted.recordings))
    return deleted


async def forget_caller(conn: AsyncConnection, phone: str, actor: str) -> Deleted:
    """Delete everything kept about the caller on ``phone`` (E.164): their customer record with
    its notes and appointments, their calls with transcripts and recordings, and the messages
    and transfers they left. Audited without the number itself (its last four digits only)."""
    deleted = Deleted()
    customer = (
        await conn.execute(
            sa.select(schema.customers.c.id).where(schema.customers.c.phone == phone)
        )
    ).scalar()
    calls = schema.calls
    theirs = calls.c.from_number == phone
    if customer is not None:
        theirs = sa.or_(theirs, calls.c.customer_id == customer)
    rows = await conn.execute(sa.select(calls.c.id, calls.c.recording_path).where(theirs))
    call_ids = []
    for call_id, path in rows:
        call_ids.append(int(call_id))
        if path:
            deleted.recordings.append(str(path))
    await _delete_calls(conn, call_ids, deleted)
    handoffs = schema.handoffs
    left = handoffs.c.caller_number == phone
    if customer is not None:
        left = sa.or_(left, handoffs.c.customer_id == customer)
    deleted.count("messages", (await conn.execute(handoffs.delete().where(left))).rowcount or 0)
    codes = schema.caller_verifications
    deleted.count(
        "verification codes",
        (await conn.execute(codes.delete().where(codes.c.phone == phone))).rowcount or 0,
    )
    if customer is not None:
        await _delete_customer(conn, int(customer), deleted)
    await record_audit(
        conn,
        actor,
        "delete",
        "caller data",
        entity_id=customer or "",
        summary=f"forgot the caller ending {phone[-4:]}: "
        + (", ".join(f"{n} {kind}" for kind, n in sorted(deleted.counts.items())) or "nothing"),
        changes={"deleted": deleted.counts},
    )
    return deleted


async def _delete_calls(conn: AsyncConnection, call_ids: list[int], deleted: Deleted) -> None:
    if not call_ids:
        return
    for kind, table in (("turns", schema.turns), ("tool_calls", schema.tool_calls)):
        result = await conn.execute(table.delete().where(table.c.call_id.in_(call_ids)))
        deleted.count(kind, result.rowcount or 0)
    # Transfers and messages of these calls by someone else keep their row, not the link.
    await conn.execute(
        schema.handoffs.update().where(schema.handoffs.c.call_id.in_(call_ids)).values(call_id=None)
    )
    result = await conn.execute(schema.calls.delete().where(schema.calls.c.id.in_(call_ids)))
    deleted.count("calls", result.rowcount or 0)
    deleted.count("recordings", len(deleted.recordings))


async def _delete_customer(conn: AsyncConnection, customer_id: int, deleted: Deleted) -> None:
    for kind, table in (
        ("notes", schema.customer_notes),
        ("appointments", schema.appointments),
    ):
        result = await conn.execute(table.delete().where(table.c.customer_id == customer_id))
        deleted.count(kind, result.rowcount or 0)
    # Calls from other numbers that found this record keep their row, not the link.
    await conn.execute(
        schema.calls.update()
        .where(schema.calls.c.customer_id == customer_id)
        .values(customer_id=None)
    )
    await conn.execute(schema.customers.delete().where(schema.customers.c.id == customer_id))
    deleted.count("customer records", 1)
