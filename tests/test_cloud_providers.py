"""Cloud wiring: a whole call through Deepgram, an OpenAI-compatible LLM and ElevenLabs.

The vendors cannot be reached from here, so each is a local stand-in speaking its real protocol
(tests/fakes/): the server is configured exactly as in production (keys and base URLs from the
environment) and must carry the caller's words through all three.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loguru import logger

from agent.app import create_app
from agent.logging import configure_logging
from agent.providers import LocalModels, build_llm, build_stt
from agent.settings import Settings
from telephony.replay import Turn, converse
from tests.caller_audio import RATE, speech
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, server_env
from tests.fakes.deepgram import DeepgramStandIn
from tests.fakes.deepgram import build_app as deepgram_app
from tests.fakes.elevenlabs import ElevenLabsStandIn
from tests.fakes.elevenlabs import build_app as elevenlabs_app
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread
from tests.fakes.llm import build_app as llm_app

DEEPGRAM_KEY = "dg-dummy-key-7f3a9c"
OPENAI_KEY = "sk-dummy-key-41b2d8"
ELEVENLABS_KEY = "el-dummy-key-9e6c10"

HEARD = "Do you have anything for a haircut this Friday?"
WHERE = "Where are you located?"


@pytest.fixture
def cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_models: LocalModels
) -> Iterator[Any]:
    deepgram = DeepgramStandIn(scripts=[[HEARD, WHERE]], latency=0.05, api_key=DEEPGRAM_KEY)
    llm = ScriptedLLM(
        rules=[
            Rule(r"haircut", reply="Yes, we have a haircut at two on Friday. Shall I book it?"),
            Rule(r"where|located", tool="get_business_info", arguments={"topic": "address"}),
        ],
        first_token_delay=0.05,
    )
    eleven = ElevenLabsStandIn(first_audio_latency=0.05, api_key=ELEVENLABS_KEY)
    ports = [free_port() for _ in range(4)]
    with (
        ServerThread(deepgram_app(deepgram), ports[0]),
        ServerThread(llm_app(llm), ports[1]),
        ServerThread(elevenlabs_app(eleven), ports[2]),
    ):
        env = server_env(
            tmp_path,
            ports[3],
            DEEPGRAM_API_KEY=DEEPGRAM_KEY,
            DEEPGRAM_BASE_URL=f"ws://127.0.0.1:{ports[0]}",
            OPENAI_API_KEY=OPENAI_KEY,
            OPENAI_BASE_URL=f"http://127.0.0.1:{ports[1]}/v1",
            ELEVENLABS_API_KEY=ELEVENLABS_KEY,
            ELEVENLABS_BASE_URL=f"ws://127.0.0.1:{ports[2]}",
            FRONTDESK_LOG_LEVEL="DEBUG",
        )
        settings = Settings.from_env(env)
        log = io.StringIO()
        monkeypatch.setattr(sys, "stderr", log)
        configure_logging(settings)  # the product's logging, writing into ``log``
        try:
            # The session's local models: more than a cloud set-up needs (its fault clips are
            # made with the local TTS), and unused for the call, as the stand-ins show.
            with ServerThread(create_app(settings, models=local_models), ports[3]) as server:
                yield server, settings, deepgram, llm, eleven, log
        finally:
            monkeypatch.undo()
            logger.remove()
            assert sys.__stderr__ is not None
            logger.add(sys.__stderr__)  # loguru's default sink, not a stream pytest will close


async def test_a_call_runs_through_deepgram_openai_and_elevenlabs(cloud: Any) -> None:
    server, settings, deepgram, llm, eleven, log = cloud
    assert settings.provider_names() == {
        "stt": "deepgram",
        "llm": "openai-compatible",
        "tts": "elevenlabs",
    }
    # The caller takes turns: each is spoken once the bot has finished (the greeting first).
    turns = [Turn(speech("Hi, do you have anything for a haircut this Friday?"))]
    turns.append(Turn(speech("Where are you located?")))
    report, heard = await converse(
        turns, RATE, server.url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN
    )

    # Caller speech reached Deepgram as the pipeline's 8 kHz linear16, with our key.
    assert len(deepgram.connections) == 1
    dg = deepgram.connections[0]
    assert dg.authorization == f"Token {DEEPGRAM_KEY}"
    assert dg.params["encoding"] == "linear16" and dg.params["sample_rate"] == "8000"
    assert dg.audio_bytes > 8000 * 2 * 5  # seconds of caller audio, not a handful of frames
    # ...in 60 ms chunks, not a message per 20 ms frame (short ones flush before a Finalize).
    assert dg.audio_bytes / dg.audio_messages > 8000 * 2 * 0.05
    assert "Finalize" in dg.control  # pipecat finalizes at the end of each VAD segment
    assert dg.finals == [HEARD, WHERE]
    assert "permessage-deflate" not in dg.extensions  # audio does not compress

    # The transcripts reached the LLM, with our key, and the tool round-trip worked.
    user_turns = [
        [m["content"] for m in r["messages"] if m["role"] == "user"] for r in llm.requests
    ]
    assert any(HEARD in " ".join(turns) for turns in user_turns)
    assert any(WHERE in " ".join(turns) for turns in user_turns)
    assert any(m["role"] == "tool" for r in llm.requests for m in r["messages"])
    assert all(r["model"] == settings.openai_model for r in llm.requests)

    # ElevenLabs spoke the greeting, the LLM's reply and the tool's answer.
    assert len(eleven.connections) == 1
    el = eleven.connections[0]
    assert el.api_key_header == ELEVENLABS_KEY
    assert "permessage-deflate" not in el.extensions
    assert el.params["output_format"] == "pcm_8000"
    assert el.voice_id == settings.elevenlabs_voice_id
    spoken = " ".join(eleven.spoken)
    assert "haircut at two on Friday" in spoken
    assert "Thanks for calling" in spoken or "Bella" in spoken
    assert el.finals, "contexts are closed and finished with isFinal"

    # ...and the caller heard it: answers after both turns, in audible audio.
    assert np.abs(np.frombuffer(heard, dtype="<i2")).max() > 3000
    answered = [t for t in report.caller_turns if t.voice_to_voice_ms is not None]
    assert len(answered) >= 2
    record = report.call_record
    assert record is not None and record["providers"]["stt"] == "deepgram"
    caller_text = [t["text"] for t in record["turns"] if t["role"] == "caller"]
    assert caller_text[:2] == [HEARD, WHERE]
    assert [c["name"] for c in record["tool_calls"]] == ["get_business_info"]
    assert not [t for t in record["turns"] if t["role"] == "bot" and t["interrupted"]]

    # Secrets never reached the logs (which did log the call, at DEBUG).
    err = log.getvalue()
    assert "Deepgram" in err or "deepgram" in err
    for secret in (DEEPGRAM_KEY, OPENAI_KEY, ELEVENLABS_KEY, ADMIN_TOKEN):
        assert secret not in err


async def test_calls_share_the_provider_clients(tmp_path: Path) -> None:
    """Each call's services reuse the process's Deepgram client and LLM HTTP client (one TLS
    context), rather than making their own at every call start."""
    settings = Settings.from_env(
        server_env(
            tmp_path,
            free_port(),
            DEEPGRAM_API_KEY=DEEPGRAM_KEY,
            DEEPGRAM_BASE_URL="ws://127.0.0.1:9",
            OPENAI_API_KEY=OPENAI_KEY,
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        )
    )
    models = LocalModels()
    first, second = build_stt(settings, models), build_stt(settings, models)
    assert first._client is second._client  # type: ignore[attr-defined]  # pipecat's SDK client
    one, other = (build_llm(settings, None, "You answer.", models.clients) for _ in range(2))
    http = one._client._client  # type: ignore[attr-defined]  # AsyncOpenAI's httpx client
    assert http is other._client._client  # type: ignore[attr-defined]
    shared = models.clients.http()
    assert shared is not None and http is shared
    await models.clients.aclose()
    assert shared.is_closed
