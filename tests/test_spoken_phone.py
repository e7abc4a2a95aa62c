"""Phone numbers as callers say them and as Whisper writes them down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.domain.spoken_phone import phone_from_speech
from tools.domain.validation import InvalidPhoneNumber

TRANSCRIPTS = Path(__file__).parent / "data" / "whisper_phone_transcripts.json"


@pytest.mark.parametrize(
    ("said", "e164"),
    [
        # The issue's own examples: words, a recogniser's mix, and "for" heard for "four".
        ("six one seven, five five five, zero one two three", "+16175550123"),
        ("617 555 Zero, one, two, three", "+16175550123"),
        ("for 1-3, 555, 0199", "+14135550199"),
        ("to 1-3, 555, 0123", "+12135550123"),
        ("my number is four one three five five five oh one nine nine", "+14135550199"),
        ("four one three, double five five, oh one nine nine", "+14135550199"),
        ("four oh four, triple five, two eight two eight", "+14045552828"),
        ("For 04, treble 52828.", "+14045552828"),
        ("seven one eight, five fifty-five, oh one forty-two", "+17185550142"),
        ("one eight hundred, five five five, two four six eight", "+18005552468"),
        ("four hundred twelve, five five five, oh one nine nine", "+14125550199"),
        ("plus one six four six five five five three one seven four", "+16465553174"),
        ("(617) 555-0123", "+16175550123"),
        ("area code three one two, uh, eight six seven, five three oh nine", "+13128675309"),
        ("+44 20 7946 0958", "+442079460958"),
        # A homophone before the number is a plain word when the digits alone make a number.
        ("send it to six one seven five five five zero one two three", "+16175550123"),
        ("it's for six one seven five five five zero one two three", "+16175550123"),
    ],
)
def test_spoken_numbers_are_understood(said: str, e164: str) -> None:
    assert phone_from_speech(said) == e164


def test_the_business_region_reads_national_numbers() -> None:
    assert phone_from_speech("oh two oh, seven nine four six, oh nine five eight", "GB") == (
        "+442079460958"
    )


@pytest.mark.parametrize(
    "said",
    [
        "",
        "I'd like a haircut for two at four",
        "six one seven five five five",  # too short
        "to for to for",  # homophones alone are words
        "my number is",
    ],
)
def test_what_is_not_a_number_is_refused(said: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        phone_from_speech(said)


def test_whisper_transcripts_give_the_number_or_a_request_to_repeat() -> None:
    """Transcripts local Whisper produced from spoken numbers over the phone band (written by
    `python -m bench.phone_numbers --write`): a wrong digit there can't be recovered, but a
    misread number must never pass for a valid one, and most must come back exactly."""
    rows = json.loads(TRANSCRIPTS.read_text())
    exact, wrong = 0, []
    for row in rows:
        try:
            got = phone_from_speech(row["heard"])
        except InvalidPhoneNumber:
            continue
        if got == row["e164"]:
            exact += 1
        else:
            wrong.append((row["heard"], got))
    assert not wrong
    assert exact >= 0.6 * len(rows), f"{exact}/{len(rows)} exact"
