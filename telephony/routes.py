"""Twilio-facing routes: the signed webhooks (voice, warm-transfer whisper, dial action) that
answer with TwiML, and the Media Streams websocket that starts a call.

They depend on the app only through :class:`telephony.host.TwilioHost` and a
:class:`telephony.host.TwilioRouteConfig`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response, WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect

from telephony import codec, twiml
from telephony.host import CallSlots, TwilioHost, TwilioRouteConfig
from telephony.media_socket import (
    FrameSource,
    await_start,
    close_quietly,
    refuse_pending,
    websocket_frames,
)
from telephony.privacy import mask_phone
from telephony.sids import is_call_sid, shown_sid
from telephony.signature import is_valid_twilio_request, public_request_url
from telephony.stream_codec import ProtocolError
from telephony.tokens import StreamTokens, TokenError

#: Runs a call whose stream has started: (socket, its parser, the start, the token's details).
RunCall = Callable[
    [WebSocket, codec.MediaStreamParser, codec.Start, dict[str, str]], Awaitable[None]
]


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


def plain(text: str, status_code: int) -> Response:
    return Response(text, status_code=status_code, media_type="text/plain")


def xml(body: str) -> Response:
    return Response(body, media_type="application/xml")


async def validated_form(
    request: Request, config: TwilioRouteConfig, host: CallSlots, sids: tuple[str, ...]
) -> dict[str, str] | Response:
    """The webhook's form fields if Twilio signed them and each field in ``sids`` is a Twilio
    CallSid, else the response refusing it (403 or 503 told to ``host``, 400 for a sid)."""
    if not config.auth_token:
        logger.error("Twilio webhook refused: TWILIO_AUTH_TOKEN is not configured")
        host.refused("twilio_not_configured")
        return plain(
            "TWILIO_AUTH_TOKEN is not configured on this server, so Twilio requests cannot "
            "be validated. Set it to your Twilio auth token and restart.",
            503,
        )
    form = {k: str(v) for k, v in (await request.form()).items()}
    url = public_request_url(
        config.public_url, request.url.path, request.url.query, str(request.url)
    )
    signature = request.headers.get("x-twilio-signature")
    if not is_valid_twilio_request(config.auth_token, url, form, signature):
        logger.warning(
            f"Twilio webhook {request.url.path} refused: "
            f"{'missing' if not signature else 'invalid'} signature for {url}"
        )
        host.refused("forged_signature")
        return plain("invalid Twilio signature", 403)
    for field in sids:
        if not is_call_sid(form.get(field, "")):
            return bad_sid(request, field, form.get(field, ""))
    return form


def bad_sid(request: Request, field: str, value: str) -> Response:
    """400 for a signed webhook whose ``field`` is not a Twilio CallSid (logged, shortened)."""
    logger.warning(
        f"Twilio webhook {request.url.path} refused: {field} {shown_sid(value)} is not a "
        "Twilio CallSid"
    )
    what = "missing" if not value else "not a Twilio CallSid (CA and 32 hex digits)"
    return plain(f"{field} {what}", 400)


def handoff_id(request: Request) -> int:
    raw = request.query_params.get("handoff", "")
    return int(raw) if raw.isdigit() else 0


def build_router(host: TwilioHost, config: TwilioRouteConfig, run_call: RunCall) -> APIRouter:
    """The Twilio routes, bound to the app (``host``), their settings and the call runner."""
    router = APIRouter()
    router.include_router(build_voice_router(host, config))
    router.include_router(build_transfer_router(host, config))
    router.include_router(build_outbound_router(host, config))
    router.include_router(build_media_router(host, run_call))
    return router


def build_voice_router(host: TwilioHost, config: TwilioRouteConfig) -> APIRouter:
    """/twilio/voice: an incoming call is answered with a stream (or an apology when full)."""
    router = APIRouter()

    @router.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await validated_form(request, config, host, sids=("CallSid",))
        if isinstance(form, Response):
            return form
        call_sid = form["CallSid"]
        logger.info(
            f"incoming call {call_sid} from {mask_phone(form.get('From', ''))} "
            f"to {mask_phone(form.get('To', ''))}"
        )
        if not await host.has_room():
            logger.warning(f"call {call_sid}: over capacity or shutting down; apologising")
            host.refused("over_capacity")
            number = await host.escalation_number()
            return xml(twiml.apologise_busy(config.busy_message, number))
        token = host.tokens.issue(
            call_sid,
            {
                "from": form.get("From", ""),
                "to": form.get("To", ""),
                "base": request_base(request),
                "verstat": form.get("StirVerstat", ""),  # caller ID verified? (session)
            },
        )
        return xml(twiml.connect_stream(stream_url(config.public_url, request), token))

    return router


def build_transfer_router(host: TwilioHost, config: TwilioRouteConfig) -> APIRouter:
    """/twilio/whisper and /twilio/dial-action: the two ends of a transfer to a person."""
    router = APIRouter()

    @router.post("/twilio/whisper")
    async def whisper(request: Request) -> Response:
        """Warm transfer: Twilio fetches this when the person answers; they hear the summary."""
        form = await validated_form(request, config, host, sids=("CallSid", "ParentCallSid"))
        if isinstance(form, Response):
            return form
        text = await host.handoff_desk.whisper_text(handoff_id(request), form["ParentCallSid"])
        if text is None:
            return plain("unknown handoff", 404)
        return xml(twiml.whisper(text))

    @router.post("/twilio/dial-action")
    async def dial_action(request: Request) -> Response:
        """The transfer's <Dial> ended: hang up after a conversation, else back to the agent."""
        form = await validated_form(request, config, host, sids=("CallSid",))
        if isinstance(form, Response):
            return form
        handoff = handoff_id(request)
        step = await host.handoff_desk.dial_finished(handoff, form, await host.has_room())
        if step is None:
            return plain("unknown handoff", 404)
        if step.kind == "goodbye":
            return xml(twiml.say_and_hangup(step.text))
        if step.kind != "resume":
            return xml(twiml.hangup())
        details = {
            "from": form.get("From", ""),
            "to": form.get("To", ""),
            "base": request_base(request),
            "resume": str(handoff),
            "verstat": form.get("StirVerstat", ""),
        }
        token = host.tokens.issue(form["CallSid"], details)
        return xml(twiml.connect_stream(stream_url(config.public_url, request), token))

    return router


def build_outbound_router(host: TwilioHost, config: TwilioRouteConfig) -> APIRouter:
    """/twilio/outbound/*: the three webhooks of a call Frontdesk placed (agent.outbound)."""
    router = APIRouter()

    @router.post("/twilio/outbound/answer")
    async def answer(request: Request) -> Response:
        """The callee picked up (or a machine did): stream the call to the agent, which stays
        silent until the machine verdict says a person answered."""
        form = await validated_form(request, config, host, sids=("CallSid",))
        if isinstance(form, Response):
            return form
        call_sid = form["CallSid"]
        details = await host.outbound_desk.stream_details(form)
        if details is None:
            logger.warning(f"outbound call {call_sid} answered but not ours (any more); hanging up")
            return xml(twiml.hangup())
        if not await host.has_room():
            logger.warning(f"outbound call {call_sid}: over capacity at answer; hanging up")
            host.refused("over_capacity")
            await host.outbound_desk.call_status({**form, "CallStatus": "failed"})
            return xml(twiml.hangup())
        logger.info(f"outbound call {call_sid} answered by {mask_phone(form.get('To', ''))}")
        token = host.tokens.issue(call_sid, {**details, "base": request_base(request)})
        return xml(twiml.connect_stream(stream_url(config.public_url, request), token))

    @router.post("/twilio/outbound/status")
    async def status(request: Request) -> Response:
        form = await validated_form(request, config, host, sids=("CallSid",))
        if isinstance(form, Response):
            return form
        await host.outbound_desk.call_status(form)
        return Response(status_code=204)

    @router.post("/twilio/outbound/amd")
    async def amd(request: Request) -> Response:
        form = await validated_form(request, config, host, sids=("CallSid",))
        if isinstance(form, Response):
            return form
        await host.outbound_desk.machine_verdict(form)
        return Response(status_code=204)

    return router


def build_media_router(host: TwilioHost, run_call: RunCall) -> APIRouter:
    """/twilio/media: the Media Streams websocket; a valid handshake and a free slot run a call."""
    router = APIRouter()

    @router.websocket("/twilio/media")
    async def media(websocket: WebSocket) -> None:
        place = host.pending_starts.admit()
        if place is None:
            await refuse_pending(websocket, host.pending_starts, host.refused)
            return
        with place:
            await websocket.accept()
            try:
                opened = await open_media_stream(websocket_frames(websocket), host.tokens)
            except StreamRefused as refusal:
                logger.warning(refusal.log_line)
                host.refused(refusal.reason)
                await close_quietly(websocket, 1008, refusal.close_reason)
                return
        start = opened.start
        slot = await host.take_slot(answered=True)
        if not slot:
            logger.warning(f"call {start.call_sid}: over capacity at stream start")
            host.refused("over_capacity")
            await close_quietly(websocket, 1013, "over capacity")
            return
        try:
            await run_call(websocket, opened.parser, start, opened.details)
        finally:
            await host.release_slot(slot)
            await close_quietly(websocket, 1000, "call ended")

    return router


@dataclass(frozen=True)
class OpenedStream:
    """A media stream that passed its handshake: its parser, its start and its token's details."""

    parser: codec.MediaStreamParser
    start: codec.Start
    details: dict[str, str]


class StreamRefused(Exception):
    """A media stream refused before its call starts (the socket is closed with 1008);
    ``reason`` is the metrics' word for it."""

    def __init__(self, log_line: str, close_reason: str, reason: str) -> None:
        super().__init__(log_line)
        self.log_line = log_line
        self.close_reason = close_reason
        self.reason = reason


async def open_media_stream(frames: FrameSource, tokens: StreamTokens) -> OpenedStream:
    """A media stream's handshake: a valid start within bounds (see
    :func:`telephony.media_socket.await_start`) carrying a one-time token issued for its call.

    Raises StreamRefused for anything else, including a peer that leaves first.
    """
    parser = codec.MediaStreamParser()
    try:
        start = await await_start(frames, parser, what="start event")
    except (WebSocketDisconnect, ProtocolError) as exc:
        reason = "disconnected" if isinstance(exc, WebSocketDisconnect) else str(exc)
        raise StreamRefused(
            f"media websocket refused before start: {reason}",
            "start event required",
            "bad_handshake",
        ) from None
    if not is_call_sid(start.call_sid):
        raise StreamRefused(
            f"media websocket refused: callSid {shown_sid(start.call_sid)} is not a Twilio CallSid",
            "invalid callSid",
            "bad_call_sid",
        )
    try:
        details = await tokens.consume(start.custom_parameters.get("token"), start.call_sid)
    except TokenError as exc:
        raise StreamRefused(
            f"media websocket for call {start.call_sid} refused: {exc}",
            "invalid token",
            "bad_token",
        ) from None
    return OpenedStream(parser, start, details)
