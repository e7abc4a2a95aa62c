"""Fault injection: LLM and TTS providers that fail or hang mid-call, and tools that break.

The caller must hear an apology clip that needs no provider, the agent retries once, then offers
a person or a message (a person at once while the business is open), and ends politely if the
fault goes on; the call record shows every fault.

The calls run at frame level (tests/frames.py: the real session, fault handler, escalation and
tools in the real pipeline assembly) with the vendors' real clients: pipecat's OpenAI service
against the scripted OpenAI stand-in (which answers 500 or hangs on request), ElevenLabs'
against a websocket that never answers. The escalation's clock is fixed, so whether the
business is open does not depend on when the tests run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import ErrorFrame, LLMContextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.services.llm_service import LLMService
from pipecat.tests.utils import SleepFrame

from agent.faults import LOCAL_TIMEOUT_FLOOR_SECS
from agent.prompts import phrases
from agent.providers import build_llm, build_tts
from agent.session import CallSession
from agent.settings import Secret, Settings
from tests.conftest import AUTH_TOKEN, SUNDAY_MORNING, TZ, free_port, make_ctx
from tests.fakes.broken import BrokenVendor, build_broken_app
from tests.fakes.llm import Rule, ServerThread, build_app
from tests.fakes.llm import ScriptedLLM as OpenAIStandIn
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tests.frames import ScriptedLLM, caller_says_to_whisper, phone_call, tone_clips
from tools.errors import ToolError
from tools.registry import ToolRegistry, ToolResult, ToolSpec
from tools.store.db import Database

PROVIDER_TIMEOUT = 1.0
DB_BACKENDS = ("sqlite",)  # the store is exercised on both in test_tools, test_admin_api
CLIP_SECS = 0.3  # each pre-synthesized phrase, as a tone
#: The demo business is closed on Sundays and open on Monday mornings (tools/business.yaml).
CLOSED = SUNDAY_MORNING
OPEN = datetime(2026, 11, 23, 10, 0, tzinfo=TZ)

RULES = [
    Rule(r"park", tool="search_knowledge_base", arguments={"query": "parking"}),
    Rule(
        r"message",
        tool="take_message",
        arguments={"message": "Please call me back about my booking", "name": "Anna Lee"},
    ),
    Rule(r"hours|open", tool="get_business_info", arguments={"topic": "hours"}),
]


@pytest.fixture(scope="module")
def openai_standin() -> Iterator[tuple[OpenAIStandIn, str]]:
    script = OpenAIStandIn(rules=list(RULES))
    with ServerThread(build_app(script), free_port()) as server:
        yield script, f"{server.url}/v1"
        server.server.force_exit = True  # don't wait out a request the stand-in still hangs


@pytest.fixture
def openai(openai_standin: tuple[OpenAIStandIn, str]) -> Iterator[OpenAIStandIn]:
    """The stand-in, fresh for each test (a fault a test did not use up must not leak)."""
    script, _ = openai_standin
    script.requests.clear()
    yield script
    script.fail_next = script.hang_next = 0


@pytest.fixture(scope="module")
def twilio_standin() -> Iterator[tuple[FakeTwilio, str]]:
    twilio = FakeTwilio(account_sid="ACphone", auth_token=AUTH_TOKEN)
    with ServerThread(build_twilio_app(twilio), free_port()) as server:
        yield twilio, server.url


@pytest.fixture
def twilio(twilio_standin: tuple[FakeTwilio, str]) -> FakeTwilio:
    twilio_standin[0].requests.clear()
    return twilio_standin[0]


@pytest.fixture
def settings(
    openai_standin: tuple[OpenAIStandIn, str], twilio_standin: tuple[FakeTwilio, str]
) -> Settings:
    """A call that could be put through to a person: whether it is depends on the hours."""
    return Settings(
        openai_base_url=openai_standin[1],
        provider_timeout_secs=PROVIDER_TIMEOUT,
        caller_idle_secs=30,
        twilio_auth_token=Secret(AUTH_TOKEN),
        twilio_api_base_url=twilio_standin[1],
    )


def openai_llm(settings: Settings) -> LLMService:
    """pipecat's OpenAI service as a call builds it (the stand-in ignores the prompt)."""
    return build_llm(settings, None, "You are the receptionist of Bella Hair Studio.")


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def bot_says(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "bot"]


def assert_in_order(said: list[str], *names: str) -> None:
    """The phrases were said, first occurrences in this order, the last one last."""
    texts = [phrases()[n] for n in names]
    assert all(t in said for t in texts), said
    assert [said.index(t) for t in texts] == sorted(said.index(t) for t in texts), said
    assert said[-1] == texts[-1], said


def heard(session: CallSession, name: str) -> bool:
    """The phone played the phrase ``name`` (its mark came back)."""
    return phrases()[name] in session.ledger.heard_text()


class StallTimer(BaseObserver):
    """How long the LLM took from its first request to its first error (pipeline clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: int | None = None
        self.failed: int | None = None

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, LLMContextFrame) and isinstance(data.destination, LLMService):
            self.asked = self.asked or data.timestamp
        elif isinstance(data.frame, ErrorFrame) and isinstance(data.source, LLMService):
            self.failed = self.failed or data.timestamp

    @property
    def secs(self) -> float:
        assert self.asked is not None and self.failed is not None, "no request, or no error"
        return (self.failed - self.asked) / 1e9


# --- The LLM ------------------------------------------------------------------------------------


async def test_llm_error_apologises_and_the_retry_answers(
    db: Database, tmp_path: Path, openai: OpenAIStandIn, settings: Settings
) -> None:
    openai.fail_next = 1
    frames = caller_says_to_whisper("Is there parking nearby?")
    session, record, phone = await phone_call(
        db, tmp_path, openai_llm(settings), frames, settings=settings, now=at(CLOSED), linger=4.0
    )
    said = bot_says(record)
    assert phrases()["apology_wait"] in said
    apology = said.index(phrases()["apology_wait"])
    assert any("parking" in s.lower() for s in said[apology + 1 :]), said
    assert [c["name"] for c in record["tool_calls"]] == ["search_knowledge_base"]
    assert any(f.startswith("llm: ") and "500" in f for f in record["faults"]), record["faults"]
    assert "llm: apologised; retrying the request once" in record["faults"]
    assert phrases()["fault_offer"] not in said
    assert record["outcome"] == "caller_hung_up" and phone.hung_up  # the fault did not end it
    assert openai.fail_next == 0 and len(openai.requests) == 3  # failed, retried, after the tool
    assert heard(session, "apology_wait")  # played as audio, not only recorded
    assert all(ms > 0 for _, ms in phone.segments), phone.segments


async def test_llm_hang_times_out_apologises_and_retries(
    db: Database, tmp_path: Path, openai: OpenAIStandIn, settings: Settings
) -> None:
    openai.hang_next = 1
    stall = StallTimer()
    session, record, _ = await phone_call(
        db,
        tmp_path,
        openai_llm(settings),
        caller_says_to_whisper("What are your opening hours?"),
        settings=settings,
        now=at(CLOSED),
        linger=PROVIDER_TIMEOUT + 4.0,
        observers=[stall],
    )
    said = bot_says(record)
    assert phrases()["apology_wait"] in said
    assert "get_business_info" in [c["name"] for c in record["tool_calls"]]
    timeouts = [f for f in record["faults"] if f.startswith("llm: ") and "timed out" in f.lower()]
    assert timeouts, record["faults"]
    # The client gave up on the stalled response after the provider timeout, not at once.
    assert stall.secs >= PROVIDER_TIMEOUT, stall.secs
    assert heard(session, "apology_wait")


async def test_llm_failing_twice_offers_to_take_a_message_when_closed(
    db: Database, tmp_path: Path, openai: OpenAIStandIn, twilio: FakeTwilio, settings: Settings
) -> None:
    openai.fail_next = 2
    frames = [
        *caller_says_to_whisper("Is there parking nearby?"),
        SleepFrame(4.5),  # the apology and the offer play out
        *caller_says_to_whisper("Please take a message, ask someone to call me back."),
    ]
    session, record, _ = await phone_call(
        db, tmp_path, openai_llm(settings), frames, settings=settings, now=at(CLOSED), linger=4.0
    )
    said = bot_says(record)
    assert phrases()["apology_wait"] in said and phrases()["fault_offer"] in said
    assert said.index(phrases()["apology_wait"]) < said.index(phrases()["fault_offer"])
    assert "llm: failed again; offered a person or a message" in record["faults"]
    assert sum(f.startswith("llm: Error") for f in record["faults"]) == 2, record["faults"]
    assert heard(session, "fault_offer")
    # The conversation went on to the message (the offer is in the model's context).
    calls = record["tool_calls"]
    assert [c["name"] for c in calls] == ["take_message"] and calls[0]["ok"]
    asked = openai.requests[-2]["messages"]
    offered = [m for m in asked if m["role"] == "assistant" and m.get("content")]
    assert any("technical trouble" in m["content"] for m in offered), offered
    assert all(h["kind"] != "transfer" for h in record["handoffs"]) and not twilio.requests
    assert record["outcome"] == "caller_hung_up"  # the fault did not end the call


async def test_llm_failing_while_open_puts_the_caller_through_to_a_person(
    db: Database, tmp_path: Path, openai: OpenAIStandIn, twilio: FakeTwilio, settings: Settings
) -> None:
    """Open, with someone to take the call: the second failure starts a transfer at once (the
    model cannot be trusted to get the caller there), and the model is not asked again."""
    openai.fail_next = 10  # it stays down
    session, record, phone = await phone_call(
        db,
        tmp_path,
        openai_llm(settings),
        caller_says_to_whisper("Is there parking nearby?"),
        settings=settings,
        now=at(OPEN),
        linger=5.0,
    )
    said = bot_says(record)
    assert_in_order(said, "apology_wait", "transfer_connecting")
    assert phrases()["fault_offer"] not in said and phrases()["fault_goodbye"] not in said
    assert "llm: failed again; offered a person or a message" in record["faults"]
    assert len(openai.requests) == 2 and openai.fail_next == 8  # the request and its retry
    [handoff] = record["handoffs"]
    assert handoff["kind"] == "transfer" and handoff["trigger"] == "provider_failure"
    assert handoff["outcome"] == "dialing"
    [redirect] = twilio.updates("CA70686f6e650000000000000000000000")
    assert "<Number" in redirect.form["Twiml"] and "+14135550199" in redirect.form["Twiml"]
    assert heard(session, "transfer_connecting")  # the call moved once the sentence had played
    assert record["outcome"] == "transferred" and not phone.hung_up


async def test_llm_that_stays_down_ends_the_call_politely_when_closed(
    db: Database, tmp_path: Path, openai: OpenAIStandIn, twilio: FakeTwilio, settings: Settings
) -> None:
    openai.fail_next = 10
    frames = [
        *caller_says_to_whisper("Is there parking nearby?"),
        SleepFrame(4.5),
        *caller_says_to_whisper("Hello? Can you hear me?"),
    ]
    session, record, phone = await phone_call(
        db, tmp_path, openai_llm(settings), frames, settings=settings, now=at(CLOSED), linger=4.0
    )
    said = bot_says(record)
    assert_in_order(said, "apology_wait", "fault_offer", "fault_goodbye")
    assert record["outcome"] == "provider_fault" == session.outcome
    assert not phone.hung_up  # the agent ended the call
    assert heard(session, "fault_goodbye")  # and only once the goodbye had played
    assert "llm: still failing; ending the call politely" in record["faults"]
    assert not twilio.requests  # nobody to put the caller through to


# --- The TTS ------------------------------------------------------------------------------------


async def test_a_hung_cloud_tts_is_covered_by_clips(db: Database, tmp_path: Path) -> None:
    """ElevenLabs accepts the websocket and never answers: the caller hears the pre-synthesized
    apology, the offer and a goodbye instead of silence."""
    vendor = BrokenVendor(mode="hang")
    with ServerThread(build_broken_app(vendor), free_port()) as broken:
        settings = Settings(
            elevenlabs_api_key=Secret("el-test-key-123456"),
            elevenlabs_base_url=broken.url.replace("http", "ws", 1),
            provider_timeout_secs=PROVIDER_TIMEOUT,
            caller_idle_secs=30,
        )
        tts = build_tts(settings, models=None)  # type: ignore[arg-type]  # no local model needed
        llm = ScriptedLLM({"park": ("search_knowledge_base", {"query": "parking"})})
        frames = [
            SleepFrame(4.0),  # the greeting fails, is apologised for and retried
            *caller_says_to_whisper("Is there parking nearby?"),
        ]
        session, record, phone = await phone_call(
            db,
            tmp_path,
            llm,
            frames,
            settings=settings,
            tts=tts,
            clips=tone_clips(CLIP_SECS),
            now=at(CLOSED),
            linger=8.0,
        )
    assert vendor.connections >= 1 and vendor.received, "the TTS was asked to speak"
    said = bot_says(record)
    assert_in_order(said, "apology_wait", "fault_offer", "fault_goodbye")
    policy = ("tts: apologised", "tts: failed again", "tts: still failing")
    tts_faults = [f for f in record["faults"] if f.startswith("tts: ")]
    assert len([f for f in tts_faults if not f.startswith(policy)]) >= 3, record["faults"]
    assert f"tts: no audio within {PROVIDER_TIMEOUT:g}s" in tts_faults
    assert "tts: apologised; retrying the sentence once" in record["faults"]
    assert record["outcome"] == "provider_fault" and not phone.hung_up
    # Every clip was heard as audio (the TTS itself produced none).
    assert all(heard(session, n) for n in ("apology_wait", "fault_offer", "fault_goodbye"))
    audible = [ms for _, ms in phone.segments if ms > 0]
    assert audible == [CLIP_SECS * 1000] * 3, phone.segments


def test_local_models_never_time_out_quickly() -> None:
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


async def test_tool_exceptions_and_timeouts_are_spoken_errors(db: Database) -> None:
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

    late = await _registry_with("slow", slow, 0.3).invoke(ctx, "slow", {"x": "1"})
    assert not late.ok and late.error == "timeout" and late.payload["say"]

    refused = await _registry_with("refusing", refusing).invoke(ctx, "refusing", {"x": "1"})
    assert not refused.ok and refused.payload["say"] == "That day is fully booked."

    missing = await _registry_with("broken", broken).invoke(ctx, "broken", {})
    assert not missing.ok and missing.error == "missing_argument" and "?" in missing.payload["say"]
    unknown = await ToolRegistry([]).invoke(ctx, "format_disk", {})
    assert not unknown.ok and unknown.error == "unknown_tool"
    garbage = await _registry_with("broken", broken).invoke(ctx, "broken", "not json")
    assert not garbage.ok and garbage.payload["say"]
