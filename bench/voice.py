"""Voice-to-voice on the embedded default: local Whisper, local LLM, hibari, nothing remote.

    nice -n 5 .venv/bin/python -m bench.voice [--calls N] [-v]
    nice -n 5 .venv/bin/python -m bench.voice --concurrent 2 [--calls N]
    nice -n 5 .venv/bin/python -m bench.voice [--calls N] [--env FRONTDESK_X=Y] [-v]

Starts the real server (``run.py serve``) with the local models, replays the calls of
bench/calls.yaml one after another with a turn-taking caller (each turn spoken when the bot has
finished answering the previous one), and prints p50/p90 of caller-speech-end -> first bot
audio at the phone, for plain and tool turns, and the per-stage split from the call records
(instants after the caller's speech end: turn end, STT final, LLM first token, first sentence,
TTS first audio, first audio sent). The default (10 calls, 40 caller turns) is the issue's
minimum; it takes about 10 minutes on 2 cores. Writes bench/results/voice-*.json.

With ``--concurrent N`` the calls are dealt to N callers who call at the same time (each its
share one after another), and voice-to-voice is printed per caller
as well: N calls sharing the one local model.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench import harness

TARGETS = {"no-tool p50": 1200.0, "tool (first audio) p50": 1500.0}


async def main_async(args: argparse.Namespace) -> None:
    calls, _barge = harness.load_calls()
    calls = calls[: args.calls]
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    started = time.perf_counter()
    lanes = max(1, args.concurrent)
    # One slot more than callers: a call's slot is given back a moment after its caller hangs up.
    env = {"FRONTDESK_LOCAL_MAX_CALLS": str(lanes + 1), **dict(args.env)}
    with harness.server(env, name="voice") as srv:
        print(f"server ready in {time.perf_counter() - started:.0f}s (models loaded, prompt kept)")
        per_lane = await asyncio.gather(
            *(
                harness.sequential_calls(
                    srv, calls[lane::lanes], verbose=args.verbose, max_wait_secs=args.max_wait
                )
                for lane in range(lanes)
            )
        )
    turns = [row for lane in per_lane for row in lane[0]]
    stages = [row for lane in per_lane for row in lane[1]]
    reports = [report for lane in per_lane for report in lane[2]]
    after = harness.machine()
    v2v = harness.voice_to_voice(turns)
    print()
    harness.print_machine(after, "machine at end")
    print(f"calls {len(calls)}, caller turns {len(turns)}, unanswered {v2v['unanswered']}")
    print("voice-to-voice at the phone (caller speech end -> first bot audio):")
    for label in ("all", "no-tool", "tool"):
        print(f"  {label:34s} {harness.fmt(v2v[label])}")
    by_lane: dict[str, Any] = {}
    if lanes > 1:
        print(f"{lanes} callers at once, each:")
        for lane, (rows, _stages, _reports) in enumerate(per_lane):
            by_lane[f"caller {lane + 1}"] = mine = harness.voice_to_voice(rows)
            print(f"  caller {lane + 1} {'all':25s} {harness.fmt(mine['all'])}")
    print("stages from the call records (ms after the caller's speech end):")
    stage_stats = harness.print_stages(stages)
    print(
        f"targets: no-tool p50 <= 1200 ms (got {v2v['no-tool']['p50']:.0f}); "
        f"tool-turn first audio p50 <= 1500 ms (got {v2v['tool']['p50']:.0f})"
    )
    path = harness.write_results(
        "voice",
        {
            "machine_start": before,
            "machine_end": after,
            "voice_to_voice": v2v,
            "concurrent": lanes,
            "voice_to_voice_per_caller": by_lane,
            "stages": stage_stats,
            "turns": turns,
            "stage_rows": stages,
            "reports": [r.to_json() for r in reports],
        },
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="how many calls of calls.yaml")
    parser.add_argument(
        "--concurrent", type=int, default=1, help="callers calling at the same time"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each call")
    parser.add_argument(
        "--max-wait", type=float, default=90.0, help="seconds a caller waits for an answer"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        help="KEY=VALUE for the server (e.g. FRONTDESK_TURN_SPECULATE=0), repeatable",
    )
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
