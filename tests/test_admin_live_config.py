"""Admin changes reach the next call without a restart; a call in progress keeps its config."""

from __future__ import annotations

import asyncio
import json

import httpx

from agent.prompts import build_system_prompt, load_text, without_tools
from telephony.replay import replay
from tests.caller_audio import RATE, call_audio
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, make_ctx
from tests.fakes.llm import Rule
from tools.actions.business_info import get_business_info
from tools.admin.models import HoursIn, ToolsIn
from tools.admin.service import AdminService
from tools.store.business import load_business

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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


def tools_sent(requests: list[dict]) -> set[str]:
    names: set[str] = set()
    for request in requests:
        names |= {t["function"]["name"] for t in request.get("tools") or []}
    return names


async def test_a_change_applies_to_the_next_call_and_not_the_running_one(live_server):
    script = live_server.script
    before = len(script.requests)
    call = asyncio.create_task(
        replay(
            call_audio(3.5, "What are your opening hours?", 8.0, "And are you open Saturday?", 7.0),
            RATE,
            live_server.url,
            auth_token=AUTH_TOKEN,
            admin_token=ADMIN_TOKEN,
        )
    )
    # Once the running call has asked the LLM once, change the hours and switch a tool off.
    async with httpx.AsyncClient(base_url=live_server.url, headers=BEARER, timeout=30) as api:
        for _ in range(600):
            if len(script.requests) > before or call.done():
                break
            await asyncio.sleep(0.1)
        assert len(script.requests) > before, "the call never reached the LLM"
        hours = await api.put(
            "/api/admin/hours",
            json={"hours": {"monday": [{"opens": "11:00", "closes": "16:00"}]}},
        )
        tools = await api.put("/api/admin/tools", json={"enabled": {"take_message": False}})
        assert hours.status_code == 200 and tools.status_code == 200
        report, _ = await call
        during = script.requests[before:]
        record = report.call_record
        answers = [
            c["result"]["say"] for c in record["tool_calls"] if c["name"] == "get_business_info"
        ]
        assert len(answers) == 2, record["tool_calls"]
        # The running call kept its config: the old hours twice, take_message offered throughout.
        assert all("nine" in a and "Saturday" in a for a in answers), answers
        assert len(during) >= 3 and all("take_message" in tools_sent([r]) for r in during)

        # The next call sees the change, without a restart.
        before = len(script.requests)
        report, _ = await replay(
            call_audio(3.5, "What are your opening hours?", 8.0),
            RATE,
            live_server.url,
            auth_token=AUTH_TOKEN,
            admin_token=ADMIN_TOKEN,
        )
        after = script.requests[before:]
        said = [c["result"]["say"] for c in report.call_record["tool_calls"]]
        assert said and "Monday eleven a m to four p m; closed Tuesday to Sunday" in said[0]
        assert after and "take_message" not in tools_sent(after)
        system = next(m["content"] for m in after[0]["messages"] if m["role"] == "system")
        assert "take_message" not in system
        await api.put("/api/admin/tools", json={"enabled": {"take_message": True}})


def test_the_script_still_answers_hours(live_server):
    # Guard for the test above: its caller words must reach get_business_info.
    rule = live_server.script.decide([{"role": "user", "content": "And are you open Saturday?"}])
    assert isinstance(rule, Rule) and rule.tool == "get_business_info"
    assert json.dumps(rule.arguments) == '{"topic": "hours"}'
