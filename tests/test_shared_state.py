"""State shared by several workers, kept in the database (on SQLite and PostgreSQL): instances and
their reaper, call slots counted across workers, used stream-token nonces, per-client limits.

Two :class:`Database` handles on one database stand for two workers; their clocks are moved by
hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from tests.conftest import Clock
from tools.store import schema
from tools.store.calls import CallStore
from tools.store.db import Database
from tools.store.instances import Instance, Instances, Reaped, pid_alive
from tools.store.limits import RateEvents
from tools.store.nonces import StreamNonces

STALE = 15.0


@pytest.fixture
async def second(db: Database) -> AsyncIterator[Database]:
    """Another handle (another worker's pool) on ``db``'s database."""
    other = Database(db.url)
    yield other
    await other.close()


async def outcome(db: Database, call_sid: str) -> tuple[str, bool]:
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(schema.calls.c.outcome, schema.calls.c.ended_at).where(
                    schema.calls.c.call_sid == call_sid
                )
            )
        ).one()
    return row.outcome, row.ended_at is not None


async def test_the_reaper_closes_exactly_the_stale_instances_calls(db: Database, second: Database):
    clock = Clock(1000.0)
    a = Instances(db, Instance("host-a-1", "host-a", 1), clock=clock)
    b = Instances(second, Instance("host-b-2", "host-b", 2), clock=clock)
    await a.register()
    await b.register()
    await CallStore(db, a.me.id).start_call(call_sid="CA61310000000000000000000000000000")
    await CallStore(db, a.me.id).start_call(call_sid="CA61320000000000000000000000000000")
    await CallStore(second, b.me.id).start_call(call_sid="CA62310000000000000000000000000000")
    assert await a.take_slot(5) and await b.take_slot(5) and await b.take_slot(5)
    finished = CallStore(db, a.me.id)
    await finished.finish_call(
        await finished.start_call(call_sid="CA61330000000000000000000000000000"),
        outcome="completed",
    )

    clock.now += 10
    assert await a.heartbeat() and await b.heartbeat()
    assert await b.reap(STALE) == Reaped()  # nobody is gone yet
    clock.now += 10
    assert await b.heartbeat()  # a misses its beats from here on
    clock.now += 10
    reaped = await b.reap(STALE)
    assert reaped.instances == ("host-a-1",) and reaped.calls == 2 and reaped.slots == 1
    assert await outcome(db, "CA61310000000000000000000000000000") == ("interrupted", True)
    assert await outcome(db, "CA61320000000000000000000000000000") == ("interrupted", True)
    assert await outcome(db, "CA61330000000000000000000000000000") == ("completed", True)
    assert await outcome(db, "CA62310000000000000000000000000000") == (
        "in_progress",
        False,
    )  # the live worker's call
    assert await b.slots_taken() == 2
    assert (await b.reap(STALE)).calls == 0  # done once
    # The reaped one comes back (it was only slow): it registers again, told it was reaped.
    assert await a.heartbeat() is False
    assert (await b.reap(STALE)).instances == ()


async def test_a_dead_pid_on_the_same_host_is_reaped_at_once(db: Database, second: Database):
    clock = Clock(1000.0)
    dead = {41}
    old = Instances(db, Instance("box-41-x", "box", 41), clock=clock)
    new = Instances(
        second, Instance("box-42-y", "box", 42), clock=clock, alive=lambda p: p not in dead
    )
    other_host = Instances(db, Instance("elsewhere-41-z", "elsewhere", 41), clock=clock)
    for instance in (old, new, other_host):
        await instance.register()
    await CallStore(db, old.me.id).start_call(call_sid="CA6f6c6400000000000000000000000000")
    await CallStore(db, other_host.me.id).start_call(call_sid="CA74686572650000000000000000000000")
    await CallStore(db).start_call(
        call_sid="CA6c656761637900000000000000000000"
    )  # written before instances existed
    reaped = await new.reap(STALE)
    assert reaped.instances == ("box-41-x",) and reaped.calls == 2
    assert await outcome(db, "CA6f6c6400000000000000000000000000") == ("interrupted", True)
    assert await outcome(db, "CA6c656761637900000000000000000000") == ("interrupted", True)
    assert await outcome(db, "CA74686572650000000000000000000000") == (
        "in_progress",
        False,
    )  # pid 41 elsewhere is alive


async def test_two_reapers_at_once_do_the_work_once(db: Database, second: Database):
    clock = Clock(1000.0)
    gone = Instances(db, Instance("h-1-a", "h", 1), clock=clock)
    await gone.register()
    for n in range(5):
        await CallStore(db, gone.me.id).start_call(call_sid=f"CA{'d' * 24}{n:08x}")
    clock.now += 100
    one = Instances(db, Instance("h-2-b", "h2", 2), clock=clock)
    two = Instances(second, Instance("h-3-c", "h3", 3), clock=clock)
    await one.register()
    await two.register()
    results = await asyncio.gather(one.reap(STALE), two.reap(STALE))
    assert sorted(r.calls for r in results) == [0, 5]
    assert sorted(len(r.instances) for r in results) == [0, 1]


async def test_call_slots_are_counted_across_workers(db: Database, second: Database):
    a = Instances(db, Instance("a", "h", 1))
    b = Instances(second, Instance("b", "h", 2))
    taken = await asyncio.gather(*(x.take_slot(3) for x in (a, b) * 4))
    slots = [s for s in taken if s]
    assert len(slots) == 3 and len(set(slots)) == 3
    assert await a.slots_taken() == 3
    await b.release_slot(slots[0])  # any worker may free it; an unknown id does nothing
    await b.release_slot("nope")
    assert await a.slots_taken() == 2 and await a.take_slot(3) and not await b.take_slot(3)
    of_a = await _owned(db, "a")
    assert of_a >= 1
    await a.remove()  # leaving frees its own slots only
    assert await b.slots_taken() == 3 - of_a == await _owned(db, "b")


async def _owned(db: Database, instance_id: str) -> int:
    slots = schema.call_slots
    async with db.read() as conn:
        query = sa.select(sa.func.count()).where(slots.c.instance_id == instance_id)
        return int((await conn.execute(query)).scalar_one())


async def test_a_nonce_is_used_once_by_all_workers(db: Database, second: Database):
    clock = Clock(1000.0)
    mine, theirs = StreamNonces(db, clock), StreamNonces(second, clock)
    assert await mine.use("n1", 1030.0)
    assert not await theirs.use("n1", 1030.0) and not await mine.use("n1", 1030.0)
    results = await asyncio.gather(*(n.use("n2", 1030.0) for n in (mine, theirs) * 3))
    assert results.count(True) == 1
    clock.now += 400  # long past both tokens' expiry
    await mine.use("n3", clock.now + 30)
    assert await theirs.purge() == 2
    assert not await mine.use("n3", clock.now + 30)  # a live one is kept


async def test_rate_events_are_shared_and_slide(db: Database, second: Database):
    clock = Clock(1000.0)
    mine = RateEvents(db, "demo_call", limit=2, window_secs=60.0, clock=clock)
    theirs = RateEvents(second, "demo_call", limit=2, window_secs=60.0, clock=clock)
    logins = RateEvents(db, "admin_login_failure", limit=1, window_secs=600.0, clock=clock)
    assert await mine.hit("1.2.3.4") == 0.0
    clock.now += 10
    assert await theirs.hit("1.2.3.4") == 0.0
    assert await theirs.hit("1.2.3.4") == pytest.approx(50.0)  # the first leaves in 50 s
    assert await mine.hit("5.6.7.8") == 0.0  # another client is not affected
    assert not await logins.blocked("1.2.3.4")
    await logins.add("1.2.3.4")
    assert await logins.count("1.2.3.4") == 1 and await logins.blocked("1.2.3.4")
    clock.now += 50
    assert await mine.hit("1.2.3.4") == 0.0
    assert await mine.count("1.2.3.4") == 2
    await mine.clear("1.2.3.4")
    assert await theirs.count("1.2.3.4") == 0
    clock.now += 1000
    assert await logins.count("1.2.3.4") == 0 and not await logins.blocked("1.2.3.4")


def test_pid_alive_sees_this_process_and_not_a_finished_one() -> None:
    import os
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert pid_alive(os.getpid()) and not pid_alive(int(child.stdout))


def test_instance_ids_name_their_process() -> None:
    import os

    one, two = Instance.here(), Instance.here()
    assert one.pid == os.getpid() and one.id.startswith(f"{one.host}-{one.pid}-")
    assert one.id != two.id


async def test_failed_sign_ins_lock_a_client_out_of_every_worker(db: Database, second: Database):
    from agent.admin.access import LoginLimiter

    clock = Clock(1000.0)
    here, there = LoginLimiter(db, 3, 600.0, clock), LoginLimiter(second, 3, 600.0, clock)
    for limiter in (here, there, here):
        assert not await limiter.blocked("203.0.113.9")
        await limiter.failed("203.0.113.9")
    assert await there.blocked("203.0.113.9") and await here.blocked("203.0.113.9")
    assert not await there.blocked("198.51.100.1")  # that client only
    clock.now += 601
    assert not await there.blocked("203.0.113.9")  # the window slid past them
    await here.failed("203.0.113.9")
    await there.succeeded("203.0.113.9")  # a success anywhere forgives
    assert await here._failures.count("203.0.113.9") == 0
