"""The frame-level call harness: the real session, processors and tools in the real pipeline
assembly (agent/pipeline.py), with scripted providers and no transport, driven the way
pipecat's ``run_test`` drives a processor. A whole call runs in a second or two instead of in
real time over a websocket.

``frame_call`` runs one call and returns its session and its stored record; it waits on events
(the pipeline started, the greeting played, the call gone quiet), never on fixed sleeps.
``caller_says`` is what the VAD and STT would produce for one utterance. A :class:`Handset` is
Twilio's side (the real serializer, marks acknowledged as the audio plays); a
:class:`CallWatch` lets a test wait for what the call does and send frames while it runs.
Shared by the frame-level tests; extend it by adding, not by changing what is here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FunctionCallFromLLM,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMAssistantPushAggregationFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from agent.escalation import Escalation, HandoffDesk
from agent.pipeline import CallPipeline, CallServices
from agent.processors import PlaybackMarker
from agent.session import CallInfo, CallSession
from agent.settings import Settings
from agent.turn_audio import TurnAudioModel
from agent.turns import SegmentTranscribedFrame, ToolCallsAfterTurn
from telephony import codec
from telephony.replay import SimulatedPhone
from telephony.serializer import MarkFrame, TwilioMediaSerializer
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


class ScriptedLLM(ToolCallsAfterTurn):
    """Answers the caller's last words by ``script`` (a substring -> a reply, or a tool call
    as ``(name, arguments)``); after a tool result it says ``after_tool``, ``after_tool_secs``
    later (a hosted model's round trip)."""

    def __init__(
        self,
        script: dict[str, str | tuple[str, dict[str, str]]],
        after_tool: str = "Done.",
        after_tool_secs: float = 0.0,
    ) -> None:
        super().__init__()
        self.script = script
        self.after_tool = after_tool
        self.after_tool_secs = after_tool_secs
        self.requests: list[list[dict[str, Any]]] = []  # the context of every request, as sent
        self.tools: list[set[str]] = []  # the tools offered with every request

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
        self.requests.append(messages)
        offered = context.tools.standard_tools if isinstance(context.tools, ToolsSchema) else []
        self.tools.append({t.name for t in offered if isinstance(t, FunctionSchema)})
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
        if last.get("role") == "tool" and self.after_tool_secs:
            await asyncio.sleep(self.after_tool_secs)
        await self.push_frame(LLMFullResponseStartFrame())
        for word in reply.split(" "):
            await self.push_frame(LLMTextFrame(f"{word} "))
        await self.push_frame(LLMFullResponseEndFrame())


class ScriptedTTS(FrameProcessor):
    """Speaks each reply (or TTSSpeakFrame) as one sentence of tone, and plays it at once
    (what the output transport would report, both ways). Like pipecat's TTSService, a reply's
    end follows its audio and text, and a TTSSpeakFrame for the context is committed to it
    once spoken.

    ``paced``: a reply is spoken sentence by sentence, each taking half its length in real
    time (a streaming TTS, faster than the playback), so a caller can talk over the rest of it.
    """

    def __init__(self, sentence_secs: float = 0.5, *, paced: bool = False) -> None:
        super().__init__()
        self._text = ""
        self._secs = sentence_secs
        self._paced = paced
        self._speaking = False
        self._pcm = (np.sin(np.arange(int(RATE * sentence_secs)) / 3) * 8000).astype("<i2")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self._text += frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            text, self._text = self._text.strip(), ""
            if text:
                await self._speak(text)
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSSpeakFrame):
            await self._speak(frame.text, to_context=frame.append_to_context)
            if frame.append_to_context:
                await self.push_frame(LLMAssistantPushAggregationFrame())
        elif isinstance(frame, InterruptionFrame):
            self._text = ""
            await self.push_frame(frame, direction)
            if self._speaking:  # what the output transport reports when it is cut off
                await self._both_ways(BotStoppedSpeakingFrame)
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, text: str, *, to_context: bool = True) -> None:
        await self.push_frame(TTSStartedFrame(append_to_context=to_context))
        await self._both_ways(BotStartedSpeakingFrame)
        self._speaking = True
        sentences = re.findall(r"[^.!?]+[.!?]*", text) if self._paced else [text]
        for index, sentence in enumerate(s.strip() for s in sentences if s.strip()):
            if index:
                await asyncio.sleep(self._secs / 2)  # synthesis runs ahead of playback
            audio = TTSAudioRawFrame(audio=self._pcm.tobytes(), sample_rate=RATE, num_channels=1)
            await self.push_frame(audio)
            spoken = TTSTextFrame(sentence, text_type="sentence")
            spoken.append_to_context = to_context
            await self.push_frame(spoken)
        await self.push_frame(TTSStoppedFrame())
        self._speaking = False
        await self._both_ways(BotStoppedSpeakingFrame)

    async def _both_ways(self, kind: type[Frame]) -> None:
        await self.push_frame(kind())
        await self.push_frame(kind(), FrameDirection.UPSTREAM)


def caller_says(text: str) -> list[Frame]:
    """The frames the VAD and the (segmented, local) STT produce for one caller utterance: the
    speech starts and stops, then its words come; the user aggregator decides the turn."""
    return [
        VADUserStartedSpeakingFrame(),
        SleepFrame(0.1),
        VADUserStoppedSpeakingFrame(),
        TranscriptionFrame(text, "caller", time_now_iso8601()),
        SegmentTranscribedFrame(),
    ]


STREAM_SID = "MZframes"


class Handset(BaseObserver):
    """Twilio and the caller's phone at the far end of the wire.

    Takes what the output transport would send (the frames the PlaybackMarker pushes on) through
    the real :class:`TwilioMediaSerializer`, which tells the session of bot audio and clears, and
    plays it: at once, or in real time with ``realtime``. Each mark is acknowledged to the
    session once the audio before it has played; a clear drops what has not played and echoes
    its marks, as Twilio does. ``wire`` is every message sent, in order (media payloads
    dropped), with each mark's spoken text; ``played`` the audio the caller heard.
    """

    def __init__(self, *, realtime: bool = False) -> None:
        super().__init__()
        self.realtime = realtime
        self.wire: list[dict[str, Any]] = []
        self.played = bytearray()
        self.acked: list[str] = []  # marks acknowledged, in order
        self._phone = SimulatedPhone()
        self._session: CallSession | None = None
        self._serializer: TwilioMediaSerializer | None = None
        self._player: asyncio.Task[None] | None = None

    def connect(self, session: CallSession) -> None:
        """The stream starts: the serializer reports to ``session``."""
        parser = codec.MediaStreamParser()
        start = {"streamSid": STREAM_SID, "callSid": session.info.call_sid, "tracks": ["inbound"]}
        parser.receive(json.dumps({"event": "start", "streamSid": STREAM_SID, "start": start}))
        self._serializer = TwilioMediaSerializer(parser, session)
        self._session = session

    @property
    def busy(self) -> bool:
        """Audio sent is still playing."""
        return self._phone.busy

    def texts_after_clear(self, after: int = 0) -> list[str]:
        """The spoken text of each mark sent after the first clear that follows message
        ``after`` (an index into ``wire``)."""
        events = [m["event"] for m in self.wire]
        if "clear" not in events[after:]:
            return []
        clear = events.index("clear", after)
        return [m["text"] for m in self.wire[clear:] if m["event"] == "mark"]

    async def on_push_frame(self, data: FramePushed) -> None:
        if not isinstance(data.source, PlaybackMarker) or self._serializer is None:
            return
        frame = data.frame
        if data.direction is not FrameDirection.DOWNSTREAM or not isinstance(
            frame, (OutputAudioRawFrame, MarkFrame, InterruptionFrame)
        ):
            return  # what the output transport does not send
        sent = await self._serializer.serialize(frame)
        if sent is None:
            return
        message = json.loads(sent)
        event = message["event"]
        if event == "media":
            pcm = codec.ulaw_to_pcm16(base64.b64decode(message["media"]["payload"]))
            self._phone.add_audio(pcm)
            message["media"] = {"samples": len(pcm) // 2}  # the payload itself is not kept
        elif event == "mark":
            self._phone.add_mark(message["mark"]["name"])
            message["text"] = frame.mark_text if isinstance(frame, MarkFrame) else ""
        elif event == "clear":
            for name in self._phone.clear():
                self._ack(name)
        self.wire.append(message)
        if not self.realtime:
            queued = sum(
                len(item) // 2 for item in self._phone.queue if isinstance(item, bytearray)
            )
            self._play(queued)
        elif self._player is None:
            self._player = asyncio.create_task(self._play_in_real_time())

    def _play(self, samples: int) -> None:
        audio, marks = self._phone.tick(samples)
        self.played.extend(audio)
        for name in marks:
            self._ack(name)

    def _ack(self, name: str) -> None:
        self.acked.append(name)
        if self._session is not None:
            self._session.on_mark(name)

    async def _play_in_real_time(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            self._play(int((now - clock) * RATE))
            clock = now

    async def hang_up(self) -> None:
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player


class CallWatch(BaseObserver):
    """What a frame-level call is doing, for the harness to wait on instead of sleeping: the
    records the session writes (``records``, as ``(kind, values)``), how many frames of each
    kind were pushed downstream (``pushed``) and when a frame last moved."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.pushed: Counter[type[Frame]] = Counter()
        self.audio_reached: set[str] = set()  # processors the caller's audio was pushed to
        self._changed = asyncio.Event()
        self._last_push = 0.0
        self.worker: PipelineWorker | None = None  # the running call's, set by frame_call

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send ``frames`` into the running call, as the transport would (a SleepFrame waits)."""
        assert self.worker is not None, "the call is not running"
        for frame in frames:
            if isinstance(frame, SleepFrame):
                await asyncio.sleep(frame.sleep)
            else:
                await self.worker.queue_frame(frame)

    def listen(self, session: CallSession) -> None:
        """Be told of every record ``session`` writes, besides its own listener."""
        assert session.records is not None, "the session's run() opens its record first"
        writer, before = session.records, session.records.listener

        def heard(kind: str, **values: Any) -> None:
            if before is not None:
                before(kind, **values)
            self.records.append((kind, values))
            self._changed.set()

        writer.listener = heard

    async def on_push_frame(self, data: FramePushed) -> None:
        self._last_push = asyncio.get_running_loop().time()
        if data.first_push and data.direction is FrameDirection.DOWNSTREAM:
            self.pushed[type(data.frame)] += 1
        if isinstance(data.frame, InputAudioRawFrame):
            self.audio_reached.add(type(data.destination).__name__)
        self._changed.set()

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``done()`` (checked on every frame and record, and every 50 ms)."""
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    async def quiet(self, secs: float, also: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until no frame has moved for ``secs`` and ``also()`` holds."""
        loop = asyncio.get_running_loop()
        await self.until(lambda: loop.time() - self._last_push >= secs and also(), timeout)

    def bot_turns(self) -> list[str]:
        return [v["text"] for k, v in self.records if k == "add_turn" and v.get("role") == "bot"]


async def frame_call(
    db: Database,
    data_dir: Path,
    llm: ScriptedLLM,
    frames: Sequence[Frame],
    *,
    settings: Settings | None = None,
    during: Callable[[CallSession, CallPipeline], Awaitable[None]] | None = None,
    from_number: str = "+14135550123",
    caller_verstat: str = "TN-Validation-Passed-A",
    call_sid: str = "",  # "": a valid id for the source (a Twilio CallSid, a browser call id)
    source: str = "twilio",
    stt: FrameProcessor | None = None,
    tts: FrameProcessor | None = None,
    vad: VADAnalyzer | None = None,
    handset: Handset | None = None,
    watch: CallWatch | None = None,
    turn_model: TurnAudioModel | None = None,
) -> tuple[CallSession, dict[str, Any]]:
    """Run one call (greeting first) through the real assembly; returns its session and record.

    The greeting is said once the pipeline has started; ``frames`` (a SleepFrame waits) go in
    once it has played, with ``during`` beside them (e.g. to talk over the bot). The call ends
    when the session ends it or, unless the caller-idle prompts are short enough to end it
    (``caller_idle_secs`` under 5), once it is quiet after the frames and ``during``: no frame
    moving, nothing playing. ``handset`` is Twilio's side (default: plays everything at once),
    ``watch`` what the call did; ``stt``, ``tts`` and ``vad`` replace the scripted ones;
    ``turn_model`` is the voice's veto on ending a turn (smart-turn); ``source`` is the call's
    (``browser`` for a demo call).
    """
    settings = replace(settings or Settings(), data_dir=data_dir, turn_pause_secs=0.2)
    store = CallStore(db)
    desk = HandoffDesk(db, settings)
    if not call_sid:
        prefix = "BR" if source == "browser" else "CA"
        call_sid = prefix + "6672616d657300000000000000000000"
    info = CallInfo(
        call_sid=call_sid,
        source=source,  # "browser": a demo call, whose caller is never known
        from_number=from_number,
        caller_verstat=caller_verstat,  # a caller ID Twilio verified, unless told otherwise
    )
    session = CallSession(
        info,
        settings=settings,
        db=db,
        store=store,
        escalation=lambda s: Escalation(s, desk),
        rate=RATE,
    )
    line = handset or Handset()
    seen = watch or CallWatch()

    async def media() -> None:
        seen.listen(session)
        setup = await session.prepare()
        services = CallServices(
            stt=stt or TranscriptsGiven(),
            llm=llm,
            tts=tts or ScriptedTTS(),
            vad=vad or SilentVAD(),
            turn_model=turn_model,
        )
        call = CallPipeline(session, setup, services, settings)
        line.connect(session)
        worker = PipelineWorker(
            call.pipeline,
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            observers=[*call.observers, line, seen],
            idle_timeout_secs=None,
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        seen.worker = worker
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker: object, _frame: object) -> None:
            started.set()

        def greeted() -> bool:
            faults = any(kind == "add_fault" for kind, _ in seen.records)
            played = seen.pushed[BotStoppedSpeakingFrame] > 0 and not line.busy
            return played or faults or session.ending

        async def drive() -> None:
            await asyncio.wait_for(started.wait(), 10)
            await call.greet()
            with contextlib.suppress(TimeoutError):  # a test of a TTS that never speaks
                await seen.until(greeted, timeout=5)
            beside = during(session, call) if during is not None else asyncio.sleep(0)
            await asyncio.gather(seen.send(frames), beside)
            if settings.caller_idle_secs >= 5:
                await seen.quiet(0.3, lambda: not line.busy and not session.bot_speaking)
                if not session.ending:
                    await session.end()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.ensure_future(runner.run())
        driver = asyncio.ensure_future(drive())
        try:
            await asyncio.wait({running, driver}, return_when=asyncio.FIRST_COMPLETED)
            if driver.done():
                await driver  # raises what went wrong driving the call
            else:  # the session ended the call itself
                driver.cancel()
            await running
        finally:
            for task in (running, driver):
                task.cancel()  # a no-op once done
            await line.hang_up()

    await asyncio.wait_for(session.run(media), 30)
    record = await store.get_call(info.call_sid)
    assert record is not None
    return session, record


# --- A phone call on the harness: Twilio's side, the fault clips and a fixed clock ----------------

from datetime import datetime  # noqa: E402

from pipecat.observers.base_observer import BaseObserver  # noqa: E402

from agent.faults import CLIP_PHRASES  # noqa: E402


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
    timeouts). The turn's own start and stop frames come from the call's turn strategy, as on
    a real call (a stop sent here would end the turn before an early reply is confirmed)."""
    return [
        VADUserStartedSpeakingFrame(),
        SleepFrame(0.1),
        VADUserStoppedSpeakingFrame(),
        TranscriptionFrame(text, "caller", time_now_iso8601(), finalized=True),
        SegmentTranscribedFrame(),
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
        call_sid="CA70686f6e650000000000000000000000",
        stream_sid="MZphone",
        source="twilio",
        from_number="+14135550123",
        to_number="+14135550100",
        account_sid="ACphone",
        public_base="https://frontdesk.example.com",
        caller_verstat="TN-Validation-Passed-A",
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
