"""Fault injection: LLM and TTS providers that fail or hang mid-call, and tools that break.

The caller (telephony.replay) must hear an apology clip that needs no provider, the agent retries
once, then offers a person or a message, and ends politely if the fault goes on; the call record
shows every fault.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from agent.faults import LOCAL_TIMEOUT_FLOOR_SECS
from agent.prompts import phrases
from telephony.replay import replay
from tests.caller_audio import RATE, call_audio
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, free_port, make_ctx, server_env
from tests.fakes.broken import BrokenVendor, build_broken_app
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread, build_app
from tools.errors import ToolError
from tools.registry import ToolRegistry, ToolResult, ToolSpec

PROVIDER_TIMEOUT = "3"

RULES = [
    Rule(r"park", tool="search_knowledge_base", arguments={"query": "parking"}),
    Rule(
        r"message",
        tool="take_message",
        arguments={"message": "Please call me back about my booking", "name": "Anna Lee"},
    ),
    Rule(r"hours|open", tool="get_business_info", arguments={"topic": "hours"}),
]


@dataclass
class FaultServer:
    url: str
    script: ScriptedLLM


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory):
    from agent.app import create_app
    from agent.settings import Settings

    script = ScriptedLLM(rules=list(RULES))
    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(script), llm_port):
        env = server_env(
            tmp_path_factory.mktemp("faults"),
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_PROVIDER_TIMEOUT_SECS=PROVIDER_TIMEOUT,
            FRONTDESK_CALLER_IDLE_SECS="30",
        )
        with ServerThread(create_app(Settings.from_env(env)), port) as server:
            yield FaultServer(server.url, script)


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest):
    """A scripted fault a test did not use up must not leak into the next test's call."""
    yield
    if "fault_server" in request.fixturenames:
        script = request.getfixturevalue("fault_server").script
        script.fail_next = script.hang_next = 0


async def call(server_url: str, *parts: str | float) -> Any:
    report, heard = await replay(
        call_audio(*parts), RATE, server_url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN
    )
    assert report.call_record is not None and report.call_record["ended_at"]
    return report, heard


def assert_in_order(said: list[str], *names: str) -> None:
    """The phrases were said, first occurrences in this order, the last one last."""
    texts = [phrases()[n] for n in names]
    assert all(t in said for t in texts), said
    assert [said.index(t) for t in texts] == sorted(said.index(t) for t in texts), said
    assert said[-1] == texts[-1], said


def bot_says(report: Any) -> list[str]:
    return [t["text"] for t in report.call_record["turns"] if t["role"] == "bot"]


async def test_llm_error_apologises_and_the_retry_answers(fault_server):
    fault_server.script.fail_next = 1
    report, _ = await call(fault_server.url, 3.5, "Is there parking nearby?", 15.0)
    said = bot_says(report)
    record = report.call_record
    assert phrases()["apology_wait"] in said
    apology = said.index(phrases()["apology_wait"])
    assert any("parking" in s.lower() for s in said[apology + 1 :]), said
    assert [c["name"] for c in record["tool_calls"]] == ["search_knowledge_base"]
    assert any(f.startswith("llm: ") and "500" in f for f in record["faults"]), record["faults"]
    assert "llm: apologised; retrying the request once" in record["faults"]
    assert phrases()["fault_offer"] not in said
    assert record["outcome"] == "caller_hung_up"  # the fault did not end the call
    assert fault_server.script.fail_next == 0
    # The caller heard the apology: there is bot audio after the question.
    assert report.caller_turns[-1].voice_to_voice_ms is not None


async def test_llm_hang_times_out_apologises_and_retries(fault_server):
    fault_server.script.hang_next = 1
    report, _ = await call(fault_server.url, 3.5, "What are your opening hours?", 20.0)
    said = bot_says(report)
    record = report.call_record
    assert phrases()["apology_wait"] in said
    assert "get_business_info" in [c["name"] for c in record["tool_calls"]]
    assert any(f.startswith("llm: ") and "timed out" in f.lower() for f in record["faults"])
    # The apology came after the provider timeout, not at once, and not much later.
    turn = report.caller_turns[-1]
    assert turn.voice_to_voice_ms is not None
    assert turn.voice_to_voice_ms > float(PROVIDER_TIMEOUT) * 1000 - 500
    assert turn.voice_to_voice_ms < float(PROVIDER_TIMEOUT) * 1000 + 15000


async def test_llm_failing_twice_offers_a_person_or_a_message(fault_server):
    fault_server.script.fail_next = 2
    report, _ = await call(
        fault_server.url,
        3.5,
        "Is there parking nearby?",
        28.0,  # the apology and the offer play out
        "Please take a message, ask someone to call me back.",
        8.0,
    )
    said = bot_says(report)
    record = report.call_record
    assert phrases()["apology_wait"] in said and phrases()["fault_offer"] in said
    assert said.index(phrases()["apology_wait"]) < said.index(phrases()["fault_offer"])
    assert "llm: failed again; offered a person or a message" in record["faults"]
    assert sum(f.startswith("llm: Error") for f in record["faults"]) == 2, record["faults"]
    # The conversation went on to the message (the offer is in the model's context).
    calls = record["tool_calls"]
    assert [c["name"] for c in calls] == ["take_message"] and calls[0]["ok"]
    asked = fault_server.script.requests[-2]["messages"]
    # (whole, or as far as the caller heard it if they spoke over it)
    offered = [m for m in asked if m["role"] == "assistant" and m.get("content")]
    assert any("technical trouble" in m["content"] for m in offered), offered
    assert record["outcome"] == "caller_hung_up"  # the fault did not end the call


async def test_llm_that_stays_down_ends_the_call_politely(fault_server):
    fault_server.script.fail_next = 10
    report, _ = await call(
        fault_server.url, 3.5, "Is there parking nearby?", 20.0, "Hello? Can you hear me?", 15.0
    )
    said = bot_says(report)
    record = report.call_record
    assert_in_order(said, "apology_wait", "fault_offer", "fault_goodbye")
    assert record["outcome"] == "provider_fault"
    assert report.closed_by_server
    assert "llm: still failing; ending the call politely" in record["faults"]


async def test_a_hung_cloud_tts_is_covered_by_clips(tmp_path):
    """ElevenLabs accepts the websocket and never answers: the caller hears the pre-synthesized
    apology, the offer and a goodbye instead of silence."""
    from agent.app import create_app
    from agent.settings import Settings

    vendor = BrokenVendor(mode="hang")
    script = ScriptedLLM(rules=list(RULES))
    llm_port, tts_port, port = free_port(), free_port(), free_port()
    with (
        ServerThread(build_app(script), llm_port),
        ServerThread(build_broken_app(vendor), tts_port),
    ):
        env = server_env(
            tmp_path,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            ELEVENLABS_API_KEY="el-test-key-123456",
            ELEVENLABS_BASE_URL=f"ws://127.0.0.1:{tts_port}",
            FRONTDESK_PROVIDER_TIMEOUT_SECS=PROVIDER_TIMEOUT,
            FRONTDESK_CALLER_IDLE_SECS="30",
        )
        with ServerThread(create_app(Settings.from_env(env)), port) as server:
            report, _ = await call(server.url, 16.0, "Is there parking nearby?", 14.0)
    assert vendor.connections >= 1 and vendor.received, "the TTS was asked to speak"
    said = bot_says(report)
    record = report.call_record
    assert_in_order(said, "apology_wait", "fault_offer", "fault_goodbye")
    policy = ("tts: apologised", "tts: failed again", "tts: still failing")
    tts_faults = [f for f in record["faults"] if f.startswith("tts: ")]
    assert len([f for f in tts_faults if not f.startswith(policy)]) >= 3, record["faults"]
    assert "tts: no audio within 3s" in tts_faults
    assert "tts: apologised; retrying the sentence once" in record["faults"]
    assert record["outcome"] == "provider_fault" and report.closed_by_server
    # Every clip was heard as audio (the TTS itself produced none).
    assert len(report.bot_speech_segments) >= 3
    assert report.bot_audio_ms > 6000


def test_local_models_never_time_out_quickly():
    assert LOCAL_TIMEOUT_FLOOR_SECS >= 20


# --- Tools: exceptions and timeouts become spoken, recoverable errors ---------------------------


def _registry_with(name: str, function: Any, timeout_secs: float = 0.5) -> ToolRegistry:
    registry = ToolRegistry([])
    registry.specs[name] = ToolSpec(
        name,
        "a test tool",
        {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
        function,
        True,
        timeout_secs,
    )
    return registry


async def test_tool_exceptions_and_timeouts_are_spoken_errors(db):
    async def broken(ctx: Any, x: str) -> ToolResult:
        raise RuntimeError("database on fire")

    async def slow(ctx: Any, x: str) -> ToolResult:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async def refusing(ctx: Any, x: str) -> ToolResult:
        raise ToolError("That day is fully booked.", code="full")

    ctx = make_ctx(db)
    bug = await _registry_with("broken", broken).invoke(ctx, "broken", {"x": "1"})
    assert not bug.ok and bug.payload["error"] == "internal"
    assert bug.payload["say"] and "fire" not in bug.payload["say"]  # no internals to the caller
    assert bug.error.startswith("internal: RuntimeError: database on fire")  # but in the record

    started = asyncio.get_running_loop().time()
    late = await _registry_with("slow", slow, 0.3).invoke(ctx, "slow", {"x": "1"})
    assert asyncio.get_running_loop().time() - started < 5
    assert not late.ok and late.error == "timeout" and late.payload["say"]

    refused = await _registry_with("refusing", refusing).invoke(ctx, "refusing", {"x": "1"})
    assert not refused.ok and refused.payload["say"] == "That day is fully booked."

    missing = await _registry_with("broken", broken).invoke(ctx, "broken", {})
    assert not missing.ok and missing.error == "missing_argument" and "?" in missing.payload["say"]
    unknown = await ToolRegistry([]).invoke(ctx, "format_disk", {})
    assert not unknown.ok and unknown.error == "unknown_tool"
    garbage = await _registry_with("broken", broken).invoke(ctx, "broken", "not json")
    assert not garbage.ok and garbage.payload["say"]
