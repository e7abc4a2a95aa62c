"""Personal data is deleted: transcripts and recordings past the retention period, and one
caller's data on request (the right to be forgotten), on both database backends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from loguru import logger

from agent.retention import expire_old_content, forget
from agent.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tools.store import customers, schema
from tools.store.calls import CallStore
from tools.store.db import Database, utc_now
from tools.store.handoffs import record_handoff

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CALLER = "+14135550123"
SOMEONE_ELSE = "+16175550188"


async def _call(
    db: Database, data_dir: Path, sid: str, started: datetime, phone: str = CALLER
) -> Path:
    """A finished call from ``phone`` with a turn, a tool call and a recording file."""
    store = CallStore(db)
    call_id = await store.start_call(call_sid=sid, from_number=phone)
    await store.add_turn(call_id, role="caller", text=f"my name is Ann ({sid})", timings={})
    await store.add_tool_call(
        call_id,
        name="save_customer",
        arguments={"name": "Ann"},
        result={"ok": True},
        ok=True,
        error="",
        duration_ms=1.0,
    )
    recording = data_dir / "recordings" / f"{sid}.wav"
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"RIFF....WAVE")
    await store.finish_call(call_id, outcome="completed", recording_path=str(recording))
    async with db.write() as conn:
        await conn.execute(
            schema.calls.update().where(schema.calls.c.id == call_id).values(started_at=started)
        )
    return recording


async def _content(db: Database, sid: str) -> tuple[int, int, str] | None:
    """(turns, tool calls, recording path) of call ``sid``; None when the call is gone."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(schema.calls.c.id, schema.calls.c.recording_path).where(
                    schema.calls.c.call_sid == sid
                )
            )
        ).first()
        if row is None:
            return None
        counts = [
            (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(t).where(t.c.call_id == row.id)
                )
            ).scalar_one()
            for t in (schema.turns, schema.tool_calls)
        ]
    return counts[0], counts[1], row.recording_path


async def test_old_transcripts_and_recordings_are_deleted_new_ones_kept(
    db: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, retention_days=90)
    old = await _call(db, tmp_path, "CA6f6c6400000000000000000000000000", NOW - timedelta(days=91))
    new = await _call(db, tmp_path, "CA6e657700000000000000000000000000", NOW - timedelta(days=89))
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        deleted = await expire_old_content(db, settings, NOW)
    finally:
        logger.remove(sink)

    assert deleted.counts == {"turns": 1, "tool_calls": 1, "recordings": 1}
    assert await _content(db, "CA6f6c6400000000000000000000000000") == (
        0,
        0,
        "",
    )  # the call row stays, without content
    assert not old.exists()
    assert await _content(db, "CA6e657700000000000000000000000000") == (1, 1, str(new))
    assert new.exists()
    assert any("retention: deleted" in line and "1 recordings" in line for line in lines)
    # A second pass (another worker, the next day) finds nothing left.
    assert (await expire_old_content(db, settings, NOW)).counts == {}


async def test_retention_zero_keeps_everything(db: Database, tmp_path: Path) -> None:
    recording = await _call(
        db, tmp_path, "CA6f6c6400000000000000000000000000", NOW - timedelta(days=3000)
    )
    settings = Settings(data_dir=tmp_path, retention_days=0)
    assert (await expire_old_content(db, settings, NOW)).counts == {}
    assert await _content(db, "CA6f6c6400000000000000000000000000") == (1, 1, str(recording))


async def test_a_recording_path_outside_the_recordings_folder_is_never_deleted(
    db: Database, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"keep me")
    await _call(db, tmp_path, "CA6f646400000000000000000000000000", NOW - timedelta(days=200))
    async with db.write() as conn:
        await conn.execute(schema.calls.update().values(recording_path=str(outside)))
    await expire_old_content(db, Settings(data_dir=tmp_path), NOW)
    assert outside.read_bytes() == b"keep me"


async def _customer_with_history(db: Database, phone: str, name: str, day: int = 3) -> int:
    async with db.write() as conn:
        customer = await customers.save_customer(conn, phone, name)
        await customers.add_note(
            conn, customer["id"], f"{name} likes tea", "CA78000000000000000000000000000000"
        )
        service = (await conn.execute(sa.select(schema.services.c.id).limit(1))).scalar_one()
        starts = NOW + timedelta(days=day)
        await conn.execute(
            schema.appointments.insert().values(
                customer_id=customer["id"],
                service_id=service,
                starts_at=starts,
                ends_at=starts + timedelta(minutes=30),
                created_at=utc_now(),
                updated_at=utc_now(),
            )
        )
    return int(customer["id"])


async def test_forgetting_a_caller_deletes_their_data_and_only_theirs(
    db: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    mine = await _customer_with_history(db, CALLER, "Ann Smith")
    other = await _customer_with_history(db, SOMEONE_ELSE, "Bob Jones", day=4)
    my_recording = await _call(db, tmp_path, "CA6d696e65000000000000000000000000", NOW)
    other_recording = await _call(
        db, tmp_path, "CA6f746865720000000000000000000000", NOW, phone=SOMEONE_ELSE
    )
    await record_handoff(
        db,
        call_sid="CA6d696e65000000000000000000000000",
        kind="message",
        reason="call me back",
        caller_number=CALLER,
    )
    await record_handoff(
        db,
        call_sid="CA6f746865720000000000000000000000",
        kind="message",
        reason="hi",
        caller_number=SOMEONE_ELSE,
    )

    deleted = await forget(db, settings, CALLER, "alice (password)")

    assert deleted.counts == {
        "appointments": 1,
        "calls": 1,
        "customer records": 1,
        "messages": 1,
        "notes": 1,
        "recordings": 1,
        "tool_calls": 1,
        "turns": 1,
    }
    assert (
        await _content(db, "CA6d696e65000000000000000000000000") is None
        and not my_recording.exists()
    )
    assert await _content(db, "CA6f746865720000000000000000000000") == (1, 1, str(other_recording))
    assert other_recording.exists()
    async with db.read() as conn:
        assert await customers.lookup_customer(conn, CALLER) is None
        kept = await customers.lookup_customer(conn, SOMEONE_ELSE)
        assert kept is not None and kept["id"] == other
        left = (await conn.execute(sa.select(schema.handoffs.c.caller_number))).scalars().all()
        assert left == [SOMEONE_ELSE]
        audit = (await conn.execute(sa.select(schema.audit_log))).mappings().all()
    entry = next(a for a in audit if a["entity"] == "caller data")
    assert entry["actor"] == "alice (password)" and entry["entity_id"] == str(mine)
    assert "0123" in entry["summary"] and CALLER not in str(dict(entry))


async def test_forgetting_an_unknown_number_is_audited_and_deletes_nothing(
    db: Database, tmp_path: Path
) -> None:
    await _customer_with_history(db, SOMEONE_ELSE, "Bob Jones")
    deleted = await forget(db, Settings(data_dir=tmp_path), CALLER, "api token")
    assert deleted.counts == {}
    async with db.read() as conn:
        audit = (await conn.execute(sa.select(schema.audit_log.c.summary))).scalars().all()
        assert await customers.lookup_customer(conn, SOMEONE_ELSE) is not None
    assert any("nothing" in summary for summary in audit)


async def test_the_admin_api_forgets_a_caller_and_refuses_a_bad_number(live_server) -> None:
    db = Database(live_server.db_url)
    try:
        await _customer_with_history(db, CALLER, "Ann Smith")
    finally:
        await db.close()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as api:
        bad = await api.post("/api/admin/forget", json={"phone": "12"})
        assert bad.status_code == 422 and "phone" in bad.text
        done = await api.post("/api/admin/forget", json={"phone": "(413) 555-0123"})
        assert done.status_code == 200
        assert done.json()["deleted"]["customer records"] == 1
        anonymous = await httpx.AsyncClient(base_url=live_server.url).post(
            "/api/admin/forget", json={"phone": CALLER}
        )
        assert anonymous.status_code == 401


def test_settings_read_recording_and_retention() -> None:
    settings = Settings.from_env({"FRONTDESK_RECORDING": "0", "FRONTDESK_RETENTION_DAYS": "30"})
    assert (settings.recording, settings.retention_days) == (False, 30)
    assert replace(settings, retention_days=0).retention_days == 0
    with pytest.raises(ValueError, match="FRONTDESK_RETENTION_DAYS"):
        Settings.from_env({"FRONTDESK_RETENTION_DAYS": "-1"})


@pytest.mark.parametrize("recording", [True, False])
async def test_recording_off_keeps_no_audio(db: Database, tmp_path: Path, recording: bool) -> None:
    from tests.frames import ScriptedLLM, caller_says, frame_call

    settings = Settings(data_dir=tmp_path, recording=recording)
    session, record = await frame_call(
        db,
        tmp_path,
        ScriptedLLM({}, "We open at nine."),
        caller_says("When are you open?"),
        settings=settings,
    )
    assert record["recording_path"].endswith(".wav") is recording
    assert any((tmp_path / "recordings").glob("*.wav")) is recording
    assert (len(session.recording.take_rest()) > 0) is False  # nothing left held in memory
