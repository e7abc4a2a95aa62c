"""Caller recordings generated on the fly: speech from the local TTS with silences between.

Generated, not shipped, and cached per process. Speech is sent through the same 8 kHz mu-law
path a phone uses, so what the server hears is phone-band audio.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from telephony.audio import float_to_pcm16, resample_pcm16

RATE = 16000


@lru_cache(maxsize=1)
def _voice() -> Any:
    from hibari import Hibari

    return Hibari(threads=1)


@lru_cache(maxsize=64)
def speech(text: str, speed: float = 1.0) -> bytes:
    voice = _voice()
    audio = voice(text, speed=speed, seed=7)
    return resample_pcm16(float_to_pcm16(audio, 2.4), voice.sample_rate, RATE)


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def call_audio(*parts: str | float) -> bytes:
    """Concatenate spoken text (str) and pauses (seconds) into 16 kHz PCM."""
    out = bytearray(silence(0.5))
    for part in parts:
        out.extend(silence(part) if isinstance(part, (int, float)) else speech(part))
    return bytes(out)


def add_noise(pcm: bytes, snr_db: float, seed: int = 1) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    power = np.mean(samples[np.abs(samples) > 200] ** 2) if np.any(np.abs(samples) > 200) else 1.0
    noise = np.random.default_rng(seed).normal(
        0, np.sqrt(power / 10 ** (snr_db / 10)), len(samples)
    )
    return np.clip(samples + noise, -32768, 32767).astype("<i2").tobytes()


def turn(
    text: str,
    *,
    answer_parts: int = 1,
    barge_in_after: float | None = None,
    gap_secs: float = 1.0,
) -> Any:
    """A caller turn for :func:`telephony.replay.converse`, spoken by the local voice.

    ``answer_parts=2`` for a turn answered by a tool with a filler ("One moment…", then the
    answer): the caller waits for both, however slow the machine, as a person would.
    """
    from telephony.replay import Turn

    return Turn(
        pcm=speech(text),
        barge_in_after=barge_in_after,
        gap_secs=gap_secs,
        answer_parts=answer_parts,
    )
