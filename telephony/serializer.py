"""pipecat FrameSerializer over our pure Twilio codec.

Unlike pipecat's TwilioFrameSerializer it never hangs up on its own (ending our pipeline must not
end a call being transferred), never resamples in a streaming resampler (the pipeline runs at
8 kHz, so 20 ms in is 20 ms out), sends Twilio marks, and reports what it sees to the call
through :class:`StreamHooks`.
"""

from __future__ import annotations

import time
from typing import Protocol

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


class TwilioMediaSerializer(FrameSerializer):
    def __init__(
        self,
        parser: codec.MediaStreamParser,
        hooks: StreamHooks,
        pipeline_rate: int = codec.TWILIO_SAMPLE_RATE,
    ) -> None:
        super().__init__()
        if parser.start is None:
            raise ValueError("the serializer needs a parser that has seen the start event")
        self._parser = parser
        self._stream_sid = parser.start.stream_sid
        self._hooks = hooks
        self._rate = pipeline_rate
        self._last_error_log = 0.0
        self.protocol_errors = 0

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, InterruptionFrame):
            self._hooks.on_clear()
            return codec.encode_clear(self._stream_sid)
        if isinstance(frame, AudioRawFrame):
            pcm = frame.audio
            if frame.sample_rate != codec.TWILIO_SAMPLE_RATE:
                pcm = resample_pcm16(pcm, frame.sample_rate, codec.TWILIO_SAMPLE_RATE)
            if not pcm:
                return None
            self._hooks.on_bot_audio(pcm)
            return codec.encode_media(self._stream_sid, codec.pcm16_to_ulaw(pcm))
        if isinstance(frame, MarkFrame):
            return codec.encode_mark(self._stream_sid, frame.mark_name)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            event = self._parser.receive(data)
        except codec.ProtocolError as exc:
            self.protocol_errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 1.0:  # one line a second at most per stream
                self._last_error_log = now
                logger.warning(
                    f"stream {self._stream_sid}: ignoring bad frame ({exc}); "
                    f"{self.protocol_errors} so far"
                )
            return None
        if isinstance(event, codec.Media):
            if event.track not in ("inbound", "inbound_track"):
                return None
            pcm = codec.ulaw_to_pcm16(event.payload)
            self._hooks.on_caller_audio(pcm)
            if self._rate != codec.TWILIO_SAMPLE_RATE:
                pcm = resample_pcm16(pcm, codec.TWILIO_SAMPLE_RATE, self._rate)
            return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._rate)
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
        return None
