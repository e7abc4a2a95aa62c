"""Spoken phone numbers through the phone line and local Whisper, then our number parser.

    nice -n 5 .venv/bin/python -m bench.phone_numbers [--write]

Each way of saying a number (digit by digit, "oh", "double", "fifty-five", "eight hundred",
with "area code" and fillers) is spoken by the local TTS at two speeds, sent through 8 kHz
mu-law, clean and with noise at 12 dB, and transcribed by Whisper as a call would be. Prints
how often the number comes back exactly, refused, or wrong, by how it was said.
``--write`` stores the transcripts in tests/data/whisper_phone_transcripts.json, which
tests/test_spoken_phone.py reads: the transcripts Whisper really produces.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "whisper_phone_transcripts.json"
RATE = 16000
PHONE_RATE = 8000
PAD_SECS = 0.4

#: (said, E.164 meant): varied digits, so no single number's quirks decide the figures.
SAYINGS: list[tuple[str, str]] = [
    ("Six one seven, five five five, zero one two three.", "+16175550123"),
    ("My number is four one three, five five five, oh one nine nine.", "+14135550199"),
    ("It's two oh six, five five five, four four eight one.", "+12065554481"),
    ("Four one three, five five five, double oh one two.", "+14135550012"),
    ("Area code three one two, then eight six seven, five three zero nine.", "+13128675309"),
    ("Sure, it's nine one nine, two two four, seven seven three zero.", "+19192247730"),
    ("Five oh three, five five five, one two one two.", "+15035551212"),
    ("One eight hundred, five five five, two four six eight.", "+18005552468"),
    ("Seven one eight, five fifty-five, oh one forty-two.", "+17185550142"),
    ("It's eight four seven, uh, five five five, nine nine one four.", "+18475559914"),
    ("You can reach me at two one four, three three eight, six five zero one.", "+12143386501"),
    ("Four zero four, triple five, two eight two eight.", "+14045552828"),
    ("Plus one, six four six, five five five, three one seven four.", "+16465553174"),
    ("The number is eight one eight, four two two, zero nine zero nine.", "+18184220909"),
    ("Nine seven three, six one two, four four zero eight.", "+19736124408"),
    ("Three oh five, five five five, two two one seven.", "+13055552217"),
]


def recordings(texts: list[str], snr: float) -> list[tuple[str, float, str, bytes]]:
    """(text, speed, kind, 8 kHz phone-band PCM) for each text, speed and noise."""
    from tests.caller_audio import add_noise, silence, speech
    from tests.listening import phone_band

    out = []
    for text in texts:
        for speed in (0.9, 1.0, 1.15):
            pcm = silence(PAD_SECS) + speech(text, speed) + silence(PAD_SECS)
            out.append((text, speed, "clean", phone_band(pcm)))
            out.append((text, speed, "noisy", phone_band(add_noise(pcm, snr))))
    return out


def transcripts(snr: float) -> list[dict[str, Any]]:
    from agent.whisper import WhisperRecognizer, pcm_to_audio
    from bench.stt import load_model

    recognizer = WhisperRecognizer(load_model(), threading.Semaphore(2))
    recognizer.warm_up()
    meant = dict(SAYINGS)
    rows = []
    clips = recordings([said for said, _ in SAYINGS], snr)
    for n, (said, speed, kind, pcm) in enumerate(clips, 1):
        heard = recognizer.transcribe(pcm_to_audio(pcm, PHONE_RATE))
        rows.append(
            {"said": said, "speed": speed, "kind": kind, "heard": heard, "e164": meant[said]}
        )
        print(f"\r  transcribed {n}/{len(clips)}", end="", flush=True)
    print()
    return rows


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from tools.domain.spoken_phone import phone_from_speech
    from tools.domain.validation import InvalidPhoneNumber

    tally: dict[str, dict[str, int]] = {}
    for row in rows:
        try:
            got = phone_from_speech(row["heard"])
            result = "exact" if got == row["e164"] else "wrong"
        except InvalidPhoneNumber:
            result = "refused"
        counts = tally.setdefault(row["kind"], {"exact": 0, "refused": 0, "wrong": 0})
        counts[result] += 1
        if result != "exact":
            print(f"  {result:8} {row['kind']:5} {row['heard']!r}  (meant {row['e164']})")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--snr", type=float, default=12.0, help="signal-to-noise ratio of the noisy takes (dB)"
    )
    parser.add_argument("--write", action="store_true", help=f"store the transcripts in {OUT}")
    args = parser.parse_args()
    rows = transcripts(args.snr)
    for kind, counts in score(rows).items():
        total = sum(counts.values())
        print(
            f"{kind}: {counts['exact']}/{total} exact, {counts['refused']} refused, "
            f"{counts['wrong']} wrong"
        )
    if args.write:
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
