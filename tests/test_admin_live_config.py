"""Admin changes reach the next call without a restart; a call in progress keeps its config."""

from __future__ import annotations

import json
from pathlib import Path

from agent.pipeline import CallPipeline
from agent.prompts import build_system_prompt, load_text, without_tools
from agent.session import CallSession
from tests.conftest import SCRIPT_RULES, make_ctx
from tests.fakes.llm import Rule
from tests.fakes.llm import ScriptedLLM as ServerLLM
from tests.frames import CallWatch, ScriptedLLM, caller_says, frame_call
from tools.actions.business_info import get_business_info
from tools.admin.models import HoursIn, ToolsIn
from tools.admin.service import AdminService
from tools.store.business import load_business
from tools.store.db import Database


def test_prompt_lines_naming_a_disabled_tool_are_left_out():
    brain = load_text("brain.md")
    kept = without_tools(brain, ["take_message"])
    assert "take_message" not in kept
    assert "call transfer_to_human" in kept
    # Each worked example of the disabled tool goes together with its caller line ...
    examples = brain.count("\ncall take_message ")
    assert examples > 0
    assert brain.count("Caller:") - kept.count("Caller:") == examples
    # ... so every remaining caller line is still answered by the line after it.
    lines = kept.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("Caller:"):
            assert not lines[index + 1].startswith("Caller:"), line
    assert without_tools(brain, []) == brain


async def test_system_prompt_follows_the_enabled_tools(db):
    business = await load_business(db)
    full = build_system_prompt(business, None, True)
    assert "take_message" in full and "transfer_to_human" in full
    await AdminService(db).update_tools("test", ToolsIn(enabled={"take_message": False}))
    trimmed = build_system_prompt(await load_business(db), None, True)
    assert "take_message" not in trimmed and "leave a message" not in trimmed
    assert "transfer_to_human" in trimmed


async def test_tools_use_the_business_the_call_started_with(db):
    ctx = make_ctx(db)
    ctx.business = await load_business(db)  # what agent/call.py does at call start
    service = AdminService(db)
    monday = HoursIn.model_validate({"hours": {"monday": [{"opens": "11:00", "closes": "15:00"}]}})
    await service.set_hours("test", monday)
    during = await get_business_info(ctx, "hours")
    assert "Monday to Wednesday nine" in during.say  # the hours the call started with
    fresh = await get_business_info(make_ctx(db), "hours")
    assert "Monday eleven a m to three p m; closed Tuesday to Sunday" in fresh.say


async def test_a_change_applies_to_the_next_call_and_not_the_running_one(
    db: Database, tmp_path: Path
) -> None:
    """Frame-level calls (tests/frames.py) on one database; the change goes through the real
    AdminService, as the admin API's handlers do, between the running call's two questions."""
    hours = ("get_business_info", {"topic": "hours"})
    running = ScriptedLLM({"opening hours": hours, "saturday": hours}, after_tool="Sure.")
    watch = CallWatch()

    async def change_midway(session: CallSession, call: CallPipeline) -> None:
        await watch.send(caller_says("What are your opening hours?"))
        await watch.until(lambda: len(watch.bot_turns()) >= 2)  # answered
        service = AdminService(db)
        monday = {"hours": {"monday": [{"opens": "11:00", "closes": "16:00"}]}}
        await service.set_hours("test", HoursIn.model_validate(monday))
        await service.update_tools("test", ToolsIn(enabled={"take_message": False}))
        await watch.send(caller_says("And are you open Saturday?"))

    _session, record = await frame_call(
        db,
        tmp_path,
        running,
        [],
        during=change_midway,
        watch=watch,
        call_sid="CA72756e6e696e67000000000000000000",
    )
    answers = [c["result"]["say"] for c in record["tool_calls"] if c["name"] == "get_business_info"]
    assert len(answers) == 2, record["tool_calls"]
    # The running call kept its config: the old hours twice, take_message offered throughout.
    assert all("nine" in a and "Saturday" in a for a in answers), answers
    assert len(running.tools) >= 3 and all("take_message" in t for t in running.tools)

    # The next call sees the change, without a restart.
    following = ScriptedLLM({"opening hours": hours}, after_tool="Sure.")
    frames = caller_says("What are your opening hours?")
    _session, record = await frame_call(
        db, tmp_path, following, frames, call_sid="CA6e657874000000000000000000000000"
    )
    said = [c["result"]["say"] for c in record["tool_calls"]]
    assert said and "Monday eleven a m to four p m; closed Tuesday to Sunday" in said[0]
    assert following.tools and not any("take_message" in t for t in following.tools)
    assert "transfer_to_human" in following.tools[0]


def test_the_script_still_answers_hours() -> None:
    # Guard for the whole calls on tests/conftest.py's scripted LLM: asking about opening days
    # reaches get_business_info (no server needed to ask the script).
    script = ServerLLM(rules=list(SCRIPT_RULES))
    rule = script.decide([{"role": "user", "content": "And are you open Saturday?"}])
    assert isinstance(rule, Rule) and rule.tool == "get_business_info"
    assert json.dumps(rule.arguments) == '{"topic": "hours"}'
