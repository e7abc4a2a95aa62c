"""A telephony.serializer.StreamHooks that records what the serializer told the call."""

from __future__ import annotations


class RecordingHooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_caller_audio(self, pcm: bytes) -> None:
        self.events.append(("caller_audio", len(pcm)))

    def on_bot_audio(self, pcm: bytes) -> None:
        self.events.append(("bot_audio", len(pcm)))

    def on_mark(self, name: str) -> None:
        self.events.append(("mark", name))

    def on_clear(self) -> None:
        self.events.append(("clear", None))

    def on_dtmf(self, digit: str) -> None:
        self.events.append(("dtmf", digit))

    def on_stop(self) -> None:
        self.events.append(("stop", None))
