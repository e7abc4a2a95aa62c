"""CRM tools: find_customer, save_customer, add_note, list_my_appointments; and the caller's
customer record as the other tools find or create it.

Records are heard and changed only by the proven owner of their number (tools.actions.identity).
A caller who is not gets the same answers whether the number has a record or not; what they tell
us goes to a record only when this call created it (the number had none), and otherwise stays
with the call (its tool calls) and with what they book (``appointments.booked_name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tools.actions.identity import meant_number, not_verified
from tools.domain.speech import join_words, say_phone, say_when
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


@dataclass(frozen=True)
class CallerRecord:
    """The customer record a tool acts on: ``owned`` when its number is proven the caller's,
    ``writable`` when this call may change it (owned, or created by this call)."""

    customer: dict[str, Any]
    owned: bool
    writable: bool


def _created(ctx: ToolContext) -> set[str]:
    created: set[str] = ctx.facts.setdefault("created_numbers", set())
    return created


async def caller_record(
    conn: AsyncConnection, ctx: ToolContext, number: str, owned: bool, name: str = ""
) -> CallerRecord:
    """The record on ``number`` (from :func:`meant_number`), created if there is none; ``name``
    is saved on it only when the call may change it. Any other record is left exactly as is."""
    if owned or number in _created(ctx):
        customer = await customers.save_customer(conn, number, name)
    else:
        customer, created = await customers.claim_customer(conn, number, name)
        if not created:
            return CallerRecord(customer, owned=False, writable=False)
        _created(ctx).add(number)
    ctx.facts["customer_id"] = customer["id"]
    return CallerRecord(customer, owned=owned, writable=True)


async def require_customer(conn: AsyncConnection, ctx: ToolContext, proven: str) -> dict[str, Any]:
    """The record on the caller's ``proven`` number (see :func:`proven_or_refused`)."""
    customer = await customers.lookup_customer(conn, proven)
    if customer is None:
        raise ToolError(
            "I can't find an account under this number. What number did you book with?",
            code="unknown_customer",
        )
    ctx.facts["customer_id"] = customer["id"]
    return customer


async def proven_or_refused(ctx: ToolContext) -> str:
    """The number the caller is proven to own, else the ``not_verified`` ToolError offering the
    ways to prove it (the same answer whether that number has a record or not)."""
    proven = await ctx.proven_phone()
    if not proven:
        raise await not_verified(ctx, ctx.caller_phone)
    return proven


async def find_customer(ctx: ToolContext, phone: str = "") -> ToolResult:
    """Look up the caller's own customer record by phone number (the caller ID if none given).
    Only a caller proven to own the number hears it; anyone else is offered a way to prove it.

    Args:
        phone: A phone number the caller gave; leave empty to use the caller ID.
    """
    number, owned = await meant_number(ctx, phone)
    if not owned:
        raise await not_verified(ctx, number)
    said = f"I have {say_phone(number)}. " if phone.strip() else ""
    async with ctx.db.read() as conn:
        customer = await customers.lookup_customer(conn, number)
        if customer is None:
            say = f"{said}I don't see a record under that number yet." if said else ""
            return ToolResult(say=say, data={"found": False, "phone": number})
        count = await count_upcoming(conn, customer["id"], datetime.now(UTC))
    ctx.facts["customer_id"] = customer["id"]
    first = customer["name"].split()[0] if customer["name"] else ""
    return ToolResult(
        say=f"{said}Welcome back{', ' + first if first else ''}!",
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
    number, owned = await meant_number(ctx, phone)
    if name.strip():
        ctx.facts["given_name"] = " ".join(name.split())
    async with ctx.db.write() as conn:
        record = await caller_record(conn, ctx, number, owned, name)
        if address and record.writable:
            await customers.set_email(conn, record.customer["id"], address)
    saved = join_words(
        [w for w, v in (("your name", name), ("your email", address)) if v.strip()], "and"
    )
    if not owned:  # the same words and data whether the number has someone's record or not
        return ToolResult(say=f"Thanks, I've noted {saved}.", data={"noted": True})
    customer = record.customer
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
    number, owned = await meant_number(ctx)
    async with ctx.db.write() as conn:
        record = await caller_record(conn, ctx, number, owned)
        if record.writable:
            await customers.add_note(conn, record.customer["id"], text, ctx.call_sid)
    if not owned:  # kept with this call's record unless the record is this call's own
        return ToolResult(say="I've made a note of that for the team.", data={"noted": True})
    return ToolResult(say="I've made a note of that.", data={"customer_id": record.customer["id"]})


async def list_my_appointments(ctx: ToolContext) -> ToolResult:
    """List the caller's upcoming appointments (only for a caller proven to own the number)."""
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    proven = await proven_or_refused(ctx)
    async with ctx.db.read() as conn:
        customer = await require_customer(conn, ctx, proven)
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
