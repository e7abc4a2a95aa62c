"""The vendor stand-ins speak their vendors' protocols (the cloud wiring tests rely on them)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import websockets

from tests.conftest import free_port
from tests.fakes.deepgram import DeepgramStandIn
from tests.fakes.deepgram import build_app as deepgram_app
from tests.fakes.elevenlabs import ElevenLabsStandIn
from tests.fakes.elevenlabs import build_app as elevenlabs_app
from tests.fakes.llm import ServerThread

RATE = 8000


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


async def send_audio(ws: websockets.ClientConnection, pcm: bytes) -> None:
    for i in range(0, len(pcm), 320):
        await ws.send(pcm[i : i + 320])


async def messages_until(ws: websockets.ClientConnection, kind: str) -> list[dict]:
    out = []
    while True:
        data = json.loads(await asyncio.wait_for(ws.recv(), 10))
        out.append(data)
        if data.get("type") == kind or (kind == "isFinal" and data.get("isFinal")):
            return out


@pytest.fixture
def deepgram():
    standin = DeepgramStandIn(scripts=[["Hello there.", "Second line."]], api_key="dg-key-123")
    port = free_port()
    with ServerThread(deepgram_app(standin), port):
        yield standin, f"ws://127.0.0.1:{port}/v1/listen"


async def test_deepgram_standin_transcribes_utterances_from_its_script(deepgram) -> None:
    standin, url = deepgram
    query = "?model=nova-3&encoding=linear16&sample_rate=8000&channels=1&interim_results=true"
    async with websockets.connect(
        url + query, additional_headers={"Authorization": "Token dg-key-123"}
    ) as ws:
        await send_audio(ws, quiet(0.2) + tone(1.2) + quiet(0.1))
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(json.dumps({"type": "Finalize"}))
        got = await messages_until(ws, "Results")
        while not got[-1].get("is_final"):
            got += await messages_until(ws, "Results")
        final = got[-1]
        assert final["from_finalize"] is True
        assert final["channel"]["alternatives"][0]["transcript"] == "Hello there."
        assert [w["punctuated_word"] for w in final["channel"]["alternatives"][0]["words"]] == [
            "Hello",
            "there.",
        ]
        assert any(not m["is_final"] for m in got), "interim results while speaking"
        # A second utterance ends by the stand-in's own endpointing (speech_final).
        await send_audio(ws, quiet(1.0) + tone(0.8) + quiet(0.6))
        second = await messages_until(ws, "Results")
        while not second[-1].get("is_final"):
            second += await messages_until(ws, "Results")
        assert second[-1]["speech_final"] is True
        assert second[-1]["channel"]["alternatives"][0]["transcript"] == "Second line."
        await ws.send(json.dumps({"type": "CloseStream"}))
        metadata = await messages_until(ws, "Metadata")
        assert metadata[-1]["duration"] > 3.5
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
    assert standin.connections[0].control == ["KeepAlive", "Finalize", "CloseStream"]


async def test_deepgram_standin_refuses_a_wrong_key(deepgram) -> None:
    _standin, url = deepgram
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(
            url + "?encoding=linear16&sample_rate=8000",
            additional_headers={"Authorization": "Token wrong"},
        ):
            pass


async def test_elevenlabs_standin_speaks_a_context_and_finishes_it() -> None:
    standin = ElevenLabsStandIn(api_key="el-key-456")
    port = free_port()
    url = (
        f"ws://127.0.0.1:{port}/v1/text-to-speech/voice1/multi-stream-input"
        "?model_id=eleven_flash_v2_5&output_format=pcm_8000&auto_mode=true"
    )
    with ServerThread(elevenlabs_app(standin), port):
        async with websockets.connect(url, additional_headers={"xi-api-key": "el-key-456"}) as ws:
            await ws.send(json.dumps({"text": " ", "context_id": "c1", "voice_settings": {}}))
            await ws.send(json.dumps({"text": "Hello, how can I help? ", "context_id": "c1"}))
            await ws.send(json.dumps({"context_id": "c1", "close_context": True}))
            got = await messages_until(ws, "isFinal")
            audio = b"".join(base64.b64decode(m["audio"]) for m in got if m.get("audio"))
            assert got[-1] == {"isFinal": True, "contextId": "c1"}
            assert all(m["contextId"] == "c1" for m in got)
            seconds = len(audio) / 2 / RATE
            assert 1.0 < seconds < 2.5  # plausible for 22 characters
            assert np.abs(np.frombuffer(audio, dtype="<i2")).max() > 3000
            alignment = got[0]["alignment"]
            assert "".join(alignment["chars"]) == "Hello, how can I help? "
            assert len(alignment["charStartTimesMs"]) == len(alignment["chars"])
            await ws.send(json.dumps({"close_socket": True}))
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, additional_headers={"xi-api-key": "nope"}):
                pass
    assert standin.spoken == ["Hello, how can I help? "]
