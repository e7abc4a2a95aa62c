"""pipecat FrameSerializers over our pure codecs: the shared base, and the one for Twilio.

:class:`MediaSerializer` holds what both wire formats share: bot audio resampled to the wire's
rate in one shot, a clear on barge-in, marks, the call told what the stream carries through
:class:`StreamHooks`, and malformed frames refused one by one (logged, counted in
:attr:`~MediaSerializer.frame_errors`) without ending the call.

:class:`TwilioMediaSerializer`, unlike pipecat's TwilioFrameSerializer, never hangs up on its own
(ending our pipeline must not end a call being transferred), never resamples in a streaming
resampler (the pipeline runs at 8 kHz, so 20 ms in is 20 ms out) and sends Twilio marks.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import ClassVar, Generic, Protocol

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.base_serializer import FrameSerializer

from telephony import codec
from telephony.audio import resample_pcm16
from telephony.stream_codec import EventT, FrameErrors, ProtocolError, StartT, StreamParser


class StreamHooks(Protocol):
    """What the call wants to know about the media stream."""

    def on_caller_audio(self, pcm: bytes) -> None: ...

    def on_bot_audio(self, pcm: bytes) -> None: ...

    def on_mark(self, name: str) -> None: ...

    def on_clear(self) -> None: ...

    def on_dtmf(self, digit: str) -> None: ...

    def on_stop(self) -> None: ...


class MarkFrame(OutputTransportMessageFrame):
    """Ask Twilio to echo ``name`` back once the audio queued before it has played.

    ``text`` is what that audio said (the browser page shows it; Twilio never sees it).
    """

    def __init__(self, name: str, text: str = "") -> None:
        super().__init__(message={"event": "mark", "name": name})
        self.mark_name = name
        self.mark_text = text


class CallEventFrame(OutputTransportMessageUrgentFrame):
    """A live call event (``message = {"kind": ..., **data}``) for clients that show the call.

    Sent at once, ahead of queued audio; serializers that have no use for it drop it.
    """


class MediaSerializer(FrameSerializer, Generic[StartT, EventT]):
    """A serializer over a :class:`StreamParser` that has seen its stream's start.

    Subclasses say how audio, clears, marks and call events look on their wire, at which
    sample rate (:meth:`_wire_rate`), and what an inbound event becomes.
    """

    #: Whether the call should forward its live events (transcripts, turns, tool calls).
    wants_events: ClassVar[bool] = False

    def __init__(self, parser: StreamParser[StartT, EventT], hooks: StreamHooks) -> None:
        super().__init__()
        if parser.start is None:
            raise ValueError("the serializer needs a parser that has seen the start event")
        self._parser = parser
        self._start: StartT = parser.start
        self._hooks = hooks
        self._last_error_log = 0.0

    @property
    def frame_errors(self) -> FrameErrors:
        """The inbound frames refused so far (the call records them when it ends)."""
        return self._parser.errors

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, InterruptionFrame):
            self._hooks.on_clear()
            return self._encode_clear()
        if isinstance(frame, AudioRawFrame):
            pcm = frame.audio
            if frame.sample_rate != self._wire_rate():
                pcm = resample_pcm16(pcm, frame.sample_rate, self._wire_rate())
            if not pcm:
                return None
            self._hooks.on_bot_audio(pcm)
            return self._encode_audio(pcm)
        if isinstance(frame, MarkFrame):
            return self._encode_mark(frame)
        if isinstance(frame, CallEventFrame):
            return self._encode_event(frame)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            event = self._parser.receive(data)
        except ProtocolError as exc:
            now = time.monotonic()
            if now - self._last_error_log > 1.0:  # one line a second at most per stream
                self._last_error_log = now
                logger.warning(
                    f"{self._describe()}: ignoring bad frame ({exc}); "
                    f"{self.frame_errors.count} so far"
                )
            return None
        return self._to_frame(event)

    @abstractmethod
    def _wire_rate(self) -> int:
        """The sample rate of the audio on the wire."""

    @abstractmethod
    def _describe(self) -> str:
        """Names the stream in log lines."""

    @abstractmethod
    def _encode_clear(self) -> str: ...

    @abstractmethod
    def _encode_audio(self, pcm: bytes) -> str | bytes:
        """Bot audio, 16-bit mono PCM at the wire rate, as a frame on the wire."""

    @abstractmethod
    def _encode_mark(self, frame: MarkFrame) -> str: ...

    def _encode_event(self, frame: CallEventFrame) -> str | None:
        """A live call event on the wire; None (dropped) unless the wire has a use for it."""
        return None

    @abstractmethod
    def _to_frame(self, event: EventT) -> Frame | None:
        """What an inbound event becomes in the pipeline (telling the hooks as needed)."""


class TwilioMediaSerializer(MediaSerializer[codec.Start, codec.Event]):
    """Twilio Media Streams: mu-law at 8 kHz both ways; the pipeline runs at ``pipeline_rate``."""

    def __init__(
        self,
        parser: codec.MediaStreamParser,
        hooks: StreamHooks,
        pipeline_rate: int = codec.TWILIO_SAMPLE_RATE,
    ) -> None:
        super().__init__(parser, hooks)
        self._stream_sid = self._start.stream_sid
        self._pipeline_rate = pipeline_rate

    def _wire_rate(self) -> int:
        return codec.TWILIO_SAMPLE_RATE

    def _describe(self) -> str:
        return f"stream {self._stream_sid}"

    def _encode_clear(self) -> str:
        return codec.encode_clear(self._stream_sid)

    def _encode_audio(self, pcm: bytes) -> str:
        return codec.encode_media(self._stream_sid, codec.pcm16_to_ulaw(pcm))

    def _encode_mark(self, frame: MarkFrame) -> str:
        return codec.encode_mark(self._stream_sid, frame.mark_name)

    def _to_frame(self, event: codec.Event) -> Frame | None:
        if isinstance(event, codec.Media):
            if event.track not in ("inbound", "inbound_track"):
                return None
            pcm = codec.ulaw_to_pcm16(event.payload)
            self._hooks.on_caller_audio(pcm)
            if self._pipeline_rate != codec.TWILIO_SAMPLE_RATE:
                pcm = resample_pcm16(pcm, codec.TWILIO_SAMPLE_RATE, self._pipeline_rate)
            return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._pipeline_rate)
        if isinstance(event, codec.Mark):
            self._hooks.on_mark(event.name)
            return None
        if isinstance(event, codec.Dtmf):
            self._hooks.on_dtmf(event.digit)
            try:
                return InputDTMFFrame(KeypadEntry(event.digit))
            except ValueError:
                return None
        if isinstance(event, codec.Stop):
            self._hooks.on_stop()
        return None
