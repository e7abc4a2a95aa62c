"""A call's record as it is written: the turn timings of each exchange and the ordered writer
that puts turns, tool calls, faults and the outcome into the store off the audio path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from agent import metrics
from tools.store.calls import CallStore

#: Told of every record as it is put: (kind, values), kind being a CallStore method name.
RecordListener = Callable[..., None]


@dataclass
class TurnTimings:
    """Instants (epoch seconds) of one exchange, from caller speech to the first bot audio."""

    values: dict[str, float] = field(default_factory=dict)

    def mark(self, key: str, at: float | None = None, *, overwrite: bool = False) -> None:
        if overwrite or key not in self.values:
            self.values[key] = at if at is not None else time.time()

    def caller_part(self) -> dict[str, float]:
        keys = ("speech_start", "speech_end", "stt_done", "llm_request", "turn_end")
        return {k: round(v, 3) for k, v in self.values.items() if k in keys}

    def bot_part(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.values.items()}
        end = self.values.get("speech_end")
        first = self.values.get("first_audio_sent")
        if end and first and first > end:
            out["voice_to_voice_ms"] = round((first - end) * 1000.0, 1)
        for stage, (start, stop) in {
            "stt_ms": ("speech_end", "stt_done"),
            "llm_first_token_ms": ("turn_end", "llm_first_token"),
            "tts_first_audio_ms": ("first_sentence", "tts_first_audio"),
        }.items():
            if start in self.values and stop in self.values:
                out[stage] = round((self.values[stop] - self.values[start]) * 1000.0, 1)
        return out


class RecordWriter:
    """Writes a call's records in order, off the audio path; retries so nothing is lost.

    ``put(kind, **values)`` calls ``CallStore.<kind>(call_id, **values)`` in the background.
    """

    def __init__(
        self, store: CallStore, call_id: int, listener: RecordListener | None = None
    ) -> None:
        self.store = store
        self.call_id = call_id
        self.listener = listener  # told of every record as it is put, e.g. CallSession.emit
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def put(self, kind: str, **values: Any) -> None:
        self._queue.put_nowait((kind, values))
        if self.listener is not None:
            self.listener(kind, **values)

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            kind, values = item
            for attempt in range(5):
                try:
                    method = getattr(self.store, kind)
                    await method(self.call_id, **values)
                    break
                except Exception as exc:
                    logger.error(f"call record write {kind} failed (attempt {attempt + 1}): {exc}")
                    metrics.db_retried("call_record")
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        """Write everything put so far, then stop."""
        self._queue.put_nowait(None)
        await self._task
