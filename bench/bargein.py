"""Barge-in: the caller talks over a long answer; how fast does the bot stop? And does noise on
the caller's line stop it when nobody spoke?

    nice -n 5 .venv/bin/python -m bench.bargein [--trials N] [--noise N] [--compare] [-v]

Replays the barge-in call of bench/calls.yaml N times (default 10) against the real server with
remote-style stand-ins (STT final 300 ms, LLM first token 400 ms, TTS first audio 150 ms;
``--instant`` for zero). The caller asks for something long and starts talking 1.5 s into the
answer. Per trial, from the caller's speech onset (as sent): the time to Twilio's ``clear`` and
to the last bot audio frame received before the bot went quiet. Trials where the bot was not
speaking at the onset are reported and left out.

``--noise N``: per noise kind of bench/noise.py (taps, rubbing, dishes, office, traffic), N
calls in which the caller asks the same question and then, 1 s into the answer, only noise
reaches the line (2 s of it, a different seed per call): a ``clear`` is a false barge-in.

``--compare``: the same trials and noise calls, interleaved, on a second server with the VAD
settings from before issue 18 (start 0.2 s, pipecat's smoothed volume, one confidence), so
both are measured in the same sitting. Writes bench/results/bargein-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from bench import harness, noise
from telephony.replay import Report, Turn, converse

SETTINGS = {"new": {}, "old": noise.OLD_VAD}  # env on top of the stand-ins'
TARGET = {"p50": 250.0, "p90": 400.0}


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
        "vad_ms": _vad_ms(report, onset),
        "clear_ms": round(clears[0] - onset, 1) if clears else None,
        "last_frame_ms": round(last - onset, 1),
    }


def _vad_ms(report: Report, onset: float) -> float | None:
    """Onset -> the server's VAD heard the barge-in (the call record's second caller turn)."""
    callers = [t for t in (report.call_record or {}).get("turns", []) if t["role"] == "caller"]
    start = (callers[1].get("timings") or {}).get("speech_start") if len(callers) > 1 else None
    if not start:
        return None
    return round((start - report.started_at) * 1000.0 - onset, 1)


async def noise_call(srv: harness.ServerProcess, call: harness.Call, kind: str, seed: int) -> int:
    """One call with noise over the answer: how many clears it caused (0 is right). ``kind``
    "speech" is the control: the caller's cut-in instead of noise must cause one."""
    question, cut_in = harness.caller_turns(call)[:2]
    pcm = cut_in.pcm if kind == "speech" else noise.clip(kind, 2.0, seed)
    turns = [question, Turn(pcm=pcm, barge_in_after=1.0)]
    # The caller waits up to 4 s for the answer, and hangs up ~5 s after the noise.
    report, _heard = await converse(
        turns,
        noise.RATE,
        srv.url,
        auth_token=harness.AUTH_TOKEN,
        from_number=call.from_number,
        max_wait_secs=4.0,
        max_tail_secs=1.0,
    )
    # Asking clears the (already silent) greeting too; count only clears during the answer.
    asked = max(t.speech_end_ms for t in report.caller_turns if t.turn == 0)
    answers = [at for at in report.reply_starts_ms if at > asked]
    if not answers:
        raise RuntimeError(f"{kind}: the bot never answered the question")
    return sum(1 for c in report.clears if c > answers[0])


def summarize(label: str, trials: list[dict[str, Any]], false: dict[str, int], n: int) -> Any:
    valid = [t for t in trials if t["valid"]]
    clears = [t["clear_ms"] for t in valid if t["clear_ms"] is not None]
    lasts = [t["last_frame_ms"] for t in valid]
    vads = [t["vad_ms"] for t in valid if t.get("vad_ms") is not None]
    stats = {
        "vad": harness.summary(vads),
        "clear": harness.summary(clears),
        "last_frame": harness.summary(lasts),
    }
    print(f"{label} VAD settings: trials {len(trials)}, valid {len(valid)}, no clear ", end="")
    print(len(valid) - len(clears))
    print(f"  {'onset -> server VAD start':34s} {harness.fmt(stats['vad'])}")
    print(f"  {'onset -> clear':34s} {harness.fmt(stats['clear'])}")
    print(f"  {'onset -> last bot frame':34s} {harness.fmt(stats['last_frame'])}")
    if false:
        control = false.pop("speech")
        total = sum(false.values())
        print(f"  false barge-ins on noise (of {n} calls each): {false} total {total}")
        print(f"  control (the cut-in spoken in the same place) stopped the bot: {bool(control)}")
    return stats


async def main_async(args: argparse.Namespace) -> None:
    _calls, call = harness.load_calls()
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    latency = (0.0, 0.0, 0.0) if args.instant else (0.3, 0.4, 0.15)
    labels = ["new", "old"] if args.compare else ["new"]
    turns = harness.caller_turns(call)
    trials: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    false: dict[str, dict[str, int]] = {label: {} for label in labels}
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(
            harness.standins(
                [call],
                stt_latency=latency[0],
                llm_latency=latency[1],
                tts_latency=latency[2],
                name="bargein",
            )
        )
        servers = {
            label: stack.enter_context(
                harness.server({**s.env(), **SETTINGS[label]}, name=f"bargein-{label}")
            )
            for label in labels
        }
        for index in range(args.trials):
            for label in labels:  # interleaved: both see the same machine
                trial = measure(await harness.run_call(servers[label], call, turns))
                trials[label].append(trial)
                if args.verbose:
                    print(f"  {label} trial {index + 1}: {trial}", flush=True)
        for kind in ["speech", *noise.KINDS] if args.noise else ():
            for seed in range(1 if kind == "speech" else args.noise):
                for label in labels:
                    count = await noise_call(servers[label], call, kind, seed)
                    false[label][kind] = false[label].get(kind, 0) + (count > 0)
                    if args.verbose:
                        print(f"  {label} {kind} seed {seed}: {count} clear(s)", flush=True)
    after = harness.machine()
    print()
    harness.print_machine(after, "machine at end")
    kind = "instant" if args.instant else "remote-style (300/400/150 ms)"
    print(f"stand-ins {kind}")
    stats = {label: summarize(label, trials[label], false[label], args.noise) for label in labels}
    new = stats["new"]["clear"]
    if args.compare and stats["old"]["clear"]["n"] and new["n"]:
        old = stats["old"]["clear"]
        print(
            f"new/old onset -> clear: p50 {new['p50'] / old['p50']:.2f}, "
            f"p90 {new['p90'] / old['p90']:.2f}"
        )
    print(
        f"target: clear p50 <= {TARGET['p50']:.0f} ms, p90 <= {TARGET['p90']:.0f} ms "
        f"(got p50 {new['p50']:.0f}, p90 {new['p90']:.0f}); no more false barge-ins than before"
    )
    path = harness.write_results(
        "bargein",
        {
            "machine_start": before,
            "machine_end": after,
            "stats": stats,
            "trials": trials,
            "false_barge_ins": false,
        },
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--noise", type=int, default=0, help="noise calls per kind")
    parser.add_argument("--compare", action="store_true", help="also the old VAD settings")
    parser.add_argument("--instant", action="store_true", help="zero-latency stand-ins")
    parser.add_argument("-v", "--verbose", action="store_true")
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
