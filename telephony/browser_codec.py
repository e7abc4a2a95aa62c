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
    text   ``{"type": "event", "kind": "turn" | "tool_call" | "transcript" | "interim" | "fault"
           | "ending", …}``  (``interim``: the caller's words so far, replaced by the next one;
           ``ending``: the agent is ending the call, ``outcome`` says why, e.g. max_duration)
    text   ``{"type": "error", "code": "busy" | "rate_limited" | "protocol", "message": "…"}``

Feed inbound frames to :class:`BrowserStreamParser`; build outbound ones with the ``encode_*``
functions. Everything here is testable with literal frames alone (tests/test_browser_codec.py).
The parts shared with the Twilio codec (errors, states, the parser skeleton) are in stream_codec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from telephony.stream_codec import ProtocolError, StreamParser, StreamState, decode_json_object

#: Rates the pipeline can run at (Silero VAD supports exactly these).
SAMPLE_RATES = (8000, 16000)
MAX_AUDIO_SECS = 1.0
MAX_TEXT_CHARS = 4096
MAX_MARK_NAME_CHARS = 64


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


def parse_control(text: str) -> Start | Mark | Hangup:
    """Parse one text frame statelessly; ProtocolError for anything malformed."""
    message = decode_json_object(text, max_chars=MAX_TEXT_CHARS, what="text frame")
    kind = message.get("type")
    if kind == "start":
        rate = message.get("sampleRate")
        # 16000.0 is 16000; a bool is not a rate although True == 1.
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate not in SAMPLE_RATES:
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


class BrowserStreamParser(StreamParser[Start, Event]):
    """Enforces the order: start first and once, audio only while streaming, nothing after
    hangup."""

    @property
    def sample_rate(self) -> int:
        if self.start is None:
            raise ProtocolError("no start message yet")
        return self.start.sample_rate

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
            self._started(event)
            return event
        if self.start is None:
            raise ProtocolError(f"{type(event).__name__.lower()} before the start message")
        if isinstance(event, Hangup):
            self.state = StreamState.STOPPED
        return event


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, default=str, separators=(",", ":"))


def encode_ready(call_sid: str, sample_rate: int) -> str:
    return _dump({"type": "ready", "callSid": call_sid, "sampleRate": sample_rate})


def encode_mark(name: str, text: str = "") -> str:
    return _dump({"type": "mark", "name": name, "text": text})


def encode_clear() -> str:
    return _dump({"type": "clear"})


def encode_event(kind: str, data: Mapping[str, object]) -> str:
    """A live call event; ``data`` must not carry a ``type`` or ``kind`` of its own."""
    return _dump({**data, "type": "event", "kind": kind})


def encode_error(code: str, message: str) -> str:
    return _dump({"type": "error", "code": code, "message": message})
