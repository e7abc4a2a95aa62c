"""The admin console's requests: one pydantic model each, and the one place their rules live.

A model checks everything the request alone can tell (types, lengths, clock times, dates,
overlaps, placeholders, tool names, time zones, phone numbers) and hands the service clean values
(stripped text, E.164 numbers). A failed check is a pydantic ``ValidationError`` whose errors
carry the field's path (``("hours", "monday", 0, "closes")``) and a sentence for the page,
unprefixed. What needs the stored configuration (a duplicate name, the business's own number
in the escalation list) is checked by tools.admin.service, which raises
:class:`ValidationFailed` with the same ``{"field.path": "sentence"}`` shape.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Literal, NoReturn, Self

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tools.catalog import TOOL_NAMES
from tools.domain.business import WEEKDAYS
from tools.domain.validation import InvalidPhoneNumber, is_timezone, phone_e164

#: Tools the agent cannot work without: a call must be able to end politely.
REQUIRED_TOOLS = frozenset({"end_call"})
#: Placeholders each prompt text may use (filled per call; see agent/prompts.py).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "greeting": ("business_name",),
    "persona": ("business_name", "address", "hours", "services"),
}
MAX_HOLIDAY_DAYS = 366
MAX_RANGES_A_DAY = 4
CallbackOutcome = Literal["message_taken", "called_back", "closed"]

Location = tuple[str | int, ...]


class ValidationFailed(ValueError):
    """A change conflicts with the stored configuration; ``errors`` maps each offending field
    (``"escalation_numbers.1"``) to a sentence about it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NotFound(LookupError):
    """The thing asked for does not exist (the message names it)."""


def _fail(message: str) -> NoReturn:
    """Reject one field with ``message`` as its whole error text (no "Value error, " prefix)."""
    raise PydanticCustomError("invalid", message)


class _Problems:
    """Errors found across a whole model, raised together with their own field paths."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.found: dict[Location, str] = {}

    def add(self, location: Location, message: str) -> None:
        self.found.setdefault(location, message)

    def raise_if_any(self) -> None:
        if self.found:
            raise ValidationError.from_exception_data(
                self.title,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid", message), loc=loc, input=None
                    )
                    for loc, message in self.found.items()
                ],
            )


def _text(value: str, *, max_len: int, required: str = "") -> str:
    """``value`` stripped, at most ``max_len`` long; ``required``: the message when empty."""
    value = value.strip()
    if required and not value:
        _fail(required)
    if len(value) > max_len:
        _fail(f"at most {max_len} characters (got {len(value)})")
    return value


def _whole_number(value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        _fail(f"must be from {lo} to {hi}, got {value}")
    return value


def _phone(value: str) -> str:
    """E.164 of a non-empty number ("" stays ""), or the rule's sentence."""
    value = _text(value, max_len=40)
    if not value:
        return ""
    try:
        return phone_e164(value)
    except InvalidPhoneNumber as exc:
        _fail(str(exc))


def _comma_list(value: str) -> str:
    return ", ".join(part.strip() for part in value.split(",") if part.strip())


def check_template(text: str, allowed: tuple[str, ...]) -> str | None:
    """None if ``text`` uses only ``{allowed}`` placeholders, else what is wrong with it."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError as exc:
        return f"unbalanced braces ({exc}); write {{{{ and }}}} for literal braces"
    for name, spec, conversion in fields:
        if name not in allowed:
            shown = "{" + name + "}" if name else "{}"
            return f"unknown placeholder {shown}; available: " + ", ".join(
                "{" + a + "}" for a in allowed
            )
        if spec or conversion:
            return f"placeholder {{{name}}} takes no format options"
    return None


def _clock(text: str) -> time | None:
    if len(text.strip()) not in (4, 5):
        return None
    try:
        hours, minutes = text.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        return None


def _iso_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


# --- Requests ----------------------------------------------------------------------------------


class LoginIn(BaseModel):
    password: str = Field(description="The admin password, or the admin token")
    name: str = Field("", max_length=60, description="Who is signing in (shown in the audit log)")


class PasswordIn(BaseModel):
    password: str = Field(description="The new admin password (at least 10 characters)")
    current: str = Field("", description="The current password or the admin token")


class ProfileIn(BaseModel):
    """The business profile; ``phone`` comes out in E.164 ("" for none)."""

    name: str
    timezone: str = Field(description="IANA time zone, e.g. America/New_York")
    address: str = ""
    phone: str = Field("", description="The business's own (Frontdesk) number")
    slot_minutes: int = 15
    booking_horizon_days: int = 60
    trust_unverified_caller_id: bool = Field(
        False,
        description="Treat caller ID the carrier could not verify as proof of who is calling "
        "(easy to fake: off, such callers confirm their number by a texted code first)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value, max_len=200, required="Business name is required")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        value = _text(value, max_len=64, required="Time zone is required")
        if not is_timezone(value):
            _fail(f"unknown time zone {value!r}; use a name like America/New_York")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _text(value, max_len=400)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return _phone(value)

    @field_validator("slot_minutes")
    @classmethod
    def _slot_minutes(cls, value: int) -> int:
        _whole_number(value, 5, 240)
        if value % 5:
            _fail("must be a multiple of 5 minutes")
        return value

    @field_validator("booking_horizon_days")
    @classmethod
    def _horizon(cls, value: int) -> int:
        return _whole_number(value, 1, 730)

    # Outbound calls (issue 16). None: left as stored (a client that does not know them).
    reminders_enabled: bool | None = Field(
        None, description="Call customers before their appointments"
    )
    reminder_lead_hours: int | None = Field(None, description="Hours before, 1-168")
    calling_hours_start: str | None = Field(None, description="HH:MM, business time zone")
    calling_hours_end: str | None = Field(None, description="HH:MM, after the start")
    auto_callbacks: bool | None = Field(
        None, description="Return callback requests automatically at the promised time"
    )
    outbound_max_attempts: int | None = Field(None, description="Tries per outbound call, 1-10")

    @field_validator("reminder_lead_hours")
    @classmethod
    def _lead(cls, value: int | None) -> int | None:
        return None if value is None else _whole_number(value, 1, 168)

    @field_validator("outbound_max_attempts")
    @classmethod
    def _attempts(cls, value: int | None) -> int | None:
        return None if value is None else _whole_number(value, 1, 10)

    @field_validator("calling_hours_start", "calling_hours_end")
    @classmethod
    def _calling_clock(cls, value: str | None) -> str | None:
        if value is None:
            return None
        clock = _clock(value)
        if clock is None:
            _fail(f"a time as HH:MM (24-hour), not {value!r}")
        return f"{clock:%H:%M}"

    @model_validator(mode="after")
    def _calling_hours(self) -> Self:
        start, end = self.calling_hours_start, self.calling_hours_end
        problems = _Problems("ProfileIn")
        if (start is None) != (end is None):
            missing = "calling_hours_end" if end is None else "calling_hours_start"
            problems.add((missing,), "give the calling hours' start and end together")
        elif start is not None and end is not None and start >= end:
            problems.add(("calling_hours_end",), f"must be after the start ({start})")
        problems.raise_if_any()
        return self


class RangeIn(BaseModel):
    opens: str = Field(description="HH:MM, 24-hour clock")
    closes: str = Field(description="HH:MM, after opens")


class HoursIn(BaseModel):
    """The weekly opening hours: at most four ranges a day, each opening before it closes, none
    overlapping another of its day."""

    hours: dict[str, list[RangeIn]] = Field(
        description="monday … sunday -> opening ranges; a day left out or empty is closed"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._weekly(raise_errors=True)
        return self

    def weekly(self) -> dict[int, list[tuple[str, str]]]:
        """Weekday (0 = Monday) -> sorted ("HH:MM", "HH:MM") ranges, for the days given."""
        return self._weekly(raise_errors=False)

    def _weekly(self, *, raise_errors: bool) -> dict[int, list[tuple[str, str]]]:
        problems = _Problems("HoursIn")
        out: dict[int, list[tuple[str, str]]] = {}
        for day, ranges in self.hours.items():
            if day not in WEEKDAYS:
                problems.add(("hours", day), f"unknown day {day!r}; use monday … sunday")
                continue
            if len(ranges) > MAX_RANGES_A_DAY:
                problems.add(("hours", day), f"at most {MAX_RANGES_A_DAY} opening ranges a day")
            parsed = _day_ranges(day, ranges, problems)
            out[WEEKDAYS.index(day)] = [(f"{o:%H:%M}", f"{c:%H:%M}") for o, c, _ in parsed]
        if raise_errors:
            problems.raise_if_any()
        return out


def _opening_range(
    day: str, i: int, item: RangeIn, problems: _Problems
) -> tuple[time, time] | None:
    """One day's range ``i`` as (opens, closes), or None with its problems noted."""
    opens, closes = _clock(item.opens), _clock(item.closes)
    if opens is None:
        problems.add(("hours", day, i, "opens"), f"expected a time like 09:00, got {item.opens!r}")
    if closes is None:
        problems.add(
            ("hours", day, i, "closes"), f"expected a time like 18:00, got {item.closes!r}"
        )
    if opens is None or closes is None:
        return None
    if opens >= closes:
        problems.add(
            ("hours", day, i, "closes"),
            f"{day.capitalize()}: closing {closes:%H:%M} must be after opening {opens:%H:%M}",
        )
        return None
    return opens, closes


def _day_ranges(
    day: str, ranges: list[RangeIn], problems: _Problems
) -> list[tuple[time, time, int]]:
    """A day's valid ranges, sorted, as (opens, closes, index); overlaps are noted."""
    parsed: list[tuple[time, time, int]] = []
    for i, item in enumerate(ranges):
        if (bounds := _opening_range(day, i, item, problems)) is not None:
            parsed.append((*bounds, i))
    parsed.sort()
    for (_o1, c1, i1), (o2, _c2, i2) in itertools.pairwise(parsed):
        if o2 < c1:
            problems.add(
                ("hours", day, i2, "opens"),
                f"{day.capitalize()}: this range overlaps range {i1 + 1} (until {c1:%H:%M})",
            )
    return parsed


class HolidayIn(BaseModel):
    start: str = Field(description="First closed day, YYYY-MM-DD")
    end: str = Field("", description="Last closed day (defaults to start)")
    name: str


@dataclass(frozen=True)
class Closure:
    """Consecutive closed days with one name."""

    start: date
    end: date
    name: str


class HolidaysIn(BaseModel):
    """Closed days and periods: named, each at most a year long, none overlapping another."""

    holidays: list[HolidayIn]

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._closures(raise_errors=True)
        return self

    def closures(self) -> list[Closure]:
        """The closures, earliest first."""
        return self._closures(raise_errors=False)

    def _closures(self, *, raise_errors: bool) -> list[Closure]:
        problems = _Problems("HolidaysIn")
        parsed: list[tuple[date, date, str, int]] = []
        for i, item in enumerate(self.holidays):
            if (closure := _closure(i, item, problems)) is not None:
                parsed.append((closure.start, closure.end, closure.name, i))
        ordered = sorted(parsed)
        for (s1, e1, n1, _i1), (s2, _e2, _n2, i2) in itertools.pairwise(ordered):
            if s2 <= e1:
                problems.add(
                    ("holidays", i2, "start"), f"overlaps {n1!r} ({s1} to {e1}); merge or move one"
                )
        if raise_errors:
            problems.raise_if_any()
        return [Closure(s, e, n) for s, e, n, _ in ordered]


def _closure(i: int, item: HolidayIn, problems: _Problems) -> Closure | None:
    """Holiday ``i`` as a closure, or None when its dates are unusable (problems noted)."""
    name = item.name.strip()
    if not name:
        problems.add(("holidays", i, "name"), "Name is required")
    elif len(name) > 200:
        problems.add(("holidays", i, "name"), f"at most 200 characters (got {len(name)})")
    start = _iso_date(item.start)
    end = _iso_date(item.end) if item.end else start
    if start is None:
        problems.add(
            ("holidays", i, "start"), f"expected a date like 2026-12-25, got {item.start!r}"
        )
        return None
    if end is None:
        problems.add(("holidays", i, "end"), f"expected a date like 2026-12-26, got {item.end!r}")
        return None
    if end < start:
        problems.add(("holidays", i, "end"), f"the last day {end} is before the first day {start}")
        return None
    if (end - start).days >= MAX_HOLIDAY_DAYS:
        problems.add(("holidays", i, "end"), f"a closure can last at most {MAX_HOLIDAY_DAYS} days")
        return None
    return Closure(start, end, name)


class ServiceIn(BaseModel):
    """A service; ``price`` comes out in whole cents as ``price_cents``."""

    name: str
    duration_minutes: int
    price: float | str = Field(description="In the business's currency, e.g. 40 or 12.50")
    description: str = ""
    aliases: str = Field("", description="Other words callers use, comma-separated")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value, max_len=200, required="Service name is required")

    @field_validator("duration_minutes")
    @classmethod
    def _duration(cls, value: int) -> int:
        return _whole_number(value, 5, 600)

    @field_validator("price")
    @classmethod
    def _price(cls, value: float | str) -> str:
        text = str(value).strip()
        if not text:
            _fail("a price is required (0 for free)")
        try:
            amount = Decimal(text.lstrip("$"))
        except InvalidOperation:
            _fail(f"expected an amount like 40 or 12.50, got {value!r}")
        if not amount.is_finite() or amount < 0 or amount > 100000:
            _fail("must be from 0 to 100000")
        if amount != amount.quantize(Decimal("0.01")):
            _fail("at most two decimals (cents)")
        return str(amount)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return _text(value, max_len=1000)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: str) -> str:
        return _comma_list(_text(value, max_len=500))

    @property
    def price_cents(self) -> int:
        return int(Decimal(str(self.price)) * 100)

    def columns(self) -> dict[str, str | int]:
        """The ``services`` columns this request sets."""
        return {
            "name": self.name,
            "duration_minutes": self.duration_minutes,
            "price_cents": self.price_cents,
            "description": self.description,
            "aliases": self.aliases,
        }


class StaffIn(BaseModel):
    name: str
    services: list[int] = Field(default_factory=list, description="Ids of services they do")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value, max_len=200, required="Name is required")

    @field_validator("services")
    @classmethod
    def _services(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class EscalationIn(BaseModel):
    """The numbers a transfer rings. Which are acceptable depends on the business's own number,
    so the service checks them (tools.admin.service.AdminService.update_escalation)."""

    escalation_numbers: list[str] | None = Field(
        None,
        description=(
            "The numbers 'a person, please' calls ring at once, first answer wins (at most 10, "
            "no duplicates, not the business's own number); [] takes a message instead"
        ),
        examples=[["+14135550199", "+14135550198"]],
    )
    escalation_number: str | None = Field(
        None,
        description=(
            "Older single-number form, for scripts: sent alone it sets that one number "
            "(replacing the list; '' for none). Prefer escalation_numbers"
        ),
    )
    warm_transfer: bool = Field(True, description="Announce the caller before connecting")


class ToolsIn(BaseModel):
    """Tools to switch on or off: known tool names only, and never a required tool off."""

    enabled: dict[str, bool] = Field(description="Tool name -> on/off; tools left out keep theirs")

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = _Problems("ToolsIn")
        for name, on in self.enabled.items():
            if name not in TOOL_NAMES:
                problems.add(("tools", name), f"unknown tool {name!r}")
            elif not on and name in REQUIRED_TOOLS:
                problems.add(("tools", name), "the agent needs this tool to finish calls politely")
        problems.raise_if_any()
        return self

    def disabled_after(self, current: frozenset[str]) -> frozenset[str]:
        """The disabled tools once this change is applied to ``current``."""
        disabled = set(current) & set(TOOL_NAMES)
        for name, on in self.enabled.items():
            if on:
                disabled.discard(name)
            else:
                disabled.add(name)
        return frozenset(disabled)


class PromptsIn(BaseModel):
    """The greeting and persona, stripped, using only their own placeholders."""

    greeting: str = Field("", description="First words of every call; {business_name}")
    persona: str = Field(
        "", description="Persona and extra instructions; {business_name} {address} {hours} …"
    )

    @field_validator("greeting")
    @classmethod
    def _greeting(cls, value: str) -> str:
        value = _text(value, max_len=500)
        if problem := check_template(value, PLACEHOLDERS["greeting"]):
            _fail(problem)
        return value

    @field_validator("persona")
    @classmethod
    def _persona(cls, value: str) -> str:
        value = _text(value, max_len=4000)
        if problem := check_template(value, PLACEHOLDERS["persona"]):
            _fail(problem)
        return value


class ArticleIn(BaseModel):
    """A knowledge-base article; ``tags`` come out as one comma-separated list."""

    title: str
    body: str
    tags: str = ""

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _text(value, max_len=300, required="Title is required")

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        return _text(value, max_len=10000, required="Answer text is required")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: str) -> str:
        return _comma_list(_text(value, max_len=300))


class CallbackIn(BaseModel):
    outcome: CallbackOutcome


class ForgetIn(BaseModel):
    """A caller who asked for their data to be deleted, by the phone number they call from."""

    phone: str = Field(description="Their phone number (any common format)")

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, value: str) -> str:
        number = _phone(value)
        if not number:
            _fail("enter the caller's phone number")
        return number
