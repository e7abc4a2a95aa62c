"""The admin console's service layer: read and change the business config, safely and on record.

Every change is validated in full before anything is written; the write and its audit-log entry
share one transaction, so a change is either saved whole and recorded, or not saved at all.
Errors are :class:`ValidationFailed` with a message per field (``"hours.monday.0.opens"``), for
the page to show next to the field. No web framework here: agent/admin.py maps this to HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import available_timezones

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools import schema
from tools.business import MAX_ESCALATION_NUMBERS, WEEKDAYS, stored_escalation_numbers
from tools.db import Database, new_id, utc_now
from tools.knowledge import search_articles
from tools.registry import ToolRegistry

#: Tools the agent cannot work without: a call must be able to end politely.
REQUIRED_TOOLS = frozenset({"end_call"})
#: Placeholders each prompt text may use (filled per call; see agent/call.py).
PLACEHOLDERS = {
    "greeting": ("business_name",),
    "persona": ("business_name", "address", "hours", "services"),
}
MAX_HOLIDAY_DAYS = 366
SESSION_HOURS = 12
CALLBACK_OUTCOMES = ("message_taken", "called_back", "closed")


class ValidationFailed(ValueError):
    """Input was rejected; ``errors`` maps each offending field to a sentence about it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NotFound(LookupError):
    """The thing asked for does not exist (the message names it)."""


# --- Field checks (pure) -----------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def _text(
    data: dict[str, Any],
    key: str,
    errors: _Errors,
    *,
    field: str | None = None,
    required: bool = False,
    max_len: int = 200,
    label: str = "",
) -> str:
    field = field or key
    raw = data.get(key, "")
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        errors.add(field, "must be text")
        return ""
    value = raw.strip()
    if required and not value:
        errors.add(field, f"{label or key.replace('_', ' ').capitalize()} is required")
    elif len(value) > max_len:
        errors.add(field, f"at most {max_len} characters (got {len(value)})")
    return value


def _int(
    data: dict[str, Any], key: str, errors: _Errors, lo: int, hi: int, *, field: str = ""
) -> int:
    field = field or key
    raw = data.get(key)
    if isinstance(raw, bool) or raw is None or raw == "":
        errors.add(field, f"a whole number from {lo} to {hi} is required")
        return 0
    try:
        value = int(str(raw).strip())
    except ValueError:
        errors.add(field, f"a whole number from {lo} to {hi} is required, got {raw!r}")
        return 0
    if not lo <= value <= hi:
        errors.add(field, f"must be from {lo} to {hi}, got {value}")
    return value


def _bool(data: dict[str, Any], key: str, errors: _Errors, default: bool) -> bool:
    raw = data.get(key, default)
    if not isinstance(raw, bool):
        errors.add(key, "must be true or false")
        return default
    return raw


def valid_phone(text: str, region: str = "US") -> str:
    """E.164 for a dialable number, or ValueError with a sentence for the admin."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError(
            f"{text!r} is not a phone number; write it with its country code, e.g. +1 413 555 0199"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(
            f"{text!r} is not a valid phone number; check the digits and the country code"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _phone(data: dict[str, Any], key: str, errors: _Errors) -> str:
    value = _text(data, key, errors, max_len=40)
    if not value:
        return ""
    try:
        return valid_phone(value)
    except ValueError as exc:
        errors.add(key, str(exc))
        return value


def valid_timezone(name: str) -> bool:
    return name in _timezones()


_TIMEZONES: frozenset[str] = frozenset()


def _timezones() -> frozenset[str]:
    global _TIMEZONES
    if not _TIMEZONES:
        _TIMEZONES = frozenset(available_timezones())
    return _TIMEZONES


def _clock(text: Any) -> time | None:
    if not isinstance(text, str) or len(text.strip()) not in (4, 5):
        return None
    try:
        hours, minutes = text.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        return None


def validate_profile(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    clean: dict[str, Any] = {
        "name": _text(data, "name", errors, required=True, label="Business name"),
        "timezone": _text(data, "timezone", errors, required=True, max_len=64, label="Time zone"),
        "address": _text(data, "address", errors, max_len=400),
        "phone": _phone(data, "phone", errors),
        "slot_minutes": _int(data, "slot_minutes", errors, 5, 240),
        "booking_horizon_days": _int(data, "booking_horizon_days", errors, 1, 730),
    }
    if clean["timezone"] and not valid_timezone(clean["timezone"]):
        errors.add(
            "timezone",
            f"unknown time zone {clean['timezone']!r}; use a name like America/New_York",
        )
    if clean["slot_minutes"] and clean["slot_minutes"] % 5:
        errors.add("slot_minutes", "must be a multiple of 5 minutes")
    errors.raise_if_any()
    return clean


def validate_hours(data: dict[str, Any]) -> dict[int, list[tuple[str, str]]]:
    """``{"monday": [{"opens": "09:00", "closes": "18:00"}], ...}``; a day left out is closed."""
    errors = _Errors()
    if not isinstance(data, dict):
        raise ValidationFailed({"hours": "expected one list of opening ranges per weekday"})
    out: dict[int, list[tuple[str, str]]] = {}
    for day, ranges in data.items():
        if day not in WEEKDAYS:
            errors.add(f"hours.{day}", f"unknown day {day!r}; use monday … sunday")
            continue
        if not isinstance(ranges, list):
            errors.add(f"hours.{day}", "expected a list of opening ranges")
            continue
        if len(ranges) > 4:
            errors.add(f"hours.{day}", "at most 4 opening ranges a day")
        parsed: list[tuple[time, time, int]] = []
        for i, item in enumerate(ranges):
            where = f"hours.{day}.{i}"
            item = item if isinstance(item, dict) else {}
            opens, closes = _clock(item.get("opens")), _clock(item.get("closes"))
            if opens is None:
                errors.add(
                    f"{where}.opens", f"expected a time like 09:00, got {item.get('opens')!r}"
                )
            if closes is None:
                errors.add(
                    f"{where}.closes", f"expected a time like 18:00, got {item.get('closes')!r}"
                )
            if opens is None or closes is None:
                continue
            if opens >= closes:
                errors.add(
                    f"{where}.closes",
                    f"{day.capitalize()}: closing {closes:%H:%M} must be after opening "
                    f"{opens:%H:%M}",
                )
                continue
            parsed.append((opens, closes, i))
        parsed.sort()
        for (_o1, c1, i1), (o2, _c2, i2) in itertools.pairwise(parsed):
            if o2 < c1:
                errors.add(
                    f"hours.{day}.{i2}.opens",
                    f"{day.capitalize()}: this range overlaps range {i1 + 1} (until {c1:%H:%M})",
                )
        out[WEEKDAYS.index(day)] = [(f"{o:%H:%M}", f"{c:%H:%M}") for o, c, _ in parsed]
    errors.raise_if_any()
    return out


def _iso_date(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError:
        return None


def validate_holidays(items: Any) -> list[dict[str, Any]]:
    """``[{"start": "2026-12-24", "end": "2026-12-26", "name": "Christmas"}]``; no overlaps."""
    errors = _Errors()
    if not isinstance(items, list):
        raise ValidationFailed({"holidays": "expected a list of closures"})
    parsed: list[tuple[date, date, str, int]] = []
    for i, item in enumerate(items):
        where = f"holidays.{i}"
        item = item if isinstance(item, dict) else {}
        start = _iso_date(item.get("start") or item.get("date"))
        end = _iso_date(item.get("end")) if item.get("end") else start
        name = _text(item, "name", errors, field=f"{where}.name", required=True, label="Name")
        if start is None:
            errors.add(
                f"{where}.start", f"expected a date like 2026-12-25, got {item.get('start')!r}"
            )
            continue
        if end is None:
            errors.add(f"{where}.end", f"expected a date like 2026-12-26, got {item.get('end')!r}")
            continue
        if end < start:
            errors.add(f"{where}.end", f"the last day {end} is before the first day {start}")
            continue
        if (end - start).days >= MAX_HOLIDAY_DAYS:
            errors.add(f"{where}.end", f"a closure can last at most {MAX_HOLIDAY_DAYS} days")
            continue
        parsed.append((start, end, name, i))
    ordered = sorted(parsed)
    for (s1, e1, n1, _i1), (s2, _e2, _n2, i2) in itertools.pairwise(ordered):
        if s2 <= e1:
            errors.add(f"holidays.{i2}.start", f"overlaps {n1!r} ({s1} to {e1}); merge or move one")
    errors.raise_if_any()
    return [{"start": s, "end": e, "name": n} for s, e, n, _ in ordered]


def _price_cents(data: dict[str, Any], errors: _Errors) -> int:
    raw = data.get("price")
    if isinstance(raw, bool) or raw is None or raw == "":
        errors.add("price", "a price is required (0 for free)")
        return 0
    try:
        value = Decimal(str(raw).strip().lstrip("$"))
    except InvalidOperation:
        errors.add("price", f"expected an amount like 40 or 12.50, got {raw!r}")
        return 0
    if not value.is_finite() or value < 0 or value > 100000:
        errors.add("price", "must be from 0 to 100000")
        return 0
    if value != value.quantize(Decimal("0.01")):
        errors.add("price", "at most two decimals (cents)")
        return 0
    return int(value * 100)


def validate_service(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    clean = {
        "name": _text(data, "name", errors, required=True, label="Service name"),
        "duration_minutes": _int(data, "duration_minutes", errors, 5, 600),
        "price_cents": _price_cents(data, errors),
        "description": _text(data, "description", errors, max_len=1000),
        "aliases": ", ".join(
            a.strip() for a in _text(data, "aliases", errors, max_len=500).split(",") if a.strip()
        ),
    }
    errors.raise_if_any()
    return clean


def validate_staff(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    name = _text(data, "name", errors, required=True, label="Name")
    raw = data.get("services", [])
    if not isinstance(raw, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in raw
    ):
        errors.add("services", "expected a list of service ids")
        raw = []
    errors.raise_if_any()
    return {"name": name, "services": sorted(set(raw))}


def validate_escalation(
    data: dict[str, Any], business_phone: str, current_number: str = ""
) -> dict[str, Any]:
    """``{"escalation_numbers": ["+14135550199", ...], "warm_transfer": true}``: the numbers a
    transfer rings at once (an empty list: take a message instead).

    The older single ``escalation_number`` is still accepted: sent alone, it replaces the list
    with that one number ("" for none). Sent with the list, it must be the list's first number
    or its stored value ``current_number`` (a config read back with only the list edited).
    Returns the business columns to write: both ``escalation_numbers`` (comma-separated) and
    ``escalation_number`` (the first, or "") and ``warm_transfer``.
    """
    errors = _Errors()
    warm = _bool(data, "warm_transfer", errors, True)
    listed, single = data.get("escalation_numbers"), data.get("escalation_number")
    own = _normalized(business_phone)
    numbers: list[str] = []
    if listed is None and single is None:
        errors.add(
            "escalation_numbers",
            "the list of numbers to ring is required (an empty list: take a message instead)",
        )
    elif listed is None:
        number = _phone(data, "escalation_number", errors)
        if number and own and number == own:
            errors.add("escalation_number", _LOOP)
        numbers = [number] if number else []
    elif not isinstance(listed, list):
        errors.add("escalation_numbers", "expected a list of phone numbers")
    else:
        if len(listed) > MAX_ESCALATION_NUMBERS:
            errors.add(
                "escalation_numbers",
                f"at most {MAX_ESCALATION_NUMBERS} numbers can ring at once "
                f"(got {len(listed)}); remove {len(listed) - MAX_ESCALATION_NUMBERS}",
            )
        for i, raw in enumerate(listed):
            where = f"escalation_numbers.{i}"
            if isinstance(raw, str) and not raw.strip():
                errors.add(where, "empty; enter a number or remove this row")
                continue
            number = _phone({where: raw}, where, errors)
            if where in errors.errors:
                continue
            if own and number == own:
                errors.add(where, _LOOP)
            elif number in numbers:
                errors.add(where, f"the same number as number {numbers.index(number) + 1}")
            numbers.append(number)
        if single is not None and not errors.errors:
            first = numbers[0] if numbers else ""
            if _normalized(single) not in (first, _normalized(current_number)):
                errors.add(
                    "escalation_number",
                    f"{single!r} is not the first of escalation_numbers; "
                    "send only escalation_numbers",
                )
    errors.raise_if_any()
    return {
        "escalation_numbers": ",".join(numbers),
        "escalation_number": numbers[0] if numbers else "",
        "warm_transfer": warm,
    }


_LOOP = "this is the receptionist's own number; transferred calls would loop back to it"


def _normalized(number: Any) -> str:
    """E.164 of ``number`` if it is one, else the text as given ("" for nothing)."""
    text = number.strip() if isinstance(number, str) else ""
    if not text:
        return ""
    try:
        return valid_phone(text)
    except ValueError:
        return text


def validate_tools(data: dict[str, Any], current_disabled: frozenset[str]) -> frozenset[str]:
    """``{"enabled": {"take_message": false, ...}}`` (tools left out keep their state)."""
    errors = _Errors()
    enabled = data.get("enabled") if isinstance(data, dict) else None
    if not isinstance(enabled, dict):
        raise ValidationFailed({"enabled": "expected {tool name: true or false}"})
    known = ToolRegistry.all_names()
    disabled = set(current_disabled) & set(known)
    for name, on in enabled.items():
        if name not in known:
            errors.add(f"tools.{name}", f"unknown tool {name!r}")
        elif not isinstance(on, bool):
            errors.add(f"tools.{name}", "must be true or false")
        elif not on and name in REQUIRED_TOOLS:
            errors.add(f"tools.{name}", "the agent needs this tool to finish calls politely")
        elif on:
            disabled.discard(name)
        else:
            disabled.add(name)
    errors.raise_if_any()
    return frozenset(disabled)


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


def validate_prompts(data: dict[str, Any]) -> dict[str, str]:
    errors = _Errors()
    clean = {
        "greeting": _text(data, "greeting", errors, max_len=500),
        "persona": _text(data, "persona", errors, max_len=4000),
    }
    for key, allowed in PLACEHOLDERS.items():
        problem = check_template(clean[key], allowed)
        if problem:
            errors.add(key, problem)
    errors.raise_if_any()
    return clean


def validate_article(data: dict[str, Any]) -> dict[str, str]:
    errors = _Errors()
    clean = {
        "title": _text(data, "title", errors, required=True, max_len=300, label="Title"),
        "body": _text(data, "body", errors, required=True, max_len=10000, label="Answer text"),
        "tags": ", ".join(
            t.strip() for t in _text(data, "tags", errors, max_len=300).split(",") if t.strip()
        ),
    }
    errors.raise_if_any()
    return clean


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


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} for the fields that changed."""
    return {k: [before.get(k), after.get(k)] for k in after if before.get(k) != after.get(k)}


# --- Passwords and sessions --------------------------------------------------------------------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        check = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(check.hex(), digest)


def check_new_password(password: Any) -> str:
    if not isinstance(password, str) or len(password) < 10:
        raise ValidationFailed({"password": "use at least 10 characters"})
    if len(password) > 200:
        raise ValidationFailed({"password": "at most 200 characters"})
    return password


def _session_key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    actor: str
    csrf_token: str


# --- The service -------------------------------------------------------------------------------


class AdminService:
    """Reads and changes the business config; each change is validated and audited."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Auth -----------------------------------------------------------------------------------

    async def password_is_set(self) -> bool:
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(schema.admin_auth.c.id))).first() is not None

    async def check_password(self, password: str) -> bool:
        async with self.db.read() as conn:
            stored = (await conn.execute(sa.select(schema.admin_auth.c.password_hash))).scalar()
        return bool(stored) and verify_password(password, str(stored))

    async def set_password(self, actor: str, password: str) -> None:
        hashed = hash_password(check_new_password(password))
        async with self.db.write() as conn:
            existed = (await conn.execute(sa.select(schema.admin_auth.c.id))).first()
            await conn.execute(schema.admin_auth.delete())
            await conn.execute(
                schema.admin_auth.insert().values(id=1, password_hash=hashed, updated_at=utc_now())
            )
            # Everyone signed in with the old password signs in again.
            await conn.execute(schema.admin_sessions.delete())
            await _audit(
                conn,
                actor,
                "update" if existed else "create",
                "password",
                summary="admin password " + ("changed" if existed else "set"),
            )

    async def create_session(self, actor: str) -> tuple[str, Session]:
        cookie = secrets.token_urlsafe(32)
        session = Session(actor=actor[:200], csrf_token=secrets.token_urlsafe(24))
        now = datetime.now(UTC)
        async with self.db.write() as conn:
            await conn.execute(
                schema.admin_sessions.delete().where(
                    schema.admin_sessions.c.expires_at < now.isoformat()
                )
            )
            await conn.execute(
                schema.admin_sessions.insert().values(
                    id=_session_key(cookie),
                    actor=session.actor,
                    csrf_token=session.csrf_token,
                    created_at=now.isoformat(timespec="milliseconds"),
                    expires_at=(now + timedelta(hours=SESSION_HOURS)).isoformat(),
                )
            )
            await _audit(conn, session.actor, "login", "session", summary="signed in")
        return cookie, session

    async def get_session(self, cookie: str) -> Session | None:
        if not cookie:
            return None
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(schema.admin_sessions).where(
                        schema.admin_sessions.c.id == _session_key(cookie)
                    )
                )
            ).first()
        if row is None or row.expires_at < datetime.now(UTC).isoformat():
            return None
        return Session(actor=row.actor, csrf_token=row.csrf_token)

    async def end_session(self, cookie: str, actor: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                schema.admin_sessions.delete().where(
                    schema.admin_sessions.c.id == _session_key(cookie)
                )
            )
            await _audit(conn, actor, "logout", "session", summary="signed out")

    # The whole config -------------------------------------------------------------------------

    async def config(self) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(schema.business))).mappings().first()
            if row is None:
                raise NotFound("no business profile yet")
            hours_rows = await conn.execute(
                sa.select(schema.opening_hours).order_by(
                    schema.opening_hours.c.weekday, schema.opening_hours.c.opens
                )
            )
            holiday_rows = await conn.execute(
                sa.select(schema.holidays.c.day, schema.holidays.c.name)
            )
            hours: dict[str, list[dict[str, str]]] = {d: [] for d in WEEKDAYS}
            for h in hours_rows:
                hours[WEEKDAYS[h.weekday]].append({"opens": h.opens, "closes": h.closes})
            holidays = group_holidays([(h.day, h.name) for h in holiday_rows])
            services = await _services(conn)
            staff = await _staff(conn)
        disabled = {t for t in row["disabled_tools"].split(",") if t}
        registry = ToolRegistry()
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
                for spec in registry.specs.values()
            ],
            "prompts": {
                "greeting": row["greeting"],
                "persona": row["persona"],
                "placeholders": {k: list(v) for k, v in PLACEHOLDERS.items()},
            },
            "updated_at": row["updated_at"],
        }

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
                await _audit(conn, actor, "update", entity, summary=summary, changes=changes)
        return changes

    async def update_profile(self, actor: str, data: dict[str, Any]) -> dict[str, list[Any]]:
        clean = validate_profile(data)
        return await self._update_business(actor, "profile", clean, "business profile")

    async def update_escalation(self, actor: str, data: dict[str, Any]) -> dict[str, list[Any]]:
        async with self.db.read() as conn:
            row = await self._business_row(conn)
        clean = validate_escalation(data, row["phone"], row["escalation_number"])
        return await self._update_business(actor, "escalation", clean, "escalation")

    async def update_tools(self, actor: str, data: dict[str, Any]) -> dict[str, list[Any]]:
        async with self.db.read() as conn:
            current = (await self._business_row(conn))["disabled_tools"]
        disabled = validate_tools(data, frozenset(t for t in current.split(",") if t))
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

    async def update_prompts(self, actor: str, data: dict[str, Any]) -> dict[str, list[Any]]:
        clean = validate_prompts(data)
        return await self._update_business(actor, "prompts", clean, "greeting and persona")

    async def set_hours(self, actor: str, data: dict[str, Any]) -> dict[str, list[Any]]:
        clean = validate_hours(data)
        async with self.db.write() as conn:
            before = (await self.config_part(conn, "hours"))["hours"]
            await conn.execute(schema.opening_hours.delete())
            for weekday, ranges in clean.items():
                for opens, closes in ranges:
                    await conn.execute(
                        schema.opening_hours.insert().values(
                            weekday=weekday, opens=opens, closes=closes
                        )
                    )
            after = (await self.config_part(conn, "hours"))["hours"]
            changes = {
                day: [before[day], after[day]] for day in WEEKDAYS if before[day] != after[day]
            }
            if changes:
                await _audit(
                    conn, actor, "update", "hours", summary="opening hours", changes=changes
                )
                await _touch(conn)
        return changes

    async def set_holidays(self, actor: str, items: Any) -> dict[str, list[Any]]:
        clean = validate_holidays(items)
        async with self.db.write() as conn:
            before = (await self.config_part(conn, "holidays"))["holidays"]
            await conn.execute(schema.holidays.delete())
            for item in clean:
                day = item["start"]
                while day <= item["end"]:
                    await conn.execute(
                        schema.holidays.insert().values(day=day.isoformat(), name=item["name"])
                    )
                    day += timedelta(days=1)
            after = (await self.config_part(conn, "holidays"))["holidays"]
            changes = {"holidays": [before, after]} if before != after else {}
            if changes:
                await _audit(conn, actor, "update", "holidays", summary="holidays", changes=changes)
                await _touch(conn)
        return changes

    async def config_part(self, conn: AsyncConnection, part: str) -> dict[str, Any]:
        if part == "hours":
            hours: dict[str, list[dict[str, str]]] = {d: [] for d in WEEKDAYS}
            rows = await conn.execute(
                sa.select(schema.opening_hours).order_by(
                    schema.opening_hours.c.weekday, schema.opening_hours.c.opens
                )
            )
            for h in rows:
                hours[WEEKDAYS[h.weekday]].append({"opens": h.opens, "closes": h.closes})
            return {"hours": hours}
        rows = await conn.execute(sa.select(schema.holidays.c.day, schema.holidays.c.name))
        return {"holidays": group_holidays([(h.day, h.name) for h in rows])}

    # Services ----------------------------------------------------------------------------------

    async def save_service(
        self, actor: str, data: dict[str, Any], service_id: int | None = None
    ) -> dict[str, Any]:
        clean = validate_service(data)
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
                    sa.select(table).where(sa.func.lower(table.c.name) == clean["name"].lower())
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
                await _audit(
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
                    await _audit(
                        conn,
                        actor,
                        "update",
                        "service",
                        service_id,
                        f"service {clean['name']}",
                        changes,
                    )
            await _touch(conn)
            return next(s for s in await _services(conn) if s["id"] == service_id)

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
            await _audit(
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
        self, actor: str, data: dict[str, Any], staff_id: int | None = None
    ) -> dict[str, Any]:
        clean = validate_staff(data)
        table = schema.staff
        async with self.db.write() as conn:
            active_services = {s["id"] for s in await _services(conn) if s["active"]}
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
                current = next((s for s in await _staff(conn) if s["id"] == staff_id), None)
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
                await _audit(
                    conn, actor, action, "staff", staff_id, f"staff {clean['name']}", changes
                )
            return next(s for s in await _staff(conn) if s["id"] == staff_id)

    async def remove_staff(self, actor: str, staff_id: int) -> dict[str, Any]:
        table = schema.staff
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == staff_id))).first()
            if row is None or not row.active:
                raise NotFound(f"no staff member {staff_id}")
            await conn.execute(table.update().where(table.c.id == staff_id).values(active=False))
            await _audit(
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
                by_id = {r.id: _article(r) for r in rows}
            return [by_id[i] for i in ids if i in by_id]
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(schema.kb_articles).order_by(sa.func.lower(schema.kb_articles.c.title))
            )
            return [_article(r) for r in rows]

    async def article(self, article_id: int) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(schema.kb_articles).where(schema.kb_articles.c.id == article_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"no article {article_id}")
        return _article(row)

    async def save_article(
        self, actor: str, data: dict[str, Any], article_id: int | None = None
    ) -> dict[str, Any]:
        clean = validate_article(data)
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
                await _audit(
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
                    await _audit(
                        conn,
                        actor,
                        "update",
                        "kb_article",
                        article_id,
                        f"article {clean['title']}",
                        changes,
                    )
        return await self.article(article_id)

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
            await _audit(
                conn,
                actor,
                "delete",
                "kb_article",
                article_id,
                f"article {row['title']}",
                {k: [row[k], None] for k in ("title", "body", "tags")},
            )

    # Review ------------------------------------------------------------------------------------

    async def appointments(self, scope: str = "upcoming", limit: int = 200) -> list[dict[str, Any]]:
        a = schema.appointments
        query = (
            sa.select(
                a.c.id,
                a.c.starts_at,
                a.c.ends_at,
                a.c.status,
                a.c.call_sid,
                a.c.created_at,
                schema.customers.c.name.label("customer"),
                schema.customers.c.phone,
                schema.services.c.name.label("service"),
                schema.staff.c.name.label("staff"),
            )
            .join(schema.customers, schema.customers.c.id == a.c.customer_id)
            .join(schema.services, schema.services.c.id == a.c.service_id)
            .join(schema.staff, schema.staff.c.id == a.c.staff_id, isouter=True)
        )
        now = datetime.now(UTC).isoformat()
        if scope == "upcoming":
            query = query.where(a.c.starts_at >= now).order_by(a.c.starts_at)
        elif scope == "past":
            query = query.where(a.c.starts_at < now).order_by(a.c.starts_at.desc())
        else:
            query = query.order_by(a.c.starts_at.desc())
        async with self.db.read() as conn:
            rows = await conn.execute(query.limit(limit))
            return [dict(r._mapping) for r in rows]

    async def callbacks(self, status: str = "open", limit: int = 200) -> list[dict[str, Any]]:
        """Messages callers left (handoffs of kind "message"), newest first."""
        h = schema.handoffs
        query = (
            sa.select(
                h.c.id,
                h.c.created_at,
                h.c.updated_at,
                h.c.caller_name,
                h.c.caller_number,
                h.c.reason.label("message"),
                h.c.outcome,
                schema.calls.c.call_sid,
            )
            .join(schema.calls, schema.calls.c.id == h.c.call_id, isouter=True)
            .where(h.c.kind == "message")
            .order_by(h.c.id.desc())
            .limit(limit)
        )
        if status == "open":
            query = query.where(h.c.outcome == "message_taken")
        async with self.db.read() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def update_callback(self, actor: str, callback_id: int, outcome: str) -> None:
        if outcome not in CALLBACK_OUTCOMES:
            raise ValidationFailed(
                {"outcome": f"expected one of {', '.join(CALLBACK_OUTCOMES)}, got {outcome!r}"}
            )
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
                await _audit(
                    conn,
                    actor,
                    "update",
                    "callback",
                    callback_id,
                    f"callback for {row.caller_name or row.caller_number}",
                    {"outcome": [row.outcome, outcome]},
                )

    async def audit(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        t = schema.audit_log
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(t).order_by(t.c.id.desc()).limit(limit).offset(offset)
            )
            return [dict(r._mapping) for r in rows]


# --- Helpers -----------------------------------------------------------------------------------


async def _audit(
    conn: AsyncConnection,
    actor: str,
    action: str,
    entity: str,
    entity_id: int | str = "",
    summary: str = "",
    changes: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        schema.audit_log.insert().values(
            at=utc_now(),
            actor=actor[:200],
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            summary=summary[:1000],
            changes=changes or {},
        )
    )


async def _touch(conn: AsyncConnection) -> None:
    await conn.execute(schema.business.update().values(updated_at=utc_now()))


async def _services(conn: AsyncConnection) -> list[dict[str, Any]]:
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


async def _staff(conn: AsyncConnection) -> list[dict[str, Any]]:
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


def _article(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "body": row.body,
        "tags": row.tags,
        "updated_at": row.updated_at,
    }
