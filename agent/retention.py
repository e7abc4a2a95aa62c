"""Personal data is kept only as long as the business says: transcripts and recordings past
FRONTDESK_RETENTION_DAYS are deleted once a day, and one caller's data on request.

Recordings are files under DATA_DIR/recordings (possibly a mount shared by several workers);
only files inside that folder are ever deleted. With several workers each runs the daily pass;
the database serialises them and the second finds nothing left.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loguru import logger

from agent.settings import Settings
from tools.store.db import Database
from tools.store.privacy import Deleted, expire_call_content, forget_caller

RETENTION_INTERVAL_SECS = 24 * 3600.0


def remove_recordings(paths: list[str], data_dir: Path) -> int:
    """Delete the recording files among ``paths`` that lie inside ``data_dir``/recordings
    (blocking; run it in a thread). Returns how many were removed; a missing file is fine."""
    root = (Path(data_dir) / "recordings").resolve()
    removed = 0
    for raw in paths:
        path = Path(raw).resolve()
        if not path.is_relative_to(root):
            logger.warning("retention: a recording path outside the recordings folder was skipped")
            continue
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


async def expire_old_content(
    db: Database, settings: Settings, now: datetime | None = None
) -> Deleted:
    """Delete transcripts and recordings of calls older than the retention period (none when
    it is 0: keep forever). Logged with what was removed."""
    if settings.retention_days <= 0:
        return Deleted()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    async with db.write(serial="retention") as conn:
        deleted = await expire_call_content(conn, cutoff)
    await asyncio.to_thread(remove_recordings, deleted.recordings, settings.data_dir)
    if deleted.counts:
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(deleted.counts.items()))
        logger.info(
            f"retention: deleted {summary} of calls before {cutoff:%Y-%m-%d} "
            f"(FRONTDESK_RETENTION_DAYS={settings.retention_days})"
        )
    return deleted


async def forget(db: Database, settings: Settings, phone: str, actor: str) -> Deleted:
    """Delete everything kept about the caller on ``phone`` (E.164), recordings included."""
    async with db.write() as conn:
        deleted = await forget_caller(conn, phone, actor)
    await asyncio.to_thread(remove_recordings, deleted.recordings, settings.data_dir)
    logger.info(f"{actor} had a caller's data deleted: {deleted.counts or 'nothing was kept'}")
    return deleted


async def retention_loop(
    db: Database,
    settings: Settings,
    interval_secs: float = RETENTION_INTERVAL_SECS,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """Run :func:`expire_old_content` now and then every ``interval_secs`` until cancelled; a
    failed pass is logged and tried again at the next."""
    while True:
        try:
            await expire_old_content(db, settings, clock() if clock else None)
        except Exception as exc:
            logger.error(f"retention: deleting old transcripts and recordings failed: {exc}")
        await asyncio.sleep(interval_secs)
