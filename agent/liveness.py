"""This worker among others on one database: its heartbeat, the reaper that closes the calls of
workers that died, and the shared tables' upkeep (tools.store.instances, tools.store.nonces).

:func:`keep_alive` runs for the app's lifetime: every ``heartbeat_secs`` it beats, reaps the
instances silent for three beats (or whose pid on this host is gone), retries giving back any
call slot whose release failed, and now and then forgets expired stream-token nonces.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger

from tools.store.instances import Instances
from tools.store.nonces import StreamNonces

#: A worker silent for this many heartbeats is dead.
MISSED_BEATS = 3
PURGE_EVERY_SECS = 60.0


async def reap(instances: Instances, heartbeat_secs: float) -> int:
    """Reap the gone instances once (logging what was done); returns the calls closed."""
    reaped = await instances.reap(MISSED_BEATS * heartbeat_secs)
    if reaped.instances or reaped.calls or reaped.slots:
        gone = ", ".join(reaped.instances) or "no registered instance"
        logger.warning(
            f"{reaped.calls} call(s) left open by workers that are gone ({gone}) marked "
            f"interrupted; {reaped.slots} line(s) freed"
        )
    return reaped.calls


async def keep_alive(
    instances: Instances,
    nonces: StreamNonces,
    heartbeat_secs: float,
    unreleased: set[str],
) -> None:
    """Beat, reap and tidy every ``heartbeat_secs`` until cancelled; a failing round is logged
    and the next one tried. ``unreleased``: slots to give back (removed once given back)."""
    purged_at = time.monotonic()
    while True:
        await asyncio.sleep(heartbeat_secs)
        try:
            if not await instances.heartbeat():
                logger.error(
                    f"worker {instances.me.id} was taken for dead (no heartbeat for "
                    f"{MISSED_BEATS * heartbeat_secs:g}s); registered again"
                )
            await reap(instances, heartbeat_secs)
            for slot in list(unreleased):
                await instances.release_slot(slot)
                unreleased.discard(slot)
            if time.monotonic() - purged_at > PURGE_EVERY_SECS:
                purged_at = time.monotonic()
                await nonces.purge()
        except Exception as exc:  # the database may be down for a while: try again next beat
            logger.warning(f"worker heartbeat failed: {type(exc).__name__}: {exc}")
