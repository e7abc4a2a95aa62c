"""Resolve a caller's own words for a time ("this Friday at 2pm", "tomorrow morning") to a window.

Day expressions relative to today, weekdays and parts of the day are handled here, where their
conventions are explicit; calendar dates and everything else go to ``dateparser``. Everything is
resolved in the business's time zone against a given "now".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

import dateparser

from tools.errors import ToolError

WEEKDAY_NAMES = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thu": 3, "thur": 3, "thurs": 3, "friday": 4, "fri": 4,
    "saturday": 5, "sat": 5, "sunday": 6, "sun": 6,
}  # fmt: skip

PARTS_OF_DAY = {
    "morning": (time(8, 0), time(12, 0)),
    "lunchtime": (time(11, 30), time(14, 0)),
    "lunch": (time(11, 30), time(14, 0)),
    "afternoon": (time(12, 0), time(17, 0)),
    "evening": (time(17, 0), time(21, 0)),
    "tonight": (time(17, 0), time(21, 0)),
    "night": (time(17, 0), time(21, 0)),
}

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "thirty": 30,
    "forty five": 45, "forty-five": 45, "half past": -30, "quarter past": -15,
}  # fmt: skip


@dataclass(frozen=True)
class When:
    """A requested window: a first day to look at, optional time bounds, and whether exact."""

    day: date
    earliest: time | None = None
    latest: time | None = None
    exact: time | None = None
    any_day: bool = False  # "next week", "as soon as possible": search forward from day
    days: int = 1  # how many days the request spans

    def target(self, tz: tzinfo) -> datetime | None:
        """The exact moment asked for, in ``tz``; None when the request is a window."""
        if self.exact is None:
            return None
        return datetime.combine(self.day, self.exact, tz)


_TIME_RE = re.compile(
    r"\b(?:at|around|about|by|for)?\s*(\d{1,2})(?::|\.)?(\d{2})?\s*(a\.?\s?m\.?|p\.?\s?m\.?|o'?clock)?\b"
)


def _words_to_digits(text: str) -> str:
    for words, value in sorted(_NUMBER_WORDS.items(), key=lambda kv: -len(kv[0])):
        if value < 0:
            continue
        text = re.sub(rf"\b{words}\b", str(value), text)
    text = re.sub(r"\bhalf past (\d{1,2})\b", r"\1:30", text)
    text = re.sub(r"\bquarter past (\d{1,2})\b", r"\1:15", text)
    text = re.sub(r"\bquarter to (\d{1,2})\b", lambda m: f"{int(m.group(1)) - 1}:45", text)
    text = re.sub(r"\b(\d{1,2}) (\d{2}) ?(am|pm|a m|p m)\b", r"\1:\2 \3", text)
    text = re.sub(r"\b(\d{1,2}) (30|15|45)\b", r"\1:\2", text)
    return text


def _parse_clock(hour: int, minute: int, suffix: str) -> time | None:
    suffix = suffix.replace(".", "").replace(" ", "")
    if minute > 59 or hour > 23:
        return None
    if suffix.startswith("p") and hour < 12:
        hour += 12
    elif suffix.startswith("a") and hour == 12:
        hour = 0
    elif not suffix or suffix.startswith("o"):
        # Bare "at 2": a salon means the afternoon, "at 9" means the morning.
        if 1 <= hour <= 7:
            hour += 12
    return time(hour, minute)


def _extract_noon(text: str) -> tuple[str, time | None, time | None, time | None]:
    """ "noon", "before midday", "after noon": (rest, exact, earliest, latest)."""
    match = re.search(
        r"(?:\b(at|around|by|before|until|till|after|from)\s+)?\b(noon|midday)\b", text
    )
    if match is None:
        return text, None, None, None
    rest = text[: match.start()] + " " + text[match.end() :]
    qualifier_word = match.group(1) or ""
    if qualifier_word in ("before", "until", "till"):
        return rest, None, None, time(12, 0)
    if qualifier_word in ("after", "from"):
        return rest, None, time(12, 0), None
    return rest, time(12, 0), None, None


def _extract_part_of_day(text: str) -> tuple[str, tuple[time, time] | None]:
    """ "in the morning", "this afternoon": (rest, (earliest, latest))."""
    for word, bounds in PARTS_OF_DAY.items():
        if re.search(rf"\b{word}\b", text):
            return re.sub(rf"\b(in the |this )?{word}\b", " ", text), bounds
    return text, None


def _clock_in(text: str, match: re.Match[str], qualified: bool) -> time | None:
    """The clock time ``match`` found, if it is one: "at 2", "2:30", "3 pm" (or a bare number
    after "after"/"before"), not a day of the month ("the 20th")."""
    hour_text, minute_text, suffix = match.group(1), match.group(2), match.group(3) or ""
    has_marker = bool(minute_text or suffix) or re.search(
        r"\b(at|around|about|by)\s*$", text[: match.start(1)]
    )
    if not has_marker and not qualified:
        return None
    if re.match(r"(st|nd|rd|th)\b", text[match.end() : match.end() + 2]):
        return None
    return _parse_clock(int(hour_text), int(minute_text or 0), suffix.lower())


def _extract_time(text: str) -> tuple[str, time | None, time | None, time | None]:
    """Pull time-of-day constraints out of text; returns (rest, exact, earliest, latest)."""
    text, exact, earliest, latest = _extract_noon(text)
    text, part_of_day = _extract_part_of_day(text)
    if part_of_day is not None:
        earliest, latest = part_of_day
    qualifier = re.search(r"\b(after|before|from|until|till|not before|not after)\s+(\d)", text)
    for match in _TIME_RE.finditer(text):
        parsed = _clock_in(text, match, qualifier is not None)
        if parsed is None:
            continue
        if earliest and latest and parsed.hour + 12 < 24 and parsed < earliest and not match[3]:
            parsed = parsed.replace(hour=parsed.hour + 12)
        word = qualifier.group(1) if qualifier and qualifier.start() < match.start(1) else ""
        if word in ("after", "from", "not before"):
            earliest = parsed
        elif word in ("before", "until", "till", "not after"):
            latest = parsed
        else:
            exact = parsed
        text = text[: match.start()] + " " + text[match.end() :]
        break
    return text, exact, earliest, latest


def _next_weekday(today: date, weekday: int, modifier: str) -> date:
    ahead = (weekday - today.weekday()) % 7
    coming = today + timedelta(days=ahead)
    if modifier == "next":
        # "next Tuesday": the coming one if it falls in next calendar week, else a week later.
        this_week_end = today + timedelta(days=6 - today.weekday())
        if coming <= this_week_end:
            coming += timedelta(days=7)
    return coming


@dataclass(frozen=True)
class _Days:
    day: date
    days: int = 1
    any_day: bool = False


def _relative_day(text: str, today: date) -> _Days | None:
    """Days named relative to today: "tomorrow", "this weekend", "next week", "Friday"."""
    if re.search(r"\bday after tomorrow\b", text):
        return _Days(today + timedelta(days=2))
    if re.search(r"\b(tomorrow|tmrw|tomorow)\b", text):
        return _Days(today + timedelta(days=1))
    if re.search(
        r"\b(today|tonight|this (morning|afternoon|evening))\b|\bnow\b|\bright away\b", text
    ):
        return _Days(today)
    if match := re.search(r"\b(this|next|coming|on)?\s*weekend\b", text):
        return _Days(_next_weekday(today, 5, match.group(1) or ""), days=2)
    if match := re.search(r"\b(this|next|coming)?\s*week\b", text):
        if match.group(1) == "next":
            return _Days(today + timedelta(days=7 - today.weekday()), days=7, any_day=True)
        return _Days(today, days=7 - today.weekday(), any_day=True)
    for name, weekday in WEEKDAY_NAMES.items():
        if match := re.search(rf"\b(this|next|coming|on)?\s*{name}\b", text):
            return _Days(_next_weekday(today, weekday, (match.group(1) or "").strip()))
    return None


def _calendar_date(text: str, now: datetime) -> datetime | None:
    """A calendar date (and maybe a time) in what is left, read by ``dateparser``."""
    stripped = re.sub(r"\b(on|at|for|the|please|an?|appointment|book|i'd like|like)\b", " ", text)
    stripped = " ".join(stripped.split())
    if not stripped:
        return None
    parsed: datetime | None = dateparser.parse(
        stripped,
        languages=["en"],
        settings={
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": now.replace(tzinfo=None),
            "DATE_ORDER": "MDY",
            "PREFER_DAY_OF_MONTH": "first",
            "RETURN_AS_TIMEZONE_AWARE": False,
        },
    )
    return parsed


def resolve_when(text: str, now: datetime) -> When:
    """Resolve caller words to a window, relative to ``now`` (aware, in the business zone)."""
    original = text
    text = " " + _words_to_digits(text.lower().strip()) + " "
    text = text.replace("’", "'")
    today = now.date()
    if re.search(
        r"\b(asap|as soon as possible|earliest|soonest|first available|any ?time|whenever)\b", text
    ):
        return When(day=today, earliest=now.time(), any_day=True, days=14)
    text, exact, earliest, latest = _extract_time(text)
    named = _relative_day(text, today)
    if named is None and (parsed := _calendar_date(text, now)) is not None:
        named = _Days(parsed.date())
        if exact is None and (parsed.hour or parsed.minute) and parsed.date() != today:
            exact = parsed.time()
        if named.day < today:
            named = _Days(named.day.replace(year=named.day.year + 1))
    if named is None:
        if exact is None and earliest is None and latest is None:
            raise ToolError(
                f"Sorry, I didn't catch when you'd like to come in{_echo(original)}. "
                "What day and time would suit you?",
                code="unparsed_when",
            )
        # A time alone: today, unless it has passed.
        probe = exact or earliest or time(0, 0)
        passed = probe <= now.time() and (latest is None or latest <= now.time())
        named = _Days(today + timedelta(days=1) if passed else today)
    if named.day < today:
        raise ToolError("That date has already passed. What day would you like?", code="past")
    return When(
        day=named.day,
        earliest=earliest,
        latest=latest,
        exact=exact,
        any_day=named.any_day,
        days=named.days,
    )


def _echo(text: str) -> str:
    text = " ".join(text.split())[:60]
    return f' ("{text}")' if text else ""
