"""The front desk under /api/admin: appointments staff book, move, cancel and mark as no-shows,
the free times of a day, customers (search, history) and their do-not-call flag."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends

from agent.admin.access import Actor, AdminAccess
from tools.admin.desk import FrontDesk
from tools.admin.models import AppointmentIn, AppointmentMoveIn, DoNotCallIn


def build_desk_router(access: AdminAccess, desk: FrontDesk) -> APIRouter:
    """What staff at the desk do all day; every change audited under the signed-in name."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)

    @router.post("/appointments", status_code=201, summary="Book an appointment (staff)")
    async def create_appointment(body: AppointmentIn, who: Actor = Who) -> dict[str, Any]:
        return await desk.create_appointment(who.name, body)

    @router.put("/appointments/{appointment_id}", summary="Move an appointment")
    async def move_appointment(
        appointment_id: int, body: AppointmentMoveIn, who: Actor = Who
    ) -> dict[str, Any]:
        return await desk.move_appointment(who.name, appointment_id, body)

    @router.post("/appointments/{appointment_id}/cancel", summary="Cancel an appointment")
    async def cancel_appointment(appointment_id: int, who: Actor = Who) -> dict[str, Any]:
        return await desk.cancel_appointment(who.name, appointment_id)

    @router.post("/appointments/{appointment_id}/no-show", summary="The customer never came")
    async def mark_no_show(appointment_id: int, who: Actor = Who) -> dict[str, Any]:
        return await desk.mark_no_show(who.name, appointment_id)

    @router.get("/availability", summary="Free start times of a service on a day")
    async def availability(
        service_id: int,
        day: date,
        staff_id: int | None = None,
        exclude: int | None = None,
        who: Actor = Who,
    ) -> dict[str, Any]:
        return {"times": await desk.free_times(service_id, day, staff_id, exclude)}

    @router.get("/customers", summary="Find customers by name or number (partial)")
    async def find_customers(q: str = "", who: Actor = Who) -> dict[str, Any]:
        return {"customers": await desk.find_customers(q)}

    @router.get("/customers/{customer_id}", summary="A customer and their history")
    async def get_customer(customer_id: int, who: Actor = Who) -> dict[str, Any]:
        return await desk.customer(customer_id)

    @router.put("/customers/{customer_id}/do-not-call", summary="Set or clear do-not-call")
    async def put_do_not_call(
        customer_id: int, body: DoNotCallIn, who: Actor = Who
    ) -> dict[str, Any]:
        return await desk.set_do_not_call(who.name, customer_id, body.do_not_call)

    return router
