"""Calendar tools: check_availability, book_appointment, cancel_appointment,
reschedule_appointment, confirm_appointment. Race-safe: a booking re-checks its slot inside the
write transaction, and on PostgreSQL the database refuses an overlapping one
(tools.store.appointments).

Anyone may book; only the proven owner of a number cancels or moves what is booked under it
(tools.actions.identity). A booking by a caller not proven to own its number is linked to the
record on that number (created when there is none) without changing it: the name they gave is
kept on the appointment (``booked_name``), and the reply uses that name, never the record's."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tools.actions.confirmations import Confirmation, Event, send_confirmation
from tools.actions.crm import CallerRecord, caller_record, proven_or_refused, require_customer
from tools.actions.identity import meant_number
from tools.domain.business import Business, Service
from tools.domain.slots import Slot
from tools.domain.speech import join_words, say_date, say_time, say_when
from tools.domain.when import When, resolve_when
from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult
from tools.store import appointments
from tools.store.appointments import SlotTakenError, find_slots, slot_at

#: How often a booking looks its time up again after losing it to another transaction.
CLAIM_ATTEMPTS = 3


def _offer(slots: list[Slot], today: date) -> str:
    if not slots:
        return ""
    same_day = len({s.starts_at.date() for s in slots}) == 1
    if same_day:
        times = join_words([say_time(s.starts_at) for s in slots])
        return f"{say_date(slots[0].starts_at, today)} I have {times}"
    return "I have " + join_words([say_when(s.starts_at, today) for s in slots])


def _closed_reason(business: Business, when: When) -> str | None:
    if when.days == 1 and not business.opening_on(when.day):
        if when.day in business.holidays:
            return f"We're closed on {say_date(when.day)} for {business.holidays[when.day]}."
        return f"We're closed on {when.day.strftime('%A')}s."
    return None


async def _check(
    ctx: ToolContext, service_words: str, when_words: str
) -> tuple[Business, Service, When, datetime, list[Slot], str | None]:
    business = await ctx.current_business()
    service = business.service_named(service_words)
    now = business.local(ctx.current_time())
    when = resolve_when(when_words, now)
    closed = _closed_reason(business, when)
    async with ctx.db.read() as conn:
        slots = await find_slots(conn, business, service, when, now)
        if not slots:
            # Nothing in the window: look further ahead from that day.
            wider = When(day=when.day, any_day=True, days=14)
            slots = await find_slots(conn, business, service, wider, now)
    return business, service, when, now, slots, closed


async def check_availability(ctx: ToolContext, service: str, when: str) -> ToolResult:
    """Find free appointment times near the time the caller asked for (always before booking).

    Args:
        service: The service in the caller's words, e.g. "haircut" or "color".
        when: The caller's own words for the time, e.g. "this Friday at 2pm" or "tomorrow morning".
    """
    business, svc, window, now, slots, closed = await _check(ctx, service, when)
    today = now.date()
    data: dict[str, Any] = {
        "service": svc.name,
        "slots": [
            {
                "start": s.starts_at.isoformat(),
                "staff": s.staff_name,
                "spoken": say_when(s.starts_at, today),
            }
            for s in slots
        ],
    }
    target = window.target(business.tz)
    if not slots:
        raise ToolError(
            f"{closed + ' ' if closed else ''}Sorry, I don't have any openings for a "
            f"{svc.name.lower()} in the next two weeks.",
            code="no_slots",
        )
    if target is not None and slots[0].starts_at == target:
        with_whom = f" with {slots[0].staff_name}" if slots[0].staff_name else ""
        say = f"Yes, {say_when(target, today)} is free{with_whom}. Shall I book it?"
        data["requested_free"] = True
    else:
        prefix = closed + " " if closed else ""
        if target is not None:
            prefix += f"{say_when(target, today).capitalize()} isn't available. "
            data["requested_free"] = False
        say = f"{prefix}{_offer(slots, today)}. Which would you like?"
    return ToolResult(say=say, data=data)


async def book_appointment(
    ctx: ToolContext, service: str, when: str, customer_name: str = "", phone: str = ""
) -> ToolResult:
    """Book an appointment at one of the offered times the caller chose.

    Args:
        service: The service in the caller's words, e.g. "haircut".
        when: The caller's words for the exact time, e.g. "Friday at 2:30pm".
        customer_name: The caller's name if they gave it.
        phone: A callback number if the caller gave one (the caller ID is used otherwise).
    """
    business = await ctx.current_business()
    svc = business.service_named(service)
    now = business.local(ctx.current_time())
    window = resolve_when(when, now)
    target = window.target(business.tz)
    today = now.date()
    if target is None:
        async with ctx.db.read() as conn:
            slots = await find_slots(conn, business, svc, window, now)
        if not slots:
            raise ToolError(
                f"Sorry, nothing is free then. {_closed_reason(business, window) or ''}".strip(),
                code="no_slots",
            )
        raise ToolError(
            f"What time would you like? {_offer(slots, today)}.",
            code="need_exact_time",
            data={"slots": [s.starts_at.isoformat() for s in slots]},
        )
    number, owned = await meant_number(ctx, phone)
    given = " ".join(customer_name.split()) or str(ctx.facts.get("given_name", ""))
    async with ctx.db.write() as conn:
        slot, record, appointment_id = await _claim(
            conn, ctx, (business, svc, window, target), (number, owned, given)
        )
    with_whom = f" with {slot.staff_name}" if slot.staff_name else ""
    # A caller not proven to own the number hears the name they gave, never the record's.
    known = record.customer["name"] if record.owned else given
    name = f", {known.split()[0]}" if known else ""
    data: dict[str, Any] = {
        "appointment_id": appointment_id,
        "service": svc.name,
        "start": slot.starts_at.isoformat(),
        "staff": slot.staff_name,
    }
    if record.owned:
        data["customer_id"] = record.customer["id"]
    await _confirm(ctx, business, "booked", record.customer["phone"], svc.name, slot)
    return ToolResult(
        say=(
            f"You're booked{name}: a {svc.name.lower()} "
            f"{say_when(slot.starts_at, today)}{with_whom}."
        ),
        data=data,
    )


async def _claim(
    conn: AsyncConnection,
    ctx: ToolContext,
    request: tuple[Business, Service, When, datetime],
    caller: tuple[str, bool, str],
) -> tuple[Slot, CallerRecord, int]:
    """Book the exact time ``target`` of ``request`` (business, service, the caller's window,
    target) for ``caller`` (number, owned, name given) in ``conn``'s write transaction: (slot,
    the record it is under, appointment id). When another
    transaction books the same staff member's slot first (PostgreSQL refuses the overlap), the
    time is looked up again, since another staff member may still be free then; when nobody
    is, raises the ``slot_taken`` ToolError with alternatives."""
    business, svc, window, target = request
    number, owned, given = caller
    now = business.local(ctx.current_time())
    for _attempt in range(CLAIM_ATTEMPTS):
        free = await slot_at(conn, business, svc, target, now)
        if free is None:
            break
        record = await caller_record(conn, ctx, number, owned, given)
        try:
            booked = await appointments.book(
                conn, record.customer["id"], svc, free, ctx.call_sid, booked_name=given
            )
        except SlotTakenError:
            ctx.db.on_retry("booking")
            continue
        return free, record, booked
    alternatives = [
        s for s in await find_slots(conn, business, svc, window, now) if s.starts_at != target
    ]
    offer = _offer(alternatives, now.date())
    raise ToolError(
        f"Sorry, {say_when(target, now.date())} is taken. "
        + (f"{offer}. Would one of those work?" if offer else ""),
        code="slot_taken",
        data={"slots": [s.starts_at.isoformat() for s in alternatives]},
    )


async def _confirm(
    ctx: ToolContext, business: Business, event: Event, phone: str, service: str, slot: Slot
) -> None:
    """Text the customer on ``phone`` (their record's number) what just happened, when the
    business sends confirmations; a failed text changes nothing here."""
    confirmation = Confirmation(event, phone, service, slot.staff_name, slot.starts_at)
    await send_confirmation(ctx.db, ctx.texts, business, confirmation)


def _local_start(business: Business, appointment: dict[str, Any]) -> datetime:
    return business.local(datetime.fromisoformat(appointment["starts_at"]))


def _pick(
    appointments: list[dict[str, Any]], when_words: str, business: Business, now: datetime
) -> dict[str, Any]:
    today = now.date()
    if not appointments:
        raise ToolError("I don't see any upcoming appointments under your number.", code="none")
    if when_words.strip():
        window = resolve_when(when_words, now)
        matches = [
            a
            for a in appointments
            if business.local(datetime.fromisoformat(a["starts_at"])).date() == window.day
        ]
        if window.exact is not None and len(matches) > 1:
            matches = [
                a
                for a in matches
                if business.local(datetime.fromisoformat(a["starts_at"])).time() == window.exact
            ] or matches
        if len(matches) == 1:
            return matches[0]
        if not matches:
            listed = join_words(
                [
                    say_when(business.local(datetime.fromisoformat(a["starts_at"])), today)
                    for a in appointments
                ],
                "and",
            )
            raise ToolError(f"I don't see an appointment then. You have {listed}.", code="no_match")
    if len(appointments) == 1:
        return appointments[0]
    listed = join_words(
        [
            f"a {a['service'].lower()} {say_when(_local_start(business, a), today)}"
            for a in appointments
        ],
        "and",
    )
    raise ToolError(f"You have {listed}. Which one do you mean?", code="ambiguous")


async def _their_appointment(
    conn: AsyncConnection,
    ctx: ToolContext,
    proven: str,
    when_words: str,
    business: Business,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(customer, appointment): the upcoming appointment of the proven caller's record that
    ``when_words`` names (or their only one); ToolError when none or it is unclear which."""
    customer = await require_customer(conn, ctx, proven)
    upcoming = await appointments.upcoming_for_customer(conn, customer["id"], now)
    return customer, _pick(upcoming, when_words, business, now)


async def cancel_appointment(ctx: ToolContext, when: str = "") -> ToolResult:
    """Cancel one of the caller's upcoming appointments (only for a caller proven to own the
    number).

    Args:
        when: Which appointment, in the caller's words ("the one on Friday"); empty if just one.
    """
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    proven = await proven_or_refused(ctx)
    async with ctx.db.write() as conn:
        customer, appointment = await _their_appointment(conn, ctx, proven, when, business, now)
        await appointments.cancel(conn, appointment["id"])
    start = business.local(datetime.fromisoformat(appointment["starts_at"]))
    booked = Slot(start, None, appointment["staff"] or "")
    await _confirm(ctx, business, "cancelled", customer["phone"], appointment["service"], booked)
    return ToolResult(
        say=f"Done, I've cancelled your {appointment['service'].lower()} "
        f"{say_when(start, now.date())}.",
        data={"appointment_id": appointment["id"], "start": start.isoformat()},
    )


async def confirm_appointment(ctx: ToolContext, when: str = "") -> ToolResult:
    """Confirm that the caller will come to one of their upcoming appointments (when they say
    they can make it, e.g. after a reminder); only for a caller proven to own the number.

    Args:
        when: Which appointment, in the caller's words ("the one on Friday"); empty if just one.
    """
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    proven = await proven_or_refused(ctx)
    async with ctx.db.write() as conn:
        _customer, appointment = await _their_appointment(conn, ctx, proven, when, business, now)
        await appointments.record_reminder_outcome(conn, appointment["id"], "confirmed")
    start = business.local(datetime.fromisoformat(appointment["starts_at"]))
    return ToolResult(
        say=f"Wonderful, you're confirmed for your {appointment['service'].lower()} "
        f"{say_when(start, now.date())}. See you then!",
        data={"appointment_id": appointment["id"], "start": start.isoformat()},
    )


async def reschedule_appointment(
    ctx: ToolContext, new_when: str, current_when: str = ""
) -> ToolResult:
    """Move one of the caller's upcoming appointments to a new time (only for a caller proven
    to own the number).

    Args:
        new_when: The caller's words for the new time, e.g. "Saturday at 11".
        current_when: Which appointment to move, in the caller's words; empty if they have one.
    """
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    today = now.date()
    proven = await proven_or_refused(ctx)
    async with ctx.db.write() as conn:
        customer, appointment = await _their_appointment(
            conn, ctx, proven, current_when, business, now
        )
        svc = next((s for s in business.services if s.id == appointment["service_id"]), None)
        if svc is None:
            raise ToolError("Sorry, that service is no longer offered; let me get someone to help.")
        window = resolve_when(new_when, now)
        target = window.target(business.tz)
        if target is None:
            slots = await find_slots(
                conn, business, svc, window, now, exclude_appointment=appointment["id"]
            )
            raise ToolError(
                f"What time would you like instead? {_offer(slots, today)}.",
                code="need_exact_time",
            )
        slot = await slot_at(
            conn, business, svc, target, now, exclude_appointment=appointment["id"]
        )
        if slot is None:
            alternatives = await find_slots(
                conn, business, svc, window, now, exclude_appointment=appointment["id"]
            )
            raise ToolError(
                f"Sorry, {say_when(target, today)} is taken. {_offer(alternatives, today)}.",
                code="slot_taken",
            )
        try:
            await appointments.move(conn, appointment["id"], svc, slot)
        except SlotTakenError:
            raise ToolError(
                f"Sorry, {say_when(target, today)} was just taken. What other time would suit?",
                code="slot_taken",
            ) from None
    await _confirm(ctx, business, "moved", customer["phone"], svc.name, slot)
    return ToolResult(
        say=f"All set. Your {svc.name.lower()} is now {say_when(slot.starts_at, today)}.",
        data={"appointment_id": appointment["id"], "start": slot.starts_at.isoformat()},
    )
