"""The business and its rules: profile, opening hours, holidays, services, escalation numbers.

Owns the :class:`Business` model (what a call sees), reading and checking the YAML config
(:func:`read_config`, :class:`ConfigError` naming the field), and the spoken summaries of hours
and of when the team will call back. No database access: tools.store.business loads and seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tools.domain.speech import join_words, say_date, say_time
from tools.domain.validation import InvalidPhoneNumber, is_timezone, phone_e164
from tools.errors import ToolError

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class ConfigError(ValueError):
    """The business config is invalid; the message names the field."""


@dataclass(frozen=True)
class Service:
    id: int
    name: str
    duration_minutes: int
    price_cents: int
    description: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Business:
    name: str
    timezone: str
    address: str
    phone: str
    escalation_number: str
    warm_transfer: bool
    greeting: str
    persona: str
    slot_minutes: int
    booking_horizon_days: int
    disabled_tools: frozenset[str]
    hours: dict[int, list[tuple[time, time]]] = field(default_factory=dict)
    holidays: dict[date, str] = field(default_factory=dict)
    services: tuple[Service, ...] = ()
    escalation_numbers: tuple[str, ...] = ()  # rung at once on a transfer; [0] is escalation_number
    # A caller ID Twilio could not verify (STIR/SHAKEN) still proves who is calling; off by
    # default, since caller ID is easy to fake (tools.registry.ToolContext.proven_phone).
    trust_unverified_caller_id: bool = False
    # Told to callers in the greeting while calls are recorded ("": the default wording).
    recording_notice: str = ""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def opening_on(self, day: date) -> list[tuple[time, time]]:
        if day in self.holidays:
            return []
        return self.hours.get(day.weekday(), [])

    def is_open_at(self, moment: datetime) -> bool:
        local = self.local(moment)
        return any(o <= local.time() < c for o, c in self.opening_on(local.date()))

    def next_opening(self, moment: datetime) -> datetime | None:
        local = self.local(moment)
        for offset in range(0, 15):
            day = local.date() + timedelta(days=offset)
            for opens, _closes in self.opening_on(day):
                start = datetime.combine(day, opens, self.tz)
                if start > local:
                    return start
        return None

    def service_named(self, words: str) -> Service:
        """Find a service by name or alias; ToolError listing the services otherwise."""
        wanted = _normalize(words)
        if not wanted:
            raise ToolError(f"Which service would you like? We offer {self.service_list()}.")
        for service in self.services:
            if wanted == _normalize(service.name):
                return service
        for service in self.services:
            names = [_normalize(service.name), *(_normalize(a) for a in service.aliases)]
            if any(n and (n in wanted or wanted in n) for n in names):
                return service
        raise ToolError(
            f"Sorry, we don't offer that. We offer {self.service_list()}.",
            code="unknown_service",
        )

    def service_list(self) -> str:
        return join_words([s.name.lower() for s in self.services], "and")


def _normalize(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split()).replace(
        "colour", "color"
    )


def config_phone(key: str, value: object) -> str:
    """E.164 of a configured number; ConfigError naming ``key`` otherwise."""
    try:
        return phone_e164(str(value))
    except InvalidPhoneNumber as exc:
        raise ConfigError(f"{key}: {exc}") from None


def closing_time(text: str) -> time:
    return time.max if text == "24:00" else time.fromisoformat(text)


#: Twilio's <Dial> rings at most ten numbers at once.
MAX_ESCALATION_NUMBERS = 10


def escalation_numbers(config: dict[str, Any]) -> list[str]:
    """The numbers a transfer rings, in E.164: ``escalation_number`` (one number, or a list)
    followed by any ``escalation_numbers``, without duplicates. Twilio rings up to ten at once."""
    numbers: list[str] = []
    for key in ("escalation_number", "escalation_numbers"):
        value = config.get(key) or []
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            label = f"{key}[{index}]" if isinstance(value, list) else key
            number = config_phone(label, item)
            if number not in numbers:
                numbers.append(number)
    if len(numbers) > MAX_ESCALATION_NUMBERS:
        raise ConfigError(
            f"escalation_numbers: at most {MAX_ESCALATION_NUMBERS} numbers, got {len(numbers)}"
        )
    return numbers


def parse_hours_range(day: str, text: str) -> tuple[time, time]:
    try:
        opens_text, closes_text = (p.strip() for p in str(text).split("-"))
        opens = time.fromisoformat(opens_text)
        # "24:00" closes at midnight (open until the end of the day).
        closes = closing_time(closes_text)
    except ValueError:
        raise ConfigError(f"hours.{day}: expected 'HH:MM-HH:MM', got {text!r}") from None
    if opens >= closes:
        raise ConfigError(f"hours.{day}: opening {opens_text} is not before closing {closes_text}")
    return opens, closes


def read_config(path: Path) -> dict[str, Any]:
    """Read and validate the business YAML; ConfigError names the offending field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"business config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"business config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"business config {path} must be a mapping")
    check_config(data)
    return data


def check_config(data: dict[str, Any]) -> None:
    """Raise ConfigError naming the first field of the business config that is wrong."""
    for key in ("name", "timezone"):
        if not data.get(key):
            raise ConfigError(f"{key}: required")
    if not is_timezone(str(data["timezone"])):
        raise ConfigError(f"timezone: unknown time zone {data['timezone']!r}")
    for day, text in (data.get("hours") or {}).items():
        if day not in WEEKDAYS:
            raise ConfigError(f"hours: unknown day {day!r}")
        parse_hours_range(day, text)
    if data.get("phone"):
        config_phone("phone", data["phone"])
    escalation_numbers(data)
    if not isinstance(data.get("trust_unverified_caller_id", False), bool):
        raise ConfigError("trust_unverified_caller_id: must be true or false")
    check_recording_notice(data.get("recording_notice") or "")
    for service in data.get("services") or []:
        if not service.get("name") or int(service.get("duration_minutes", 0)) <= 0:
            raise ConfigError(f"services: each needs a name and a positive duration: {service}")


def check_recording_notice(notice: object) -> None:
    """A configured recording notice is text that tells callers the call is recorded (or
    empty: the default wording); ConfigError otherwise."""
    if not isinstance(notice, str):
        raise ConfigError("recording_notice: must be a sentence (text)")
    if notice.strip() and "record" not in notice.lower():
        raise ConfigError(
            f"recording_notice: must tell callers the call is recorded, got {notice!r}"
        )


def describe_hours(business: Business) -> str:
    """ "Monday to Wednesday nine a m to six p m, ..." grouped by identical hours."""
    groups: list[tuple[list[int], list[tuple[time, time]]]] = []
    for weekday in range(7):
        ranges = business.hours.get(weekday, [])
        if groups and groups[-1][1] == ranges:
            groups[-1][0].append(weekday)
        else:
            groups.append(([weekday], ranges))
    parts = []
    for days, ranges in groups:
        first, last = WEEKDAYS[days[0]].title(), WEEKDAYS[days[-1]].title()
        label = first if len(days) == 1 else f"{first} to {last}"
        if not ranges:
            parts.append(f"closed on {label}" if len(days) == 1 else f"closed {label}")
        else:
            spans = " and ".join(f"{say_time(o)} to {say_time(c)}" for o, c in ranges)
            parts.append(f"{label} {spans}")
    return "; ".join(parts)


def callback_time(business: Business, now: datetime) -> tuple[datetime | None, str]:
    """When the team will call back: (the next opening, or None while open; spoken words)."""
    opening = business.next_opening(now) if not business.is_open_at(now) else None
    if opening is None:
        return None, "as soon as possible today"
    local_today = business.local(now).date()
    return opening, f"{say_date(opening, local_today)} after {say_time(opening)}"
