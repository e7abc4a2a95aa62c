"""Outbound calls over HTTP (admin token or signed-in session, like the rest of the console):

- ``POST /api/outbound`` ``{to, purpose, appointment_id?, message?, at?}``: schedule a call;
- ``GET /api/outbound?status=scheduled|running|finished|all``: the calls with their outcomes;
- ``POST /api/outbound/{id}/cancel``: cancel a call not yet under way;
- ``POST /api/admin/callbacks/{id}/call``: "call back now" for a message a caller left.

Each change is written to the audit log in its own transaction. A number on do-not-call is
refused with 409.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from agent.admin.access import Actor, AdminAccess
from telephony.privacy import mask_phone
from tools.admin.models import NotFound, ValidationFailed
from tools.domain.validation import InvalidPhoneNumber, phone_e164
from tools.store.db import Database
from tools.store.outbound import (
    Audit,
    DoNotCallError,
    ListStatus,
    NewCall,
    OutboundError,
    OutboundStore,
)

MAX_MESSAGE = 1000


class OutboundIn(BaseModel):
    """A call to schedule. ``to``: any way of writing a phone number with its country code;
    ``at``: ISO 8601 with a UTC offset (default: now; placed inside calling hours)."""

    to: str = Field(description="The number to call, with its country code")
    purpose: Literal["reminder", "callback", "custom"]
    appointment_id: int | None = Field(None, description="reminder: the appointment")
    message: str = Field("", description="custom: what to say; callback: the reason")
    at: datetime | None = Field(None, description="When, ISO 8601 with an offset; default now")


async def _checked(store: OutboundStore, body: OutboundIn) -> NewCall:
    """The call's fields from ``body``, or :class:`ValidationFailed` naming every bad field."""
    errors: dict[str, str] = {}
    to = ""
    try:
        to = phone_e164(body.to.strip())
    except InvalidPhoneNumber as exc:
        errors["to"] = str(exc)
    message = " ".join(body.message.split())
    if len(message) > MAX_MESSAGE:
        errors["message"] = f"at most {MAX_MESSAGE} characters (got {len(message)})"
    elif body.purpose in ("custom", "callback") and not message:
        errors["message"] = (
            "say what the call is for: the text to speak (custom) or the caller's reason (callback)"
        )
    if body.at is not None and body.at.tzinfo is None:
        errors["at"] = "give the time with its UTC offset, e.g. 2026-12-04T09:30:00-05:00"
    if body.purpose == "reminder":
        if body.appointment_id is None:
            errors["appointment_id"] = "a reminder needs the appointment it is about"
        else:
            problem = await store.reminder_problem(body.appointment_id)
            if problem:
                errors["appointment_id"] = problem
    elif body.appointment_id is not None:
        errors["appointment_id"] = "only a reminder is about an appointment"
    if errors:
        raise ValidationFailed(errors)
    return NewCall(
        purpose=body.purpose,
        to=to,
        due_at=body.at.astimezone(UTC) if body.at is not None else None,
        customer_id=await store.customer_id(to),
        appointment_id=body.appointment_id,
        message=message,
        created_by="admin",
    )


def build_outbound_router(access: AdminAccess, db: Database) -> APIRouter:
    """/api/outbound and the console's "call back now"."""
    store = OutboundStore(db)
    router = APIRouter(tags=["outbound"])
    Who = Depends(access)

    @router.post("/api/outbound", status_code=201, summary="Schedule an outbound call")
    async def create(body: OutboundIn, who: Actor = Who) -> dict[str, Any]:
        fields = await _checked(store, body)
        audit = Audit(who.name, f"{body.purpose} call to {mask_phone(fields['to'])}")
        return await _job(store, await _schedule(store, fields, audit))

    @router.get("/api/outbound", summary="Outbound calls with their outcomes")
    async def list_calls(
        status: Literal["scheduled", "running", "finished", "all"] = "all",
        limit: int = 200,
        who: Actor = Who,
    ) -> dict[str, Any]:
        chosen: ListStatus = status
        return {"calls": await store.list_calls(chosen, max(1, min(limit, 500)))}

    @router.post("/api/outbound/{job_id}/cancel", summary="Cancel a call not yet under way")
    async def cancel(job_id: int, who: Actor = Who) -> dict[str, Any]:
        row = await store.get(job_id)
        if row is None:
            raise NotFound(f"no outbound call {job_id}")
        audit = Audit(who.name, f"{row['purpose']} call to {mask_phone(row['to'])}")
        if not await store.cancel(job_id, f"cancelled by {who.name}", audit):
            raise HTTPException(
                409, f"outbound call {job_id} is {row['status']}: only a scheduled one is cancelled"
            )
        return await _job(store, job_id)

    @router.post(
        "/api/admin/callbacks/{callback_id}/call",
        status_code=201,
        summary="Call back now: a callback for this message, due now",
    )
    async def call_back_now(callback_id: int, who: Actor = Who) -> dict[str, Any]:
        audit = Audit(who.name, f"callback for message {callback_id}")
        return await _job(store, await _call_back(store, callback_id, audit))

    return router


async def _schedule(store: OutboundStore, fields: NewCall, audit: Audit) -> int:
    """Schedule the checked call (audited); 409 for a number on do-not-call."""
    try:
        return await store.schedule(audit=audit, **fields)
    except DoNotCallError as exc:
        raise HTTPException(409, f"{mask_phone(fields['to'])} is on do-not-call: {exc}") from None
    except OutboundError as exc:
        raise ValidationFailed({"_form": str(exc)}) from None


async def _call_back(store: OutboundStore, callback_id: int, audit: Audit) -> int:
    """Call back the message ``callback_id`` now (audited); 404 for no such message, 409 on
    do-not-call."""
    try:
        return await store.call_back_now(callback_id, audit=audit)
    except DoNotCallError as exc:
        raise HTTPException(409, f"this caller is on do-not-call: {exc}") from None
    except OutboundError as exc:
        raise NotFound(str(exc)) from None


async def _job(store: OutboundStore, job_id: int) -> dict[str, Any]:
    row = await store.get(job_id)
    if row is None:  # cancelled and deleted in between: not something this API does
        raise NotFound(f"no outbound call {job_id}")
    return row
