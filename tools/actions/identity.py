"""Who the caller is, as the tools see it: the number a tool acts on, whether the caller is
proven to own it (:meth:`tools.registry.ToolContext.proven_phone`), and what a caller who is not
is offered instead.

The rule every tool keeps: a record is heard and changed only by the proven owner of its number.
Anyone else gets answers that are the same whether a record exists or not (no way to learn that
a number is a customer's), and a change they ask for never reaches a record they do not own.
"""

from __future__ import annotations

from tools.domain.speech import join_words, say_phone
from tools.domain.spoken_phone import phone_from_speech
from tools.domain.validation import InvalidPhoneNumber
from tools.errors import ToolError
from tools.registry import ToolContext

#: The ways a caller may prove a number or reach the team about it, as the model is told them.
WAYS = {
    "text": "I can text a code to that number",
    "callback": "have the team call you back on it",
    "message": "take a message for the team",
}


def spoken_number(text: str) -> str:
    """E.164 of a number the caller said (words, digits or a recogniser's mix of both), or
    ToolError asking them to repeat it."""
    try:
        return phone_from_speech(text)
    except InvalidPhoneNumber:
        raise ToolError(
            "That doesn't sound like a full phone number. Could you repeat it?",
            code="invalid_phone",
        ) from None


async def meant_number(ctx: ToolContext, phone: str = "") -> tuple[str, bool]:
    """(number, owned): the number the caller said, else the one they are proven to own, else
    their caller ID; ``owned`` when it is proven theirs. ToolError ``need_phone`` for none."""
    proven = await ctx.proven_phone()
    number = spoken_number(phone) if phone.strip() else proven or ctx.caller_phone
    if not number:
        raise ToolError("What's the best phone number to reach you?", code="need_phone")
    return number, number == proven


async def ways_to_verify(ctx: ToolContext) -> list[str]:
    """The keys of :data:`WAYS` this call offers: a text only when SMS is configured."""
    disabled = (await ctx.current_business()).disabled_tools
    ways = []
    if ctx.texts is not None and ctx.call_sid and "send_verification_code" not in disabled:
        ways.append("text")
    if "take_message" not in disabled:
        ways += ["callback", "message"]
    return ways


def offer(ways: list[str]) -> str:
    """The sentence offering ``ways`` ("" for none)."""
    if not ways:
        return ""
    return join_words([WAYS[w] for w in ways]).capitalize() + "."


async def not_verified(ctx: ToolContext, number: str = "") -> ToolError:
    """The answer to a caller not proven to own ``number`` who asks about its record: the same
    for every number, with the ways to prove it (``verify_by``)."""
    ways = await ways_to_verify(ctx)
    if not number:
        return ToolError(
            "To go over existing bookings I first need to confirm your number. "
            "What number are they under?",
            code="need_phone",
            data={"verify_by": ways},
        )
    spoken = say_phone(number)
    say = (
        f"I have {spoken}. To go over or change anything already booked under that number, "
        f"I first need to confirm it's yours. {offer(ways)}"
    )
    if not ways:
        say = (
            f"I have {spoken}. Sorry, I can only go over existing bookings with a caller I can "
            "confirm owns that number."
        )
    return ToolError(say.strip(), code="not_verified", data={"phone": number, "verify_by": ways})
