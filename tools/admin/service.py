"""The admin console's changes: each one checked against the stored configuration, then
written together with its audit-log entry in one transaction, so a change is either saved whole
and recorded, or not saved at all.

Requests arrive as the models of tools.admin.models, already checked on their own; what depends
on what is stored (duplicate names, unknown service ids, the escalation numbers against the
business's own number) fails with :class:`ValidationFailed`, a message per field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.admin.models import (
    ArticleIn,
    CallbackOutcome,
    EscalationIn,
    HolidaysIn,
    HoursIn,
    NotFound,
    ProfileIn,
    PromptsIn,
    ServiceIn,
    StaffIn,
    ToolsIn,
    ValidationFailed,
)
from tools.admin.views import AdminViews, holidays_view, hours_view, services_view, staff_view
from tools.domain.business import MAX_ESCALATION_NUMBERS, WEEKDAYS
from tools.domain.validation import InvalidPhoneNumber, phone_e164
from tools.store import schema
from tools.store.audit import record_audit
from tools.store.db import Database, new_id, utc_now


def validate_escalation(
    body: EscalationIn, business_phone: str, current_number: str = ""
) -> dict[str, Any]:
    """The numbers a transfer rings at once (an empty list: take a message instead): each a
    valid phone number, none twice, none the business's own ``business_phone``, at most ten.

    The older single ``escalation_number`` is still accepted: sent alone, it replaces the list
    with that one number ("" for none). Sent with the list, it must be the list's first number
    or its stored value ``current_number`` (a config read back with only the list edited).
    Returns the business columns to write: both ``escalation_numbers`` (comma-separated) and
    ``escalation_number`` (the first, or "") and ``warm_transfer``.
    """
    errors: dict[str, str] = {}
    listed, single = body.escalation_numbers, body.escalation_number
    own = _normalized(business_phone)
    numbers: list[str] = []
    if listed is None and single is None:
        errors["escalation_numbers"] = (
            "the list of numbers to ring is required (an empty list: take a message instead)"
        )
    elif listed is None:
        number = _checked_phone(single or "", "escalation_number", errors)
        if number and own and number == own:
            errors.setdefault("escalation_number", _LOOP)
        numbers = [number] if number else []
    else:
        numbers = _listed_numbers(listed, own, errors)
        if single is not None and not errors:
            first = numbers[0] if numbers else ""
            if _normalized(single) not in (first, _normalized(current_number)):
                errors["escalation_number"] = (
                    f"{single!r} is not the first of escalation_numbers; "
                    "send only escalation_numbers"
                )
    if errors:
        raise ValidationFailed(errors)
    return {
        "escalation_numbers": ",".join(numbers),
        "escalation_number": numbers[0] if numbers else "",
        "warm_transfer": body.warm_transfer,
    }


def _listed_numbers(listed: list[str], own: str, errors: dict[str, str]) -> list[str]:
    """The list's numbers in E.164; a message per bad row (blank, invalid, repeated, ``own``)."""
    if len(listed) > MAX_ESCALATION_NUMBERS:
        errors.setdefault(
            "escalation_numbers",
            f"at most {MAX_ESCALATION_NUMBERS} numbers can ring at once "
            f"(got {len(listed)}); remove {len(listed) - MAX_ESCALATION_NUMBERS}",
        )
    numbers: list[str] = []
    for i, raw in enumerate(listed):
        where = f"escalation_numbers.{i}"
        if not raw.strip():
            errors.setdefault(where, "empty; enter a number or remove this row")
            continue
        number = _checked_phone(raw, where, errors)
        if where in errors:
            continue
        if own and number == own:
            errors.setdefault(where, _LOOP)
        elif number in numbers:
            errors.setdefault(where, f"the same number as number {numbers.index(number) + 1}")
        numbers.append(number)
    return numbers


_LOOP = "this is the receptionist's own number; transferred calls would loop back to it"


def _normalized(number: str) -> str:
    """E.164 of ``number`` if it is one, else the text as given ("" for nothing)."""
    text = number.strip()
    if not text:
        return ""
    try:
        return phone_e164(text)
    except InvalidPhoneNumber:
        return text


def _checked_phone(text: str, field: str, errors: dict[str, str]) -> str:
    """E.164 of ``text`` ("" for blank); on an invalid number, a message on ``field``."""
    text = text.strip()
    if not text:
        return ""
    if len(text) > 40:
        errors.setdefault(field, f"at most 40 characters (got {len(text)})")
        return text
    try:
        return phone_e164(text)
    except InvalidPhoneNumber as exc:
        errors.setdefault(field, str(exc))
        return text


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} for the fields that changed."""
    return {k: [before.get(k), after.get(k)] for k in after if before.get(k) != after.get(k)}


async def _touch(conn: AsyncConnection) -> None:
    await conn.execute(schema.business.update().values(updated_at=utc_now()))


class AdminService:
    """Changes the business config; each change is checked and audited in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _business_row(self, conn: AsyncConnection) -> dict[str, Any]:
        row = (await conn.execute(sa.select(schema.business))).mappings().first()
        if row is None:
            raise NotFound("no business profile yet")
        return dict(row)

    async def _update_business(
        self, actor: str, entity: str, values: dict[str, Any], summary: str
    ) -> dict[str, list[Any]]:
        async with self.db.write() as conn:
            before = await self._business_row(conn)
            changes = diff(before, values)
            if changes:
                await conn.execute(
                    schema.business.update()
                    .where(schema.business.c.id == before["id"])
                    .values(**values, updated_at=utc_now())
                )
                await record_audit(conn, actor, "update", entity, summary=summary, changes=changes)
        return changes

    async def update_profile(self, actor: str, body: ProfileIn) -> dict[str, list[Any]]:
        values = body.model_dump(exclude_none=True)  # outbound settings left out stay as stored
        return await self._update_business(actor, "profile", values, "business profile")

    async def update_escalation(self, actor: str, body: EscalationIn) -> dict[str, list[Any]]:
        async with self.db.read() as conn:
            row = await self._business_row(conn)
        clean = validate_escalation(body, row["phone"], row["escalation_number"])
        return await self._update_business(actor, "escalation", clean, "escalation")

    async def update_tools(self, actor: str, body: ToolsIn) -> dict[str, list[Any]]:
        async with self.db.read() as conn:
            current = (await self._business_row(conn))["disabled_tools"]
        disabled = body.disabled_after(frozenset(t for t in current.split(",") if t))
        value = ",".join(sorted(disabled))
        turned_off = sorted(disabled - set(current.split(",")))
        turned_on = sorted(set(t for t in current.split(",") if t) - disabled)
        summary = "tools: " + "; ".join(
            p
            for p in (
                f"disabled {', '.join(turned_off)}" if turned_off else "",
                f"enabled {', '.join(turned_on)}" if turned_on else "",
            )
            if p
        )
        return await self._update_business(actor, "tools", {"disabled_tools": value}, summary)

    async def update_prompts(self, actor: str, body: PromptsIn) -> dict[str, list[Any]]:
        return await self._update_business(
            actor, "prompts", body.model_dump(), "greeting and persona"
        )

    async def set_hours(self, actor: str, body: HoursIn) -> dict[str, list[Any]]:
        clean = body.weekly()
        async with self.db.write() as conn:
            before = await hours_view(conn)
            await conn.execute(schema.opening_hours.delete())
            for weekday, ranges in clean.items():
                for opens, closes in ranges:
                    await conn.execute(
                        schema.opening_hours.insert().values(
                            weekday=weekday, opens=opens, closes=closes
                        )
                    )
            after = await hours_view(conn)
            changes = {
                day: [before[day], after[day]] for day in WEEKDAYS if before[day] != after[day]
            }
            if changes:
                await record_audit(
                    conn, actor, "update", "hours", summary="opening hours", changes=changes
                )
                await _touch(conn)
        return changes

    async def set_holidays(self, actor: str, body: HolidaysIn) -> dict[str, list[Any]]:
        clean = body.closures()
        async with self.db.write() as conn:
            before = await holidays_view(conn)
            await conn.execute(schema.holidays.delete())
            for closure in clean:
                day = closure.start
                while day <= closure.end:
                    await conn.execute(
                        schema.holidays.insert().values(day=day.isoformat(), name=closure.name)
                    )
                    day += timedelta(days=1)
            after = await holidays_view(conn)
            changes = {"holidays": [before, after]} if before != after else {}
            if changes:
                await record_audit(
                    conn, actor, "update", "holidays", summary="holidays", changes=changes
                )
                await _touch(conn)
        return changes

    # Services ----------------------------------------------------------------------------------

    async def save_service(
        self, actor: str, body: ServiceIn, service_id: int | None = None
    ) -> dict[str, Any]:
        """Add a service (bringing back a removed one of that name) or change one."""
        clean = body.columns()
        name = body.name
        table = schema.services
        async with self.db.write() as conn:
            if (
                service_id is not None
                and (
                    await conn.execute(sa.select(table.c.id).where(table.c.id == service_id))
                ).first()
                is None
            ):
                raise NotFound(f"no service {service_id}")
            same_name = (
                await conn.execute(
                    sa.select(table).where(sa.func.lower(table.c.name) == name.lower())
                )
            ).first()
            if service_id is None and same_name is not None and not same_name.active:
                service_id = same_name.id  # re-adding a removed service brings it back
            elif same_name is not None and same_name.id != service_id:
                raise ValidationFailed(
                    {"name": f"there is already a service named {same_name.name!r}"}
                )
            if service_id is None:
                service_id = new_id(await conn.execute(table.insert().values(**clean)))
                await record_audit(
                    conn,
                    actor,
                    "create",
                    "service",
                    service_id,
                    f"service {clean['name']}",
                    {k: [None, v] for k, v in clean.items()},
                )
            else:
                before = (
                    (await conn.execute(sa.select(table).where(table.c.id == service_id)))
                    .mappings()
                    .first()
                )
                if before is None:
                    raise NotFound(f"no service {service_id}")
                values = {**clean, "active": True}
                changes = diff(dict(before), values)
                await conn.execute(table.update().where(table.c.id == service_id).values(**values))
                if changes:
                    await record_audit(
                        conn,
                        actor,
                        "update",
                        "service",
                        service_id,
                        f"service {clean['name']}",
                        changes,
                    )
            await _touch(conn)
            return next(s for s in await services_view(conn) if s["id"] == service_id)

    async def remove_service(self, actor: str, service_id: int) -> dict[str, Any]:
        """Stop offering a service (kept for its past and booked appointments)."""
        table = schema.services
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == service_id))).first()
            if row is None or not row.active:
                raise NotFound(f"no service {service_id}")
            upcoming = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(schema.appointments)
                    .where(
                        schema.appointments.c.service_id == service_id,
                        schema.appointments.c.status == "booked",
                        schema.appointments.c.starts_at > datetime.now(UTC).isoformat(),
                    )
                )
            ).scalar_one()
            await conn.execute(table.update().where(table.c.id == service_id).values(active=False))
            await record_audit(
                conn,
                actor,
                "delete",
                "service",
                service_id,
                f"service {row.name}",
                {"active": [True, False]},
            )
            await _touch(conn)
        return {"removed": service_id, "upcoming_appointments_kept": int(upcoming)}

    # Staff -------------------------------------------------------------------------------------

    async def save_staff(
        self, actor: str, body: StaffIn, staff_id: int | None = None
    ) -> dict[str, Any]:
        """Add a staff member (bringing back a removed one of that name) or change one."""
        clean = body.model_dump()
        table = schema.staff
        async with self.db.write() as conn:
            active_services = {s["id"] for s in await services_view(conn) if s["active"]}
            unknown = [i for i in clean["services"] if i not in active_services]
            if unknown:
                raise ValidationFailed({"services": f"unknown service id(s): {unknown}"})
            if (
                staff_id is not None
                and (
                    await conn.execute(sa.select(table.c.id).where(table.c.id == staff_id))
                ).first()
                is None
            ):
                raise NotFound(f"no staff member {staff_id}")
            same_name = (
                await conn.execute(
                    sa.select(table).where(sa.func.lower(table.c.name) == clean["name"].lower())
                )
            ).first()
            if staff_id is None and same_name is not None and not same_name.active:
                staff_id = same_name.id
            elif same_name is not None and same_name.id != staff_id:
                raise ValidationFailed({"name": f"{same_name.name} is already on the team"})
            before: dict[str, Any] = {}
            if staff_id is None:
                action = "create"
                staff_id = new_id(await conn.execute(table.insert().values(name=clean["name"])))
            else:
                action = "update"
                current = next((s for s in await staff_view(conn) if s["id"] == staff_id), None)
                if current is None:
                    raise NotFound(f"no staff member {staff_id}")
                before = {
                    "name": current["name"],
                    "services": current["services"],
                    "active": current["active"],
                }
                await conn.execute(
                    table.update()
                    .where(table.c.id == staff_id)
                    .values(name=clean["name"], active=True)
                )
            await conn.execute(
                schema.staff_services.delete().where(schema.staff_services.c.staff_id == staff_id)
            )
            for service_id in clean["services"]:
                await conn.execute(
                    schema.staff_services.insert().values(staff_id=staff_id, service_id=service_id)
                )
            changes = diff(before, {**clean, "active": True})
            if changes:
                await record_audit(
                    conn, actor, action, "staff", staff_id, f"staff {clean['name']}", changes
                )
            return next(s for s in await staff_view(conn) if s["id"] == staff_id)

    async def remove_staff(self, actor: str, staff_id: int) -> dict[str, Any]:
        table = schema.staff
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == staff_id))).first()
            if row is None or not row.active:
                raise NotFound(f"no staff member {staff_id}")
            await conn.execute(table.update().where(table.c.id == staff_id).values(active=False))
            await record_audit(
                conn,
                actor,
                "delete",
                "staff",
                staff_id,
                f"staff {row.name}",
                {"active": [True, False]},
            )
        return {"removed": staff_id}

    # Knowledge base ----------------------------------------------------------------------------

    async def save_article(
        self, actor: str, body: ArticleIn, article_id: int | None = None
    ) -> dict[str, Any]:
        clean = body.model_dump()
        table = schema.kb_articles
        async with self.db.write() as conn:
            if (
                article_id is not None
                and (
                    await conn.execute(sa.select(table.c.id).where(table.c.id == article_id))
                ).first()
                is None
            ):
                raise NotFound(f"no article {article_id}")
            same = (
                await conn.execute(
                    sa.select(table.c.id, table.c.title).where(
                        sa.func.lower(table.c.title) == clean["title"].lower()
                    )
                )
            ).first()
            if same is not None and same.id != article_id:
                raise ValidationFailed(
                    {"title": f"an article titled {same.title!r} already exists"}
                )
            if article_id is None:
                article_id = new_id(
                    await conn.execute(table.insert().values(**clean, updated_at=utc_now()))
                )
                await record_audit(
                    conn,
                    actor,
                    "create",
                    "kb_article",
                    article_id,
                    f"article {clean['title']}",
                    {k: [None, v] for k, v in clean.items()},
                )
            else:
                before = (
                    (await conn.execute(sa.select(table).where(table.c.id == article_id)))
                    .mappings()
                    .first()
                )
                if before is None:
                    raise NotFound(f"no article {article_id}")
                changes = diff(dict(before), clean)
                if changes:
                    await conn.execute(
                        table.update()
                        .where(table.c.id == article_id)
                        .values(**clean, updated_at=utc_now())
                    )
                    await record_audit(
                        conn,
                        actor,
                        "update",
                        "kb_article",
                        article_id,
                        f"article {clean['title']}",
                        changes,
                    )
        return await AdminViews(self.db).article(article_id)

    async def delete_article(self, actor: str, article_id: int) -> None:
        table = schema.kb_articles
        async with self.db.write() as conn:
            row = (
                (await conn.execute(sa.select(table).where(table.c.id == article_id)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"no article {article_id}")
            await conn.execute(table.delete().where(table.c.id == article_id))
            await record_audit(
                conn,
                actor,
                "delete",
                "kb_article",
                article_id,
                f"article {row['title']}",
                {k: [row[k], None] for k in ("title", "body", "tags")},
            )

    # Callbacks ---------------------------------------------------------------------------------

    async def update_callback(self, actor: str, callback_id: int, outcome: CallbackOutcome) -> None:
        """Mark a callback request (a message a caller left) handled, or open again."""
        h = schema.handoffs
        async with self.db.write() as conn:
            row = (
                await conn.execute(sa.select(h).where(h.c.id == callback_id, h.c.kind == "message"))
            ).first()
            if row is None:
                raise NotFound(f"no callback request {callback_id}")
            if row.outcome != outcome:
                await conn.execute(
                    h.update()
                    .where(h.c.id == callback_id)
                    .values(outcome=outcome, updated_at=utc_now())
                )
                await record_audit(
                    conn,
                    actor,
                    "update",
                    "callback",
                    callback_id,
                    f"callback for {row.caller_name or row.caller_number}",
                    {"outcome": [row.outcome, outcome]},
                )
