"""The audit log as stored: one row per change (who, when, what, before and after)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.db import Database, utc_now


async def record_audit(
    conn: AsyncConnection,
    actor: str,
    action: str,
    entity: str,
    entity_id: int | str = "",
    summary: str = "",
    changes: dict[str, Any] | None = None,
) -> None:
    """Add an entry in the caller's transaction, so it is saved exactly when the change is."""
    await conn.execute(
        schema.audit_log.insert().values(
            at=utc_now(),
            actor=actor[:200],
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            summary=summary[:1000],
            changes=changes or {},
        )
    )


async def list_audit(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Entries newest first."""
    t = schema.audit_log
    async with db.read() as conn:
        rows = await conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit).offset(offset))
        return [dict(r._mapping) for r in rows]
