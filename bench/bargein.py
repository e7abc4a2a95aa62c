"""Barge-in: the caller talks over a long answer; how fast does the bot stop?

    .venv/bin/python -m bench.bargein [--trials N] [--instant] [-v]

Replays the barge-in call of bench/calls.yaml N times (default 10) against the real server with
remote-style stand-ins (STT final 300 ms, LLM first token 400 ms, TTS first audio 150 ms;
``--instant`` for zero). The caller asks for something long and starts talking 1.5 s into the
answer. Per trial, from the caller's speech onset (as sent): the time to Twilio's ``clear`` and
to the last bot audio frame received before the bot went quiet. Trials where the bot was not
speaking at the onset are reported and left out. Writes bench/results/bargein-*.json.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import harness
from telephony.replay import Report


def measure(report: Report) -> dict[str, Any]:
    """Onset -> clear and onset -> last bot frame for the barge-in turn (turn 1)."""
    starts = [t.speech_start_ms for t in report.caller_turns if t.turn == 1]
    if not starts:
        return {"valid": False, "why": "the caller never got to barge in"}
    onset = starts[0]
    arrivals = report.frame_arrivals_ms
    speaking = any(onset - 100 <= a <= onset for a in arrivals)
    if not speaking:
        return {"valid": False, "why": "the bot was not speaking at the onset", "onset": onset}
    # The clear this barge-in caused (a later one belongs to a later interruption).
    clears = [c for c in report.clears if onset <= c <= onset + 10_000]
    last = onset
    for at in (a for a in arrivals if a > onset):
        if at - last > 250:
            break
        last = at
    return {
        "valid": True,
        "onset_ms": round(onset, 1),
        "clear_ms": round(clears[0] - onset, 1) if clears else None,
        "last_frame_ms": round(last - onset, 1),
    }


async def main_async(args: argparse.Namespace) -> None:
    _calls, call = harness.load_calls()
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    latency = (0.0, 0.0, 0.0) if args.instant else (0.3, 0.4, 0.15)
    turns = harness.caller_turns(call)
    trials = []
    with (
        harness.standins(
            [call],
            stt_latency=latency[0],
            llm_latency=latency[1],
            tts_latency=latency[2],
            name="bargein",
        ) as s,
        harness.server(s.env(), name="bargein") as srv,
    ):
        for index in range(args.trials):
            report = await harness.run_call(srv, call, turns)
            trial = measure(report)
            trials.append(trial)
            if args.verbose:
                print(f"  trial {index + 1}: {trial}", flush=True)
    after = harness.machine()
    valid = [t for t in trials if t["valid"]]
    clears = [t["clear_ms"] for t in valid if t["clear_ms"] is not None]
    lasts = [t["last_frame_ms"] for t in valid]
    print()
    harness.print_machine(after, "machine at end")
    kind = "instant" if args.instant else "remote-style (300/400/150 ms)"
    print(
        f"stand-ins {kind}; trials {len(trials)}, valid {len(valid)}, no clear "
        f"{len(valid) - len(clears)}"
    )
    stats = {"clear": harness.summary(clears), "last_frame": harness.summary(lasts)}
    print(f"  {'onset -> clear':34s} {harness.fmt(stats['clear'])}")
    print(f"  {'onset -> last bot frame':34s} {harness.fmt(stats['last_frame'])}")
    print(f"target: clear within 300 ms of the onset (got p50 {stats['clear']['p50']:.0f})")
    path = harness.write_results(
        "bargein",
        {"machine_start": before, "machine_end": after, "stats": stats, "trials": trials},
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--instant", action="store_true", help="zero-latency stand-ins")
    parser.add_argument("-v", "--verbose", action="store_true")
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
