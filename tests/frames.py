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


# --- A phone call on the harness: Twilio's side, the fault clips and a fixed clock ----------------

from datetime import datetime  # noqa: E402

from pipecat.frames.frames import OutputAudioRawFrame  # noqa: E402
from pipecat.observers.base_observer import BaseObserver, FramePushed  # noqa: E402
from pipecat.pipeline.worker import PipelineParams  # noqa: E402

from agent.faults import CLIP_PHRASES  # noqa: E402
from agent.processors import PlaybackMarker  # noqa: E402
from agent.turns import SegmentTranscribedFrame  # noqa: E402
from telephony.serializer import MarkFrame  # noqa: E402


class Phone(BaseObserver):
    """Twilio's side of a frame-level call: takes the audio and marks the pipeline sends out
    (what leaves the PlaybackMarker), plays them at once and echoes each mark to the session.

    ``segments`` is what the caller heard: (mark name, milliseconds of audio before it);
    ``hung_up`` whether the caller hung up (rather than the agent ending the call).
    """

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self.session = session
        self.segments: list[tuple[str, float]] = []
        self.hung_up = False
        self._pending_ms = 0.0

    async def on_push_frame(self, data: FramePushed) -> None:
        if not isinstance(data.source, PlaybackMarker):
            return
        if data.direction is not FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        if isinstance(frame, OutputAudioRawFrame):
            self._pending_ms += len(frame.audio) / 2 / frame.sample_rate * 1000
        elif isinstance(frame, MarkFrame):
            self.segments.append((frame.mark_name, self._pending_ms))
            self._pending_ms = 0.0
            self.session.on_mark(frame.mark_name)


def caller_says_to_whisper(text: str) -> list[Frame]:
    """:func:`caller_says` as the default (segmented) STT, local Whisper, produces it: each VAD
    segment is transcribed after it ends, then reported done, so the turn ends at once
    (with :func:`caller_says` and no cloud STT key the turn waits for the transcription
    timeouts)."""
    return [
        VADUserStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
        SleepFrame(0.1),
        VADUserStoppedSpeakingFrame(),
        TranscriptionFrame(text, "caller", time_now_iso8601(), finalized=True),
        SegmentTranscribedFrame(),
        UserStoppedSpeakingFrame(),
    ]


def tone_clips(secs: float = 0.3) -> dict[str, bytes]:
    """The pre-synthesized phrases (agent.faults.CLIP_PHRASES) as tones of ``secs`` each."""
    pcm = (np.sin(np.arange(int(RATE * secs)) / 5) * 8000).astype("<i2").tobytes()
    return {name: pcm for name in CLIP_PHRASES}


async def phone_call(
    db: Database,
    data_dir: Path,
    llm: LLMService,
    frames: Sequence[Frame],
    *,
    settings: Settings | None = None,
    now: Callable[[], datetime] | None = None,
    tts: FrameProcessor | None = None,
    clips: dict[str, bytes] | None = None,
    during: Callable[[CallSession, CallPipeline], Awaitable[None]] | None = None,
    linger: float = 0.5,
    observers: Sequence[BaseObserver] = (),
) -> tuple[CallSession, dict[str, Any], Phone]:
    """Like :func:`frame_call`, for a call through Twilio that the phone plays as it goes.

    The escalation sees the clock ``now`` (default: real time); the fault handler has ``clips``
    (default: :func:`tone_clips`); ``tts`` replaces the scripted TTS. The call ends when the
    session ends it, or when the caller hangs up ``linger`` seconds after the frames and
    ``during`` (a long wait belongs here rather than in a SleepFrame: the frames are always
    sent to the end); ``observers`` watch the pipeline too. Returns the session, its stored
    record and the phone (what the caller heard).
    """
    settings = replace(settings or Settings(), data_dir=data_dir, turn_pause_secs=0.2)
    store = CallStore(db)
    desk = HandoffDesk(db, settings)
    info = CallInfo(
        call_sid="CAphone",
        stream_sid="MZphone",
        source="twilio",
        from_number="+14135550123",
        to_number="+14135550100",
        account_sid="ACphone",
        public_base="https://frontdesk.example.com",
    )
    session = CallSession(
        info,
        settings=settings,
        db=db,
        store=store,
        escalation=lambda s: Escalation(s, desk),
        rate=RATE,
        clock=now,
    )
    phone = Phone(session)

    async def media() -> None:
        setup = await session.prepare()
        services = CallServices(
            stt=TranscriptsGiven(),
            llm=llm,
            tts=tts or ScriptedTTS(),
            vad=SilentVAD(),
            clips=tone_clips() if clips is None else clips,
        )
        call = CallPipeline(session, setup, services, settings)

        async def drive() -> None:
            await asyncio.sleep(0.2)
            await call.greet()
            if during is not None:
                await during(session, call)
            sent = 0.6 + sum(f.sleep for f in frames if isinstance(f, SleepFrame))
            await asyncio.sleep(sent + linger)
            if not session.ending:
                phone.hung_up = True
                await call.caller_disconnected()

        pipeline = asyncio.ensure_future(
            run_test(
                call.pipeline,
                frames_to_send=[SleepFrame(0.6), *frames],
                observers=[*call.observers, phone, *observers],
                pipeline_params=PipelineParams(
                    audio_in_sample_rate=RATE, audio_out_sample_rate=RATE
                ),
                send_end_frame=False,
                start_timeout=10.0,
            )
        )
        driver = asyncio.ensure_future(drive())
        try:
            await asyncio.wait({pipeline, driver}, return_when=asyncio.FIRST_COMPLETED)
            if driver.done():
                await driver  # raises what went wrong driving the call
            else:  # the call ended before the caller would have hung up
                driver.cancel()
            await pipeline
        finally:
            for task in (pipeline, driver):
                task.cancel()  # a no-op once done

    await asyncio.wait_for(session.run(media), 60)
    record = await store.get_call(info.call_sid)
    assert record is not None
    return session, record, phone
