"""The outbound API and the console's outbound settings, on the real app (its lifespan entered
in the test's loop, requests through httpx's ASGI transport; no models are needed for these):
auth, validation with clear messages, do-not-call refused with 409, listing, cancelling, "call
back now", the business profile's outbound fields (validated, audited), and the scheduler the
lifespan starts creating a reminder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app import create_app
from agent.providers import LocalModels
from agent.settings import Settings
from tests.conftest import ADMIN_TOKEN, server_env
from tests.outbound_helpers import add_appointment, add_customer
from tools.store.db import Database
from tools.store.handoffs import record_handoff

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROFILE = {"name": "Bella Hair Studio", "timezone": "America/New_York"}


@dataclass
class Running:
    api: httpx.AsyncClient
    db: Database
    base: str


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings.from_env(
        server_env(
            tmp_path,
            0,
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # a remote LLM: nothing local to load
            FRONTDESK_OUTBOUND_POLL_SECS="0.1",
        )
    )
    application = create_app(settings, models=LocalModels())
    async with application.router.lifespan_context(application):
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'frontdesk.db'}")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://frontdesk.test",
            headers=BEARER,
            timeout=30,
        ) as api:
            yield Running(api, db, "http://frontdesk.test")
        await db.close()


def later(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/outbound"),
        ("GET", "/api/outbound"),
        ("POST", "/api/outbound/1/cancel"),
        ("POST", "/api/admin/callbacks/1/call"),
    ],
)
async def test_outbound_endpoints_need_the_admin_token(
    app: Running, method: str, path: str
) -> None:
    body = {"to": "+14135550111", "purpose": "custom", "message": "hi"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with httpx.AsyncClient(
            transport=app.api._transport, base_url=app.base, headers=headers
        ) as anonymous:
            response = await anonymous.request(method, path, json=body)
        assert response.status_code == 401, response.text
    assert (await app.api.get("/api/outbound")).json() == {"calls": []}  # nothing was created


async def test_schedule_list_and_cancel(app: Running) -> None:
    created = await app.api.post(
        "/api/outbound",
        json={
            "to": "(413) 555-0111",
            "purpose": "custom",
            "message": "Your order is ready",
            "at": later(2),
        },
    )
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["to"], job["purpose"], job["status"], job["message"]) == (
        "+14135550111",
        "custom",
        "scheduled",
        "Your order is ready",
    )
    listed = (await app.api.get("/api/outbound?status=scheduled")).json()["calls"]
    assert [c["id"] for c in listed] == [job["id"]]
    assert (await app.api.get("/api/outbound?status=finished")).json()["calls"] == []

    cancelled = await app.api.post(f"/api/outbound/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await app.api.post(f"/api/outbound/{job['id']}/cancel")
    assert again.status_code == 409 and "only a scheduled one" in again.json()["detail"]
    assert (await app.api.post("/api/outbound/999/cancel")).status_code == 404
    finished = (await app.api.get("/api/outbound?status=finished")).json()["calls"]
    assert [c["status"] for c in finished] == ["cancelled"]
    audit = (await app.api.get("/api/admin/audit")).json()["entries"]
    assert [(e["action"], e["entity"]) for e in audit[:2]] == [
        ("cancel", "outbound_call"),
        ("create", "outbound_call"),
    ]
    assert "5550111" not in str(audit[:2])  # numbers are masked in the log


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"to": "555", "purpose": "custom", "message": "x"}, "to", "not a valid phone number"),
        ({"to": "+14135550111", "purpose": "custom"}, "message", "say what the call is for"),
        ({"to": "+14135550111", "purpose": "callback"}, "message", "the caller's reason"),
        ({"to": "+14135550111", "purpose": "reminder"}, "appointment_id", "needs the appointment"),
        (
            {"to": "+14135550111", "purpose": "reminder", "appointment_id": 999},
            "appointment_id",
            "no appointment 999",
        ),
        (
            {"to": "+14135550111", "purpose": "custom", "message": "x", "appointment_id": 1},
            "appointment_id",
            "only a reminder",
        ),
        (
            {"to": "+14135550111", "purpose": "custom", "message": "x", "at": "2026-12-04T09:00"},
            "at",
            "UTC offset",
        ),
        ({"to": "+14135550111", "purpose": "sales", "message": "x"}, "purpose", "reminder"),
    ],
)
async def test_bad_requests_are_refused_with_the_field_named(
    app: Running, body: dict[str, Any], field: str, message: str
) -> None:
    response = await app.api.post("/api/outbound", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert field in errors and message in errors[field], errors
    assert (await app.api.get("/api/outbound")).json() == {"calls": []}


async def test_a_reminder_for_a_booked_appointment(app: Running) -> None:
    customer = await add_customer(app.db, "+14135550111")
    starts = datetime.now(UTC) + timedelta(days=3)
    appointment = await add_appointment(app.db, customer, starts)
    cancelled = await add_appointment(
        app.db, customer, starts + timedelta(hours=2), status="cancelled"
    )
    refused = await app.api.post(
        "/api/outbound",
        json={"to": "+14135550111", "purpose": "reminder", "appointment_id": cancelled},
    )
    assert refused.status_code == 422
    assert "is cancelled, not booked" in refused.json()["errors"]["appointment_id"]
    created = await app.api.post(
        "/api/outbound",
        json={"to": "+14135550111", "purpose": "reminder", "appointment_id": appointment},
    )
    assert created.status_code == 201, created.text
    assert (created.json()["appointment_id"], created.json()["customer_id"]) == (
        appointment,
        customer,
    )


async def test_do_not_call_is_refused_with_409(app: Running) -> None:
    await add_customer(app.db, "+14135550111", do_not_call=True)
    response = await app.api.post(
        "/api/outbound", json={"to": "+1 413 555 0111", "purpose": "custom", "message": "hi"}
    )
    assert response.status_code == 409
    assert "asked not to be called" in response.json()["detail"]
    assert "5550111" not in response.json()["detail"]
    assert (await app.api.get("/api/outbound")).json() == {"calls": []}


async def test_call_back_now_for_a_message(app: Running) -> None:
    handoff = await record_handoff(
        app.db,
        call_sid="",
        kind="message",
        reason="asks about a wedding package",
        caller_number="+14135550111",
        outcome="message_taken",
    )
    response = await app.api.post(f"/api/admin/callbacks/{handoff}/call")
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["purpose"], job["handoff_id"], job["message"], job["status"]) == (
        "callback",
        handoff,
        "asks about a wedding package",
        "scheduled",
    )
    assert datetime.fromisoformat(job["due_at"]) <= datetime.now(UTC)
    assert (await app.api.post("/api/admin/callbacks/999/call")).status_code == 404


async def test_outbound_settings_in_the_profile(app: Running) -> None:
    config = (await app.api.get("/api/admin/config")).json()["profile"]
    assert (config["reminders_enabled"], config["calling_hours_start"]) == (False, "09:00")
    saved = await app.api.put(
        "/api/admin/profile",
        json={
            **PROFILE,
            "reminders_enabled": True,
            "reminder_lead_hours": 48,
            "calling_hours_start": "8:30",
            "calling_hours_end": "19:00",
            "auto_callbacks": True,
            "outbound_max_attempts": 4,
        },
    )
    assert saved.status_code == 200, saved.text
    config = (await app.api.get("/api/admin/config")).json()["profile"]
    assert {k: config[k] for k in ("reminder_lead_hours", "calling_hours_start")} == {
        "reminder_lead_hours": 48,
        "calling_hours_start": "08:30",
    }
    assert config["reminders_enabled"] and config["auto_callbacks"]
    audit = (await app.api.get("/api/admin/audit")).json()["entries"][0]
    assert audit["entity"] == "profile" and "reminder_lead_hours" in audit["changes"]
    # A client that does not send them (an older page, a script) leaves them as they are.
    assert (await app.api.put("/api/admin/profile", json=PROFILE)).status_code == 200
    config = (await app.api.get("/api/admin/config")).json()["profile"]
    assert config["reminders_enabled"] and config["outbound_max_attempts"] == 4


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"reminder_lead_hours": 0}, "reminder_lead_hours", "from 1 to 168"),
        ({"reminder_lead_hours": 169}, "reminder_lead_hours", "from 1 to 168"),
        ({"outbound_max_attempts": 11}, "outbound_max_attempts", "from 1 to 10"),
        (
            {"calling_hours_start": "9am", "calling_hours_end": "17:00"},
            "calling_hours_start",
            "HH:MM",
        ),
        (
            {"calling_hours_start": "18:00", "calling_hours_end": "09:00"},
            "calling_hours_end",
            "after the start",
        ),
        ({"calling_hours_start": "08:00"}, "calling_hours_end", "together"),
    ],
)
async def test_bad_outbound_settings_are_named(
    app: Running, fields: dict[str, Any], field: str, message: str
) -> None:
    response = await app.api.put("/api/admin/profile", json={**PROFILE, **fields})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert field in errors and message in errors[field], errors
    config = (await app.api.get("/api/admin/config")).json()["profile"]
    assert (config["reminder_lead_hours"], config["calling_hours_end"]) == (24, "20:00")


async def test_the_app_runs_the_scheduler(app: Running) -> None:
    """The lifespan starts the scheduler: with reminders on, a reminder for an appointment in
    three hours appears on its own (placed or not, depending on the hour: no dialer here)."""
    customer = await add_customer(app.db, "+14135550111")
    appointment = await add_appointment(app.db, customer, datetime.now(UTC) + timedelta(hours=3))
    assert (
        await app.api.put("/api/admin/profile", json={**PROFILE, "reminders_enabled": True})
    ).status_code == 200
    for _ in range(100):
        calls = (await app.api.get("/api/outbound")).json()["calls"]
        if calls:
            break
        await asyncio.sleep(0.05)
    assert [(c["purpose"], c["appointment_id"], c["status"]) for c in calls] == [
        ("reminder", appointment, "scheduled")
    ]


async def test_a_console_session_needs_its_csrf_token(app: Running) -> None:
    async with httpx.AsyncClient(transport=app.api._transport, base_url=app.base) as page:
        signed_in = await page.post(
            "/api/admin/session", json={"password": ADMIN_TOKEN, "name": "Maria"}
        )
        assert signed_in.status_code == 200, signed_in.text
        body = {"to": "+14135550111", "purpose": "custom", "message": "hi"}
        forged = await page.post("/api/outbound", json=body)
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
        page.headers["X-CSRF-Token"] = signed_in.json()["csrf_token"]
        created = await page.post("/api/outbound", json=body)
        assert created.status_code == 201, created.text
        listed = await page.get("/api/outbound")
        assert [c["id"] for c in listed.json()["calls"]] == [created.json()["id"]]
    audit = (await app.api.get("/api/admin/audit")).json()["entries"]
    assert (audit[0]["actor"], audit[0]["action"]) == ("Maria (admin token)", "create")
