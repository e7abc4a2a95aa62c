"""A caller who says nothing is prompted, then politely hung up on."""

from telephony.replay import replay
from tests.caller_audio import RATE, silence
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, server_env
from tests.fakes.llm import ScriptedLLM, ServerThread, build_app


async def test_silence_gets_a_prompt_then_a_goodbye(tmp_path):
    from agent.app import create_app
    from agent.settings import Settings

    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(ScriptedLLM(rules=[])), llm_port):
        env = server_env(
            tmp_path,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_CALLER_IDLE_SECS="3",
        )
        app = create_app(Settings.from_env(env))
        with ServerThread(app, port) as server:
            report, _ = await replay(
                silence(90.0), RATE, server.url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN
            )
    assert report.closed_by_server, "the server should hang up on a silent caller"
    assert report.duration_ms < 75000  # greeting, two prompts and a goodbye, not 90 s
    record = report.call_record
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert sum("still there" in s for s in said) == 2
    assert "hang up" in said[-1] or "Goodbye" in said[-1]
    assert record["outcome"] == "caller_silent"
