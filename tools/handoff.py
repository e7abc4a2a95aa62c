"""Handoff tools and records: transfer to a human, take a message (a callback request), end
the call.

The telephony side (Twilio call updates) lives in telephony/ and agent/escalation.py; these tools
only record and ask the call, through ``ctx.call``, to act. Every handoff is a row in
``handoffs`` linked to the call and the customer: kind, trigger, reason, summary, target,
outcome (and its detail), promised callback time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tools import schema
from tools.business import business_of, normalize_phone
from tools.db import Database, new_id, utc_now
from tools.registry import ToolContext, ToolError, ToolResult, tool
from tools.speech import say_date, say_time


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


async def callback_customer(db: Database, number: str, name: str = "") -> int:
    """The CRM customer to call back on ``number``, created if new; an empty name on file is
    filled in, an existing one is never overwritten (someone else may call from that phone)."""
    name = " ".join(name.split())[:200]
    stamp = utc_now()
    async with db.write() as conn:
        row = (
            await conn.execute(
                sa.select(schema.customers.c.id, schema.customers.c.name).where(
                    schema.customers.c.phone == number
                )
            )
        ).first()
        if row is None:
            result = await conn.execute(
                schema.customers.insert().values(
                    phone=number, name=name, email="", created_at=stamp, updated_at=stamp
                )
            )
            return new_id(result)
        if name and not row.name:
            await conn.execute(
                schema.customers.update()
                .where(schema.customers.c.id == row.id)
                .values(name=name, updated_at=stamp)
            )
        return int(row.id)


def callback_time(business: Any, now: datetime) -> tuple[datetime | None, str]:
    """When the team will call back: (the next opening, or None while open; spoken words)."""
    opening = business.next_opening(now) if not business.is_open_at(now) else None
    if opening is None:
        return None, "as soon as possible today"
    local_today = business.local(now).date()
    return opening, f"{say_date(opening, local_today)} after {say_time(opening)}"


@tool(filler=False, timeout_secs=10.0)
async def transfer_to_human(ctx: ToolContext, reason: str) -> ToolResult:
    """Connect the caller to a person now (they ask for a person or the manager, or are upset).

    Args:
        reason: Why, in a few words, e.g. "wants to discuss a complaint".
    """
    if ctx.call is None:
        raise ToolError("I can't transfer this call, but I can take a message for the team.")
    say, data = await ctx.call.request_transfer(reason)
    return ToolResult(say=say, data=data)


@tool(filler=False, timeout_secs=5.0)
async def take_message(
    ctx: ToolContext, message: str, name: str = "", phone: str = ""
) -> ToolResult:
    """Take a message for the team and promise a callback (caller wants a call back or a message).

    Args:
        message: What the caller wants, in a sentence.
        name: The caller's name.
        phone: The number to call back (the caller ID is used if empty).
    """
    number = normalize_phone(phone) if phone.strip() else ctx.caller_phone
    if not number:
        raise ToolError("What number should we call you back on?", code="need_phone")
    if not message.strip():
        raise ToolError("What would you like me to pass on?", code="missing_argument")
    business = await business_of(ctx)
    customer_id = await callback_customer(ctx.db, number, name)
    if number == ctx.caller_phone:
        ctx.facts["customer_id"] = customer_id
    opening, when = callback_time(business, ctx.current_time())
    await record_handoff(
        ctx.db,
        call_sid=ctx.call_sid,
        kind="message",
        trigger="message",
        reason=message,
        caller_name=name,
        caller_number=number,
        customer_id=customer_id,
        outcome="message_taken",
        callback_after=opening.astimezone(UTC).isoformat() if opening else None,
    )
    who = f", {name.split()[0]}" if name.strip() else ""
    return ToolResult(
        say=f"Thanks{who}. I've passed that on and someone will call you back {when}.",
        data={"callback": when},
    )


@tool(filler=False, timeout_secs=3.0)
async def end_call(ctx: ToolContext, reason: str = "caller said goodbye") -> ToolResult:
    """End the call politely once the caller is done or says goodbye.

    Args:
        reason: Why the call is ending.
    """
    if ctx.call is not None:
        await ctx.call.request_hangup(reason)
    return ToolResult(say="Thanks for calling. Goodbye!", data={"ending": True})
