"""Escalation to a person: TwiML, the Twilio REST client and the summary; calls at frame level
(pressing zero, a Twilio REST error, after hours, misunderstood turns) on a fixed clock; the
transfer webhooks as HTTP requests; and one whole call in real time that ends in a warm transfer
nobody answers and comes back to the agent without losing anything."""

from __future__ import annotations

import asyncio
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from pipecat.frames.frames import (
    FunctionCallFromLLM,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from agent.app import Frontdesk, create_app
from agent.escalation import (
    Escalation,
    HandoffDesk,
    MisunderstandingCounter,
    build_summary,
    conversation_facts,
    is_misunderstanding,
)
from agent.pipeline import CallPipeline, CallServices
from agent.processors import PlaybackMarker
from agent.prompts import phrases
from agent.session import CallInfo, CallSession, earlier_messages
from agent.settings import Settings
from agent.turns import SegmentTranscribedFrame
from telephony import codec, twiml
from telephony.replay import Report, replay
from telephony.serializer import MarkFrame, TwilioMediaSerializer
from telephony.signature import sign_twilio_request
from telephony.twilio_rest import TwilioRest, TwilioRestError
from tests.caller_audio import RATE as AUDIO_RATE
from tests.caller_audio import call_audio
from tests.conftest import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    BUSINESS_YAML,
    SCRIPT_RULES,
    TZ,
    free_port,
    server_env,
    shared_models,
)
from tests.fakes.llm import Rule, ServerThread
from tests.fakes.llm import ScriptedLLM as OpenAIStandIn
from tests.fakes.llm import build_app as build_llm_app
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tests.frames import RATE, ScriptedLLM, ScriptedTTS, SilentVAD, TranscriptsGiven
from tools.domain.business import ConfigError, escalation_numbers, read_config
from tools.store import schema
from tools.store.business import load_business, seed_business
from tools.store.calls import CallStore
from tools.store.customers import callback_customer
from tools.store.db import Database
from tools.store.handoffs import record_handoff

ACCOUNT_SID = "AC" + "5" * 32
DESK = ["+14135550199", "+14135550198"]
XML = '<?xml version="1.0" encoding="UTF-8"?>'

# --- TwiML, exactly -------------------------------------------------------------------------


def test_transfer_twiml_rings_every_number_with_the_whisper() -> None:
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


def test_cold_transfer_twiml_has_no_whisper_and_escapes_urls() -> None:
    body = twiml.transfer_dial(["+14135550199"], "https://fd.example/a?handoff=1&x=2", "", 15)
    assert body == (
        XML + '<Response><Dial action="https://fd.example/a?handoff=1&amp;x=2" method="POST" '
        'timeout="15"><Number>+14135550199</Number></Dial></Response>'
    )
    with pytest.raises(ValueError):
        twiml.transfer_dial([], "https://fd.example/a")


def test_whisper_and_hangup_twiml() -> None:
    assert (
        twiml.whisper("Anna & Bo <3.")
        == XML + "<Response><Say>Anna &amp; Bo &lt;3.</Say></Response>"
    )
    assert twiml.hangup() == XML + "<Response><Hangup /></Response>"


# --- The summary and the misunderstanding count ---------------------------------------------


def test_summary_says_who_what_and_what_was_tried_in_two_sentences() -> None:
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


def test_misunderstandings_count_only_in_a_row() -> None:
    counter = MisunderstandingCounter(limit=3)
    sorry = "Sorry, could you say that again?"
    assert [counter.note(t) for t in [sorry, sorry, "We open at nine.", sorry, sorry]] == [
        False
    ] * 5
    assert counter.note("I didn't catch that, could you repeat it?") is True
    assert counter.in_a_row == 0
    assert is_misunderstanding("Pardon?") and not is_misunderstanding("Your haircut is booked.")


def test_earlier_turns_become_context_for_a_resumed_call() -> None:
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


def test_escalation_numbers_config_is_backward_compatible(tmp_path: Path) -> None:
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


async def test_seeded_business_keeps_its_escalation_number(db: Database) -> None:
    business = await load_business(db)
    assert business.escalation_number == "+14135550199"
    assert business.escalation_numbers == ("+14135550199",)


# --- The Twilio REST client against the stand-in --------------------------------------------


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    port = free_port()
    with ServerThread(build_twilio_app(fake), port) as server:
        yield fake, server.url


async def test_rest_client_speaks_twilios_format(twilio: tuple[FakeTwilio, str]) -> None:
    fake, url = twilio
    rest = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, base_url=url)
    body = twiml.hangup()
    call = await rest.redirect("CA6c697665000000000000000000000000", body)
    assert (call.sid, call.status) == ("CA6c697665000000000000000000000000", "in-progress")
    assert fake.requests[-1].form == {"Twiml": body} and fake.requests[-1].authorized
    fake.ended_calls.add("CA6c697665000000000000000000000000")  # the caller hung up
    with pytest.raises(TwilioRestError) as gone:
        await rest.redirect("CA6c697665000000000000000000000000", body)
    assert (gone.value.status, gone.value.code, gone.value.call_gone) == (404, 20404, True)
    wrong = TwilioRest(ACCOUNT_SID, "not-the-token", base_url=url)
    with pytest.raises(TwilioRestError) as denied:
        await wrong.redirect("CA6f746865720000000000000000000000", body)
    assert (denied.value.status, denied.value.code, denied.value.call_gone) == (401, 20003, False)
    assert "not-the-token" not in str(denied.value)
    nowhere = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TwilioRestError) as down:
        await nowhere.redirect("CA78000000000000000000000000000000", body)
    assert down.value.status == 0 and not down.value.call_gone


# --- Calls at frame level: the real session, pipeline, tools, Escalation and HandoffDesk ------
#
# Each call runs the real pipeline assembly (agent/pipeline.py) with the scripted providers of
# tests/frames.py. Twilio's side is played by :class:`Phone`: what the output transport would
# send goes through the real TwilioMediaSerializer, and what Twilio sends back (marks once the
# audio played, a key pressed) comes in through it to the session. Twilio's REST API is the
# stand-in in tests/fakes/twilio_rest.py; its call engine posts the transfer webhooks straight
# into the app. The time of day is fixed per call, so "open" and "after hours" are chosen.

BASE = "http://fd.test"  # where Twilio reaches the app (an in-process transport)
MONDAY_MORNING = datetime(2026, 11, 23, 10, 0, tzinfo=TZ)  # open: Mondays 09:00-18:00
SUNDAY_MORNING = datetime(2026, 11, 22, 10, 0, tzinfo=TZ)  # closed all day Sunday
SAY_AGAIN = "Sorry, could you say that again?"


@dataclass
class Salon:
    """The real app (its routes, CallStore and HandoffDesk; no models loaded) over a seeded
    database with two escalation numbers, and the Twilio stand-in."""

    app: Any
    state: Frontdesk
    twilio: FakeTwilio


@pytest.fixture
async def salon(tmp_path: Path) -> AsyncIterator[Salon]:
    config = yaml.safe_load(BUSINESS_YAML.read_text())
    config["escalation_number"] = DESK[0]
    config["escalation_numbers"] = DESK[1:]
    business = tmp_path / "business.yaml"
    business.write_text(yaml.safe_dump(config))
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    with ServerThread(build_twilio_app(fake), free_port()) as rest:  # the SDK needs a socket
        env = server_env(
            tmp_path,
            free_port(),
            FRONTDESK_BUSINESS_CONFIG=str(business),
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_API_BASE_URL=rest.url,
        )
        app = create_app(Settings.from_env(env))
        state: Frontdesk = app.state.frontdesk
        await state.db.migrate()
        await seed_business(state.db, business)
        fake.transport = httpx.ASGITransport(app=app)
        try:
            yield Salon(app, state, fake)
        finally:
            await state.db.close()


class Phone(BaseObserver):
    """Twilio's end of one media stream. What the output transport would send (the frames
    PlaybackMarker passes on) goes out through the real serializer and plays in real time; each
    mark comes back through the serializer once the audio before it has played (at once on a
    clear, as Twilio does). The caller's words and keys go in from here."""

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self.stream_sid = session.info.stream_sid
        parser = codec.MediaStreamParser()
        start = {"streamSid": self.stream_sid, "callSid": session.info.call_sid,
                 "accountSid": ACCOUNT_SID, "customParameters": {}}  # fmt: skip
        parser.receive(json.dumps({"event": "start", "start": start}))
        self.serializer = TwilioMediaSerializer(parser, session)
        self.worker: PipelineWorker | None = None
        self.played: list[tuple[str, float]] = []  # each sentence once played, at time.time()
        self._played_by = 0.0  # when (loop time) the audio sent so far will have played
        self._marks: dict[asyncio.Task[None], tuple[str | bytes, str]] = {}  # wire, sentence
        self._changed = asyncio.Condition()

    @property
    def sentences(self) -> list[str]:
        return [text for text, _ in self.played]

    async def on_push_frame(self, data: FramePushed) -> None:
        if not isinstance(data.source, PlaybackMarker):
            return
        if data.direction is not FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        wire = await self.serializer.serialize(frame)
        if wire is None:
            return
        now = asyncio.get_running_loop().time()
        event = json.loads(wire)["event"]
        if event == "media" and isinstance(frame, TTSAudioRawFrame):
            seconds = len(frame.audio) / 2 / frame.sample_rate
            self._played_by = max(self._played_by, now) + seconds
        elif event == "mark" and isinstance(frame, MarkFrame):
            delay = max(0.0, self._played_by - now)
            task = asyncio.create_task(self._echo(wire, frame.mark_text, delay))
            self._marks[task] = (wire, frame.mark_text)
        elif event == "clear":
            self._played_by = 0.0
            pending = list(self._marks.items())
            self._marks.clear()
            for task, (mark, text) in pending:
                task.cancel()
                await self._echo(mark, text, 0.0)

    async def _echo(self, wire: str | bytes, text: str, delay: float) -> None:
        await asyncio.sleep(delay)  # the phone is playing the audio before the mark
        if (task := asyncio.current_task()) is not None:
            self._marks.pop(task, None)
        await self.serializer.deserialize(wire)  # Twilio's echo has the mark's own shape
        async with self._changed:
            self.played.append((text, time.time()))
            self._changed.notify_all()

    def hang_up(self) -> None:
        for task in self._marks:
            task.cancel()

    async def until(self, done: Callable[[list[str]], bool], what: str) -> None:
        """Wait for the sentences played so far to satisfy ``done`` (a hung call fails)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: done(self.sentences)), 20)
            except TimeoutError:
                raise AssertionError(f"{what} never played; played: {self.sentences}") from None

    async def hears(self, text: str) -> None:
        await self.until(lambda played: any(text in s for s in played), repr(text))

    async def says(self, text: str) -> None:
        """The caller says ``text``: the frames the VAD and the local (segmented) STT produce,
        the words once the VAD has heard the end of the segment."""
        assert self.worker is not None
        await self.worker.queue_frame(VADUserStartedSpeakingFrame())
        await asyncio.sleep(0.2)  # the caller is speaking
        await self.worker.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        words = TranscriptionFrame(text, "caller", time_now_iso8601(), finalized=True)
        await self.worker.queue_frames([words, SegmentTranscribedFrame()])

    async def presses(self, digit: str) -> None:
        """The caller presses a key: Twilio's dtmf event, in through the serializer."""
        assert self.worker is not None
        event = {"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": "9",
                 "dtmf": {"track": "inbound_track", "digit": digit}}  # fmt: skip
        frame = await self.serializer.deserialize(json.dumps(event))
        if frame is not None:
            await self.worker.queue_frame(frame)


class ToolSayingLLM(ScriptedLLM):
    """frames.ScriptedLLM, but like the OpenAI stand-in (tests/fakes/llm.py): after a tool
    result it says the tool's ``say`` sentence, and each tool call has its own id. A script
    key of "" matches anything (put it last)."""

    def __init__(self, script: dict[str, str | tuple[str, dict[str, str]]]) -> None:
        super().__init__(script)
        self.calls = 0

    async def _answer(self, context: LLMContext) -> None:
        messages = [m for m in context.get_messages() if isinstance(m, dict)]
        last: dict[str, Any] = dict(messages[-1]) if messages else {}
        said = str(last.get("content") or "")
        if last.get("role") == "tool":
            reply: str | tuple[str, dict[str, str]] = json.loads(said or "{}").get("say", "")
        else:
            reply = next((r for key, r in self.script.items() if key in said.lower()), "")
        if isinstance(reply, tuple):
            self.calls += 1
            name, arguments = reply
            call = FunctionCallFromLLM(function_name=name, tool_call_id=f"call-{self.calls}",
                                       arguments=arguments, context=context)  # fmt: skip
            await self.run_function_calls([call])
            return
        await self.push_frame(LLMFullResponseStartFrame())
        for word in (reply or "Done.").split(" "):
            await self.push_frame(LLMTextFrame(f"{word} "))
        await self.push_frame(LLMFullResponseEndFrame())


async def phone_call(
    salon: Salon,
    llm: ScriptedLLM,
    caller: Callable[[Phone], Awaitable[None]],
    *,
    call_sid: str,
    from_number: str = "+14135550123",
    clock: datetime = MONDAY_MORNING,
    verstat: str = "",
) -> tuple[CallSession, dict[str, Any], Phone]:
    """One Twilio call at frame level, at the time of day ``clock``: the greeting plays, then
    ``caller`` acts. The call ends when the session ends it (a transfer under way is waited
    for), else once ``caller`` is done. Returns the session, the stored record and the phone."""
    state = salon.state
    settings = replace(state.settings, turn_pause_secs=0.2)
    info = CallInfo(call_sid, stream_sid="MZ" + call_sid[2:], source="twilio",
                    from_number=from_number, to_number="+14135550100", account_sid=ACCOUNT_SID,
                    public_base=BASE, caller_verstat=verstat)  # fmt: skip
    session = CallSession(
        info,
        settings=settings,
        db=state.db,
        store=state.calls,
        escalation=lambda s: Escalation(s, state.handoff_desk),
        rate=RATE,
        clock=lambda: clock,
    )
    phone = Phone(session)
    failed: list[BaseException] = []

    async def media() -> None:
        setup = await session.prepare()
        services = CallServices(stt=TranscriptsGiven(), llm=llm, tts=ScriptedTTS(), vad=SilentVAD())
        call = CallPipeline(session, setup, services, settings)
        worker = phone.worker = PipelineWorker(
            call.pipeline,
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            observers=[*call.observers, phone],
            idle_timeout_secs=None,
            enable_rtvi=False,
        )
        started, finished = asyncio.Event(), asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker: object, _frame: object) -> None:
            started.set()

        @worker.event_handler("on_pipeline_finished")
        async def _finished(_worker: object, _frame: object) -> None:
            finished.set()

        async def act() -> None:
            try:
                await asyncio.wait_for(started.wait(), 10)
                await call.greet()
                await phone.until(bool, "the greeting")
                await caller(phone)
                if session.escalation.holding:  # a transfer ends the call once it is made
                    await asyncio.wait_for(finished.wait(), 30)
            except BaseException as exc:
                failed.append(exc)
                await call.cancel()
                return
            if not finished.is_set() and not session.ending:
                await session.end()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.gather(runner.run(), act())

    try:
        await asyncio.wait_for(session.run(media), 60)
    finally:
        phone.hang_up()
    if failed:
        raise failed[0]
    record = await state.calls.get_call(call_sid)
    assert record is not None
    return session, record, phone


async def handoff_rows(db: Database, call_sid: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(schema.handoffs)
            .join(schema.calls)
            .where(schema.calls.c.call_sid == call_sid)
            .order_by(schema.handoffs.c.id)
        )
        return [dict(r._mapping) for r in rows]


def bot_turns(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "bot"]


def dial_twiml(base: str, handoff_id: int, warm: bool = True) -> str:
    action = f"{base}/twilio/dial-action?handoff={handoff_id}"
    whisper = f"{base}/twilio/whisper?handoff={handoff_id}" if warm else ""
    return twiml.transfer_dial(DESK, action, whisper)


@pytest.mark.parametrize(
    ("verstat", "who"),
    [
        ("TN-Validation-Passed-A", "Omar Haddad"),  # Twilio verified the caller ID: the record
        ("", "An unverified caller"),  # caller ID as given: never whose record it is
    ],
)
async def test_pressing_zero_transfers_and_the_person_hears_the_summary(
    salon: Salon, verstat: str, who: str
) -> None:
    db = salon.state.db
    customer_id = await callback_customer(db, "+14135550166", "Omar Haddad")  # on file
    haircut = ("check_availability", {"service": "haircut", "when": "Friday at 2pm"})
    llm = ToolSayingLLM({"haircut": haircut, "": SAY_AGAIN})

    async def caller(phone: Phone) -> None:
        await phone.says("Do you have anything for a haircut this Friday?")
        await phone.until(lambda played: len(played) >= 3, "the filler and the answer")
        await phone.presses("0")  # once the answer has played
        await phone.hears(phrases()["transfer_connecting"])  # then the call is moved

    sid = "CA" + "0" * 31 + "1"
    session, record, phone = await phone_call(
        salon, llm, caller, call_sid=sid, from_number="+14135550166", verstat=verstat
    )
    assert record["outcome"] == "transferred" == session.outcome
    names = [c["name"] for c in record["tool_calls"]]
    assert names == ["check_availability"]  # pressing 0 is not a tool call
    [transfer] = await handoff_rows(db, sid)
    assert (transfer["trigger"], transfer["reason"]) == ("dtmf", "caller pressed 0 for a person")
    if verstat:
        assert transfer["customer_id"] == customer_id and transfer["caller_name"] == who
    else:
        assert transfer["customer_id"] is None and transfer["caller_name"] == ""
        assert "Omar" not in transfer["summary"]
    assert transfer["summary"].startswith(
        f"{who}, calling from four one three, five five five, zero one six six, pressed "
        "zero to reach a person. So far I checked availability; their last words were: "
    )
    [update] = salon.twilio.updates(sid)
    assert update.form == {"Twiml": dial_twiml(BASE, transfer["id"])}
    # The call was moved once the sentence had played, and its stream was not hung up.
    [played_at] = [at for said, at in phone.played if said == phrases()["transfer_connecting"]]
    assert played_at <= update.at and update.account_sid == ACCOUNT_SID
    assert not any(u.form.get("Status") == "completed" for u in salon.twilio.requests)
    # The second desk phone answers: it hears the summary, then the caller is connected.
    dialled = await salon.twilio.dial(
        update.form["Twiml"],
        call_sid=sid,
        from_number="+14135550166",
        to_number="+14135550100",
        status="completed",
        answered_by=1,
    )
    assert dialled.whisper_twiml == [twiml.whisper(transfer["summary"])]
    assert dialled.action_twiml == twiml.hangup()
    [transfer] = await handoff_rows(db, sid)
    assert transfer["outcome"] == "answered" and "talked 42 s" in transfer["detail"]


async def test_twilio_rest_errors_are_told_and_a_message_is_offered(salon: Salon) -> None:
    salon.twilio.fail_next.append((401, 20003, "Authenticate"))
    person = ("transfer_to_human", {"reason": "caller asked for a real person"})
    message = ("take_message", {"message": "please call back", "name": "Anna Lee"})
    llm = ToolSayingLLM({"talk to someone": person, "call me back": message, "": SAY_AGAIN})

    async def caller(phone: Phone) -> None:
        await phone.says("Can I talk to someone, please?")
        await phone.hears(phrases()["transfer_failed"])
        await phone.says("My name is Anna Lee, please call me back.")
        await phone.hears("call you back as soon as possible today")

    sid = "CA" + "0" * 31 + "2"
    _, record, _ = await phone_call(salon, llm, caller, call_sid=sid)
    assert record["outcome"] != "transferred"
    assert any("20003" in f for f in record["faults"]), record["faults"]
    # The transfer is announced, fails, and the offer follows.
    bots = bot_turns(record)
    connecting = bots.index(phrases()["transfer_connecting"])
    assert bots[connecting + 1] == phrases()["transfer_failed"], bots
    rows = await handoff_rows(salon.state.db, sid)
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("transfer", "rest_error"),
        ("message", "message_taken"),
    ]
    assert "20003" in rows[0]["detail"] and rows[0]["summary"]
    assert [u.form for u in salon.twilio.updates(sid)] == [
        {"Twiml": dial_twiml(BASE, rows[0]["id"])}
    ]  # tried once, refused


async def test_after_hours_a_callback_request_is_stored(salon: Salon) -> None:
    person = ("transfer_to_human", {"reason": "caller asked for a real person"})
    message = ("take_message", {"message": "please call back", "name": "Anna Lee"})
    llm = ToolSayingLLM({"real person": person, "call me back": message, "": SAY_AGAIN})

    async def caller(phone: Phone) -> None:
        await phone.says("Let me talk to a real person.")
        await phone.hears(phrases()["transfer_after_hours"])
        await phone.says("My name is Anna Lee, please call me back.")
        await phone.hears("someone will call you back")

    sid = "CA" + "0" * 31 + "3"
    # Sunday morning: the salon is closed all day; it opens on Monday at nine.
    _, record, _ = await phone_call(salon, llm, caller, call_sid=sid, clock=SUNDAY_MORNING)
    assert salon.twilio.updates(sid) == []  # nobody was dialled
    bots = bot_turns(record)
    assert phrases()["transfer_after_hours"] in bots
    assert any("call you back tomorrow after nine a m" in b for b in bots), bots
    rows = await handoff_rows(salon.state.db, sid)
    assert [(r["kind"], r["outcome"], r["detail"]) for r in rows] == [
        ("transfer", "unavailable", "after hours"),
        ("message", "message_taken", ""),
    ]
    monday_nine = datetime(2026, 11, 23, 9, 0, tzinfo=TZ).astimezone(UTC)
    assert rows[1]["callback_after"] == monday_nine.isoformat()
    assert rows[1]["customer_id"] is not None


async def test_three_misunderstood_turns_hand_the_caller_over(salon: Salon) -> None:
    llm = ToolSayingLLM({"": SAY_AGAIN})

    async def caller(phone: Phone) -> None:
        def sorries(n: int) -> Callable[[list[str]], bool]:
            return lambda played: played.count(SAY_AGAIN) >= n

        for n, words in enumerate(["Blue elephants dance quietly.", "Purple bananas sing."], 1):
            await phone.says(words)
            await phone.until(sorries(n), f"sorry number {n}")
        await phone.says("Green giraffes whistle softly.")
        await phone.hears(phrases()["transfer_connecting"])  # the call is then moved

    sid = "CA" + "0" * 31 + "4"
    _, record, _ = await phone_call(salon, llm, caller, call_sid=sid)
    rows = await handoff_rows(salon.state.db, sid)
    assert [(r["trigger"], r["outcome"]) for r in rows] == [("misunderstood", "dialing")], [
        t["text"] for t in record["turns"]
    ]
    assert "could not understand them" in rows[0]["summary"]
    assert sum(t.startswith(SAY_AGAIN) for t in bot_turns(record)) == 3
    assert record["outcome"] == "transferred"


# --- The transfer webhooks, as HTTP requests against the app ------------------------------------


async def test_forged_or_unknown_transfer_callbacks_are_refused(salon: Salon) -> None:
    params = {
        "CallSid": "CA666f7267656400000000000000000000",
        "AccountSid": ACCOUNT_SID,
        "DialCallStatus": "no-answer",
    }
    transport = httpx.ASGITransport(app=salon.app)
    async with httpx.AsyncClient(transport=transport) as client:
        for path in ("/twilio/dial-action?handoff=1", "/twilio/whisper?handoff=1"):
            url = BASE + path
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
        url = f"{BASE}/twilio/dial-action?handoff=999999"
        signed = await client.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
        assert signed.status_code == 404


# --- One whole call in real time: webhook, REST redirect, dial status, resumed stream ------------

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
    script: OpenAIStandIn

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'frontdesk.db'}"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """The real app, open around the clock every day of the year (so the call never depends on
    when the test runs) with two escalation numbers, a scripted LLM and the Twilio REST
    stand-in."""
    data_dir = tmp_path_factory.mktemp("desk")
    config = yaml.safe_load(BUSINESS_YAML.read_text())
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    config["hours"] = {day: "00:00-24:00" for day in days}
    config["holidays"] = []
    config["escalation_number"] = DESK[0]
    config["escalation_numbers"] = DESK[1:]
    business = data_dir / "business.yaml"
    business.write_text(yaml.safe_dump(config))
    script = OpenAIStandIn(rules=[*ESCALATION_RULES, *SCRIPT_RULES])
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
        settings = Settings.from_env(env)
        app = create_app(settings, models=shared_models(settings))
        with ServerThread(app, port) as server:
            yield Desk(server.url, fake, data_dir, script)


async def call(desk: Desk, *parts: str | float, **kwargs: Any) -> tuple[Report, bytes]:
    return await replay(
        call_audio(*parts),
        AUDIO_RATE,
        desk.url,
        auth_token=AUTH_TOKEN,
        admin_token=ADMIN_TOKEN,
        **kwargs,
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


def bot_texts(report: Report) -> list[str]:
    assert report.call_record is not None
    return [t["text"] for t in report.call_record["turns"] if t["role"] == "bot"]


async def test_asking_for_a_person_is_a_warm_transfer_and_no_answer_loses_nothing(
    desk: Desk,
) -> None:
    # 1. The caller asks for a person: one sentence, then the call is moved to <Dial>.
    report, heard = await call(
        desk, 8.0, "Hi, I want to talk to a real person.", 8.0, from_number="+14135550144"
    )
    sid = report.call_sid
    record = report.call_record
    assert record is not None and record["outcome"] == "transferred", record
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
        "An unverified caller, calling from four one three, five five five, zero one four "
        "four, asked to speak with a person."
    )
    assert "So far I had not looked anything up; their last words were:" in summary
    assert "real person" in summary.split("last words were:")[1].lower()
    # The exact TwiML reached Twilio's REST API, once, after the sentence had played.
    updates = desk.twilio.updates(sid)
    assert [u.form for u in updates] == [{"Twiml": dial_twiml(desk.url, transfer["id"])}]
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
    assert record is not None and record["call_sid"] == sid
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


async def test_no_answer_with_every_line_busy_keeps_a_callback_request(db: Database) -> None:

    desk = HandoffDesk(db, Settings())
    await CallStore(db).start_call(
        call_sid="CA62757379000000000000000000000000", from_number="+14135550177"
    )
    transfer = await record_handoff(
        db, call_sid="CA62757379000000000000000000000000", kind="transfer", trigger="llm",
        reason="a complaint",
        summary="A caller asked to speak with a person.", target=DESK[0],
        caller_number="+14135550177", outcome="dialing",
    )  # fmt: skip
    form = {
        "CallSid": "CA62757379000000000000000000000000",
        "From": "+14135550177",
        "DialCallStatus": "busy",
    }
    assert (
        await desk.dial_finished(
            transfer, {**form, "CallSid": "CA6f746865720000000000000000000000"}, True
        )
        is None
    )
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
    assert (
        await desk.whisper_text(transfer, "CA62757379000000000000000000000000")
        == "A caller asked to speak with a person."
    )
    assert await desk.whisper_text(transfer, "CA736f6d656f6e65656c73650000000000") is None
