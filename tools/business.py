"""The business profile: loading, seeding from the YAML config, and the get_business_info tool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa
import yaml

from tools import schema
from tools.db import Database, new_id, utc_now
from tools.registry import ToolContext, ToolError, ToolResult, tool
from tools.speech import join_words, say_date, say_duration, say_price, say_time

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


def _config_phone(key: str, value: Any) -> str:
    """E.164 of a configured number; ConfigError naming ``key`` otherwise."""
    try:
        parsed = phonenumbers.parse(str(value), "US")
    except phonenumbers.NumberParseException:
        raise ConfigError(f"{key}: not a phone number: {value!r}") from None
    if not phonenumbers.is_valid_number(parsed) and not phonenumbers.is_possible_number(parsed):
        raise ConfigError(f"{key}: not a phone number: {value!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _closing_time(text: str) -> time:
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
            number = _config_phone(label, item)
            if number not in numbers:
                numbers.append(number)
    if len(numbers) > MAX_ESCALATION_NUMBERS:
        raise ConfigError(
            f"escalation_numbers: at most {MAX_ESCALATION_NUMBERS} numbers, got {len(numbers)}"
        )
    return numbers


def stored_escalation_numbers(row: Mapping[Any, Any]) -> tuple[str, ...]:
    """The numbers a business row rings: its ``escalation_numbers`` (comma-separated E.164),
    or for rows written before that column, its single ``escalation_number``."""
    return tuple(n for n in (row["escalation_numbers"] or row["escalation_number"]).split(",") if n)


def parse_hours_range(day: str, text: str) -> tuple[time, time]:
    try:
        opens_text, closes_text = (p.strip() for p in str(text).split("-"))
        opens = time.fromisoformat(opens_text)
        # "24:00" closes at midnight (open until the end of the day).
        closes = _closing_time(closes_text)
    except ValueError:
        raise ConfigError(f"hours.{day}: expected 'HH:MM-HH:MM', got {text!r}") from None
    if opens >= closes:
        raise ConfigError(f"hours.{day}: opening {opens_text} is not before closing {closes_text}")
    return opens, closes


def normalize_phone(text: str, region: str = "US") -> str:
    """E.164 or raise ToolError with a sentence for the caller."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ToolError("That doesn't sound like a phone number. Could you repeat it?") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ToolError("That doesn't sound like a full phone number. Could you repeat it?")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone: unknown time zone {name!r}") from None
    return name


async def load_business(db: Database) -> Business:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(schema.business))).mappings().first()
        if row is None:
            raise RuntimeError("no business profile in the database; seed it first")
        hours_rows = (await conn.execute(sa.select(schema.opening_hours))).mappings().all()
        holiday_rows = (await conn.execute(sa.select(schema.holidays))).mappings().all()
        service_rows = (
            (
                await conn.execute(
                    sa.select(schema.services)
                    .where(schema.services.c.active)
                    .order_by(schema.services.c.id)
                )
            )
            .mappings()
            .all()
        )
    hours: dict[int, list[tuple[time, time]]] = {}
    for h in hours_rows:
        hours.setdefault(h["weekday"], []).append(
            (time.fromisoformat(h["opens"]), _closing_time(h["closes"]))
        )
    for ranges in hours.values():
        ranges.sort()
    return Business(
        name=row["name"],
        timezone=row["timezone"],
        address=row["address"],
        phone=row["phone"],
        escalation_number=row["escalation_number"],
        escalation_numbers=stored_escalation_numbers(row),
        warm_transfer=bool(row["warm_transfer"]),
        greeting=row["greeting"],
        persona=row["persona"],
        slot_minutes=row["slot_minutes"],
        booking_horizon_days=row["booking_horizon_days"],
        disabled_tools=frozenset(t for t in row["disabled_tools"].split(",") if t),
        hours=hours,
        holidays={date.fromisoformat(h["day"]): h["name"] for h in holiday_rows},
        services=tuple(
            Service(
                s["id"],
                s["name"],
                s["duration_minutes"],
                s["price_cents"],
                s["description"],
                tuple(a.strip() for a in s["aliases"].split(",") if a.strip()),
            )
            for s in service_rows
        ),
    )


async def business_of(ctx: ToolContext) -> Business:
    """The business as the call saw it at its start (``ctx.business``), else the current one."""
    if isinstance(ctx.business, Business):
        return ctx.business
    return await load_business(ctx.db)


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
    for key in ("name", "timezone"):
        if not data.get(key):
            raise ConfigError(f"{key}: required")
    validate_timezone(data["timezone"])
    for day, text in (data.get("hours") or {}).items():
        if day not in WEEKDAYS:
            raise ConfigError(f"hours: unknown day {day!r}")
        parse_hours_range(day, text)
    if data.get("phone"):
        _config_phone("phone", data["phone"])
    escalation_numbers(data)
    for service in data.get("services") or []:
        if not service.get("name") or int(service.get("duration_minutes", 0)) <= 0:
            raise ConfigError(f"services: each needs a name and a positive duration: {service}")
    return data


async def seed_business(db: Database, path: Path) -> dict[str, int]:
    """Insert what the config has and the database lacks. Never updates or duplicates rows.

    Returns how many rows of each kind were added.
    """
    config = read_config(path)
    added = {"business": 0, "services": 0, "staff": 0, "knowledge_base": 0, "holidays": 0}
    now = utc_now()
    async with db.write() as conn:
        exists = (
            await conn.execute(sa.select(sa.func.count()).select_from(schema.business))
        ).scalar()
        if not exists:
            await conn.execute(
                schema.business.insert().values(
                    id=1,
                    name=config["name"],
                    timezone=config["timezone"],
                    address=config.get("address", ""),
                    phone=str(config.get("phone", "")),
                    escalation_number=(escalation_numbers(config) or [""])[0],
                    escalation_numbers=",".join(escalation_numbers(config)),
                    warm_transfer=bool(config.get("warm_transfer", True)),
                    greeting=config.get("greeting", ""),
                    persona=config.get("persona", ""),
                    slot_minutes=int(config.get("slot_minutes", 15)),
                    booking_horizon_days=int(config.get("booking_horizon_days", 60)),
                    updated_at=now,
                )
            )
            for day, text in (config.get("hours") or {}).items():
                opens, closes = parse_hours_range(day, text)
                await conn.execute(
                    schema.opening_hours.insert().values(
                        weekday=WEEKDAYS.index(day),
                        opens=opens.strftime("%H:%M"),
                        closes="24:00" if closes == time.max else closes.strftime("%H:%M"),
                    )
                )
            added["business"] = 1
        for holiday in config.get("holidays") or []:
            day = str(holiday["date"])
            found = await conn.execute(
                sa.select(schema.holidays.c.id).where(schema.holidays.c.day == day)
            )
            if found.first() is None:
                await conn.execute(
                    schema.holidays.insert().values(day=day, name=holiday.get("name", ""))
                )
                added["holidays"] += 1
        service_ids: dict[str, int] = {}
        for service in config.get("services") or []:
            row = (
                await conn.execute(
                    sa.select(schema.services.c.id).where(schema.services.c.name == service["name"])
                )
            ).first()
            if row is None:
                result = await conn.execute(
                    schema.services.insert().values(
                        name=service["name"],
                        duration_minutes=int(service["duration_minutes"]),
                        price_cents=round(float(service.get("price", 0)) * 100),
                        description=service.get("description", ""),
                        aliases=service.get("aliases", ""),
                    )
                )
                service_ids[service["name"]] = new_id(result)
                added["services"] += 1
            else:
                service_ids[service["name"]] = row[0]
        for member in config.get("staff") or []:
            row = (
                await conn.execute(
                    sa.select(schema.staff.c.id).where(schema.staff.c.name == member["name"])
                )
            ).first()
            if row is not None:
                continue
            result = await conn.execute(schema.staff.insert().values(name=member["name"]))
            staff_id = new_id(result)
            for service_name in member.get("services") or []:
                if service_name not in service_ids:
                    raise ConfigError(f"staff.{member['name']}: unknown service {service_name!r}")
                await conn.execute(
                    schema.staff_services.insert().values(
                        staff_id=staff_id, service_id=service_ids[service_name]
                    )
                )
            added["staff"] += 1
        for article in config.get("knowledge_base") or []:
            row = (
                await conn.execute(
                    sa.select(schema.kb_articles.c.id).where(
                        schema.kb_articles.c.title == article["title"]
                    )
                )
            ).first()
            if row is None:
                await conn.execute(
                    schema.kb_articles.insert().values(
                        title=article["title"],
                        body=" ".join(str(article["body"]).split()),
                        tags=article.get("tags", ""),
                        updated_at=now,
                    )
                )
                added["knowledge_base"] += 1
    return added


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


@tool(filler=False, timeout_secs=3.0)
async def get_business_info(
    ctx: ToolContext,
    topic: Literal["hours", "hours_today", "address", "prices", "services", "all"] = "all",
) -> ToolResult:
    """Opening hours, today's hours, the address, or service prices and durations.

    Args:
        topic: What the caller asked about: hours, hours_today, address, prices, services or all.
    """
    business = await business_of(ctx)
    now = business.local(ctx.current_time())
    today_ranges = business.opening_on(now.date())
    if now.date() in business.holidays:
        today = f"We're closed today for {business.holidays[now.date()]}."
    elif not today_ranges:
        today = "We're closed today."
    else:
        spans = " and ".join(f"{say_time(o)} to {say_time(c)}" for o, c in today_ranges)
        state = "open now" if business.is_open_at(now) else "closed right now"
        today = f"Today we're open {spans}, and we're {state}."
    prices = "; ".join(
        f"{s.name.lower()} is {say_price(s.price_cents)} "
        f"and takes {say_duration(s.duration_minutes)}"
        for s in business.services
    )
    data: dict[str, Any] = {
        "business": business.name,
        "address": business.address,
        "hours": {
            WEEKDAYS[d]: [f"{o:%H:%M}-{c:%H:%M}" for o, c in r] for d, r in business.hours.items()
        },
        "open_now": business.is_open_at(now),
        "services": [
            {"name": s.name, "minutes": s.duration_minutes, "price": s.price_cents / 100}
            for s in business.services
        ],
    }
    upcoming = [
        f"{name} on {say_date(day)}"
        for day, name in sorted(business.holidays.items())
        if now.date() <= day <= now.date() + timedelta(days=30)
    ]
    say = {
        "hours": f"Our hours are {describe_hours(business)}.",
        "hours_today": today,
        "address": f"We're at {business.address}.",
        "prices": f"Prices: {prices}.",
        "services": f"We offer {business.service_list()}.",
    }.get(topic)
    if say is None:
        say = f"{today} We're at {business.address}."
    if topic in ("hours", "hours_today") and upcoming:
        say += f" Note we're closed for {join_words(upcoming, 'and')}."
    if not say:
        raise ToolError("Sorry, I don't have that information.")
    return ToolResult(say=say, data=data)
