"""Appointments as stored: free-slot search against bookings, booking, cancelling, moving, and
the lists the tools and the admin console's review page read.

Times are UTC ISO-8601 strings to the code (``timestamptz`` on PostgreSQL, see
tools.store.schema.UtcTime); the slot rules themselves are in tools.domain.slots.

No double booking: on SQLite a booking's re-check and insert share one serial write transaction;
on PostgreSQL, where transactions run side by side, the exclusion constraint
``ex_appointments_no_overlap`` refuses a second booked appointment overlapping the same staff
member's, and :func:`book` and :func:`move` turn that refusal into :class:`SlotTakenError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.domain.business import Business, Service
from tools.domain.slots import (
    LEAD_TIME,
    MAX_OFFERED,
    Busy,
    Slot,
    free_slots,
    search_days,
    search_window,
)
from tools.domain.when import When
from tools.store import schema
from tools.store.db import (
    DEADLOCK_DETECTED,
    EXCLUSION_VIOLATION,
    Database,
    new_id,
    sqlstate,
    utc_now,
)


class SlotTakenError(Exception):
    """Another transaction booked an overlapping appointment for the same staff member first."""


@asynccontextmanager
async def _claiming(conn: AsyncConnection) -> AsyncIterator[None]:
    """Run a booking's write in a savepoint and turn the database's refusal of an overlap (or a
    deadlock between two such writes, which PostgreSQL resolves by failing one of them) into
    :class:`SlotTakenError`; the caller's transaction stays usable. On SQLite writes are serial
    and no refusal can come, so nothing is added there."""
    if conn.dialect.name != "postgresql":
        yield
        return
    try:
        async with conn.begin_nested():
            yield
    except sa.exc.DBAPIError as error:
        if sqlstate(error) in (EXCLUSION_VIOLATION, DEADLOCK_DETECTED):
            raise SlotTakenError(str(error.orig)) from error
        raise


async def qualified_staff(conn: AsyncConnection, service: Service) -> list[tuple[int, str]]:
    """Active staff who do ``service``: (id, name), by id."""
    rows = await conn.execute(
        sa.select(schema.staff.c.id, schema.staff.c.name)
        .join(schema.staff_services, schema.staff_services.c.staff_id == schema.staff.c.id)
        .where(schema.staff_services.c.service_id == service.id, schema.staff.c.active)
        .order_by(schema.staff.c.id)
    )
    return [(r[0], r[1]) for r in rows]


async def bookings_between(
    conn: AsyncConnection, start: datetime, end: datetime, exclude_id: int | None = None
) -> list[Busy]:
    """Booked appointments overlapping [start, end), except ``exclude_id``."""
    a = schema.appointments
    query = sa.select(a.c.staff_id, a.c.starts_at, a.c.ends_at).where(
        a.c.status == "booked",
        a.c.starts_at < end.astimezone(UTC).isoformat(),
        a.c.ends_at > start.astimezone(UTC).isoformat(),
    )
    if exclude_id is not None:
        query = query.where(a.c.id != exclude_id)
    rows = await conn.execute(query)
    return [Busy(r[0], datetime.fromisoformat(r[1]), datetime.fromisoformat(r[2])) for r in rows]


async def find_slots(
    conn: AsyncConnection,
    business: Business,
    service: Service,
    when: When,
    now: datetime,
    *,
    exclude_appointment: int | None = None,
    limit: int = MAX_OFFERED,
    staff_id: int | None = None,
    lead: timedelta = LEAD_TIME,
) -> list[Slot]:
    """Free slots for a service, nearest to the request first (see domain.slots.free_slots);
    with ``staff_id``, only that staff member's (none when they do not do the service)."""
    qualified = await qualified_staff(conn, service)
    staff: list[tuple[int | None, str]] = [*qualified] or [(None, "")]
    if staff_id is not None:
        staff = [s for s in qualified if s[0] == staff_id]
        if not staff:
            return []
    span = search_days(when)
    start, end = search_window(business, when, span)
    busy = await bookings_between(conn, start, end, exclude_appointment)
    return free_slots(business, service, when, now, staff, busy, days=span, limit=limit, lead=lead)


async def slot_at(
    conn: AsyncConnection,
    business: Business,
    service: Service,
    target: datetime,
    now: datetime,
    *,
    exclude_appointment: int | None = None,
    staff_id: int | None = None,
    lead: timedelta = LEAD_TIME,
) -> Slot | None:
    """The free slot starting exactly at ``target`` (the first qualified staff member free
    then, or ``staff_id``), or None when nobody can take it then."""
    exact = When(
        day=target.date(), earliest=target.time(), latest=(target + timedelta(minutes=1)).time()
    )
    free = await find_slots(
        conn,
        business,
        service,
        exact,
        now,
        exclude_appointment=exclude_appointment,
        limit=1,
        staff_id=staff_id,
        lead=lead,
    )
    return free[0] if free and free[0].starts_at == target else None


async def book(
    conn: AsyncConnection,
    customer_id: int,
    service: Service,
    slot: Slot,
    call_sid: str,
    booked_name: str = "",
) -> int:
    """Insert a booked appointment for ``slot`` (``booked_name``: the name the caller gave);
    returns its id. Raises SlotTakenError when another transaction took an overlapping slot of
    the same staff member first."""
    stamp = utc_now()
    async with _claiming(conn):
        result = await conn.execute(
            schema.appointments.insert().values(
                customer_id=customer_id,
                service_id=service.id,
                staff_id=slot.staff_id,
                starts_at=slot.starts_at.astimezone(UTC).isoformat(),
                ends_at=(slot.starts_at + timedelta(minutes=service.duration_minutes))
                .astimezone(UTC)
                .isoformat(),
                call_sid=call_sid,
                booked_name=" ".join(booked_name.split())[:200],
                created_at=stamp,
                updated_at=stamp,
            )
        )
    return new_id(result)


async def cancel(conn: AsyncConnection, appointment_id: int) -> None:
    await set_status(conn, appointment_id, "cancelled")


async def set_status(
    conn: AsyncConnection, appointment_id: int, status: Literal["cancelled", "no_show"]
) -> None:
    """Cancel an appointment, or record that the customer never came (``no_show``). Either
    way it no longer holds its staff member's time."""
    await conn.execute(
        schema.appointments.update()
        .where(schema.appointments.c.id == appointment_id)
        .values(status=status, updated_at=utc_now())
    )


async def record_reminder_outcome(conn: AsyncConnection, appointment_id: int, outcome: str) -> None:
    """What came of the appointment's reminder (confirmed, cancelled, no_answer ...)."""
    await conn.execute(
        schema.appointments.update()
        .where(schema.appointments.c.id == appointment_id)
        .values(reminder_outcome=outcome, updated_at=utc_now())
    )


async def move(conn: AsyncConnection, appointment_id: int, service: Service, slot: Slot) -> None:
    """Move an appointment to ``slot`` (its time and staff member). Raises SlotTakenError as
    :func:`book` does."""
    async with _claiming(conn):
        await conn.execute(
            schema.appointments.update()
            .where(schema.appointments.c.id == appointment_id)
            .values(
                starts_at=slot.starts_at.astimezone(UTC).isoformat(),
                ends_at=(slot.starts_at + timedelta(minutes=service.duration_minutes))
                .astimezone(UTC)
                .isoformat(),
                staff_id=slot.staff_id,
                updated_at=utc_now(),
            )
        )


async def upcoming_for_customer(
    conn: AsyncConnection, customer_id: int, now: datetime
) -> list[dict[str, Any]]:
    """The customer's booked appointments from ``now`` on, soonest first: id, starts_at, ends_at,
    service, service_id, staff."""
    rows = await conn.execute(
        sa.select(
            schema.appointments.c.id,
            schema.appointments.c.starts_at,
            schema.appointments.c.ends_at,
            schema.services.c.name.label("service"),
            schema.services.c.id.label("service_id"),
            schema.staff.c.name.label("staff"),
        )
        .join(schema.services, schema.services.c.id == schema.appointments.c.service_id)
        .join(schema.staff, schema.staff.c.id == schema.appointments.c.staff_id, isouter=True)
        .where(
            schema.appointments.c.customer_id == customer_id,
            schema.appointments.c.status == "booked",
            schema.appointments.c.starts_at >= now.astimezone(UTC).isoformat(),
        )
        .order_by(schema.appointments.c.starts_at)
    )
    return [dict(r._mapping) for r in rows]


async def count_upcoming(conn: AsyncConnection, customer_id: int, now: datetime) -> int:
    """How many booked appointments the customer has from ``now`` on."""
    a = schema.appointments
    count = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(a)
            .where(
                a.c.customer_id == customer_id,
                a.c.status == "booked",
                a.c.starts_at >= now.astimezone(UTC).isoformat(),
            )
        )
    ).scalar_one()
    return int(count)


async def list_appointments(
    db: Database, scope: Literal["upcoming", "past", "all"] = "upcoming", limit: int = 200
) -> list[dict[str, Any]]:
    """Appointments with customer, phone, service and staff names (the admin review list)."""
    a = schema.appointments
    query = (
        sa.select(
            a.c.id,
            a.c.starts_at,
            a.c.ends_at,
            a.c.status,
            a.c.call_sid,
            a.c.created_at,
            a.c.customer_id,
            a.c.service_id,
            a.c.staff_id,
            a.c.booked_name,
            a.c.reminder_outcome,
            schema.customers.c.name.label("customer"),
            schema.customers.c.phone,
            schema.services.c.name.label("service"),
            schema.staff.c.name.label("staff"),
        )
        .join(schema.customers, schema.customers.c.id == a.c.customer_id)
        .join(schema.services, schema.services.c.id == a.c.service_id)
        .join(schema.staff, schema.staff.c.id == a.c.staff_id, isouter=True)
    )
    now = datetime.now(UTC).isoformat()
    if scope == "upcoming":
        query = query.where(a.c.starts_at >= now).order_by(a.c.starts_at)
    elif scope == "past":
        query = query.where(a.c.starts_at < now).order_by(a.c.starts_at.desc())
    else:
        query = query.order_by(a.c.starts_at.desc())
    async with db.read() as conn:
        rows = await conn.execute(query.limit(limit))
        return [dict(r._mapping) for r in rows]


def _detail_query() -> sa.Select[Any]:
    a = schema.appointments
    return (
        sa.select(
            a.c.id,
            a.c.customer_id,
            a.c.service_id,
            a.c.staff_id,
            a.c.starts_at,
            a.c.ends_at,
            a.c.status,
            a.c.call_sid,
            a.c.booked_name,
            a.c.reminder_outcome,
            a.c.created_at,
            a.c.updated_at,
            schema.services.c.name.label("service"),
            schema.staff.c.name.label("staff"),
            schema.customers.c.name.label("customer"),
            schema.customers.c.phone,
        )
        .join(schema.customers, schema.customers.c.id == a.c.customer_id)
        .join(schema.services, schema.services.c.id == a.c.service_id)
        .join(schema.staff, schema.staff.c.id == a.c.staff_id, isouter=True)
    )


async def appointment_detail(conn: AsyncConnection, appointment_id: int) -> dict[str, Any] | None:
    """One appointment with its service, staff and customer (name, phone), or None."""
    row = (
        (await conn.execute(_detail_query().where(schema.appointments.c.id == appointment_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def customer_appointments(conn: AsyncConnection, customer_id: int) -> list[dict[str, Any]]:
    """Every appointment of a customer, whatever its status, latest start first."""
    a = schema.appointments
    rows = await conn.execute(
        _detail_query().where(a.c.customer_id == customer_id).order_by(a.c.starts_at.desc())
    )
    return [dict(r) for r in rows.mappings()]
