"""Verification tools: send_verification_code, verify_code.

A caller not proven to own a number (tools.actions.identity) proves it with a six-digit code
texted to that number: one code per call, hashed in the database, good for ten minutes and
three tries (tools.store.verifications). At most ``CODES_PER_NUMBER`` codes go to one number
an hour, whichever calls ask; the refusal is the same whether the number is on file or not.
The code is never logged nor put in a tool's answer.
"""

from __future__ import annotations

import re

from tools.actions.identity import WAYS, meant_number, offer, ways_to_verify
from tools.domain.speech import say_number, say_phone
from tools.domain.spoken_phone import spoken_digits
from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult
from tools.store import verifications
from tools.store.verifications import CODE_DIGITS, CODE_TTL, Check, Started


async def _other_ways(ctx: ToolContext) -> tuple[str, list[str]]:
    """The sentence offering the ways besides a text, and their keys."""
    ways = [w for w in await ways_to_verify(ctx) if w != "text"]
    return offer(ways), ways


async def send_verification_code(ctx: ToolContext, phone: str = "") -> ToolResult:
    """Text a six-digit code to the number the caller's bookings are under, to confirm it is
    theirs before going over or changing existing bookings or details. One code per call.

    Args:
        phone: That number as the caller said it; leave empty to use the caller ID.
    """
    number, owned = await meant_number(ctx, phone)
    spoken = say_phone(number)
    if owned:
        return ToolResult(
            say=f"{spoken.capitalize()} is already confirmed as yours.",
            data={"verified": True, "phone": number},
        )
    if "text" not in await ways_to_verify(ctx) or ctx.texts is None:
        others, ways = await _other_ways(ctx)
        raise ToolError(
            f"Sorry, I can't send texts from this line. {others}".strip(),
            code="sms_unavailable",
            data={"verify_by": ways},
        )
    code = verifications.new_code()
    async with ctx.db.write(serial=verifications.serial_key(number)) as conn:
        started = await verifications.start(conn, ctx.call_sid, number, code, ctx.current_time())
    if started is Started.ALREADY_SENT:
        others, ways = await _other_ways(ctx)
        raise ToolError(
            f"I can only send one code per call. If you have it, tell me the code. {others}",
            code="code_already_sent",
            data={"verify_by": ways},
        )
    if started is Started.TOO_MANY:
        others, ways = await _other_ways(ctx)
        raise ToolError(
            "I've already sent several codes to that number; please try again later. "
            f"{others}".strip(),
            code="too_many_codes",
            data={"verify_by": ways},
        )
    business = await ctx.current_business()
    minutes = int(CODE_TTL.total_seconds() // 60)
    try:
        await ctx.texts.send_text(
            number, f"{business.name}: your code is {code}. It expires in {minutes} minutes."
        )
    except Exception:  # whatever the SMS vendor raised: the caller hears it failed, never why
        async with ctx.db.write() as conn:
            await verifications.forget(conn, ctx.call_sid)
        others, ways = await _other_ways(ctx)
        raise ToolError(
            f"Sorry, I couldn't send the text just now. {others}".strip(),
            code="sms_failed",
            data={"verify_by": ways},
        ) from None
    return ToolResult(
        say=f"I've texted a six-digit code to {spoken}. What's the code?",
        data={"phone": number, "expires_minutes": minutes},
    )


def code_from_speech(text: str) -> str:
    """The :data:`CODE_DIGITS` digits the caller said ("one two three, four five six", "123
    456"), or "" when no reading of ``text`` has exactly that many."""
    for candidate in spoken_digits(text):
        digits = re.sub(r"\D", "", candidate)
        if len(digits) == CODE_DIGITS:
            return digits
    return ""


async def verify_code(ctx: ToolContext, code: str) -> ToolResult:
    """Check the code the caller read out from the text send_verification_code sent.

    Args:
        code: The six digits as the caller said them.
    """
    digits = code_from_speech(code)
    if not digits:
        raise ToolError(
            "Sorry, I didn't catch all six digits. Could you say the code again?",
            code="invalid_code",
        )
    async with ctx.db.write() as conn:
        result = await verifications.check(conn, ctx.call_sid, digits, ctx.current_time())
    if result.outcome is Check.VERIFIED:
        ctx.verified_phone = result.phone
        return ToolResult(
            say="Thank you, that's confirmed.", data={"verified": True, "phone": result.phone}
        )
    if result.outcome is Check.WRONG:
        left = result.tries_left
        tries = "one more try" if left == 1 else f"{say_number(left)} more tries"
        raise ToolError(f"Sorry, that code isn't right. You have {tries}.", code="wrong_code")
    if result.outcome is Check.NONE:
        raise ToolError(
            f"I haven't sent you a code yet. {WAYS['text'].capitalize()}; shall I?",
            code="no_code",
        )
    others, ways = await _other_ways(ctx)
    why = {
        Check.LOCKED: "that code can't be used any more",
        Check.EXPIRED: "that code has expired",
    }[result.outcome]
    raise ToolError(
        f"Sorry, {why}. {others}".strip(), code=f"code_{result.outcome}", data={"verify_by": ways}
    )
