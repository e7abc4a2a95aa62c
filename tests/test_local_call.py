"""A whole call on the embedded default: local Whisper, the local LLM and local TTS (slow)."""

import pytest

from telephony.replay import replay
from tests.caller_audio import RATE, call_audio
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, server_env
from tests.fakes.llm import ServerThread


@pytest.mark.slow
async def test_offline_receptionist_answers_a_replayed_call(tmp_path):
    from agent.app import create_app
    from agent.settings import Settings

    port = free_port()
    app = create_app(Settings.from_env(server_env(tmp_path, port)))
    with ServerThread(app, port) as server:
        report, _heard = await replay(
            call_audio(
                1.0, "Hi, where is the salon located?", 12.0, "Great, thanks. Goodbye.", 10.0
            ),
            RATE,
            server.url,
            auth_token=AUTH_TOKEN,
            admin_token=ADMIN_TOKEN,
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
