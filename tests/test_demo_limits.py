"""The browser demo's own limits, at the level of a call: its time limit (with its own
goodbye, and the phone's limit left alone) and its caller, who is always an unknown caller.

Frame-level calls (tests/frames.py) with the real session, pipeline assembly and tools; the
same limit reached by the real transport in real time, with the page showing it, is in
tests/test_browser_demo.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent.escalation import Escalation, HandoffDesk
from agent.pipeline import CallPipeline
from agent.prompts import phrases
from agent.session import CallInfo, CallSession, Outcome, spoken_limit
from agent.settings import Settings
from tests.conftest import make_ctx
from tests.frames import ScriptedLLM, frame_call
from tools.actions.calendar import book_appointment
from tools.actions.crm import save_customer
from tools.store import schema
from tools.store.calls import CallStore
from tools.store.db import Database

OMAR = "+14135550177"  # a customer on file; the browser "caller" claims his number
SIDS = {"browser": "BR" + "0b" * 16, "twilio": "CA" + "0c" * 16}


def session_for(db: Database, source: str, settings: Settings) -> CallSession:
    return CallSession(
        CallInfo(call_sid=SIDS[source], source=source, from_number=OMAR),
        settings=settings,
        db=db,
        store=CallStore(db),
        escalation=lambda s: Escalation(s, HandoffDesk(db, settings)),
    )


def test_the_limit_is_said_in_words() -> None:
    assert spoken_limit(300) == "five-minute"
    assert spoken_limit(90) == "ninety-second"
    assert spoken_limit(3600) == "sixty-minute"


async def test_demo_and_phone_calls_each_keep_their_own_limit(db: Database) -> None:
    settings = replace(Settings(), max_call_secs=1800, demo_max_call_secs=120)
    demo, phone = session_for(db, "browser", settings), session_for(db, "twilio", settings)
    assert (demo.max_call_secs, phone.max_call_secs) == (120, 1800)
    assert demo.time_limit_goodbye() == (
        "This demo call has reached its two-minute limit. Thanks for trying Frontdesk!"
    )
    assert phone.time_limit_goodbye() == phrases()["max_duration"]
    # The default limit says exactly the documented words.
    assert session_for(db, "browser", Settings()).time_limit_goodbye() == (
        "This demo call has reached its five-minute limit. Thanks for trying Frontdesk!"
    )


async def test_a_demo_call_at_its_limit_says_goodbye_and_records_why(
    db: Database, tmp_path: Path
) -> None:
    async def time_is_up(session: CallSession, call: CallPipeline) -> None:
        await asyncio.sleep(0.3)  # the greeting has played; the caller is still there
        await call.timed_out()  # what the transport's session timeout calls

    goodbye = "This demo call has reached its five-minute limit. Thanks for trying Frontdesk!"
    session, record = await frame_call(
        db, tmp_path, ScriptedLLM({}), [], source="browser", during=time_is_up
    )
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert said[-1] == goodbye
    assert goodbye in session.ledger.heard_text()  # played to the end: its mark came back
    assert record["outcome"] == "max_duration" and record["source"] == "browser"
    assert session.outcome is Outcome.MAX_DURATION


async def omar_on_file(db: Database) -> None:
    omar = make_ctx(db, phone=OMAR, call_sid="CA26ba576414c9feee1cdfc508bea7a1ce")
    await book_appointment(omar, "beard trim", "Friday at 10am", customer_name="Omar H")
    await save_customer(omar, email="omar at example dot com")


async def test_a_browser_caller_is_always_an_unknown_caller(db: Database, tmp_path: Path) -> None:
    """Even with Omar's number and a verified caller ID on the call's info, and a business that
    trusts unverified caller ID, a browser call's tools hear nothing of his record."""
    await omar_on_file(db)
    async with db.write() as conn:
        await conn.execute(schema.business.update().values(trust_unverified_caller_id=True))
    asked: dict[str, Any] = {}

    async def ask_about_the_record(session: CallSession, _call: CallPipeline) -> None:
        for tool in ("find_customer", "list_my_appointments"):
            asked[tool] = (await session.run_tool(tool, {})).payload
        asked["by number"] = (await session.run_tool("find_customer", {"phone": OMAR})).payload
        # A number "proved" some other way is still not this caller's.
        tools = session._tools
        assert tools is not None
        tools.verified_phone = OMAR
        asked["proven"] = await tools.proven_phone()

    llm = ScriptedLLM({}, "Happy to help.")
    _session, record = await frame_call(
        db,
        tmp_path,
        llm,
        [],
        source="browser",
        from_number=OMAR,
        caller_verstat="TN-Validation-Passed-A",
        during=ask_about_the_record,
    )
    assert asked["proven"] == ""
    for payload in (asked["find_customer"], asked["list_my_appointments"], asked["by number"]):
        assert not payload["ok"] and payload["error"] in ("need_phone", "not_verified")
        shown = str(payload)
        assert "Omar" not in shown and "omar@" not in shown and "beard" not in shown.lower()
    assert "Omar" not in record["turns"][0]["text"]  # greeted as a stranger
    assert record["customer_id"] is None and record["from_number"] == OMAR
    prompt = str(llm.requests[0][0]["content"]) if llm.requests else ""
    assert "Omar" not in prompt
    async with db.read() as conn:
        omar = (
            await conn.execute(sa.select(schema.customers).where(schema.customers.c.phone == OMAR))
        ).one()
    assert omar.name == "Omar H"  # nothing changed


async def test_the_same_caller_on_the_phone_is_known(db: Database, tmp_path: Path) -> None:
    """The control for the test above: the same call through Twilio goes by the caller ID."""
    await omar_on_file(db)
    found: dict[str, Any] = {}

    async def ask(session: CallSession, _call: CallPipeline) -> None:
        found.update((await session.run_tool("find_customer", {})).payload)

    _session, record = await frame_call(
        db, tmp_path, ScriptedLLM({}), [], from_number=OMAR, during=ask
    )
    assert found["ok"] and found["name"] == "Omar H"
    assert record["turns"][0]["text"].startswith("Hi Omar")
