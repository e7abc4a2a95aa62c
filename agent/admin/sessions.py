"""/api/admin/session and /api/admin/password: signing in and out, and the admin password."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from loguru import logger

from agent.admin.access import COOKIE, Actor, AdminAccess
from agent.settings import Settings
from telephony.ratelimit import client_key
from tools.admin.auth import AdminAuth
from tools.admin.models import LoginIn, PasswordIn, ValidationFailed

SESSION_MAX_AGE_SECS = 12 * 3600


def build_session_router(access: AdminAccess, auth: AdminAuth, settings: Settings) -> APIRouter:
    """Sign in (admin password or token), who am I, sign out, set the password."""
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(access)
    secure_cookie = settings.public_url.startswith("https://")
    limiter = access.limiter

    @router.post("/session", summary="Sign in (admin password or admin token)")
    async def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
        access.check_origin(request)
        client = client_key(request.client.host if request.client else "")
        if await limiter.blocked(client):
            raise HTTPException(429, "too many failed sign-ins; wait a few minutes")
        name = " ".join(body.name.split())[:60] or "admin"
        who = await _signed_in_as(access, auth, name, body.password, client)
        await limiter.succeeded(client)
        cookie, session = await auth.create_session(who)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_MAX_AGE_SECS,
            httponly=True,
            samesite="strict",
            secure=secure_cookie or request.url.scheme == "https",
            path="/",
        )
        return {
            "actor": session.actor,
            "csrf_token": session.csrf_token,
            "password_set": await auth.password_is_set(),
        }

    @router.get("/session", summary="Who is signed in")
    async def whoami(who: Actor = Who) -> dict[str, Any]:
        return {
            "actor": who.name,
            "via": who.via,
            "csrf_token": who.csrf_token,
            "password_set": await auth.password_is_set(),
        }

    @router.delete("/session", summary="Sign out")
    async def logout(response: Response, who: Actor = Who) -> dict[str, Any]:
        if who.cookie:
            await auth.end_session(who.cookie, who.name)
        response.delete_cookie(COOKIE, path="/")
        return {"signed_out": True}

    @router.put("/password", summary="Set or change the admin password")
    async def set_password(body: PasswordIn, who: Actor = Who) -> dict[str, Any]:
        if who.via == "session" and await auth.password_is_set():
            await _check_current(access, auth, body.current)
        await auth.set_password(who.name, body.password)
        return {"saved": True, "signed_out_everywhere": True}

    return router


async def _signed_in_as(
    access: AdminAccess, auth: AdminAuth, name: str, password: str, client: str
) -> str:
    """The session's actor for a sign-in with ``password`` (the admin token or password)."""
    if access.is_admin_token(password):
        return f"{name} (admin token)"
    if await auth.check_password(password):
        return f"{name} (password)"
    await access.limiter.failed(client)
    logger.warning(f"admin sign-in failed from {client}")
    raise HTTPException(401, "wrong password or token")


async def _check_current(access: AdminAccess, auth: AdminAuth, current: str | None) -> None:
    """A signed-in change of a set password must give the current one (or the admin token)."""
    if not current or not (access.is_admin_token(current) or await auth.check_password(current)):
        raise ValidationFailed({"current": "the current password (or admin token) is wrong"})
