"""A whole call on the embedded default: local Whisper, the local LLM and local TTS (slow).

The suite's one real-time call through the real model: the models are the session's (loaded
once, tests/conftest.py), the call is real, over the phone's websocket, in real time."""

from pathlib import Path

import pytest

from agent.app import create_app
from agent.brain.model import LocalBrain
from agent.providers import LocalModels
from agent.settings import Settings
from telephony.replay import converse
from tests.caller_audio import RATE, turn
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, server_env
from tests.fakes.llm import ServerThread


@pytest.mark.slow
async def test_offline_receptionist_answers_a_replayed_call(
    tmp_path: Path, local_models: LocalModels, local_brain: LocalBrain
) -> None:
    port = free_port()
    settings = Settings.from_env(server_env(tmp_path, port))
    app = create_app(settings, models=local_models, brain=local_brain)
    with ServerThread(app, port) as server:
        # The caller waits for each answer, however long the local model takes on this CPU;
        # a pause of a few seconds is part of the answer (between sentences), not its end.
        report, _heard = await converse(
            [
                turn("Hi, where is the salon located?", gap_secs=3.0),
                turn("Great, thanks. Goodbye.", gap_secs=3.0),
            ],
            RATE,
            server.url,
            auth_token=AUTH_TOKEN,
            admin_token=ADMIN_TOKEN,
            max_wait_secs=60,
            max_tail_secs=30,
        )
    record = report.call_record
    assert record and record["providers"]["llm"] == "llama-local"
    caller = " ".join(t["text"].lower() for t in record["turns"] if t["role"] == "caller")
    assert "located" in caller or "where" in caller
    tools = [c["name"] for c in record["tool_calls"]]
    assert "get_business_info" in tools or "search_knowledge_base" in tools
    bot = " ".join(t["text"] for t in record["turns"] if t["role"] == "bot")
    assert "Maple Street" in bot
    replies = [t.voice_to_voice_ms for t in report.caller_turns if t.voice_to_voice_ms]
    assert replies, "the bot never answered"
    print(f"local voice-to-voice: {replies}")
