"""The admin console's read models: the configuration, services, staff and knowledge-base
articles as the page shows them (services with their price in units, staff with their service
ids, holidays grouped into closures)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.admin.models import PLACEHOLDERS, REQUIRED_TOOLS, NotFound
from tools.catalog import TOOLS
from tools.domain.business import WEEKDAYS
from tools.store import schema
from tools.store.business import stored_escalation_numbers
from tools.store.db import Database
from tools.store.knowledge import search_articles


def group_holidays(rows: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Day rows (day, name) -> ranges of consecutive days with the same name."""
    out: list[dict[str, str]] = []
    for day_text, name in sorted(rows):
        day = date.fromisoformat(day_text)
        if (
            out
            and out[-1]["name"] == name
            and date.fromisoformat(out[-1]["end"]) + timedelta(days=1) == day
        ):
            out[-1]["end"] = day_text
        else:
            out.append({"start": day_text, "end": day_text, "name": name})
    return out


async def hours_view(conn: AsyncConnection) -> dict[str, list[dict[str, str]]]:
    """Weekday name -> its opening ranges ({"opens", "closes"}), every day present."""
    hours: dict[str, list[dict[str, str]]] = {d: [] for d in WEEKDAYS}
    rows = await conn.execute(
        sa.select(schema.opening_hours).order_by(
            schema.opening_hours.c.weekday, schema.opening_hours.c.opens
        )
    )
    for h in rows:
        hours[WEEKDAYS[h.weekday]].append({"opens": h.opens, "closes": h.closes})
    return hours


async def holidays_view(conn: AsyncConnection) -> list[dict[str, str]]:
    """The closed days grouped into closures ({"start", "end", "name"})."""
    rows = await conn.execute(sa.select(schema.holidays.c.day, schema.holidays.c.name))
    return group_holidays([(h.day, h.name) for h in rows])


async def services_view(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(schema.services).order_by(schema.services.c.id))
    return [
        {
            "id": r.id,
            "name": r.name,
            "duration_minutes": r.duration_minutes,
            "price": r.price_cents / 100,
            "description": r.description,
            "aliases": r.aliases,
            "active": bool(r.active),
        }
        for r in rows
    ]


async def staff_view(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(schema.staff).order_by(schema.staff.c.id))
    links = await conn.execute(sa.select(schema.staff_services))
    by_staff: dict[int, list[int]] = {}
    for link in links:
        by_staff.setdefault(link.staff_id, []).append(link.service_id)
    return [
        {
            "id": r.id,
            "name": r.name,
            "active": bool(r.active),
            "services": sorted(by_staff.get(r.id, [])),
        }
        for r in rows
    ]


def article_view(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "body": row.body,
        "tags": row.tags,
        "updated_at": row.updated_at,
    }


class AdminViews:
    """Reads the configuration and the knowledge base for the page."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def config(self) -> dict[str, Any]:
        """The whole configuration as the page edits it (providers are added by the app)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.business))).mappings().first()
            if row is None:
                raise NotFound("no business profile yet")
            hours = await hours_view(conn)
            holidays = await holidays_view(conn)
            services = await services_view(conn)
            staff = await staff_view(conn)
        disabled = {t for t in row["disabled_tools"].split(",") if t}
        return {
            "profile": {
                k: row[k]
                for k in (
                    "name",
                    "timezone",
                    "address",
                    "phone",
                    "slot_minutes",
                    "booking_horizon_days",
                )
            }
            | {"trust_unverified_caller_id": bool(row["trust_unverified_caller_id"])}
            | {
                "reminders_enabled": bool(row["reminders_enabled"]),
                "reminder_lead_hours": row["reminder_lead_hours"],
                "calling_hours_start": row["calling_hours_start"],
                "calling_hours_end": row["calling_hours_end"],
                "auto_callbacks": bool(row["auto_callbacks"]),
                "outbound_max_attempts": row["outbound_max_attempts"],
            },
            "hours": hours,
            "holidays": holidays,
            "services": services,
            "staff": staff,
            "escalation": {
                "escalation_numbers": list(stored_escalation_numbers(row)),
                "escalation_number": row["escalation_number"],
                "warm_transfer": bool(row["warm_transfer"]),
            },
            "tools": [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "enabled": spec.name not in disabled,
                    "required": spec.name in REQUIRED_TOOLS,
                }
                for spec in TOOLS
            ],
            "prompts": {
                "greeting": row["greeting"],
                "persona": row["persona"],
                "placeholders": {k: list(v) for k, v in PLACEHOLDERS.items()},
            },
            "updated_at": row["updated_at"],
        }

    async def articles(self, query: str = "") -> list[dict[str, Any]]:
        """All articles by title, or those matching ``query`` best first (the agent's search)."""
        if query.strip():
            hits = await search_articles(self.db, query, limit=50)
            ids = [h["id"] for h in hits]
            if not ids:
                return []
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(schema.kb_articles).where(schema.kb_articles.c.id.in_(ids))
                )
                by_id = {r.id: article_view(r) for r in rows}
            return [by_id[i] for i in ids if i in by_id]
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(schema.kb_articles).order_by(sa.func.lower(schema.kb_articles.c.title))
            )
            return [article_view(r) for r in rows]

    async def article(self, article_id: int) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(schema.kb_articles).where(schema.kb_articles.c.id == article_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"no article {article_id}")
        return article_view(row)
