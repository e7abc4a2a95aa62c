"""Render numbers, times, dates, prices and phone numbers as words a TTS voice reads well."""

from __future__ import annotations

import re
from datetime import date, datetime, time

import phonenumbers
from num2words import num2words

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def say_number(value: int) -> str:
    return str(num2words(value))


def say_price(cents: int) -> str:
    dollars, rest = divmod(cents, 100)
    words = f"{say_number(dollars)} dollar{'s' if dollars != 1 else ''}" if dollars else ""
    if rest:
        cents_words = f"{say_number(rest)} cent{'s' if rest != 1 else ''}"
        words = f"{words} and {cents_words}" if words else cents_words
    return words or "free"


def say_time(value: time | datetime) -> str:
    hour, minute = value.hour, value.minute
    if hour == 12 and minute == 0:
        return "noon"
    if (hour, minute) == (23, 59) and value.second == 59:  # "open until 24:00"
        return "midnight"
    suffix = "a m" if hour < 12 else "p m"
    hour12 = hour % 12 or 12
    if minute == 0:
        return f"{say_number(hour12)} {suffix}"
    if minute < 10:
        return f"{say_number(hour12)} oh {say_number(minute)} {suffix}"
    return f"{say_number(hour12)} {say_number(minute)} {suffix}"


def say_date(value: date | datetime, today: date | None = None) -> str:
    day = value.date() if isinstance(value, datetime) else value
    if today is not None:
        delta = (day - today).days
        if delta == 0:
            return "today"
        if delta == 1:
            return "tomorrow"
        if 1 < delta < 7:
            return day.strftime("%A")
    ordinal = num2words(day.day, to="ordinal")
    return f"{day.strftime('%A')}, {day.strftime('%B')} {ordinal}"


def say_when(value: datetime, today: date | None = None) -> str:
    return f"{say_date(value, today)} at {say_time(value)}"


def say_duration(minutes: int) -> str:
    hours, mins = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{say_number(hours)} hour{'s' if hours != 1 else ''}")
    if mins:
        parts.append(f"{say_number(mins)} minute{'s' if mins != 1 else ''}")
    return " and ".join(parts) or "no time"


def say_phone(e164: str) -> str:
    """Digits read one by one in groups: "+15550142" -> "five five five, zero one four two"."""
    try:
        parsed = phonenumbers.parse(e164, None)
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    except phonenumbers.NumberParseException:
        national = e164
    groups = re.findall(r"\d+", national)
    return ", ".join(" ".join(_DIGIT_WORDS[int(d)] for d in group) for group in groups)


def join_words(items: list[str], conjunction: str = "or") -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


_NUMBER_RE = re.compile(r"\$(\d+)(?:\.(\d{2}))?|(\d{1,2}):(\d{2})\s*([ap])\.?m\.?|\b(\d+)\b", re.I)


def spoken_text(text: str) -> str:
    """Best-effort rewrite of digits, prices and clock times in free text into words.

    Used on LLM replies before synthesis; tool sentences are already written in words.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            cents = int(match.group(1)) * 100 + int(match.group(2) or 0)
            return say_price(cents)
        if match.group(3) is not None:
            hour, minute = int(match.group(3)), int(match.group(4))
            hour = hour % 12 + (12 if match.group(5).lower() == "p" else 0)
            if 0 <= hour < 24 and 0 <= minute < 60:
                return say_time(time(hour, minute))
            return match.group(0)
        digits = match.group(6)
        if len(digits) >= 5:
            return " ".join(_DIGIT_WORDS[int(d)] for d in digits)
        return say_number(int(digits))

    text = re.sub(r"\b(\d{1,2})\s*([ap])\.?m\.?\b", r"\1:00 \2m", text, flags=re.I)
    return _NUMBER_RE.sub(replace, text)
