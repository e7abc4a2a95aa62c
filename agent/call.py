"""One call: the pipecat pipeline (the only pipeline code), its bookkeeping and its record.

Audio path: websocket -> serializer (codec) -> Silero VAD (in the user aggregator) -> STT ->
user turn -> LLM with tools -> TTS (sentence by sentence) -> marks -> websocket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    FunctionCallResultProperties,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSTextFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner
from starlette.websockets import WebSocket

from agent.escalation import Escalation, EscalationGate, earlier_messages
from agent.faults import ClipPlayer, FaultHandler
from agent.prompts import fill, load_text, phrases, without_tools
from agent.providers import build_llm, build_stt, build_tts, build_vad
from agent.transport import LeadPacedWebsocketTransport
from agent.turns import PhraseAwareTurnStopStrategy
from telephony.audio import CallRecording, join_wavs
from telephony.playback import PlaybackLedger
from telephony.serializer import CallEventFrame, MarkFrame
from tools.catalog import TOOL_NAMES, tool_registry
from tools.domain.business import Business, describe_hours
from tools.registry import ToolContext, ToolRegistry
from tools.store.business import load_business
from tools.store.calls import CallStore
from tools.store.customers import lookup_customer

PIPELINE_RATE = 8000  # phone calls; a browser call runs at its own (16 kHz) rate
#: Records and observations a live client is told about, under these event names.
_EVENT_KINDS = {"add_turn": "turn", "add_tool_call": "tool_call", "transcript": "transcript"}


@dataclass
class CallInfo:
    call_sid: str
    stream_sid: str = ""
    source: str = "twilio"  # twilio | browser
    from_number: str = ""
    to_number: str = ""
    account_sid: str = ""
    public_base: str = ""  # the base URL Twilio reached us on (FRONTDESK_PUBLIC_URL wins)
    resume_handoff: int = 0  # back from a transfer nobody answered (same CallSid)


@dataclass
class TurnTimings:
    """Instants (epoch seconds) of one exchange, from caller speech to the first bot audio."""

    values: dict[str, float] = field(default_factory=dict)

    def mark(self, key: str, at: float | None = None, *, overwrite: bool = False) -> None:
        if overwrite or key not in self.values:
            self.values[key] = at if at is not None else time.time()

    def caller_part(self) -> dict[str, float]:
        keys = ("speech_start", "speech_end", "stt_done", "turn_end")
        return {k: round(v, 3) for k, v in self.values.items() if k in keys}

    def bot_part(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.values.items()}
        end = self.values.get("speech_end")
        first = self.values.get("first_audio_sent")
        if end and first and first > end:
            out["voice_to_voice_ms"] = round((first - end) * 1000.0, 1)
        for stage, (start, stop) in {
            "stt_ms": ("speech_end", "stt_done"),
            "llm_first_token_ms": ("turn_end", "llm_first_token"),
            "tts_first_audio_ms": ("first_sentence", "tts_first_audio"),
        }.items():
            if start in self.values and stop in self.values:
                out[stage] = round((self.values[stop] - self.values[start]) * 1000.0, 1)
        return out


class RecordWriter:
    """Writes a call's records in order, off the audio path; retries so nothing is lost."""

    def __init__(
        self, store: CallStore, call_id: int, listener: Callable[..., None] | None = None
    ) -> None:
        self.store = store
        self.call_id = call_id
        self.listener = listener  # told of every record as it is put, e.g. CallSession.emit
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def put(self, kind: str, **values: Any) -> None:
        self._queue.put_nowait((kind, values))
        if self.listener is not None:
            self.listener(kind, **values)

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            kind, values = item
            for attempt in range(5):
                try:
                    method = getattr(self.store, kind)
                    await method(self.call_id, **values)
                    break
                except Exception as exc:
                    logger.error(f"call record write {kind} failed (attempt {attempt + 1}): {exc}")
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        self._queue.put_nowait(None)
        await self._task


class CallObserver(BaseObserver):
    """Watches frames pass between processors: stamps each exchange's stages, tracks whether
    the bot is speaking, and records pipeline errors as faults of the call."""

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self._session = session

    async def on_push_frame(self, data: FramePushed) -> None:
        if self._session.faults is not None:
            await self._session.faults.on_frame(data)
        if not data.first_push:
            return
        frame = data.frame
        timings = self._session.timings
        if isinstance(frame, VADUserStartedSpeakingFrame):
            timings.mark("speech_start", overwrite=True)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            timings.mark("speech_end", frame.timestamp - frame.stop_secs, overwrite=True)
        elif isinstance(frame, TranscriptionFrame):
            timings.mark("stt_done", overwrite=True)
            self._session.emit("transcript", text=frame.text)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            timings.mark("turn_end", overwrite=True)
        elif isinstance(frame, LLMFullResponseStartFrame):
            timings.mark("llm_start")
        elif isinstance(frame, LLMTextFrame):
            timings.mark("llm_first_token")
        elif isinstance(frame, TTSStartedFrame):
            timings.mark("first_sentence")
            self._session.bot_speaking = True
        elif isinstance(frame, TTSAudioRawFrame):
            timings.mark("tts_first_audio")
        elif isinstance(frame, (BotStoppedSpeakingFrame, InterruptionFrame)):
            self._session.bot_speaking = False


class PlaybackMarker(FrameProcessor):
    """Before the output transport: one segment per spoken sentence, a Twilio mark after each."""

    def __init__(self, ledger: PlaybackLedger) -> None:
        super().__init__()
        self._ledger = ledger

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, TTSAudioRawFrame):
            self._ledger.add_pcm(frame.audio, frame.sample_rate)
        elif isinstance(frame, TTSTextFrame):
            name = self._ledger.close_segment(frame.text)
            if name:
                await self.push_frame(MarkFrame(name, frame.text.strip()))


def record_heard_reply(messages: list[Any], heard: str, callers_before: int) -> list[Any]:
    """Make the interrupted bot reply in ``messages`` read as what the caller actually heard.

    The reply answered the ``callers_before``-th caller message (and any tool calls after it).
    pipecat may have recorded it in full, in part, or (cut off in its first sentence) not at all;
    afterwards it is exactly the heard words, marked as cut off.
    """
    text = f"{heard} —(cut off)" if heard else "—(cut off before the caller heard anything)"
    index, seen = 0, 0
    while index < len(messages) and seen < callers_before:
        if _role(messages[index]) == "user":
            seen += 1
        index += 1
    while index < len(messages) and (
        _role(messages[index]) == "tool"
        or (_role(messages[index]) == "assistant" and messages[index].get("tool_calls"))
    ):
        index += 1
    if index < len(messages) and _role(messages[index]) == "assistant":
        return [*messages[:index], {"role": "assistant", "content": text}, *messages[index + 1 :]]
    return [*messages[:index], {"role": "assistant", "content": text}, *messages[index:]]


def _role(message: Any) -> str:
    return str(message.get("role", "")) if isinstance(message, dict) else ""


class HeardTextCorrector(FrameProcessor):
    """Before the LLM: the context records only what the caller heard of an interrupted reply."""

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self._session = session

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and self._session.heard_correction is not None:
            heard, callers_before = self._session.heard_correction
            self._session.heard_correction = None
            messages = list(frame.context.get_messages())
            frame.context.set_messages(record_heard_reply(messages, heard, callers_before))
        await self.push_frame(frame, direction)


class FillerSpeaker(FrameProcessor):
    """After the LLM: the caller hears a short filler the moment a tool call starts.

    A model that announces its tool call early (the local brain streams the filler phrase as
    soon as it has picked a tool) has that phrase spoken at once, rather than held by the TTS
    sentence aggregator until more text follows. A model that does not gets the filler when
    pipecat reports the function call.
    """

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self._session = session
        self._spoke = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        filler = phrases()["filler"]
        if isinstance(frame, LLMFullResponseStartFrame):
            self._spoke = False
        elif isinstance(frame, LLMTextFrame) and frame.text.strip() == filler and not self._spoke:
            self._spoke = True
            self._session.timings.mark("filler")
            await self.push_frame(TTSSpeakFrame(filler, append_to_context=False))
            return
        elif isinstance(frame, LLMTextFrame) and frame.text.strip():
            self._spoke = True
        elif isinstance(frame, FunctionCallsStartedFrame) and not self._spoke:
            names = [c.function_name for c in frame.function_calls]
            specs = self._session.registry.specs
            if any(specs[n].filler for n in names if n in specs):
                self._spoke = True
                self._session.timings.mark("filler")
                await self.push_frame(TTSSpeakFrame(filler, append_to_context=False))
        await self.push_frame(frame, direction)


def build_system_prompt(
    business: Business,
    caller: dict[str, Any] | None,
    has_caller_id: bool,
    now: datetime | None = None,
) -> str:
    """The per-call system prompt. What varies between calls (the time, the caller) comes last,
    under "This call:", so a local model keeps everything before it cached across calls.
    ``now`` defaults to the current time."""
    now = business.local(now or datetime.now(business.tz))
    services = "; ".join(
        f"{s.name} ({s.duration_minutes} min, ${s.price_cents / 100:.0f})"
        for s in business.services
    )
    if caller and caller.get("name"):
        who = f"{caller['name']}, a returning customer (phone on file)"
    elif has_caller_id:
        who = "no name on file yet; phone number known from caller ID"
    else:
        who = "no name on file and no caller ID; ask for a phone number before booking"
    facts = {
        "business_name": business.name,
        "address": business.address,
        "services": services,
        "hours": describe_hours(business),
    }
    return fill(
        without_tools(load_text("system.md"), business.disabled_tools),
        **facts,
        now=f"{now:%A %B %d %Y, %I:%M %p}",
        caller=who,
        persona=fill(business.persona, **facts),  # the admin's persona may use the facts too
    )


class CallSession:
    """Runs one call's pipeline and keeps its record. Implements StreamHooks and CallControl."""

    def __init__(self, state: Any, info: CallInfo, rate: int = PIPELINE_RATE) -> None:
        self.state = state  # agent.app.AppState
        self.info = info
        self.settings = state.settings
        self.rate = rate
        self.ledger = PlaybackLedger()
        self.recording = CallRecording(rate)
        self.timings = TurnTimings()
        self.heard_correction: tuple[str, int] | None = None  # (heard words, caller turns before)
        self.context: LLMContext | None = None
        self.outcome = "completed"
        self.registry: ToolRegistry = tool_registry()
        self.records: RecordWriter | None = None
        self.faults: FaultHandler | None = None  # provider faults: apology, retry, offer
        self.worker: PipelineWorker | None = None
        self._ending = False
        self.bot_speaking = False
        self._bot_turn_open = False  # between the assistant aggregator's turn start and stop
        self._last_heard: str | None = None  # what the caller heard of the open turn, if cut off
        self._tasks: set[asyncio.Future[Any]] = set()
        self._idle_prompts = 0
        self._caller_hung_up = False
        self._call_id = 0
        self.clears = 0  # barge-ins so far
        self.facts: dict[str, Any] = {}  # the tools' per-call memory
        self.escalation = Escalation(self)
        self.business: Business | None = None  # the config this call started with
        self._events_to: FrameProcessor | None = None

    # --- StreamHooks (called by the serializer, synchronously) --------------------------------

    def on_caller_audio(self, pcm: bytes) -> None:
        self.recording.add_caller(pcm)

    def on_bot_audio(self, pcm: bytes) -> None:
        self.recording.add_bot(pcm)
        self.timings.mark("first_audio_sent")

    def on_mark(self, name: str) -> None:
        if not self.ledger.acknowledge(name):
            logger.debug(f"call {self.info.call_sid}: unknown mark {name!r}")

    def on_clear(self) -> None:
        self.clears += 1
        self.recording.clear_bot()
        heard, cut_off = self.ledger.interrupt()
        if not cut_off:
            return
        if self.context is not None:
            callers = sum(1 for m in self.context.get_messages() if _role(m) == "user")
            if self.heard_correction is None or self.heard_correction[1] != callers:
                self.heard_correction = (heard, callers)
        if self._bot_turn_open:
            self._last_heard = heard  # the open turn is recorded as heard when it stops
        elif self.records is not None:
            # The reply's text was complete (and recorded) but its audio was still playing.
            self.records.put("cut_off_last_bot_turn", heard=heard)

    def on_dtmf(self, digit: str) -> None:
        logger.info(f"call {self.info.call_sid}: DTMF {digit}")
        if digit == "0":
            self.spawn(self.escalate("caller pressed 0 for a person", "dtmf"))

    def on_stop(self) -> None:
        self._caller_hung_up = True

    # --- Live events (for a client that shows the call, such as the browser demo) -----------

    def emit(self, kind: str, **data: Any) -> None:
        """Forward a record or transcript to the client when its serializer ``wants_events``.

        Faults go out without their text (internals stay in the log); other kinds are dropped.
        """
        if self._events_to is None:
            return
        if kind == "add_fault":
            message: dict[str, Any] = {"kind": "fault"}
        elif kind in _EVENT_KINDS:
            message = {**data, "kind": _EVENT_KINDS[kind]}
        else:
            return
        task = asyncio.ensure_future(self._events_to.queue_frame(CallEventFrame(message=message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- CallControl (called by tools) -----------------------------------------------------------

    async def request_transfer(self, reason: str) -> tuple[str, dict[str, Any]]:
        return await self.escalation.request_transfer(reason)

    async def escalate(self, reason: str, trigger: str) -> None:
        """Hand the caller to a person (warm/cold transfer) or, when nobody can take the call,
        offer to take a message. ``trigger``: dtmf | misunderstood | provider_failure | ..."""
        await self.escalation.escalate(reason, trigger)

    async def request_hangup(self, reason: str) -> None:
        self._ending = True
        self._tasks.add(task := asyncio.create_task(self._end_after_speaking()))
        task.add_done_callback(self._tasks.discard)

    async def _end_after_speaking(self, timeout: float = 15.0) -> None:
        """Let the goodbye play out (marks acknowledged), then end the pipeline."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.5)
        while time.monotonic() < deadline:
            if self.ledger.outstanding == 0 and not self.bot_speaking:
                break
            await asyncio.sleep(0.1)
        await self.end()

    @property
    def ending(self) -> bool:
        return self._ending

    async def end_politely(self, clip: str, outcome: str) -> None:
        """Say a pre-synthesized goodbye (agent.faults) and end the call with ``outcome``."""
        if self._ending:
            return
        self.outcome = outcome
        if self.faults is not None:
            await self.faults.say_clip(clip)
        await self.request_hangup(outcome)

    async def end(self) -> None:
        if self.worker is not None:
            await self.worker.queue_frame(EndFrame())

    # --- For agent/escalation.py ------------------------------------------------------------

    def spawn(self, work: Any) -> None:
        """Run a coroutine alongside the pipeline, keeping a reference until it is done."""
        self._tasks.add(task := asyncio.ensure_future(work))
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.opt(exception=error).error(f"call {self.info.call_sid}: task failed: {error}")
            self.add_fault(f"task: {type(error).__name__}: {error}")

    async def say(self, text: str, *, to_model: bool = False) -> None:
        """Speak a fixed sentence and record it; with ``to_model`` it joins the LLM context too
        (the model continues the conversation from it)."""
        if to_model and self.context is not None:
            self.context.add_message({"role": "assistant", "content": text})
        await self._say_fixed(text)

    def messages(self) -> list[Any]:
        return list(self.context.get_messages()) if self.context is not None else []

    def public_base(self) -> str:
        return self.settings.public_url or self.info.public_base

    def add_fault(self, fault: str) -> None:
        if self.records is not None:
            self.records.put("add_fault", fault=fault)

    # --- Pipeline ------------------------------------------------------------------------------

    async def _say_fixed(self, text: str) -> None:
        """Say a fixed phrase (no LLM) and record it as a bot turn."""
        assert self.worker is not None and self.records is not None
        await self.worker.queue_frame(TTSSpeakFrame(text, append_to_context=False))
        self.records.put("add_turn", role="bot", text=text, timings={"fixed_phrase": 1.0})

    def _greeting(self, business: Business, caller: dict[str, Any] | None) -> str:
        texts = phrases()
        first = (caller or {}).get("name", "").split(" ")[0] if caller else ""
        if business.greeting and not first:
            return fill(business.greeting, business_name=business.name)
        key = "greeting_returning" if first else "greeting"
        return fill(texts[key], business_name=business.name, first_name=first)

    async def run(self, websocket: WebSocket, serializer: Any) -> None:
        """Run the call to its end; always leaves a finished call record behind."""
        store: CallStore = self.state.calls
        self._call_id = await store.start_call(
            call_sid=self.info.call_sid,
            stream_sid=self.info.stream_sid,
            source=self.info.source,
            from_number=self.info.from_number,
            to_number=self.info.to_number,
            providers=self.settings.provider_names(),
        )
        self.records = RecordWriter(store, self._call_id, listener=self.emit)
        try:
            await self._run_pipeline(websocket, serializer)
        except Exception as exc:
            self.outcome = "error"
            logger.exception(f"call {self.info.call_sid} failed: {exc}")
            self.records.put("add_fault", fault=f"pipeline: {type(exc).__name__}: {exc}")
        finally:
            await self.escalation.settle()
            if self.faults is not None:
                await self.faults.close()
            if serializer.frame_errors.count:  # the call went on without them; say so
                self.records.put("add_fault", fault=f"media stream: {serializer.frame_errors}")
            recording_path = self._save_recording()
            self.records.put("finish_call", outcome=self.outcome, recording_path=recording_path)
            await self.records.close()

    def _save_recording(self) -> str:
        try:
            directory = Path(self.settings.data_dir) / "recordings"
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{self.info.call_sid}.wav"
            audio = self.recording.to_wav()
            if self.info.resume_handoff and path.exists():  # one call, one recording
                audio = join_wavs(path.read_bytes(), audio)
            path.write_bytes(audio)
            return str(path)
        except Exception as exc:
            logger.error(f"call {self.info.call_sid}: could not save recording: {exc}")
            return ""

    async def _run_pipeline(self, websocket: WebSocket, serializer: Any) -> None:
        settings = self.settings
        records = self.records
        assert records is not None, "run() opens the call record first"
        business = self.business = await load_business(self.state.db)
        disabled = business.disabled_tools
        self.registry = tool_registry([n for n in TOOL_NAMES if n not in disabled])
        caller = None
        if self.info.from_number:
            async with self.state.db.read() as conn:
                caller = await lookup_customer(conn, self.info.from_number)
            if caller:
                records.put("set_customer", customer_id=caller["id"])
        tool_ctx = ToolContext(
            db=self.state.db,
            caller_phone=self.info.from_number if self.info.from_number.startswith("+") else "",
            call_sid=self.info.call_sid,
            call=self,
            business=business,  # the whole call keeps the config it started with
        )
        self.facts = tool_ctx.facts

        transport = LeadPacedWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=self.rate,
                audio_out_sample_rate=self.rate,
                audio_out_10ms_chunks=2,
                add_wav_header=False,
                serializer=serializer,
                allowed_origins=[],
                session_timeout=settings.max_call_secs,
            ),
        )
        if getattr(serializer, "wants_events", False):
            self._events_to = transport.output()
        hotwords = " ".join([business.name, *(s.name for s in business.services)])
        stt = build_stt(settings, self.state.models, hotwords=hotwords)
        system_prompt = build_system_prompt(business, caller, bool(self.info.from_number))
        llm = build_llm(settings, self.state.brain, system_prompt)
        tts = build_tts(settings, self.state.models)
        clip_player = ClipPlayer(self.ledger, PIPELINE_RATE)
        self.faults = FaultHandler(
            self,
            clip_player,
            self.state.models.clips,
            timeout_secs=settings.provider_timeout_secs,
            local_tts=not settings.elevenlabs_api_key,
        )

        tools = ToolsSchema(
            standard_tools=[
                FunctionSchema(
                    name=spec.name,
                    description=spec.description,
                    properties=spec.parameters["properties"],
                    required=spec.parameters["required"],
                )
                for spec in self.registry.specs.values()
            ]
        )
        greeting = self._greeting(business, caller)
        earlier: list[dict[str, Any]] = []
        if self.info.resume_handoff:  # nobody answered the transfer: pick up where we left off
            earlier = earlier_messages(await self.state.calls.get_call(self.info.call_sid))
            greeting = phrases()["transfer_no_answer"]
            self.escalation.blocked = "nobody answered"
        if self.state.brain is not None:
            # Evaluate this call's prompt into the local model while the greeting plays.
            opening = [
                {"role": "system", "content": system_prompt},
                *earlier,
                {"role": "assistant", "content": greeting},
            ]
            self.state.brain.prime_later(opening, self.registry.openai_tools())
        context = LLMContext(messages=list(earlier), tools=tools)  # type: ignore[arg-type]
        self.context = context

        async def invoke_and_record(name: str, arguments: Any) -> Any:
            invocation = await self.registry.invoke(tool_ctx, name, arguments)
            records.put(
                "add_tool_call",
                name=invocation.name,
                arguments=invocation.arguments,
                result=invocation.payload,
                ok=invocation.ok,
                error=invocation.error,
                duration_ms=invocation.duration_ms,
            )
            if tool_ctx.facts.get("customer_id") and not (caller or {}).get("id"):
                records.put("set_customer", customer_id=tool_ctx.facts["customer_id"])
            return invocation

        async def run_tool(params: FunctionCallParams) -> None:
            # A caller who talks over a booking must not undo it: the tool runs to the end and
            # is recorded even when pipecat cancels this handler on an interruption.
            work = asyncio.ensure_future(invoke_and_record(params.function_name, params.arguments))
            self._tasks.add(work)
            work.add_done_callback(self._tasks.discard)
            invocation = await asyncio.shield(work)
            quiet = bool(invocation.payload.get("no_reply"))  # the call speaks for itself
            properties = FunctionCallResultProperties(run_llm=False) if quiet else None
            await params.result_callback(invocation.payload, properties=properties)

        llm.register_function(None, run_tool, cancel_on_interruption=True)

        vad = build_vad(
            self.state.models,
            self.rate,
            VADParams(
                confidence=0.7, start_secs=0.2, stop_secs=settings.vad_stop_secs, min_volume=0.5
            ),
        )
        aggregators = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[
                        PhraseAwareTurnStopStrategy(
                            pause_secs=settings.turn_pause_secs,
                            unfinished_pause_secs=settings.turn_pause_incomplete_secs,
                            segmented_stt=not settings.deepgram_api_key,
                        )
                    ],
                ),
                user_idle_timeout=settings.caller_idle_secs,
                # Local transcription can take seconds on a busy CPU; don't give up on it early.
                user_turn_stop_timeout=10.0,
            ),
        )
        user_aggregator = aggregators.user()
        assistant_aggregator = aggregators.assistant()

        pipeline = Pipeline(
            [
                transport.input(),
                # VAD before the STT, so its speech events reach the STT in step with the
                # audio. Audio from Twilio comes in bursts after network jitter; a VAD after
                # the STT would tell it "speech started" only once the burst had passed
                # through, and the start of the utterance would already be gone.
                VADProcessor(vad_analyzer=vad),
                stt,
                user_aggregator,
                HeardTextCorrector(self),
                EscalationGate(self.escalation),
                llm,
                EscalationGate(self.escalation),
                FillerSpeaker(self),
                tts,
                clip_player,
                PlaybackMarker(self.ledger),
                transport.output(),
                assistant_aggregator,
            ]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=self.rate,
                audio_out_sample_rate=self.rate,
                enable_metrics=True,
            ),
            observers=[CallObserver(self)],
            idle_timeout_secs=None,
            enable_rtvi=False,
        )
        self.worker = worker

        @transport.event_handler("on_client_connected")
        async def on_connected(_transport: Any, _ws: Any) -> None:
            self.timings = TurnTimings()
            self.timings.mark("speech_end")  # the greeting's "voice to voice" is from stream start
            await worker.queue_frame(TTSSpeakFrame(greeting, append_to_context=True))

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport: Any, _ws: Any) -> None:
            self._caller_hung_up = True
            await worker.cancel()

        @transport.event_handler("on_session_timeout")
        async def on_timeout(_transport: Any, _ws: Any) -> None:
            self.outcome = "max_duration"
            await self._say_fixed(phrases()["max_duration"])
            await self.request_hangup("max duration")

        @user_aggregator.event_handler("on_user_turn_started")
        async def on_user_turn_started(_aggregator: Any, _strategy: Any) -> None:
            self._idle_prompts = 0

        @user_aggregator.event_handler("on_user_turn_stopped")
        async def on_user_turn_stopped(_aggregator: Any, _strategy: Any, message: Any) -> None:
            text = (message.content or "").strip()
            timings = self.timings.caller_part()
            # A new exchange starts: bot timings are measured from this caller turn.
            keep = {k: v for k, v in self.timings.values.items() if k in timings}
            self.timings = TurnTimings(dict(keep))
            if text:
                records.put("add_turn", role="caller", text=text, timings=timings)

        @assistant_aggregator.event_handler("on_assistant_turn_started")
        async def on_assistant_turn_started(_aggregator: Any) -> None:
            self._bot_turn_open, self._last_heard = True, None

        @assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def on_assistant_turn_stopped(_aggregator: Any, message: Any) -> None:
            """Record the bot's turn as the caller heard it; a turn with no words is no turn."""
            self._bot_turn_open = False
            heard, self._last_heard = self._last_heard, None
            text = (message.content or "").strip()
            interrupted = bool(getattr(message, "interrupted", False))
            if interrupted and heard:
                text = heard
            if text:
                records.put(
                    "add_turn",
                    role="bot",
                    text=text,
                    timings=self.timings.bot_part(),
                    interrupted=interrupted,
                )

        @user_aggregator.event_handler("on_user_turn_idle")
        async def on_idle(_aggregator: Any) -> None:
            if self._ending or self.escalation.holding:
                return
            self._idle_prompts += 1
            if self._idle_prompts <= settings.caller_idle_prompts:
                await self._say_fixed(phrases()["still_there"])
            else:
                self.outcome = "caller_silent"
                await self._say_fixed(phrases()["idle_goodbye"])
                await self.request_hangup("caller silent")

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
        if self._caller_hung_up and self.outcome == "completed" and not self._ending:
            self.outcome = "caller_hung_up"
