"""Plays a recording into an STT service in real time, behind the real Silero VAD, and notes
what comes out and when: the interim transcripts, the final one, and how long after the VAD's
stop the final came. Shared by tests/test_whisper_stream.py and ``python -m bench.stt``.

Also the recordings' common measure: :func:`word_error_rate` over normalised words.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from agent.turns import SegmentTranscribedFrame
from telephony import codec
from telephony.audio import resample_pcm16

FRAME_SECS = 0.02


def phone_band(pcm16k: bytes, rate: int = 8000) -> bytes:
    """16 kHz PCM as a phone line delivers it: ``rate`` PCM that went through mu-law."""
    return codec.ulaw_to_pcm16(codec.pcm16_to_ulaw(resample_pcm16(pcm16k, 16000, rate)))


_NUMBERS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_SAME = {"ok": "okay", "alright": "all right", "haircut": "hair cut", "colour": "color"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, digits one by one and as digits ("four one three" and
    "413" agree), "2pm" as "2 p.m.", "20th" as "20", a few spellings merged; what both
    recognisers are scored on."""
    text = text.lower().replace("-", " ").replace("’", "'")
    text = re.sub(r"(?<![a-z])([ap])\.? ?m\b\.?", r" \1m", text)  # "2 p.m.", "2pm" -> "2 pm"
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)  # "20th" -> "20"
    for same, canonical in _SAME.items():
        text = re.sub(rf"\b{same}\b", canonical, text)
    out: list[str] = []
    for word in re.findall(r"[a-z0-9']+", text):
        word = _NUMBERS.get(word, word)
        out.extend(list(word) if word.isdigit() else [word.strip("'")])
    return [w for w in out if w]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) between two texts."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            current = min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
            previous, row[j] = row[j], current
    return row[len(hyp)], len(ref)


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER in percent over (reference, hypothesis) pairs."""
    errors = total = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors, total = errors + e, total + n
    return 100.0 * errors / max(1, total)


@dataclass
class Heard:
    """What an STT service made of one recording."""

    interims: list[tuple[float, str]] = field(default_factory=list)  # (secs from start, text)
    finals: list[str] = field(default_factory=list)
    final_after_stop_ms: list[float] = field(default_factory=list)  # per segment with words
    segments: int = 0  # VAD segments transcribed (with words or without)
    order: list[str] = field(default_factory=list)  # "interim" / "final", as they came

    @property
    def text(self) -> str:
        return " ".join(self.finals)


class _Ear(FrameProcessor):
    """After the STT: notes its output and the VAD's stops, with times."""

    def __init__(self, heard: Heard, started: float) -> None:
        super().__init__()
        self._heard = heard
        self._started = started
        self._stopped_at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        heard = self._heard
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._stopped_at = now
        elif isinstance(frame, InterimTranscriptionFrame):
            heard.interims.append((now - self._started, frame.text))
            heard.order.append("interim")
        elif isinstance(frame, TranscriptionFrame):
            heard.finals.append(frame.text)
            heard.order.append("final")
            if self._stopped_at is not None:
                heard.final_after_stop_ms.append((now - self._stopped_at) * 1000)
        elif isinstance(frame, SegmentTranscribedFrame):
            heard.segments += 1
        await self.push_frame(frame, direction)


async def listen(
    stt: FrameProcessor, vad: VADAnalyzer, pcm: bytes, rate: int, tail_secs: float = 1.0
) -> Heard:
    """Play ``pcm`` (16-bit mono at ``rate``) into VAD -> ``stt`` in 20 ms frames in real
    time, then ``tail_secs`` of silence; return what came out once every segment is done."""
    heard = Heard()
    ear = _Ear(heard, time.monotonic())
    worker = PipelineWorker(
        Pipeline([VADProcessor(vad_analyzer=vad), stt, ear]),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    step = int(rate * FRAME_SECS) * 2
    audio = pcm + bytes(int(rate * tail_secs) * 2)

    running = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: object, _frame: object) -> None:
        running.set()

    async def play() -> None:
        await asyncio.wait_for(running.wait(), timeout=10)  # processors drop frames before it
        started = time.monotonic()
        for n, i in enumerate(range(0, len(audio) - step + 1, step)):
            await asyncio.sleep(max(0.0, started + n * FRAME_SECS - time.monotonic()))
            frame = InputAudioRawFrame(audio=audio[i : i + step], sample_rate=rate, num_channels=1)
            await worker.queue_frame(frame)
        await worker.queue_frame(EndFrame())  # the STT finishes its queued segments first

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), play())
    return heard
