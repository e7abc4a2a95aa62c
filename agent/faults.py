"""Provider faults during a call: apologise with a clip that needs no provider, retry once,
then offer a person or a message, and end politely if the fault goes on.

The clips are synthesized once at start-up with the local TTS (see
``agent.providers.synthesize_clips``) and played as raw audio straight into the output, so a
dead or hung TTS, LLM or STT never leaves the caller in silence. Every fault is written to the
call record with its stage.

Per stage (stt, llm, tts), consecutive faults without a success in between count as strikes:

1. the caller hears an apology; the LLM request is re-issued, or the unspoken text is sent to the
   TTS again (an STT fault cannot be retried: the apology asks the caller to say it again);
2. the caller is offered a person or a message (:func:`offer_handoff`), and the conversation
   goes on to ``transfer_to_human`` / ``take_message``;
3. the caller hears a goodbye and the call ends with outcome ``provider_fault``.

A TTS that accepts text but produces no audio in time counts as a fault (a watchdog); an LLM that
stalls is cut off by its client's read timeout (``agent.providers.build_llm``).
"""

from __future__ import annotations

import asyncio
import math
import time

from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    SpeechOutputAudioRawFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from agent import metrics
from agent.prompts import phrases
from agent.session import CallSession, Outcome
from telephony.playback import PlaybackLedger
from telephony.serializer import MarkFrame

#: Phrases synthesized at start-up, so they can be played with every provider down.
CLIP_PHRASES = ("apology", "apology_wait", "fault_offer", "fault_goodbye", "shutdown_goodbye")
#: Faults of one stage closer together than this are one incident (one apology, one strike).
DEBOUNCE_SECS = 2.0
#: A local model on a busy CPU is slow, not broken: its watchdogs never fire sooner than this.
LOCAL_TIMEOUT_FLOOR_SECS = 20.0

_SENTENCE_END = (".", "!", "?")


def stage_of(processor: object) -> str | None:
    """Which provider stage a pipeline processor is, if any."""
    if isinstance(processor, STTService):
        return "stt"
    if isinstance(processor, LLMService):
        return "llm"
    if isinstance(processor, TTSService):
        return "tts"
    return None


class ClipPlayer(FrameProcessor):
    """After the TTS: plays pre-synthesized audio without any provider.

    Frames pass through untouched; :meth:`play` pushes the clip downstream as speech audio
    followed by a Twilio mark, so barge-in and "what did the caller hear" work as for TTS audio.
    """

    CHUNK_MS = 200

    def __init__(self, ledger: PlaybackLedger, sample_rate: int) -> None:
        super().__init__()
        self._ledger = ledger
        self._rate = sample_rate

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def play(self, pcm: bytes, text: str) -> None:
        step = self._rate * 2 * self.CHUNK_MS // 1000
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset : offset + step]
            await self.push_frame(
                SpeechOutputAudioRawFrame(audio=chunk, sample_rate=self._rate, num_channels=1)
            )
            self._ledger.add_pcm(chunk, self._rate)
        name = self._ledger.close_segment(text)
        if name:
            await self.push_frame(MarkFrame(name))


async def offer_handoff(session: CallSession, stage: str) -> None:
    """A provider failed twice: hand the caller to a person, or offer a person or a message.

    With speech recognition or the model failing, the conversation cannot be trusted to get the
    caller there: when someone can take the call, the transfer starts at once. Otherwise (or with
    speech synthesis failing) the pre-synthesized offer is played and the caller may still ask
    for a message or a person.
    """
    assert session.faults is not None
    if session.records is not None:
        session.records.put(
            "add_fault", fault=f"{stage}: failed again; offered a person or a message"
        )
    if stage != "tts" and await session.escalation.can_transfer():
        await session.escalate(f"the {stage} provider failed twice", "provider_failure")
        return
    await session.faults.say_clip("fault_offer", remember=True)


class FaultHandler:
    """One call's fault policy. Fed every frame push by the call's observer."""

    def __init__(
        self,
        session: CallSession,
        player: ClipPlayer,
        clips: dict[str, bytes],
        *,
        timeout_secs: float,
        local_tts: bool,
    ) -> None:
        self.session = session
        self.player = player
        self.clips = clips
        floor = LOCAL_TIMEOUT_FLOOR_SECS if local_tts else 0.0
        self.tts_timeout = max(timeout_secs, floor)
        self.strikes: dict[str, int] = {"stt": 0, "llm": 0, "tts": 0}
        self.faults = 0
        self._handled_at: dict[str, float] = {}
        self._retrying: set[str] = set()  # stages whose retry is out: its failure always counts
        self._tts_text = ""
        self._tts_deadline: float | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # --- observation ------------------------------------------------------------------------

    async def on_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, ErrorFrame):
            if data.first_push:
                await self._on_error(frame)
            return
        if data.first_push:
            source = stage_of(data.source)
            if source == "tts" and isinstance(frame, TTSAudioRawFrame):
                self._succeeded("tts")
                self._disarm_tts()
            elif source == "llm" and (
                (isinstance(frame, LLMTextFrame) and frame.text.strip())
                or isinstance(frame, FunctionCallsStartedFrame)
            ):
                self._succeeded("llm")
            elif source == "stt" and isinstance(frame, TranscriptionFrame) and frame.text.strip():
                self._succeeded("stt")
            elif isinstance(frame, InterruptionFrame):
                self._disarm_tts()

    def tts_input(self, frame: Frame) -> None:
        """A frame is on its way down into the TTS (told by the processor before it)."""
        self._watch_tts_input(frame)

    def _succeeded(self, stage: str) -> None:
        self.strikes[stage] = 0
        self._retrying.discard(stage)

    def _watch_tts_input(self, frame: Frame) -> None:
        if isinstance(frame, TTSSpeakFrame):
            self._tts_text += f" {frame.text}"
            self._arm_tts()
        elif isinstance(frame, TextFrame) and not isinstance(frame, TranscriptionFrame):
            self._tts_text += frame.text
            if self._tts_text.rstrip().endswith(_SENTENCE_END):
                self._arm_tts()
        elif isinstance(frame, LLMFullResponseEndFrame) and self._tts_text.strip():
            self._arm_tts()

    def _arm_tts(self) -> None:
        if not any(ch.isalnum() for ch in self._tts_text):
            return  # punctuation alone may rightly produce no audio
        if self._tts_deadline is None:
            self._tts_deadline = time.monotonic() + self.tts_timeout
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._tts_watchdog())

    def _disarm_tts(self) -> None:
        self._tts_text = ""
        self._tts_deadline = None

    async def _tts_watchdog(self) -> None:
        while self._tts_deadline is not None:
            left = self._tts_deadline - time.monotonic()
            if left > 0:
                await asyncio.sleep(left)
                continue
            text = self._tts_text.strip()
            self._disarm_tts()
            detail = f"no audio within {self.tts_timeout:g}s"
            await self.fault("tts", detail, retry_text=text, timeout=True)
            return

    async def _on_error(self, frame: ErrorFrame) -> None:
        stage = stage_of(frame.processor)
        if stage is None:
            self._record(f"pipeline: {frame.error}")
            return
        usable = bool(getattr(frame.processor, "is_usable", True))
        retry_text = ""
        if stage == "tts" and self._counts(stage):
            retry_text = self._tts_text.strip()
            self._disarm_tts()  # this incident is answered now, not again by the watchdog
        await self.fault(stage, str(frame.error), retryable=usable, retry_text=retry_text)

    # --- policy -----------------------------------------------------------------------------

    async def fault(
        self,
        stage: str,
        detail: str,
        *,
        retryable: bool = True,
        retry_text: str = "",
        timeout: bool = False,
    ) -> None:
        """Record a provider fault and answer it according to the stage's strikes; ``timeout``:
        the provider went silent (counted apart from errors in the metrics)."""
        self.faults += 1
        self._record(f"{stage}: {detail}")
        said = detail.lower()  # the vendor clients' own words for a stall
        metrics.provider_fault(stage, timeout=timeout or "timed out" in said or "timeout" in said)
        if stage == "tts":
            # It produced no audio: the bot is not speaking (a goodbye must not wait for it).
            self.session.bot_speaking = False
        if not self._counts(stage):
            return
        self._handled_at[stage] = time.monotonic()
        self._retrying.discard(stage)
        if not retryable:
            self.strikes[stage] = max(self.strikes[stage], 1)
        self.strikes[stage] += 1
        strike = self.strikes[stage]
        call_sid = self.session.info.call_sid
        logger.warning(f"call {call_sid}: {stage} fault #{strike}: {detail}")
        if self.session.ending:
            return
        if strike == 1:
            if stage == "stt":
                await self.say_clip("apology")
                self._record("stt: apologised and asked the caller to repeat")
                return
            await self.say_clip("apology_wait")
            pipe = self.session.pipe
            if stage == "llm" and pipe is not None:
                self._record("llm: apologised; retrying the request once")
                self._retrying.add(stage)
                await pipe.rerun_llm()
            elif stage == "tts" and retry_text and pipe is not None:
                # Not marked as retrying: the first attempt's late errors belong to this incident;
                # the retry's failure shows as the watchdog firing again, after the debounce.
                self._record("tts: apologised; retrying the sentence once")
                await pipe.speak(retry_text)
            else:
                self._record(f"{stage}: apologised")
        elif strike == 2:
            await offer_handoff(self.session, stage)
        else:
            self._record(f"{stage}: still failing; ending the call politely")
            await self.session.end_politely("fault_goodbye", Outcome.PROVIDER_FAULT)

    def _counts(self, stage: str) -> bool:
        """Whether a fault now is a new incident: the retry's own failure always is; otherwise
        faults of one stage within DEBOUNCE_SECS are one (a TTS that errors and times out)."""
        if stage in self._retrying:
            return True
        return time.monotonic() - self._handled_at.get(stage, -math.inf) >= DEBOUNCE_SECS

    async def say_clip(self, name: str, *, remember: bool = False) -> None:
        """Play a pre-synthesized phrase (falling back to the TTS if there is no clip) and record
        it as a bot turn; ``remember`` also puts it in the LLM's context."""
        text = phrases()[name]
        pcm = self.clips.get(name)
        if pcm:
            await self.player.play(pcm, text)
        elif self.session.pipe is not None:
            await self.session.pipe.speak(text)
        if self.session.records is not None:
            self.session.records.put(
                "add_turn", role="bot", text=text, timings={"fixed_phrase": 1.0, "clip": 1.0}
            )
        if remember and self.session.pipe is not None:
            self.session.pipe.remember(text)

    def _record(self, fault: str) -> None:
        if self.session.records is not None:
            self.session.records.put("add_fault", fault=fault)

    async def close(self) -> None:
        self._disarm_tts()
        if self._watchdog is not None and not self._watchdog.done():
            self._watchdog.cancel()
