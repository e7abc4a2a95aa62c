"""Whole outbound calls: a call is scheduled in the real store, the real app's own scheduler
(agent.outbound.scheduler, polling fast here) claims it and places it with the real dialer
through the Twilio REST stand-in (``Calls.create``), which plays it out with a scripted callee:
a person speaking through the replay client (local STT and TTS, scripted LLM), an answering
machine, nobody, a busy line. Twilio's status and AMD callbacks are signed and posted as Twilio
posts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from agent.app import Frontdesk, create_app
from agent.outbound.dialer import TwilioDialer
from agent.outbound.jobs import OutboundJob
from agent.prompts import phrases
from agent.settings import Settings
from telephony.signature import sign_twilio_request
from tests.caller_audio import call_audio, silence, turn
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, server_env, shared_models
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread
from tests.fakes.llm import build_app as build_llm_app
from tests.fakes.twilio_rest import CallCreate, Callee, FakeTwilio, RingResult
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tests.test_metrics import sample
from tools.domain.business import Business
from tools.domain.speech import say_when
from tools.store import schema
from tools.store.business import load_business
from tools.store.db import Database, new_id, utc_now
from tools.store.outbound import DoNotCallError, OutboundStore

ACCOUNT_SID = "AC" + "0" * 32
OUR_NUMBER = "+14135550100"


@dataclass
class Line:
    """The app with outbound calls on, its Twilio stand-in and its scripted LLM."""

    url: str
    state: Frontdesk
    twilio: FakeTwilio
    script: ScriptedLLM
    db_url: str
    other_worker: str = ""  # a second app on the same database (places no calls itself)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    script = ScriptedLLM(rules=[])
    twilio = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    data_dir = tmp_path_factory.mktemp("outbound")
    llm_port, port = free_port(), free_port()
    with (
        ServerThread(build_llm_app(script), llm_port),
        ServerThread(build_twilio_app(twilio), free_port()) as rest,
    ):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_API_BASE_URL=rest.url,
            FRONTDESK_PUBLIC_URL=f"http://127.0.0.1:{port}",
            FRONTDESK_OUTBOUND_FROM=OUR_NUMBER,
            FRONTDESK_OUTBOUND_SETTLE_SECS="1",
            FRONTDESK_OUTBOUND_AMD_WAIT_SECS="30",
            FRONTDESK_OUTBOUND_POLL_SECS="0.3",
            # Some tests leave their call ringing (nobody plays it out): no cap on them here.
            FRONTDESK_OUTBOUND_MAX_CALLS="15",
            FRONTDESK_OUTBOUND_BACKOFF_MINUTES="0.1",  # a retry 6 s after an unanswered call
        )
        settings = Settings.from_env(env)
        app = create_app(settings, models=shared_models(settings))
        other_port = free_port()
        other_env = {
            **env,
            "FRONTDESK_PORT": str(other_port),
            "FRONTDESK_PUBLIC_URL": f"http://127.0.0.1:{other_port}",
            "FRONTDESK_OUTBOUND_MAX_CALLS": "0",
        }
        other_settings = Settings.from_env(other_env)
        other = create_app(other_settings, models=shared_models(other_settings))
        with ServerThread(app, port) as server, ServerThread(other, other_port) as second:
            asyncio.run(call_any_time(f"sqlite+aiosqlite:///{data_dir / 'frontdesk.db'}"))
            yield Line(
                server.url,
                app.state.frontdesk,
                twilio,
                script,
                f"sqlite+aiosqlite:///{data_dir / 'frontdesk.db'}",
                second.url,
            )


async def call_any_time(db_url: str) -> None:
    """Calling hours all day and no holidays (no calls are placed on one), so the tests place
    calls on whatever day they run (the scheduler keeps to the window and the holidays:
    tests/test_outbound_scheduler.py, tests/test_calling_hours.py)."""
    db = Database(db_url)
    async with db.write() as conn:
        await conn.execute(
            schema.business.update().values(calling_hours_start="00:00", calling_hours_end="23:59")
        )
        await conn.execute(schema.holidays.delete())
    await db.close()


@pytest.fixture
async def db(line: Line) -> Any:
    database = Database(line.db_url)
    yield database
    await database.close()


# --- The scheduler's part, by hand ---------------------------------------------------------------


async def next_open_day(business: Business) -> date:
    """The first day from tomorrow (in the business's zone) the salon is open."""
    day = business.local(datetime.now(business.tz)).date() + timedelta(days=1)
    while not business.opening_on(day) or day in business.holidays:
        day += timedelta(days=1)
    return day


async def customer_with_haircut(
    db: Database, phone: str, name: str, at: time
) -> tuple[int, int, datetime]:
    """A customer on ``phone`` with a haircut (with Maria) on the next open day at ``at``:
    (customer id, appointment id, its local start)."""
    business = await load_business(db)
    start = datetime.combine(await next_open_day(business), at, tzinfo=business.tz)
    stamp = utc_now()
    async with db.write() as conn:
        customer = new_id(
            await conn.execute(
                schema.customers.insert().values(
                    phone=phone, name=name, email="", created_at=stamp, updated_at=stamp
                )
            )
        )
        service = (
            await conn.execute(
                sa.select(schema.services.c.id).where(schema.services.c.name == "Haircut")
            )
        ).scalar_one()
        staff = (
            await conn.execute(sa.select(schema.staff.c.id).where(schema.staff.c.name == "Maria"))
        ).scalar_one()
        appointment = new_id(
            await conn.execute(
                schema.appointments.insert().values(
                    customer_id=customer,
                    service_id=service,
                    staff_id=staff,
                    starts_at=start.isoformat(),
                    ends_at=(start + timedelta(minutes=30)).isoformat(),
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        )
    return customer, appointment, start


async def schedule(
    db: Database,
    to: str,
    purpose: str = "reminder",
    *,
    customer_id: int | None = None,
    appointment_id: int | None = None,
    message: str = "",
    max_attempts: int = 3,
    due_at: datetime | None = None,
) -> int:
    """An outbound call due now (as POST /api/outbound or the reminder sweep makes one)."""
    return await OutboundStore(db).schedule(
        purpose=purpose,
        to=to,
        customer_id=customer_id,
        appointment_id=appointment_id,
        message=message,
        max_attempts=max_attempts,
        due_at=due_at,
        created_by="test",
    )


async def outbound_row(db: Database, job_id: int) -> dict[str, Any]:
    async with db.read() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(schema.outbound_calls).where(schema.outbound_calls.c.id == job_id)
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def dial(line: Line, db: Database, job_id: int, attempt: int = 1) -> CallCreate:
    """The Calls.create request of attempt ``attempt`` of job ``job_id``, once the app's
    scheduler has placed it and recorded its CallSid."""
    deadline = asyncio.get_running_loop().time() + 20.0
    while asyncio.get_running_loop().time() < deadline:
        row = await outbound_row(db, job_id)
        if row["attempts"] == attempt and row["status"] == "dialing" and row["call_sid"]:
            [placed] = [c for c in line.twilio.placed if c.sid == row["call_sid"]]
            return placed
        await asyncio.sleep(0.1)
    raise AssertionError(f"attempt {attempt} of outbound call {job_id} was never placed: {row}")


async def settled(db: Database, job_id: int, timeout: float = 20.0) -> dict[str, Any]:
    """The row once its running attempt has an outcome (it is no longer dialing or in
    progress)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        row = await outbound_row(db, job_id)
        running = row["status"] in ("dialing", "in_progress")
        if not running or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.2)


async def reminder_outcome(db: Database, appointment_id: int) -> dict[str, Any]:
    async with db.read() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(schema.appointments).where(schema.appointments.c.id == appointment_id)
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


def bot_turns(result: RingResult) -> list[str]:
    assert result.report is not None and result.report.call_record is not None
    return [t["text"] for t in result.report.call_record["turns"] if t["role"] == "bot"]


def tools_called(result: RingResult) -> list[str]:
    assert result.report is not None and result.report.call_record is not None
    return [c["name"] for c in result.report.call_record["tool_calls"] if c["ok"]]


# --- Placing a call ----------------------------------------------------------------------------


async def test_the_dialer_asks_twilio_for_asynchronous_amd_and_every_callback(
    line: Line, db: Database
) -> None:
    job = await schedule(db, "+14135550161", "custom", message="Your order is ready.")
    placed = await dial(line, db, job)
    form = placed.form
    assert placed.authorized and placed.sid.startswith("CA")
    assert (form["To"], form["From"]) == ("+14135550161", OUR_NUMBER)
    assert form["Url"] == f"{line.url}/twilio/outbound/answer"
    assert form["StatusCallback"] == f"{line.url}/twilio/outbound/status"
    assert form["AsyncAmdStatusCallback"] == f"{line.url}/twilio/outbound/amd"
    assert (form["MachineDetection"], form["AsyncAmd"]) == ("DetectMessageEnd", "true")
    assert placed.status_events == ["initiated", "ringing", "answered", "completed"]
    assert form["Timeout"] == "25"


async def test_a_number_twilio_refuses_is_not_retried_but_a_twilio_outage_is(
    line: Line, db: Database
) -> None:
    assert line.state.dialer is not None
    bad = OutboundJob(id=0, to="+1234", purpose="custom", attempt=1)
    with pytest.raises(Exception) as refused:
        await line.state.dialer.place(bad)
    assert getattr(refused.value, "retryable", None) is False and "21211" in str(refused.value)
    line.twilio.fail_next.append((503, 20500, "Service Unavailable"))
    good = OutboundJob(id=0, to="+14135550162", purpose="custom", attempt=1)
    with pytest.raises(Exception) as outage:
        await line.state.dialer.place(good)
    assert getattr(outage.value, "retryable", None) is True


def test_without_a_from_number_outbound_calls_are_off_with_a_clear_reason(
    tmp_path: Path,
) -> None:
    env = server_env(tmp_path, 0, TWILIO_ACCOUNT_SID=ACCOUNT_SID)
    settings = Settings.from_env(env)
    assert "FRONTDESK_OUTBOUND_FROM" in settings.outbound_unavailable
    state: Frontdesk = create_app(settings).state.frontdesk
    assert state.dialer is None
    # The SMS number is the default caller ID; still off without a public URL for the webhooks.
    texting = Settings.from_env({**env, "FRONTDESK_SMS_FROM": OUR_NUMBER})
    assert texting.outbound_from == OUR_NUMBER
    assert "FRONTDESK_PUBLIC_URL" in texting.outbound_unavailable
    with pytest.raises(Exception, match="FRONTDESK_OUTBOUND_FROM must be a phone number"):
        Settings.from_env({**env, "FRONTDESK_OUTBOUND_FROM": "our shop"})
    with pytest.raises(Exception, match="FRONTDESK_PUBLIC_URL"):
        TwilioDialer.from_settings(texting)


# --- Whole calls -------------------------------------------------------------------------------


async def test_a_person_confirms_their_reminder(line: Line, db: Database) -> None:
    line.script.rules[:] = [Rule(r"make it|yes", tool="confirm_appointment", arguments={})]
    customer, appointment, start = await customer_with_haircut(
        db, "+14135550171", "Dana Whitfield", time(15, 0)
    )
    job = await schedule(db, "+14135550171", customer_id=customer, appointment_id=appointment)
    placed = await dial(line, db, job)
    # Twilio's AMD verdict reaches another worker: the call's agent reads it from the database.
    callee = Callee(
        "human", turns=[turn("Yes, I can still make it.")], amd_server=line.other_worker
    )
    result = await line.twilio.ring(placed, callee, admin_token=ADMIN_TOKEN)
    assert all(code in (200, 204) for _, code in result.callbacks), result.callbacks
    assert ("human", 204) in result.callbacks
    # The agent spoke once the verdict was in, long before its 30 s wait for one ran out.
    assert result.report is not None and result.report.reply_starts_ms[0] < 12000
    record = result.report.call_record
    assert record is not None and record["direction"] == "outbound"
    business = await load_business(db)
    today = business.local(datetime.now(business.tz)).date()
    opening = bot_turns(result)[0]
    assert opening == (
        f"Hi Dana, this is Bella Hair Studio with a reminder of your haircut "
        f"{say_when(start, today)}. This call may be recorded for quality and training. "
        "Can you still make it?"
    )  # a call we place is recorded too, and says so before its question
    assert set(tools_called(result)) == {"confirm_appointment"}
    row = await settled(db, job)
    assert (row["outcome"], row["status"], row["answered_by"]) == ("confirmed", "done", "human")
    assert (await reminder_outcome(db, appointment))["reminder_outcome"] == "confirmed"
    # The model was told why it called, and the callee counted as proven (the number on file).
    system = line.script.requests[-1]["messages"][0]["content"]
    assert "remind them of their haircut with Maria" in system
    assert "Dana Whitfield, a returning customer" in system


async def test_a_person_moves_their_appointment(line: Line, db: Database) -> None:
    customer, appointment, start = await customer_with_haircut(
        db, "+14135550172", "Sam Ortiz", time(11, 0)
    )
    new_when = f"{start:%A} at 4pm"
    line.script.rules[:] = [
        Rule(r"move|four|instead", tool="reschedule_appointment", arguments={"new_when": new_when})
    ]
    job = await schedule(db, "+14135550172", customer_id=customer, appointment_id=appointment)
    placed = await dial(line, db, job)
    result = await line.twilio.ring(
        placed,
        Callee("human", turns=[turn("Could we move it to four o'clock instead?")]),
        admin_token=ADMIN_TOKEN,
    )
    assert set(tools_called(result)) == {"reschedule_appointment"}
    row = await settled(db, job)
    assert row["outcome"] == "rescheduled"
    moved = await reminder_outcome(db, appointment)
    assert moved["reminder_outcome"] == "rescheduled" and moved["status"] == "booked"
    business = await load_business(db)
    assert business.local(datetime.fromisoformat(moved["starts_at"])) == start.replace(hour=16)


async def test_a_machine_gets_a_voicemail_and_never_a_conversation(
    line: Line, db: Database
) -> None:
    line.script.rules[:] = [Rule(r".", reply="Hello there, how can I help?")]
    customer, appointment, _ = await customer_with_haircut(
        db, "+14135550173", "Lee Park", time(14, 0)
    )
    job = await schedule(db, "+14135550173", customer_id=customer, appointment_id=appointment)
    placed = await dial(line, db, job)
    asked_before = len(line.script.requests)
    greeting = call_audio("Hi, you have reached Lee. Please leave a message after the tone.")
    result = await line.twilio.ring(
        placed, Callee("machine", greeting=greeting + silence(4.0)), admin_token=ADMIN_TOKEN
    )
    voicemail = phrases()["outbound_voicemail"]
    expected = voicemail.format(
        hello="Hi Lee",
        business_name="Bella Hair Studio",
        business_phone="four one three, five five five, zero one zero zero",
    )
    assert bot_turns(result) == [expected]
    assert len(line.script.requests) == asked_before  # the model never heard the machine
    assert result.report is not None and result.report.closed_by_server  # we hung up
    row = await settled(db, job)
    assert (row["outcome"], row["answered_by"]) == ("voicemail", "machine_end_beep")
    assert (await reminder_outcome(db, appointment))["reminder_outcome"] == "voicemail"


async def test_nobody_answers_it_is_retried_then_given_up(line: Line, db: Database) -> None:
    job = await schedule(db, "+14135550174", "callback", message="About a refund", max_attempts=2)
    first = await dial(line, db, job)
    result = await line.twilio.ring(first, Callee("no-answer"))
    assert result.callbacks[-1] == ("no-answer", 204)
    row = await settled(db, job)
    assert (row["outcome"], row["status"], row["attempts"]) == ("no_answer", "scheduled", 1)
    assert str(row["due_at"]) > utc_now()  # again, after a backoff
    # A repeated callback changes nothing: the first outcome of an attempt wins.
    await line.twilio.ring(first, Callee("busy"))
    assert (await outbound_row(db, job))["outcome"] == "no_answer"
    # The scheduler tries again after the backoff; a busy line then, and that was the last try.
    second = await dial(line, db, job, attempt=2)
    assert second.sid != first.sid and second.to == "+14135550174"
    await line.twilio.ring(second, Callee("busy"))
    row = await settled(db, job)
    assert (row["outcome"], row["status"], row["attempts"]) == ("busy", "given_up", 2)
    await asyncio.sleep(1.0)  # a few scheduler rounds: nothing more is placed
    assert len([c for c in line.twilio.placed if c.to == "+14135550174"]) == 2


async def test_a_callee_who_opts_out_is_never_called_again(line: Line, db: Database) -> None:
    line.script.rules[:] = [Rule(r"call me|again|stop", tool="stop_calling_me", arguments={})]
    customer, appointment, _ = await customer_with_haircut(
        db, "+14135550175", "Kim Novak", time(13, 0)
    )
    job = await schedule(db, "+14135550175", customer_id=customer, appointment_id=appointment)
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    later = await schedule(
        db, "+14135550175", "custom", customer_id=customer, message="Sale!", due_at=in_an_hour
    )
    placed = await dial(line, db, job)
    result = await line.twilio.ring(
        placed,
        Callee("human", turns=[turn("Please don't call me again.")]),
        admin_token=ADMIN_TOKEN,
    )
    assert set(tools_called(result)) == {"stop_calling_me"}
    assert (await settled(db, job))["outcome"] == "opted_out"
    async with db.read() as conn:
        flagged = (
            await conn.execute(
                sa.select(schema.customers.c.do_not_call, schema.customers.c.do_not_call_at).where(
                    schema.customers.c.id == customer
                )
            )
        ).one()
    assert flagged.do_not_call is True and flagged.do_not_call_at
    assert (await outbound_row(db, later))["status"] == "cancelled"
    with pytest.raises(DoNotCallError):  # and no new call is taken for them
        await schedule(db, "+14135550175", "custom", message="One more thing")


async def test_forged_status_and_amd_callbacks_are_refused_and_counted(
    line: Line, db: Database
) -> None:
    job = await schedule(db, "+14135550176", "custom", message="Hello")
    placed = await dial(line, db, job)
    before = await scrape_line(line)
    async with httpx.AsyncClient() as client:
        for path, field, value in [
            ("status", "CallStatus", "busy"),
            ("amd", "AnsweredBy", "human"),
            ("answer", "CallStatus", "in-progress"),
        ]:
            url = f"{line.url}/twilio/outbound/{path}"
            params = {"CallSid": placed.sid, "AccountSid": ACCOUNT_SID, field: value}
            forged = sign_twilio_request("not-the-token", url, params)
            refused = await client.post(url, data=params, headers={"X-Twilio-Signature": forged})
            missing = await client.post(url, data=params)
            assert (refused.status_code, missing.status_code) == (403, 403)
    after = await scrape_line(line)
    reason = {"reason": "forged_signature"}
    grown = sample(after, "frontdesk_refusals_total", **reason)
    assert grown - sample(before, "frontdesk_refusals_total", **reason) == 6
    row = await outbound_row(db, job)
    assert (row["outcome"], row["answered_by"]) == ("", "")  # nothing was believed


async def test_an_answer_for_a_call_we_did_not_place_hangs_up(line: Line) -> None:
    not_ours = "CAa22583e4d1d78fda813c2087dbc8e02b"  # a well-formed CallSid of no call we placed
    url = f"{line.url}/twilio/outbound/answer"
    params = {"CallSid": not_ours, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
    signature = sign_twilio_request(AUTH_TOKEN, url, params)
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200 and "<Hangup" in answer.text and "<Stream" not in answer.text


async def scrape_line(line: Line) -> str:
    """The app's metrics exposition (the test client is a loopback peer)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{line.url}/metrics")
    assert response.status_code == 200, response.text
    return response.text


async def test_a_callback_carries_the_callers_reason_and_ends_completed(
    line: Line, db: Database
) -> None:
    line.script.rules[:] = [Rule(r"bye|thank", tool="end_call", arguments={"reason": "done"})]
    job = await schedule(db, "+14135550177", "callback", message="Wants to know about balayage")
    placed = await dial(line, db, job)
    result = await line.twilio.ring(
        placed, Callee("human", turns=[turn("Oh great, thank you. Bye.")]), admin_token=ADMIN_TOKEN
    )
    assert bot_turns(result)[0] == (
        "Hi, this is Bella Hair Studio returning your call. This call may be recorded for "
        "quality and training. How can we help?"
    )
    # (once or twice: the callee's words may reach the model as one turn or two)
    assert set(tools_called(result)) == {"end_call"}
    system = line.script.requests[-1]["messages"][0]["content"]
    assert "Their message was: Wants to know about balayage" in system
    row = await settled(db, job)
    assert (row["outcome"], row["status"], row["answered_by"]) == ("completed", "done", "human")


async def test_a_machine_that_cannot_take_a_message_is_hung_up_on_and_retried(
    line: Line, db: Database
) -> None:
    job = await schedule(db, "+14135550178", "custom", message="Your order is in.")
    placed = await dial(line, db, job)
    asked_before = len(line.script.requests)
    greeting = call_audio("Hello, please leave a message.")
    result = await line.twilio.ring(
        placed,
        Callee("machine", greeting=greeting + silence(3.0), verdict="machine_start"),
        admin_token=ADMIN_TOKEN,
    )
    assert bot_turns(result) == []  # not a word to a machine
    assert result.report is not None and result.report.closed_by_server
    assert len(line.script.requests) == asked_before
    row = await settled(db, job)
    assert (row["outcome"], row["status"], row["answered_by"]) == (
        "failed",
        "scheduled",
        "machine_start",
    )
