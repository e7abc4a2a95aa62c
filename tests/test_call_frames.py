"""Whole calls at frame level: the real session, processors and tools in the real pipeline
assembly, with scripted providers and no transport, driven by pipecat's ``run_test``.

Each test runs in a second or two what tests/test_call_integration.py checks over a websocket
in real time; see agent/pipeline.py for the seam.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipecat.tests.utils import SleepFrame

from agent.pipeline import CallPipeline
from agent.prompts import phrases
from agent.session import CallSession, Outcome
from agent.settings import Settings
from tests.frames import ScriptedLLM, caller_says, frame_call
from tools.store.db import Database


def turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["text"]) for t in record["turns"]]


async def test_a_tool_call_is_run_and_recorded(db: Database, tmp_path: Path) -> None:
    llm = ScriptedLLM({"open": ("get_business_info", {"topic": "hours"})}, "We open at nine.")
    frames = [*caller_says("When are you open?"), SleepFrame(1.0)]
    session, record = await frame_call(db, tmp_path, llm, frames)
    [tool] = record["tool_calls"]
    assert tool["name"] == "get_business_info" and tool["ok"], tool
    assert tool["arguments"] == {"topic": "hours"}
    assert ("caller", "When are you open?") in turns(record)
    assert tool["result"]["say"].startswith("Our hours are")
    assert record["outcome"] == Outcome.COMPLETED == session.outcome


async def test_silence_gets_prompts_then_a_goodbye(db: Database, tmp_path: Path) -> None:
    settings = Settings(caller_idle_secs=0.4, caller_idle_prompts=2)
    session, record = await frame_call(db, tmp_path, ScriptedLLM({}), [], settings=settings)
    prompt, goodbye = phrases()["still_there"], phrases()["idle_goodbye"]
    fixed = [text for role, text in turns(record) if role == "bot" and text in (prompt, goodbye)]
    assert fixed == [prompt, prompt, goodbye]
    assert record["outcome"] == "caller_silent" and session.outcome is Outcome.CALLER_SILENT


async def test_barge_in_records_what_the_caller_heard(db: Database, tmp_path: Path) -> None:
    reply = "We offer haircuts. We also offer beard trims and colour."
    llm = ScriptedLLM({"offer": reply})

    async def cut_in(session: CallSession, call: CallPipeline) -> None:
        await asyncio.sleep(1.2)  # greeting played and acknowledged, the reply on its way
        for name in ("seg-1", "seg-2"):  # the greeting and the reply's first sentence...
            session.on_mark(name)
        await call.interrupt()  # ...then the caller talks over the rest
        session.on_clear()  # what the serializer does on the InterruptionFrame

    frames = [*caller_says("What do you offer?"), SleepFrame(1.5)]
    session, record = await frame_call(db, tmp_path, llm, frames, during=cut_in)
    bot = [t for t in record["turns"] if t["role"] == "bot"]
    assert bot[-1]["interrupted"], bot
    assert bot[-1]["text"] != reply
    assert session.clears == 1
