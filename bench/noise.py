"""Noise a caller's phone picks up that is not the caller talking: synthesized, seeded, phone band.

    .venv/bin/python -m bench.noise [--seconds S] [--write DIR]

Five kinds (:data:`KINDS`): taps on the handset, rubbing against it, dishes, office babble and
traffic, each :func:`clip` made with numpy alone from a seed, so every run hears the same
audio, band-limited to 300-3400 Hz like a phone line. Levels are set against a caller speaking
at about -20 dBFS: taps and clinks peak near it, steady noise sits 12-20 dB under it.

Run as a module, it checks each clip and the caller's speech against the VAD offline (the
server's Silero analyzer, old settings against new): how soon speech is detected after its
onset, and whether any noise clip is taken for speech. ``--write`` saves the clips as WAVs.
bench.bargein ``--noise N`` plays them over the bot's answer on the real server.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 16000  # the rate bench callers speak at (telephony.replay.converse)
Audio = npt.NDArray[np.float64]


def _band(audio: Audio, low: float = 300.0, high: float = 3400.0) -> Audio:
    """Keep ``low``..``high`` Hz (a phone line's band), by zeroing the rest of the spectrum."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(audio.size, 1.0 / RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, audio.size)


def _colored(rng: np.random.Generator, n: int, slope_db: float) -> Audio:
    """Noise whose spectrum falls ``slope_db`` per octave (-6: brown, like a rumble)."""
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / RATE), 20.0)
    spectrum *= (freqs / 20.0) ** (slope_db / 6.02)
    noise = np.fft.irfft(spectrum, n)
    return noise / np.std(noise)


def _db(level_dbfs: float) -> float:
    return float(10 ** (level_dbfs / 20.0))


def _to_rms(audio: Audio, dbfs: float) -> Audio:
    rms = float(np.sqrt(np.mean(audio**2))) or 1.0
    return audio * (_db(dbfs) / rms)


def _to_peak(audio: Audio, dbfs: float) -> Audio:
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio * (_db(dbfs) / peak)


def taps(rng: np.random.Generator, n: int) -> Audio:
    """Fingers tapping the handset: short clicks with a low thump, irregularly spaced."""
    out = np.zeros(n)
    t = np.arange(int(0.06 * RATE)) / RATE
    for start in np.sort(rng.uniform(0.05, 0.9, 7)) * n:
        click = rng.normal(0, 1, t.size) * np.exp(-t / 0.004)
        thump = np.sin(2 * np.pi * rng.uniform(300, 500) * t) * np.exp(-t / 0.015)
        hit = (click + 2 * thump) * rng.uniform(0.4, 1.0)
        end = min(n, int(start) + t.size)
        out[int(start) : end] += hit[: end - int(start)]
    return _to_peak(_band(out), -14.0)


def rubbing(rng: np.random.Generator, n: int) -> Audio:
    """Cloth or a cheek rubbing the microphone: friction noise swelling a few times a second."""
    t = np.arange(n) / RATE
    friction = _colored(rng, n, -3.0)  # pink: a scrape
    swell = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2.0, 4.0) * t + rng.uniform(0, 6))
    return _to_rms(_band(friction * swell**2), -30.0)


def dishes(rng: np.random.Generator, n: int) -> Audio:
    """Plates and cutlery: ringing clinks (a few high partials, decaying) over a soft clatter."""
    out = rng.normal(0, 0.02, n)
    t = np.arange(int(0.4 * RATE)) / RATE
    for start in np.sort(rng.uniform(0.0, 0.85, 5)) * n:
        ring = np.zeros(t.size)
        for _partial in range(4):
            ring += np.sin(2 * np.pi * rng.uniform(1800, 3300) * t + rng.uniform(0, 6)) * np.exp(
                -t / rng.uniform(0.05, 0.15)
            )
        ring *= rng.uniform(0.3, 1.0)
        end = min(n, int(start) + t.size)
        out[int(start) : end] += ring[: end - int(start)]
    return _to_peak(_band(out), -16.0)


def babble(rng: np.random.Generator, n: int) -> Audio:
    """An open-plan office: six distant talkers (voiced buzz through moving vowel formants,
    in syllables) mixed well under the caller."""
    t = np.arange(n) / RATE
    mix = np.zeros(n)
    for _talker in range(6):
        f0 = rng.uniform(100, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        buzz = np.zeros(n)
        for k in range(1, 25):
            buzz += np.sin(k * phase) / k
        spectrum = np.fft.rfft(buzz)
        freqs = np.fft.rfftfreq(n, 1.0 / RATE)
        for formant in (rng.uniform(500, 800), rng.uniform(1100, 1800), rng.uniform(2300, 2900)):
            spectrum *= 1 + 6 * np.exp(-(((freqs - formant) / 150.0) ** 2))
        voice = np.fft.irfft(spectrum, n)
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6)), 0, 1)
        mix += voice * syllables * rng.uniform(0.5, 1.0)
    return _to_rms(_band(mix + rng.normal(0, 0.3 * np.std(mix), n)), -38.0)


def traffic(rng: np.random.Generator, n: int) -> Audio:
    """A street: rumble and tyre hiss, a car passing (swelling and fading)."""
    t = np.arange(n) / RATE
    rumble = _colored(rng, n, -6.0)
    hiss = rng.normal(0, 0.3, n)
    passing = 0.3 + np.exp(-(((t - t[-1] * rng.uniform(0.4, 0.6)) / 0.5) ** 2))
    return _to_rms(_band((rumble + hiss) * passing), -30.0)


KINDS: dict[str, Callable[[np.random.Generator, int], Audio]] = {
    "taps": taps,
    "rubbing": rubbing,
    "dishes": dishes,
    "office": babble,
    "traffic": traffic,
}


def clip(kind: str, seconds: float = 2.0, seed: int = 0) -> bytes:
    """``seconds`` of noise ``kind`` as 16-bit PCM at :data:`RATE`; the same bytes every run
    for the same arguments."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    audio = KINDS[kind](rng, int(seconds * RATE))
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


#: What callers say when they cut in (spoken by the local voice, as bench callers are).
CUT_INS = (
    "Sorry, actually, just tell me your hours.",
    "Wait, stop.",
    "Hello?",
    "No, I meant Friday.",
    "Can I book a haircut for tomorrow?",
    "Hmm, what about Maria?",
    "Excuse me.",
    "Yes please.",
)
#: The VAD settings before issue 18, for comparisons.
OLD_VAD = {
    "FRONTDESK_VAD_START_SECS": "0.2",
    "FRONTDESK_VAD_START_CONFIDENCE": "0.7",
    "FRONTDESK_VAD_FAST_VOLUME": "0",
}


def on_the_line(pcm: bytes) -> bytes:
    """16 kHz PCM as the server hears it from Twilio: 8 kHz mu-law, decoded."""
    from telephony import codec
    from telephony.audio import resample_pcm16

    return codec.ulaw_to_pcm16(codec.pcm16_to_ulaw(resample_pcm16(pcm, RATE, 8000)))


async def speech_starts_ms(env: dict[str, str], pcm8k: bytes) -> list[float]:
    """When (ms into ``pcm8k``) the call's VAD, built from ``env`` as a call builds it, goes
    from quiet to speaking, fed 20 ms frames as Twilio sends them."""
    from pipecat.audio.vad.vad_analyzer import VADState

    from agent.providers import LocalModels
    from agent.settings import Settings
    from agent.vad import build_call_vad

    vad = build_call_vad(LocalModels(), 8000, Settings.from_env(env))
    vad.set_sample_rate(8000)
    starts, speaking = [], False
    for index in range(0, len(pcm8k), 320):
        now = (await vad.analyze_audio(pcm8k[index : index + 320])) == VADState.SPEAKING
        if now and not speaking:
            starts.append((index + 320) / 16)
        speaking = now
    return starts


async def vad_figures(env: dict[str, str], seeds: int) -> dict[str, object]:
    """Onset -> speech detected for each cut-in (quiet line), and per noise kind how many of
    ``seeds`` clips were taken for speech."""
    from telephony.replay import speech_segments
    from tests.caller_audio import speech

    quiet = bytes(RATE * 2)
    delays = []
    for text in CUT_INS:
        line = on_the_line(quiet + speech(text) + quiet)
        onset = speech_segments(line, 8000)[0][0]
        starts = await speech_starts_ms(env, line)
        delays.append(starts[0] - onset if starts else float("nan"))
    false = dict.fromkeys(KINDS, 0)
    for kind in KINDS:
        for seed in range(seeds):
            line = on_the_line(quiet + clip(kind, 2.0, seed) + quiet)
            false[kind] += bool(await speech_starts_ms(env, line))
    return {"delays_ms": delays, "false_starts": false}


async def compare_vad(seeds: int) -> None:
    for label, env in (("old settings", OLD_VAD), ("new settings", {})):
        figures = await vad_figures(env, seeds)
        delays = [float(d) for d in figures["delays_ms"]]  # type: ignore[attr-defined]
        print(
            f"{label}: onset -> speech p50 {np.nanmedian(delays):.0f} ms, max "
            f"{np.nanmax(delays):.0f} ms, missed {int(np.isnan(delays).sum())}/{len(delays)}; "
            f"noise taken for speech (of {seeds} clips each): {figures['false_starts']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, default=8, help="clips per kind for the VAD check")
    parser.add_argument("--write", type=Path, help="save each clip here as <kind>.wav")
    args = parser.parse_args()
    from telephony.audio import rms_dbfs, write_wav

    for kind in KINDS:
        pcm = clip(kind, args.seconds)
        peak = np.abs(np.frombuffer(pcm, dtype="<i2")).max() / 32768.0
        print(f"{kind:8s} rms {rms_dbfs(pcm):6.1f} dBFS  peak {20 * np.log10(peak):6.1f} dBFS")
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / f"{kind}.wav").write_bytes(write_wav(pcm, RATE))
    asyncio.run(compare_vad(args.seeds))


if __name__ == "__main__":
    main()
