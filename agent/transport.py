"""The media websocket transport: pipecat's FastAPI websocket transport with a send-ahead lead.

pipecat paces bot audio strictly just in time: it sends a 20 ms chunk, sleeps 20 ms, sends the
next. The phone then has nothing queued, so any stall of the event loop (another call's work,
a GC pause, a busy CPU) becomes an audible gap (pipecat issue 3315). Twilio queues the media it
is sent and plays it in real time, so we keep a small lead of audio queued there: a stall
shorter than the lead is not heard. Barge-in is unaffected: ``clear`` drops Twilio's queue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipecat.frames.frames import Frame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketTransport,
)

AUDIO_LEAD_SECS = 0.1  # five 20 ms frames queued at the phone


def pace(played_by: float, now: float, chunk_secs: float, lead_secs: float) -> tuple[float, float]:
    """One chunk is sent at ``now``: returns (when the phone will have played everything sent,
    how long to wait before sending the next chunk). ``played_by`` <= ``now`` means the phone's
    queue ran dry (or was cleared) and this chunk plays at once."""
    played_by = max(played_by, now) + chunk_secs
    return played_by, max(0.0, played_by - lead_secs - now)


class _LeadPacedOutput(FastAPIWebsocketOutputTransport):
    """Sends audio up to ``lead_secs`` ahead of the phone's playback, paced in real time."""

    def __init__(self, *args: Any, lead_secs: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lead_secs = lead_secs
        self._played_by = 0.0  # when the phone will have played everything sent so far

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self._played_by = 0.0  # the clear empties the phone's queue
        await super().process_frame(frame, direction)

    async def _write_audio_sleep(self) -> None:
        self._played_by, wait = pace(
            self._played_by, time.monotonic(), self._send_interval, self._lead_secs
        )
        await asyncio.sleep(wait)


class LeadPacedWebsocketTransport(FastAPIWebsocketTransport):
    """FastAPIWebsocketTransport whose output keeps ``lead_secs`` of audio queued at the phone."""

    def __init__(self, *args: Any, lead_secs: float = AUDIO_LEAD_SECS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output = _LeadPacedOutput(
            self, self._client, self._params, name=self._output_name, lead_secs=lead_secs
        )
