"""Framework overhead: the same calls with instant stand-ins for STT, LLM and TTS.

    .venv/bin/python -m bench.overhead [--calls N] [-v]

The server runs with Deepgram, OpenAI-compatible and ElevenLabs stand-ins (bench.standins,
real protocols, zero latency: the transcript is ready at Finalize, the scripted reply and the
audio come at once). What remains of voice-to-voice is the VAD's stop time, our turn-end pause
after a finished sentence (both at their defaults, 200 + 600 ms), and what the pipeline itself
adds. Prints voice-to-voice at the phone, the per-stage split, and
the overhead = voice-to-voice - (VAD stop + turn pause), p50/p90. Writes
bench/results/overhead-*.json.
"""

from __future__ import annotations

import argparse

from bench import harness


async def main_async(args: argparse.Namespace) -> None:
    calls, _barge = harness.load_calls()
    calls = calls[: args.calls]
    before = harness.machine()
    harness.print_machine(before, "machine at start")
    env = {
        "FRONTDESK_VAD_STOP_SECS": str(args.vad_stop),
        "FRONTDESK_TURN_PAUSE_SECS": str(args.turn_pause),
    }
    waits_ms = 1000.0 * (args.vad_stop + float(env["FRONTDESK_TURN_PAUSE_SECS"]))
    with (
        harness.standins(calls, stt_latency=0, llm_latency=0, tts_latency=0, name="overhead") as s,
        harness.server(s.env() | env, name="overhead") as srv,
    ):
        turns, stages, reports = await harness.sequential_calls(srv, calls, verbose=args.verbose)
    after = harness.machine()
    v2v = harness.voice_to_voice(turns)
    overhead = [
        r["voice_to_voice_ms"] - waits_ms for r in turns if r["voice_to_voice_ms"] is not None
    ]
    print()
    harness.print_machine(after, "machine at end")
    print(
        f"calls {len(calls)}, caller turns {len(turns)}, unanswered {v2v['unanswered']}; "
        f"VAD stop {args.vad_stop * 1000:.0f} ms + turn pause "
        f"{float(env['FRONTDESK_TURN_PAUSE_SECS']) * 1000:.0f} ms = {waits_ms:.0f} ms of waiting"
    )
    print("voice-to-voice at the phone:")
    for label in ("all", "no-tool", "tool"):
        print(f"  {label:34s} {harness.fmt(v2v[label])}")
    stats = harness.summary(overhead)
    print(f"  {'framework overhead (beyond waits)':34s} {harness.fmt(stats)}")
    print("stages from the call records (ms after the caller's speech end):")
    stage_stats = harness.print_stages(stages)
    print(f"target: framework overhead p50 <= 20 ms (got {stats['p50']:.0f})")
    path = harness.write_results(
        "overhead",
        {
            "machine_start": before,
            "machine_end": after,
            "waits_ms": waits_ms,
            "voice_to_voice": v2v,
            "overhead": stats,
            "stages": stage_stats,
            "turns": turns,
            "stage_rows": stages,
            "reports": [r.to_json() for r in reports],
        },
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--vad-stop", type=float, default=0.2, help="FRONTDESK_VAD_STOP_SECS")
    parser.add_argument("--turn-pause", type=float, default=0.6, help="FRONTDESK_TURN_PAUSE_SECS")
    parser.add_argument("-v", "--verbose", action="store_true")
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
