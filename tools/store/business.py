"""The business as stored: loading it for a call, seeding it once from the YAML config.

The only SQL about the business profile, hours, holidays and services that calls read; the admin
console's writes are in tools.admin.service.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.domain.business import (
    WEEKDAYS,
    Business,
    ConfigError,
    Service,
    closing_time,
    escalation_numbers,
    parse_hours_range,
    read_config,
)
from tools.store import schema
from tools.store.db import Database, new_id, utc_now


def stored_escalation_numbers(row: Mapping[Any, Any]) -> tuple[str, ...]:
    """The numbers a business row rings: its ``escalation_numbers`` (comma-separated E.164),
    or for rows written before that column, its single ``escalation_number``."""
    return tuple(n for n in (row["escalation_numbers"] or row["escalation_number"]).split(",") if n)


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
            (time.fromisoformat(h["opens"]), closing_time(h["closes"]))
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
        trust_unverified_caller_id=bool(row["trust_unverified_caller_id"]),
        recording_notice=row["recording_notice"],
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


async def sms_confirmations_on(db: Database) -> bool:
    """Whether the business texts customers a confirmation of bookings, moves and
    cancellations (the admin console's profile setting; read when one happens)."""
    async with db.read() as conn:
        on = (await conn.execute(sa.select(schema.business.c.sms_confirmations))).scalar()
    return bool(on)


async def seed_business(db: Database, path: Path) -> dict[str, int]:
    """Insert what the config has and the database lacks. Never updates or duplicates rows,
    also when several workers seed at once (the write is serial across processes).

    Returns how many rows of each kind were added.
    """
    config = read_config(path)
    now = utc_now()
    async with db.write(serial="seed") as conn:
        added = {"business": await _seed_profile(conn, config, now)}
        added["holidays"] = await _seed_holidays(conn, config)
        service_ids, added["services"] = await _seed_services(conn, config)
        added["staff"] = await _seed_staff(conn, config, service_ids)
        added["knowledge_base"] = await _seed_articles(conn, config, now)
    order = ("business", "services", "staff", "knowledge_base", "holidays")
    return {kind: added[kind] for kind in order}


async def _seed_profile(conn: AsyncConnection, config: dict[str, Any], now: str) -> int:
    """The business row and its opening hours, unless there is a business already."""
    exists = (await conn.execute(sa.select(sa.func.count()).select_from(schema.business))).scalar()
    if exists:
        return 0
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
            trust_unverified_caller_id=bool(config.get("trust_unverified_caller_id", False)),
            recording_notice=" ".join(str(config.get("recording_notice") or "").split()),
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
    return 1


async def _seed_holidays(conn: AsyncConnection, config: dict[str, Any]) -> int:
    added = 0
    for holiday in config.get("holidays") or []:
        day = str(holiday["date"])
        found = await conn.execute(
            sa.select(schema.holidays.c.id).where(schema.holidays.c.day == day)
        )
        if found.first() is None:
            await conn.execute(
                schema.holidays.insert().values(day=day, name=holiday.get("name", ""))
            )
            added += 1
    return added


async def _seed_services(
    conn: AsyncConnection, config: dict[str, Any]
) -> tuple[dict[str, int], int]:
    """({service name: id} for every service in the config, how many were added)."""
    service_ids: dict[str, int] = {}
    added = 0
    for service in config.get("services") or []:
        row = (
            await conn.execute(
                sa.select(schema.services.c.id).where(schema.services.c.name == service["name"])
            )
        ).first()
        if row is not None:
            service_ids[service["name"]] = row[0]
            continue
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
        added += 1
    return service_ids, added


async def _seed_staff(
    conn: AsyncConnection, config: dict[str, Any], service_ids: dict[str, int]
) -> int:
    added = 0
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
        added += 1
    return added


async def _seed_articles(conn: AsyncConnection, config: dict[str, Any], now: str) -> int:
    added = 0
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
            added += 1
    return added
