"""Signing in to the admin console: the admin password (scrypt) and sessions.

A session is stored under the SHA-256 of its cookie, with the CSRF token its page must send and
an expiry; setting the password signs everyone out. Each of these is in the audit log.

scrypt is slow on purpose (~70 ms of a core, 16 MiB): it runs in one worker thread of its own per
process, one hash at a time and at a lower CPU priority (Linux), so sign-in attempts (wrong ones
included) never stall the event loop that carries live calls' audio, nor take a core from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa

from tools.admin.models import ValidationFailed
from tools.store import schema
from tools.store.audit import record_audit
from tools.store.db import Database, utc_now

T = TypeVar("T")

SESSION_HOURS = 12
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to the event loop's (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: one thread at normal priority is still off the loop


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


def check_new_password(password: str) -> str:
    """``password`` if it is long enough to set; ValidationFailed on "password" otherwise."""
    if len(password) < 10:
        raise ValidationFailed({"password": "use at least 10 characters"})
    if len(password) > 200:
        raise ValidationFailed({"password": "at most 200 characters"})
    return password


def _session_key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """Who signed in, and the CSRF token their page sends with each change."""

    actor: str
    csrf_token: str


class AdminAuth:
    """The admin password and the sessions signed in with it (or with the admin token)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._hashing = ThreadPoolExecutor(1, "scrypt", initializer=_lower_priority)

    async def _off_loop(self, work: Callable[[], T]) -> T:
        """Run scrypt ``work`` in the hashing thread."""
        return await asyncio.get_running_loop().run_in_executor(self._hashing, work)

    async def password_is_set(self) -> bool:
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(schema.admin_auth.c.id))).first() is not None

    async def check_password(self, password: str) -> bool:
        async with self.db.read() as conn:
            stored = (await conn.execute(sa.select(schema.admin_auth.c.password_hash))).scalar()
        if not stored:
            return False
        return await self._off_loop(lambda: verify_password(password, str(stored)))

    async def set_password(self, actor: str, password: str) -> None:
        checked = check_new_password(password)
        hashed = await self._off_loop(lambda: hash_password(checked))
        async with self.db.write() as conn:
            existed = (await conn.execute(sa.select(schema.admin_auth.c.id))).first()
            await conn.execute(schema.admin_auth.delete())
            await conn.execute(
                schema.admin_auth.insert().values(id=1, password_hash=hashed, updated_at=utc_now())
            )
            # Everyone signed in with the old password signs in again.
            await conn.execute(schema.admin_sessions.delete())
            await record_audit(
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
            await record_audit(conn, session.actor, "login", "session", summary="signed in")
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
            await record_audit(conn, actor, "logout", "session", summary="signed out")
