"""Cut-offs and turn-end speed of the caller's turn ending (agent.turns), on phone audio.

    nice -n 5 .venv/bin/python -m bench.cutoff [--stt oracle|whisper] [--pause 0.35,0.6]
                                                [--veto off,on] [--parallel 3] [-v]

Each utterance of bench/cutoff.yaml is read by the local voice (hibari) as one sentence with a
comma at each "|"; the gap the voice leaves there is stretched to a human pause (0.5, 0.7, 0.9
or 1.2 s, fixed per pause), so the voice before it is that of an unfinished sentence. The audio
goes through the phone (8 kHz mu-law) into the call's own VAD, STT and turn strategy
(agent.vad's ``build_call_vad``, agent.pipeline's ``user_turn_params``), in real time, 20 ms at
a time.

- paused utterances (34): *cut* when a turn ended before the caller's last word (the bot would
  have answered the first half); printed with the pause it was cut in.
- complete utterances (16): how long after the last word the turn ended, and when the reply's
  request started (before the turn end when it was started early, agent.turns).

``--stt oracle`` stands in for a fast streaming STT: the words said before each VAD stop,
``--stt-ms`` after it (default 120 ms), so only turn taking is measured; ``--stt whisper`` is
the real local STT of today. Every combination of ``--pause`` (FRONTDESK_TURN_PAUSE_SECS) and
``--veto`` (smart-turn off/on, FRONTDESK_TURN_AUDIO_THRESHOLD) is run: the trade-off between
cut-offs and turn-end speed. Writes bench/results/cutoff-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from agent.pipeline import user_turn_params
from agent.providers import HIBARI_GAIN, LocalModels, build_stt
from agent.settings import Settings
from agent.turns import SegmentTranscribedFrame
from agent.vad import build_call_vad
from bench import harness
from telephony import codec
from telephony.audio import float_to_pcm16, resample_pcm16

RATE = 8000
FRAME = RATE // 50  # samples in 20 ms
UTTERANCES = Path(__file__).with_name("cutoff.yaml")
PAUSES = (0.5, 0.7, 0.9, 1.2)
LEAD_SECS, TAIL_SECS = 0.5, 4.0


@dataclass
class Utterance:
    """One caller utterance at 8 kHz: its parts' text and where each part's speech ends."""

    text: str
    kind: str  # "paused" or "complete"
    pcm: bytes
    part_ends: list[int]  # sample where each part's speech ends
    parts: list[str]
    pauses: list[float]  # the pause after each part but the last
    natural: bool  # the pauses are the voice's own gaps, stretched (else parts said apart)

    @property
    def speech_end(self) -> int:
        return self.part_ends[-1]


# --- the caller's audio ------------------------------------------------------------------------


def _quiet_runs(pcm: np.ndarray, rate: int, min_ms: int = 30) -> list[tuple[int, int]]:
    """Stretches of near silence inside the speech, as (start, end) samples."""
    step = rate // 100
    loud = [np.abs(pcm[i : i + step]).mean() >= 150 for i in range(0, len(pcm) - step, step)]
    if True not in loud:
        return []
    first, last = loud.index(True), len(loud) - loud[::-1].index(True)
    runs, start = [], None
    for i in range(first, last + 1):
        if i < last and not loud[i]:
            start = i if start is None else start
        elif start is not None:
            if (i - start) * 10 >= min_ms:
                runs.append((start * step, i * step))
            start = None
    return runs


def _speech_bounds(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    step = rate // 100
    loud = [i for i in range(0, len(pcm) - step, step) if np.abs(pcm[i : i + step]).mean() >= 150]
    return (loud[0], loud[-1] + step) if loud else (0, len(pcm))


def synthesize(voice: Any, line: str, kind: str, index: int) -> Utterance:
    """``line`` said by the local voice at 8 kHz through mu-law, its "|" pauses stretched."""
    parts = [p.strip() for p in line.split("|")]
    pauses = [PAUSES[(index + j) % len(PAUSES)] for j in range(len(parts) - 1)]
    rate = voice.sample_rate
    said = voice(", ".join(parts), seed=7)
    pcm = np.frombuffer(float_to_pcm16(said, HIBARI_GAIN), dtype="<i2")
    start, end = _speech_bounds(pcm, rate)
    gaps = sorted(_quiet_runs(pcm[start:end], rate), key=lambda g: g[0] - g[1])
    natural = len(gaps) >= len(pauses)
    if natural:
        cuts = sorted(gaps[: len(pauses)])
        bounds = [0, *(x for gap in cuts for x in gap), end - start]
        pieces = [pcm[start + bounds[2 * k] : start + bounds[2 * k + 1]] for k in range(len(parts))]
    else:  # the voice left no gap to stretch: say the parts one by one
        pieces = []
        for part in parts:
            one = np.frombuffer(float_to_pcm16(voice(part, seed=7), HIBARI_GAIN), dtype="<i2")
            a, b = _speech_bounds(one, rate)
            pieces.append(one[a:b])
    out = bytearray(bytes(int(LEAD_SECS * RATE) * 2))
    ends: list[int] = []
    for k, piece in enumerate(pieces):
        out.extend(resample_pcm16(piece.tobytes(), rate, RATE))
        ends.append(len(out) // 2)
        if k < len(pauses):
            out.extend(bytes(int(pauses[k] * RATE) * 2))
    phone = codec.ulaw_to_pcm16(codec.pcm16_to_ulaw(bytes(out)))
    return Utterance(line.replace(" | ", " "), kind, phone, ends, parts, pauses, natural)


def load_utterances(voice: Any) -> list[Utterance]:
    data = yaml.safe_load(UTTERANCES.read_text())
    return [
        synthesize(voice, line, kind, i)
        for kind in ("paused", "complete")
        for i, line in enumerate(data[kind])
    ]


# --- one utterance through the call's turn taking ----------------------------------------------


class OracleSTT(FrameProcessor):
    """A fast streaming STT's stand-in: after each VAD stop, the words of the parts whose speech
    ended before it (not said yet), ``delay`` later, then the segment's end."""

    def __init__(self, utterance: Utterance, delay: float) -> None:
        super().__init__()
        self._utterance = utterance
        self._delay = delay
        self._position = 0
        self._said = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._position += len(frame.audio) // 2
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            ends = self._utterance.part_ends
            heard = sum(1 for e in ends if e <= self._position)
            words = " ".join(self._utterance.parts[self._said : heard])
            self._said = max(self._said, heard)
            task = asyncio.create_task(self._transcribe(words))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, words: str) -> None:
        await asyncio.sleep(self._delay)
        if words:
            await self.push_frame(
                TranscriptionFrame(words, "caller", time_now_iso8601(), finalized=True)
            )
        await self.push_frame(SegmentTranscribedFrame())


class Watch(FrameProcessor):
    """At the end of the pipeline: when turns ended and replies were asked for (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.turn_ends: list[float] = []
        self.requests: list[tuple[float, bool]] = []  # (when, started early)
        self.withdrawn = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        if isinstance(frame, UserStoppedSpeakingFrame):
            self.turn_ends.append(now)
        elif isinstance(frame, LLMContextFrame):
            self.requests.append((now, frame.speculation))
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            self.withdrawn += 1
        await self.push_frame(frame, direction)


@dataclass
class Outcome:
    text: str
    kind: str
    cut_in_pause: float | None = None  # the pause the turn was cut in (paused utterances)
    turn_end_ms: float | None = None  # after the last word
    request_ms: float | None = None  # the reply's request, after the last word
    early: bool = False  # that request was started before the turn end
    withdrawn: int = 0
    natural: bool = True
    turn_ends: list[float] = field(default_factory=list)


async def run_one(
    utterance: Utterance, settings: Settings, models: LocalModels, stt: str, stt_ms: float
) -> Outcome:
    """Play ``utterance`` in real time into the call's VAD, STT and turn strategy."""
    watch = Watch()
    user = LLMContextAggregatorPair(
        LLMContext(), user_params=user_turn_params(settings, models.turn_model)
    ).user()
    recognizer = (
        OracleSTT(utterance, stt_ms / 1000) if stt == "oracle" else build_stt(settings, models)
    )
    vad = VADProcessor(vad_analyzer=build_call_vad(models, RATE, settings))
    worker = PipelineWorker(
        Pipeline([vad, recognizer, user, watch]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    await asyncio.sleep(0.3)  # the pipeline starts
    started = time.monotonic()
    speech_end = started + utterance.speech_end / RATE
    audio = utterance.pcm + bytes(int(TAIL_SECS * RATE) * 2)
    for n, i in enumerate(range(0, len(audio) - FRAME * 2 + 1, FRAME * 2)):
        frame = InputAudioRawFrame(audio=audio[i : i + FRAME * 2], sample_rate=RATE, num_channels=1)
        await worker.queue_frame(frame)
        if any(t > speech_end for t in watch.turn_ends) and time.monotonic() > speech_end + 0.5:
            break
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - time.monotonic()))
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 10)
    return _outcome(utterance, watch, started, speech_end)


def _outcome(utterance: Utterance, watch: Watch, started: float, speech_end: float) -> Outcome:
    out = Outcome(utterance.text, utterance.kind, withdrawn=watch.withdrawn)
    out.natural = utterance.natural
    out.turn_ends = [round((t - speech_end) * 1000) for t in watch.turn_ends]
    early = [t for t in watch.turn_ends if t < speech_end]
    if early:
        at = (early[0] - started) * RATE
        ends = utterance.part_ends[:-1]
        index = next((k for k, e in enumerate(ends) if e <= at < utterance.part_ends[k + 1]), 0)
        out.cut_in_pause = utterance.pauses[index] if utterance.pauses else 0.0
    late = [t for t in watch.turn_ends if t >= speech_end]
    if late:
        out.turn_end_ms = (late[0] - speech_end) * 1000
        asked = [(t, e) for t, e in watch.requests if t >= speech_end - 0.05]
        if asked:
            when, out.early = asked[-1]
            out.request_ms = (when - speech_end) * 1000
    return out


# --- a configuration, and the sweep --------------------------------------------------------------


async def run_config(
    utterances: list[Utterance],
    settings: Settings,
    models: LocalModels,
    args: argparse.Namespace,
) -> list[Outcome]:
    gate = asyncio.Semaphore(args.parallel)

    async def one(utterance: Utterance) -> Outcome:
        async with gate:
            result = await run_one(utterance, settings, models, args.stt, args.stt_ms)
            if args.verbose:
                mark = f"CUT in {result.cut_in_pause}s" if result.cut_in_pause else "ok"
                print(f"    {mark:14s} {result.turn_ends} ms  {result.text}")
            return result

    return list(await asyncio.gather(*(one(u) for u in utterances)))


def summarize(label: str, outcomes: list[Outcome]) -> dict[str, Any]:
    paused = [o for o in outcomes if o.kind == "paused"]
    complete = [o for o in outcomes if o.kind == "complete"]
    cut = [o for o in paused if o.cut_in_pause is not None]
    by_pause = {
        p: sum(1 for o in cut if o.cut_in_pause == p) for p in sorted({*PAUSES}) if p in PAUSES
    }
    turn_end = harness.summary([o.turn_end_ms for o in complete if o.turn_end_ms is not None])
    request = harness.summary([o.request_ms for o in complete if o.request_ms is not None])
    early = sum(1 for o in complete if o.early)
    withdrawn = sum(o.withdrawn for o in outcomes)
    pauses = ", ".join(f"{p:.1f}s: {n}" for p, n in by_pause.items())
    print(
        f"  {label:24s} cut {len(cut):2d}/{len(paused)} ({pauses})  "
        f"complete: turn end p50 {turn_end['p50']:5.0f} p90 {turn_end['p90']:5.0f} ms, "
        f"reply request p50 {request['p50']:5.0f} p90 {request['p90']:5.0f} ms "
        f"({early}/{len(complete)} early), early replies withdrawn {withdrawn}"
    )
    return {
        "cut": len(cut),
        "paused": len(paused),
        "cut_by_pause": by_pause,
        "turn_end": turn_end,
        "reply_request": request,
        "early": early,
        "withdrawn": withdrawn,
        "outcomes": [o.__dict__ for o in outcomes],
    }


async def main_async(args: argparse.Namespace) -> None:
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    base = Settings()
    models = LocalModels.load(replace(base, turn_audio_threshold=0.7))
    utterances = load_utterances(models.hibari)
    if args.limit:
        utterances = [u for u in utterances if u.kind == "paused"][: args.limit] + [
            u for u in utterances if u.kind == "complete"
        ][: args.limit]
    stitched = [u.text for u in utterances if not u.natural]
    stt = f"oracle, {args.stt_ms:.0f} ms after the VAD stop" if args.stt == "oracle" else args.stt
    print(
        f"{len(utterances)} utterances, pauses {', '.join(f'{p}s' for p in PAUSES)}, STT {stt}; "
        f"said apart (no gap to stretch): {len(stitched)}"
    )
    results: dict[str, Any] = {}
    for pause, veto in itertools.product(args.pause, args.veto):
        settings = replace(
            base,
            turn_pause_secs=pause,
            turn_audio_threshold=0.7 if veto == "on" else 0.0,
            turn_pause_audio_secs=args.audio_pause,
        )
        label = f"pause {pause:.2f}s, veto {veto}"
        outcomes = await run_config(utterances, settings, models, args)
        results[label] = summarize(label, outcomes)
    after = harness.machine()
    harness.print_machine(after, "machine at end")
    path = harness.write_results(
        "cutoff",
        {"machine_start": before, "machine_end": after, "args": vars(args), "results": results},
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stt", choices=("oracle", "whisper"), default="oracle")
    parser.add_argument("--stt-ms", type=float, default=120.0, help="oracle STT delay")
    parser.add_argument("--pause", type=lambda s: [float(v) for v in s.split(",")], default=[0.6])
    parser.add_argument("--veto", type=lambda s: s.split(","), default=["off", "on"])
    parser.add_argument("--audio-pause", type=float, default=Settings().turn_pause_audio_secs)
    parser.add_argument("--parallel", type=int, default=3, help="utterances played at once")
    parser.add_argument("--limit", type=int, default=0, help="only the first N of each kind")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each utterance")
    args = parser.parse_args()
    logger.remove()
    harness.run(main_async(args))


if __name__ == "__main__":
    main()
