"""The local TTS service on the real hibari model: silence trimmed without clipping speech, and
synthesis of a cut-off reply stopped at once."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from agent.hibari import SILENCE_LEVEL, HibariTTSService, trim_silence

RATE = 8000
SENTENCES = (
    "Sure, I can help with that.",
    "We are open from nine a m to six p m.",
    "A haircut takes thirty minutes.",
    "Coloring takes an hour and a half.",
    "Maria and James are both in today.",
    "Is there anything else?",
)


@pytest.fixture(scope="module")
def hibari() -> Any:
    from hibari import Hibari

    voice = Hibari(threads=1)
    voice("Warm up.")
    return voice


def _loud(samples: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.abs(samples) > SILENCE_LEVEL)


def test_trim_keeps_every_sample_of_speech_and_a_short_lead(hibari: Any) -> None:
    rate = hibari.sample_rate
    for text in SENTENCES:
        raw = hibari(text, seed=3)
        loud = _loud(raw)
        assert loud[0] / rate > 0.2, f"hibari's own lead was expected to be long: {text!r}"
        trimmed = trim_silence(raw, rate)
        kept = _loud(trimmed)
        lead = int(kept[0])
        assert lead / rate <= 0.021
        # The speech, first audible sample to last, is returned unchanged.
        speech = raw[loud[0] : loud[-1] + 1]
        np.testing.assert_array_equal(trimmed[lead : lead + speech.size], speech)
        assert (trimmed.size - lead - speech.size) / rate <= 0.201
        # The margins are faded: the first kept sample is silent, no click at the cut.
        assert abs(trimmed[0]) == 0.0


def test_trim_of_silence_is_empty() -> None:
    assert trim_silence(np.zeros(24000, np.float32), 24000).size == 0


async def test_reply_audio_starts_with_speech_and_every_sentence_is_spoken(hibari: Any) -> None:
    tts = HibariTTSService(hibari=hibari, lock=threading.Lock())
    down, _up = await run_test(
        tts,
        frames_to_send=[TTSSpeakFrame(" ".join(SENTENCES))],
        pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
    )
    assert tts.sentences_synthesized == len(SENTENCES)
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    samples = np.frombuffer(audio, dtype="<i2")
    first_loud = int(np.flatnonzero(np.abs(samples) > 500)[0])  # what the replay calls audible
    # 20 ms of lead, then the onset's first quiet milliseconds (untrimmed: ~0.26-0.34 s).
    assert first_loud / RATE <= 0.05, f"{first_loud / RATE * 1000:.0f} ms before speech"


async def test_an_interrupted_reply_synthesizes_nothing_more(hibari: Any) -> None:
    """The shared lock is held (another call is synthesizing) while the reply is cut off: once
    the lock is free, the cut reply's worker synthesizes none of its sentences."""
    lock = threading.Lock()
    tts = HibariTTSService(hibari=hibari, lock=lock)
    lock.acquire()
    try:
        down, _up = await run_test(
            tts,
            frames_to_send=[
                TTSSpeakFrame(" ".join(SENTENCES)),
                SleepFrame(0.5),  # the synthesis thread starts and waits for the lock
                InterruptionFrame(),
                SleepFrame(0.1),
            ],
            pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
        )
        assert tts.worker is not None, "the reply never reached synthesis before the cut"
    finally:
        lock.release()
    tts.worker.join(timeout=10)
    assert not tts.worker.is_alive()
    assert tts.sentences_synthesized == 0
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame)]


async def test_a_streamed_reply_is_spoken_first_clause_first(hibari: Any) -> None:
    tts = HibariTTSService(hibari=hibari, lock=threading.Lock())
    reply = "We are open today until 6 p.m., and tomorrow from 9. Anything else?"
    tokens = [LLMTextFrame(w if i == 0 else f" {w}") for i, w in enumerate(reply.split(" "))]
    down, _up = await run_test(
        tts,
        frames_to_send=[LLMFullResponseStartFrame(), *tokens, LLMFullResponseEndFrame()],
        pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
    )
    spoken = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert spoken == ["We are open today until 6 p.m.,", "and tomorrow from 9.", "Anything else?"]
    assert tts.sentences_synthesized == 3
