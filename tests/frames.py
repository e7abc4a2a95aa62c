"""The frame-level call harness: the real session, processors and tools in the real pipeline
assembly (agent/pipeline.py), with scripted providers and no transport, driven by pipecat's
``run_test``. A whole call runs in a second or two instead of in real time over a websocket.

``frame_call`` runs one call and returns its session and its stored record; ``caller_says`` is
what the transport, VAD and STT would produce for one utterance. Shared by the frame-level
tests; extend it by adding, not by changing what is here.
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
from agent.session import CallInfo, CallSession
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
