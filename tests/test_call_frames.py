"""Whole calls at frame level: the real session, processors and tools in the real pipeline
assembly, with scripted providers and no transport, driven by pipecat's ``run_test``.

Each test runs in a second or two what tests/test_call_integration.py checks over a websocket
in real time; see agent/pipeline.py for the seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FunctionCallFromLLM,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.time import time_now_iso8601

from agent.escalation import Escalation, HandoffDesk
from agent.pipeline import CallPipeline, CallServices
from agent.prompts import phrases
from agent.session import CallInfo, CallSession, Outcome
from agent.settings import Settings
from tools.store.calls import CallStore
from tools.store.db import Database

RATE = 8000


class SilentVAD(VADAnalyzer):
    """Never hears speech: the tests send the VAD's and the STT's frames themselves."""

    def num_frames_required(self) -> int:
        return 160

    def voice_confidence(self, buffer: bytes) -> float:
        return 0.0


class TranscriptsGiven(FrameProcessor):
    """The STT's place: the tests send its TranscriptionFrames themselves."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class ScriptedLLM(LLMService):
    """Answers the caller's last words by ``script`` (a substring -> a reply, or a tool call
    as ``(name, arguments)``); after a tool result it says ``after_tool``."""

    def __init__(
        self, script: dict[str, str | tuple[str, dict[str, str]]], after_tool: str = "Done."
    ) -> None:
        super().__init__()
        self.script = script
        self.after_tool = after_tool

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._answer(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _answer(self, context: LLMContext) -> None:
        messages: list[dict[str, Any]] = [
            dict(m) for m in context.get_messages() if isinstance(m, dict)
        ]
        last = messages[-1] if messages else {}
        said = str(last.get("content") or "")
        reply: str | tuple[str, dict[str, str]] = self.after_tool
        if last.get("role") == "user":
            reply = next((r for key, r in self.script.items() if key in said.lower()), "Sorry?")
        if isinstance(reply, tuple):
            name, arguments = reply
            call = FunctionCallFromLLM(
                function_name=name, tool_call_id="call-1", arguments=arguments, context=context
            )
            await self.run_function_calls([call])
            return
        await self.push_frame(LLMFullResponseStartFrame())
        for word in reply.split(" "):
            await self.push_frame(LLMTextFrame(f"{word} "))
        await self.push_frame(LLMFullResponseEndFrame())


class ScriptedTTS(FrameProcessor):
    """Speaks each reply (or TTSSpeakFrame) as one sentence of tone, and plays it at once
    (what the output transport would report, both ways)."""

    def __init__(self, sentence_secs: float = 0.5) -> None:
        super().__init__()
        self._text = ""
        self._pcm = (np.sin(np.arange(int(RATE * sentence_secs)) / 3) * 8000).astype("<i2")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self._text += frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            await self.push_frame(frame, direction)
            text, self._text = self._text.strip(), ""
            if text:
                await self._speak(text)
        elif isinstance(frame, TTSSpeakFrame):
            await self._speak(frame.text)
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, text: str) -> None:
        await self.push_frame(TTSStartedFrame())
        await self._both_ways(BotStartedSpeakingFrame)
        audio = TTSAudioRawFrame(audio=self._pcm.tobytes(), sample_rate=RATE, num_channels=1)
        await self.push_frame(audio)
        await self.push_frame(TTSTextFrame(text, text_type="sentence"))
        await self.push_frame(TTSStoppedFrame())
        await self._both_ways(BotStoppedSpeakingFrame)

    async def _both_ways(self, kind: type[Frame]) -> None:
        await self.push_frame(kind())
        await self.push_frame(kind(), FrameDirection.UPSTREAM)


def caller_says(text: str) -> list[Frame]:
    """The frames the transport, VAD and STT produce for one caller utterance."""
    return [
        VADUserStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
        TranscriptionFrame(text, "caller", time_now_iso8601()),
        SleepFrame(0.1),
        VADUserStoppedSpeakingFrame(),
        UserStoppedSpeakingFrame(),
    ]


async def frame_call(
    db: Database,
    data_dir: Path,
    llm: ScriptedLLM,
    frames: Sequence[Frame],
    *,
    settings: Settings | None = None,
    during: Callable[[CallSession, CallPipeline], Awaitable[None]] | None = None,
) -> tuple[CallSession, dict[str, Any]]:
    """Run one call (greeting first) through the real assembly; returns its session and record.

    ``during`` runs beside the frames (e.g. to acknowledge marks); the call ends when the
    session ends it, or after the frames and ``during``.
    """
    settings = replace(settings or Settings(), data_dir=data_dir, turn_pause_secs=0.2)
    store = CallStore(db)
    desk = HandoffDesk(db, settings)
    info = CallInfo(call_sid="CAframes", source="browser", from_number="+14135550123")
    session = CallSession(
        info,
        settings=settings,
        db=db,
        store=store,
        escalation=lambda s: Escalation(s, desk),
        rate=RATE,
    )

    async def media() -> None:
        setup = await session.prepare()
        services = CallServices(stt=TranscriptsGiven(), llm=llm, tts=ScriptedTTS(), vad=SilentVAD())
        call = CallPipeline(session, setup, services, settings)

        async def drive() -> None:
            await asyncio.sleep(0.2)
            await call.greet()
            if during is not None:
                await during(session, call)

        async def end_when_quiet() -> None:
            await asyncio.sleep(0.5 + sum(f.sleep for f in frames if isinstance(f, SleepFrame)))
            if not session.ending:
                await session.end()

        await asyncio.gather(
            run_test(
                call.pipeline,
                frames_to_send=[SleepFrame(0.6), *frames],
                observers=call.observers,
                send_end_frame=False,
                start_timeout=10.0,
            ),
            drive(),
            end_when_quiet() if not settings.caller_idle_secs < 5 else asyncio.sleep(0),
        )

    await asyncio.wait_for(session.run(media), 30)
    record = await store.get_call(info.call_sid)
    assert record is not None
    return session, record


def turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["text"]) for t in record["turns"]]


async def test_a_tool_call_is_run_and_recorded(db: Database, tmp_path: Path) -> None:
    llm = ScriptedLLM({"open": ("get_business_info", {"topic": "hours"})}, "We open at nine.")
    frames = [*caller_says("When are you open?"), SleepFrame(1.0)]
    session, record = await frame_call(db, tmp_path, llm, frames)
    [tool] = record["tool_calls"]
    assert tool["name"] == "get_business_info" and tool["ok"], tool
    assert tool["arguments"] == {"topic": "hours"}
    assert ("caller", "When are you open?") in turns(record)
    assert tool["result"]["say"].startswith("Our hours are")
    assert record["outcome"] == Outcome.COMPLETED == session.outcome


async def test_silence_gets_prompts_then_a_goodbye(db: Database, tmp_path: Path) -> None:
    settings = Settings(caller_idle_secs=0.4, caller_idle_prompts=2)
    session, record = await frame_call(db, tmp_path, ScriptedLLM({}), [], settings=settings)
    prompt, goodbye = phrases()["still_there"], phrases()["idle_goodbye"]
    fixed = [text for role, text in turns(record) if role == "bot" and text in (prompt, goodbye)]
    assert fixed == [prompt, prompt, goodbye]
    assert record["outcome"] == "caller_silent" and session.outcome is Outcome.CALLER_SILENT


async def test_barge_in_records_what_the_caller_heard(db: Database, tmp_path: Path) -> None:
    reply = "We offer haircuts. We also offer beard trims and colour."
    llm = ScriptedLLM({"offer": reply})

    async def cut_in(session: CallSession, call: CallPipeline) -> None:
        await asyncio.sleep(1.2)  # greeting played and acknowledged, the reply on its way
        for name in ("seg-1", "seg-2"):  # the greeting and the reply's first sentence...
            session.on_mark(name)
        await call.interrupt()  # ...then the caller talks over the rest
        session.on_clear()  # what the serializer does on the InterruptionFrame

    frames = [*caller_says("What do you offer?"), SleepFrame(1.5)]
    session, record = await frame_call(db, tmp_path, llm, frames, during=cut_in)
    bot = [t for t in record["turns"] if t["role"] == "bot"]
    assert bot[-1]["interrupted"], bot
    assert bot[-1]["text"] != reply
    assert session.clears == 1
