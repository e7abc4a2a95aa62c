"""Handoffs as stored: transfers and messages linked to their call and customer, and the list of
callback requests the admin console reviews.

A handoff row records kind (transfer | message), trigger, reason, summary, target, outcome (and
its detail) and the promised callback time; see tools.store.schema.handoffs.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa

from tools.store import schema
from tools.store.db import Database, new_id, utc_now


async def record_handoff(
    db: Database,
    *,
    call_sid: str,
    kind: str,
    reason: str,
    summary: str = "",
    target: str = "",
    caller_name: str = "",
    caller_number: str = "",
    customer_id: int | None = None,
    outcome: str = "requested",
    trigger: str = "",
    detail: str = "",
    callback_after: str | None = None,
) -> int:
    """Insert a handoff linked to the call with ``call_sid`` (if recorded); returns its id."""
    stamp = utc_now()
    async with db.write() as conn:
        call_id = None
        if call_sid:
            call_id = (
                await conn.execute(
                    sa.select(schema.calls.c.id).where(schema.calls.c.call_sid == call_sid)
                )
            ).scalar()
        result = await conn.execute(
            schema.handoffs.insert().values(
                call_id=call_id,
                customer_id=customer_id,
                kind=kind,
                reason=reason[:1000],
                summary=summary[:2000],
                target=target,
                caller_name=caller_name[:200],
                caller_number=caller_number,
                outcome=outcome,
                trigger=trigger,
                detail=detail[:2000],
                callback_after=callback_after,
                created_at=stamp,
                updated_at=stamp,
            )
        )
        return new_id(result)


async def update_handoff(
    db: Database, handoff_id: int, *, outcome: str, detail: str | None = None
) -> None:
    """Record what happened to a handoff (e.g. ``dialing`` -> ``no_answer``)."""
    values: dict[str, Any] = {"outcome": outcome, "updated_at": utc_now()}
    if detail is not None:
        values["detail"] = detail[:2000]
    async with db.write() as conn:
        await conn.execute(
            schema.handoffs.update().where(schema.handoffs.c.id == handoff_id).values(**values)
        )


async def get_handoff(db: Database, handoff_id: int) -> dict[str, Any] | None:
    """The handoff row plus its call's ``call_sid`` (``""`` when not linked to a call)."""
    async with db.read() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(schema.handoffs, schema.calls.c.call_sid)
                    .select_from(schema.handoffs.outerjoin(schema.calls))
                    .where(schema.handoffs.c.id == handoff_id)
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    found = dict(row)
    found["call_sid"] = found.get("call_sid") or ""
    return found


async def list_callbacks(
    db: Database, status: Literal["open", "all"] = "open", limit: int = 200
) -> list[dict[str, Any]]:
    """Messages callers left (handoffs of kind "message"), newest first; "open" ones only are
    those still ``message_taken``."""
    h = schema.handoffs
    query = (
        sa.select(
            h.c.id,
            h.c.created_at,
            h.c.updated_at,
            h.c.caller_name,
            h.c.caller_number,
            h.c.reason.label("message"),
            h.c.outcome,
            schema.calls.c.call_sid,
        )
        .join(schema.calls, schema.calls.c.id == h.c.call_id, isouter=True)
        .where(h.c.kind == "message")
        .order_by(h.c.id.desc())
        .limit(limit)
    )
    if status == "open":
        query = query.where(h.c.outcome == "message_taken")
    async with db.read() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]
