"""Who is asking the admin API: the bearer token or a signed-in session (with its CSRF token and
a same-site ``Origin`` on changes), and the throttle on failed sign-ins."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, Response

from agent.auth import bearer_token, token_matches
from agent.settings import Secret
from tools.admin.auth import AdminAuth
from tools.store.db import Database
from tools.store.limits import RateEvents

COOKIE = "frontdesk_admin"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
LOGIN_FAILURES_ALLOWED = 10
LOGIN_WINDOW_SECS = 600.0


@dataclass(frozen=True)
class Actor:
    """Who is making a request: ``name`` goes into the audit log."""

    name: str
    via: str  # "token" | "session"
    cookie: str = ""
    csrf_token: str = ""


class LoginLimiter:
    """At most ``allowed`` failed sign-ins per client in a sliding window, counted in the
    database, so every worker refuses a client that failed on any of them."""

    def __init__(
        self,
        db: Database,
        allowed: int = LOGIN_FAILURES_ALLOWED,
        window: float = LOGIN_WINDOW_SECS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.allowed, self.window = allowed, window
        self._failures = RateEvents(
            db, "admin_login_failure", limit=allowed, window_secs=window, clock=clock
        )

    async def blocked(self, client: str) -> bool:
        return await self._failures.blocked(client)

    async def failed(self, client: str) -> None:
        await self._failures.add(client)

    async def succeeded(self, client: str) -> None:
        await self._failures.clear(client)


def same_origin(request: Request, public_url: str) -> bool:
    """Whether the request's ``Origin`` (when a browser sent one) is this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin GET; the CSRF token still applies
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin in {own, public_url.rstrip("/")} - {""}


class AdminAccess:
    """The FastAPI dependency naming the :class:`Actor` of an admin request (401/403 otherwise)."""

    def __init__(self, auth: AdminAuth, admin_token: Secret, public_url: str) -> None:
        self.auth = auth
        self.admin_token = admin_token
        self.public_url = public_url
        self.limiter = LoginLimiter(auth.db)

    def is_admin_token(self, text: str) -> bool:
        return token_matches(text, self.admin_token)

    def check_origin(self, request: Request) -> None:
        if not same_origin(request, self.public_url):
            raise HTTPException(403, "cross-site request refused")

    async def __call__(self, request: Request, response: Response) -> Actor:
        response.headers["Cache-Control"] = "no-store"  # admin data is never cached
        header = request.headers.get("authorization", "")
        if header:
            if not self.is_admin_token(bearer_token(header)):
                raise HTTPException(401, "invalid admin token")
            return Actor(name="api token", via="token")
        cookie = request.cookies.get(COOKIE, "")
        session = await self.auth.get_session(cookie)
        if session is None:
            raise HTTPException(
                401,
                "sign in first (or send Authorization: Bearer <admin token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.method in UNSAFE:
            self.check_origin(request)
            sent = request.headers.get("x-csrf-token", "")
            if not token_matches(sent, session.csrf_token):
                raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        return Actor(session.actor, "session", cookie, session.csrf_token)
