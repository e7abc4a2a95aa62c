"""Phone numbers as callers say them and speech recognisers write them down.

A caller says "six one seven, five five five, oh one two three", "five fifty-five", "double
five", "eight hundred"; a recogniser writes "617 555 Zero, one, two, three", "for 1-3" (four
one three), "to" (two). :func:`phone_from_speech` turns any such mix into E.164.

The homophones ("for", "to", "too", "won", "ate", "oh", "o", "tree") count as digits only next to
other digits; when the result is not a valid number, the readings that drop one at either end
of a run are tried too ("send it to six one seven..." is not "2617...").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from tools.domain.validation import DEFAULT_REGION, InvalidPhoneNumber, phone_e164

_UNITS = {
    "zero": "0",
    "nought": "0",
    "naught": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "niner": "9",
}
#: Words a recogniser writes for a digit it heard, which are also ordinary words.
_HOMOPHONES = {
    "oh": "0",
    "o": "0",
    "won": "1",
    "to": "2",
    "too": "2",
    "for": "4",
    "fore": "4",
    "tree": "3",
    "ate": "8",
}
_TEENS = {
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
}
_TENS = {
    "twenty": "2",
    "thirty": "3",
    "forty": "4",
    "fourty": "4",
    "fifty": "5",
    "sixty": "6",
    "seventy": "7",
    "eighty": "8",
    "ninety": "9",
}
_REPEATS = {"double": 2, "triple": 3, "treble": 3}
#: Words that may sit inside a spoken number without ending it.
_FILLERS = {"and", "uh", "um", "er", "area", "code", "is", "it's", "its", "dash", "hyphen"}

_TOKEN_RE = re.compile(r"\+|\d+|[a-z']+")


@dataclass(frozen=True)
class _Digits:
    """One spoken piece: its digits, and whether it is a homophone that may be a plain word."""

    text: str
    homophone: bool = False


def _piece(word: str, following: str) -> _Digits | None:
    """The digits ``word`` stands for (``following`` decides "fifty" and "hundred"); None: a
    word that is no part of a number."""
    if word.isdigit():
        return _Digits(word)
    if word in ("+", "plus"):
        return _Digits("+")
    if word in _UNITS:
        return _Digits(_UNITS[word])
    if word in _HOMOPHONES:
        return _Digits(_HOMOPHONES[word], homophone=True)
    if word in _TEENS:
        return _Digits(_TEENS[word])
    if word in _TENS:
        # "fifty five" is 55, a lone "fifty" 50.
        return _Digits(_TENS[word] + ("" if following in _UNITS else "0"))
    if word == "hundred":
        # "eight hundred" is 800, "four hundred twelve" 412.
        return _Digits("" if following in _TENS or following in _TEENS else "00")
    if word == "thousand":
        return _Digits("000")
    return None


def _runs(text: str) -> list[list[_Digits]]:
    """The runs of number words in ``text``: a word that is no part of a number (a filler
    such as "uh" or "area code" aside) ends a run. Runs of homophones only are dropped."""
    words = [w for w in _TOKEN_RE.findall(text.lower().replace("-", " ")) if w not in _FILLERS]
    runs: list[list[_Digits]] = [[]]
    repeat = 1
    for index, word in enumerate(words):
        if word in _REPEATS:
            repeat = _REPEATS[word]
            continue
        piece = _piece(word, words[index + 1] if index + 1 < len(words) else "")
        if piece is None:
            runs.append([])
        elif piece.text:
            # "double five" is 55; "treble 52828" (a recogniser gluing on what follows) 5552828.
            text = piece.text[0] * repeat + piece.text[1:] if repeat > 1 else piece.text
            runs[-1].append(_Digits(text, piece.homophone))
        repeat = 1
    return [run for run in runs if any(not piece.homophone for piece in run)]


def _readings(run: list[_Digits]) -> list[str]:
    """The run's digits, most likely reading first: every homophone a digit; then the readings
    that take homophones at either end as plain words ("send it to six one seven")."""
    firm = [i for i, piece in enumerate(run) if not piece.homophone]
    lead, trail = firm[0], len(run) - 1 - firm[-1]
    readings = [
        "".join(piece.text for piece in run[drop_lead : len(run) - drop_trail])
        for drop_lead, drop_trail in itertools.product(range(lead + 1), range(trail + 1))
    ]
    return list(dict.fromkeys(readings))


def spoken_digits(text: str) -> list[str]:
    """Candidate digit strings for the number said in ``text``, most likely first ("" never)."""
    runs = _runs(text)
    if not runs:
        return []
    candidates: list[str] = []
    # The whole number, runs joined ("six one seven, five five five, ..."), then each run.
    per_run = [_readings(run) for run in runs]
    for combination in itertools.islice(itertools.product(*per_run), 64):
        candidates.append("".join(combination))
    for readings in per_run:
        candidates.extend(readings)
    return [c for c in dict.fromkeys(candidates) if c.strip("+")]


def phone_from_speech(text: str, region: str = DEFAULT_REGION) -> str:
    """E.164 of the phone number said in ``text``; :class:`InvalidPhoneNumber` when no reading
    of it is a valid number (``region`` applies to numbers without a country code)."""
    for digits in spoken_digits(text):
        try:
            return phone_e164(digits, region)
        except InvalidPhoneNumber:
            continue
    raise InvalidPhoneNumber(f"{text!r} does not contain a valid phone number")
