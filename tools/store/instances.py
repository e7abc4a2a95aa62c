"""Worker processes sharing one database: who is alive, the call lines they hold, and the reaper
that cleans up after the dead ones.

Each process registers an instance (``host-pid-random``) and beats its heartbeat every few
seconds. An instance is gone when its heartbeat is older than ``stale_after`` seconds, or when it
ran on this host under a pid that no longer runs (so a restarted single server closes its
predecessor's calls at once). The reaper marks a gone instance's open calls ``interrupted``,
frees its call slots and deletes its row; it runs under one lock (PostgreSQL's advisory lock,
SQLite's write lock), so two workers reaping at once do the work once.

Call slots (``call_slots``) count the calls of all workers against one limit; taking one is
atomic across processes for the same reason. Each slot belongs to a pool: :data:`PHONE` lines
(FRONTDESK_MAX_CALLS) or the browser :data:`DEMO`'s (FRONTDESK_DEMO_MAX_CALLS), each counted
against its own limit only, so demo calls never take a phone line nor phone calls the demo's
room. The pools share one table rather than a table each because a slot's whole life is the
same in both: held by a worker, given back by id, freed with a worker that is gone (the reaper,
:meth:`Instances.remove`) and retried by the heartbeat when a release failed; one column keeps
all of that in one place.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from tools.store import schema
from tools.store.db import Database, utc_now

_instances, _slots, _calls = schema.instances, schema.call_slots, schema.calls

#: The call slot pools: phone lines and the browser demo's own.
PHONE, DEMO = "phone", "demo"
POOLS = (PHONE, DEMO)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Instance:
    """This process as the database knows it."""

    id: str
    host: str
    pid: int

    @classmethod
    def here(cls) -> Instance:
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}-{pid}-{secrets.token_hex(3)}"[:100], host[:200], pid)


@dataclass(frozen=True)
class Reaped:
    """What one reaping did: the instances found gone, calls closed, slots freed."""

    instances: tuple[str, ...] = ()
    calls: int = 0
    slots: int = 0


class Instances:
    """The ``instances`` and ``call_slots`` tables, seen from ``me``."""

    def __init__(
        self,
        db: Database,
        me: Instance,
        *,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.db = db
        self.me = me
        self._clock = clock
        self._alive = alive

    async def register(self) -> None:
        """Add (or refresh) this instance's row."""
        now = self._clock()
        async with self.db.write() as conn:
            await conn.execute(_instances.delete().where(_instances.c.id == self.me.id))
            await conn.execute(
                _instances.insert().values(
                    id=self.me.id,
                    host=self.me.host,
                    pid=self.me.pid,
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    async def heartbeat(self) -> bool:
        """Beat; False when the row was gone (another worker reaped us) and was added again."""
        now = self._clock()
        async with self.db.write() as conn:
            result = await conn.execute(
                _instances.update().where(_instances.c.id == self.me.id).values(heartbeat_at=now)
            )
        if result.rowcount:
            return True
        await self.register()
        return False

    async def remove(self) -> None:
        """Leave: this instance's row and slots are deleted (its calls have finished)."""
        async with self.db.write() as conn:
            await conn.execute(_slots.delete().where(_slots.c.instance_id == self.me.id))
            await conn.execute(_instances.delete().where(_instances.c.id == self.me.id))

    async def reap(self, stale_after: float) -> Reaped:
        """Close the open calls and free the slots of every instance that is gone (see the
        module's docstring), and of none that is alive; delete the gone instances' rows. Open
        calls of no registered instance (written before instances existed) are closed too."""
        now = self._clock()
        async with self.db.write(serial="reaper") as conn:
            rows = (await conn.execute(sa.select(_instances))).all()
            gone = tuple(
                r.id for r in rows if r.id != self.me.id and self._gone(r, now - stale_after)
            )
            live = {r.id for r in rows if r.id not in gone} | {self.me.id}
            closed = await conn.execute(
                _calls.update()
                .where(_calls.c.ended_at.is_(None), _calls.c.instance_id.not_in(live))
                .values(ended_at=utc_now(), outcome="interrupted")
            )
            freed = await conn.execute(_slots.delete().where(_slots.c.instance_id.not_in(live)))
            if gone:
                await conn.execute(_instances.delete().where(_instances.c.id.in_(gone)))
        return Reaped(gone, int(closed.rowcount or 0), int(freed.rowcount or 0))

    def _gone(self, row: sa.Row[tuple[str, str, int, float, float]], cutoff: float) -> bool:
        """Heartbeat older than ``cutoff``, or on this host with a pid that no longer runs."""
        if row.heartbeat_at < cutoff:
            return True
        return row.host == self.me.host and not self._alive(row.pid)

    # --- call slots --------------------------------------------------------------------------

    async def take_slot(self, limit: int, pool: str = PHONE) -> str:
        """Take one of ``limit`` slots of ``pool`` shared by all instances; its id, or "" when
        all are taken."""
        if pool not in POOLS:
            raise ValueError(f"unknown call slot pool {pool!r}; expected one of {POOLS}")
        async with self.db.write(serial=f"call_slots:{pool}") as conn:
            taken = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(_slots).where(_slots.c.pool == pool)
                )
            ).scalar()
            if int(taken or 0) >= limit:
                return ""
            slot = secrets.token_hex(16)
            await conn.execute(
                _slots.insert().values(
                    id=slot, instance_id=self.me.id, taken_at=self._clock(), pool=pool
                )
            )
            return slot

    async def release_slot(self, slot: str) -> None:
        """Give back a slot :meth:`take_slot` gave, of either pool (nothing happens for an
        unknown one)."""
        async with self.db.write() as conn:
            await conn.execute(_slots.delete().where(_slots.c.id == slot))

    async def slots_taken(self, pool: str = PHONE) -> int:
        """Slots of ``pool`` taken by all instances."""
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(sa.func.count()).select_from(_slots).where(_slots.c.pool == pool)
                    )
                ).scalar_one()
            )
