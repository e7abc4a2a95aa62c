"""The demo page and socket without a browser: refusals, protocol errors, demo off, capacity.

The app runs in-process without its lifespan (no models are needed to refuse a call); its
database is migrated beforehand, since the call slots and the rate limit live there.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from agent.app import create_app
from agent.settings import Settings
from telephony import browser_routes, media_socket
from tests.conftest import ADMIN_TOKEN, server_env
from tools.store import schema
from tools.store.business import seed_business
from tools.store.db import Database
from tools.store.instances import Instance, Instances

ORIGIN = {"origin": "http://testserver"}


def make_client(tmp_path: Path, **env: str) -> TestClient:
    settings = Settings.from_env(server_env(tmp_path, 8080, **env))
    asyncio.run(_migrate(settings.database))
    return TestClient(create_app(settings))


async def _migrate(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await db.close()


async def _take_lines(url: str, count: int, limit: int) -> None:
    """Another worker on the same database takes ``count`` of the ``limit`` lines."""
    db = Database(url)
    other = Instances(db, Instance("other-worker", "elsewhere", 1))
    for _ in range(count):
        assert await other.take_slot(limit)
    await db.close()


def state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.frontdesk


def refusal(ws) -> tuple[dict[str, str], int]:
    """The error message the page is shown, and the close code that follows it."""
    error = json.loads(ws.receive_text())
    message = ws.receive()
    assert message["type"] == "websocket.close"
    return error, message["code"]


def test_the_page_and_its_assets(tmp_path):
    client = make_client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Start call" in page.text and "/demo/demo.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "cdn" not in page.text.lower() and "https://" not in page.text  # all served here
    assert ADMIN_TOKEN not in page.text
    for name, kind in [
        ("demo.js", "text/javascript"),
        ("mic-worklet.js", "text/javascript"),
        ("demo.css", "text/css"),
    ]:
        asset = client.get(f"/demo/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert ADMIN_TOKEN not in asset.text and "/api/" not in asset.text
    assert client.get("/demo/demo.html").status_code == 404  # only the listed assets
    assert client.get("/demo/..%2Fapp.py").status_code == 404
    # The admin API stays behind its token.
    assert client.get("/api/calls").status_code == 401


def test_demo_off_removes_page_and_socket(tmp_path):
    client = make_client(tmp_path, FRONTDESK_DEMO="0")
    assert client.get("/").status_code == 404
    assert client.get("/demo/demo.js").status_code == 404
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/demo/ws", headers=ORIGIN):
            pass
    assert denied.value.status_code == 404
    assert "FRONTDESK_DEMO=0" in denied.value.text
    assert client.get("/healthz").status_code == 200  # the rest of the app is there


@pytest.mark.parametrize("origin", [None, "null", "http://evil.example", "http://testserver.evil"])
def test_foreign_origins_are_refused(tmp_path, origin):
    client = make_client(tmp_path)
    headers = {"origin": origin} if origin else {}
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/demo/ws", headers=headers):
            pass
    assert denied.value.status_code == 403
    assert state(client).active_calls == 0


def test_the_public_url_is_an_allowed_origin(tmp_path):
    client = make_client(tmp_path, FRONTDESK_PUBLIC_URL="https://frontdesk.example.com")
    with client.websocket_connect(
        "/demo/ws", headers={"origin": "https://frontdesk.example.com"}
    ) as ws:
        ws.send_text("hello")  # accepted: the refusal now is about the protocol
        error, code = refusal(ws)
    assert error["code"] == "protocol" and code == 1008


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        ("hello", "not JSON"),
        (b"\x00\x01", "audio before the start message"),
        ('{"type": "start", "sampleRate": 48000}', "8000 or 16000, got 48000"),
        ('{"type": "hangup"}', "hangup before the start message"),
    ],
)
def test_protocol_errors_are_explained_and_free_the_slot(tmp_path, first, expected):
    client = make_client(tmp_path)
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        if isinstance(first, bytes):
            ws.send_bytes(first)
        else:
            ws.send_text(first)
        error, code = refusal(ws)
    assert error["type"] == "error" and error["code"] == "protocol"
    assert expected in error["message"]
    assert code == 1008
    assert state(client).active_calls == 0


def test_a_silent_socket_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(media_socket, "START_TIMEOUT_SECS", 0.3)
    client = make_client(tmp_path)
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        error, code = refusal(ws)
    assert error["message"] == "no start message in time" and code == 1008
    assert state(client).active_calls == 0


def test_capacity_is_shared_with_phone_calls_of_every_worker(tmp_path):
    client = make_client(tmp_path, FRONTDESK_MAX_CALLS="2")
    asyncio.run(_take_lines(state(client).settings.database, 2, 2))  # two calls elsewhere
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        error, code = refusal(ws)
    assert error["code"] == "busy" and "busy" in error["message"] and code == 1013
    assert state(client).active_calls == 0 and not state(client).slots  # nothing taken

    client = make_client(tmp_path / "b")
    state(client).accepting = False  # shutting down
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        error, _ = refusal(ws)
    assert error["code"] == "busy"


async def test_call_slots_the_routes_take(tmp_path):
    settings = Settings.from_env(server_env(tmp_path, 8080, FRONTDESK_LOCAL_MAX_CALLS="3"))
    await _migrate(settings.database)
    slots: Any = create_app(settings).state.frontdesk
    try:
        await _take_lines(settings.database, 1, 3)  # another worker's call
        first = await slots.take_slot()
        assert await slots.has_room() and first and await slots.take_slot(answered=True)
        assert not await slots.has_room() and not await slots.take_slot(answered=True)  # full
        await slots.release_slot(first)
        await slots.release_slot(first)  # released once only
        assert slots.active_calls == 1 and await slots.instances.slots_taken() == 2
        slots.accepting = False  # shutting down: no new call, but an answered one may stream
        assert not await slots.has_room() and not await slots.take_slot()
        assert await slots.take_slot(answered=True) and slots.active_calls == 2
    finally:
        await slots.db.close()


async def test_the_busy_number_is_read_when_needed_so_every_worker_sees_a_change(tmp_path):
    settings = Settings.from_env(server_env(tmp_path, 8080))
    await _migrate(settings.database)
    state: Any = create_app(settings).state.frontdesk
    admin = Database(settings.database)  # the worker that took the admin's change
    try:
        await seed_business(admin, settings.business_config)
        assert await state.escalation_number() == "+14135550199"
        async with admin.write() as conn:
            await conn.execute(schema.business.update().values(escalation_number="+14135550198"))
        assert await state.escalation_number() == "+14135550198"
    finally:
        await admin.close()
        await state.db.close()


def test_starting_calls_is_rate_limited_per_client(tmp_path):
    client = make_client(tmp_path, FRONTDESK_DEMO_CALLS_PER_MINUTE="2")
    for _ in range(2):
        with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
            ws.send_text("not a start")
            assert refusal(ws)[0]["code"] == "protocol"
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        error, code = refusal(ws)
    assert error["code"] == "rate_limited" and code == 1008
    assert "Please wait" in error["message"] and "seconds" in error["message"]


def test_origin_rules():
    allowed = browser_routes.origin_allowed
    assert allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "")
    assert not allowed("http://127.0.0.1:8081", "127.0.0.1:8080", "")
    assert allowed("https://Desk.example.com", "10.0.0.5:8080", "https://desk.example.com")
    assert not allowed("http://desk.example.com", "10.0.0.5:8080", "https://desk.example.com")
    assert not allowed("file://", "127.0.0.1:8080", "")
    assert not allowed("chrome-extension://abc", "abc", "")
