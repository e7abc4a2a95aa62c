"""CRM tools: find_customer, save_customer, add_note, list_my_appointments; and the caller's
customer record as the other tools find or create it (by the number given, else caller ID)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tools.domain.speech import join_words, say_when
from tools.domain.spoken_phone import phone_from_speech
from tools.domain.validation import InvalidPhoneNumber
from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult
from tools.store import customers
from tools.store.appointments import count_upcoming, upcoming_for_customer

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)


def _spoken_email_to_address(text: str) -> str:
    text = text.strip().lower()
    text = re.sub(r"\s+at\s+", "@", text)
    text = re.sub(r"\s+dot\s+", ".", text)
    return text.replace(" ", "")


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


def _caller_phone(ctx: ToolContext, phone: str = "") -> str:
    if phone.strip():
        return spoken_number(phone)
    if ctx.caller_phone:
        return ctx.caller_phone
    raise ToolError("What's the best phone number to reach you?", code="need_phone")


async def save_caller(
    conn: AsyncConnection, ctx: ToolContext, name: str = "", phone: str = ""
) -> dict[str, Any]:
    """Find the caller's record (by the given phone or caller ID) or create it; update the name."""
    customer = await customers.save_customer(conn, _caller_phone(ctx, phone), name)
    ctx.facts["customer_id"] = customer["id"]
    return customer


async def require_customer(conn: AsyncConnection, ctx: ToolContext) -> dict[str, Any]:
    number = _caller_phone(ctx)
    customer = await customers.lookup_customer(conn, number)
    if customer is None:
        raise ToolError(
            "I can't find an account under this number. What number did you book with?",
            code="unknown_customer",
        )
    ctx.facts["customer_id"] = customer["id"]
    return customer


async def find_customer(ctx: ToolContext, phone: str = "") -> ToolResult:
    """Look up the caller in the customer records by phone number (the caller ID if none given).

    Args:
        phone: A phone number the caller gave; leave empty to use the caller ID.
    """
    number = _caller_phone(ctx, phone)
    async with ctx.db.read() as conn:
        customer = await customers.lookup_customer(conn, number)
        if customer is None:
            return ToolResult(say="", data={"found": False, "phone": number})
        count = await count_upcoming(conn, customer["id"], datetime.now(UTC))
    ctx.facts["customer_id"] = customer["id"]
    first = customer["name"].split()[0] if customer["name"] else ""
    return ToolResult(
        say=f"Welcome back{', ' + first if first else ''}!",
        data={
            "found": True,
            "name": customer["name"],
            "email": customer["email"],
            "upcoming_appointments": count,
        },
    )


async def save_customer(
    ctx: ToolContext, name: str = "", email: str = "", phone: str = ""
) -> ToolResult:
    """Save the name and/or email the caller just told you to their customer record.

    Args:
        name: The caller's full name as they said it.
        email: The caller's email, spoken form is fine ("jane at example dot com").
        phone: A different phone number for the record, if the caller gave one.
    """
    if not name.strip() and not email.strip():
        raise ToolError("What name should I put on your record?", code="missing_argument")
    address = ""
    if email.strip():
        address = _spoken_email_to_address(email)
        if not _EMAIL_RE.match(address):
            raise ToolError("Sorry, I didn't get that email address. Could you spell it for me?")
    async with ctx.db.write() as conn:
        customer = await save_caller(conn, ctx, name, phone)
        if address:
            await customers.set_email(conn, customer["id"], address)
    saved = join_words(
        [w for w, v in (("your name", name), ("your email", address)) if v.strip()], "and"
    )
    return ToolResult(
        say=f"Thanks, I've saved {saved}.",
        data={"customer_id": customer["id"], "name": customer["name"], "email": address},
    )


async def add_note(ctx: ToolContext, note: str) -> ToolResult:
    """Add a note to the caller's customer record (preferences, allergies, requests).

    Args:
        note: The note, in a short sentence.
    """
    text = " ".join(note.split())[:1000]
    if not text:
        raise ToolError("What would you like me to note down?", code="missing_argument")
    async with ctx.db.write() as conn:
        customer = await save_caller(conn, ctx)
        await customers.add_note(conn, customer["id"], text, ctx.call_sid)
    return ToolResult(say="I've made a note of that.", data={"customer_id": customer["id"]})


async def list_my_appointments(ctx: ToolContext) -> ToolResult:
    """List the caller's upcoming appointments."""
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    async with ctx.db.read() as conn:
        customer = await require_customer(conn, ctx)
        upcoming = await upcoming_for_customer(conn, customer["id"], now)
    if not upcoming:
        return ToolResult(
            say="You don't have any upcoming appointments.", data={"appointments": []}
        )
    spoken = [
        f"a {a['service'].lower()} "
        f"{say_when(business.local(datetime.fromisoformat(a['starts_at'])), now.date())}"
        for a in upcoming
    ]
    return ToolResult(
        say=f"You have {join_words(spoken, 'and')}.",
        data={
            "appointments": [
                {
                    "id": a["id"],
                    "service": a["service"],
                    "start": a["starts_at"],
                    "staff": a["staff"],
                }
                for a in upcoming
            ]
        },
    )
