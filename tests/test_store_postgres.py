"""The store on a real PostgreSQL (the session's throw-away cluster, tests/postgres.py): what only
PostgreSQL has to guarantee, because its transactions run side by side in several workers.

Several :class:`Database` objects on one database stand for several workers (each its own pool
of connections); the store code is the real one throughout."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import BUSINESS_YAML, make_ctx, pg_database
from tests.postgres import Cluster
from tools.actions.calendar import book_appointment
from tools.domain.slots import Slot
from tools.errors import ToolError
from tools.store import schema
from tools.store.appointments import SlotTakenError, book
from tools.store.business import load_business, seed_business
from tools.store.db import Database
from tools.store.knowledge import search_articles

WORKERS = 3


@pytest.fixture
async def workers(pg_cluster: Cluster) -> AsyncIterator[list[Database]]:
    """WORKERS handles on one fresh, migrated and seeded database."""
    url = await pg_database(pg_cluster)
    handles = [Database(url) for _ in range(WORKERS)]
    yield handles
    for handle in handles:
        await handle.close()


async def booked(db: Database) -> list[tuple[int | None, str, str]]:
    a = schema.appointments
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(a.c.staff_id, a.c.starts_at, a.c.ends_at)
            .where(a.c.status == "booked")
            .order_by(a.c.starts_at)
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_fifty_callers_racing_for_five_slots_book_exactly_five(workers: list[Database]):
    # Beard trims only James does: five times, ten callers each, spread over three workers.
    times = ["Friday at 10am", "Friday at 11am", "Friday at noon", "Friday at 1pm", "Friday at 2pm"]
    phones = (f"+1413555{n:04d}" for n in itertools.count(1000))
    attempts = [
        book_appointment(make_ctx(workers[i % WORKERS], phone=next(phones)), "beard trim", when)
        for i, when in enumerate(times * 10)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, ToolError)]
    assert len(wins) == 5 and len(losses) == 45, [r for r in results if isinstance(r, Exception)]
    assert all(loss.code == "slot_taken" for loss in losses)
    assert sorted(w.data["start"] for w in wins) == sorted({w.data["start"] for w in wins}), (
        "two wins for one time"
    )
    rows = await booked(workers[0])
    assert len(rows) == 5 and len({r[1] for r in rows}) == 5


async def test_the_database_itself_refuses_an_overlapping_booking(workers: list[Database]):
    business = await load_business(workers[0])
    trim = next(s for s in business.services if s.name == "Beard Trim")
    start = datetime(2026, 11, 27, 15, 0, tzinfo=business.tz)
    async with workers[0].write() as conn:
        customer = (
            await conn.execute(
                schema.customers.insert()
                .values(phone="+14135550111", created_at=start, updated_at=start)
                .returning(schema.customers.c.id)
            )
        ).scalar_one()
        await book(
            conn, customer, trim, Slot(start, 2, "James"), "CA31000000000000000000000000000000"
        )
    # Skipping the tool's check: a booking starting inside the first, same staff member.
    with pytest.raises(SlotTakenError):
        async with workers[1].write() as conn:
            await book(
                conn,
                customer,
                trim,
                Slot(start + timedelta(minutes=5), 2, "James"),
                "CA32000000000000000000000000000000",
            )
    # Another staff member, or the time right after, are fine.
    async with workers[1].write() as conn:
        await book(
            conn, customer, trim, Slot(start, 1, "Maria"), "CA33000000000000000000000000000000"
        )
        await book(
            conn,
            customer,
            trim,
            Slot(start + timedelta(minutes=15), 2, "James"),
            "CA34000000000000000000000000000000",
        )
    assert len(await booked(workers[0])) == 3


async def test_instants_are_timestamptz_compared_as_time(workers: list[Database]):
    async with workers[0].read() as conn:
        kinds: dict[str, str] = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'appointments'"
                    )
                )
            ).all()
        )
    assert kinds["starts_at"] == kinds["ends_at"] == "timestamp with time zone"
    assert kinds["created_at"] == "timestamp with time zone"
    # Written in another zone, read back in UTC, ordered by instant (not by text).
    await book_appointment(make_ctx(workers[0]), "beard trim", "Friday at 9am")
    await book_appointment(
        make_ctx(workers[0], phone="+14135550124"), "beard trim", "Friday at 10am"
    )
    rows = await booked(workers[0])
    assert [r[1] for r in rows] == ["2026-11-27T14:00:00+00:00", "2026-11-27T15:00:00+00:00"]


async def test_workers_starting_at_once_migrate_and_seed_once(pg_cluster: Cluster):
    url = await pg_database(pg_cluster, template="template0")
    handles = [Database(url) for _ in range(4)]
    try:
        # Without the advisory lock the four DDL transactions block one another: fail, not hang.
        await asyncio.wait_for(asyncio.gather(*(h.migrate() for h in handles)), timeout=60)
        added = await asyncio.gather(*(seed_business(h, BUSINESS_YAML) for h in handles))
        async with handles[0].read() as conn:
            versions = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).all()
            staff = (
                await conn.execute(sa.select(sa.func.count()).select_from(schema.staff))
            ).scalar()
    finally:
        for handle in handles:
            await handle.close()
    assert len(versions) == 1
    assert sum(a["business"] for a in added) == 1 and sum(a["staff"] for a in added) == 2
    assert staff == 2


async def test_full_text_search_stems_ranks_and_follows_edits(workers: list[Database]):
    db = workers[0]
    hits = await search_articles(db, "where do people park", limit=5)
    assert hits[0]["title"] == "Parking" and hits[0]["score"] > 0
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    async with db.write() as conn:
        await conn.execute(
            schema.kb_articles.update()
            .where(schema.kb_articles.c.title == "Parking")
            .values(body="Bicycles go in the rack by the door.")
        )
    assert (await search_articles(db, "bicycle rack"))[0]["title"] == "Parking"


async def test_one_caller_booking_from_several_calls_at_once_is_one_customer(
    workers: list[Database],
):
    # The first booking of a new number creates its customer; here every worker does at once.
    times = ["Friday at 10am", "Friday at 11am", "Friday at noon", "Friday at 1pm"]
    results = await asyncio.gather(
        *(
            book_appointment(make_ctx(workers[i % WORKERS]), "beard trim", when, "Anna Lee")
            for i, when in enumerate(times)
        ),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    async with workers[0].read() as conn:
        customers = (await conn.execute(sa.select(schema.customers.c.phone))).all()
    assert [c.phone for c in customers] == ["+14135550123"]
    assert len(await booked(workers[0])) == 4
