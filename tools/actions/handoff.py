"""Handoff tools: transfer_to_human, take_message (a callback request), end_call.

The telephony side (Twilio call updates) lives in telephony/ and agent/escalation.py; these tools
only record (tools.store.handoffs) and ask the call, through ``ctx.call``, to act.
"""

from __future__ import annotations

from datetime import UTC

from tools.actions.identity import meant_number
from tools.domain.business import callback_time
from tools.domain.speech import say_phone
from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult
from tools.store.customers import callback_customer
from tools.store.handoffs import record_handoff


async def transfer_to_human(ctx: ToolContext, reason: str) -> ToolResult:
    """Connect the caller to a person now (they ask for a person or the manager, or are upset).

    Args:
        reason: Why, in a few words, e.g. "wants to discuss a complaint".
    """
    if ctx.call is None:
        raise ToolError("I can't transfer this call, but I can take a message for the team.")
    say, data = await ctx.call.request_transfer(reason)
    return ToolResult(say=say, data=data)


async def take_message(
    ctx: ToolContext, message: str, name: str = "", phone: str = ""
) -> ToolResult:
    """Take a message for the team and promise a callback (caller wants a call back or a message,
    or wants the team to confirm a number is theirs by calling it back).

    Args:
        message: What the caller wants, in a sentence.
        name: The caller's name.
        phone: The number to call back (the caller ID is used if empty).
    """
    if not message.strip():
        raise ToolError("What would you like me to pass on?", code="missing_argument")
    try:
        number, owned = await meant_number(ctx, phone)
    except ToolError as exc:
        if exc.code != "need_phone":
            raise
        raise ToolError("What number should we call you back on?", code="need_phone") from None
    business = await ctx.current_business()
    # The record on the number is linked; it changes only for its proven owner.
    customer_id = await callback_customer(ctx.db, number, name, owner=owned)
    if owned or number == ctx.caller_phone:  # the call's record names who it came from
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
        say=(
            f"Thanks{who}. I've passed that on and someone will call you back {when}, "
            f"on {say_phone(number)}."
        ),
        data={"callback": when, "phone": number},
    )


async def end_call(ctx: ToolContext, reason: str = "caller said goodbye") -> ToolResult:
    """End the call politely once the caller is done or says goodbye.

    Args:
        reason: Why the call is ending.
    """
    if ctx.call is not None:
        await ctx.call.request_hangup(reason)
    thanks = "Thanks for your time" if ctx.placed_call else "Thanks for calling"
    return ToolResult(say=f"{thanks}. Goodbye!", data={"ending": True})
