"""A local Deepgram live-transcription server (the vendor we cannot reach from here).

Speaks Deepgram's streaming protocol as ``deepgram-sdk`` and pipecat's DeepgramSTTService use it:
``GET /v1/listen?model=…&encoding=linear16&sample_rate=8000&channels=1&interim_results=true…``
upgraded to a websocket with ``Authorization: Token <key>``; binary audio in; JSON out:

- ``Results`` (``channel.alternatives[0].transcript``, ``words``, ``is_final``, ``speech_final``,
  ``from_finalize``, ``start``/``duration`` in audio seconds, ``metadata``),
- ``SpeechStarted`` when ``vad_events=true``, ``UtteranceEnd`` when ``utterance_end_ms`` is set,
- ``Metadata`` on ``CloseStream`` before a normal close.

Client messages ``KeepAlive``, ``Finalize`` and ``CloseStream`` are honoured; an unknown one gets
an ``Error`` message. Connections without silence or keep-alive for ``idle_timeout`` seconds are
closed with 1011, as Deepgram does (NET-0001).

It does not recognise speech: each connection gets a script of transcripts (connection *k* uses
``scripts[k % len(scripts)]``), one line per caller turn. Utterances are found in the audio by
frame energy and ended by ``Finalize`` or by ``max(endpointing, min_silence_ms)`` of silence;
each new utterance starts the next line, and one resuming within ``continuation_ms`` continues
the current line (its next phrases, as many as fit the utterance's duration). Finals come
``latency`` seconds after the utterance ended. Everything seen is kept on
:attr:`DeepgramStandIn.connections` for assertions.

Run alone (for benches): ``python -m tests.fakes.serve`` starts it with the other stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from telephony import codec


@dataclass
class Connection:
    """What one websocket connection sent and received."""

    params: dict[str, str]
    authorization: str
    audio_bytes: int = 0
    audio_messages: int = 0
    control: list[str] = field(default_factory=list)  # KeepAlive / Finalize / CloseStream / …
    finals: list[str] = field(default_factory=list)  # transcripts sent as is_final
    closed: bool = False
    extensions: str = ""  # the client's Sec-WebSocket-Extensions offer


@dataclass
class DeepgramStandIn:
    scripts: list[list[str]]
    latency: float = 0.0  # utterance end -> final result, seconds
    api_key: str = ""  # when set, the Authorization header must be "Token <api_key>"
    threshold_db: float = -40.0  # frame energy (dBFS) that counts as speech
    min_speech_ms: int = 60  # shorter bursts are clicks, not speech
    min_silence_ms: int = 300  # floor under the requested endpointing (word gaps are silent too)
    continuation_ms: int = 700  # speech resuming this soon after a final continues that line
    chars_per_sec: float = 25.0  # a brisk speaking rate: a line is split only where it must be
    interim_every_ms: int = 500
    idle_timeout: float = 10.0
    connections: list[Connection] = field(default_factory=list)

    def script_for(self, index: int) -> list[str]:
        return list(self.scripts[index % len(self.scripts)]) if self.scripts else []


class _Utterance:
    def __init__(self, start: float, continuation: bool = False) -> None:
        self.start = start  # audio seconds
        self.end = start
        self.speech_ms = 0
        self.interims = 0
        self.continuation = continuation  # more of the line being spoken


class _Session:
    """One connection: endpointing on the audio, results sent in order."""

    def __init__(
        self, standin: DeepgramStandIn, ws: WebSocket, conn: Connection, script: list[str]
    ):
        self.standin = standin
        self.ws = ws
        self.conn = conn
        self.script = script
        self.request_id = str(uuid.uuid4())
        params = conn.params
        self.rate = int(params.get("sample_rate", "16000"))
        self.channels = int(params.get("channels", "1"))
        self.encoding = params.get("encoding", "linear16")
        self.interim = params.get("interim_results", "false") == "true"
        self.vad_events = params.get("vad_events", "false") == "true"
        endpointing = params.get("endpointing", "10")
        silence = 10 if endpointing in ("true", "") else int(endpointing or 10)
        self.endpoint_ms = 0 if endpointing == "false" else max(silence, standin.min_silence_ms)
        self.utterance_end_ms = int(params.get("utterance_end_ms", "0") or 0)
        self.frame_samples = self.rate // 50  # 20 ms analysis frames
        self.sample_bytes = 1 if self.encoding == "mulaw" else 2
        self.pending = bytearray()
        self.audio_secs = 0.0
        self.current: _Utterance | None = None
        self.run_ms = 0  # loud ms in a row before an utterance is opened
        self.silence_ms = 0
        self.last_final_end: float | None = None
        self.last_utterance_end = -1.0
        self.phrases: list[str] = []  # what is left of the line being spoken
        self.silence_since_final_ms = 0
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    # --- audio ---------------------------------------------------------------------------------

    def _frame_db(self, frame: bytes) -> float:
        if self.encoding == "mulaw":
            frame = codec.ulaw_to_pcm16(frame)
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
        if self.channels > 1:
            samples = samples[:: self.channels]
        return 10 * math.log10(float(np.mean(samples**2)) + 1e-12)

    async def audio(self, data: bytes) -> None:
        self.conn.audio_bytes += len(data)
        self.conn.audio_messages += 1
        self.pending.extend(data)
        step = self.frame_samples * self.sample_bytes * self.channels
        while len(self.pending) >= step:
            frame = bytes(self.pending[:step])
            del self.pending[:step]
            self.audio_secs += 0.02
            await self._analyse(self._frame_db(frame) > self.standin.threshold_db)

    async def _analyse(self, loud: bool) -> None:
        if loud:
            self.silence_ms = 0
            self.silence_since_final_ms = 0
            if self.current is None:
                self.run_ms += 20
                if self.run_ms >= self.standin.min_speech_ms:
                    start = self.audio_secs - self.run_ms / 1000
                    gap_ms = (start - self.last_utterance_end) * 1000
                    self.current = _Utterance(
                        start, continuation=gap_ms < self.standin.continuation_ms
                    )
                    if self.vad_events:
                        await self.send(
                            {
                                "type": "SpeechStarted",
                                "channel": [0],
                                "timestamp": round(self.current.start, 3),
                            }
                        )
            if self.current is not None:
                self.current.speech_ms += 20
                self.current.end = self.audio_secs
                if (
                    self.interim
                    and self.current.speech_ms
                    >= (self.current.interims + 1) * self.standin.interim_every_ms
                ):
                    self.current.interims += 1
                    await self._interim(self.current)
            return
        self.run_ms = 0
        self.silence_ms += 20
        self.silence_since_final_ms += 20
        if self.current is not None and self.endpoint_ms and self.silence_ms >= self.endpoint_ms:
            self._finish(speech_final=True)
        elif (
            self.utterance_end_ms
            and self.current is None
            and self.last_final_end is not None
            and self.silence_since_final_ms >= self.utterance_end_ms
        ):
            last, self.last_final_end = self.last_final_end, None
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last})

    # --- results -------------------------------------------------------------------------------

    async def _interim(self, utterance: _Utterance) -> None:
        if utterance.continuation:
            return
        words = (self.script[0] if self.script else "").split()
        # A growing prefix of the line, as a streaming recogniser reveals it.
        shown = " ".join(words[: max(1, len(words) * utterance.interims // 4)]) if words else ""
        await self.send(self._results(shown, utterance, is_final=False, speech_final=False))

    def _finish(self, *, speech_final: bool, from_finalize: bool = False) -> None:
        """Close the utterance in progress (if any) and answer it after the latency."""
        utterance, self.current = self.current, None
        self.silence_ms = 0
        if utterance is None and not from_finalize:
            return
        text = ""
        if utterance is None:
            utterance = _Utterance(self.audio_secs)
        else:
            self.last_utterance_end = utterance.end
            if utterance.speech_ms >= self.standin.min_speech_ms:
                text = self._words_for(utterance)
        task = asyncio.create_task(self._final_later(text, utterance, speech_final, from_finalize))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _words_for(self, utterance: _Utterance) -> str:
        """The part of the script line this utterance said.

        A caller who pauses mid-line (at a comma, say) produces several utterances; each gets
        the line's next phrases, as many as fit its duration at ``chars_per_sec`` (at least one).
        """
        if not utterance.continuation or not self.phrases:
            if utterance.continuation:
                return ""
            line = self.script.pop(0) if self.script else ""
            self.phrases = re.findall(r"[^,;:]+[,;:]?\s*", line) or ([line] if line else [])
        budget = (utterance.end - utterance.start + 0.5) * self.standin.chars_per_sec
        taken: list[str] = []
        while self.phrases and (not taken or len("".join(taken + self.phrases[:1])) <= budget):
            taken.append(self.phrases.pop(0))
        return "".join(taken).strip()

    async def _final_later(
        self, text: str, utterance: _Utterance, speech_final: bool, from_finalize: bool
    ) -> None:
        if self.standin.latency:
            await asyncio.sleep(self.standin.latency)
        message = self._results(text, utterance, is_final=True, speech_final=speech_final)
        if from_finalize:
            message["from_finalize"] = True
        if text:
            self.conn.finals.append(text)
            self.last_final_end = round(utterance.end, 3)
            self.silence_since_final_ms = 0
        await self.send(message)

    def _results(
        self, text: str, utterance: _Utterance, *, is_final: bool, speech_final: bool
    ) -> dict[str, Any]:
        words = text.split()
        span = max(utterance.end - utterance.start, 0.02)
        each = span / max(len(words), 1)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(span, 3),
            "start": round(utterance.start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.98 if text else 0.0,
                        "words": [
                            {
                                "word": w.strip(".,!?").lower(),
                                "start": round(utterance.start + i * each, 3),
                                "end": round(utterance.start + (i + 1) * each, 3),
                                "confidence": 0.98,
                                "punctuated_word": w,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "general-nova-3", "version": "stand-in", "arch": "nova-3"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            if not self.conn.closed:
                await self.ws.send_text(json.dumps(message))

    async def control(self, raw: str) -> bool:
        """Handle a text message; False when the stream should close."""
        try:
            kind = json.loads(raw).get("type", "")
        except (ValueError, AttributeError):
            kind = ""
        self.conn.control.append(kind or "invalid")
        if kind == "KeepAlive":
            return True
        if kind == "Finalize":
            self._finish(speech_final=False, from_finalize=True)
            return True
        if kind == "CloseStream":
            self._finish(speech_final=True)
            if self.tasks:
                await asyncio.wait(set(self.tasks))
            await self.send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": "0" * 64,
                    "created": "2026-01-01T00:00:00.000Z",
                    "duration": round(self.audio_secs, 3),
                    "channels": self.channels,
                    "models": ["00000000-0000-0000-0000-000000000000"],
                    "model_info": {},
                }
            )
            return False
        await self.send(
            {
                "type": "Error",
                "description": f"unknown message type {kind!r}",
                "message": "Expected KeepAlive, Finalize, CloseStream or Configure",
                "variant": "INVALID_MESSAGE",
            }
        )
        return True


def build_app(standin: DeepgramStandIn) -> FastAPI:
    app = FastAPI()

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        params = dict(ws.query_params)
        authorization = ws.headers.get("authorization", "")
        if standin.api_key and authorization != f"Token {standin.api_key}":
            await ws.close(code=1008)  # before accept: the handshake is refused (HTTP 403)
            return
        if params.get("encoding") not in ("linear16", "mulaw") or "sample_rate" not in params:
            await ws.close(code=1008)
            return
        conn = Connection(params=params, authorization=authorization)
        conn.extensions = ws.headers.get("sec-websocket-extensions", "")
        script = standin.script_for(len(standin.connections))
        standin.connections.append(conn)
        await ws.accept()
        session = _Session(standin, ws, conn, script)
        try:
            await _serve(ws, session, standin.idle_timeout)
        except WebSocketDisconnect:
            pass
        finally:
            conn.closed = True
            for task in list(session.tasks):
                task.cancel()

    return app


async def _serve(ws: WebSocket, session: _Session, idle_timeout: float) -> None:
    """Audio and control messages until the client closes, goes idle or asks to close."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), idle_timeout)
        except TimeoutError:
            await ws.close(code=1011, reason="NET-0001: no audio received")
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await session.audio(message["bytes"])
        elif message.get("text") is not None and not await session.control(message["text"]):
            await ws.close(code=1000)
            return
