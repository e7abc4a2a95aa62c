"""One-time SMS codes that prove a caller owns a phone number: one per call, kept as a salted
HMAC (never the code), expiring after :data:`CODE_TTL`, ended by :data:`MAX_TRIES` tries.

Everything is in the database, so any worker can check a code another worker sent, and a call
that comes back from an unanswered transfer (same CallSid) stays verified.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.schema import iso_utc

CODE_TTL = timedelta(minutes=10)
MAX_TRIES = 3  # tries per code, the right one included
CODE_DIGITS = 6
#: Codes texted to one number within :data:`CODES_WINDOW`, across all calls and workers.
CODES_PER_NUMBER = 3
CODES_WINDOW = timedelta(hours=1)


def new_code() -> str:
    """A fresh code of :data:`CODE_DIGITS` digits from ``secrets``."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _digest(salt: str, code: str) -> str:
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


class Check(StrEnum):
    """What a code the caller said came to."""

    VERIFIED = "verified"  # right (now or earlier in the call)
    WRONG = "wrong"  # wrong, tries left
    LOCKED = "locked"  # no tries left: the code is dead
    EXPIRED = "expired"
    NONE = "none"  # no code was sent in this call


@dataclass(frozen=True)
class CheckResult:
    outcome: Check
    phone: str = ""  # the number the code went to
    tries_left: int = 0


class Started(StrEnum):
    """What asking for a new code came to."""

    STARTED = "started"  # kept: send it
    ALREADY_SENT = "already_sent"  # this call has a code (one per call)
    TOO_MANY = "too_many"  # :data:`CODES_PER_NUMBER` went to the number in the last hour


def serial_key(phone: str) -> str:
    """The ``Database.write(serial=...)`` name that makes two workers' :func:`start` for one
    number take turns, so neither counts before the other's code is kept."""
    return f"verification-codes:{phone}"


async def codes_sent(conn: AsyncConnection, phone: str, now: datetime) -> int:
    """Codes kept for ``phone`` (by any call) within :data:`CODES_WINDOW` before ``now``."""
    table = schema.caller_verifications
    found = await conn.execute(
        sa.select(sa.func.count()).where(
            table.c.phone == phone, table.c.created_at > iso_utc(now - CODES_WINDOW)
        )
    )
    return int(found.scalar_one())


async def start(
    conn: AsyncConnection, call_sid: str, phone: str, code: str, now: datetime
) -> Started:
    """Keep ``code`` (hashed) for ``call_sid``, sent to ``phone``, unless the call already has a
    code or ``phone`` had :data:`CODES_PER_NUMBER` in the last :data:`CODES_WINDOW`. Run it in a
    write transaction serialised on :func:`serial_key`."""
    table = schema.caller_verifications
    found = await conn.execute(sa.select(table.c.id).where(table.c.call_sid == call_sid))
    if found.first() is not None:
        return Started.ALREADY_SENT
    if await codes_sent(conn, phone, now) >= CODES_PER_NUMBER:
        return Started.TOO_MANY
    salt = secrets.token_hex(16)
    await conn.execute(
        table.insert().values(
            call_sid=call_sid,
            phone=phone,
            salt=salt,
            code_hash=_digest(salt, code),
            tries=0,
            expires_at=iso_utc(now + CODE_TTL),
            created_at=iso_utc(now),
        )
    )
    return Started.STARTED


async def forget(conn: AsyncConnection, call_sid: str) -> None:
    """Drop the call's code (its text could not be sent), so the call may ask again."""
    table = schema.caller_verifications
    await conn.execute(table.delete().where(table.c.call_sid == call_sid))


async def check(conn: AsyncConnection, call_sid: str, code: str, now: datetime) -> CheckResult:
    """Try ``code`` against the call's; every try is counted (atomically, so two workers never
    get more than :data:`MAX_TRIES` between them)."""
    table = schema.caller_verifications
    row = (
        (await conn.execute(sa.select(table).where(table.c.call_sid == call_sid)))
        .mappings()
        .first()
    )
    if row is None:
        return CheckResult(Check.NONE)
    phone = str(row["phone"])
    if row["verified_at"] is not None:
        return CheckResult(Check.VERIFIED, phone)
    if row["tries"] >= MAX_TRIES:
        return CheckResult(Check.LOCKED, phone)
    if datetime.fromisoformat(row["expires_at"]) <= now:
        return CheckResult(Check.EXPIRED, phone)
    counted = await conn.execute(
        table.update()
        .where(table.c.id == row["id"], table.c.tries < MAX_TRIES, table.c.verified_at.is_(None))
        .values(tries=table.c.tries + 1)
    )
    if counted.rowcount != 1:
        return CheckResult(Check.LOCKED, phone)
    if hmac.compare_digest(_digest(row["salt"], code), row["code_hash"]):
        await conn.execute(
            table.update().where(table.c.id == row["id"]).values(verified_at=iso_utc(now))
        )
        return CheckResult(Check.VERIFIED, phone)
    left = MAX_TRIES - row["tries"] - 1
    return CheckResult(Check.WRONG if left > 0 else Check.LOCKED, phone, left)


async def verified_phone(conn: AsyncConnection, call_sid: str) -> str:
    """The number a code proved in ``call_sid``, "" when none."""
    table = schema.caller_verifications
    found = await conn.execute(
        sa.select(table.c.phone).where(
            table.c.call_sid == call_sid, table.c.verified_at.is_not(None)
        )
    )
    return str(found.scalar() or "")
