"""The front desk (tools.admin.desk) on both databases with a fixed clock: staff book, move,
cancel and mark no-shows under the agent's availability rules, each change audited and a refused
one changing nothing; customer search and history; do-not-call; and the SMS confirmations of
bookings, moves and cancellations, by staff and by the agent's tools, through the Twilio REST
stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from telephony.twilio_rest import TwilioRest, TwilioTexts
from tests.conftest import SUNDAY_MORNING, TZ, free_port, make_ctx
from tests.fakes.llm import ServerThread
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tools.actions.calendar import book_appointment, cancel_appointment, reschedule_appointment
from tools.actions.confirmations import Confirmation, confirmation_text
from tools.admin.desk import FrontDesk
from tools.admin.models import AppointmentIn, AppointmentMoveIn, NotFound, ValidationFailed
from tools.store import schema
from tools.store.business import load_business
from tools.store.calls import CallStore
from tools.store.customers import add_note, save_customer
from tools.store.db import Database
from tools.store.handoffs import record_handoff

ACCOUNT_SID = "AC" + "5" * 32
TOKEN = "desk-sms-token"
SENDER = "+14135550100"
ANNA = "+14135550123"
HAIRCUT, BEARD_TRIM, COLORING = 1, 2, 3
MARIA, JAMES = 1, 2
MONDAY = "2026-11-23"  # the day after SUNDAY_MORNING


def desk_at(db: Database, now: datetime = SUNDAY_MORNING, texts: Any = None) -> FrontDesk:
    return FrontDesk(db, texts, clock=lambda: now)


def booking(**fields: Any) -> AppointmentIn:
    values = {
        "phone": ANNA,
        "name": "Anna Lee",
        "service_id": HAIRCUT,
        "staff_id": MARIA,
        "day": MONDAY,
        "start": "10:00",
    }
    return AppointmentIn.model_validate({**values, **fields})


async def rows(db: Database, table: sa.Table) -> list[dict[str, Any]]:
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(sa.select(table))).mappings()]


async def refused(desk: FrontDesk, db: Database, body: AppointmentIn) -> dict[str, str]:
    """The field errors a booking gets, checking that it changed nothing."""
    before = (await rows(db, schema.appointments), await rows(db, schema.audit_log))
    with pytest.raises(ValidationFailed) as failure:
        await desk.create_appointment("Maria", body)
    assert (await rows(db, schema.appointments), await rows(db, schema.audit_log)) == before
    return failure.value.errors


async def set_confirmations(db: Database, on: bool) -> None:
    async with db.write() as conn:
        await conn.execute(schema.business.update().values(sms_confirmations=on))


# --- Booking ------------------------------------------------------------------------------------


async def test_staff_book_a_customer_and_it_is_audited(db):
    desk = desk_at(db)
    made = await desk.create_appointment("Maria", booking())
    assert made["status"] == "booked" and made["staff"] == "Maria" and made["call_sid"] == ""
    assert datetime.fromisoformat(made["starts_at"]) == datetime(2026, 11, 23, 10, 0, tzinfo=TZ)
    assert made["confirmation"] == "off"
    (customer,) = await rows(db, schema.customers)
    assert (customer["phone"], customer["name"]) == (ANNA, "Anna Lee")
    (entry,) = await rows(db, schema.audit_log)
    assert (entry["actor"], entry["action"], entry["entity"]) == ("Maria", "create", "appointment")
    assert entry["entity_id"] == str(made["id"])
    assert entry["changes"]["staff"] == [None, "Maria"]
    assert entry["changes"]["status"] == [None, "booked"]
    assert entry["changes"]["starts_at"][1] == made["starts_at"]


async def test_no_double_booking_and_anyone_takes_the_next_free_stylist(db):
    desk = desk_at(db)
    await desk.create_appointment("Maria", booking())
    errors = await refused(desk, db, booking(phone="+14135550144", name="Bo"))
    assert errors["start"] == (
        "Maria is booked then; nearest free: 9:15 AM (Maria), 9:30 AM (Maria), 10:30 AM (Maria)"
    )
    anyone = await desk.create_appointment("Maria", booking(staff_id=None, phone="+14135550144"))
    assert anyone["staff"] == "James"
    errors = await refused(desk, db, booking(staff_id=None, phone="+14135550155"))
    assert errors["start"] == (
        "everyone who does it is booked then; "
        "nearest free: 9:15 AM (Maria), 9:30 AM (Maria), 10:30 AM (Maria)"
    )


async def test_the_agent_cannot_take_a_time_staff_booked(db):
    await desk_at(db).create_appointment("Maria", booking(staff_id=None))
    await desk_at(db).create_appointment("Maria", booking(staff_id=None, phone="+14135550144"))
    ctx = make_ctx(db, phone="+14135550166")
    with pytest.raises(Exception, match="taken"):
        await book_appointment(ctx, "haircut", "Monday at 10am", customer_name="Cy")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"day": "2026-11-22"}, "day", "closed on Sundays"),
        ({"day": "2026-12-25"}, "day", "Christmas Day"),
        ({"day": "2027-03-01"}, "day", "60 days ahead"),
        ({"start": "17:45"}, "start", "outside opening hours (09:00-18:00)"),
        ({"start": "10:07"}, "start", "every 15 minutes from 09:00"),
        ({"service_id": COLORING, "staff_id": JAMES}, "staff_id", "James does not do hair"),
        ({"service_id": 99}, "service_id", "no service 99"),
        ({"staff_id": 99}, "staff_id", "no staff member 99"),
    ],
)
async def test_what_the_rules_refuse_gets_a_field_error_and_changes_nothing(
    db, fields, field, words
):
    errors = await refused(desk_at(db), db, booking(**fields))
    assert words in errors[field], errors


async def test_a_walk_in_is_booked_for_now_but_never_for_the_past(db):
    monday_10_05 = datetime(2026, 11, 23, 10, 5, tzinfo=TZ)
    desk = desk_at(db, monday_10_05)
    assert "already passed" in (await refused(desk, db, booking(start="10:00")))["start"]
    walk_in = await desk.create_appointment("Maria", booking(start="10:15"))
    assert walk_in["status"] == "booked"
    times = [t["start"] for t in await desk.free_times(HAIRCUT, monday_10_05.date(), MARIA)]
    assert times[:2] == ["10:45", "11:00"] and "10:15" not in times


async def test_bad_forms_fail_field_by_field():
    with pytest.raises(ValidationError) as failure:
        AppointmentIn.model_validate(
            {"phone": "12", "service_id": 1, "day": "23/11/2026", "start": "9am"}
        )
    fields = {error["loc"][0] for error in failure.value.errors()}
    assert fields == {"phone", "day", "start"}


async def test_an_existing_record_keeps_its_name_and_the_booking_keeps_the_one_given(db):
    async with db.write() as conn:
        await save_customer(conn, ANNA, "Anna Lee")
    made = await desk_at(db).create_appointment("Maria", booking(name="Annie"))
    (customer,) = await rows(db, schema.customers)
    assert customer["name"] == "Anna Lee"
    (appointment,) = await rows(db, schema.appointments)
    assert appointment["booked_name"] == "Annie" and made["customer"] == "Anna Lee"


# --- Moving, cancelling, no-shows ---------------------------------------------------------------


async def test_move_follows_the_same_rules(db):
    desk = desk_at(db)
    first = await desk.create_appointment("Maria", booking())
    other = await desk.create_appointment("Maria", booking(start="11:00", phone="+14135550144"))
    before = await rows(db, schema.appointments)
    with pytest.raises(ValidationFailed) as taken:
        await desk.move_appointment(
            "Jo", first["id"], AppointmentMoveIn(staff_id=MARIA, day=MONDAY, start="11:00")
        )
    assert "Maria is booked then" in taken.value.errors["start"]
    assert await rows(db, schema.appointments) == before
    moved = await desk.move_appointment(
        "Jo", first["id"], AppointmentMoveIn(staff_id=None, day=MONDAY, start="11:00")
    )
    assert moved["staff"] == "James" and moved["id"] == first["id"]
    assert datetime.fromisoformat(moved["starts_at"]) == datetime(2026, 11, 23, 11, tzinfo=TZ)
    entry = (await rows(db, schema.audit_log))[-1]
    assert (entry["actor"], entry["action"]) == ("Jo", "update")
    assert entry["changes"]["staff"] == ["Maria", "James"]
    assert entry["changes"]["starts_at"] == [first["starts_at"], moved["starts_at"]]
    # Its own old time is free to move within (not a clash with itself).
    back = await desk.move_appointment(
        "Jo", first["id"], AppointmentMoveIn(staff_id=MARIA, day=MONDAY, start="10:00")
    )
    assert back["staff"] == "Maria" and other["status"] == "booked"


async def test_cancel_and_no_show(db):
    desk = desk_at(db)
    made = await desk.create_appointment("Maria", booking())
    with pytest.raises(ValidationFailed, match="not started yet"):
        await desk.mark_no_show("Jo", made["id"])
    cancelled = await desk.cancel_appointment("Jo", made["id"])
    assert cancelled["status"] == "cancelled"
    with pytest.raises(ValidationFailed, match="cancelled appointment cannot be moved"):
        await desk.move_appointment("Jo", made["id"], AppointmentMoveIn(day=MONDAY, start="12:00"))
    # The cancelled time is bookable again.
    again = await desk.create_appointment("Maria", booking(phone="+14135550144"))
    later = desk_at(db, datetime(2026, 11, 23, 10, 40, tzinfo=TZ))
    with pytest.raises(ValidationFailed, match="already started"):
        await later.cancel_appointment("Jo", again["id"])
    no_show = await later.mark_no_show("Jo", again["id"])
    assert no_show["status"] == "no_show"
    with pytest.raises(ValidationFailed, match="no-show appointment cannot be marked"):
        await later.mark_no_show("Jo", again["id"])
    actions = [(e["action"], e["changes"].get("status")) for e in await rows(db, schema.audit_log)]
    assert actions == [
        ("create", [None, "booked"]),
        ("cancel", ["booked", "cancelled"]),
        ("create", [None, "booked"]),
        ("no_show", ["booked", "no_show"]),
    ]
    with pytest.raises(NotFound):
        await later.cancel_appointment("Jo", 999)


# --- Customers ----------------------------------------------------------------------------------


async def test_find_a_customer_by_part_of_a_name_or_number(db):
    async with db.write() as conn:
        await save_customer(conn, ANNA, "Anna Lee")
        await save_customer(conn, "+14135550177", "Omar Haddad")
        await save_customer(conn, "+12125550100", "Joanna 100%")
    desk = desk_at(db)
    assert [c["name"] for c in await desk.find_customers("ANN")] == ["Anna Lee", "Joanna 100%"]
    assert [c["phone"] for c in await desk.find_customers("555-0177")] == ["+14135550177"]
    assert [c["name"] for c in await desk.find_customers("413")] == ["Anna Lee", "Omar Haddad"]
    assert [c["name"] for c in await desk.find_customers("100%")] == ["Joanna 100%"]
    assert await desk.find_customers("a%") == []  # % is a character here, not a wildcard
    assert await desk.find_customers("n_a") == []
    assert await desk.find_customers("  ") == [] and await desk.find_customers("zed") == []


async def test_customer_history(db):
    desk = desk_at(db)
    past = await desk_at(db, SUNDAY_MORNING - timedelta(days=7)).create_appointment(
        "Maria", booking(day="2026-11-16")
    )
    await desk_at(db, datetime(2026, 11, 16, 11, tzinfo=TZ)).mark_no_show("Jo", past["id"])
    upcoming = await desk.create_appointment("Maria", booking())
    calls = CallStore(db)
    await calls.start_call(call_sid="CAanna1", from_number=ANNA, to_number=SENDER)
    await calls.start_call(call_sid="CAother", from_number="+14135550144", to_number=SENDER)
    customer_id = upcoming["customer_id"]
    async with db.write() as conn:
        await add_note(conn, customer_id, "prefers Maria", "CAanna1")
    await record_handoff(
        db,
        call_sid="CAanna1",
        kind="message",
        reason="wants a colour quote",
        caller_number=ANNA,
        outcome="message_taken",
    )
    history = await desk.customer(customer_id)
    assert history["customer"]["phone"] == ANNA and history["customer"]["do_not_call"] is False
    assert [(a["id"], a["status"], a["upcoming"]) for a in history["appointments"]] == [
        (upcoming["id"], "booked", True),
        (past["id"], "no_show", False),
    ]
    assert [(c["call_sid"], c["record_url"]) for c in history["calls"]] == [
        ("CAanna1", "/api/admin/calls/CAanna1")
    ]
    assert [n["text"] for n in history["notes"]] == ["prefers Maria"]
    (message,) = history["messages"]
    assert (message["reason"], message["call_sid"]) == ("wants a colour quote", "CAanna1")
    with pytest.raises(NotFound):
        await desk.customer(999)


async def test_do_not_call_is_set_and_cleared_with_its_time_and_audited(db):
    async with db.write() as conn:
        anna = await save_customer(conn, ANNA, "Anna Lee")
    desk = desk_at(db)
    flagged = await desk.set_do_not_call("Jo", anna["id"], True)
    assert flagged["do_not_call"] is True and flagged["do_not_call_at"]
    again = await desk.set_do_not_call("Jo", anna["id"], True)
    assert again["do_not_call_at"] == flagged["do_not_call_at"]  # unchanged, not re-stamped
    cleared = await desk.set_do_not_call("Jo", anna["id"], False)
    assert cleared["do_not_call"] is False and cleared["do_not_call_at"] is None
    entries = await rows(db, schema.audit_log)
    assert [(e["entity"], e["changes"]) for e in entries] == [
        ("customer", {"do_not_call": [False, True]}),
        ("customer", {"do_not_call": [True, False]}),
    ]
    assert [c["do_not_call"] for c in await desk.find_customers("Anna")] == [False]


# --- SMS confirmations --------------------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, TwilioTexts]]:
    fake = FakeTwilio(ACCOUNT_SID, TOKEN)
    with ServerThread(build_twilio_app(fake), free_port()) as server:
        yield fake, TwilioTexts(TwilioRest(ACCOUNT_SID, TOKEN, base_url=server.url), SENDER)


async def test_the_confirmation_reads_in_the_business_time_zone(db):
    business = await load_business(db)
    at_three = datetime(2025, 12, 5, 15, 0, tzinfo=TZ)
    text = confirmation_text(business, Confirmation("booked", ANNA, "Haircut", "Ana", at_three))
    assert text == (
        "Bella Hair Studio: your haircut with Ana is booked for Fri 5 Dec at 3:00 PM. "
        "Reply or call +14135550100 to change it."
    )
    utc_start = datetime.fromisoformat("2025-12-05T20:00:00+00:00")  # 3 PM in New York
    moved = confirmation_text(business, Confirmation("moved", ANNA, "Beard Trim", "", utc_start))
    assert moved.endswith(
        "your beard trim is now Fri 5 Dec at 3:00 PM. Reply or call +14135550100 to change it."
    )
    gone = confirmation_text(business, Confirmation("cancelled", ANNA, "Haircut", "", utc_start))
    assert "your haircut on Fri 5 Dec at 3:00 PM is cancelled. Reply or call" in gone


async def test_staff_changes_are_texted_only_when_turned_on(db, twilio):
    fake, texts = twilio
    desk = desk_at(db, texts=texts)
    made = await desk.create_appointment("Maria", booking())
    assert made["confirmation"] == "off" and fake.messages == []
    await set_confirmations(db, True)
    moved = await desk.move_appointment(
        "Maria", made["id"], AppointmentMoveIn(staff_id=MARIA, day=MONDAY, start="15:00")
    )
    cancelled = await desk.cancel_appointment("Maria", made["id"])
    second = await desk.create_appointment("Maria", booking(phone="+14135550144", name="Bo"))
    assert [moved["confirmation"], cancelled["confirmation"], second["confirmation"]] == [
        "sent"
    ] * 3
    assert [(m.to, m.from_, m.authorized) for m in fake.messages] == [
        (ANNA, SENDER, True),
        (ANNA, SENDER, True),
        ("+14135550144", SENDER, True),
    ]
    assert [m.body for m in fake.messages] == [
        "Bella Hair Studio: your haircut with Maria is now Mon 23 Nov at 3:00 PM. "
        "Reply or call +14135550100 to change it.",
        "Bella Hair Studio: your haircut with Maria on Mon 23 Nov at 3:00 PM is cancelled. "
        "Reply or call +14135550100 to book again.",
        "Bella Hair Studio: your haircut with Maria is booked for Mon 23 Nov at 10:00 AM. "
        "Reply or call +14135550100 to change it.",
    ]
    later = desk_at(db, datetime(2026, 11, 23, 10, 40, tzinfo=TZ), texts=texts)
    await later.mark_no_show("Maria", second["id"])
    assert len(fake.messages) == 3  # a no-show confirms nothing to anyone


async def test_without_texting_configured_nothing_is_sent_and_the_booking_stands(db):
    await set_confirmations(db, True)
    made = await desk_at(db, texts=None).create_appointment("Maria", booking())
    assert made["confirmation"] == "unavailable" and made["status"] == "booked"


async def test_a_failed_text_never_fails_the_booking(db, twilio):
    fake, texts = twilio
    await set_confirmations(db, True)
    fake.fail_next.append((500, 30001, "Queue overflow"))
    made = await desk_at(db, texts=texts).create_appointment("Maria", booking())
    assert made["confirmation"] == "failed"
    (appointment,) = await rows(db, schema.appointments)
    assert appointment["status"] == "booked" and len(fake.messages) == 1
    fake.fail_next.append((500, 30001, "Queue overflow"))
    ctx = make_ctx(db, phone="+14135550144")
    ctx.texts = texts
    result = await book_appointment(ctx, "haircut", "Monday at 2pm", customer_name="Bo Diaz")
    assert result.say.startswith("You're booked, Bo") and len(fake.messages) == 2


async def test_the_agent_texts_bookings_moves_and_cancellations_when_on(db, twilio):
    fake, texts = twilio
    ctx = make_ctx(db, phone=ANNA)
    ctx.texts = texts
    await book_appointment(ctx, "haircut", "Monday at 2pm", customer_name="Anna Lee")
    assert fake.messages == []  # off by default
    await set_confirmations(db, True)
    await reschedule_appointment(ctx, "Tuesday at 3pm")
    await cancel_appointment(ctx)
    await book_appointment(ctx, "beard trim", "Wednesday at 9am")
    assert [m.to for m in fake.messages] == [ANNA] * 3
    bodies = [m.body for m in fake.messages]
    assert bodies[0].startswith("Bella Hair Studio: your haircut with ")
    assert "is now Tue 24 Nov at 3:00 PM." in bodies[0]
    assert "on Tue 24 Nov at 3:00 PM is cancelled." in bodies[1]
    assert "your beard trim with James is booked for Wed 25 Nov at 9:00 AM." in bodies[2]


async def test_a_caller_booking_under_another_number_texts_that_number_only(db, twilio):
    fake, texts = twilio
    await set_confirmations(db, True)
    ctx = make_ctx(db, phone="+14135550166", verified=False)
    ctx.texts = texts
    await book_appointment(ctx, "haircut", "Monday at 2pm", customer_name="Cy", phone=ANNA)
    assert [m.to for m in fake.messages] == [ANNA]  # the record's number, not the caller's


async def test_a_no_show_leaves_the_rest_of_its_time_to_a_walk_in(db):
    booked = await desk_at(db).create_appointment("Maria", booking(service_id=COLORING))  # 10-11:30
    quarter_past = desk_at(db, datetime(2026, 11, 23, 10, 15, tzinfo=TZ))
    walk_in = booking(phone="+14135550144", name="Bo", start="10:30")
    assert "Maria is booked then" in (await refused(quarter_past, db, walk_in))["start"]
    await quarter_past.mark_no_show("Jo", booked["id"])
    taken = await quarter_past.create_appointment("Jo", walk_in)
    assert (taken["staff"], taken["status"]) == ("Maria", "booked")
