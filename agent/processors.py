"""The call's own pipecat processors and observer, placed by agent.pipeline:

``Inlet`` first (where the session's frames enter), ``ContextGate`` before the LLM,
``EscalationGate`` and ``FillerSpeaker`` after it,
``PlaybackMarker`` before the output transport, and ``CallObserver`` watching every frame.
They keep no call state of their own: they report to the
:class:`agent.session.CallSession` (or its escalation, ledger and fault handler).
"""

from __future__ import annotations

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    Frame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
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
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from agent.faults import FaultHandler
from agent.prompts import phrases
from agent.session import CallSession, Escalating, record_heard_reply
from telephony.playback import PlaybackLedger
from telephony.serializer import MarkFrame

DOWNSTREAM = FrameDirection.DOWNSTREAM


class Inlet(FrameProcessor):
    """Passes every frame on; what the session says or asks of the pipeline is queued here
    (downstream) or pushed from here (upstream, to the worker)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class CallObserver(BaseObserver):
    """Watches frames as they are first pushed: stamps each exchange's stages, tracks whether
    the bot is speaking, and feeds the fault handler (which records pipeline errors).

    Only first pushes: every later hop of every frame would be one more queue hand-off to the
    observer (the fault handler's watch on what reaches the TTS is :class:`FillerSpeaker`'s)."""

    def __init__(self, session: CallSession, faults: FaultHandler | None) -> None:
        super().__init__(observe_every_push=False)
        self._session = session
        self._faults = faults

    async def on_push_frame(self, data: FramePushed) -> None:
        if self._faults is not None:
            await self._faults.on_frame(data)
        if data.first_push:
            self._observe(data.frame)
            if isinstance(data.frame, LLMContextFrame) and data.direction is DOWNSTREAM:
                self._reply_requested()

    def _reply_requested(self) -> None:
        """Mark the request answering the caller: the latest early (speculative) one while the
        turn is open, else the first one after it ended; not the requests after tool results."""
        timings = self._session.timings
        values = timings.values
        started = values.get("speech_start", 0.0)
        turn_open = values.get("turn_end", 0.0) < started
        stale = values.get("llm_request", 0.0) < started  # the previous turn's, or none
        if turn_open or stale:
            timings.mark("llm_request", overwrite=True)

    def _observe(self, frame: Frame) -> None:
        """A frame's first push: the stage it marks, and whether the bot is speaking now."""
        timings = self._session.timings
        if isinstance(frame, VADUserStartedSpeakingFrame):
            timings.mark("speech_start", overwrite=True)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            timings.mark("speech_end", frame.timestamp - frame.stop_secs, overwrite=True)
        elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            self._heard(frame)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            timings.mark("turn_end", overwrite=True)
        elif isinstance(frame, LLMFullResponseStartFrame):
            timings.mark("llm_start")
        elif isinstance(frame, LLMTextFrame):
            timings.mark("llm_first_token")
        elif isinstance(frame, TTSStartedFrame):
            timings.mark("first_sentence")
            self._session.bot_started_speaking()
        elif isinstance(frame, TTSAudioRawFrame):
            timings.mark("tts_first_audio")
        elif isinstance(frame, (BotStoppedSpeakingFrame, InterruptionFrame)):
            self._session.bot_speaking = False

    def _heard(self, frame: TranscriptionFrame | InterimTranscriptionFrame) -> None:
        """The caller's words: final ones mark the transcript stage; both go to the client."""
        if isinstance(frame, TranscriptionFrame):
            self._session.timings.mark("stt_done", overwrite=True)
            self._session.emit("transcript", text=frame.text)
        else:
            self._session.emit("interim", text=frame.text)


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


class ContextGate(FrameProcessor):
    """Between the user aggregator and the LLM, where the caller's side of the pipeline ends.

    - The caller's audio stops here: everything that listens to it (VAD, STT, the turn
      strategies) is upstream, and each 20 ms frame would otherwise hop through every
      processor after this one.
    - The context records only what the caller heard of an interrupted reply. A reply started
      before the turn ended runs on a copy of the context: the copy is corrected, and the
      call's own context at its next request.
    - While the call is being handed to a person (``session.escalation.holding``) the model is
      not asked again: context frames are dropped (the caller's words are still recorded).
      So too while a call we placed waits for the machine verdict: the agent never answers an
      answering machine's greeting.
    """

    def __init__(self, session: CallSession) -> None:
        super().__init__()
        self._session = session

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            return
        if isinstance(frame, LLMContextFrame):
            self._correct(frame)
            if self._session.escalation.holding or self._session.awaiting_person:
                return
        await self.push_frame(frame, direction)

    def _correct(self, frame: LLMContextFrame) -> None:
        if self._session.heard_correction is None:
            return
        heard, callers_before = self._session.heard_correction
        if not frame.speculation:
            self._session.heard_correction = None
        messages = list(frame.context.get_messages())
        frame.context.set_messages(record_heard_reply(messages, heard, callers_before))  # type: ignore[arg-type]


class FillerSpeaker(FrameProcessor):
    """After the LLM, just before the TTS: the caller hears a short filler the moment a tool
    call starts; and the fault handler is told what goes to the TTS (its TTS watchdog).

    A model that announces its tool call early (the local brain streams the filler phrase as
    soon as it has picked a tool) has that phrase spoken at once, rather than held by the TTS
    sentence aggregator until more text follows. A model that does not gets the filler when
    pipecat reports the function call.
    """

    def __init__(self, session: CallSession, faults: FaultHandler | None = None) -> None:
        super().__init__()
        self._session = session
        self._faults = faults
        self._spoke = False

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if self._faults is not None and direction is DOWNSTREAM:
            self._faults.tts_input(frame)
        await super().push_frame(frame, direction)

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


class EscalationGate(FrameProcessor):
    """After the LLM. While the call is being handed to a person the model is not asked again:
    context frames coming up (a tool result) are dropped (:class:`ContextGate` drops those
    coming down). It also reads each complete reply as the model wrote it, for the
    misunderstanding count."""

    def __init__(self, escalation: Escalating) -> None:
        super().__init__()
        self._escalation = escalation
        self._reply: list[str] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and self._escalation.holding:
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._reply = []
        elif isinstance(frame, LLMTextFrame) and self._reply is not None:
            self._reply.append(frame.text)
        elif isinstance(frame, InterruptionFrame):
            self._reply = None  # cut off by the caller: neither understood nor not
        elif isinstance(frame, LLMFullResponseEndFrame) and self._reply is not None:
            self._escalation.note_bot_turn("".join(self._reply).strip())
            self._reply = None
        await self.push_frame(frame, direction)
