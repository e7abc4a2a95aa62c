"""The shared-session Silero VAD decides exactly as pipecat's own, with fewer thread hops."""

from __future__ import annotations

from typing import Any

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams

from agent.providers import SharedSileroVADAnalyzer
from telephony.audio import resample_pcm16
from tests.caller_audio import RATE, call_audio

PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.5)


async def states(analyzer: Any, pcm: bytes) -> list[Any]:
    analyzer.set_sample_rate(8000)
    frame = 320  # 20 ms at 8 kHz, as Twilio sends it
    return [await analyzer.analyze_audio(pcm[i : i + frame]) for i in range(0, len(pcm), frame)]


async def test_shared_vad_matches_pipecat_and_skips_most_thread_hops() -> None:
    pcm = resample_pcm16(
        call_audio("Hello, I'd like to book a haircut.", 0.8, "Friday at two, please.", 0.6),
        RATE,
        8000,
    )
    reference = SileroVADAnalyzer(sample_rate=8000, params=PARAMS)
    shared = SharedSileroVADAnalyzer(
        session=SileroVADAnalyzer(sample_rate=8000)._model.session, sample_rate=8000, params=PARAMS
    )
    submitted = 0
    submit = shared._executor.submit

    def counting_submit(*args: Any, **kwargs: Any) -> Any:
        nonlocal submitted
        submitted += 1
        return submit(*args, **kwargs)

    shared._executor.submit = counting_submit  # type: ignore[method-assign]
    expected = await states(reference, pcm)
    got = await states(shared, pcm)
    assert got == expected
    assert {s.name for s in got} >= {"QUIET", "SPEAKING"}  # the audio did hold speech
    frames = len(got)
    # One model window (256 samples) per 1.6 frames: only frames that complete one hop.
    assert submitted <= frames * 0.7
    assert submitted >= frames * 0.55
