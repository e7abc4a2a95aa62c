"""CRM tools: who is calling, their details, notes and appointments."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools import schema
from tools.db import new_id, utc_now
from tools.registry import ToolContext, ToolError, ToolResult, tool
from tools.speech import join_words, say_when

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)


def _spoken_email_to_address(text: str) -> str:
    text = text.strip().lower()
    text = re.sub(r"\s+at\s+", "@", text)
    text = re.sub(r"\s+dot\s+", ".", text)
    return text.replace(" ", "")


def _caller_phone(ctx: ToolContext, phone: str = "") -> str:
    from tools.business import normalize_phone

    if phone.strip():
        return normalize_phone(phone)
    if ctx.caller_phone:
        return ctx.caller_phone
    raise ToolError("What's the best phone number to reach you?", code="need_phone")


async def lookup_customer(conn: AsyncConnection, phone: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(sa.select(schema.customers).where(schema.customers.c.phone == phone)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def ensure_customer(
    conn: AsyncConnection, ctx: ToolContext, name: str = "", phone: str = ""
) -> dict[str, Any]:
    """Find the caller's record (by the given phone or caller ID) or create it; update the name."""
    number = _caller_phone(ctx, phone)
    customer = await lookup_customer(conn, number)
    name = " ".join(name.split())[:200]
    stamp = utc_now()
    if customer is None:
        result = await conn.execute(
            schema.customers.insert().values(
                phone=number, name=name, email="", created_at=stamp, updated_at=stamp
            )
        )
        customer = {
            "id": new_id(result),
            "phone": number,
            "name": name,
            "email": "",
        }
    elif name and name != customer["name"]:
        await conn.execute(
            schema.customers.update()
            .where(schema.customers.c.id == customer["id"])
            .values(name=name, updated_at=stamp)
        )
        customer["name"] = name
    ctx.facts["customer_id"] = customer["id"]
    return customer


async def require_customer(conn: AsyncConnection, ctx: ToolContext) -> dict[str, Any]:
    number = _caller_phone(ctx)
    customer = await lookup_customer(conn, number)
    if customer is None:
        raise ToolError(
            "I can't find an account under this number. What number did you book with?",
            code="unknown_customer",
        )
    ctx.facts["customer_id"] = customer["id"]
    return customer


@tool(filler=False, timeout_secs=3.0)
async def find_customer(ctx: ToolContext, phone: str = "") -> ToolResult:
    """Look up the caller in the customer records by phone number (the caller ID if none given).

    Args:
        phone: A phone number the caller gave; leave empty to use the caller ID.
    """
    number = _caller_phone(ctx, phone)
    async with ctx.db.read() as conn:
        customer = await lookup_customer(conn, number)
        if customer is None:
            return ToolResult(say="", data={"found": False, "phone": number})
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(schema.appointments)
                .where(
                    schema.appointments.c.customer_id == customer["id"],
                    schema.appointments.c.status == "booked",
                    schema.appointments.c.starts_at >= datetime.now(UTC).isoformat(),
                )
            )
        ).scalar_one()
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


@tool(filler=False, timeout_secs=3.0)
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
        customer = await ensure_customer(conn, ctx, name, phone)
        if address:
            await conn.execute(
                schema.customers.update()
                .where(schema.customers.c.id == customer["id"])
                .values(email=address, updated_at=utc_now())
            )
    saved = join_words(
        [w for w, v in (("your name", name), ("your email", address)) if v.strip()], "and"
    )
    return ToolResult(
        say=f"Thanks, I've saved {saved}.",
        data={"customer_id": customer["id"], "name": customer["name"], "email": address},
    )


@tool(filler=False, timeout_secs=3.0)
async def add_note(ctx: ToolContext, note: str) -> ToolResult:
    """Add a note to the caller's customer record (preferences, allergies, requests).

    Args:
        note: The note, in a short sentence.
    """
    text = " ".join(note.split())[:1000]
    if not text:
        raise ToolError("What would you like me to note down?", code="missing_argument")
    async with ctx.db.write() as conn:
        customer = await ensure_customer(conn, ctx)
        await conn.execute(
            schema.customer_notes.insert().values(
                customer_id=customer["id"], text=text, call_sid=ctx.call_sid, created_at=utc_now()
            )
        )
    return ToolResult(say="I've made a note of that.", data={"customer_id": customer["id"]})


@tool(timeout_secs=3.0)
async def list_my_appointments(ctx: ToolContext) -> ToolResult:
    """List the caller's upcoming appointments."""
    from tools.business import business_of
    from tools.calendar import _upcoming

    business = await business_of(ctx)
    now = business.local(ctx.current_time())
    async with ctx.db.read() as conn:
        customer = await require_customer(conn, ctx)
        upcoming = await _upcoming(conn, customer["id"], now)
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
