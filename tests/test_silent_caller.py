"""A caller who says nothing is prompted, then politely hung up on.

At frame level (tests/frames.py): the real session, pipeline assembly and turn aggregators, with
a short idle setting; the phone plays what it is sent and stays on the line until the agent
hangs up (or gives up after a while, which fails the test).
"""

from __future__ import annotations

from pathlib import Path

from agent.prompts import phrases
from agent.session import Outcome
from agent.settings import Settings
from tests.frames import ScriptedLLM, phone_call
from tools.store.db import Database

DB_BACKENDS = ("sqlite",)  # the store is exercised on both in test_tools, test_admin_api


async def test_silence_gets_a_prompt_then_a_goodbye(db: Database, tmp_path: Path) -> None:
    settings = Settings(caller_idle_secs=0.4, caller_idle_prompts=2)
    session, record, phone = await phone_call(
        db, tmp_path, ScriptedLLM({}), [], settings=settings, linger=10.0
    )
    assert not phone.hung_up, "the agent should hang up on a silent caller"
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    prompt, goodbye = phrases()["still_there"], phrases()["idle_goodbye"]
    assert [text for text in said if text in (prompt, goodbye)] == [prompt, prompt, goodbye]
    assert said[-1].endswith(goodbye), said  # the last words
    assert phrases()["idle_goodbye"] in session.ledger.heard_text()  # played: its mark came back
    assert not any(t["role"] == "caller" for t in record["turns"])
    assert record["outcome"] == "caller_silent" and session.outcome is Outcome.CALLER_SILENT
