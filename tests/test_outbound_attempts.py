"""What an outbound call's webhooks and tools write, on both store backends, through the
scheduler's OutboundStore: the machine verdict and the fallback outcome after Twilio's
``completed``, and the two tools of a call we placed (confirm_appointment, stop_calling_me) with
their identity rules. (Outcomes, retries and giving up are tests/test_outbound_store.py's.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from agent.outbound.calls import OutboundCalls
from tests.conftest import SUNDAY_MORNING, make_ctx
from tools.actions.calendar import confirm_appointment
from tools.actions.handoff import end_call
from tools.actions.outreach import stop_calling_me
from tools.errors import ToolError
from tools.store import schema
from tools.store.db import Database, new_id, utc_now
from tools.store.outbound import OutboundStore

PHONE = "+14135550191"
PERSON_SID = "CAb468cfdc4a3af3f230248ab1fdbfbcae"
MACHINE_SID = "CAbbe8dc04b05397cd9b7e30db35b5b4b8"
BUSY_SID = "CA403abe7f0ff70ae7fef1ff3b7b1e7906"


async def insert_call(db: Database, **values: Any) -> int:
    stamp = utc_now()
    row = {"purpose": "custom", "to_phone": PHONE, "due_at": stamp, "created_at": stamp}
    async with db.write() as conn:
        return new_id(
            await conn.execute(
                schema.outbound_calls.insert().values(**{**row, "updated_at": stamp, **values})
            )
        )


async def row_of(db: Database, table: sa.Table, row_id: int) -> dict[str, Any]:
    async with db.read() as conn:
        found = (await conn.execute(sa.select(table).where(table.c.id == row_id))).mappings().one()
    return dict(found)


async def customer_with_appointment(db: Database, phone: str = PHONE) -> tuple[int, int]:
    """A customer on ``phone`` with a haircut on Monday 23 November 2026 at 15:00 (the day
    after the fixed clock's Sunday)."""
    stamp = utc_now()
    start = SUNDAY_MORNING.replace(hour=15) + timedelta(days=1)
    async with db.write() as conn:
        customer = new_id(
            await conn.execute(
                schema.customers.insert().values(
                    phone=phone, name="Dana Whitfield", email="", created_at=stamp, updated_at=stamp
                )
            )
        )
        service = (
            await conn.execute(
                sa.select(schema.services.c.id).where(schema.services.c.name == "Haircut")
            )
        ).scalar_one()
        appointment = new_id(
            await conn.execute(
                schema.appointments.insert().values(
                    customer_id=customer,
                    service_id=service,
                    starts_at=start.isoformat(),
                    ends_at=(start + timedelta(minutes=30)).isoformat(),
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        )
    return customer, appointment


async def test_twilio_callbacks_decide_the_outcome_no_conversation_reported(
    db: Database,
) -> None:
    ledger = OutboundStore(db)
    desk = OutboundCalls(ledger, settle_secs=0.0)
    running = {"status": "dialing", "attempts": 1, "max_attempts": 1}
    person = await insert_call(db, call_sid=PERSON_SID, **running)
    machine = await insert_call(db, call_sid=MACHINE_SID, **running)
    busy = await insert_call(db, call_sid=BUSY_SID, **running)
    await desk.machine_verdict({"CallSid": PERSON_SID, "AnsweredBy": "nonsense"})
    assert await ledger.answered_by(person) == "unknown"  # an unknown word: nobody could tell
    await desk.machine_verdict({"CallSid": MACHINE_SID, "AnsweredBy": "machine_start"})
    for sid, status in [(PERSON_SID, "completed"), (MACHINE_SID, "completed")]:
        await desk.call_status({"CallSid": sid, "CallStatus": status})
    await desk.call_status({"CallSid": BUSY_SID, "CallStatus": "busy"})
    await desk.call_status({"CallSid": BUSY_SID, "CallStatus": "ringing"})  # progress only
    await desk.close()  # the graces recorded their fallback
    outcomes = [(await row_of(db, schema.outbound_calls, j))["outcome"] for j in (person, machine)]
    assert outcomes == ["completed", "failed"]  # a machine that took no message
    assert (await row_of(db, schema.outbound_calls, busy))["outcome"] == "busy"
    details = await desk.stream_details({"CallSid": PERSON_SID, "From": "+14135550100"})
    assert details == {"direction": "outbound", "job": str(person), "from": "+14135550100",
                       "to": PHONE}  # fmt: skip
    assert await desk.stream_details({"CallSid": "CAstranger"}) is None


async def test_confirming_needs_the_proven_owner_of_the_number(db: Database) -> None:
    _, appointment = await customer_with_appointment(db)
    stranger = make_ctx(db, phone=PHONE, verified=False)
    with pytest.raises(ToolError) as refused:
        await confirm_appointment(stranger)
    assert refused.value.code == "not_verified"
    assert (await row_of(db, schema.appointments, appointment))["reminder_outcome"] == ""
    result = await confirm_appointment(make_ctx(db, phone=PHONE))
    assert result.data["appointment_id"] == appointment and "confirmed" in result.say
    assert (await row_of(db, schema.appointments, appointment))["reminder_outcome"] == "confirmed"


async def test_stop_calling_me_flags_the_number_and_cancels_only_its_scheduled_calls(
    db: Database,
) -> None:
    customer, _ = await customer_with_appointment(db)
    scheduled = await insert_call(db, customer_id=customer)
    by_number = await insert_call(db)  # no customer linked, same number
    running = await insert_call(db, customer_id=customer, status="in_progress", call_sid="CAnow")
    other = await insert_call(db, to_phone="+14135550192")
    with pytest.raises(ToolError):
        await stop_calling_me(make_ctx(db, phone=PHONE, verified=False))
    assert not (await row_of(db, schema.customers, customer))["do_not_call"]
    result = await stop_calling_me(make_ctx(db, phone=PHONE))
    assert result.data == {"do_not_call": True, "calls_cancelled": 2}
    flagged = await row_of(db, schema.customers, customer)
    assert flagged["do_not_call"] and flagged["do_not_call_at"]
    statuses = [
        (await row_of(db, schema.outbound_calls, j))["status"]
        for j in (scheduled, by_number, running, other)
    ]
    assert statuses == ["cancelled", "cancelled", "in_progress", "scheduled"]
    first_at = flagged["do_not_call_at"]
    await stop_calling_me(make_ctx(db, phone=PHONE))  # asked again: the first time is kept
    assert (await row_of(db, schema.customers, customer))["do_not_call_at"] == first_at


async def test_stop_calling_me_works_for_a_number_with_no_record_yet(db: Database) -> None:
    await stop_calling_me(make_ctx(db, phone="+14135550193"))
    async with db.read() as conn:
        flagged = (
            await conn.execute(
                sa.select(schema.customers.c.do_not_call).where(
                    schema.customers.c.phone == "+14135550193"
                )
            )
        ).scalar_one()
    assert flagged is True


async def test_ending_a_call_we_placed_thanks_them_for_their_time(db: Database) -> None:
    placed = make_ctx(db)
    placed.placed_call = True
    assert (await end_call(placed)).say == "Thanks for your time. Goodbye!"
    assert (await end_call(make_ctx(db))).say == "Thanks for calling. Goodbye!"
