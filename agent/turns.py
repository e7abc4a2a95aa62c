"""End-of-turn decisions: wait briefly after a finished sentence, longer after an unfinished one.

Callers pause inside phone numbers ("five five five ... zero one four two"), names ("it's
Maria ... Gonzalez") and dates ("on the ... twentieth"). A fixed short silence cuts them off; a
long one makes every plain sentence feel slow. So the pause we wait for after the VAD stops
depends on the words so far: :func:`sounds_unfinished` decides, the strategy applies it.
"""

from __future__ import annotations

import re
import time

from pipecat.frames.frames import DataFrame, Frame, VADUserStoppedSpeakingFrame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)

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
}  # fmt: skip
# "me" alone ends finished sentences ("works for me."); after these verbs more is coming.
_TRAILING_PAIRS = {"let me", "give me", "tell me", "show me"}
_LEAD_INS = re.compile(
    r"\b(my (phone |cell |mobile )?(number|name|email)( is|'s)?|it'?s|call me( at| on)?|"
    r"spelled|that'?s)\s*$"
)


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
    return bool(_LEAD_INS.search(bare))


class SegmentTranscribedFrame(DataFrame):
    """A segmented STT finished one VAD segment (with or without words)."""


class PhraseAwareTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's speech-timeout strategy, deciding on the words actually said.

    - After a finished-sounding sentence it waits ``pause_secs``; after words that sound
      unfinished (see :func:`sounds_unfinished`) it waits ``unfinished_pause_secs`` from the end
      of speech, so a caller who pauses inside a number or a name is not cut off.
    - With a segmented STT (one transcription per VAD segment, e.g. local Whisper) it never ends
      a turn on stale words: it waits until the newest segment is transcribed (at most
      ``max_transcript_wait_secs``), since those words decide whether the caller is done.
    """

    def __init__(
        self,
        *,
        pause_secs: float,
        unfinished_pause_secs: float,
        segmented_stt: bool = False,
        max_transcript_wait_secs: float = 4.0,
    ) -> None:
        super().__init__(user_speech_timeout=pause_secs)
        self._pause_secs = pause_secs
        self._unfinished_pause_secs = unfinished_pause_secs
        self._segmented = segmented_stt
        self._max_wait = max_transcript_wait_secs
        self._stops = 0
        self._results = 0
        self._stopped_at = 0.0

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        result = await super().process_frame(frame)
        if isinstance(frame, SegmentTranscribedFrame):
            self._results += 1
            if not self._vad_user_speaking and self._user_speech_wait_done:
                await self._maybe_trigger_user_turn_stopped()
        return result

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._stops += 1
        self._stopped_at = time.monotonic()
        # A transcript already in hand belongs to an earlier segment, not this one.
        self._transcript_finalized = False
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        if self._vad_user_speaking:
            return
        since_stop = time.monotonic() - self._stopped_at
        if self._segmented and self._results < self._stops and since_stop < self._max_wait:
            return  # the newest words are still being transcribed
        if self._text and sounds_unfinished(self._text):
            remaining = self._unfinished_pause_secs - since_stop
            if remaining > 0.05:
                self._user_speech_timeout = remaining
                await self._restart_user_speech_timer()
                self._user_speech_timeout = self._pause_secs
                return
        await super()._maybe_trigger_user_turn_stopped()
