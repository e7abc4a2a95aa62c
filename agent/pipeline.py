"""The pipeline assembly: the only place a pipecat Pipeline and PipelineWorker are built.

Audio path: websocket -> serializer (codec) -> Silero VAD -> STT -> user turn -> LLM with tools
-> TTS (sentence by sentence) -> clips -> marks -> websocket. :class:`CallPipeline` builds it
around a :class:`agent.session.CallSession`, turns the transport's and aggregators' events into
calls of the session's named methods, and implements the session's
:class:`agent.session.CallPipe`. :func:`run_call` runs a real call over a websocket.

The seam, for frame-level tests: :class:`CallServices` carries the providers (STT, LLM, TTS, VAD)
and the transport from outside. With ``transport=None`` the pipeline is open at both ends, so
pipecat's test utility can run the real processors, the real session and the real tools::

    session = CallSession(info, settings=..., db=db, store=CallStore(db), escalation=...)
    async def media() -> None:
        setup = await session.prepare()
        call = CallPipeline(session, setup, CallServices(stt=..., llm=..., tts=..., vad=...),
                            settings)
        await run_test(call.pipeline, observers=call.observers, frames_to_send=[...],
                       send_end_frame=False)   # the call ends itself (goodbye, or session.end())
    await session.run(media)                    # writes the call record, like a real call

Frames to send are what the transport would produce (``UserStartedSpeakingFrame``,
``TranscriptionFrame``, ...); the stream's own events are the methods ``greet``,
``caller_disconnected`` and ``timed_out``. tests/test_call_frames.py does this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    CancelWorkerFrame,
    EndWorkerFrame,
    FunctionCallResultProperties,
    InterruptionWorkerFrame,
    LLMRunFrame,
    TTSSpeakFrame,
)
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    AssistantTurnStoppedMessage,
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
    UserTurnStoppedMessage,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner
from starlette.websockets import WebSocket

from agent.brain.model import LocalBrain
from agent.brain.service import interim_primers
from agent.faults import ClipPlayer, FaultHandler
from agent.processors import (
    CallObserver,
    ContextGate,
    EscalationGate,
    FillerSpeaker,
    Inlet,
    PlaybackMarker,
)
from agent.providers import LocalModels, build_llm, build_stt, build_tts
from agent.session import PIPELINE_RATE, CallSession, CallSetup
from agent.settings import Settings
from agent.transport import LeadPacedWebsocketTransport
from agent.turn_audio import TurnAudioModel
from agent.turns import stop_strategy
from agent.vad import build_call_vad
from telephony.serializer import CallEventFrame, MediaSerializer


@dataclass
class CallServices:
    """What a call's pipeline runs on. ``transport`` None leaves the pipeline open at both ends
    (whoever runs it feeds and takes the frames); ``clips`` are the pre-synthesized phrases."""

    stt: FrameProcessor
    llm: LLMService
    tts: FrameProcessor
    vad: VADAnalyzer
    transport: LeadPacedWebsocketTransport | None = None
    clips: dict[str, bytes] = field(default_factory=dict)
    events: bool = False  # the client shows the call live (the browser demo)
    turn_model: TurnAudioModel | None = None  # smart-turn, the voice's veto on ending a turn


class CallResources(Protocol):
    """What a real call takes from the application."""

    settings: Settings
    models: LocalModels
    brain: LocalBrain | None


class CallPipeline:
    """One call's pipeline around ``session``; the session's :class:`CallPipe` while it runs."""

    def __init__(
        self,
        session: CallSession,
        setup: CallSetup,
        services: CallServices,
        settings: Settings,
    ) -> None:
        self.session = session
        self.greeting = setup.greeting
        self._transport = services.transport
        self._events = services.events and services.transport is not None
        self._worker: PipelineWorker | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        tools = ToolsSchema(
            standard_tools=[
                FunctionSchema(
                    name=spec.name,
                    description=spec.description,
                    properties=spec.parameters["properties"],
                    required=spec.parameters["required"],
                )
                for spec in session.registry.specs.values()
            ]
        )
        self.context = LLMContext(messages=list(setup.earlier), tools=tools)  # type: ignore[arg-type]
        services.llm.register_function(None, self._run_tool, cancel_on_interruption=True)
        clip_player = ClipPlayer(session.ledger, PIPELINE_RATE)
        self.faults = FaultHandler(
            session,
            clip_player,
            services.clips,
            timeout_secs=settings.provider_timeout_secs,
            local_tts=not settings.elevenlabs_api_key,
        )
        aggregators = LLMContextAggregatorPair(
            self.context, user_params=user_turn_params(settings, services.turn_model)
        )
        user, assistant = aggregators.user(), aggregators.assistant()
        self._inlet = Inlet()
        escalation = session.escalation
        transport = services.transport
        self.pipeline = Pipeline(
            [
                *([transport.input()] if transport is not None else []),
                self._inlet,
                # VAD before the STT, so its speech events reach the STT in step with the
                # audio. Audio from Twilio comes in bursts after network jitter; a VAD after
                # the STT would tell it "speech started" only once the burst had passed
                # through, and the start of the utterance would already be gone.
                VADProcessor(vad_analyzer=services.vad),
                services.stt,
                *interim_primers(services.llm, self.context),
                user,
                ContextGate(session),  # the caller's audio ends here
                services.llm,
                EscalationGate(escalation),
                FillerSpeaker(session, self.faults),
                services.tts,
                clip_player,
                PlaybackMarker(session.ledger),
                *([transport.output()] if transport is not None else []),
                assistant,
            ]
        )
        self.observers: list[BaseObserver] = [CallObserver(session, self.faults)]
        if transport is not None:
            transport.event_handler("on_client_connected")(self._on_client_connected)
            transport.event_handler("on_client_disconnected")(self._on_client_disconnected)
            transport.event_handler("on_session_timeout")(self._on_session_timeout)
        user.event_handler("on_user_turn_started")(self._on_user_turn_started)
        user.event_handler("on_user_turn_stopped")(self._on_user_turn_stopped)
        user.event_handler("on_user_turn_idle")(self._on_user_turn_idle)
        assistant.event_handler("on_assistant_turn_started")(self._on_assistant_turn_started)
        assistant.event_handler("on_assistant_turn_stopped")(self._on_assistant_turn_stopped)
        session.pipe = self
        session.faults = self.faults

    async def run(self) -> None:
        """Run the pipeline on its own worker until the call ends."""
        rate = self.session.rate
        self._worker = PipelineWorker(
            self.pipeline,
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            observers=self.observers,
            idle_timeout_secs=None,
            enable_rtvi=False,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self._worker)
        await runner.run()

    # --- The stream's events -------------------------------------------------------------------

    async def greet(self) -> None:
        """The stream is up: say the greeting (it opens the model's context). A call we placed
        first waits, silent, for a person (the session's machine verdict)."""
        if self.session.awaiting_person:
            self.session.spawn(self._greet_a_person())
            return
        self.session.greeted()
        await self._inlet.queue_frame(TTSSpeakFrame(self.greeting, append_to_context=True))

    async def _greet_a_person(self) -> None:
        if await self.session.wait_for_person():
            await self.greet()

    async def caller_disconnected(self) -> None:
        self.session.caller_left()
        await self.cancel()

    async def timed_out(self) -> None:
        await self.session.timed_out()

    async def _on_client_connected(self, _transport: object, _client: object) -> None:
        await self.greet()

    async def _on_client_disconnected(self, _transport: object, _client: object) -> None:
        await self.caller_disconnected()

    async def _on_session_timeout(self, _transport: object, _client: object) -> None:
        await self.timed_out()

    # --- The aggregators' events ---------------------------------------------------------------

    async def _on_user_turn_started(self, _aggregator: object, _strategy: object) -> None:
        self.session.caller_turn_started()

    async def _on_user_turn_stopped(
        self, _aggregator: object, _strategy: object, message: UserTurnStoppedMessage
    ) -> None:
        self.session.caller_turn_stopped((message.content or "").strip())

    async def _on_user_turn_idle(self, _aggregator: object) -> None:
        await self.session.caller_idle()

    async def _on_assistant_turn_started(self, _aggregator: object) -> None:
        self.session.bot_turn_started()

    async def _on_assistant_turn_stopped(
        self, _aggregator: object, message: AssistantTurnStoppedMessage
    ) -> None:
        self.session.bot_turn_stopped((message.content or "").strip(), message.interrupted)

    async def _run_tool(self, params: FunctionCallParams) -> None:
        # A caller who talks over a booking must not undo it: the tool runs to the end and
        # is recorded even when pipecat cancels this handler on an interruption.
        work = asyncio.ensure_future(self.session.run_tool(params.function_name, params.arguments))
        self._tasks.add(work)
        work.add_done_callback(self._tasks.discard)
        invocation = await asyncio.shield(work)
        quiet = bool(invocation.payload.get("no_reply"))  # the call speaks for itself
        properties = FunctionCallResultProperties(run_llm=False) if quiet else None
        await params.result_callback(invocation.payload, properties=properties)

    # --- CallPipe ------------------------------------------------------------------------------

    async def speak(self, text: str) -> None:
        await self._inlet.queue_frame(TTSSpeakFrame(text, append_to_context=False))

    async def interrupt(self) -> None:
        await self._inlet.push_frame(InterruptionWorkerFrame(), FrameDirection.UPSTREAM)

    async def rerun_llm(self) -> None:
        await self._inlet.queue_frame(LLMRunFrame())

    async def end(self) -> None:
        await self._inlet.push_frame(EndWorkerFrame(), FrameDirection.UPSTREAM)

    async def cancel(self) -> None:
        """At once, even while an ending frame is still on its way through the pipeline; run
        by another worker (pipecat's run_test), by asking that worker upstream."""
        if self._worker is not None:
            await self._worker.cancel()
        else:
            await self._inlet.push_frame(CancelWorkerFrame(), FrameDirection.UPSTREAM)

    def messages(self) -> list[dict[str, Any]]:
        # pipecat types them as OpenAI's message TypedDicts; they are plain dicts.
        return [cast(dict[str, Any], m) for m in self.context.get_messages() if isinstance(m, dict)]

    def remember(self, text: str) -> None:
        self.context.add_message({"role": "assistant", "content": text})

    def send_event(self, message: dict[str, Any]) -> None:
        if not self._events or self._transport is None:
            return
        sent = self._transport.output().queue_frame(CallEventFrame(message=message))
        self._tasks.add(task := asyncio.ensure_future(sent))
        task.add_done_callback(self._tasks.discard)


def user_turn_params(
    settings: Settings, turn_model: TurnAudioModel | None
) -> LLMUserAggregatorParams:
    """How a call decides the caller's turn (start, end, idle): agent.turns' strategy."""
    return LLMUserAggregatorParams(
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy()],
            stop=[
                stop_strategy(
                    settings, audio_model=turn_model, segmented_stt=not settings.deepgram_api_key
                )
            ],
        ),
        user_idle_timeout=settings.caller_idle_secs,
        # Local transcription can take seconds on a busy CPU; don't give up on it early.
        user_turn_stop_timeout=10.0,
    )


def call_services(
    resources: CallResources,
    setup: CallSetup,
    rate: int,
    websocket: WebSocket,
    serializer: MediaSerializer,
    max_call_secs: int,
) -> CallServices:
    """The configured providers and the websocket transport, for a real call that lasts at most
    ``max_call_secs`` (then the session's ``timed_out``)."""
    settings = resources.settings
    transport = LeadPacedWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=rate,
            audio_out_sample_rate=rate,
            audio_out_10ms_chunks=2,
            add_wav_header=False,
            serializer=serializer,
            allowed_origins=[],
            session_timeout=max_call_secs,
        ),
    )
    return CallServices(
        stt=build_stt(settings, resources.models),
        llm=build_llm(
            settings,
            resources.brain.for_call(setup.tools.call_sid) if resources.brain else None,
            setup.system_prompt,
            resources.models.clients,
        ),
        tts=build_tts(settings, resources.models),
        vad=build_call_vad(resources.models, rate, settings),
        transport=transport,
        clips=resources.models.clips,
        events=bool(getattr(serializer, "wants_events", False)),
        turn_model=resources.models.turn_model,
    )


async def run_call(
    resources: CallResources,
    session: CallSession,
    websocket: WebSocket,
    serializer: MediaSerializer,
) -> None:
    """Run a real call over ``websocket`` to its end; the session keeps its record, with the
    stream's malformed frames (skipped, the call went on without them) as one fault."""

    async def media() -> None:
        setup = await session.prepare()
        services = call_services(
            resources, setup, session.rate, websocket, serializer, session.max_call_secs
        )
        if resources.brain is not None:
            # Evaluate this call's prompt into the local model while the greeting plays.
            opening: Sequence[dict[str, Any]] = [
                {"role": "system", "content": setup.system_prompt},
                *setup.earlier,
                {"role": "assistant", "content": setup.greeting},
            ]
            brain = resources.brain.for_call(setup.tools.call_sid)
            brain.prime_later(list(opening), session.registry.openai_tools())
        try:
            await CallPipeline(session, setup, services, resources.settings).run()
        finally:
            if resources.brain is not None:
                resources.brain.forget(setup.tools.call_sid)  # its KV state, kept meanwhile
            if serializer.frame_errors.count:
                session.add_fault(f"media stream: {serializer.frame_errors}")

    await session.run(media)
