"""The front desk in the admin console: appointments staff book (a walk-in, a call they took
themselves), move, cancel and mark as no-shows; customers found by name or number, with their
history; the do-not-call flag.

A staff booking follows the agent's rules through the same code (tools.store.appointments
``slot_at``: opening hours and holidays, who does the service, the slot grid, the booking
horizon, no double booking, on PostgreSQL the exclusion constraint too), with one difference:
no lead time, so a walk-in can be booked for now. What the rules refuse comes back as
:class:`ValidationFailed`, a sentence per field, with nothing changed. Every change is written
with its audit entry (who, what, before and after) in one transaction; a booking, move or
cancellation is then texted to the customer when the business sends confirmations
(tools.actions.confirmations). Staff bookings are ordinary appointments (``call_sid`` empty):
whatever reads appointments, reminders included, sees them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.actions.confirmations import Confirmation, Event, Outcome, send_confirmation
from tools.admin.models import AppointmentIn, AppointmentMoveIn, NotFound, ValidationFailed
from tools.domain.business import Business, Service
from tools.domain.slots import Slot
from tools.domain.when import When
from tools.registry import TextSender
from tools.store import appointments, customers, schema
from tools.store.appointments import SlotTakenError, appointment_detail, find_slots, slot_at
from tools.store.audit import record_audit
from tools.store.business import load_business
from tools.store.db import Database, utc_now

#: The front desk books from now on (a walk-in); callers of the agent book 30 minutes ahead.
DESK_LEAD = timedelta(0)
SEARCH_LIMIT = 50


def clock_text(moment: datetime | time) -> str:
    """``3:00 PM``."""
    return moment.strftime("%I:%M %p").lstrip("0")


def audit_view(appointment: dict[str, Any]) -> dict[str, Any]:
    """What the change log keeps of an appointment."""
    return {
        "customer": f"{appointment['customer']} {appointment['phone']}".strip(),
        "service": appointment["service"],
        "staff": appointment["staff"] or "anyone",
        "starts_at": appointment["starts_at"],
        "status": appointment["status"],
    }


def _changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, list[Any]]:
    old = audit_view(before) if before else {}
    new = audit_view(after)
    return {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere (its own % and _ taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class FrontDesk:
    """What staff at the desk do in the console; each change audited under the actor's name."""

    def __init__(
        self,
        db: Database,
        texts: TextSender | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.texts = texts
        self.clock = clock

    # Appointments ------------------------------------------------------------------------------

    async def create_appointment(self, actor: str, body: AppointmentIn) -> dict[str, Any]:
        """Book ``body`` for the customer on its phone number (a record is created for a new
        number; an existing record keeps its name, a different one given goes on the booking)."""
        business = await load_business(self.db)
        service = self._service(business, body.service_id)
        target, now = self._target(business, body.day, body.start), business.local(self.clock())
        async with self.db.write() as conn:
            await self._check_staff(conn, service, body.staff_id)
            slot = await self._free_slot(conn, business, service, target, now, body.staff_id)
            customer, _created = await customers.claim_customer(conn, body.phone, body.name)
            if body.name and not customer["name"]:
                customer = await customers.save_customer(conn, body.phone, body.name)
            booked_name = body.name if body.name != customer["name"] else ""
            try:
                appointment_id = await appointments.book(
                    conn, customer["id"], service, slot, "", booked_name=booked_name
                )
            except SlotTakenError:
                raise self._taken(slot.staff_name, []) from None
            after = await self._appointment(conn, appointment_id)
            await record_audit(
                conn,
                actor,
                "create",
                "appointment",
                appointment_id,
                f"booked {after['service']} for {after['customer'] or after['phone']}",
                _changes(None, after),
            )
        return await self._confirmed(business, "booked", after)

    async def move_appointment(
        self, actor: str, appointment_id: int, body: AppointmentMoveIn
    ) -> dict[str, Any]:
        """Move a booked appointment to a new time (and staff member, or anyone free)."""
        business = await load_business(self.db)
        target, now = self._target(business, body.day, body.start), business.local(self.clock())
        async with self.db.write() as conn:
            before = await self._appointment(conn, appointment_id)
            self._require_booked(before, "moved")
            service = self._service(business, before["service_id"])
            await self._check_staff(conn, service, body.staff_id)
            slot = await self._free_slot(
                conn, business, service, target, now, body.staff_id, appointment_id
            )
            try:
                await appointments.move(conn, appointment_id, service, slot)
            except SlotTakenError:
                raise self._taken(slot.staff_name, []) from None
            after = await self._appointment(conn, appointment_id)
            changes = _changes(before, after)
            if changes:
                await record_audit(
                    conn,
                    actor,
                    "update",
                    "appointment",
                    appointment_id,
                    f"moved {after['service']} of {after['customer'] or after['phone']}",
                    changes,
                )
        if not changes:
            return {**after, "confirmation": "unchanged"}
        return await self._confirmed(business, "moved", after)

    async def cancel_appointment(self, actor: str, appointment_id: int) -> dict[str, Any]:
        """Cancel a booked appointment that has not started yet."""
        business = await load_business(self.db)
        async with self.db.write() as conn:
            before = await self._appointment(conn, appointment_id)
            self._require_booked(before, "cancelled")
            if datetime.fromisoformat(before["starts_at"]) <= self.clock():
                raise ValidationFailed(
                    {"status": "it has already started; mark it a no-show if they did not come"}
                )
            await appointments.set_status(conn, appointment_id, "cancelled")
            after = await self._appointment(conn, appointment_id)
            await record_audit(
                conn,
                actor,
                "cancel",
                "appointment",
                appointment_id,
                f"cancelled {after['service']} of {after['customer'] or after['phone']}",
                _changes(before, after),
            )
        return await self._confirmed(business, "cancelled", after)

    async def mark_no_show(self, actor: str, appointment_id: int) -> dict[str, Any]:
        """Record that the customer of a booked appointment never came (only once it has
        started); what is left of its time is free again, for a walk-in."""
        async with self.db.write() as conn:
            before = await self._appointment(conn, appointment_id)
            self._require_booked(before, "marked a no-show")
            if datetime.fromisoformat(before["starts_at"]) > self.clock():
                raise ValidationFailed(
                    {"status": "it has not started yet; cancel it if they will not come"}
                )
            await appointments.set_status(conn, appointment_id, "no_show")
            after = await self._appointment(conn, appointment_id)
            await record_audit(
                conn,
                actor,
                "no_show",
                "appointment",
                appointment_id,
                f"no-show: {after['service']} of {after['customer'] or after['phone']}",
                _changes(before, after),
            )
        return after

    async def free_times(
        self,
        service_id: int,
        day: date,
        staff_id: int | None = None,
        exclude_appointment: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every free start time of a service on ``day`` (the business's), with who takes it."""
        business = await load_business(self.db)
        service = self._service(business, service_id)
        now = business.local(self.clock())
        async with self.db.read() as conn:
            slots = await find_slots(
                conn,
                business,
                service,
                When(day=day),
                now,
                exclude_appointment=exclude_appointment,
                limit=1000,
                staff_id=staff_id,
                lead=DESK_LEAD,
            )
        return [
            {"start": f"{s.starts_at:%H:%M}", "staff_id": s.staff_id, "staff": s.staff_name}
            for s in sorted(slots, key=lambda s: s.starts_at)
        ]

    # Customers ---------------------------------------------------------------------------------

    async def find_customers(self, query: str) -> list[dict[str, Any]]:
        """Customers whose name contains ``query`` (any case) or whose number contains its
        digits (three or more), by name; at most :data:`SEARCH_LIMIT`."""
        c = schema.customers
        text = " ".join(query.split())[:100]
        if not text:
            return []
        digits = re.sub(r"\D", "", text)
        matches = [sa.func.lower(c.c.name).like(_like(text.lower()), escape="\\")]
        if len(digits) >= 3:
            matches.append(c.c.phone.like(_like(digits), escape="\\"))
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(c.c.id, c.c.name, c.c.phone, c.c.email, c.c.do_not_call)
                .where(sa.or_(*matches))
                .order_by(sa.func.lower(c.c.name), c.c.phone)
                .limit(SEARCH_LIMIT)
            )
            return [{**r, "do_not_call": bool(r["do_not_call"])} for r in rows.mappings()]

    async def customer(self, customer_id: int) -> dict[str, Any]:
        """A customer's record and history: appointments (latest first, each with its status),
        calls (with their outcome and a link to the record), notes, and the messages and
        transfers of their calls."""
        now = self.clock()
        async with self.db.read() as conn:
            record = await self._customer_row(conn, customer_id)
            phone = record["phone"]
            booked = await appointments.customer_appointments(conn, customer_id)
            calls = await self._calls(conn, customer_id, phone)
            notes = await conn.execute(
                sa.select(
                    schema.customer_notes.c.text,
                    schema.customer_notes.c.call_sid,
                    schema.customer_notes.c.created_at,
                )
                .where(schema.customer_notes.c.customer_id == customer_id)
                .order_by(schema.customer_notes.c.created_at.desc())
            )
            note_list = [dict(n) for n in notes.mappings()]
            handoffs = await self._handoffs(conn, customer_id, phone)
        for a in booked:
            a["upcoming"] = a["status"] == "booked" and datetime.fromisoformat(a["starts_at"]) > now
        return {
            "customer": record,
            "appointments": booked,
            "calls": calls,
            "notes": note_list,
            "messages": handoffs,
        }

    async def set_do_not_call(self, actor: str, customer_id: int, on: bool) -> dict[str, Any]:
        """Set or clear the customer's do-not-call flag (and when it was set)."""
        c = schema.customers
        async with self.db.write() as conn:
            before = await self._customer_row(conn, customer_id)
            if before["do_not_call"] != on:
                stamp = utc_now()
                await conn.execute(
                    c.update()
                    .where(c.c.id == customer_id)
                    .values(do_not_call=on, do_not_call_at=stamp if on else None, updated_at=stamp)
                )
                who = before["name"] or before["phone"]
                await record_audit(
                    conn,
                    actor,
                    "update",
                    "customer",
                    customer_id,
                    f"do-not-call {'set' if on else 'cleared'} for {who}",
                    {"do_not_call": [before["do_not_call"], on]},
                )
            return await self._customer_row(conn, customer_id)

    # Helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _service(business: Business, service_id: int) -> Service:
        service = next((s for s in business.services if s.id == service_id), None)
        if service is None:
            raise ValidationFailed({"service_id": f"no service {service_id} is offered"})
        return service

    @staticmethod
    def _target(business: Business, day: str, start: str) -> datetime:
        return datetime.combine(date.fromisoformat(day), time.fromisoformat(start), business.tz)

    @staticmethod
    async def _check_staff(conn: AsyncConnection, service: Service, staff_id: int | None) -> None:
        if staff_id is None:
            return
        row = (
            await conn.execute(
                sa.select(schema.staff.c.name, schema.staff.c.active).where(
                    schema.staff.c.id == staff_id
                )
            )
        ).first()
        if row is None or not row.active:
            raise ValidationFailed({"staff_id": f"no staff member {staff_id}"})
        if staff_id not in {s[0] for s in await appointments.qualified_staff(conn, service)}:
            does = f"{row.name} does not do {service.name.lower()}"
            raise ValidationFailed({"staff_id": f"{does}; pick someone who does"})

    async def _free_slot(
        self,
        conn: AsyncConnection,
        business: Business,
        service: Service,
        target: datetime,
        now: datetime,
        staff_id: int | None,
        exclude: int | None = None,
    ) -> Slot:
        """The slot at ``target``, or ValidationFailed saying why not (closed, past, beyond
        the horizon, off the grid, or taken, with the nearest free times)."""
        slot = await slot_at(
            conn,
            business,
            service,
            target,
            now,
            exclude_appointment=exclude,
            staff_id=staff_id,
            lead=DESK_LEAD,
        )
        if slot is not None:
            return slot
        if refusal := self._off_hours(business, service, target, now):
            raise ValidationFailed(refusal)
        nearby = await find_slots(
            conn,
            business,
            service,
            When(day=target.date(), exact=target.time()),
            now,
            exclude_appointment=exclude,
            staff_id=staff_id,
            lead=DESK_LEAD,
        )
        who = ""
        if staff_id is not None:
            who = next(
                n for i, n in await appointments.qualified_staff(conn, service) if i == staff_id
            )
        raise self._taken(who, nearby)

    @staticmethod
    def _off_hours(
        business: Business, service: Service, target: datetime, now: datetime
    ) -> dict[str, str]:
        """Why nobody could be booked at ``target`` whoever is free, or {} (then it is taken)."""
        day = target.date()
        if target < now:
            return {"start": "that time has already passed"}
        horizon = now.date() + timedelta(days=business.booking_horizon_days)
        if day > horizon:
            return {
                "day": f"bookings open {business.booking_horizon_days} days ahead (to {horizon})"
            }
        ranges = business.opening_on(day)
        if not ranges:
            if day in business.holidays:
                return {"day": f"closed that day ({business.holidays[day]})"}
            return {"day": f"closed on {day:%A}s"}
        end = target + timedelta(minutes=service.duration_minutes)
        fits = [
            (opens, closes)
            for opens, closes in ranges
            if datetime.combine(day, opens, business.tz) <= target
            and end <= datetime.combine(day, closes, business.tz)
        ]
        hours = ", ".join(f"{o:%H:%M}-{c:%H:%M}" for o, c in ranges)
        if not fits:
            return {
                "start": f"a {service.duration_minutes}-minute {service.name.lower()} at "
                f"{target:%H:%M} is outside opening hours ({hours})"
            }
        opens = datetime.combine(day, fits[0][0], business.tz)
        if (target - opens) % timedelta(minutes=business.slot_minutes):
            return {
                "start": f"appointments start every {business.slot_minutes} minutes from "
                f"{fits[0][0]:%H:%M}"
            }
        return {}

    @staticmethod
    def _taken(who: str, nearby: list[Slot]) -> ValidationFailed:
        subject = f"{who} is" if who else "everyone who does it is"
        free = ", ".join(
            f"{clock_text(s.starts_at)}" + (f" ({s.staff_name})" if s.staff_name else "")
            for s in sorted(nearby, key=lambda s: s.starts_at)
        )
        return ValidationFailed(
            {"start": f"{subject} booked then" + (f"; nearest free: {free}" if free else "")}
        )

    @staticmethod
    def _require_booked(appointment: dict[str, Any], change: str) -> None:
        if appointment["status"] != "booked":
            status = appointment["status"].replace("_", "-")
            raise ValidationFailed({"status": f"a {status} appointment cannot be {change}"})

    @staticmethod
    async def _appointment(conn: AsyncConnection, appointment_id: int) -> dict[str, Any]:
        found = await appointment_detail(conn, appointment_id)
        if found is None:
            raise NotFound(f"no appointment {appointment_id}")
        return found

    @staticmethod
    async def _customer_row(conn: AsyncConnection, customer_id: int) -> dict[str, Any]:
        c = schema.customers
        row = (
            (
                await conn.execute(
                    sa.select(
                        c.c.id,
                        c.c.name,
                        c.c.phone,
                        c.c.email,
                        c.c.created_at,
                        c.c.do_not_call,
                        c.c.do_not_call_at,
                    ).where(c.c.id == customer_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"no customer {customer_id}")
        return {**row, "do_not_call": bool(row["do_not_call"])}

    @staticmethod
    async def _calls(conn: AsyncConnection, customer_id: int, phone: str) -> list[dict[str, Any]]:
        """Calls linked to the customer, from their number, or placed to it; newest first."""
        k = schema.calls
        rows = await conn.execute(
            sa.select(
                k.c.call_sid,
                k.c.started_at,
                k.c.ended_at,
                k.c.outcome,
                k.c.direction,
                k.c.source,
            )
            .where(
                sa.or_(
                    k.c.customer_id == customer_id,
                    k.c.from_number == phone,
                    sa.and_(k.c.direction == "outbound", k.c.to_number == phone),
                )
            )
            .order_by(k.c.started_at.desc())
            .limit(200)
        )
        return [{**r, "record_url": f"/api/admin/calls/{r['call_sid']}"} for r in rows.mappings()]

    @staticmethod
    async def _handoffs(
        conn: AsyncConnection, customer_id: int, phone: str
    ) -> list[dict[str, Any]]:
        """Messages they left and transfers they asked for, newest first."""
        h = schema.handoffs
        rows = await conn.execute(
            sa.select(
                h.c.id,
                h.c.kind,
                h.c.reason,
                h.c.summary,
                h.c.outcome,
                h.c.callback_after,
                h.c.created_at,
                schema.calls.c.call_sid,
            )
            .join(schema.calls, schema.calls.c.id == h.c.call_id, isouter=True)
            .where(sa.or_(h.c.customer_id == customer_id, h.c.caller_number == phone))
            .order_by(h.c.created_at.desc())
            .limit(200)
        )
        return [{**r, "call_sid": r["call_sid"] or ""} for r in rows.mappings()]

    async def _confirmed(
        self, business: Business, event: Event, appointment: dict[str, Any]
    ) -> dict[str, Any]:
        outcome: Outcome = await send_confirmation(
            self.db, self.texts, business, Confirmation.of(event, appointment)
        )
        return {**appointment, "confirmation": outcome}
