"""Shared by the outbound tests: a settable clock, a recording Dialer (it stands in for Twilio's
Calls.create), and rows written straight into the seeded database."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from agent.outbound.jobs import DialError, OutboundJob
from tools.store import schema
from tools.store.db import Database, new_id
from tools.store.schema import iso_utc

_sids = itertools.count(1)


class Clock:
    """A fixed instant the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class RecordingDialer:
    """Records each job it is asked to place and answers with a fresh CallSid; ``errors`` (a
    queue of DialErrors) makes the next placements fail instead."""

    def __init__(self, delay: float = 0.0) -> None:
        self.placed: list[tuple[OutboundJob, str]] = []
        self.errors: list[DialError] = []
        self.delay = delay

    async def place(self, job: OutboundJob) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        sid = f"CA{next(_sids):032x}"
        self.placed.append((job, sid))
        return sid


async def add_customer(
    db: Database, phone: str, name: str = "Dana", *, do_not_call: bool = False
) -> int:
    stamp = iso_utc(datetime.now(UTC))
    async with db.write() as conn:
        return new_id(
            await conn.execute(
                schema.customers.insert().values(
                    phone=phone,
                    name=name,
                    created_at=stamp,
                    updated_at=stamp,
                    do_not_call=do_not_call,
                )
            )
        )


async def add_appointment(
    db: Database,
    customer_id: int,
    starts_at: datetime,
    status: str = "booked",
    *,
    booked_at: datetime | None = None,
) -> int:
    """A booked appointment (by default booked a week before it starts)."""
    stamp = iso_utc(booked_at or starts_at - timedelta(days=7))
    async with db.write() as conn:
        service_id = (await conn.execute(sa.select(schema.services.c.id).limit(1))).scalar()
        return new_id(
            await conn.execute(
                schema.appointments.insert().values(
                    customer_id=customer_id,
                    service_id=service_id,
                    starts_at=iso_utc(starts_at),
                    ends_at=iso_utc(starts_at + timedelta(minutes=30)),
                    status=status,
                    call_sid="",
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        )


async def set_business(db: Database, **values: object) -> None:
    async with db.write() as conn:
        await conn.execute(schema.business.update().values(**values))


async def reminder_outcome(db: Database, appointment_id: int) -> str:
    async with db.read() as conn:
        return str(
            (
                await conn.execute(
                    sa.select(schema.appointments.c.reminder_outcome).where(
                        schema.appointments.c.id == appointment_id
                    )
                )
            ).scalar()
        )
