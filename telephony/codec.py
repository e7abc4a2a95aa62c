"""Twilio Media Streams wire format: a pure codec with no I/O.

Feed text frames to :class:`MediaStreamParser` and get typed events back; build outgoing frames
with :func:`encode_media`, :func:`encode_mark` and :func:`encode_clear`. Everything here is
testable with captured JSON alone (see tests/test_codec.py).

Inbound events: connected, start, media, dtmf, mark, stop. Outbound: media, mark, clear. The
parts shared with the browser codec (errors, states, the parser skeleton) are in stream_codec.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from telephony.stream_codec import (
    JsonObject,
    ProtocolError,
    StreamParser,
    StreamState,
    decode_json_object,
)

#: Twilio sends 8 kHz mu-law (20 ms frames of 160 bytes; other sizes are legal but bounded).
TWILIO_SAMPLE_RATE = 8000
MAX_MEDIA_PAYLOAD_BYTES = 8000  # one second of audio in a single frame is already suspicious
MAX_MESSAGE_CHARS = 64 * 1024
DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes  # raw mu-law bytes


@dataclass(frozen=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True)
class Stop:
    stream_sid: str
    call_sid: str


Event = Connected | Start | Media | Dtmf | Mark | Stop


def _obj(message: JsonObject, key: str) -> JsonObject:
    value = message.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"'{message.get('event')}' event needs an object '{key}'")
    return value


def _str(container: JsonObject, key: str, *, where: str, required: bool = True) -> str:
    value = container.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _int(container: JsonObject, key: str, *, where: str, default: int) -> int:
    value = container.get(key, default)
    if isinstance(value, bool):
        raise ProtocolError(f"{where}.{key} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ProtocolError(f"{where}.{key} must be an integer, got {value!r}")


def _connected(message: JsonObject) -> Connected:
    return Connected(
        protocol=str(message.get("protocol", "")), version=str(message.get("version", ""))
    )


def _start(message: JsonObject) -> Start:
    start = _obj(message, "start")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise ProtocolError("start.mediaFormat must be an object")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("start.customParameters must be an object")
    tracks = start.get("tracks") or ["inbound"]
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("start.tracks must be a list of strings")
    encoding = str(media_format.get("encoding", "audio/x-mulaw"))
    sample_rate = _int(media_format, "sampleRate", where="start.mediaFormat", default=8000)
    channels = _int(media_format, "channels", where="start.mediaFormat", default=1)
    if encoding != "audio/x-mulaw" or sample_rate != TWILIO_SAMPLE_RATE or channels != 1:
        raise ProtocolError(
            f"expected audio/x-mulaw 8000 Hz mono, got {encoding} {sample_rate} Hz x{channels}"
        )
    return Start(
        stream_sid=_str(start, "streamSid", where="start"),
        call_sid=_str(start, "callSid", where="start"),
        account_sid=_str(start, "accountSid", where="start", required=False),
        tracks=tuple(tracks),
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def _media(message: JsonObject) -> Media:
    media = _obj(message, "media")
    payload_b64 = media.get("payload")
    if not isinstance(payload_b64, str) or not payload_b64:
        raise ProtocolError("media.payload must be a non-empty base64 string")
    if len(payload_b64) > (MAX_MEDIA_PAYLOAD_BYTES * 4) // 3 + 4:
        raise ProtocolError(f"media.payload exceeds {MAX_MEDIA_PAYLOAD_BYTES} bytes")
    try:
        payload = base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media.payload is not valid base64") from None
    if not payload:
        raise ProtocolError("media.payload decodes to no audio")
    return Media(
        stream_sid=_str(message, "streamSid", where="media", required=False),
        track=str(media.get("track", "inbound")),
        chunk=_int(media, "chunk", where="media", default=0),
        timestamp_ms=_int(media, "timestamp", where="media", default=0),
        payload=payload,
    )


def _dtmf(message: JsonObject) -> Dtmf:
    dtmf = _obj(message, "dtmf")
    digit = _str(dtmf, "digit", where="dtmf")
    if digit not in DTMF_DIGITS:
        raise ProtocolError(f"dtmf.digit must be one of 0-9 * # A-D, got {digit!r}")
    return Dtmf(stream_sid=_str(message, "streamSid", where="dtmf", required=False), digit=digit)


def _mark(message: JsonObject) -> Mark:
    mark = _obj(message, "mark")
    return Mark(
        stream_sid=_str(message, "streamSid", where="mark", required=False),
        name=_str(mark, "name", where="mark"),
    )


def _stop(message: JsonObject) -> Stop:
    stop = message.get("stop") or {}
    if not isinstance(stop, dict):
        raise ProtocolError("stop.stop must be an object")
    return Stop(
        stream_sid=_str(message, "streamSid", where="stop", required=False),
        call_sid=_str(stop, "callSid", where="stop", required=False),
    )


#: One parser per inbound event name.
_PARSERS: dict[str, Callable[[JsonObject], Event]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}


def parse_message(text: str | bytes) -> Event:
    """Parse one Twilio Media Streams text frame into an event, statelessly.

    Raises ProtocolError for anything that is not a well-formed event.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("binary frame is not UTF-8 JSON") from None
    message = decode_json_object(text, max_chars=MAX_MESSAGE_CHARS, what="frame")
    event = message.get("event")
    parser = _PARSERS.get(event) if isinstance(event, str) else None
    if parser is None:
        raise ProtocolError(f"unknown event {event!r}")
    return parser(message)


class MediaStreamParser(StreamParser[Start, Event]):
    """Enforces event order: start before media, one start, nothing after stop."""

    def _receive(self, data: str | bytes) -> Event:
        event = parse_message(data)
        if self.state is StreamState.STOPPED:
            raise ProtocolError(f"{type(event).__name__.lower()} event after stop")
        if isinstance(event, Connected):
            return event
        if isinstance(event, Start):
            if self.state is StreamState.STREAMING:
                raise ProtocolError("second start event on one stream")
            self._started(event)
            return event
        if self.state is StreamState.AWAITING_START:
            raise ProtocolError(f"{type(event).__name__.lower()} event before start")
        assert self.start is not None
        stream_sid = event.stream_sid
        if stream_sid and stream_sid != self.start.stream_sid:
            raise ProtocolError(
                f"streamSid {stream_sid!r} does not match this stream ({self.start.stream_sid!r})"
            )
        if isinstance(event, Stop):
            self.state = StreamState.STOPPED
        return event


def encode_media(stream_sid: str, mulaw: bytes) -> str:
    payload = base64.b64encode(mulaw).decode("ascii")
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def encode_mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


# --- G.711 mu-law ------------------------------------------------------------------------------

_BIAS = 0x84
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _build_decode_table() -> npt.NDArray[np.int16]:
    table = np.zeros(256, dtype=np.int16)
    for i in range(256):
        u = ~i & 0xFF
        sign = u & 0x80
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        sample = ((mantissa << 3) + _BIAS) << exponent
        sample -= _BIAS
        table[i] = -sample if sign else sample
    return table


_DECODE = _build_decode_table()


def ulaw_to_pcm16(mulaw: bytes) -> bytes:
    """Decode G.711 mu-law bytes to little-endian 16-bit PCM."""
    return _DECODE[np.frombuffer(mulaw, dtype=np.uint8)].astype("<i2").tobytes()


def _encode_samples(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The CCITT mu-law encoder (as audioop's) over 16-bit samples held as int32."""
    samples = samples >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), 8159) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)
    value = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


# Every 16-bit sample's code, indexed by the sample's bits read as unsigned: one lookup per
# frame instead of eight array passes (the encoder runs on every 20 ms of every call's audio).
_ENCODE = _encode_samples(np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32))


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode little-endian 16-bit PCM to G.711 mu-law (the CCITT algorithm, as audioop does).

    An odd trailing byte is dropped.
    """
    return bytes(_ENCODE[np.frombuffer(pcm[: len(pcm) - (len(pcm) % 2)], dtype="<u2")].tobytes())
