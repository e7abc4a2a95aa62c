"""The shared-session Silero VAD decides exactly as pipecat's own, without thread hops; the
call's VAD (agent.vad) hears a caller cutting in sooner, and still takes no noise for speech."""

from __future__ import annotations

from typing import Any

import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams

from agent.providers import LocalModels, SharedSileroVADAnalyzer
from agent.settings import Settings, SettingsError
from agent.vad import FastStartVADAnalyzer, build_call_vad, vad_params
from bench import noise
from bench.noise import OLD_VAD, on_the_line
from telephony.audio import resample_pcm16
from tests.caller_audio import RATE, call_audio

PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.5)


async def states(analyzer: Any, pcm: bytes) -> list[Any]:
    analyzer.set_sample_rate(8000)
    frame = 320  # 20 ms at 8 kHz, as Twilio sends it
    return [await analyzer.analyze_audio(pcm[i : i + frame]) for i in range(0, len(pcm), frame)]


async def test_shared_vad_matches_pipecat_without_thread_hops() -> None:
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
    assert submitted == 0  # every window scored inline


def test_vad_settings_are_read_with_barge_in_defaults() -> None:
    default = Settings.from_env({})
    assert (default.vad_start_secs, default.vad_confidence, default.vad_start_confidence) == (
        0.1,
        0.7,
        0.8,
    )
    assert default.vad_min_volume == 0.5 and default.vad_fast_volume
    settings = Settings.from_env(
        {
            "FRONTDESK_VAD_START_SECS": "0.25",
            "FRONTDESK_VAD_CONFIDENCE": "0.6",
            "FRONTDESK_VAD_START_CONFIDENCE": "0.9",
            "FRONTDESK_VAD_MIN_VOLUME": "0.4",
            "FRONTDESK_VAD_FAST_VOLUME": "0",
            "FRONTDESK_VAD_STOP_SECS": "0.3",
        }
    )
    assert vad_params(settings) == VADParams(
        confidence=0.6, start_secs=0.25, stop_secs=0.3, min_volume=0.4
    )
    assert (settings.vad_start_confidence, settings.vad_fast_volume) == (0.9, False)
    for name, bad in (
        ("FRONTDESK_VAD_CONFIDENCE", "1.5"),
        ("FRONTDESK_VAD_START_SECS", "-0.1"),
        ("FRONTDESK_VAD_FAST_VOLUME", "maybe"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: bad})


SHARED = LocalModels(vad_session=SileroVADAnalyzer(sample_rate=8000)._model.session)


def _call_vad(env: dict[str, str]) -> Any:
    return build_call_vad(SHARED, 8000, Settings.from_env(env))


async def test_with_the_old_settings_the_call_vad_decides_as_pipecat() -> None:
    pcm = resample_pcm16(
        call_audio("Hello, I'd like to book a haircut.", 0.8, "Friday at two, please."), RATE, 8000
    )
    reference = SileroVADAnalyzer(sample_rate=8000, params=PARAMS)
    old = _call_vad(OLD_VAD)
    assert await states(old, pcm) == await states(reference, pcm)


def _first(name: str, got: list[Any]) -> int:
    return next(i for i, s in enumerate(got) if s.name == name)


async def test_the_new_settings_hear_a_cut_in_sooner() -> None:
    for text in ("Sorry, actually, just tell me your hours.", "Wait, stop.", "Excuse me."):
        line = on_the_line(call_audio(text))
        old = _first("SPEAKING", await states(_call_vad(OLD_VAD), line))
        new = _first("SPEAKING", await states(_call_vad({}), line))
        assert new <= old - 5, f"{text!r}: speaking from frame {new}, was {old} (20 ms frames)"


@pytest.mark.parametrize("kind", list(noise.KINDS))
async def test_noise_never_starts_speech(kind: str) -> None:
    quiet = bytes(RATE * 2)
    for seed in range(3):
        line = on_the_line(quiet + noise.clip(kind, 2.0, seed) + quiet)
        got = await states(_call_vad({}), line)
        assert "SPEAKING" not in {s.name for s in got}, f"{kind} (seed {seed}) taken for speech"


async def test_windows_under_the_volume_floor_skip_the_model_and_decide_the_same() -> None:
    """The call's VAD does not score windows too quiet to be speech: a caller listening costs
    no model calls, and speech (and its end) is found at the same frames as with every window
    scored."""
    settings = Settings.from_env({})
    pcm = on_the_line(call_audio("Sorry, just tell me your hours.", 1.5, "And Friday?", 1.0))

    def vad(skip_quiet: bool) -> Any:
        return FastStartVADAnalyzer(
            session=SHARED.vad_session,
            sample_rate=8000,
            params=vad_params(settings),
            start_confidence=settings.vad_start_confidence,
            fast_volume=True,
            skip_quiet=skip_quiet,
        )

    every, skipping = vad(False), vad(True)
    expected = await states(every, pcm)
    got = await states(skipping, pcm)
    assert {s.name for s in got} >= {"SPEAKING", "QUIET"}
    changes = [i for i in range(1, len(got)) if got[i] != got[i - 1]]
    assert changes == [i for i in range(1, len(expected)) if expected[i] != expected[i - 1]]
    assert skipping.skipped_windows >= 0.4 * every.model_windows  # the pauses
    assert skipping.model_windows <= 0.6 * every.model_windows  # lead-ins included
