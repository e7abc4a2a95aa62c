"""The admin console's review lists: calls (through the one call-record read model), upcoming
and past appointments, callback requests, and the change log."""

from __future__ import annotations

from typing import Any, Literal

from tools.store.appointments import list_appointments
from tools.store.audit import list_audit
from tools.store.calls import CallRecords
from tools.store.db import Database
from tools.store.handoffs import list_callbacks


class AdminReview:
    """What happened: calls, appointments, messages to call back, who changed what."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = CallRecords(db)

    async def appointments(
        self, scope: Literal["upcoming", "past", "all"] = "upcoming", limit: int = 200
    ) -> list[dict[str, Any]]:
        return await list_appointments(self.db, scope, limit)

    async def callbacks(
        self, status: Literal["open", "all"] = "open", limit: int = 200
    ) -> list[dict[str, Any]]:
        """Messages callers left, newest first ("open": not yet handled)."""
        return await list_callbacks(self.db, status, limit)

    async def audit(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """The change log, newest first."""
        return await list_audit(self.db, limit, offset)
