"""Escalation to a person: TwiML, the Twilio REST client, the summary, and whole calls that end in
a warm transfer, come back when nobody answers, fail at Twilio, or happen after hours."""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from agent.escalation import (
    MisunderstandingCounter,
    build_summary,
    conversation_facts,
    is_misunderstanding,
)
from agent.prompts import phrases
from agent.session import earlier_messages
from telephony import twiml
from telephony.replay import Turn, converse, replay
from telephony.signature import sign_twilio_request
from telephony.twilio_rest import TwilioRest, TwilioRestError
from tests.caller_audio import RATE, call_audio, turn
from tests.conftest import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    BUSINESS_YAML,
    SCRIPT_RULES,
    TZ,
    free_port,
    server_env,
)
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread
from tests.fakes.llm import build_app as build_llm_app
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tools.domain.business import ConfigError, escalation_numbers, read_config
from tools.store import schema
from tools.store.business import load_business
from tools.store.customers import callback_customer
from tools.store.db import Database
from tools.store.handoffs import record_handoff

ACCOUNT_SID = "AC" + "5" * 32
DESK = ["+14135550199", "+14135550198"]
XML = '<?xml version="1.0" encoding="UTF-8"?>'

# --- TwiML, exactly -------------------------------------------------------------------------


def test_transfer_twiml_rings_every_number_with_the_whisper():
    body = twiml.transfer_dial(
        DESK, "https://fd.example/twilio/dial-action?handoff=7",
        "https://fd.example/twilio/whisper?handoff=7",
    )  # fmt: skip
    assert body == (
        XML + '<Response><Dial action="https://fd.example/twilio/dial-action?handoff=7" '
        'method="POST" timeout="20">'
        '<Number method="POST" url="https://fd.example/twilio/whisper?handoff=7">+14135550199'
        "</Number>"
        '<Number method="POST" url="https://fd.example/twilio/whisper?handoff=7">+14135550198'
        "</Number></Dial></Response>"
    )


def test_cold_transfer_twiml_has_no_whisper_and_escapes_urls():
    body = twiml.transfer_dial(["+14135550199"], "https://fd.example/a?handoff=1&x=2", "", 15)
    assert body == (
        XML + '<Response><Dial action="https://fd.example/a?handoff=1&amp;x=2" method="POST" '
        'timeout="15"><Number>+14135550199</Number></Dial></Response>'
    )
    with pytest.raises(ValueError):
        twiml.transfer_dial([], "https://fd.example/a")


def test_whisper_and_hangup_twiml():
    assert (
        twiml.whisper("Anna & Bo <3.")
        == XML + "<Response><Say>Anna &amp; Bo &lt;3.</Say></Response>"
    )
    assert twiml.hangup() == XML + "<Response><Hangup /></Response>"


# --- The summary and the misunderstanding count ---------------------------------------------


def test_summary_says_who_what_and_what_was_tried_in_two_sentences():
    messages = [
        {"role": "assistant", "content": "Thanks for calling. How can I help?"},
        {"role": "user", "content": "Do you have a haircut on Friday?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "check_availability"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true, "say": "2pm is free"}'},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c2", "function": {"name": "book_appointment"}}],
        },
        {"role": "tool", "tool_call_id": "c2", "content": '{"ok": false, "say": "taken"}'},
        {"role": "user", "content": "This is ridiculous, I want to talk to a manager."},
    ]
    lines, tools = conversation_facts(messages)
    assert lines[-1].startswith("This is ridiculous")
    assert tools == [("check_availability", True), ("book_appointment", False)]
    summary = build_summary(
        caller_name="Anna Lee",
        caller_number="+14135550123",
        reason="upset that her booking failed",
        trigger="llm",
        caller_lines=lines,
        tools=tools,
    )
    assert summary == (
        "Anna Lee, calling from four one three, five five five, zero one two three, asked to "
        "speak with a person about upset that her booking failed. So far I checked availability "
        "and tried to book an appointment; their last words were: This is ridiculous, I want to "
        "talk to a manager."
    )
    assert len(re.findall(r"[.!?](\s|$)", summary)) == 2
    generic = build_summary(
        caller_name="",
        caller_number="",
        reason="caller asked for a real person",
        trigger="dtmf",
        caller_lines=[],
        tools=[],
    )
    assert generic == (
        "A caller pressed zero to reach a person. So far I had not looked anything up."
    )


def test_misunderstandings_count_only_in_a_row():
    counter = MisunderstandingCounter(limit=3)
    sorry = "Sorry, could you say that again?"
    assert [counter.note(t) for t in [sorry, sorry, "We open at nine.", sorry, sorry]] == [
        False
    ] * 5
    assert counter.note("I didn't catch that, could you repeat it?") is True
    assert counter.in_a_row == 0
    assert is_misunderstanding("Pardon?") and not is_misunderstanding("Your haircut is booked.")


def test_earlier_turns_become_context_for_a_resumed_call():
    call = {
        "turns": [
            {"role": "bot", "text": "Hi, how can I help?"},
            {"role": "caller", "text": "A person please."},
            {"role": "bot", "text": ""},
        ]
    }
    assert earlier_messages(call) == [
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "A person please."},
    ]
    assert earlier_messages(None) == []


# --- Business config ------------------------------------------------------------------------


def test_escalation_numbers_config_is_backward_compatible(tmp_path):
    assert escalation_numbers({"escalation_number": "(413) 555-0199"}) == ["+14135550199"]
    both = {"escalation_number": "+14135550199", "escalation_numbers": ["+14135550198"]}
    assert escalation_numbers(both) == DESK
    assert escalation_numbers({"escalation_number": DESK}) == DESK
    assert escalation_numbers({}) == []
    with pytest.raises(ConfigError, match=r"escalation_numbers\[1\]"):
        escalation_numbers({"escalation_numbers": ["+14135550198", "not a number"]})
    config = yaml.safe_load(BUSINESS_YAML.read_text())
    config["hours"] = {"monday": "09:00-24:00"}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    assert read_config(path)["hours"]["monday"] == "09:00-24:00"


async def test_seeded_business_keeps_its_escalation_number(db):
    business = await load_business(db)
    assert business.escalation_number == "+14135550199"
    assert business.escalation_numbers == ("+14135550199",)


# --- The Twilio REST client against the stand-in --------------------------------------------


@pytest.fixture
def twilio():
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    port = free_port()
    with ServerThread(build_twilio_app(fake), port) as server:
        yield fake, server.url


async def test_rest_client_speaks_twilios_format(twilio):
    fake, url = twilio
    rest = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, base_url=url)
    body = twiml.hangup()
    call = await rest.redirect("CAlive", body)
    assert (call.sid, call.status) == ("CAlive", "in-progress")
    assert fake.requests[-1].form == {"Twiml": body} and fake.requests[-1].authorized
    fake.ended_calls.add("CAlive")  # the caller hung up
    with pytest.raises(TwilioRestError) as gone:
        await rest.redirect("CAlive", body)
    assert (gone.value.status, gone.value.code, gone.value.call_gone) == (404, 20404, True)
    wrong = TwilioRest(ACCOUNT_SID, "not-the-token", base_url=url)
    with pytest.raises(TwilioRestError) as denied:
        await wrong.redirect("CAother", body)
    assert (denied.value.status, denied.value.code, denied.value.call_gone) == (401, 20003, False)
    assert "not-the-token" not in str(denied.value)
    nowhere = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TwilioRestError) as down:
        await nowhere.redirect("CAx", body)
    assert down.value.status == 0 and not down.value.call_gone


# --- Whole calls ------------------------------------------------------------------------------

ESCALATION_RULES = [
    Rule(
        r"real person|talk to (a|some)one|representative|\bhuman\b",
        tool="transfer_to_human",
        arguments={"reason": "caller asked for a real person"},
    ),
    Rule(
        r"my name is|call me back|message",
        tool="take_message",
        arguments={
            "message": "please call back about my colour appointment",
            "name": "Anna Lee",
        },
    ),
]


@dataclass
class Desk:
    url: str
    twilio: FakeTwilio
    data_dir: Path
    script: ScriptedLLM

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'frontdesk.db'}"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory):
    """The real app, open around the clock with two escalation numbers, a scripted LLM and the
    Twilio REST stand-in."""
    from agent.app import create_app
    from agent.settings import Settings

    data_dir = tmp_path_factory.mktemp("desk")
    config = yaml.safe_load(BUSINESS_YAML.read_text())
    config["hours"] = {day: "00:00-24:00" for day in config["hours"]} | {"sunday": "00:00-24:00"}
    config["escalation_number"] = DESK[0]
    config["escalation_numbers"] = DESK[1:]
    business = data_dir / "business.yaml"
    business.write_text(yaml.safe_dump(config))
    script = ScriptedLLM(rules=[*ESCALATION_RULES, *SCRIPT_RULES])
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    llm_port, twilio_port, port = free_port(), free_port(), free_port()
    with (
        ServerThread(build_llm_app(script), llm_port),
        ServerThread(build_twilio_app(fake), twilio_port) as twilio_server,
    ):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_BUSINESS_CONFIG=str(business),
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_API_BASE_URL=twilio_server.url,
        )
        app = create_app(Settings.from_env(env))
        with ServerThread(app, port) as server:
            yield Desk(server.url, fake, data_dir, script)


async def call(desk: Desk, *parts: str | float, **kwargs: Any):
    return await replay(
        call_audio(*parts), RATE, desk.url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN, **kwargs
    )


async def talk(desk: Desk, *turns: Turn, **kwargs: Any):
    """A caller who takes turns: each is spoken once the bot has answered the last one."""
    return await converse(
        list(turns), RATE, desk.url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN, **kwargs
    )


async def handoffs(desk: Desk, call_sid: str) -> list[dict[str, Any]]:
    db = Database(desk.db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                sa.select(schema.handoffs)
                .join(schema.calls)
                .where(schema.calls.c.call_sid == call_sid)
                .order_by(schema.handoffs.c.id)
            )
            return [dict(r._mapping) for r in rows]
    finally:
        await db.close()


def expected_dial(desk: Desk, handoff_id: int, warm: bool = True) -> str:
    action = f"{desk.url}/twilio/dial-action?handoff={handoff_id}"
    whisper = f"{desk.url}/twilio/whisper?handoff={handoff_id}" if warm else ""
    return twiml.transfer_dial(DESK, action, whisper)


def bot_texts(report) -> list[str]:
    return [t["text"] for t in report.call_record["turns"] if t["role"] == "bot"]


async def test_asking_for_a_person_is_a_warm_transfer_and_no_answer_loses_nothing(desk):
    # 1. The caller asks for a person: one sentence, then the call is moved to <Dial>.
    report, heard = await call(
        desk, 8.0, "Hi, I want to talk to a real person.", 8.0, from_number="+14135550144"
    )
    sid = report.call_sid
    record = report.call_record
    assert record["outcome"] == "transferred", record
    assert bot_texts(report)[-1] == phrases()["transfer_connecting"]
    rows = await handoffs(desk, sid)
    assert len(rows) == 1
    transfer = rows[0]
    assert (transfer["kind"], transfer["trigger"], transfer["outcome"]) == (
        "transfer",
        "llm",
        "dialing",
    )
    assert transfer["target"] == DESK[0] and transfer["caller_number"] == "+14135550144"
    assert transfer["customer_id"] is None  # a first-time caller
    summary = transfer["summary"]
    assert summary.startswith(
        "A caller, calling from four one three, five five five, zero one four four, "
        "asked to speak with a person."
    )
    assert "So far I had not looked anything up; their last words were:" in summary
    assert "real person" in summary.split("last words were:")[1].lower()
    # The exact TwiML reached Twilio's REST API, once, after the sentence had played.
    updates = desk.twilio.updates(sid)
    assert [u.form for u in updates] == [{"Twiml": expected_dial(desk, transfer["id"])}]
    assert updates[0].account_sid == ACCOUNT_SID
    sentence_end_ms = report.bot_speech_segments[-1][1]
    assert (updates[0].at - report.started_at) * 1000 >= sentence_end_ms
    level = np.abs(np.frombuffer(heard, dtype="<i2")[int(sentence_end_ms * 8) - 4000 :]).max()
    assert level > 2000  # the sentence was audible right up to its end
    # Ending our stream did not hang the call up.
    assert report.closed_by_server and report.close_code == 1000
    assert not any(u.form.get("Status") == "completed" for u in desk.twilio.requests)

    # 2. Nobody answers: Twilio calls the Dial action; the caller comes back to the agent.
    dialled = await desk.twilio.dial(
        updates[0].form["Twiml"],
        call_sid=sid,
        from_number="+14135550144",
        to_number="+14135550100",
        status="no-answer",
    )
    assert dialled.action_status == 200
    stream = ET.fromstring(dialled.action_twiml).find("./Connect/Stream")
    assert stream is not None and stream.get("url", "").endswith("/twilio/media")
    assert (await handoffs(desk, sid))[0]["outcome"] == "no_answer"

    # 3. Same call, new stream: the agent offers a message and stores the callback request.
    back, _ = await call(
        desk,
        11.0,
        "Please call me back about my colour appointment.",
        8.0,
        call_sid=sid,
        answer_twiml=dialled.action_twiml,
        from_number="+14135550144",
    )
    record = back.call_record
    assert record["call_sid"] == sid
    texts = [t["text"] for t in record["turns"]]
    assert phrases()["transfer_connecting"] in texts  # first stream's turns are kept
    assert phrases()["transfer_no_answer"] in texts
    assert any(
        "call you back" in t for t in texts[texts.index(phrases()["transfer_no_answer"]) + 1 :]
    )
    rows = await handoffs(desk, sid)
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("transfer", "no_answer"),
        ("message", "message_taken"),
    ]
    api = [(h["kind"], h["trigger"], h["outcome"], h["detail"]) for h in record["handoffs"]]
    assert api == [
        ("transfer", "llm", "no_answer", "DialCallStatus=no-answer"),
        ("message", "message", "message_taken", ""),
    ]
    message = rows[1]
    assert message["caller_name"] == "Anna Lee" and message["caller_number"] == "+14135550144"
    assert message["customer_id"] is not None and record["customer_id"] == message["customer_id"]
    assert message["callback_after"] is None  # open now: "as soon as possible today"
    # The resumed agent knew the conversation so far.
    asked = [r for r in desk.script.requests if "appointment" in str(r["messages"][-1])]
    assert any("real person" in str(m.get("content")) for m in asked[0]["messages"])
    # One record, one recording covering both streams.
    import wave

    with wave.open(record["recording_path"], "rb") as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds > (report.duration_ms + back.duration_ms) / 1000 - 3.0
    async with httpx.AsyncClient() as client:
        listing = await client.get(
            f"{desk.url}/api/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert [c["call_sid"] for c in listing.json()["calls"]].count(sid) == 1


async def test_pressing_zero_transfers_and_the_person_hears_the_summary(desk):
    db = Database(desk.db_url)
    try:
        customer_id = await callback_customer(db, "+14135550166", "Omar Haddad")  # on file
    finally:
        await db.close()
    # The caller presses 0 once the answer has played (or while it plays on a slow machine).
    report, _ = await call(desk, 6.5, "Do you have anything for a haircut this Friday?", 12.0,
                           dtmf=[(17.0, "0")], from_number="+14135550166")  # fmt: skip
    sid = report.call_sid
    assert report.call_record["outcome"] == "transferred"
    names = [c["name"] for c in report.call_record["tool_calls"]]
    assert names == ["check_availability"]  # pressing 0 is not a tool call
    [transfer] = await handoffs(desk, sid)
    assert (transfer["trigger"], transfer["reason"]) == ("dtmf", "caller pressed 0 for a person")
    assert transfer["customer_id"] == customer_id and transfer["caller_name"] == "Omar Haddad"
    assert transfer["summary"].startswith(
        "Omar Haddad, calling from four one three, five five five, zero one six six, pressed "
        "zero to reach a person. So far I checked availability; their last words were: "
    )
    [update] = desk.twilio.updates(sid)
    assert update.form == {"Twiml": expected_dial(desk, transfer["id"])}
    # The second desk phone answers: it hears the summary, then the caller is connected.
    dialled = await desk.twilio.dial(
        update.form["Twiml"],
        call_sid=sid,
        from_number="+14135550166",
        to_number="+14135550100",
        status="completed",
        answered_by=1,
    )
    assert dialled.whisper_twiml == [twiml.whisper(transfer["summary"])]
    assert dialled.action_twiml == twiml.hangup()
    [transfer] = await handoffs(desk, sid)
    assert transfer["outcome"] == "answered" and "talked 42 s" in transfer["detail"]


async def test_twilio_rest_errors_are_told_and_a_message_is_offered(desk):
    desk.twilio.fail_next.append((401, 20003, "Authenticate"))
    # The transfer is announced, fails, and the offer follows: three parts of one answer.
    report, _ = await talk(
        desk,
        turn("Can I talk to someone, please?", answer_parts=2),
        turn("My name is Anna Lee, please call me back."),
    )
    record = report.call_record
    assert record["outcome"] != "transferred"
    assert any("20003" in f for f in record["faults"])
    bots = bot_texts(report)
    assert phrases()["transfer_failed"] in bots
    rows = await handoffs(desk, report.call_sid)
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("transfer", "rest_error"),
        ("message", "message_taken"),
    ]
    assert "20003" in rows[0]["detail"] and rows[0]["summary"]


async def test_after_hours_a_callback_request_is_stored(desk):
    db = Database(desk.db_url)
    today = datetime.now(TZ).date()
    async with db.write() as conn:
        saved = [dict(r._mapping) for r in await conn.execute(sa.select(schema.opening_hours))]
        await conn.execute(schema.opening_hours.delete())
        for weekday in range(7):
            await conn.execute(
                schema.opening_hours.insert().values(weekday=weekday, opens="09:00", closes="17:00")
            )
        await conn.execute(schema.holidays.insert().values(day=today.isoformat(), name="Test day"))
    try:
        report, _ = await talk(
            desk,
            turn("Let me talk to a real person."),
            turn("My name is Anna Lee, please call me back."),
        )
    finally:
        async with db.write() as conn:
            await conn.execute(schema.holidays.delete().where(schema.holidays.c.name == "Test day"))
            await conn.execute(schema.opening_hours.delete())
            for row in saved:
                await conn.execute(schema.opening_hours.insert().values(**row))
        await db.close()
    assert desk.twilio.updates(report.call_sid) == []  # nobody was dialled
    bots = bot_texts(report)
    # (spoken by the model from the tool result; the record may miss the last word or two)
    assert any(b.startswith(phrases()["transfer_after_hours"][:48]) for b in bots), bots
    assert any("tomorrow after nine a m" in b for b in bots)
    rows = await handoffs(desk, report.call_sid)
    assert [(r["kind"], r["outcome"], r["detail"]) for r in rows] == [
        ("transfer", "unavailable", "after hours"),
        ("message", "message_taken", ""),
    ]
    tomorrow_nine = datetime.combine(today + timedelta(days=1), time(9), TZ).astimezone(UTC)
    assert rows[1]["callback_after"] == tomorrow_nine.isoformat()
    assert rows[1]["customer_id"] is not None


async def test_forged_or_unknown_transfer_callbacks_are_refused(desk):
    params = {"CallSid": "CAforged", "AccountSid": ACCOUNT_SID, "DialCallStatus": "no-answer"}
    async with httpx.AsyncClient() as client:
        for path in ("/twilio/dial-action?handoff=1", "/twilio/whisper?handoff=1"):
            url = desk.url + path
            missing = await client.post(url, data=params)
            forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "eA=="})
            other_key = sign_twilio_request("wrong-token", url, params)
            wrong = await client.post(url, data=params, headers={"X-Twilio-Signature": other_key})
            assert [missing.status_code, forged.status_code, wrong.status_code] == [403] * 3
            # Signed, but the query (the handoff) was changed after signing.
            good = sign_twilio_request(AUTH_TOKEN, url, params)
            moved = await client.post(
                url.replace("handoff=1", "handoff=2"),
                data=params,
                headers={"X-Twilio-Signature": good},
            )
            assert moved.status_code == 403
        # Correctly signed, but no such handoff for this call.
        url = f"{desk.url}/twilio/dial-action?handoff=999999"
        signed = await client.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
        assert signed.status_code == 404


async def test_three_misunderstood_turns_hand_the_caller_over(desk):
    sid = "CA" + secrets.token_hex(16)
    report, _ = await call(
        desk,
        4.5,
        "Blue elephants dance quietly.",
        5.0,
        "Purple bananas sing loudly.",
        5.0,
        "Green giraffes whistle softly.",
        9.0,
        call_sid=sid,
    )
    rows = await handoffs(desk, sid)
    assert [(r["trigger"], r["outcome"]) for r in rows] == [("misunderstood", "dialing")], [
        t["text"] for t in report.call_record["turns"]
    ]
    assert "could not understand them" in rows[0]["summary"]
    assert report.call_record["outcome"] == "transferred"


async def test_no_answer_with_every_line_busy_keeps_a_callback_request(db: Database) -> None:
    from agent.escalation import HandoffDesk
    from agent.settings import Settings
    from tools.store.calls import CallStore

    desk = HandoffDesk(db, Settings())
    await CallStore(db).start_call(call_sid="CAbusy", from_number="+14135550177")
    transfer = await record_handoff(
        db, call_sid="CAbusy", kind="transfer", trigger="llm", reason="a complaint",
        summary="A caller asked to speak with a person.", target=DESK[0],
        caller_number="+14135550177", outcome="dialing",
    )  # fmt: skip
    form = {"CallSid": "CAbusy", "From": "+14135550177", "DialCallStatus": "busy"}
    assert await desk.dial_finished(transfer, {**form, "CallSid": "CAother"}, True) is None
    step = await desk.dial_finished(transfer, form, can_resume=False)
    assert step is not None and step.kind == "goodbye" and "call you back" in step.text
    async with db.read() as conn:
        rows = [
            dict(r._mapping)
            for r in await conn.execute(sa.select(schema.handoffs).order_by(schema.handoffs.c.id))
        ]
    assert [(r["kind"], r["outcome"], r["detail"]) for r in rows] == [
        ("transfer", "busy", "DialCallStatus=busy"),
        ("message", "callback_requested", ""),
    ]
    assert rows[1]["customer_id"] is not None and rows[1]["reason"] == "a complaint"
    answered = await desk.dial_finished(transfer, {**form, "DialCallStatus": "completed"}, True)
    assert answered is not None and answered.kind == "hangup"
    assert await desk.whisper_text(transfer, "CAbusy") == "A caller asked to speak with a person."
    assert await desk.whisper_text(transfer, "CAsomeoneelse") is None
