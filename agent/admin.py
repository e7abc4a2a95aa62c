"""The admin console over HTTP: the /admin page and the JSON API under /api/admin.

Auth: ``Authorization: Bearer <admin token>`` (scripts), or a session cookie from signing in on
the page with the admin token or the admin password (set from the page after the first sign-in
with the token). Requests that change something with a session cookie must carry the session's
CSRF token in ``X-CSRF-Token`` (and, when the browser sends one, a same-site ``Origin``).
401 = not signed in; 403 = signed in but the request is not acceptable (CSRF, cross-site origin).

Config changes apply to the next call: each call loads the business when it starts and keeps it
(agent/session.py). After a change the local LLM's cached prompt prefix is re-evaluated in the
background, once no call is running, so the next call does not pay for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger

from agent.auth import bearer_token, require_bearer, token_matches
from agent.brain.model import LocalBrain
from agent.prompts import build_system_prompt, fill, phrases
from agent.settings import Secret, Settings
from tools.admin.auth import AdminAuth
from tools.admin.models import (
    ArticleIn,
    CallbackIn,
    EscalationIn,
    HolidaysIn,
    HoursIn,
    LoginIn,
    NotFound,
    PasswordIn,
    ProfileIn,
    PromptsIn,
    ServiceIn,
    StaffIn,
    ToolsIn,
    ValidationFailed,
)
from tools.admin.review import AdminReview
from tools.admin.service import AdminService
from tools.admin.views import AdminViews
from tools.catalog import TOOL_NAMES, tool_registry
from tools.domain.business import Business, describe_hours
from tools.store.business import load_business
from tools.store.calls import CallRecords, CallStore
from tools.store.db import Database

STATIC_DIR = Path(__file__).resolve().parent / "static" / "admin"
COOKIE = "frontdesk_admin"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
LOGIN_FAILURES_ALLOWED = 10
LOGIN_WINDOW_SECS = 600.0
WARM_DEBOUNCE_SECS = 1.0
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Assets(StaticFiles):
    """The page's scripts and styles, with the page's security headers."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


# --- Auth ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who is making a request: ``name`` goes into the audit log."""

    name: str
    via: str  # "token" | "session"
    cookie: str = ""
    csrf_token: str = ""


class LoginLimiter:
    """At most N failed sign-ins per client in a sliding window."""

    def __init__(self, allowed: int = LOGIN_FAILURES_ALLOWED, window: float = LOGIN_WINDOW_SECS):
        self.allowed, self.window = allowed, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, client: str) -> bool:
        failures = self._failures[client]
        while failures and failures[0] < time.monotonic() - self.window:
            failures.popleft()
        return len(failures) >= self.allowed

    def failed(self, client: str) -> None:
        self._failures[client].append(time.monotonic())

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def _same_origin(request: Request, public_url: str) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin GET; the CSRF token still applies
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin in {own, public_url.rstrip("/")} - {""}


# --- The local LLM's prompt prefix --------------------------------------------------------------


def local_prefix(business: Business) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tools, messages) whose prompt is the same for every call of ``business``."""
    enabled = [n for n in TOOL_NAMES if n not in business.disabled_tools]
    static = build_system_prompt(business, None, True).split("This call:")[0]
    return tool_registry(enabled).openai_tools(), [{"role": "system", "content": static}]


def warm_local_brain(state: Any, business: Business) -> None:
    """Evaluate the fixed part of the local LLM's prompt for ``business`` (blocking).

    Everything before "This call:" is the same for every call; it is kept in the KV cache (and
    on disk, so restarts are quick). The brain matches the cache token by token, so a stale
    prefix is never wrong, only slower: this keeps it current.
    """
    tools, messages = local_prefix(business)
    state.brain.warm_up(tools, messages, Path(state.settings.data_dir) / "models" / "prompt-cache")


class AdminHost(Protocol):
    """What the admin console needs of the application."""

    settings: Settings
    db: Database
    calls: CallStore
    admin_token: Secret
    brain: LocalBrain | None
    active_calls: int
    escalation_number: str


class ConfigApplier:
    """What happens after a config change: cached copies refreshed, the brain re-warmed."""

    def __init__(self, state: AdminHost) -> None:
        self.state = state
        self.warmed = 0  # re-warms completed (tests wait on it)
        self._task: asyncio.Task[None] | None = None
        self._again = False

    async def changed(self) -> None:
        business = await load_business(self.state.db)
        self.state.escalation_number = business.escalation_number
        if self.state.brain is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the running re-warm picks the newest config up afterwards
            return
        self._task = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        while True:
            self._again = False
            await asyncio.sleep(WARM_DEBOUNCE_SECS)
            # A running call keeps the model's cache; active_calls is a plain counter.
            while self.state.active_calls > 0:  # noqa: ASYNC110
                await asyncio.sleep(1.0)
            try:
                business = await load_business(self.state.db)
                await asyncio.to_thread(warm_local_brain, self.state, business)
                self.warmed += 1
            except Exception as exc:  # an optimisation: the next call is correct regardless
                logger.warning(f"re-warming the local LLM after a config change failed: {exc}")
            if not self._again:
                return

    async def idle(self) -> None:
        """Wait for a pending re-warm to finish."""
        if self._task is not None:
            await asyncio.wait({self._task})


# --- App wiring ---------------------------------------------------------------------------------


def install_admin(app: FastAPI, state: AdminHost) -> ConfigApplier:
    """Add the /admin page, the /api/admin routes and their error handlers to ``app``."""
    service = AdminService(state.db)
    auth = AdminAuth(state.db)
    views = AdminViews(state.db)
    review = AdminReview(state.db)
    applier = ConfigApplier(state)
    limiter = LoginLimiter()
    settings = state.settings
    secure_cookie = settings.public_url.startswith("https://")

    def is_admin_token(text: str) -> bool:
        return token_matches(text, state.admin_token)

    async def actor(request: Request, response: Response) -> Actor:
        response.headers["Cache-Control"] = "no-store"  # admin data is never cached
        header = request.headers.get("authorization", "")
        if header:
            if not is_admin_token(bearer_token(header)):
                raise HTTPException(401, "invalid admin token")
            return Actor(name="api token", via="token")
        cookie = request.cookies.get(COOKIE, "")
        session = await auth.get_session(cookie)
        if session is None:
            raise HTTPException(
                401,
                "sign in first (or send Authorization: Bearer <admin token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.method in UNSAFE:
            if not _same_origin(request, settings.public_url):
                raise HTTPException(403, "cross-site request refused")
            sent = request.headers.get("x-csrf-token", "")
            if not token_matches(sent, session.csrf_token):
                raise HTTPException(403, "CSRF token missing or wrong; reload the page")
        return Actor(session.actor, "session", cookie, session.csrf_token)

    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Who = Depends(actor)

    async def apply(changes: dict[str, Any]) -> dict[str, Any]:
        if changes:
            await applier.changed()
        return {"saved": True, "changes": changes}

    # Session ----------------------------------------------------------------------------------

    @router.post("/session", summary="Sign in (admin password or admin token)")
    async def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
        if not _same_origin(request, settings.public_url):
            raise HTTPException(403, "cross-site request refused")
        client = request.client.host if request.client else "?"
        if limiter.blocked(client):
            raise HTTPException(429, "too many failed sign-ins; wait a few minutes")
        name = " ".join(body.name.split())[:60] or "admin"
        if is_admin_token(body.password):
            who = f"{name} (admin token)"
        elif await auth.check_password(body.password):
            who = f"{name} (password)"
        else:
            limiter.failed(client)
            logger.warning(f"admin sign-in failed from {client}")
            raise HTTPException(401, "wrong password or token")
        limiter.succeeded(client)
        cookie, session = await auth.create_session(who)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=12 * 3600,
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
            current = body.current
            if not current or not (is_admin_token(current) or await auth.check_password(current)):
                raise ValidationFailed(
                    {"current": "the current password (or admin token) is wrong"}
                )
        await auth.set_password(who.name, body.password)
        return {"saved": True, "signed_out_everywhere": True}

    # Configuration ------------------------------------------------------------------------------

    @router.get("/config", summary="The whole business configuration")
    async def get_config(who: Actor = Who) -> dict[str, Any]:
        config = await views.config()
        config["providers"] = providers_view(settings)
        return config

    @router.put("/profile", summary="Business name, time zone, address, phone, booking rules")
    async def put_profile(body: ProfileIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_profile(who.name, body))

    @router.put("/hours", summary="Weekly opening hours (replaces all)")
    async def put_hours(body: HoursIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.set_hours(who.name, body))

    @router.put("/holidays", summary="Closed days and periods (replaces all)")
    async def put_holidays(body: HolidaysIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.set_holidays(who.name, body))

    @router.post("/services", status_code=201, summary="Add a service")
    async def add_service(body: ServiceIn, who: Actor = Who) -> dict[str, Any]:
        saved = await service.save_service(who.name, body)
        await applier.changed()
        return saved

    @router.put("/services/{service_id}", summary="Change a service")
    async def put_service(service_id: int, body: ServiceIn, who: Actor = Who) -> dict[str, Any]:
        saved = await service.save_service(who.name, body, service_id)
        await applier.changed()
        return saved

    @router.delete("/services/{service_id}", summary="Stop offering a service")
    async def delete_service(service_id: int, who: Actor = Who) -> dict[str, Any]:
        removed = await service.remove_service(who.name, service_id)
        await applier.changed()
        return removed

    @router.post("/staff", status_code=201, summary="Add a staff member")
    async def add_staff(body: StaffIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_staff(who.name, body)

    @router.put("/staff/{staff_id}", summary="Change a staff member and their services")
    async def put_staff(staff_id: int, body: StaffIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_staff(who.name, body, staff_id)

    @router.delete("/staff/{staff_id}", summary="Remove a staff member")
    async def delete_staff(staff_id: int, who: Actor = Who) -> dict[str, Any]:
        return await service.remove_staff(who.name, staff_id)

    @router.put("/escalation", summary="Escalation numbers and warm/cold transfer")
    async def put_escalation(body: EscalationIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_escalation(who.name, body))

    @router.put("/tools", summary="Turn the agent's tools on or off")
    async def put_tools(body: ToolsIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_tools(who.name, body))

    @router.put("/prompts", summary="Greeting and persona")
    async def put_prompts(body: PromptsIn, who: Actor = Who) -> dict[str, Any]:
        return await apply(await service.update_prompts(who.name, body))

    @router.post("/prompts/preview", summary="How a greeting and persona would read on a call")
    async def preview_prompts(body: PromptsIn, who: Actor = Who) -> dict[str, Any]:
        return await prompt_preview(state.db, state.brain is not None, body)

    @router.get("/providers", summary="Which providers the environment configured (read-only)")
    async def get_providers(who: Actor = Who) -> dict[str, Any]:
        return providers_view(settings)

    # Knowledge base ---------------------------------------------------------------------------

    @router.get("/kb", summary="Knowledge-base articles; q= searches like the agent does")
    async def list_articles(q: str = "", who: Actor = Who) -> dict[str, Any]:
        return {"articles": await views.articles(q)}

    @router.post("/kb", status_code=201, summary="Add an article")
    async def add_article(body: ArticleIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_article(who.name, body)

    @router.get("/kb/{article_id}", summary="One article")
    async def get_article(article_id: int, who: Actor = Who) -> dict[str, Any]:
        return await views.article(article_id)

    @router.put("/kb/{article_id}", summary="Change an article")
    async def put_article(article_id: int, body: ArticleIn, who: Actor = Who) -> dict[str, Any]:
        return await service.save_article(who.name, body, article_id)

    @router.delete("/kb/{article_id}", summary="Delete an article")
    async def delete_article(article_id: int, who: Actor = Who) -> dict[str, Any]:
        await service.delete_article(who.name, article_id)
        return {"deleted": article_id}

    # Review -------------------------------------------------------------------------------------

    @router.get("/calls", summary="Calls, newest first")
    async def list_calls(limit: int = 50, offset: int = 0, who: Actor = Who) -> dict[str, Any]:
        return {"calls": await review.calls.list_summaries(*page(limit, offset))}

    @router.get("/calls/{call_sid}", summary="One call: transcript, tools, latency, recording")
    async def get_call(call_sid: str, who: Actor = Who) -> dict[str, Any]:
        detail = await review.calls.review(call_sid)
        if detail is None:
            raise NotFound(f"no call {call_sid}")
        detail["recording_url"] = (
            f"/api/admin/calls/{call_sid}/recording" if recording_file(settings, detail) else ""
        )
        return detail

    @router.get("/calls/{call_sid}/recording", summary="The call's stereo WAV")
    async def get_recording(call_sid: str, who: Actor = Who) -> FileResponse:
        call = await review.calls.get_call(call_sid)
        path = recording_file(settings, call) if call else None
        if path is None:
            raise NotFound(f"no recording for call {call_sid}")
        return FileResponse(path, media_type="audio/wav", filename=f"{call_sid}.wav")

    @router.get("/appointments", summary="Appointments")
    async def list_appointments(
        scope: Literal["upcoming", "past", "all"] = "upcoming", who: Actor = Who
    ) -> dict[str, Any]:
        return {"appointments": await review.appointments(scope)}

    @router.get("/callbacks", summary="Callback requests (messages callers left)")
    async def list_callbacks(
        status: Literal["open", "all"] = "open", who: Actor = Who
    ) -> dict[str, Any]:
        return {"callbacks": await review.callbacks(status)}

    @router.put("/callbacks/{callback_id}", summary="Mark a callback request handled")
    async def put_callback(callback_id: int, body: CallbackIn, who: Actor = Who) -> dict[str, Any]:
        await service.update_callback(who.name, callback_id, body.outcome)
        return {"saved": True}

    @router.get("/audit", summary="Who changed what, newest first")
    async def list_audit(limit: int = 100, offset: int = 0, who: Actor = Who) -> dict[str, Any]:
        return {"entries": await review.audit(max(1, min(limit, 500)), max(0, offset))}

    app.include_router(router)

    # The page -----------------------------------------------------------------------------------

    @app.get("/admin", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/admin/assets", _Assets(directory=STATIC_DIR), name="admin-assets")

    # Errors: a message per field, next to the field on the page ---------------------------------

    @app.exception_handler(ValidationFailed)
    async def on_invalid(_request: Request, exc: ValidationFailed) -> JSONResponse:
        return JSONResponse(
            {"detail": "Please correct the highlighted fields.", "errors": exc.errors}, 422
        )

    @app.exception_handler(NotFound)
    async def on_not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(RequestValidationError)
    async def on_bad_body(request: Request, exc: RequestValidationError) -> Any:
        if not request.url.path.startswith("/api/admin"):
            return await request_validation_exception_handler(request, exc)
        errors: dict[str, str] = {}
        for error in exc.errors():
            location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
            errors.setdefault(".".join(location) or "body", str(error.get("msg", "invalid")))
        return JSONResponse(
            {"detail": "Please correct the highlighted fields.", "errors": errors}, 422
        )

    return applier


def providers_view(settings: Settings) -> dict[str, Any]:
    """What the environment configured (read-only; never a secret)."""
    names = settings.provider_names()
    return {
        "stt": names["stt"],
        "llm": names["llm"] + (f" ({settings.openai_model})" if settings.uses_remote_llm else ""),
        "tts": names["tts"],
        "telephony": "twilio" if settings.twilio_auth_token else "not configured",
        "public_url": settings.public_url or "(derived from each request)",
        "max_concurrent_calls": settings.max_concurrent_calls,
        "note": "Providers are chosen by environment variables; see README, Configuration.",
    }


# --- Call records over HTTP ----------------------------------------------------------------------


def page(limit: int, offset: int) -> tuple[int, int]:
    """A page of calls as asked for, clamped: limit 1-500, offset 0 or more."""
    return max(1, min(limit, 500)), max(0, offset)


def build_records_router(records: CallRecords, admin_token: Secret) -> APIRouter:
    """/api/calls: the call records as stored, for scripts with the admin token."""
    router = APIRouter(prefix="/api/calls", dependencies=[Depends(require_bearer(admin_token))])

    @router.get("")
    async def list_calls(limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return {"calls": await records.list_calls(*page(limit, offset))}

    @router.get("/{call_sid}")
    async def get_call(call_sid: str) -> dict[str, Any]:
        call = await records.get_call(call_sid)
        if call is None:
            raise NotFound(f"no call {call_sid}")
        return call

    return router


def recording_file(settings: Settings, call: dict[str, Any]) -> Path | None:
    """The call's recording if it exists inside the data dir's recordings folder."""
    raw = call.get("recording_path") or ""
    if not raw:
        return None
    root = (Path(settings.data_dir) / "recordings").resolve()
    path = Path(raw).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def prompt_preview(db: Database, local_llm: bool, prompts: PromptsIn) -> dict[str, Any]:
    """The greeting as callers hear it and the system prompt as the LLM reads it."""
    business = replace(await load_business(db), greeting=prompts.greeting, persona=prompts.persona)
    spoken = fill(prompts.greeting or phrases()["greeting"], business_name=business.name)
    system = build_system_prompt(business, None, True)
    return {
        "greeting": spoken,
        "system_prompt": system,
        "hours": describe_hours(business),
        "local_llm": local_llm,
    }
