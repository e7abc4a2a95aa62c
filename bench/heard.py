"""Between "first audio sent" and "heard at the phone": the local TTS's share of voice-to-voice.

    nice -n 5 .venv/bin/python -m bench.heard [--calls N] [-v]

Runs the real server with the local TTS (hibari) and remote-style stand-ins for the STT and the
LLM (300 / 400 ms, so the CPU goes to what is measured), replays the calls of bench/calls.yaml
and prints, per answered caller turn, p50/p90 of: the server's first bot audio frame sent
(call record, after the caller's speech end), the first loud frame at the phone (the replay),
and the difference: the leading silence of the audio and whatever delays it on the way out
(the transport sends its lead of 100 ms at once, then paces in real time).

To measure another checkout the same way (e.g. before a change), run this file with that
checkout as the working directory and on PYTHONPATH; the server it starts is that checkout's.
Writes bench/results/heard-*.json.
"""

from __future__ import annotations

import argparse

from bench import harness
from telephony.replay import Report


def gaps(report: Report) -> list[dict[str, float]]:
    """Per bot turn of the call record that followed a caller's speech: first audio sent and
    heard (the first loud frame at the phone from then on), ms after the caller's speech end,
    and the gap between them. Both clocks are this machine's wall clock."""
    out = []
    for turn in (report.call_record or {}).get("turns", []):
        timings = turn.get("timings") or {}
        if turn["role"] == "caller" or not {"speech_end", "first_audio_sent"} <= set(timings):
            continue
        sent_ms = (timings["first_audio_sent"] - report.started_at) * 1000.0
        heard_ms = next((at for at in report.reply_starts_ms if at >= sent_ms - 1.0), None)
        if heard_ms is None or heard_ms - sent_ms > 2000:
            continue  # never heard loud (cut off at once)
        end_ms = (timings["speech_end"] - report.started_at) * 1000.0
        out.append(
            {
                "sent": round(sent_ms - end_ms, 1),
                "heard": round(heard_ms - end_ms, 1),
                "gap": round(heard_ms - sent_ms, 1),
            }
        )
    return out


async def main_async(args: argparse.Namespace) -> None:
    calls, _barge = harness.load_calls()
    calls = calls[: args.calls]
    harness.print_machine(harness.machine(), "machine at start")
    with harness.standins(calls, stt_latency=0.3, llm_latency=0.4, tts_latency=0.0) as s:
        env = {k: v for k, v in s.env().items() if not k.startswith("ELEVENLABS")}
        with harness.server(env, name="heard") as srv:
            _turns, _stages, reports = await harness.sequential_calls(
                srv, calls, verbose=args.verbose
            )
    measured = [row for report in reports for row in gaps(report)]
    harness.print_machine(harness.machine(), "machine at end")
    print(f"calls {len(calls)}, turns measured {len(measured)} (local TTS, stand-in STT/LLM)")
    stats = {key: harness.summary([r[key] for r in measured]) for key in ("sent", "heard", "gap")}
    print(f"  {'first audio sent':34s} {harness.fmt(stats['sent'])}")
    print(f"  {'first audio heard at the phone':34s} {harness.fmt(stats['heard'])}")
    print(f"  {'sent -> heard':34s} {harness.fmt(stats['gap'])}")
    path = harness.write_results("heard", {"stats": stats, "rows": measured})
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true")
    harness.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
