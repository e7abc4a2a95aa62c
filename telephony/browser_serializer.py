"""pipecat FrameSerializer for the browser demo, over the pure codec in browser_codec.

The counterpart of :class:`telephony.serializer.TwilioMediaSerializer`: binary PCM16 both ways
at the call's own rate (the page asks for 16 kHz), marks carrying the text they close (the page
echoes them once played, exactly like Twilio, so "what the caller heard" keeps working), a clear
on barge-in, and the call's live events forwarded as JSON.
"""

from __future__ import annotations

import time

from loguru import logger
from pipecat.frames.frames import AudioRawFrame, Frame, InputAudioRawFrame, InterruptionFrame
from pipecat.serializers.base_serializer import FrameSerializer

from telephony import browser_codec
from telephony.audio import resample_pcm16
from telephony.serializer import CallEventFrame, MarkFrame, StreamHooks


class BrowserMediaSerializer(FrameSerializer):
    #: Tells the call session to forward its live events (transcripts, turns, tool calls).
    wants_events = True

    def __init__(self, parser: browser_codec.BrowserStreamParser, hooks: StreamHooks) -> None:
        super().__init__()
        if parser.start is None:
            raise ValueError("the serializer needs a parser that has seen the start message")
        self._parser = parser
        self._hooks = hooks
        self._rate = parser.start.sample_rate
        self._last_error_log = 0.0
        self.protocol_errors = 0

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, InterruptionFrame):
            self._hooks.on_clear()
            return browser_codec.encode_clear()
        if isinstance(frame, AudioRawFrame):
            pcm = frame.audio
            if frame.sample_rate != self._rate:
                pcm = resample_pcm16(pcm, frame.sample_rate, self._rate)
            if not pcm:
                return None
            self._hooks.on_bot_audio(pcm)
            return pcm
        if isinstance(frame, MarkFrame):
            return browser_codec.encode_mark(frame.mark_name, frame.mark_text)
        if isinstance(frame, CallEventFrame):
            data = dict(frame.message)
            kind = str(data.pop("kind", "event"))
            return browser_codec.encode_event(kind, data)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            event = self._parser.receive(data)
        except browser_codec.ProtocolError as exc:
            self.protocol_errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 1.0:  # one line a second at most per call
                self._last_error_log = now
                logger.warning(
                    f"browser call: ignoring bad frame ({exc}); {self.protocol_errors} so far"
                )
            return None
        if isinstance(event, browser_codec.Audio):
            self._hooks.on_caller_audio(event.pcm)
            return InputAudioRawFrame(audio=event.pcm, num_channels=1, sample_rate=self._rate)
        if isinstance(event, browser_codec.Mark):
            self._hooks.on_mark(event.name)
            return None
        if isinstance(event, browser_codec.Hangup):
            self._hooks.on_stop()
            return None
        return None
