"""Browser demo wire format: a pure codec with no I/O.

The demo page and the server talk over one websocket (``/demo/ws``):

page -> server
    text   ``{"type": "start", "sampleRate": 16000, "format": "pcm16"}``  first, exactly once
    binary caller audio: 16-bit little-endian mono PCM at the start's rate, up to 1 s a frame
    text   ``{"type": "mark", "name": "seg-3"}``  the bot audio sent before that mark has played
    text   ``{"type": "hangup"}``  the caller hung up (the page then closes the socket)

server -> page
    text   ``{"type": "ready", "callSid": "BR…", "sampleRate": 16000}``
    binary bot audio, same format and rate as the caller's
    text   ``{"type": "mark", "name": "seg-3", "text": "…"}``  echo the name once played
    text   ``{"type": "clear"}``  barge-in: drop every bot sample not yet played, at once
    text   ``{"type": "event", "kind": "turn" | "tool_call" | "transcript" | "fault", …}``
    text   ``{"type": "error", "code": "busy" | "rate_limited" | "protocol", "message": "…"}``

Feed inbound frames to :class:`BrowserStreamParser`; build outbound ones with the ``encode_*``
functions. Everything here is testable with literal frames alone (tests/test_browser_codec.py).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

#: Rates the pipeline can run at (Silero VAD supports exactly these).
SAMPLE_RATES = (8000, 16000)
MAX_AUDIO_SECS = 1.0
MAX_TEXT_CHARS = 4096
MAX_MARK_NAME_CHARS = 64


class ProtocolError(ValueError):
    """A frame that is not valid demo protocol; the message says what was expected."""


@dataclass(frozen=True)
class Start:
    sample_rate: int


@dataclass(frozen=True)
class Audio:
    pcm: bytes


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Hangup:
    pass


Event = Start | Audio | Mark | Hangup


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


def parse_control(text: str) -> Start | Mark | Hangup:
    """Parse one text frame statelessly; ProtocolError for anything malformed."""
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError(f"text frame of {len(text)} characters exceeds {MAX_TEXT_CHARS}")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"text frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"text frame must be a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind == "start":
        rate = message.get("sampleRate")
        if isinstance(rate, bool) or rate not in SAMPLE_RATES:
            rates = " or ".join(str(r) for r in SAMPLE_RATES)
            raise ProtocolError(f"start.sampleRate must be {rates}, got {rate!r}")
        audio_format = message.get("format", "pcm16")
        if audio_format != "pcm16":
            raise ProtocolError(f"start.format must be 'pcm16', got {audio_format!r}")
        return Start(sample_rate=int(rate))
    if kind == "mark":
        name = message.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_MARK_NAME_CHARS:
            raise ProtocolError(
                f"mark.name must be a string of 1-{MAX_MARK_NAME_CHARS} characters, got {name!r}"
            )
        return Mark(name=name)
    if kind == "hangup":
        return Hangup()
    raise ProtocolError(f"unknown message type {kind!r} (expected start, mark or hangup)")


class BrowserStreamParser:
    """Stateful parser: start first and once, audio only while streaming, nothing after hangup.

    ``receive`` returns the event or raises ProtocolError; it stays usable after an error so a
    bad frame does not end a call.
    """

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.start: Start | None = None
        self.errors = 0

    @property
    def sample_rate(self) -> int:
        if self.start is None:
            raise ProtocolError("no start message yet")
        return self.start.sample_rate

    def receive(self, data: str | bytes) -> Event:
        try:
            return self._receive(data)
        except ProtocolError:
            self.errors += 1
            raise

    def _receive(self, data: str | bytes) -> Event:
        if self.state is StreamState.STOPPED:
            raise ProtocolError("message after hangup")
        if isinstance(data, bytes):
            if self.start is None:
                raise ProtocolError("audio before the start message")
            if not data or len(data) % 2:
                raise ProtocolError(
                    f"audio frame must be whole 16-bit samples, got {len(data)} bytes"
                )
            limit = int(self.start.sample_rate * MAX_AUDIO_SECS) * 2
            if len(data) > limit:
                raise ProtocolError(f"audio frame of {len(data)} bytes exceeds {limit} (1 s)")
            return Audio(pcm=data)
        event = parse_control(data)
        if isinstance(event, Start):
            if self.start is not None:
                raise ProtocolError("second start message on one call")
            self.start = event
            self.state = StreamState.STREAMING
            return event
        if self.start is None:
            raise ProtocolError(f"{type(event).__name__.lower()} before the start message")
        if isinstance(event, Hangup):
            self.state = StreamState.STOPPED
        return event


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, default=str, separators=(",", ":"))


def encode_ready(call_sid: str, sample_rate: int) -> str:
    return _dump({"type": "ready", "callSid": call_sid, "sampleRate": sample_rate})


def encode_mark(name: str, text: str = "") -> str:
    return _dump({"type": "mark", "name": name, "text": text})


def encode_clear() -> str:
    return _dump({"type": "clear"})


def encode_event(kind: str, data: dict[str, Any]) -> str:
    """A live call event; ``data`` must not carry a ``type`` or ``kind`` of its own."""
    return _dump({**data, "type": "event", "kind": kind})


def encode_error(code: str, message: str) -> str:
    return _dump({"type": "error", "code": code, "message": message})
