"""The websocket side both media routes share: waiting for the start frame, closing quietly.

:func:`await_start` is the one start loop of the Twilio and browser media sockets: a peer gets
at most :data:`MAX_PRE_START_MESSAGES` frames and :data:`START_TIMEOUT_SECS` seconds to send a
valid start, and the first malformed frame ends the wait. It reads frames through a
:data:`FrameSource` (a websocket via :func:`websocket_frames`, or a plain coroutine in tests).
:class:`PendingStarts` caps how many sockets of the process may wait for their start at once
(FRONTDESK_MAX_PENDING_STREAMS); the routes refuse the excess before accepting it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Response, WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telephony.stream_codec import EventT, ProtocolError, StartT, StreamParser

#: How long a new media socket may take to send its start frame, and how many frames it may
#: send before it. Twilio sends ``connected`` and ``start`` within milliseconds of the upgrade,
#: the demo page as its socket opens; a slow server still has seconds to spare.
START_TIMEOUT_SECS = 5.0
MAX_PRE_START_MESSAGES = 5

#: The next text or binary frame (None: a message with neither); raises WebSocketDisconnect
#: once the peer is gone.
FrameSource = Callable[[], Awaitable[str | bytes | None]]


def websocket_frames(websocket: WebSocket) -> FrameSource:
    """The frames arriving on an accepted ``websocket``."""

    async def next_frame() -> str | bytes | None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text: str | None = message.get("text")
        return text if text is not None else message.get("bytes")

    return next_frame


async def await_start(
    frames: FrameSource, parser: StreamParser[StartT, EventT], *, what: str
) -> StartT:
    """Feed ``parser`` until it has its start, and return that.

    Raises ProtocolError on the first malformed or out-of-order frame, after
    :data:`MAX_PRE_START_MESSAGES` frames without a start, or after :data:`START_TIMEOUT_SECS`
    (then saying "no {what} in time"); WebSocketDisconnect when the peer leaves first.
    """

    async def first_frames() -> StartT:
        for _ in range(MAX_PRE_START_MESSAGES):
            data = await frames()
            if data is None:
                continue
            parser.receive(data)
            if parser.start is not None:
                return parser.start
        raise ProtocolError(f"no {what} in the first {MAX_PRE_START_MESSAGES} messages")

    try:
        return await asyncio.wait_for(first_frames(), START_TIMEOUT_SECS)
    except TimeoutError:
        raise ProtocolError(f"no {what} in time") from None


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` unless the socket is already closed or closing."""
    if websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code=code, reason=reason)
        except Exception:  # already closing from the other side
            pass


class PendingStart:
    """One socket's place among those waiting for their start; :meth:`leave` (or leaving the
    ``with`` block) gives it back, once."""

    def __init__(self, owner: PendingStarts) -> None:
        self._owner: PendingStarts | None = owner

    def leave(self) -> None:
        if self._owner is not None:
            self._owner.waiting -= 1
            self._owner = None

    def __enter__(self) -> PendingStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


class PendingStarts:
    """At most ``limit`` sockets of this process accepted and waiting for a valid start (each
    for at most :data:`START_TIMEOUT_SECS`), shared by the Twilio and the browser socket."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.waiting = 0

    def admit(self) -> PendingStart | None:
        """A place for a new socket, or None when ``limit`` are waiting (refuse it at once)."""
        if self.waiting >= self.limit:
            return None
        self.waiting += 1
        return PendingStart(self)


async def deny(websocket: WebSocket, status: int, reason: str, close_code: int = 1008) -> None:
    """Refuse a socket not yet accepted with an HTTP ``status`` (or, where the server cannot
    answer a handshake with HTTP, a close with ``close_code``)."""
    try:
        await websocket.send_denial_response(
            Response(reason, status_code=status, media_type="text/plain")
        )
    except RuntimeError:
        await websocket.close(code=close_code, reason=reason)


async def refuse_pending(
    websocket: WebSocket, pending: PendingStarts, refused: Callable[[str], None]
) -> None:
    """Refuse a socket at once because ``pending`` is full: HTTP 503 (or close 1013, try again
    later), told to ``refused`` as ``too_many_pending``."""
    logger.warning(
        f"websocket {websocket.url.path} refused: {pending.limit} sockets already wait for "
        "their start (FRONTDESK_MAX_PENDING_STREAMS)"
    )
    refused("too_many_pending")
    await deny(websocket, 503, "too many streams waiting to start", close_code=1013)
