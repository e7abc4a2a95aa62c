"""End-of-turn decisions: wait briefly after a finished sentence, longer after an unfinished one,
and start the reply while waiting.

Callers pause inside phone numbers ("five five five ... zero one four two"), names ("it's
Maria ... Gonzalez") and dates ("on the ... twentieth"). A fixed short silence cuts them off; a
long one makes every plain sentence feel slow. So the pause we wait for after the VAD stops
depends on the words so far (:func:`sounds_unfinished`) and on how the voice sounds (smart-turn,
agent.turn_audio, as a veto only); :class:`PhraseAwareTurnStopStrategy` applies both. When the
words sound finished it starts the reply at once, held back until the turn is confirmed (pipecat's
speculative replies), so the wait costs the caller nothing when they are done.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    DataFrame,
    EagerEndOfTurnCancelFrame,
    ErrorFrame,
    Frame,
    FunctionCallFromLLM,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop.eager_match_policy import NormalizedMatch
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)

from agent.settings import Settings
from agent.turn_audio import CallerAudio, TurnAudioModel

_DIGIT_WORDS = {
    "zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "double", "triple",
}  # fmt: skip
_TRAILING_INCOMPLETE = {
    # conjunctions, prepositions, articles, possessives, fillers, copulas
    "and", "or", "but", "so", "because", "then", "the", "a", "an", "at", "on", "in", "for", "to",
    "from", "with", "of", "my", "your", "our", "is", "it's", "its", "am", "are", "was", "be",
    "um", "uh", "er", "erm", "hmm", "like", "maybe", "around", "about", "by", "next", "this",
    "that", "if", "i", "i'm", "i'd", "we", "name's", "number's", "want", "need", "would",
    "could", "can", "just", "also", "actually", "let", "lets", "let's", "book", "um,",
    "under", "into", "than", "as", "via", "until", "till", "between", "regarding", "thinking",
    "wondering",
}  # fmt: skip
# "me" alone ends finished sentences ("works for me."); after these verbs more is coming.
# "you" too ("thank you"), but not after a question's auxiliary ("what time do you").
_TRAILING_PAIRS = {
    "let me", "give me", "tell me", "show me", "me see", "me think", "hang on", "hold on",
    "do you", "can you", "could you", "would you", "will you", "are you", "did you", "have you",
    "do we", "can we", "is there", "are there",
}  # fmt: skip
_LEAD_INS = re.compile(
    r"\b((my|the) (phone |cell |mobile |first |last |full )?(number|name|email)( is|'s)?|"
    r"it'?s|call me( at| on)?|spelled|that'?s)\s*$"
)
_AUXILIARIES = {"is", "are", "do", "does", "can", "could", "will", "would", "did", "have", "has"}
# A name given after a lead-in ("my name is Maria", "it's Anna"): a surname or a spelling may
# follow, or nothing. Letters spelled out ("K O W"): more letters may follow, or none.
_NAME_GIVEN = re.compile(r"\b((my|the) (first |last |full )?name( is|'s)|it'?s) [a-z']+$")
_LETTERS = re.compile(r"(\b[a-z]\b\W*){3,}$")
_EMAIL_TOPIC = re.compile(r"\be-?mail\b")


def _digit_run(words: list[str]) -> int:
    """How many phone digits the utterance ends with (spoken or written)."""
    count = 0
    for word in reversed(words):
        token = word.strip(".,-")
        if token.isdigit():
            count += len(token)
        elif token in _DIGIT_WORDS:
            count += 1 if token not in ("double", "triple") else 0
        elif token == "":
            continue
        else:
            break
    return count


_NUMBER_TOPIC = re.compile(r"\b(phone|number|cell|mobile|call ?back|reach me)\b")


def _digits_since_number_topic(bare: str) -> int | None:
    """Digits given since the caller started on a phone number, or None if they did not."""
    topics = list(_NUMBER_TOPIC.finditer(bare))
    if not topics:
        return None
    tail = re.findall(r"[a-z0-9']+", bare[topics[-1].end() :])
    count = 0
    for word in tail:
        if word.isdigit():
            count += len(word)
        elif word in _DIGIT_WORDS and word not in ("double", "triple"):
            count += 1
    return count


def sounds_unfinished(text: str) -> bool:
    """True when the words so far suggest the caller is mid-thought (number, name, list, clause)."""
    cleaned = text.strip().lower()
    if not cleaned:
        return False
    if cleaned.endswith((",", "...", "…", "-", "—", " and", " or")):
        return True
    bare = cleaned.rstrip(".!?")
    words = re.findall(r"[a-z0-9']+|\d+", bare)
    if not words:
        return False
    digits = _digit_run(words)
    if 0 < digits < 10 and (digits >= 3 or _LEAD_INS.search(" ".join(words[:-digits]))):
        return True  # a phone number still being read out
    given = _digits_since_number_topic(bare)
    if given is not None and 0 < given < 10 and _digit_run(words) > 0:
        return True  # "my number is 413 ... 555": fewer digits than a phone number has
    trailing = words[-1] in _TRAILING_INCOMPLETE or " ".join(words[-2:]) in _TRAILING_PAIRS
    if trailing and not cleaned.endswith("?"):
        return True
    if len(words) <= 2 and words[0] in _AUXILIARIES and not cleaned.endswith("?"):
        return True  # "Is Maria ...": a question with no verb yet
    return bool(_LEAD_INS.search(bare)) or _email_unfinished(bare)


def _email_unfinished(bare: str) -> bool:
    """An email address being given has no "at" or no "dot" yet."""
    topic = list(_EMAIL_TOPIC.finditer(bare))
    if not topic:
        return False
    tail = bare[topic[-1].end() :]
    return not (re.search(r"\bat\b|@", tail) and re.search(r"\bdot\b|\.\w", tail))


def might_go_on(text: str) -> bool:
    """True when the words may be finished but often are not: a one-word name after a lead-in
    ("my name is Maria"), letters being spelled ("K O W"). Worth a longer wait than a plain
    sentence, shorter than :func:`sounds_unfinished`'s."""
    bare = text.strip().lower().rstrip(".!?,")
    return bool(_NAME_GIVEN.search(bare) or _LETTERS.search(bare))


class SegmentTranscribedFrame(DataFrame):
    """A segmented STT finished one VAD segment (with or without words)."""


LEAD_IN_SECS = 0.7  # audio kept from before a turn starts (the VAD reports speech 0.2 s late)


class PhraseAwareTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's speech-timeout strategy, deciding on the words said and the voice saying them.

    - After a finished-sounding sentence it waits ``pause_secs`` from the end of speech; after
      words that sound unfinished (:func:`sounds_unfinished`) ``unfinished_pause_secs``, so a
      caller who pauses inside a number or a name is not cut off; after words that often go on
      (:func:`might_go_on`: a one-word name, letters spelled) ``audio_pause_secs``.
    - With ``audio_model`` (smart-turn) the caller's audio this turn is scored once per VAD stop,
      off the event loop. A score under ``audio_threshold`` stretches a finished-sounding wait
      to ``audio_pause_secs``: the voice can only make it wait longer, never end a turn. A score
      still being computed when the wait is over is waited for (at most
      ``max_audio_wait_secs`` after the stop).
    - With a segmented STT (one transcription per VAD segment, e.g. local Whisper) it never ends
      a turn on stale words: it waits until the newest segment is transcribed (at most
      ``max_transcript_wait_secs``), since those words decide whether the caller is done.
    - With ``speculate``, as soon as the newest words are in and sound finished the reply is
      started on them (pipecat's speculative inference: the LLM service holds the response
      until the turn is confirmed). The caller speaking again, or other words at the end,
      withdraws it: nothing is spoken and nothing reaches the context. The turn ending on the
      same words releases it, without a second inference.
    """

    def __init__(
        self,
        *,
        pause_secs: float,
        unfinished_pause_secs: float,
        segmented_stt: bool = False,
        max_transcript_wait_secs: float = 4.0,
        audio_model: TurnAudioModel | None = None,
        audio_threshold: float = 0.7,
        audio_pause_secs: float = 1.5,
        max_audio_wait_secs: float = 1.0,
        speculate: bool = False,
    ) -> None:
        super().__init__(user_speech_timeout=pause_secs)
        self._pause_secs = pause_secs
        self._unfinished_pause_secs = unfinished_pause_secs
        self._segmented = segmented_stt
        self._max_wait = max_transcript_wait_secs
        self._stops = 0
        self._results = 0
        self._stopped_at = 0.0
        self._audio_model = audio_model if audio_threshold > 0 else None
        self._audio_threshold = audio_threshold
        self._audio_pause_secs = audio_pause_secs
        self._max_audio_wait = max_audio_wait_secs
        self._audio = CallerAudio()
        self._audio_task: asyncio.Task[None] | None = None
        self.audio_score: float | None = None  # smart-turn's verdict on the latest stop
        self._speculate = speculate
        self._speculation: UserTurnSpeculation | None = None
        self._speculated: str | None = None  # words answered since the caller last spoke
        self._match = NormalizedMatch()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        self._take_note(frame)
        result = await super().process_frame(frame)
        if isinstance(frame, SegmentTranscribedFrame):
            self._results += 1
            if not self._vad_user_speaking and self._user_speech_wait_done:
                await self._maybe_trigger_user_turn_stopped()
        if isinstance(frame, (TranscriptionFrame, SegmentTranscribedFrame)):
            await self._maybe_speculate()
        return result

    def _take_note(self, frame: Frame) -> None:
        """What a frame tells us before the base strategy handles it."""
        if isinstance(frame, InputAudioRawFrame) and self._audio_model is not None:
            self._audio.add(frame.audio, frame.sample_rate)
        elif isinstance(frame, TranscriptionFrame) and self._text and frame.text:
            if not self._text.endswith(" ") and not frame.text.startswith(" "):
                self._text += " "  # segments are words apart, not glued together
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            self._speculation = None  # withdrawn by the LLM service (a tool call, say)

    async def handle_user_turn_started(self) -> None:
        await super().handle_user_turn_started()
        self._audio.trim(LEAD_IN_SECS)

    async def _discard_pending_end_of_turn(self) -> None:
        """The caller spoke again, or a turn boundary: a reply started early is withdrawn."""
        await super()._discard_pending_end_of_turn()
        await self._withdraw("the caller went on")
        self._speculated = None
        self.audio_score = None
        if self._audio_task is not None:
            task, self._audio_task = self._audio_task, None
            await self.task_manager.cancel_task(task)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._stops += 1
        self._stopped_at = time.monotonic()
        # A transcript already in hand belongs to an earlier segment, not this one.
        self._transcript_finalized = False
        self._score_audio()
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_speculate()

    # --- the voice's verdict ----------------------------------------------------------------

    def _score_audio(self) -> None:
        """Ask smart-turn about the audio so far, once for this stop, on a worker thread."""
        self.audio_score = None
        if self._audio_model is None or self._audio.seconds < 0.3:
            return
        self._audio_task = self.task_manager.create_task(
            self._run_audio_model(self._audio_model, self._audio.pcm(), self._audio.rate),
            f"{self}::_run_audio_model",
        )

    async def _run_audio_model(self, model: TurnAudioModel, pcm: bytes, rate: int) -> None:
        started = time.perf_counter()
        try:
            score = await asyncio.to_thread(model.completion, pcm, rate)
        except Exception as exc:  # a broken veto must not hold the turn
            logger.warning(f"smart-turn failed, no audio veto this time: {exc}")
            score = 1.0
        self._audio_task = None
        self.audio_score = score
        logger.debug(f"smart-turn: {score:.2f} in {(time.perf_counter() - started) * 1000:.0f} ms")
        if not self._vad_user_speaking and self._user_speech_wait_done:
            await self._maybe_trigger_user_turn_stopped()

    # --- when the turn ends -----------------------------------------------------------------

    def _wait_secs(self, since_stop: float) -> float | None:
        """How long after the VAD stop this turn may end; None: ask again once the voice's
        verdict is in."""
        if self._text and sounds_unfinished(self._text):
            return self._unfinished_pause_secs
        if self._text and might_go_on(self._text):
            return max(self._pause_secs, self._audio_pause_secs)
        if self._audio_task is not None and since_stop < self._max_audio_wait:
            return None
        if self.audio_score is not None and self.audio_score < self._audio_threshold:
            return max(self._pause_secs, self._audio_pause_secs)
        return self._pause_secs

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        if self._vad_user_speaking:
            return
        since_stop = time.monotonic() - self._stopped_at
        if self._segmented and self._results < self._stops and since_stop < self._max_wait:
            return  # the newest words are still being transcribed
        wait = self._wait_secs(since_stop)
        if wait is None:
            return  # the voice's verdict calls us again
        remaining = wait - since_stop
        if remaining > 0.05:
            self._user_speech_timeout = remaining
            await self._restart_user_speech_timer()
            self._user_speech_timeout = self._pause_secs
            return
        await super()._maybe_trigger_user_turn_stopped()

    async def trigger_user_turn_stopped(
        self, *, enable_user_speaking_frames: bool | None = None
    ) -> None:
        """End the turn: with the reply started early when it answered these very words."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None and self._match.matches(speculation.text, self._text):
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames,
                confirms_speculation=True,
            )
            return
        if speculation is not None:
            logger.debug(f"{self}: words changed, early reply to {speculation.text!r} withdrawn")
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    # --- the reply started early ------------------------------------------------------------

    async def _maybe_speculate(self) -> None:
        """Start the reply on the newest words if they sound finished and are not answered yet."""
        if not self._speculate or self._vad_user_speaking or not self._vad_stopped:
            return
        if not self._text or (self._segmented and self._results < self._stops):
            return  # the newest words are not in yet
        if self._speculated is not None and self._match.matches(self._speculated, self._text):
            return  # these words are answered already (or the LLM declined to answer early)
        await self._withdraw("the words changed")
        if sounds_unfinished(self._text):
            return
        self._speculated = self._text
        self._speculation = UserTurnSpeculation(text=self._text)
        logger.debug(f"{self}: starting the reply early on {self._text!r}")
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _withdraw(self, why: str) -> None:
        if self._speculation is None:
            return
        logger.debug(f"{self}: {why}, early reply to {self._speculation.text!r} withdrawn")
        self._speculation = None
        await self.trigger_user_turn_speculation_cancelled()


class ToolCallsAfterTurn(LLMService):
    """An LLM service whose reply started before the caller's turn ended (see
    :class:`PhraseAwareTurnStopStrategy`) makes its tool calls only once the turn is confirmed.

    pipecat's own answer is to withdraw such a reply and ask again after the turn; here the
    call waits for the turn to end instead, so the work done early is kept. A reply withdrawn
    meanwhile is cancelled while it waits (pipecat cancels the service's request).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn_over = asyncio.Event()

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if isinstance(frame, ErrorFrame) and self._speculation_gate.is_speculating:
            # An early reply failed: the fault is the confirmed turn's (its retry must see the
            # caller's words in the context), or nobody's if the reply is withdrawn meanwhile
            # (pipecat cancels the request, and this wait with it).
            self._turn_over.clear()
            await self._turn_over.wait()
        await super().push_frame(frame, direction)
        if not self._speculation_gate.is_speculating:
            self._turn_over.set()  # the turn ended, or the early reply was withdrawn

    async def run_function_calls(self, function_calls: Sequence[FunctionCallFromLLM]) -> None:
        if self._speculation_gate.is_speculating:
            self._turn_over.clear()
            await self._turn_over.wait()
        await super().run_function_calls(function_calls)


def stop_strategy(
    settings: Settings, *, audio_model: TurnAudioModel | None, segmented_stt: bool
) -> PhraseAwareTurnStopStrategy:
    """The end-of-turn strategy a call uses, from the settings."""
    return PhraseAwareTurnStopStrategy(
        pause_secs=settings.turn_pause_secs,
        unfinished_pause_secs=settings.turn_pause_incomplete_secs,
        segmented_stt=segmented_stt,
        audio_model=audio_model,
        audio_threshold=settings.turn_audio_threshold,
        audio_pause_secs=settings.turn_pause_audio_secs,
        speculate=settings.turn_speculate,
    )
