"""A local ElevenLabs text-to-speech server (the vendor we cannot reach from here).

Speaks the multi-context websocket protocol that pipecat 1.14's ElevenLabsTTSService uses:
``/v1/text-to-speech/{voice_id}/multi-stream-input?model_id=…&output_format=pcm_8000&auto_mode=…``
with an ``xi-api-key`` header. Client messages (JSON):

- ``{"text": " ", "context_id": c, "voice_settings": {…}}`` opens a context,
- ``{"text": "Hello there. ", "context_id": c}`` adds text (``{"text": ""}`` is a keep-alive),
- ``{"context_id": c, "flush": true}`` synthesizes what is buffered now,
- ``{"context_id": c, "close_context": true}`` finishes the context: queued text is spoken,
  then ``{"isFinal": true, "contextId": c}``,
- ``{"close_socket": true}`` closes the connection after pending contexts finish.

Server messages: ``{"audio": <base64 PCM16>, "alignment": {"chars", "charStartTimesMs",
"charDurationsMs"}, "normalizedAlignment": {…}, "contextId": c}`` and ``isFinal``. With
``auto_mode=true`` each text message is synthesized as it arrives (pipecat sends whole
sentences); otherwise text is buffered until 120 characters or a flush, as ElevenLabs' default
chunk schedule does. The audio is a voiced buzz (a 140 Hz harmonic tone at a syllable rhythm),
about 65 ms per character, at the requested ``pcm_<rate>``, in 250 ms chunks; the first chunk of
each piece comes ``first_audio_latency`` seconds after the text. The connection closes after
``inactivity_timeout`` seconds (query parameter, default 20) without a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

MS_PER_CHAR = 65.0
CHUNK_MS = 250
SCHEDULE_CHARS = 120


@dataclass
class Connection:
    voice_id: str
    params: dict[str, str]
    api_key_header: str
    texts: dict[str, list[str]] = field(default_factory=dict)  # context -> text messages
    voice_settings: dict[str, Any] = field(default_factory=dict)
    finals: list[str] = field(default_factory=list)  # contexts answered with isFinal
    audio_ms: float = 0.0
    extensions: str = ""  # the client's Sec-WebSocket-Extensions offer


@dataclass
class ElevenLabsStandIn:
    first_audio_latency: float = 0.0  # text -> first audio chunk of that piece, seconds
    chunk_interval: float = 0.0  # wait between chunks of one piece (0: as fast as possible)
    api_key: str = ""  # when set, the xi-api-key header must match
    connections: list[Connection] = field(default_factory=list)

    @property
    def spoken(self) -> list[str]:
        """Every non-blank text message received, in order."""
        return [
            t for c in self.connections for texts in c.texts.values() for t in texts if t.strip()
        ]


def synthesize(text: str, rate: int) -> np.ndarray:
    """A voiced, speech-rhythm buzz of plausible length for ``text`` (int16 samples)."""
    seconds = max(0.3, len(text.strip()) * MS_PER_CHAR / 1000.0)
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3))
    rhythm = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (voice * rhythm * fade * 0.22 * 32767).astype("<i2")


def _alignment(text: str, start_ms: float, span_ms: float) -> dict[str, list[Any]]:
    chars = list(text)
    each = span_ms / max(len(chars), 1)
    return {
        "chars": chars,
        "charStartTimesMs": [int(start_ms + i * each) for i in range(len(chars))],
        "charDurationsMs": [max(1, int(each)) for _ in chars],
    }


class _Session:
    def __init__(self, standin: ElevenLabsStandIn, ws: WebSocket, conn: Connection) -> None:
        self.standin = standin
        self.ws = ws
        self.conn = conn
        fmt = conn.params.get("output_format", "mp3_44100_128")
        if not fmt.startswith("pcm_"):
            raise ValueError(f"the stand-in only produces pcm_<rate>, not {fmt!r}")
        self.rate = int(fmt.split("_")[1])
        self.auto = conn.params.get("auto_mode", "false") == "true"
        self.buffers: dict[str, str] = {}
        self.queues: dict[str, asyncio.Queue[str | None]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(message))

    def _queue(self, context: str) -> asyncio.Queue[str | None]:
        if context not in self.queues:
            self.queues[context] = asyncio.Queue()
            self.workers[context] = asyncio.create_task(self._speak(context))
        return self.queues[context]

    async def _speak(self, context: str) -> None:
        """Synthesize a context's pieces in order; None ends the context with isFinal."""
        queue = self.queues[context]
        while (text := await queue.get()) is not None:
            if self.standin.first_audio_latency:
                await asyncio.sleep(self.standin.first_audio_latency)
            samples = synthesize(text, self.rate)
            step = self.rate * CHUNK_MS // 1000
            total_ms = len(samples) * 1000.0 / self.rate
            pieces = range(0, len(samples), step)
            for index, offset in enumerate(pieces):
                chunk = samples[offset : offset + step]
                # Alignment of the whole piece rides on the first chunk, as ElevenLabs does
                # for short inputs; later chunks carry none.
                align = _alignment(text, 0.0, total_ms) if index == 0 else None
                await self.send(
                    {
                        "audio": base64.b64encode(chunk.tobytes()).decode(),
                        "alignment": align,
                        "normalizedAlignment": align,
                        "contextId": context,
                    }
                )
                self.conn.audio_ms += len(chunk) * 1000.0 / self.rate
                if self.standin.chunk_interval:
                    await asyncio.sleep(self.standin.chunk_interval)
        self.conn.finals.append(context)
        await self.send({"isFinal": True, "contextId": context})

    def _flush(self, context: str) -> None:
        text = self.buffers.pop(context, "")
        if text.strip():
            self._queue(context).put_nowait(text)

    async def message(self, data: dict[str, Any]) -> bool:
        """Handle one client message; False once the socket should close."""
        if data.get("close_socket"):
            await self._close_socket()
            return False
        context = str(data.get("context_id") or "default")
        text = data.get("text")
        if isinstance(text, str) and text:
            self._text(context, text, data)
        if data.get("flush"):
            self._flush(context)
        if data.get("close_context"):
            self._flush(context)
            self._queue(context).put_nowait(None)
            self.queues.pop(context, None)  # a reused id would start a fresh context
        return True

    async def _close_socket(self) -> None:
        """Speak what every context buffered, then let the workers finish."""
        for context in list(self.buffers):
            self._flush(context)
        for queue in self.queues.values():
            queue.put_nowait(None)
        if self.workers:
            await asyncio.wait(set(self.workers.values()), timeout=10)

    def _text(self, context: str, text: str, data: dict[str, Any]) -> None:
        """Buffer ``text``; speak the buffer when scheduled (or at once in auto mode)."""
        self.conn.texts.setdefault(context, []).append(text)
        if "voice_settings" in data:
            self.conn.voice_settings = dict(data["voice_settings"] or {})
        if text.strip() or self.buffers.get(context):  # the opening " " is no speech
            self.buffers[context] = self.buffers.get(context, "") + text
        buffered = self.buffers.get(context, "")
        if (self.auto and buffered.strip()) or len(buffered) >= SCHEDULE_CHARS:
            self._flush(context)

    def cancel(self) -> None:
        for task in self.workers.values():
            task.cancel()


def build_app(standin: ElevenLabsStandIn) -> FastAPI:
    app = FastAPI()

    @app.websocket("/v1/text-to-speech/{voice_id}/multi-stream-input")
    async def multi_stream_input(ws: WebSocket, voice_id: str) -> None:
        key = ws.headers.get("xi-api-key", "")
        if standin.api_key and key != standin.api_key:
            await ws.close(code=1008)  # handshake refused
            return
        params = dict(ws.query_params)
        conn = Connection(voice_id=voice_id, params=params, api_key_header=key)
        conn.extensions = ws.headers.get("sec-websocket-extensions", "")
        try:
            timeout = float(params.get("inactivity_timeout", "20"))
        except ValueError:
            timeout = 20.0
        await ws.accept()
        try:
            session = _Session(standin, ws, conn)
        except ValueError as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        standin.connections.append(conn)
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(ws.receive_text(), timeout)
                except TimeoutError:
                    await ws.close(code=1008, reason="input_timeout_exceeded")
                    break
                try:
                    data = json.loads(raw)
                except ValueError:
                    await ws.close(code=1008, reason="invalid JSON")
                    break
                if not await session.message(data):
                    await ws.close(code=1000)
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            session.cancel()

    return app
