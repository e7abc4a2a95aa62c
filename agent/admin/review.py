"""What happened: calls (transcript, tools, latency, recording), appointments, callback requests
and the audit log under /api/admin, and the raw call records under /api/calls for scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from agent.admin.access import Actor, AdminAccess
from agent.auth import require_bearer
from agent.settings import Secret, Settings
from tools.admin.models import CallbackIn, NotFound
from tools.admin.review import AdminReview
from tools.admin.service import AdminService
from tools.store.calls import CallRecords


def page(limit: int, offset: int) -> tuple[int, int]:
    """A page of calls as asked for, clamped: limit 1-500, offset 0 or more."""
    return max(1, min(limit, 500)), max(0, offset)


def recording_file(settings: Settings, call: dict[str, Any]) -> Path | None:
    """The call's recording if it exists inside the data dir's recordings folder."""
    raw = call.get("recording_path") or ""
    if not raw:
        return None
    root = (Path(settings.data_dir) / "recordings").resolve()
    path = Path(raw).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def build_review_router(
    access: AdminAccess, service: AdminService, review: AdminReview, settings: Settings
) -> APIRouter:
    """Calls and their recordings, appointments, callbacks (marked handled here), the audit log."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)

    @router.get("/calls", summary="Calls, newest first")
    async def list_calls(limit: int = 50, offset: int = 0, who: Actor = Who) -> dict[str, Any]:
        return {"calls": await review.calls.list_summaries(*page(limit, offset))}

    @router.get("/calls/{call_sid}", summary="One call: transcript, tools, latency, recording")
    async def get_call(call_sid: str, who: Actor = Who) -> dict[str, Any]:
        detail = await review.calls.review(call_sid)
        if detail is None:
            raise NotFound(f"no call {call_sid}")
        detail["recording_url"] = (
            f"/api/admin/calls/{call_sid}/recording" if recording_file(settings, detail) else ""
        )
        return detail

    @router.get("/calls/{call_sid}/recording", summary="The call's stereo WAV")
    async def get_recording(call_sid: str, who: Actor = Who) -> FileResponse:
        call = await review.calls.get_call(call_sid)
        path = recording_file(settings, call) if call else None
        if path is None:
            raise NotFound(f"no recording for call {call_sid}")
        return FileResponse(path, media_type="audio/wav", filename=f"{call_sid}.wav")

    @router.get("/appointments", summary="Appointments")
    async def list_appointments(
        scope: Literal["upcoming", "past", "all"] = "upcoming", who: Actor = Who
    ) -> dict[str, Any]:
        return {"appointments": await review.appointments(scope)}

    @router.get("/callbacks", summary="Callback requests (messages callers left)")
    async def list_callbacks(
        status: Literal["open", "all"] = "open", who: Actor = Who
    ) -> dict[str, Any]:
        return {"callbacks": await review.callbacks(status)}

    @router.put("/callbacks/{callback_id}", summary="Mark a callback request handled")
    async def put_callback(callback_id: int, body: CallbackIn, who: Actor = Who) -> dict[str, Any]:
        await service.update_callback(who.name, callback_id, body.outcome)
        return {"saved": True}

    @router.get("/audit", summary="Who changed what, newest first")
    async def list_audit(limit: int = 100, offset: int = 0, who: Actor = Who) -> dict[str, Any]:
        return {"entries": await review.audit(max(1, min(limit, 500)), max(0, offset))}

    return router


def build_records_router(records: CallRecords, admin_token: Secret) -> APIRouter:
    """/api/calls: the call records as stored, for scripts with the admin token."""
    router = APIRouter(prefix="/api/calls", dependencies=[Depends(require_bearer(admin_token))])

    @router.get("")
    async def list_calls(limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return {"calls": await records.list_calls(*page(limit, offset))}

    @router.get("/{call_sid}")
    async def get_call(call_sid: str) -> dict[str, Any]:
        call = await records.get_call(call_sid)
        if call is None:
            raise NotFound(f"no call {call_sid}")
        return call

    return router
