"""End-of-turn decisions: wait briefly after a finished sentence, longer after an unfinished one.

Callers pause inside phone numbers ("five five five ... zero one four two"), names ("it's
Maria ... Gonzalez") and dates ("on the ... twentieth"). A fixed short silence cuts them off; a
long one makes every plain sentence feel slow. So the pause we wait for after the VAD stops
depends on the words so far: :func:`sounds_unfinished` decides, the strategy applies it.
"""

from __future__ import annotations

import re
import time

from pipecat.frames.frames import TranscriptionFrame, VADUserStoppedSpeakingFrame
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
    "that", "if", "i", "i'm", "i'd", "we", "name's", "number's", "me", "want", "need", "would",
    "could", "can", "just", "also", "actually", "let", "lets", "let's", "book", "um,",
}  # fmt: skip
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
    if words[-1] in _TRAILING_INCOMPLETE and not cleaned.endswith("?"):
        return True
    return bool(_LEAD_INS.search(bare))


class PhraseAwareTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's speech-timeout strategy with a pause chosen by :func:`sounds_unfinished`."""

    def __init__(self, *, pause_secs: float, unfinished_pause_secs: float) -> None:
        super().__init__(user_speech_timeout=pause_secs)
        self._pause_secs = pause_secs
        self._unfinished_pause_secs = unfinished_pause_secs
        self._vad_stopped_at: float | None = None

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._vad_stopped_at = time.monotonic()
        self._user_speech_timeout = self._pause_secs
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        if sounds_unfinished(self._text + " " + frame.text) and not self._vad_user_speaking:
            elapsed = time.monotonic() - (self._vad_stopped_at or time.monotonic())
            self._user_speech_timeout = max(0.2, self._unfinished_pause_secs - elapsed)
            await self._restart_user_speech_timer()
            self._user_speech_timeout = self._pause_secs
        await super()._handle_transcription(frame)
