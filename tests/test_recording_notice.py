"""The recording notice: callers hear it in the greeting whenever calls are recorded; the admin
may reword it but not remove it while recording is on.

Calls are frame-level (tests/frames.py: the real session, pipeline assembly and prompts); the
admin's changes go through the real admin API (FastAPI, in process) or its service, on both
database backends.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from agent.app import create_app
from agent.prompts import with_notice
from agent.settings import Settings
from tests.conftest import ADMIN_TOKEN, BUSINESS_YAML, free_port, server_env
from tests.frames import Handset, ScriptedLLM, caller_says, frame_call
from tools.admin.models import PromptsIn
from tools.admin.service import AdminService
from tools.domain.business import ConfigError, read_config
from tools.store import schema
from tools.store.business import load_business, seed_business
from tools.store.db import Database

DEFAULT_NOTICE = "This call may be recorded for quality and training."
#: The start of tools/business.yaml's greeting, before its closing question.
WELCOME = "Thanks for calling Bella Hair Studio, this is the virtual receptionist."
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def first_words(db: Database, tmp_path: Path, *, recording: bool) -> tuple[str, str]:
    """The first bot turn of a call, as recorded, and everything the caller heard played (the
    text of each mark the phone acknowledged)."""
    settings = replace(Settings(), recording=recording)
    phone = Handset()
    _session, record = await frame_call(
        db,
        tmp_path,
        ScriptedLLM({}, "Sure."),
        caller_says("Hello?"),
        settings=settings,
        handset=phone,
    )
    first = record["turns"][0]
    assert first["role"] == "bot"
    marks = [m for m in phone.wire if m["event"] == "mark"]
    played = [m["text"] for m in marks if m["mark"]["name"] in phone.acked]
    return first["text"], " ".join(played)


async def test_the_greeting_tells_callers_the_call_is_recorded(
    db: Database, tmp_path: Path
) -> None:
    said, heard = await first_words(db, tmp_path, recording=True)
    assert said == (f"{WELCOME} {DEFAULT_NOTICE} How can I help you today?")
    assert DEFAULT_NOTICE in heard  # played to the caller, not only written down


async def test_no_notice_when_nothing_is_recorded(db: Database, tmp_path: Path) -> None:
    said, heard = await first_words(db, tmp_path, recording=False)
    assert said == f"{WELCOME} How can I help you today?"
    assert "record" not in said.lower() and "record" not in heard.lower()


async def test_an_admin_rewording_is_heard_on_the_next_call(db: Database, tmp_path: Path) -> None:
    service = AdminService(db, recording=True)
    changes = await service.update_prompts(
        "owner",
        PromptsIn(
            greeting="Hello from {business_name}!",
            persona="",
            recording_notice="  Heads up: {business_name} records calls   to train our team. ",
        ),
    )
    assert changes["recording_notice"] == [
        "",
        "Heads up: {business_name} records calls to train our team.",
    ]
    said, heard = await first_words(db, tmp_path, recording=True)
    assert said == (
        "Hello from Bella Hair Studio! Heads up: Bella Hair Studio records calls to train our team."
    )
    assert "records calls to train our team" in heard
    async with db.read() as conn:
        audit = (
            await conn.execute(
                sa.select(schema.audit_log).where(schema.audit_log.c.entity == "prompts")
            )
        ).one()
    assert audit.actor == "owner" and "recording_notice" in audit.changes
    # A change of the greeting alone (an older script) leaves the notice as it is.
    await service.update_prompts("owner", PromptsIn.model_validate({"greeting": "Hi!"}))
    assert (await load_business(db)).recording_notice.startswith("Heads up")


def test_the_notice_goes_before_the_greetings_closing_question() -> None:
    notice = "Calls are recorded."
    assert with_notice("Thanks for calling. How can I help?", notice) == (
        "Thanks for calling. Calls are recorded. How can I help?"
    )
    assert with_notice("Hi, how can I help?", notice) == "Hi, how can I help? Calls are recorded."
    assert with_notice("Welcome to Bella!", notice) == "Welcome to Bella! Calls are recorded."


@pytest.fixture
async def admin_api(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A function making an admin API client for an app with ``FRONTDESK_RECORDING``."""
    clients: list[tuple[httpx.AsyncClient, Any]] = []

    async def make(recording: str) -> tuple[httpx.AsyncClient, Database]:
        data = tmp_path / f"recording-{recording}"
        settings = Settings.from_env(server_env(data, free_port(), FRONTDESK_RECORDING=recording))
        app = create_app(settings)
        state = app.state.frontdesk
        await state.db.migrate()
        await seed_business(state.db, BUSINESS_YAML)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fd.test", headers=AUTH
        )
        clients.append((client, state.db))
        return client, state.db

    yield make
    for client, db in clients:
        await client.aclose()
        await db.close()


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        ("", "calls are recorded (FRONTDESK_RECORDING), so callers must be told"),
        ("   ", "calls are recorded (FRONTDESK_RECORDING), so callers must be told"),
        ("Thanks for calling, we value you.", "must still tell callers the call is recorded"),
        ("This call may be {monitored}.", "unknown placeholder {monitored}"),
    ],
)
async def test_the_notice_cannot_be_removed_while_recording(
    admin_api: Any, notice: str, expected: str
) -> None:
    client, db = await admin_api("1")
    config = (await client.get("/api/admin/config")).json()["prompts"]
    assert config["recording"] is True and config["recording_notice_default"] == DEFAULT_NOTICE
    answer = await client.put(
        "/api/admin/prompts", json={"greeting": "", "persona": "", "recording_notice": notice}
    )
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert list(errors) == ["recording_notice"] and expected in errors["recording_notice"]
    assert (await load_business(db)).recording_notice == ""  # nothing saved
    async with db.read() as conn:
        assert not (await conn.execute(sa.select(schema.audit_log))).all()


async def test_a_reworded_notice_is_saved_and_previewed(admin_api: Any) -> None:
    client, db = await admin_api("1")
    notice = "We're RECORDING this call so we can get better."
    body = {"greeting": "", "persona": "", "recording_notice": notice}
    preview = await client.post("/api/admin/prompts/preview", json=body)
    assert preview.status_code == 200
    assert preview.json()["greeting"] == (
        f"Thanks for calling Bella Hair Studio. {notice} How can I help you today?"  # default
    )
    saved = await client.put("/api/admin/prompts", json=body)
    assert saved.status_code == 200, saved.text
    assert (await load_business(db)).recording_notice == notice
    config = (await client.get("/api/admin/config")).json()["prompts"]
    assert config["recording_notice"] == notice


async def test_without_recording_a_blank_notice_is_the_default(admin_api: Any) -> None:
    client, db = await admin_api("0")
    body = {"greeting": "", "persona": "", "recording_notice": "Calls are recorded."}
    assert (await client.put("/api/admin/prompts", json=body)).status_code == 200
    body["recording_notice"] = ""
    assert (await client.put("/api/admin/prompts", json=body)).status_code == 200
    assert (await load_business(db)).recording_notice == ""
    preview = (await client.post("/api/admin/prompts/preview", json=body)).json()
    assert "record" not in preview["greeting"].lower()
    config = (await client.get("/api/admin/config")).json()["prompts"]
    assert config["recording"] is False


async def test_the_business_yaml_may_carry_the_notice(tmp_path: Path) -> None:
    config = tmp_path / "business.yaml"
    config.write_text(
        BUSINESS_YAML.read_text() + '\nrecording_notice: "Calls here are recorded."\n'
    )
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'seeded.db'}")
    try:
        await db.migrate()
        await seed_business(db, config)
        assert (await load_business(db)).recording_notice == "Calls here are recorded."
    finally:
        await db.close()


def test_a_seeded_notice_must_say_the_call_is_recorded(tmp_path: Path) -> None:
    config = tmp_path / "business.yaml"
    for line, problem in [
        ('recording_notice: "Thanks for calling."', "must tell callers the call is recorded"),
        ("recording_notice: [recorded]", "must be a sentence"),
    ]:
        config.write_text(BUSINESS_YAML.read_text() + f"\n{line}\n")
        with pytest.raises(ConfigError, match=problem):
            read_config(config)
