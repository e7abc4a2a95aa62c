"""A phone number is not a password (issue 17): the tools let a caller hear and change only the
records on a number they are proven to own, and tell everyone else nothing about the others.

The tools run for real on both database backends; only Twilio is the stand-in.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from loguru import logger

from agent.app import create_app
from agent.session import CallInfo
from agent.settings import Settings, SettingsError
from agent.texting import call_texts
from telephony.signature import sign_twilio_request
from telephony.twilio_rest import TwilioRest, TwilioTexts
from tests.conftest import AUTH_TOKEN, SUNDAY_MORNING, free_port, make_ctx, server_env
from tests.fakes.llm import ServerThread
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tests.frames import ScriptedLLM, caller_says, frame_call
from tools.actions.calendar import book_appointment, cancel_appointment, reschedule_appointment
from tools.actions.crm import add_note, find_customer, list_my_appointments, save_customer
from tools.actions.handoff import take_message
from tools.actions.verification import (
    code_from_speech,
    send_verification_code,
    verify_code,
)
from tools.catalog import tool_registry
from tools.domain.speech import say_phone
from tools.errors import ToolError
from tools.registry import ToolContext
from tools.store import schema
from tools.store.db import Database

ACCOUNT_SID = "AC" + "7" * 32
TOKEN = "sms-test-token"
SENDER = "+14135550100"
OMAR = "+14135550177"  # a customer on file
NOBODY = "+14135550188"  # no record
MALLORY = "+14135550166"  # the caller who claims Omar's number
DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio(ACCOUNT_SID, TOKEN)
    with ServerThread(build_twilio_app(fake), free_port()) as server:
        yield fake, server.url


def texting(ctx: ToolContext, url: str) -> ToolContext:
    ctx.texts = TwilioTexts(TwilioRest(ACCOUNT_SID, TOKEN, base_url=url), SENDER)
    return ctx


async def omar_on_file(db: Database) -> int:
    """Omar's record (name, email, a note) and his appointment, booked by Omar himself."""
    omar = make_ctx(db, phone=OMAR, call_sid="CA6f6d6172000000000000000000000000")
    booked = await book_appointment(omar, "beard trim", "Friday at 10am", customer_name="Omar H")
    await save_customer(omar, email="omar at example dot com")
    await add_note(omar, "likes it short")
    return int(booked.data["appointment_id"])


async def record(db: Database, phone: str) -> dict[str, Any]:
    """Everything stored about the customer on ``phone``: the row, notes, appointments."""
    customers = schema.customers
    async with db.read() as conn:
        found = await conn.execute(sa.select(customers).where(customers.c.phone == phone))
        row = found.mappings().one()
        notes = (
            await conn.execute(
                sa.select(schema.customer_notes.c.text).where(
                    schema.customer_notes.c.customer_id == row["id"]
                )
            )
        ).all()
        appointments = (
            await conn.execute(
                sa.select(schema.appointments.c.id, schema.appointments.c.status).where(
                    schema.appointments.c.customer_id == row["id"]
                )
            )
        ).all()
    return {
        "name": row["name"],
        "email": row["email"],
        "notes": sorted(n[0] for n in notes),
        "appointments": sorted(tuple(a) for a in appointments),
    }


async def trust_caller_id(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(schema.business.update().values(trust_unverified_caller_id=True))


def unverified(
    db: Database, phone: str = MALLORY, call_sid: str = "CA6d616c6c6f7279000000000000000000"
) -> ToolContext:
    return make_ctx(db, phone=phone, verified=False, call_sid=call_sid)


# --- Who is known -----------------------------------------------------------------------------


def test_only_twilios_passed_attestations_verify_a_caller_id() -> None:
    assert CallInfo(
        "CA31000000000000000000000000000000", caller_verstat="TN-Validation-Passed-A"
    ).caller_id_verified
    assert CallInfo(
        "CA31000000000000000000000000000000", caller_verstat="TN-Validation-Passed-B"
    ).caller_id_verified
    for verstat in ("TN-Validation-Passed-C", "TN-Validation-Failed-A", "No-TN-Validation", ""):
        assert not CallInfo(
            "CA31000000000000000000000000000000", caller_verstat=verstat
        ).caller_id_verified


async def test_a_verified_caller_lists_and_cancels_their_own(db: Database) -> None:
    await omar_on_file(db)
    omar = make_ctx(db, phone=OMAR, call_sid="CA6f6d6172320000000000000000000000")
    assert await omar.proven_phone() == OMAR
    assert "beard trim" in (await list_my_appointments(omar)).say
    moved = await reschedule_appointment(omar, "Saturday at 11am")
    assert "Saturday" in moved.say
    cancelled = await cancel_appointment(omar)
    assert "cancelled your beard trim" in cancelled.say
    assert (await record(db, OMAR))["appointments"][0][1] == "cancelled"


async def test_an_unverified_caller_id_cannot_list_cancel_or_move_bookings(db: Database) -> None:
    await omar_on_file(db)
    before = await record(db, OMAR)
    spoofed = unverified(db, phone=OMAR)
    assert await spoofed.proven_phone() == ""
    for attempt in (
        list_my_appointments(spoofed),
        cancel_appointment(spoofed),
        reschedule_appointment(spoofed, "Saturday at 11am"),
        find_customer(spoofed),
    ):
        with pytest.raises(ToolError) as refused:
            await attempt
        assert refused.value.code == "not_verified"
        assert refused.value.data["verify_by"] == ["callback", "message"]  # no SMS configured
        assert say_phone(OMAR) in refused.value.say and "Omar" not in refused.value.say
    assert await record(db, OMAR) == before


async def test_with_trust_on_an_unverified_caller_id_is_enough(db: Database) -> None:
    await omar_on_file(db)
    await trust_caller_id(db)
    caller = unverified(db, phone=OMAR)
    assert await caller.proven_phone() == OMAR
    assert "beard trim" in (await list_my_appointments(caller)).say
    assert (await find_customer(caller)).data["name"] == "Omar H"


# --- Someone who says another's number ------------------------------------------------------


async def answers(ctx: ToolContext, phone: str) -> list[dict[str, Any]]:
    """The payloads the model gets for ``phone`` from every tool that takes a number, with the
    number (as digits and as words) masked so two numbers' answers can be compared."""
    registry = tool_registry()
    spoken = " ".join(say_phone(phone).replace(",", "").split())
    payloads = []
    for name, arguments in (
        ("find_customer", {"phone": spoken}),
        ("save_customer", {"name": "Mallory Stone", "phone": spoken}),
        ("save_customer", {"email": "mal at example dot com", "phone": spoken}),
        ("send_verification_code", {"phone": spoken}),
    ):
        invocation = await registry.invoke(ctx, name, arguments)
        text = repr(invocation.payload).replace(say_phone(phone), "NUMBER").replace(phone, "+N")
        payloads.append({"name": name, "payload": text})
    return payloads


async def test_a_caller_who_says_someone_elses_number_learns_nothing(db: Database) -> None:
    await omar_on_file(db)
    about_omar = await answers(unverified(db, call_sid="CA6d310000000000000000000000000000"), OMAR)
    about_nobody = await answers(
        unverified(db, call_sid="CA6d320000000000000000000000000000"), NOBODY
    )
    assert about_omar == about_nobody
    said = repr(about_omar)
    for secret in ("Omar", "omar@example.com", "upcoming", "found", "customer_id", "likes"):
        assert secret not in said, secret
    assert "NUMBER" in about_omar[0]["payload"]  # the number is read back for correction


async def test_a_caller_who_says_someone_elses_number_changes_nothing(db: Database) -> None:
    appointment = await omar_on_file(db)
    before = await record(db, OMAR)
    mallory = unverified(
        db, phone=OMAR, call_sid="CA6d330000000000000000000000000000"
    )  # a spoofed caller ID, even
    saved = await save_customer(mallory, name="Mallory Stone", email="mal at example dot com")
    assert saved.say == "Thanks, I've noted your name and your email."
    noted = await add_note(mallory, "cancel everything")
    assert noted.data == {"noted": True}
    booked = await book_appointment(mallory, "haircut", "Friday at 2pm", customer_name="Mallory")
    assert booked.say.startswith("You're booked, Mallory") and "customer_id" not in booked.data
    said_number = await book_appointment(
        unverified(db, call_sid="CA6d340000000000000000000000000000"),
        "haircut",
        "Friday at 4pm",
        "Mal",
        phone=OMAR,
    )
    await take_message(mallory, "call me", name="Mallory Stone")
    after = await record(db, OMAR)
    assert {k: after[k] for k in ("name", "email", "notes")} == {
        k: before[k] for k in ("name", "email", "notes")
    }
    # The bookings are under the number (its owner can see and cancel them), named as given.
    assert (appointment, "booked") in after["appointments"]
    async with db.read() as conn:
        names = dict(
            (
                await conn.execute(
                    sa.select(schema.appointments.c.id, schema.appointments.c.booked_name)
                )
            ).all()
        )
    assert names[booked.data["appointment_id"]] == "Mallory"
    assert names[said_number.data["appointment_id"]] == "Mal"


async def test_a_new_number_gets_a_record_from_a_caller_who_cannot_prove_it(db: Database) -> None:
    """Nothing was on file, so nothing is revealed or overwritten: the call's own record takes
    the name, email and note (and the caller hears exactly what they would for Omar)."""
    caller = unverified(db, phone=NOBODY, call_sid="CA6e657700000000000000000000000000")
    saved = await save_customer(caller, name="Nadia Park", email="nadia at example dot com")
    assert saved.say == "Thanks, I've noted your name and your email."
    await add_note(caller, "allergic to ammonia")
    await book_appointment(caller, "haircut", "Friday at 2pm")
    stored = await record(db, NOBODY)
    assert (stored["name"], stored["email"], stored["notes"]) == (
        "Nadia Park",
        "nadia@example.com",
        ["allergic to ammonia"],
    )
    with pytest.raises(ToolError, match="confirm"):
        await list_my_appointments(caller)  # still not proven to own it


# --- Proving a number -----------------------------------------------------------------------


async def sent_code(fake: FakeTwilio) -> str:
    [message] = fake.messages
    assert message.authorized and message.from_ == SENDER
    found = re.findall(r"\b\d{6}\b", message.body)
    assert len(found) == 1, message.body
    return found[0]


async def test_a_code_texted_to_the_number_on_file_unlocks_it(
    db: Database, twilio: tuple[FakeTwilio, str]
) -> None:
    fake, url = twilio
    await omar_on_file(db)
    omar = texting(
        unverified(db, phone="", call_sid="CA736d7331000000000000000000000000"), url
    )  # no caller ID
    with pytest.raises(ToolError) as refused:
        await list_my_appointments(omar)
    assert refused.value.code == "need_phone"
    with pytest.raises(ToolError) as offered:
        await find_customer(omar, phone="four one three, five five five, zero one seven seven")
    assert offered.value.data["verify_by"] == ["text", "callback", "message"]
    sent = await send_verification_code(omar, phone="413 555 0177")
    assert fake.messages[0].to == OMAR and say_phone(OMAR) in sent.say
    code = await sent_code(fake)
    spoken = " ".join(
        ["zero one two three four five six seven eight nine".split()[int(d)] for d in code]
    )
    confirmed = await verify_code(omar, spoken)
    assert confirmed.data == {"verified": True, "phone": OMAR}
    assert "beard trim" in (await list_my_appointments(omar)).say
    # Another worker serving the same call (same CallSid) knows it too.
    elsewhere = make_ctx(
        db, phone="", verified=False, call_sid="CA736d7331000000000000000000000000"
    )
    assert await elsewhere.proven_phone() == OMAR
    assert (await find_customer(elsewhere)).data["name"] == "Omar H"
    # One code per call.
    with pytest.raises(ToolError) as again:
        await send_verification_code(omar, phone=NOBODY)
    assert again.value.code == "code_already_sent" and len(fake.messages) == 1


async def test_a_number_gets_at_most_three_codes_an_hour_whichever_calls_ask(
    db: Database, twilio: tuple[FakeTwilio, str]
) -> None:
    fake, url = twilio
    await omar_on_file(db)

    async def ask(number: str, call_sid: str, minutes: int = 0) -> ToolError | None:
        when = SUNDAY_MORNING + timedelta(minutes=minutes)
        ctx = texting(make_ctx(db, when, phone=MALLORY, verified=False, call_sid=call_sid), url)
        try:
            await send_verification_code(ctx, phone=number)
        except ToolError as refused:
            return refused
        return None

    # Five calls at once ask for codes to Omar's number (on file) and to nobody's: three each
    # are texted, on both backends, however the requests interleave.
    sids = [f"CA{i:032x}" for i in range(10)]
    results = await asyncio.gather(
        *(ask(OMAR, sid) for sid in sids[:5]), *(ask(NOBODY, sid) for sid in sids[5:])
    )
    refusals = [r for r in results if r is not None]
    assert sorted(m.to for m in fake.messages) == [OMAR] * 3 + [NOBODY] * 3
    assert [r.code for r in refusals] == ["too_many_codes"] * 4
    # The model relays the same words whether the number is on file or not.
    assert {(r.say, str(r.data)) for r in refusals} == {
        (
            "I've already sent several codes to that number; please try again later. "
            "Have the team call you back on it or take a message for the team.",
            str({"verify_by": ["callback", "message"]}),
        )
    }
    # A call already refused still may not send; one an hour after the first codes may.
    assert (await ask(OMAR, sids[9], minutes=30)) is not None
    assert await ask(OMAR, "CA" + "e" * 32, minutes=61) is None
    assert fake.messages[-1].to == OMAR and len(fake.messages) == 7


async def test_three_wrong_codes_end_it(db: Database, twilio: tuple[FakeTwilio, str]) -> None:
    fake, url = twilio
    await omar_on_file(db)
    mallory = texting(
        unverified(db, phone=OMAR, call_sid="CA736d7332000000000000000000000000"), url
    )
    await send_verification_code(mallory)
    code = await sent_code(fake)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    with pytest.raises(ToolError, match="two more tries"):
        await verify_code(mallory, wrong)
    with pytest.raises(ToolError, match="one more try"):
        await verify_code(mallory, f"{wrong[:3]} {wrong[3:]}")
    with pytest.raises(ToolError) as locked:
        await verify_code(mallory, wrong)
    assert locked.value.code == "code_locked"
    assert locked.value.data["verify_by"] == ["callback", "message"]
    with pytest.raises(ToolError) as still:
        await verify_code(mallory, code)  # the right one, too late
    assert still.value.code == "code_locked"
    with pytest.raises(ToolError):
        await verify_code(mallory, "one two three")  # not six digits: no try
    assert await mallory.proven_phone() == ""
    with pytest.raises(ToolError, match="confirm"):
        await list_my_appointments(mallory)


async def test_an_expired_code_is_refused(db: Database, twilio: tuple[FakeTwilio, str]) -> None:
    fake, url = twilio
    await omar_on_file(db)
    omar = texting(unverified(db, phone=OMAR, call_sid="CA736d7333000000000000000000000000"), url)
    await send_verification_code(omar)
    code = await sent_code(fake)
    later = make_ctx(
        db,
        SUNDAY_MORNING + timedelta(minutes=11),
        phone=OMAR,
        verified=False,
        call_sid="CA736d7333000000000000000000000000",
    )
    with pytest.raises(ToolError) as expired:
        await verify_code(later, code)
    assert expired.value.code == "code_expired"
    assert await later.proven_phone() == ""


async def test_the_code_is_never_logged_stored_or_answered(
    db: Database, twilio: tuple[FakeTwilio, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = twilio
    lines: list[str] = []
    sink = logger.add(lines.append, level="TRACE")
    caplog.set_level(logging.DEBUG)
    try:
        ctx = texting(
            unverified(db, phone=OMAR, call_sid="CA736d7334000000000000000000000000"), url
        )
        registry = tool_registry()
        sent = await registry.invoke(ctx, "send_verification_code", {})
        code = await sent_code(fake)
        checked = await registry.invoke(ctx, "verify_code", {"code": "000000"})
    finally:
        logger.remove(sink)
    assert (sent.ok and not checked.ok) or code == "000000"
    assert code not in repr(sent.payload) and code not in repr(checked.payload)
    assert code not in "".join(lines) and code not in caplog.text
    assert "Twilio API Request" in caplog.text  # the SDK's own log was captured
    async with db.read() as conn:
        stored = (await conn.execute(sa.select(schema.caller_verifications))).mappings().one()
    assert code not in repr(dict(stored)) and stored["phone"] == OMAR


async def test_without_a_sending_number_the_caller_is_offered_a_callback(db: Database) -> None:
    await omar_on_file(db)
    before = await record(db, OMAR)
    mallory = unverified(db, phone=OMAR, call_sid="CA63620000000000000000000000000000")
    with pytest.raises(ToolError) as unavailable:
        await send_verification_code(mallory)
    assert unavailable.value.code == "sms_unavailable"
    assert unavailable.value.data["verify_by"] == ["callback", "message"]
    message = await take_message(mallory, "wants to go over their booking", name="Mallory")
    assert say_phone(OMAR) in message.say  # read back, so the caller can correct it
    async with db.read() as conn:
        handoff = (await conn.execute(sa.select(schema.handoffs))).mappings().one()
    assert handoff["caller_number"] == OMAR and handoff["kind"] == "message"
    assert await record(db, OMAR) == before  # the name on file stays


@pytest.mark.parametrize(
    ("said", "code"),
    [
        ("one two three four five six", "123456"),
        ("123 456", "123456"),
        ("It's one two three, four five six.", "123456"),
        ("oh four two, nine nine one", "042991"),
        ("12345", ""),
        ("one two three four five six seven", ""),
    ],
)
def test_spoken_codes_are_read_as_six_digits(said: str, code: str) -> None:
    assert code_from_speech(said) == code


# --- The call: Twilio's verdict reaches the tools; only a proven caller is greeted by name -----


async def test_the_voice_webhook_hands_twilios_verdict_to_the_call(tmp_path: Path) -> None:
    app = create_app(Settings.from_env(server_env(tmp_path, free_port())))
    state = app.state.frontdesk
    await state.db.migrate()  # the webhook counts the lines in use (the models aren't needed)
    params = {
        "CallSid": "CA73746972000000000000000000000000",
        "From": OMAR,
        "To": SENDER,
        "StirVerstat": "TN-Validation-Passed-A",
    }
    url = "http://fd.test/twilio/voice"
    signature = sign_twilio_request(AUTH_TOKEN, url, params)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        answer = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200, answer.text
    token = answer.text.split('name="token" value="')[1].split('"')[0]
    assert (
        state.tokens.verify(token, "CA73746972000000000000000000000000")[2]["verstat"]
        == "TN-Validation-Passed-A"
    )


@pytest.mark.parametrize(("verstat", "greeted"), [("TN-Validation-Passed-B", True), ("", False)])
async def test_only_a_proven_caller_is_greeted_by_name(
    db: Database, tmp_path: Path, verstat: str, greeted: bool
) -> None:
    await omar_on_file(db)
    llm = ScriptedLLM({}, "Happy to help.")
    _session, record = await frame_call(
        db, tmp_path, llm, caller_says("Hello there."), from_number=OMAR, caller_verstat=verstat
    )
    greeting = next(t["text"] for t in record["turns"] if t["role"] == "bot")
    prompt = " ".join(str(m.get("content")) for m in llm.requests[0])
    assert ("Omar" in greeting) is greeted and ("Omar" in prompt) is greeted


def test_only_phone_calls_with_a_sending_number_text() -> None:
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TOKEN}
    assert call_texts(Settings.from_env(env), "twilio") is None  # no FRONTDESK_SMS_FROM
    texting = Settings.from_env({**env, "FRONTDESK_SMS_FROM": "+1 413 555 0100"})
    assert texting.sms_from == SENDER
    assert call_texts(texting, "browser") is None  # the demo never texts
    texts = call_texts(texting, "twilio")
    assert texts is not None and isinstance(texts.inner, TwilioTexts)
    assert texts.inner.from_number == SENDER
    with pytest.raises(SettingsError, match="FRONTDESK_SMS_FROM"):
        Settings.from_env({**env, "FRONTDESK_SMS_FROM": "413-555"})
