"""Local speech recognition: Whisper tiny.en (faster-whisper's CTranslate2 model) and the pipecat
STT service over it.

:class:`WhisperRecognizer` owns how audio becomes words. Its main path calls the CTranslate2
model directly on a short window (10 s; 30 s only for audio over ~9 s) instead of the 30 s
window faster-whisper pads every call to, which costs a quarter of the time. A short window
needs care (measured, see the README's Offline models): decode with timestamps, cap the output
at ~8 tokens per second of audio, stop at a segment that starts after the audio ends, jumps
back or repeats an earlier one, and say nothing when the model thinks there is no speech.
The padded faster-whisper transcription stays as :meth:`WhisperRecognizer.transcribe_padded`,
the reference the bench and the tests compare with.

:class:`LocalWhisperSTTService` streams with it: interim transcripts while the caller speaks,
the final one at the VAD stop, usually from a pass that began in the pause after the last word.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from agent.turns import SegmentTranscribedFrame
from telephony.audio import resample_pcm16, rms_dbfs

WHISPER_RATE = 16000
SHORT_WINDOW_SECS = 10
LONG_WINDOW_SECS = 30
SHORT_WINDOW_MAX_AUDIO_SECS = 9.0  # leave the model room after the last word
NO_SPEECH_THRESHOLD = 0.6  # measured: speech <= 0.29, silence and line noise >= 0.94
TOKENS_PER_SECOND = 8
EXTRA_TOKENS = 16
ONSET_SECS = 0.3  # the VAD reports speech this long after it began
PAUSE_SECS = 0.1  # quiet this long after speech: transcribe, it may be the end
COVER_MARGIN_SECS = 0.05  # a pass ending this long after the VAD's speech end heard all of it
MAX_INTERIM_SECS = 28.0  # longer segments are only transcribed at their end

# Whisper's favourite inventions on silence, breath and line noise.
_HALLUCINATIONS = re.compile(
    r"^\s*(thank you\.?|thanks for watching!?\.?|you\.?|bye\.?|\.+|\[.*\]|\(.*\)|♪+.*)\s*$", re.I
)

Audio = npt.NDArray[np.float32]


def pcm_to_audio(pcm: bytes, rate: int) -> Audio:
    """16-bit mono PCM at ``rate`` as Whisper's input: float32 at 16 kHz."""
    pcm16k = resample_pcm16(pcm, rate, WHISPER_RATE)
    usable = pcm16k[: len(pcm16k) - len(pcm16k) % 2]
    return np.frombuffer(usable, dtype="<i2").astype(np.float32) / 32768.0


def _bare(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _audio_dbfs(audio: Audio) -> float:
    return rms_dbfs((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def _likely_invented(text: str, audio: Audio, no_speech_prob: float) -> bool:
    """ "Thank you." and friends are real words on a phone call, unless the audio was too quiet
    to hold them or the model itself doubted there was speech."""
    if not _HALLUCINATIONS.match(text):
        return False
    return _audio_dbfs(audio) < -45.0 or no_speech_prob > 0.3


class WhisperRecognizer:
    """Transcribes 16 kHz float audio with a loaded ``faster_whisper.WhisperModel``.

    Thread-safe: passes run in worker threads, at most as many at once as ``lock`` allows
    (the model was loaded with that many CTranslate2 workers)."""

    def __init__(self, model: Any, lock: threading.Semaphore | None = None) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._model = model
        self._lock = lock or threading.Semaphore(1)
        multilingual = bool(model.model.is_multilingual)
        self._tokenizer = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language="en"
        )
        self._suppress = list(get_suppressed_tokens(self._tokenizer, (-1,)) or [])
        self._prompt = list(self._tokenizer.sot_sequence)
        self._frames_per_sec = int(model.frames_per_second)  # mel frames: 100 a second
        self._time_precision = float(model.time_precision)  # one timestamp token: 0.02 s

    def transcribe(self, audio: Audio, hotwords: str | None = None) -> str:
        """The words in ``audio`` ("" for silence or noise), on the shortest window that holds
        it; audio longer than the long window goes to :meth:`transcribe_padded`. ``hotwords``
        are given to the model as the previous text (names it should expect)."""
        secs = len(audio) / WHISPER_RATE
        if secs > LONG_WINDOW_SECS - 1:
            return self.transcribe_padded(audio, hotwords)
        window = SHORT_WINDOW_SECS if secs <= SHORT_WINDOW_MAX_AUDIO_SECS else LONG_WINDOW_SECS
        from faster_whisper.audio import pad_or_trim

        features = self._model.feature_extractor(audio)
        features = pad_or_trim(features[:, :-1], window * self._frames_per_sec)
        max_new = int(TOKENS_PER_SECOND * secs) + EXTRA_TOKENS
        prompt = self._prompt_for(hotwords)
        with self._lock:
            encoded = self._model.encode(features)
            result = self._model.model.generate(
                encoded,
                [prompt],
                beam_size=1,
                max_length=len(prompt) + max_new,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=self._suppress,
                max_initial_timestamp_index=round(1.0 / self._time_precision),
            )[0]
        if result.no_speech_prob > NO_SPEECH_THRESHOLD:
            return ""
        text = self._text(result.sequences_ids[0], secs)
        if text and _likely_invented(text, audio, result.no_speech_prob):
            logger.debug(f"whisper: dropped {text!r} as a likely hallucination")
            return ""
        return text

    def _prompt_for(self, hotwords: str | None) -> list[int]:
        if not hotwords:
            return self._prompt
        words = self._tokenizer.encode(" " + hotwords.strip())[:100]
        return [self._tokenizer.sot_prev, *words, *self._prompt]

    def _text(self, tokens: list[int], secs: float) -> str:
        """The words of the segments that lie inside the audio, in order. Decoding stops at a
        segment starting after the audio's end or before the previous one's end, or one that
        only repeats the start of an earlier one (the model inventing more on the padding)."""
        begin = self._tokenizer.timestamp_begin
        said: list[str] = []
        pending: list[int] = []
        start: float | None = None
        last_end = 0.0
        for token in tokens:
            if token < begin:
                pending.append(token)
                continue
            at = (token - begin) * self._time_precision
            if start is None:  # a segment opens
                if at > secs or at < last_end - 0.2:
                    break
                start = at
            else:  # a segment closes
                if not self._keep(said, pending):
                    break
                last_end, start = at, None
            pending = []
        if start is not None:
            self._keep(said, pending)  # the cap cut the last segment short: keep its words
        return " ".join(said).strip()

    def _keep(self, said: list[str], tokens: list[int]) -> bool:
        """Add a segment's text to ``said`` unless it repeats the start of one already there."""
        text = self._tokenizer.decode(tokens).strip()
        bare = _bare(text)
        if bare and any(_bare(earlier).startswith(bare) for earlier in said):
            return False
        if text:
            said.append(text)
        return True

    def transcribe_padded(self, audio: Audio, hotwords: str | None = None) -> str:
        """faster-whisper's own transcription (every call padded to 30 s): the reference."""
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                best_of=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
                hotwords=hotwords or None,
            )
            segments = list(segments)
        # Whisper's own rule: a segment is silence when it is both likely no-speech and
        # improbable; a very repetitive one is a hallucination loop.
        kept = [
            s
            for s in segments
            if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0) and s.compression_ratio < 2.4
        ]
        text = " ".join(s.text.strip() for s in kept).strip()
        doubt = max((s.no_speech_prob for s in kept), default=0.0)
        if text and _likely_invented(text, audio, doubt):
            logger.debug(f"whisper: dropped {text!r} as a likely hallucination")
            return ""
        return text

    def warm_up(self) -> None:
        """Allocate CTranslate2's buffers for both windows now, not on a call."""
        noise = np.random.default_rng(0).normal(0, 0.01, WHISPER_RATE).astype(np.float32)
        self.transcribe(noise)
        self.transcribe(np.concatenate([noise] * 10))


class PauseDetector:
    """Measures, chunk by chunk, how much quiet audio ends the segment so far: chunks below
    both the segment's loudest chunk - 25 dB and the background level before it + 6 dB, after
    the first chunk that is not (quiet before any speech does not count).

    Pure arithmetic on 16-bit PCM levels; the STT uses it to transcribe at the likely end of
    speech, before the VAD has waited out its stop time."""

    def __init__(self) -> None:
        self._floor = -120.0
        self._peak = -120.0
        self._quiet = 0
        self._spoken = False

    def start(self, before: bytes) -> None:
        """A segment starts; ``before`` is audio from ahead of the speech (the background)."""
        step = max(2, len(before) // 10 // 2 * 2)
        levels = [rms_dbfs(before[i : i + step]) for i in range(0, len(before) - step + 1, step)]
        self._floor = min(levels, default=-120.0)
        self._peak = -120.0
        self._quiet = 0
        self._spoken = False

    def add(self, chunk: bytes) -> int:
        """Take the next chunk; return how many bytes of quiet audio now end the segment."""
        level = rms_dbfs(chunk)
        self._peak = max(self._peak, level)
        if level >= max(self._floor + 6.0, self._peak - 25.0):
            self._quiet = 0
            self._spoken = True
        elif self._spoken:
            self._quiet += len(chunk)
        return self._quiet


@dataclass
class _Pass:
    """One transcription of a segment's first ``end`` bytes; its result is None on failure.
    ``quiet_tail``: how many bytes of quiet audio that ended with."""

    task: asyncio.Task[str | None]
    end: int
    segment: int
    quiet_tail: int


class LocalWhisperSTTService(SegmentedSTTService):
    """Streaming recognition with a shared Whisper model.

    While the caller speaks (between the VAD's start and stop) the growing segment is
    transcribed every ``interim_every_secs`` of new audio, and as soon as it goes quiet, in a
    worker thread; each pass pushes an ``InterimTranscriptionFrame`` with the segment's text so
    far. No pass starts while another is running. At the VAD stop the final
    ``TranscriptionFrame`` (finalized) is pushed, then a ``SegmentTranscribedFrame``, once per
    segment and in order: the result of the latest pass when that pass heard all the speech
    (it began in the pause after the last sound), else a fresh pass over the whole segment,
    started at once.
    ``streaming=False`` makes no interim passes (one pass per segment, at its VAD stop).

    Resamples to 16 kHz per pass (Whisper's rate), so the pipeline can run at the phone's 8 kHz
    without a streaming resampler in the audio path.
    """

    def __init__(
        self,
        *,
        model: Any,
        lock: threading.Semaphore | None = None,
        interim_every_secs: float = 0.5,
        streaming: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            settings=STTSettings(model="whisper-tiny.en", language=Language.EN),
            ttfs_p99_latency=3.0,  # a final pass on a busy 2-core CPU (turns.py waits for it)
            **kwargs,
        )
        self._recognizer = WhisperRecognizer(model, lock)
        self._every_secs = interim_every_secs
        self._streaming = streaming  # off: one pass per segment, at its VAD stop
        self._pause: PauseDetector | None = None
        self._segment = 0
        self._passed_to = 0  # bytes of the segment the latest pass started with
        self._spoken_since = False  # sound (not quiet) came after the latest pass's audio
        self._latest: _Pass | None = None
        self._reuse: deque[_Pass | None] = deque()  # per queued segment, in order

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    def transcribe_pcm(self, pcm: bytes, rate: int) -> str:
        """Blocking transcription of 16-bit mono PCM; runs in a worker thread."""
        # No hotwords: the business's names as a prompt made WER worse (bench.stt).
        return self._recognizer.transcribe(pcm_to_audio(pcm, rate))

    def _bytes(self, secs: float) -> int:
        return int(self.sample_rate * secs) * 2

    # --- while the caller speaks -------------------------------------------------------------

    async def _handle_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        await super()._handle_user_started_speaking(frame)
        self._segment += 1
        if self._pause is None:
            self._pause = PauseDetector()
        onset = max(0, len(self._audio_buffer) - self._bytes(ONSET_SECS))
        self._pause.start(bytes(self._audio_buffer[: max(0, onset - self._bytes(0.1))]))
        self._passed_to = onset
        self._spoken_since = True

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await super().process_audio_frame(frame, direction)
        if not self._streaming or not self._user_speaking or self._pause is None:
            return
        quiet = self._pause.add(frame.audio)
        self._spoken_since = self._spoken_since or quiet == 0
        # Quiet for a moment and no pass has heard the end of the words: pass now, so the final
        # transcript is ready about when the VAD stops.
        paused = quiet >= self._bytes(PAUSE_SECS) and not self._heard_end(self._latest)
        due = len(self._audio_buffer) - self._passed_to >= self._bytes(self._every_secs) or paused
        busy = self._latest is not None and not self._latest.task.done()
        if not due or busy or len(self._audio_buffer) > self._bytes(MAX_INTERIM_SECS):
            return
        pcm = bytes(self._audio_buffer)
        self._passed_to = len(pcm)
        self._spoken_since = False
        task = self.create_task(self._interim(pcm, self._segment), name="whisper_interim")
        self._latest = _Pass(task, len(pcm), self._segment, quiet_tail=quiet)

    async def _interim(self, pcm: bytes, segment: int) -> str | None:
        try:
            text = await asyncio.to_thread(self.transcribe_pcm, pcm, self.sample_rate)
        except Exception as exc:
            logger.warning(f"whisper: an interim pass failed: {exc}")
            return None
        if text and segment == self._segment and self._user_speaking:
            await self.push_frame(
                InterimTranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
            )
        return text

    # --- at the VAD stop ---------------------------------------------------------------------

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        if self.is_usable:
            latest = self._latest
            self._reuse.append(latest if latest and self._heard_all(latest, frame) else None)
        await super()._handle_user_stopped_speaking(frame)

    def _heard_end(self, latest: _Pass | None) -> bool:
        """Whether ``latest`` began in the pause after this segment's last sound."""
        return (
            latest is not None
            and latest.segment == self._segment
            and latest.quiet_tail >= self._bytes(PAUSE_SECS)
            and not self._spoken_since
        )

    def _heard_all(self, latest: _Pass, frame: VADUserStoppedSpeakingFrame) -> bool:
        """Whether ``latest`` heard all of this segment's speech: it began in the pause after the
        last sound, or after the speech end the VAD reports (stop_secs before its stop)."""
        if latest.segment != self._segment:
            return False
        if self._heard_end(latest):
            return True
        speech_end = len(self._audio_buffer) - self._bytes(frame.stop_secs)
        return latest.end >= speech_end + self._bytes(COVER_MARGIN_SECS)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """The final transcript of one segment (``audio``, queued at its VAD stop)."""
        reuse = self._reuse.popleft() if self._reuse else None
        await self.start_processing_metrics()
        started = time.perf_counter()
        text: str | None = None
        try:
            if reuse is not None:
                await asyncio.wait([reuse.task])
                text = None if reuse.task.cancelled() else reuse.task.result()
            if text is None:
                text = await asyncio.to_thread(self.transcribe_pcm, audio, self.sample_rate)
            logger.debug(
                f"whisper: final for {len(audio) / 2 / self.sample_rate:.2f}s of audio "
                f"{'reused' if reuse else 'passed'} in {time.perf_counter() - started:.2f}s "
                f"-> {text!r}"
            )
        except Exception as exc:
            yield ErrorFrame(f"local transcription failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(
                text, self._user_id, time_now_iso8601(), Language.EN, finalized=True
            )
        yield SegmentTranscribedFrame()
