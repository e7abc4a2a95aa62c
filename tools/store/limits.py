"""Per-client sliding-window counts shared by every worker: the browser demo's calls a minute
and the admin console's failed sign-ins. Each event is a row (scope, client key, time); a scope's
rows older than its window are deleted as new ones come, so the table stays small."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.db import Database

_events = schema.rate_events


class RateEvents:
    """At most ``limit`` events of one ``scope`` per client key in the last ``window_secs``
    (a wall clock, shared by the machines; injectable for tests). Satisfies
    telephony.host.ClientLimit."""

    def __init__(
        self,
        db: Database,
        scope: str,
        *,
        limit: int,
        window_secs: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.db = db
        self.scope = scope
        self.limit = limit
        self.window = window_secs
        self._clock = clock

    async def hit(self, key: str) -> float:
        """Record an event for ``key`` if fewer than ``limit`` are in the window and return 0.0;
        else record nothing and return the seconds until one leaves the window."""
        now = self._clock()
        async with self.db.write(serial=f"rate:{self.scope}") as conn:
            await self._prune(conn, now)
            count, oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(_events.c.at)).where(
                        _events.c.scope == self.scope, _events.c.key == key
                    )
                )
            ).one()
            if count >= self.limit:
                return max(0.001, float(oldest) + self.window - now)
            await conn.execute(_events.insert().values(scope=self.scope, key=key, at=now))
            return 0.0

    async def blocked(self, key: str) -> bool:
        """Whether ``key`` has reached the limit (its next :meth:`hit` would be refused)."""
        return await self.count(key) >= self.limit

    async def count(self, key: str) -> int:
        """Events of ``key`` in the window."""
        cutoff = self._clock() - self.window
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(sa.func.count()).where(
                            _events.c.scope == self.scope,
                            _events.c.key == key,
                            _events.c.at > cutoff,
                        )
                    )
                ).scalar_one()
            )

    async def add(self, key: str) -> None:
        """Record an event for ``key``, past the limit too (failures to count)."""
        now = self._clock()
        async with self.db.write() as conn:
            await self._prune(conn, now)
            await conn.execute(_events.insert().values(scope=self.scope, key=key, at=now))

    async def clear(self, key: str) -> None:
        """Forget ``key``'s events."""
        async with self.db.write() as conn:
            await conn.execute(
                _events.delete().where(_events.c.scope == self.scope, _events.c.key == key)
            )

    async def _prune(self, conn: AsyncConnection, now: float) -> None:
        await conn.execute(
            _events.delete().where(_events.c.scope == self.scope, _events.c.at <= now - self.window)
        )
