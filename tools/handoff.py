"""Handoff tools: transfer to a human, take a message, end the call.

The telephony side (Twilio call updates) lives in telephony/; these tools only record and ask the
call, through ``ctx.call``, to act.
"""

from __future__ import annotations

import sqlalchemy as sa

from tools import schema
from tools.business import load_business, normalize_phone
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
) -> int:
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
                created_at=stamp,
                updated_at=stamp,
            )
        )
        return new_id(result)


@tool(filler=False, timeout_secs=10.0)
async def transfer_to_human(ctx: ToolContext, reason: str) -> ToolResult:
    """Connect the caller to a person now (they ask for a person or the manager, or are upset).

    Args:
        reason: Why, in a few words, e.g. "wants to discuss a complaint".
    """
    if ctx.call is None:
        raise ToolError("I can't transfer this call, but I can take a message for the team.")
    say = await ctx.call.request_transfer(reason)
    return ToolResult(say=say, data={"transfer": "requested"})


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
    business = await load_business(ctx.db)
    await record_handoff(
        ctx.db,
        call_sid=ctx.call_sid,
        kind="message",
        reason=message,
        caller_name=name,
        caller_number=number,
        customer_id=ctx.facts.get("customer_id"),
        outcome="message_taken",
    )
    now = ctx.current_time()
    opening = business.next_opening(now) if not business.is_open_at(now) else None
    if opening is None:
        when = "as soon as possible today"
    else:
        local_today = business.local(now).date()
        when = f"{say_date(opening, local_today)} after {say_time(opening)}"
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
