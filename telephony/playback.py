"""What the caller actually heard: bot speech segments matched to Twilio mark acknowledgements.

Pure bookkeeping, no I/O. The pipeline calls :meth:`PlaybackLedger.add_pcm` (or
:meth:`~PlaybackLedger.add_audio` when it has only a duration) for every bot audio chunk it
sends, :meth:`close_segment` with the text that audio spoke (which returns the mark name to send
after it), :meth:`acknowledge` when Twilio echoes a mark back (the audio before
it has played), and :meth:`interrupt` on barge-in to learn what was heard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Bot audio quieter than this (16-bit peak, about -36 dBFS) is the silence around the words.
SPEECH_LEVEL = 500


@dataclass
class Segment:
    name: str
    text: str
    duration_ms: float
    acked_at: float | None = None
    # Where the words are inside the segment's audio (ms from its start). A TTS pads each
    # sentence with silence; the words are all heard once the audio up to ``speech_end_ms``
    # has played, even though the mark after the trailing silence has not come back yet.
    speech_start_ms: float = 0.0
    speech_end_ms: float | None = None


class PlaybackLedger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._segments: list[Segment] = []
        self._pending_ms = 0.0
        self._pending_speech: tuple[float, float] | None = None  # words within the pending audio
        self._counter = 0
        self._playing_since: float | None = None

    @property
    def closed_segments(self) -> int:
        """How many segments were ever closed (not reset by an interruption)."""
        return self._counter

    @property
    def outstanding(self) -> int:
        """Segments sent whose mark has not come back yet (audio still queued at Twilio)."""
        return sum(1 for s in self._segments if s.acked_at is None)

    def add_audio(self, duration_ms: float) -> None:
        """Bot audio of ``duration_ms`` was sent; all of it counts as speech."""
        self._add(duration_ms, (0.0, duration_ms))

    def add_pcm(self, pcm: bytes, rate: int) -> None:
        """Bot audio (16-bit mono PCM at ``rate``) was sent; its silent edges are not speech."""
        samples = np.abs(np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32))
        loud = np.flatnonzero(samples > SPEECH_LEVEL)
        speech = None
        if len(loud):
            speech = (float(loud[0]) * 1000.0 / rate, float(loud[-1] + 1) * 1000.0 / rate)
        self._add(len(samples) * 1000.0 / rate, speech)

    def _add(self, duration_ms: float, speech: tuple[float, float] | None) -> None:
        if self._playing_since is None and not self._segments:
            self._playing_since = self._clock()
        if speech is not None:
            start, end = self._pending_ms + speech[0], self._pending_ms + speech[1]
            if self._pending_speech is not None:
                start = self._pending_speech[0]
            self._pending_speech = (start, end)
        self._pending_ms += duration_ms

    def close_segment(self, text: str) -> str | None:
        """Close the audio sent since the last segment as one spoken text; returns its mark name."""
        if self._pending_ms <= 0 and not text.strip():
            return None
        self._counter += 1
        name = f"seg-{self._counter}"
        start, end = self._pending_speech or (0.0, self._pending_ms)
        self._segments.append(
            Segment(name, text.strip(), self._pending_ms, speech_start_ms=start, speech_end_ms=end)
        )
        self._pending_ms = 0.0
        self._pending_speech = None
        return name

    def acknowledge(self, name: str) -> bool:
        """Twilio played everything up to mark ``name``; returns False for an unknown mark."""
        names = [segment.name for segment in self._segments]
        if name not in names:
            return False
        now = self._clock()
        for segment in self._segments[: names.index(name) + 1]:
            if segment.acked_at is None:
                segment.acked_at = now
        return True

    def heard_text(self) -> str:
        """Text heard so far: acknowledged segments, plus the spoken share of the next one
        (its words spread evenly over the span of its audio that holds speech)."""
        heard: list[str] = []
        last_ack: float | None = self._playing_since
        for segment in self._segments:
            if segment.acked_at is not None:
                heard.append(segment.text)
                last_ack = segment.acked_at
                continue
            if last_ack is not None and segment.duration_ms > 0:
                played_ms = (self._clock() - last_ack) * 1000.0
                end = segment.speech_end_ms
                end = segment.duration_ms if end is None else end
                span = end - segment.speech_start_ms
                spoken = played_ms - segment.speech_start_ms
                fraction = 1.0 if span <= 0 else max(0.0, min(1.0, spoken / span))
                words = segment.text.split()
                count = int(len(words) * fraction)
                if count:
                    heard.append(" ".join(words[:count]))
            break
        return " ".join(t for t in heard if t)

    def interrupt(self) -> tuple[str, bool]:
        """Barge-in: returns (heard text, whether anything was cut off) and starts afresh."""
        cut_off = self.outstanding > 0 or self._pending_ms > 0
        heard = self.heard_text()
        self.reset()
        return heard, cut_off

    def reset(self) -> None:
        self._segments.clear()
        self._pending_ms = 0.0
        self._pending_speech = None
        self._playing_since = None
