"""The websocket side both media routes share: waiting for the start frame, closing quietly.

:func:`await_start` is the one start loop of the Twilio and browser media sockets: a peer gets
at most :data:`MAX_PRE_START_MESSAGES` frames and :data:`START_TIMEOUT_SECS` seconds to send a
valid start, and the first malformed frame ends the wait. It reads frames through a
:data:`FrameSource` (a websocket via :func:`websocket_frames`, or a plain coroutine in tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telephony.stream_codec import EventT, ProtocolError, StartT, StreamParser

#: How long a new media socket may take to send its start frame, and how many frames it may
#: send before it.
START_TIMEOUT_SECS = 10.0
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
