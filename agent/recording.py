"""A call's recording streamed to its WAV file while the call goes on, by a writer thread.

The file is opened when the call starts and its header patched after every chunk, so a crash
leaves a readable WAV of everything written so far. The event loop only queues chunks
(:meth:`RecordingWriter.write` never blocks); a disk that stalls (a shared mount) holds at most
``max_pending_secs`` of audio in memory, beyond which chunks are written as silence of the same
length (the tracks stay aligned) and the gap is logged. A call resumed on a new stream (after
an unanswered transfer) appends to the file it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import struct
import threading
import wave
from pathlib import Path
from typing import BinaryIO

from loguru import logger

CHANNELS, SAMPLE_WIDTH = 2, 2
FRAME_BYTES = CHANNELS * SAMPLE_WIDTH
HEADER_BYTES = 44


def wav_header(rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte header of a 16-bit stereo PCM WAV holding ``data_bytes``."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        CHANNELS,
        rate,
        rate * FRAME_BYTES,
        FRAME_BYTES,
        SAMPLE_WIDTH * 8,
        b"data",
        data_bytes,
    )


def _resumable(path: Path, rate: int) -> int | None:
    """Data bytes already in ``path`` when it is one of our recordings at ``rate``, else None."""
    try:
        with wave.open(str(path), "rb") as wav:
            params = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
    except (OSError, EOFError, wave.Error):
        return None
    if params != (CHANNELS, SAMPLE_WIDTH, rate):
        return None
    size = path.stat().st_size - HEADER_BYTES  # what reached the disk, header or not
    return size - size % FRAME_BYTES


class RecordingWriter:
    """Writes one call's stereo audio (interleaved 16-bit PCM chunks) to ``path``."""

    def __init__(
        self, path: Path, rate: int, *, resume: bool = False, max_pending_secs: float = 30.0
    ) -> None:
        self.path = path
        self.rate = rate
        self.resume = resume
        self.max_pending = int(max_pending_secs * rate) * FRAME_BYTES
        self.pending = 0  # bytes queued, not yet on disk
        self.gap_bytes = 0  # audio written as silence because the disk fell behind
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"recording {path.stem}", daemon=True
        )
        self._thread.start()

    def write(self, stereo: bytes) -> None:
        """Queue a chunk; never blocks. Over the pending limit it becomes silence."""
        if not stereo:
            return
        with self._lock:
            full = self.pending + len(stereo) > self.max_pending
            if not full:
                self.pending += len(stereo)
        if full:
            if not self.gap_bytes:
                logger.warning(f"recording {self.path.name}: the disk is behind; writing silence")
            self.gap_bytes += len(stereo)
            self._queue.put(len(stereo))
        else:
            self._queue.put(stereo)

    async def close(self) -> str:
        """Write what is queued, finish the file; its path, or "" when it could not be written."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        if self.error is not None:
            logger.error(f"recording {self.path.name} could not be written: {self.error}")
            return ""
        return str(self.path)

    def _open(self) -> tuple[BinaryIO, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = _resumable(self.path, self.rate) if self.resume else None
        if existing is None:
            file = self.path.open("w+b")
            file.write(wav_header(self.rate, 0))
            return file, 0
        file = self.path.open("r+b")
        file.truncate(HEADER_BYTES + existing)
        file.seek(0, 2)
        return file, existing

    def _run(self) -> None:
        file: BinaryIO | None = None
        written = 0
        try:
            file, written = self._open()
        except Exception as exc:
            self.error = exc
        while (item := self._queue.get()) is not None:
            data = bytes(item) if isinstance(item, int) else item
            if isinstance(item, bytes):
                with self._lock:
                    self.pending -= len(item)
            if file is None:
                continue  # keep draining, so the memory is freed
            try:
                file.write(data)
                written += len(data)
                file.seek(0)
                file.write(wav_header(self.rate, written))
                file.seek(0, 2)
                file.flush()
            except Exception as exc:
                self.error = exc
                with contextlib.suppress(Exception):
                    file.close()
                file = None
        if file is not None:
            file.close()
