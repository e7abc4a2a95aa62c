"""The /admin page and its assets (with the page's security headers), and the admin API's errors
in the shape the page shows them: one message per field, next to the field."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from tools.admin.models import NotFound, ValidationFailed

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "admin"
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
FIX_FIELDS = "Please correct the highlighted fields."


class _Assets(StaticFiles):
    """The page's scripts and styles, with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def install_page(app: FastAPI) -> None:
    """/admin (the page) and /admin/assets (its scripts and styles)."""

    @app.get("/admin", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/admin/assets", _Assets(directory=STATIC_DIR), name="admin-assets")


def field_errors(exc: RequestValidationError) -> dict[str, str]:
    """FastAPI's validation errors as ``{"field.path": "message"}`` (the first one per field)."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        errors.setdefault(".".join(location) or "body", str(error.get("msg", "invalid")))
    return errors


def install_error_handlers(app: FastAPI) -> None:
    """422 with per-field messages (admin API only), 404 for what does not exist."""

    @app.exception_handler(ValidationFailed)
    async def on_invalid(_request: Request, exc: ValidationFailed) -> JSONResponse:
        return JSONResponse({"detail": FIX_FIELDS, "errors": exc.errors}, 422)

    @app.exception_handler(NotFound)
    async def on_not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(RequestValidationError)
    async def on_bad_body(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(("/api/admin", "/api/outbound")):
            return await request_validation_exception_handler(request, exc)
        return JSONResponse({"detail": FIX_FIELDS, "errors": field_errors(exc)}, 422)
