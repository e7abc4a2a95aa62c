"""Twilio-facing routes: the voice webhook (TwiML) and the Media Streams websocket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telephony import codec, twiml
from telephony.signature import is_valid_twilio_request, public_request_url
from telephony.tokens import TokenError

#: How long a new media websocket may take to send its start event.
START_TIMEOUT_SECS = 10.0
MAX_PRE_START_MESSAGES = 5

RunCall = Callable[
    [WebSocket, codec.MediaStreamParser, codec.Start, dict[str, str]], Awaitable[None]
]


def mask_phone(number: str) -> str:
    """+14135550123 -> +1413***0123 (numbers are masked in logs, never in the database)."""
    if len(number) <= 6:
        return "***"
    return f"{number[:5]}***{number[-4:]}"


def request_base(request: Request) -> str:
    """The base URL this request reached us on (scheme and host as the client used them)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def stream_url(public_base: str, request: Request) -> str:
    if public_base:
        base = public_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    else:
        scheme = "wss" if request.url.scheme == "https" else "ws"
        base = f"{scheme}://{request.url.netloc}"
    return f"{base}/twilio/media"


def build_router(state: Any, run_call: RunCall) -> APIRouter:
    """Routes bound to the app state (settings, tokens, capacity) and the call runner."""
    router = APIRouter()
    settings = state.settings

    async def validated_form(request: Request) -> dict[str, str] | Response:
        if not settings.twilio_auth_token:
            logger.error("Twilio webhook refused: TWILIO_AUTH_TOKEN is not configured")
            return Response(
                "TWILIO_AUTH_TOKEN is not configured on this server, so Twilio requests cannot "
                "be validated. Set it to your Twilio auth token and restart.",
                status_code=503,
                media_type="text/plain",
            )
        form = {k: str(v) for k, v in (await request.form()).items()}
        url = public_request_url(
            settings.public_url, request.url.path, request.url.query, str(request.url)
        )
        signature = request.headers.get("x-twilio-signature")
        if not is_valid_twilio_request(settings.twilio_auth_token.reveal(), url, form, signature):
            logger.warning(
                f"Twilio webhook {request.url.path} refused: "
                f"{'missing' if not signature else 'invalid'} signature for {url}"
            )
            return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
        return form

    @router.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await validated_form(request)
        if isinstance(form, Response):
            return form
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return Response("CallSid missing", status_code=400, media_type="text/plain")
        logger.info(
            f"incoming call {call_sid} from {mask_phone(form.get('From', ''))} "
            f"to {mask_phone(form.get('To', ''))}"
        )
        if not state.accepting or state.active_calls >= settings.max_concurrent_calls:
            logger.warning(f"call {call_sid}: over capacity or shutting down; apologising")
            body = twiml.apologise_busy(state.phrases["over_capacity"], state.escalation_number)
            return Response(body, media_type="application/xml")
        token = state.tokens.issue(
            call_sid,
            {"from": form.get("From", ""), "to": form.get("To", ""), "base": request_base(request)},
        )
        body = twiml.connect_stream(stream_url(settings.public_url, request), token)
        return Response(body, media_type="application/xml")

    def handoff_id(request: Request) -> int:
        raw = request.query_params.get("handoff", "")
        return int(raw) if raw.isdigit() else 0

    @router.post("/twilio/whisper")
    async def whisper(request: Request) -> Response:
        """Warm transfer: Twilio fetches this when the person answers; they hear the summary."""
        form = await validated_form(request)
        if isinstance(form, Response):
            return form
        text = await state.handoff_desk.whisper_text(
            handoff_id(request), form.get("ParentCallSid", "")
        )
        if text is None:
            return Response("unknown handoff", status_code=404, media_type="text/plain")
        return Response(twiml.whisper(text), media_type="application/xml")

    @router.post("/twilio/dial-action")
    async def dial_action(request: Request) -> Response:
        """The transfer's <Dial> ended: hang up after a conversation, else back to the agent."""
        form = await validated_form(request)
        if isinstance(form, Response):
            return form
        call_sid = form.get("CallSid", "")
        can_resume = state.accepting and state.active_calls < settings.max_concurrent_calls
        handoff = handoff_id(request)
        step = await state.handoff_desk.dial_finished(handoff, form, can_resume)
        if step is None:
            return Response("unknown handoff", status_code=404, media_type="text/plain")
        if step.kind == "resume":
            details = {
                "from": form.get("From", ""),
                "to": form.get("To", ""),
                "base": request_base(request),
                "resume": str(handoff),
            }
            token = state.tokens.issue(call_sid, details)
            body = twiml.connect_stream(stream_url(settings.public_url, request), token)
        elif step.kind == "goodbye":
            body = twiml.say_and_hangup(step.text)
        else:
            body = twiml.hangup()
        return Response(body, media_type="application/xml")

    @router.websocket("/twilio/media")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        parser = codec.MediaStreamParser()
        try:
            start = await asyncio.wait_for(_await_start(websocket, parser), START_TIMEOUT_SECS)
        except (TimeoutError, WebSocketDisconnect, codec.ProtocolError) as exc:
            reason = "no start event in time" if isinstance(exc, TimeoutError) else str(exc)
            logger.warning(f"media websocket refused before start: {reason or 'disconnected'}")
            await close_quietly(websocket, 1008, "start event required")
            return
        try:
            details = state.tokens.consume(start.custom_parameters.get("token"), start.call_sid)
        except TokenError as exc:
            logger.warning(f"media websocket for call {start.call_sid} refused: {exc}")
            await close_quietly(websocket, 1008, "invalid token")
            return
        if state.active_calls >= settings.max_concurrent_calls:
            logger.warning(f"call {start.call_sid}: over capacity at stream start")
            await close_quietly(websocket, 1013, "over capacity")
            return
        state.active_calls += 1
        try:
            await run_call(websocket, parser, start, details)
        finally:
            state.active_calls -= 1
            await close_quietly(websocket, 1000, "call ended")

    return router


async def _await_start(websocket: WebSocket, parser: codec.MediaStreamParser) -> codec.Start:
    for _ in range(MAX_PRE_START_MESSAGES):
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        if data is None:
            continue
        event = parser.receive(data)
        if isinstance(event, codec.Start):
            return event
    raise codec.ProtocolError(f"no start event in the first {MAX_PRE_START_MESSAGES} messages")


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` unless the socket is already closed or closing."""
    if websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code=code, reason=reason)
        except Exception:  # already closing from the other side
            pass
