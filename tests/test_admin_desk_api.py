"""The front desk over the admin API, against the real app on a real port (SQLite and
PostgreSQL) whose texts go to the Twilio REST stand-in: auth and CSRF on every route, bookings
made, moved, cancelled and marked no-shows with field errors that change nothing, the change
log, customer search and history, do-not-call, the SMS confirmation setting and its texts (a
failed one counted, the booking kept)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from loguru import logger

from agent.texting import CountedTexts
from tests.conftest import (
    TZ,
    LiveServer,
    free_port,
    pg_database,
    server_env,
    shared_models,
)
from tests.fakes.llm import ScriptedLLM, ServerThread
from tests.fakes.llm import build_app as build_llm_app
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as build_twilio_app
from tests.test_admin_api import BEARER, browser_session
from tools.domain.slots import Slot
from tools.store import appointments
from tools.store.business import load_business
from tools.store.customers import save_customer
from tools.store.db import Database

LIVE_BACKENDS = ("sqlite", "postgresql")
ACCOUNT_SID = "AC" + "3" * 32
SENDER = "+14135550100"
HAIRCUT, BEARD_TRIM = 1, 2
MARIA, JAMES = 1, 2

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/admin/appointments", {"phone": "+14135550100", "service_id": 1}),
    ("PUT", "/api/admin/appointments/1", {"day": "2026-12-01", "start": "10:00"}),
    ("POST", "/api/admin/appointments/1/cancel", None),
    ("POST", "/api/admin/appointments/1/no-show", None),
    ("GET", "/api/admin/availability?service_id=1&day=2026-12-01", None),
    ("GET", "/api/admin/customers?q=anna", None),
    ("GET", "/api/admin/customers/1", None),
    ("PUT", "/api/admin/customers/1/do-not-call", {"do_not_call": True}),
]


@pytest.fixture(scope="module")
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio(ACCOUNT_SID, "desk-api-twilio-token")
    with ServerThread(build_twilio_app(fake), free_port()) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    live_backend: str,
    twilio: tuple[FakeTwilio, str],
) -> Iterator[LiveServer]:
    """The app as tests/conftest.py's ``live_server`` runs it, with texting configured: texts
    go from SENDER through the Twilio REST stand-in."""
    from agent.app import create_app
    from agent.settings import Settings

    fake, twilio_url = twilio
    script = ScriptedLLM(rules=[])
    data_dir = tmp_path_factory.mktemp("frontdesk-desk")
    db_url = ""
    if live_backend == "postgresql":
        db_url = asyncio.run(pg_database(request.getfixturevalue("pg_cluster"), "template0"))
    llm_port, port = free_port(), free_port()
    with ServerThread(build_llm_app(script), llm_port):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_DATABASE=db_url.replace("+asyncpg", ""),
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_API_BASE_URL=twilio_url,
            FRONTDESK_SMS_FROM=SENDER,
        )
        settings = Settings.from_env(env)
        app = create_app(settings, models=shared_models(settings))
        with ServerThread(app, port) as server:
            yield LiveServer(server.url, script, data_dir, app, db_url)


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, headers=BEARER, timeout=30) as client:
        yield client


@pytest.fixture
async def db(live_server: LiveServer) -> AsyncIterator[Database]:
    database = Database(live_server.db_url)
    yield database
    await database.close()


def weekday_ahead(weekday: int, weeks: int = 1) -> str:
    """A ``weekday`` (0 = Monday) at least ``weeks`` weeks from today in the salon's zone: a
    working day whatever day the tests run on (the holidays in business.yaml are Fri/Sat)."""
    today = datetime.now(TZ).date()
    day = today + timedelta(days=7 * weeks)
    return (day + timedelta(days=(weekday - day.weekday()) % 7)).isoformat()


def booking(phone: str, day: str, start: str = "10:00", **fields: Any) -> dict[str, Any]:
    return {
        "phone": phone,
        "name": "Test Customer",
        "service_id": HAIRCUT,
        "staff_id": MARIA,
        "day": day,
        "start": start,
        **fields,
    }


async def appointment_rows(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await api.get("/api/admin/appointments?scope=all")).json()["appointments"]


async def audit(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await api.get("/api/admin/audit")).json()["entries"]


async def set_sms(api: httpx.AsyncClient, on: bool) -> None:
    profile = (await api.get("/api/admin/config")).json()["profile"]
    saved = await api.put("/api/admin/profile", json={**profile, "sms_confirmations": on})
    assert saved.status_code == 200, saved.text


# --- Auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_desk_route_needs_credentials(live_server, method, path, body):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        anonymous = await client.request(method, path, json=body)
        wrong = await client.request(
            method, path, json=body, headers={"Authorization": "Bearer not-the-token"}
        )
    assert anonymous.status_code == 401 and wrong.status_code == 401


async def test_a_session_needs_the_csrf_token_and_the_change_log_names_the_person(live_server, api):
    day = weekday_ahead(1)
    body = booking("+14135550201", day, "09:00")
    async with browser_session(live_server, name="Rita") as client:
        csrf = client.headers.pop("X-CSRF-Token")
        refused = await client.post("/api/admin/appointments", json=body)
        cross_site = await client.post(
            "/api/admin/appointments",
            json=body,
            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        )
        assert (refused.status_code, cross_site.status_code) == (403, 403)
        assert not [a for a in await appointment_rows(api) if a["phone"] == "+14135550201"]
        made = await client.post(
            "/api/admin/appointments", json=body, headers={"X-CSRF-Token": csrf}
        )
    assert made.status_code == 201, made.text
    entry = (await audit(api))[0]
    assert (entry["actor"], entry["action"], entry["entity"]) == (
        "Rita (admin token)",
        "create",
        "appointment",
    )
    assert entry["entity_id"] == str(made.json()["id"])


# --- Appointments -------------------------------------------------------------------------------


async def test_book_move_cancel_with_field_errors_and_no_double_booking(api):
    day = weekday_ahead(2)
    made = await api.post("/api/admin/appointments", json=booking("+14135550202", day))
    assert made.status_code == 201, made.text
    first = made.json()
    assert (first["status"], first["staff"], first["service"]) == ("booked", "Maria", "Haircut")
    assert datetime.fromisoformat(first["starts_at"]) == datetime.fromisoformat(
        f"{day}T10:00"
    ).replace(tzinfo=TZ)

    before, log = await appointment_rows(api), await audit(api)
    double = await api.post("/api/admin/appointments", json=booking("+14135550203", day))
    assert double.status_code == 422
    assert double.json()["errors"]["start"].startswith("Maria is booked then; nearest free:")
    bad = await api.post(
        "/api/admin/appointments",
        json={"phone": "555", "service_id": HAIRCUT, "day": "tomorrow", "start": "25:00"},
    )
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"phone", "day", "start"}
    wrong_staff = await api.post(
        "/api/admin/appointments",
        json=booking("+14135550203", day, service_id=3, staff_id=JAMES),
    )
    assert "James does not do hair coloring" in wrong_staff.json()["errors"]["staff_id"]
    assert (await appointment_rows(api), await audit(api)) == (before, log)

    free = (
        await api.get(f"/api/admin/availability?service_id={HAIRCUT}&day={day}&staff_id={MARIA}")
    ).json()["times"]
    assert "10:00" not in [t["start"] for t in free] and "10:30" in [t["start"] for t in free]
    moved = await api.put(
        f"/api/admin/appointments/{first['id']}",
        json={"day": day, "start": "10:30", "staff_id": MARIA},
    )
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["starts_at"]).astimezone(TZ).hour == 10
    missing = await api.put("/api/admin/appointments/99999", json={"day": day, "start": "11:00"})
    assert missing.status_code == 404
    early = await api.post(f"/api/admin/appointments/{first['id']}/no-show")
    assert early.status_code == 422 and "not started yet" in early.json()["errors"]["status"]
    cancelled = await api.post(f"/api/admin/appointments/{first['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    again = await api.post(f"/api/admin/appointments/{first['id']}/cancel")
    assert again.status_code == 422
    entries = [e for e in await audit(api) if e["entity_id"] == str(first["id"])]
    assert [e["action"] for e in entries] == ["cancel", "update", "create"]
    assert entries[1]["changes"]["starts_at"] == [first["starts_at"], moved.json()["starts_at"]]
    assert entries[0]["changes"]["status"] == ["booked", "cancelled"]


async def test_a_past_appointment_becomes_a_no_show(api, db):
    business = await load_business(db)
    service = next(s for s in business.services if s.id == HAIRCUT)
    yesterday = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    async with db.write() as conn:
        customer = await save_customer(conn, "+14135550204", "Nia Past")
        past_id = await appointments.book(
            conn, customer["id"], service, Slot(yesterday, MARIA, "Maria"), ""
        )
    marked = await api.post(f"/api/admin/appointments/{past_id}/no-show")
    assert marked.status_code == 200, marked.text
    assert marked.json()["status"] == "no_show"
    history = (await api.get(f"/api/admin/customers/{customer['id']}")).json()
    assert [(a["id"], a["status"], a["upcoming"]) for a in history["appointments"]] == [
        (past_id, "no_show", False)
    ]
    assert (await audit(api))[0]["action"] == "no_show"


# --- Customers ----------------------------------------------------------------------------------


async def test_customer_search_history_and_do_not_call(api):
    day = weekday_ahead(3)
    made = await api.post(
        "/api/admin/appointments", json=booking("+14135550205", day, name="Zelda Quist")
    )
    customer_id = made.json()["customer_id"]
    by_name = (await api.get("/api/admin/customers", params={"q": "zeLDa q"})).json()
    by_digits = (await api.get("/api/admin/customers", params={"q": "555 0205"})).json()
    assert [c["id"] for c in by_name["customers"]] == [customer_id]
    assert [c["phone"] for c in by_digits["customers"]] == ["+14135550205"]
    history = (await api.get(f"/api/admin/customers/{customer_id}")).json()
    assert history["customer"]["name"] == "Zelda Quist"
    assert history["customer"]["do_not_call"] is False
    assert [a["status"] for a in history["appointments"]] == ["booked"]
    assert history["appointments"][0]["upcoming"] is True
    assert (await api.get("/api/admin/customers/99999")).status_code == 404

    flagged = await api.put(
        f"/api/admin/customers/{customer_id}/do-not-call", json={"do_not_call": True}
    )
    assert flagged.json()["do_not_call"] is True
    shown = (await api.get(f"/api/admin/customers/{customer_id}")).json()["customer"]
    assert shown["do_not_call"] is True and shown["do_not_call_at"]
    entry = (await audit(api))[0]
    assert (entry["entity"], entry["changes"]) == ("customer", {"do_not_call": [False, True]})
    bad = await api.put(f"/api/admin/customers/{customer_id}/do-not-call", json={})
    assert bad.status_code == 422 and "do_not_call" in bad.json()["errors"]
    cleared = await api.put(
        f"/api/admin/customers/{customer_id}/do-not-call", json={"do_not_call": False}
    )
    assert cleared.json()["do_not_call"] is False and cleared.json()["do_not_call_at"] is None


# --- SMS confirmations --------------------------------------------------------------------------


async def texts_counted(live_server: LiveServer, result: str) -> float:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        metrics = (await client.get("/metrics")).text
    found = re.search(rf'^frontdesk_texts_total{{result="{result}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_console_changes_are_texted_when_the_setting_is_on(live_server, api, twilio):
    fake, _url = twilio
    day = weekday_ahead(4)
    phone = "+14135550206"
    seen = len(fake.messages)  # the stand-in serves both backends' servers
    await set_sms(api, False)
    quiet = await api.post("/api/admin/appointments", json=booking(phone, day, "11:00"))
    assert quiet.json()["confirmation"] == "off"
    assert fake.messages[seen:] == []

    await set_sms(api, True)
    config = (await api.get("/api/admin/config")).json()
    assert config["profile"]["sms_confirmations"] is True
    assert config["providers"]["texting"] == f"from {SENDER}"
    setting = next(e for e in await audit(api) if e["entity"] == "profile")
    assert setting["changes"]["sms_confirmations"] == [False, True]
    try:
        made = await api.post("/api/admin/appointments", json=booking(phone, day, "14:00"))
        assert made.json()["confirmation"] == "sent"
        sent = fake.messages[seen:]
        assert [(m.to, m.from_, m.authorized) for m in sent] == [(phone, SENDER, True)]
        local = date.fromisoformat(day)
        assert sent[0].body == (
            f"Bella Hair Studio: your haircut with Maria is booked for {local:%a} {local.day} "
            f"{local:%b} at 2:00 PM. Reply or call +14135550100 to change it."
        )

        failed_before = await texts_counted(live_server, "failed")
        fake.fail_next.append((500, 30001, "Queue overflow"))
        moved = await api.put(
            f"/api/admin/appointments/{made.json()['id']}",
            json={"day": day, "start": "15:00", "staff_id": MARIA},
        )
        assert moved.status_code == 200 and moved.json()["confirmation"] == "failed"
        assert datetime.fromisoformat(moved.json()["starts_at"]).astimezone(TZ).hour == 15
        assert await texts_counted(live_server, "failed") == failed_before + 1
    finally:
        await set_sms(api, False)


async def test_a_failed_text_is_logged_masked_without_its_body():
    class Refusing:
        async def send_text(self, to: str, body: str) -> None:
            raise RuntimeError("Twilio REST error 30001 (HTTP 500): Queue overflow")

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        with pytest.raises(RuntimeError):
            await CountedTexts(Refusing()).send_text("+14135550207", "your secret booking")
    finally:
        logger.remove(sink)
    logged = "".join(lines)
    assert "+1413***0207" in logged and "Queue overflow" in logged
    assert "+14135550207" not in logged and "secret booking" not in logged
