"""The browser demo: the page at ``/`` and its call websocket at ``/demo/ws``.

The socket runs the same call pipeline as a phone call (see agent/app.py). It needs no Twilio
credentials and no admin token, so it is guarded instead: the Origin must be this server's own
(or ``FRONTDESK_PUBLIC_URL``), each client address may start only so many calls a minute
(:class:`telephony.host.ClientLimit`), and a call takes one of the demo's own slots
(:class:`telephony.host.DemoSlots`, ``FRONTDESK_DEMO_MAX_CALLS``), never a phone line. Both are
the app's, shared by all workers. When the demo is off (the default outside dev mode;
``FRONTDESK_DEMO``) the page and the socket answer 404.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Response, WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect

from telephony import browser_codec
from telephony.host import ClientLimit, DemoRouteConfig, DemoSlots
from telephony.media_socket import (
    await_start,
    close_quietly,
    deny,
    refuse_pending,
    websocket_frames,
)
from telephony.ratelimit import client_key
from telephony.stream_codec import ProtocolError

WS_PATH = "/demo/ws"

#: Runs a browser call whose start has arrived: (socket, its parser, the call's id).
RunBrowserCall = Callable[[WebSocket, browser_codec.BrowserStreamParser, str], Awaitable[None]]

#: The page's files: name -> media type. Nothing else under the static dir is served.
ASSETS = {
    "demo.css": "text/css; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "mic-worklet.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return ""
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    return f"{scheme}://{parts.netloc.lower()}"


def origin_allowed(origin: str | None, host: str | None, public_url: str) -> bool:
    """Same origin as the page (Origin's host equals the Host header) or the public URL's."""
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if host and parts.netloc.lower() == host.lower():
        return True
    return bool(public_url) and _origin_of(origin) == _origin_of(public_url)


def build_demo_router(
    slots: DemoSlots,
    limiter: ClientLimit,
    config: DemoRouteConfig,
    run_call: RunBrowserCall,
    static_dir: Path,
) -> APIRouter:
    """The page, its assets and the call socket, each call taking one of the demo's ``slots``,
    each client's calls counted by ``limiter`` (``config.calls_per_minute`` a minute); 404s
    when disabled."""
    router = APIRouter()
    if not config.enabled:

        @router.websocket(WS_PATH)
        async def demo_disabled(websocket: WebSocket) -> None:
            await deny(websocket, 404, "the browser demo is off (FRONTDESK_DEMO=1 turns it on)")

        return router
    router.include_router(build_page_router(static_dir))
    router.include_router(build_socket_router(slots, limiter, config, run_call))
    return router


def build_page_router(static_dir: Path) -> APIRouter:
    """/ (the demo page) and /demo/<asset>, read once, served with the security headers."""
    router = APIRouter()
    page = (static_dir / "demo.html").read_bytes()
    assets = {name: (static_dir / name).read_bytes() for name in ASSETS}

    @router.get("/", include_in_schema=False)
    async def demo_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @router.get("/demo/{name}", include_in_schema=False)
    async def demo_asset(name: str) -> Response:
        if name not in assets:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(assets[name], media_type=ASSETS[name], headers=SECURITY_HEADERS)

    return router


def build_socket_router(
    slots: DemoSlots, limiter: ClientLimit, config: DemoRouteConfig, run_call: RunBrowserCall
) -> APIRouter:
    """The call socket: this server's origin only, rate-limited per client, one demo slot."""
    router = APIRouter()

    async def admitted(websocket: WebSocket) -> str:
        """Accept the socket and take a call slot (its id), or refuse it (saying why) and
        return ""."""
        origin = websocket.headers.get("origin")
        if not origin_allowed(origin, websocket.headers.get("host"), config.public_url):
            logger.warning(f"demo socket refused: origin {origin!r} is not this server's")
            slots.refused("bad_origin")
            await deny(websocket, 403, "origin not allowed")
            return ""
        address = websocket.client.host if websocket.client else ""
        await websocket.accept()
        retry_after = await limiter.hit(client_key(address))
        if retry_after:
            seconds = math.ceil(retry_after)
            logger.warning(f"demo socket refused: rate limit for {client_key(address)}")
            slots.refused("rate_limited")
            await _refuse(
                websocket,
                1008,
                "rate_limited",
                f"You've started several calls in a short time. Please wait {seconds} seconds, "
                "then try again.",
            )
            return ""
        slot = await slots.take_slot()  # taken now, so no other demo call takes it meanwhile
        if not slot:
            if slots.accepting:
                logger.warning(f"demo socket refused: the demo is full ({config.max_calls})")
                slots.refused("demo_full")
                busy = (
                    f"The demo is full: it takes {config.max_calls} "
                    f"call{'s' if config.max_calls != 1 else ''} at a time. "
                    "Please try again in a minute."
                )
            else:
                logger.warning("demo socket refused: shutting down")
                slots.refused("over_capacity")  # counted as shutting_down
                busy = "The server is restarting. Please try again in a minute."
            await _refuse(websocket, 1013, "busy", busy)
        return slot

    @router.websocket(WS_PATH)
    async def demo_socket(websocket: WebSocket) -> None:
        place = slots.pending_starts.admit()
        if place is None:
            await refuse_pending(websocket, slots.pending_starts, slots.refused)
            return
        with place:  # counted among the sockets waiting for their start until it comes
            slot = await admitted(websocket)
            if not slot:
                return
            try:
                parser = await _started(websocket)
                place.leave()
                if parser is not None:
                    await _run(websocket, parser, run_call)
            finally:
                await slots.release_slot(slot)
                await close_quietly(websocket, 1000, "call ended")

    return router


async def _started(websocket: WebSocket) -> browser_codec.BrowserStreamParser | None:
    """The parser once the page's start message has come; None (the page told why) if not."""
    parser = browser_codec.BrowserStreamParser()
    try:
        await await_start(websocket_frames(websocket), parser, what="start message")
    except ProtocolError as exc:
        logger.warning(f"demo socket refused before start: {exc}")
        await _refuse(websocket, 1008, "protocol", str(exc))
        return None
    except WebSocketDisconnect:
        return None
    return parser


async def _run(
    websocket: WebSocket, parser: browser_codec.BrowserStreamParser, run_call: RunBrowserCall
) -> None:
    """Say ready under a new browser call id ("BR" + 32 hex digits), run the call."""
    call_sid = f"BR{secrets.token_hex(16)}"
    logger.info(f"browser call {call_sid} starting at {parser.sample_rate} Hz")
    await websocket.send_text(browser_codec.encode_ready(call_sid, parser.sample_rate))
    await run_call(websocket, parser, call_sid)


async def _refuse(websocket: WebSocket, code: int, error: str, message: str) -> None:
    """Tell the page why in plain words, then close."""
    try:
        await websocket.send_text(browser_codec.encode_error(error, message))
    except Exception:  # the page already went away
        pass
    await close_quietly(websocket, code, error)
