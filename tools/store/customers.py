"""Customers as stored: lookup by phone, creation, name and email updates, notes, do-not-call.

Phone numbers are E.164 (checked by the caller of these functions); a customer's name on file is
replaced only where the rules below say so.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.db import Database, new_id, utc_now


async def lookup_customer(conn: AsyncConnection, phone: str) -> dict[str, Any] | None:
    """The customer row (id, phone, name, email, ...) for ``phone``, or None."""
    row = (
        (await conn.execute(sa.select(schema.customers).where(schema.customers.c.phone == phone)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def save_customer(conn: AsyncConnection, phone: str, name: str = "") -> dict[str, Any]:
    """The customer on ``phone``, created if new; a non-empty ``name`` replaces the one on file.
    Returns {id, phone, name, email}."""
    customer = await lookup_customer(conn, phone)
    name = " ".join(name.split())[:200]
    stamp = utc_now()
    if customer is None:
        new = await _insert_customer(conn, phone, name, stamp)
        if new is not None:
            return {"id": new, "phone": phone, "name": name, "email": ""}
        customer = await lookup_customer(conn, phone)
        if customer is None:
            raise RuntimeError(f"customer {phone} neither inserted nor found")
    if name and name != customer["name"]:
        await conn.execute(
            schema.customers.update()
            .where(schema.customers.c.id == customer["id"])
            .values(name=name, updated_at=stamp)
        )
        customer["name"] = name
    return customer


async def claim_customer(
    conn: AsyncConnection, phone: str, name: str = ""
) -> tuple[dict[str, Any], bool]:
    """(the customer on ``phone``, created): a new record with ``name`` when there was none;
    an existing one exactly as it is (it may be someone else's)."""
    customer = await lookup_customer(conn, phone)
    if customer is not None:
        return customer, False
    name = " ".join(name.split())[:200]
    new = await _insert_customer(conn, phone, name, utc_now())
    if new is not None:
        return {"id": new, "phone": phone, "name": name, "email": ""}, True
    customer = await lookup_customer(conn, phone)
    if customer is None:
        raise RuntimeError(f"customer {phone} neither inserted nor found")
    return customer, False


async def _insert_customer(conn: AsyncConnection, phone: str, name: str, stamp: str) -> int | None:
    """Insert a customer; returns the new id, or None when another transaction inserted ``phone``
    first (PostgreSQL, where writes run side by side; the caller then reads that row). On
    SQLite writes are serial, so the plain insert cannot meet a competitor."""
    values = {"phone": phone, "name": name, "email": "", "created_at": stamp, "updated_at": stamp}
    if conn.dialect.name != "postgresql":
        return new_id(await conn.execute(schema.customers.insert().values(**values)))
    inserted = await conn.execute(
        postgresql.insert(schema.customers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["phone"])
        .returning(schema.customers.c.id)
    )
    found = inserted.scalar()
    return None if found is None else int(found)


async def set_email(conn: AsyncConnection, customer_id: int, email: str) -> None:
    await conn.execute(
        schema.customers.update()
        .where(schema.customers.c.id == customer_id)
        .values(email=email, updated_at=utc_now())
    )


async def add_note(conn: AsyncConnection, customer_id: int, text: str, call_sid: str) -> None:
    await conn.execute(
        schema.customer_notes.insert().values(
            customer_id=customer_id, text=text, call_sid=call_sid, created_at=utc_now()
        )
    )


async def callback_customer(
    db: Database, number: str, name: str = "", *, owner: bool = False
) -> int:
    """The CRM customer to call back on ``number``, created (with ``name``) if new. An existing
    record changes only for its ``owner`` (the caller proven to own the number): an empty name
    on file is filled in, an existing one is never overwritten (someone else may call from that
    phone)."""
    name = " ".join(name.split())[:200]
    stamp = utc_now()
    async with db.write() as conn:
        row = (
            await conn.execute(
                sa.select(schema.customers.c.id, schema.customers.c.name).where(
                    schema.customers.c.phone == number
                )
            )
        ).first()
        if row is None:
            new = await _insert_customer(conn, number, name, stamp)
            if new is not None:
                return new
            row = (
                await conn.execute(
                    sa.select(schema.customers.c.id, schema.customers.c.name).where(
                        schema.customers.c.phone == number
                    )
                )
            ).one()
        if owner and name and not row.name:
            await conn.execute(
                schema.customers.update()
                .where(schema.customers.c.id == row.id)
                .values(name=name, updated_at=stamp)
            )
        return int(row.id)


async def stop_calling(conn: AsyncConnection, phone: str) -> tuple[int, int]:
    """The owner of ``phone`` asked never to be called again: their customer record (created
    if there is none) gets ``do_not_call`` (kept from the first request, with its time), and
    every outbound call to them still scheduled is cancelled. Returns (customer id, calls
    cancelled)."""
    customer, _ = await claim_customer(conn, phone)
    stamp = utc_now()
    c = schema.customers.c
    await conn.execute(
        schema.customers.update()
        .where(c.id == customer["id"], c.do_not_call == sa.false())
        .values(do_not_call=True, do_not_call_at=stamp, updated_at=stamp)
    )
    o = schema.outbound_calls.c
    cancelled = await conn.execute(
        schema.outbound_calls.update()
        .where(
            o.status == "scheduled",
            sa.or_(o.customer_id == customer["id"], o.to_phone == phone),
        )
        .values(status="cancelled", last_error="do not call", updated_at=stamp)
    )
    return int(customer["id"]), int(cancelled.rowcount or 0)
