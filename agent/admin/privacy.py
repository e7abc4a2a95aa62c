"""/api/admin/forget: delete everything kept about one caller, on their request (audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from agent.admin.access import Actor, AdminAccess
from agent.retention import forget
from agent.settings import Settings
from tools.admin.models import ForgetIn
from tools.store.db import Database


def build_privacy_router(access: AdminAccess, db: Database, settings: Settings) -> APIRouter:
    """The right to be forgotten, for signed-in admins."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)

    @router.post("/forget", summary="Delete everything kept about one caller (on request)")
    async def forget_caller(body: ForgetIn, who: Actor = Who) -> dict[str, Any]:
        deleted = await forget(db, settings, body.phone, who.name)
        return {"deleted": deleted.counts}

    return router
