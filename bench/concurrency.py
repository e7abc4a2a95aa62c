"""Concurrent calls against one server process, with remote-style provider stand-ins.

    nice -n 5 .venv/bin/python -m bench.concurrency [--levels 1,5,10,20,30,50] [--call NAME]
    nice -n 5 .venv/bin/python -m bench.concurrency --levels 1,10,30 --profile
    nice -n 5 .venv/bin/python -m bench.concurrency --levels 1,20,40 --workers 2

One server process (``run.py serve``; ``--workers N`` passes ``--workers N`` on, and the
server's CPU is then summed over its worker processes) with Deepgram, OpenAI-compatible and
ElevenLabs stand-ins in another process at fixed, realistic latencies (STT final 300 ms after
the end of speech, LLM
first token 400 ms, TTS first audio 150 ms). For each level N, N copies of one call of
bench/calls.yaml run at once (starts spread over ``--stagger`` seconds), and it prints:

- server CPU per call (share of one core, from /proc over the level's wall time),
- outbound frame pacing at the phone: gaps between consecutive bot frames inside a sentence
  (p99, max; a sentence ends at the mark the server sends after it) and late frames (a frame
  arriving after its slot in a 60 ms playout buffer); the wait between sentences apart,
- voice-to-voice p50/p90 and its drift from N=1,

and the largest N per core whose p99 gap stays <= 30 ms with voice-to-voice p50 within 10% of
N=1 (issue 19's criterion). The replay clients run in this process, apart from the server.
With ``--profile``, py-spy samples the server process while the top level runs and the top
functions and modules by self and total share are printed (bench/profile.py): the profile of a
saturated server, before and after a change. Writes bench/results/concurrency-*.json (and the
raw collapsed stacks beside it with ``--profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import time
from typing import Any

from bench import harness
from bench.profile import Profile, Sampler, print_top
from telephony.replay import Report

REPLY_GAP_MS = 1000.0  # a longer silence separates two replies
MAX_GAP_P99_MS = 30.0  # issue 19: outbound frame gap inside a sentence
MAX_DRIFT_PCT = 10.0  # voice-to-voice p50 against N=1
JITTER_MS = 60.0
FRAME_MS = 20.0


def pacing(reports: list[Report]) -> dict[str, Any]:
    """Frame gaps inside each bot sentence, and frames late for a 60 ms playout buffer.

    A sentence is the run of frames up to the Twilio mark the server sends after it (or up to a
    silence longer than a second). A gap inside a sentence is the transport's pacing; a gap
    across a mark is the time the next sentence took to arrive, reported apart.
    """
    gaps: list[float] = []
    between: list[float] = []
    late = total = 0
    for report in reports:
        arrivals = report.frame_arrivals_ms
        marks = sorted(report.mark_arrivals_ms)
        start = 0
        for i in range(1, len(arrivals) + 1):
            ends = i == len(arrivals)
            if not ends:
                gap = arrivals[i] - arrivals[i - 1]
                crossed = bisect.bisect_right(marks, arrivals[i]) > bisect.bisect_left(
                    marks, arrivals[i - 1]
                )
                ends = crossed or gap > REPLY_GAP_MS
                if crossed and gap <= REPLY_GAP_MS:
                    between.append(gap)
            if not ends:
                continue
            sentence = arrivals[start:i]
            gaps.extend(b - a for a, b in itertools.pairwise(sentence))
            first = sentence[0] if sentence else 0.0
            for n, at in enumerate(sentence):
                total += 1
                late += at > first + JITTER_MS + n * FRAME_MS
            start = i
    return {
        "frames": total,
        "gap_p50_ms": round(harness.percentile(gaps, 0.5), 1),
        "gap_p99_ms": round(harness.percentile(gaps, 0.99), 1),
        "gap_max_ms": round(max(gaps), 1) if gaps else float("nan"),
        "late_frames": late,
        "late_pct": round(100.0 * late / total, 2) if total else float("nan"),
        "between_sentences_p50_ms": round(harness.percentile(between, 0.5), 1),
        "between_sentences_max_ms": round(max(between), 1) if between else float("nan"),
    }


async def level(
    srv: harness.ServerProcess, call: harness.Call, turns: Any, n: int, stagger: float
) -> dict[str, Any]:
    async def one(index: int) -> Report:
        await asyncio.sleep(stagger * index / max(n, 1))
        return await harness.run_call(srv, call, turns)

    cpu0, wall0 = srv.cpu_seconds(), time.monotonic()
    own0 = time.process_time()
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.monotonic() - wall0
    cpu = srv.cpu_seconds() - cpu0
    own = time.process_time() - own0
    reports = [r for r in results if isinstance(r, Report)]
    failed = [repr(r) for r in results if not isinstance(r, Report)]
    rows = [row for r in reports for row in harness.turn_rows(call, r)]
    v2v = harness.voice_to_voice(rows)
    return {
        "n": n,
        "wall_s": round(wall, 1),
        "server_cpu_s": round(cpu, 1),
        "server_cores": round(cpu / wall, 3),
        "cpu_per_call_pct": round(100.0 * cpu / wall / n, 2),
        "client_cpu_s": round(own, 1),
        "failed_calls": failed,
        "voice_to_voice": v2v,
        "pacing": pacing(reports),
        "load_average": os.getloadavg(),
    }


def server_args(args: argparse.Namespace) -> tuple[str, ...]:
    """``run.py serve``'s arguments: ``--workers N`` when more than one worker is asked for."""
    return ("--workers", str(args.workers)) if args.workers > 1 else ()


def print_row(result: dict[str, Any]) -> None:
    p = result["pacing"]
    v2v = result["voice_to_voice"]
    print(
        f"{result['n']:>4} {result['cpu_per_call_pct']:>8.1f}% {result['server_cores']:>6.2f} "
        f"{p['gap_p99_ms']:>6.0f}ms {p['gap_max_ms']:>6.0f}ms {p['late_pct']:>6.1f}% "
        f"{p['between_sentences_p50_ms']:>6.0f}ms "
        f"{v2v['all']['p50']:>6.0f}ms {v2v['all']['p90']:>6.0f}ms "
        f"{result['drift_pct']:>6.1f}% {v2v['unanswered']:>5} "
        f"{result['load_average'][0]:>5.1f}",
        flush=True,
    )
    if result["failed_calls"]:
        print(f"     failed calls: {result['failed_calls'][:3]}")


async def run_levels(
    srv: harness.ServerProcess,
    call: harness.Call,
    turns: Any,
    levels: list[int],
    args: argparse.Namespace,
    results: list[dict[str, Any]],
) -> Profile | None:
    """Each level in turn, appended to ``results``; the top level sampled with ``--profile``."""
    profile = None
    for n in levels:
        sampler = None
        if args.profile and n == levels[-1]:
            sampler = Sampler(
                srv.pid,
                harness.RESULTS / f"concurrency-profile-{n}.txt",
                subprocesses=args.workers > 1,
            )
            sampler.start()
        result = await level(srv, call, turns, n, args.stagger)
        if sampler is not None:
            profile = sampler.stop()
            result["profile_raw"] = str(sampler.out)
        base = results[0]["voice_to_voice"]["all"]["p50"] if results else None
        p50 = result["voice_to_voice"]["all"]["p50"]
        result["drift_pct"] = round(100.0 * (p50 / base - 1), 1) if base else 0.0
        results.append(result)
        print_row(result)
    return profile


async def main_async(args: argparse.Namespace) -> None:
    calls, _barge = harness.load_calls()
    call = next(c for c in calls if c.name == args.call)
    levels = [int(v) for v in args.levels.split(",")]
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    turns = harness.caller_turns(call)
    results: list[dict[str, Any]] = []
    with (
        harness.standins(
            [call], stt_latency=0.3, llm_latency=0.4, tts_latency=0.15, name="concurrency"
        ) as s,
        harness.server(s.env(), name="concurrency", args=server_args(args)) as srv,
    ):
        print(
            f"{'N':>4} {'cpu/call':>9} {'cores':>6} {'gap p99':>8} {'gap max':>8} "
            f"{'late':>7} {'between':>8} {'v2v p50':>8} {'v2v p90':>8} {'drift':>7} "
            f"{'unans':>5} {'load':>5}"
        )
        profile = await run_levels(srv, call, turns, levels, args, results)
    if profile is not None:
        print_top(profile)
    after = harness.machine()
    cores = os.cpu_count() or 1
    passing = [
        r["n"]
        for r in results
        if r["pacing"]["gap_p99_ms"] <= MAX_GAP_P99_MS
        and r["drift_pct"] <= MAX_DRIFT_PCT
        and not r["failed_calls"]
        and r["voice_to_voice"]["unanswered"] == 0
    ]
    best = max(passing) if passing else 0
    harness.print_machine(after, "machine at end")
    print(
        f"largest N with p99 gap <= {MAX_GAP_P99_MS:.0f} ms and voice-to-voice within "
        f"{MAX_DRIFT_PCT:.0f}% of N=1: {best} "
        f"({best / cores:.1f} per core on {cores} cores, {best / args.workers:.0f} per worker "
        f"process with {args.workers}; target >= 25 per core)"
    )
    # CPU per call from the slope between the two lowest levels (what one more call costs),
    # not from a saturated level, where the cores are shared out and the calls fall behind.
    if len(results) >= 2:
        low, high = results[0], results[1]
        slope = (high["server_cores"] - low["server_cores"]) / max(high["n"] - low["n"], 1)
        print(
            f"CPU per added call (N={low['n']} -> N={high['n']}): {100 * slope:.1f}% of a core "
            f"(~{1 / slope if slope > 0 else float('inf'):.0f} calls per core by CPU alone; "
            "one server process runs on one core)"
        )
    path = harness.write_results(
        "concurrency",
        {
            "machine_start": before,
            "machine_end": after,
            "call": call.name,
            "levels": results,
            "best_n": best,
            "cores": cores,
            "workers": args.workers,
        },
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,5,10,20,30,50")
    parser.add_argument("--call", default="book-a-haircut", help="a call name in calls.yaml")
    parser.add_argument("--stagger", type=float, default=2.0, help="spread of call starts (s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server worker processes (run.py serve --workers N; CPU summed over them)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the server with py-spy at the top level"
    )
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
