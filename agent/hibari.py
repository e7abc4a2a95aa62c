"""The local TTS: hibari as a pipecat service, sharing one loaded model between calls.

hibari synthesizes one array per sentence with ~0.25-0.33 s of silence before the speech and
~0.35-0.5 s after it. Sent as is, the leading silence is heard as that much extra delay before
every reply, and a reply spoken in pieces (first clause, then sentences) would pause for the
sum of both between pieces. :func:`trim_silence` keeps a short margin on either side, faded so
the cut is inaudible; speech itself is never shortened.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import numpy.typing as npt
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language

from agent.clauses import FirstClauseAggregator
from telephony.audio import float_to_pcm16, resample_pcm16
from tools.domain.speech import spoken_text

HIBARI_GAIN = 2.4  # hibari peaks around 0.31 of full scale
#: Below this (hibari's own float scale, about -50 dBFS) a sample is silence. hibari's silence
#: is digital zero or close to it; its quietest speech onsets (fricatives) measured ~0.005.
SILENCE_LEVEL = 0.003
LEAD_SECS = 0.02  # kept before the first audible sample (faded in)
TAIL_SECS = 0.2  # kept after the last one (faded out): the pause between pieces


def trim_silence(
    samples: npt.NDArray[np.floating],
    rate: int,
    *,
    lead_secs: float = LEAD_SECS,
    tail_secs: float = TAIL_SECS,
    level: float = SILENCE_LEVEL,
) -> npt.NDArray[np.float32]:
    """``samples`` from ``lead_secs`` before the first sample louder than ``level`` to
    ``tail_secs`` after the last one. The kept margins are faded in and out linearly; every
    sample from the first audible one to the last is returned unchanged. All-silent input
    comes back empty."""
    audio = np.asarray(samples, dtype=np.float32)
    loud = np.flatnonzero(np.abs(audio) > level)
    if loud.size == 0:
        return audio[:0]
    start = max(0, int(loud[0]) - round(lead_secs * rate))
    end = min(audio.size, int(loud[-1]) + 1 + round(tail_secs * rate))
    out = audio[start:end].copy()
    head = int(loud[0]) - start
    if head:
        out[:head] *= np.linspace(0.0, 1.0, head, endpoint=False, dtype=np.float32)
    tail = end - int(loud[-1]) - 1
    if tail:
        out[out.size - tail :] *= np.linspace(1.0, 0.0, tail, endpoint=False, dtype=np.float32)
    return out


def split_long(text: str) -> list[str]:
    """A long sentence cut at clause punctuation into pieces of at least ~40 characters, so the
    first audio of a long piece comes sooner; short text stays whole."""
    if len(text) <= 90:
        return [text]
    parts = re.split(r"(?<=[;:,])\s+", text)
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) < 40:
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


class HibariTTSService(TTSService):
    """Piece-at-a-time synthesis with the shared hibari model, resampled once per sentence.

    The first clause of each reply is handed over as soon as it sounds natural on its own
    (:class:`agent.clauses.FirstClauseAggregator`), the rest sentence by sentence.
    Synthesis runs in a worker thread under ``lock`` (one synthesis at a time across calls);
    when the reply is cut off (an interruption cancels :meth:`run_tts`), the worker stops
    before its next sentence: no more audio is synthesized for the cut reply.
    """

    def __init__(self, *, hibari: Any, lock: threading.Lock, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="hibari", voice="heart", language=Language.EN),
            **kwargs,
        )
        if hibari is None:
            raise ValueError("hibari TTS not loaded")
        self._hibari = hibari
        self._lock = lock
        # pipecat's own services swap the aggregator the same way (cartesia, rime).
        self._text_aggregator = FirstClauseAggregator()
        self.sentences_synthesized = 0  # by this service so far
        self.worker: threading.Thread | None = None  # the latest synthesis thread

    def can_generate_metrics(self) -> bool:
        return True

    def _synthesize_into(
        self,
        text: str,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[bytes | Exception | None],
    ) -> None:
        """Worker thread: put one PCM buffer per synthesized sentence, then None. The lock is
        taken per sentence, and ``stop`` checked under it: once set, nothing more is
        synthesized."""
        rate = self._hibari.sample_rate
        try:
            for piece in split_long(spoken_text(text)):
                sentences = self._hibari.stream(piece)
                while True:
                    with self._lock:
                        if stop.is_set():
                            return
                        chunk = next(sentences, None)
                    if chunk is None:
                        break
                    self.sentences_synthesized += 1
                    trimmed = trim_silence(chunk, rate)
                    if trimmed.size:
                        pcm = float_to_pcm16(trimmed, HIBARI_GAIN)
                        pcm = resample_pcm16(pcm, rate, self.sample_rate)
                        loop.call_soon_threadsafe(queue.put_nowait, pcm)
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_ttfb_metrics()
        await self.start_tts_usage_metrics(text)
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        stop = threading.Event()
        self.worker = threading.Thread(
            target=self._synthesize_into,
            args=(text, stop, asyncio.get_running_loop(), queue),
            daemon=True,
        )
        self.worker.start()
        first = True
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    yield ErrorFrame(f"local synthesis failed: {item}")
                    break
                if first:
                    await self.stop_ttfb_metrics()
                    first = False
                yield TTSAudioRawFrame(
                    audio=item, sample_rate=self.sample_rate, num_channels=1, context_id=context_id
                )
        finally:
            stop.set()  # cut off (cancelled) or done: the worker synthesizes nothing more
