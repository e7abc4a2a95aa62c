"""pipecat FrameSerializer for the browser demo, over the pure codec in browser_codec.

The counterpart of :class:`telephony.serializer.TwilioMediaSerializer`: binary PCM16 both ways
at the call's own rate (the page asks for 16 kHz), marks carrying the text they close (the page
echoes them once played, exactly like Twilio, so "what the caller heard" keeps working), a clear
on barge-in, and the call's live events forwarded as JSON.
"""

from __future__ import annotations

from typing import ClassVar

from pipecat.frames.frames import Frame, InputAudioRawFrame

from telephony import browser_codec
from telephony.serializer import CallEventFrame, MarkFrame, MediaSerializer


class BrowserMediaSerializer(MediaSerializer[browser_codec.Start, browser_codec.Event]):
    """The demo page: PCM16 both ways at the rate its start message asked for."""

    wants_events: ClassVar[bool] = True

    def _wire_rate(self) -> int:
        return self._start.sample_rate

    def _describe(self) -> str:
        return "browser call"

    def _encode_clear(self) -> str:
        return browser_codec.encode_clear()

    def _encode_audio(self, pcm: bytes) -> bytes:
        return pcm

    def _encode_mark(self, frame: MarkFrame) -> str:
        return browser_codec.encode_mark(frame.mark_name, frame.mark_text)

    def _encode_event(self, frame: CallEventFrame) -> str:
        data = dict(frame.message)
        kind = str(data.pop("kind", "event"))
        return browser_codec.encode_event(kind, data)

    def _to_frame(self, event: browser_codec.Event) -> Frame | None:
        if isinstance(event, browser_codec.Audio):
            self._hooks.on_caller_audio(event.pcm)
            return InputAudioRawFrame(
                audio=event.pcm, num_channels=1, sample_rate=self._wire_rate()
            )
        if isinstance(event, browser_codec.Mark):
            self._hooks.on_mark(event.name)
        elif isinstance(event, browser_codec.Hangup):
            self._hooks.on_stop()
        return None
