"""The demo page and socket without a browser: refusals, protocol errors, demo off, capacity.

The app runs in-process without its lifespan (no models are needed to refuse a call); its
database is migrated beforehand, since the call slots and the rate limit live there.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from agent.app import create_app
from agent.metrics import REGISTRY
from agent.settings import Settings, SettingsError
from telephony import browser_routes, media_socket
from telephony.signature import sign_twilio_request
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, server_env
from tools.store import schema
from tools.store.business import seed_business
from tools.store.db import Database
from tools.store.instances import DEMO, PHONE, Instance, Instances

ORIGIN = {"origin": "http://testserver"}
FIRST_SID, SECOND_SID = "CA360c7ef4d41f5bd812af1543ddcdbb30", "CA5e31d344722c21e047aa725ac94fe437"
BUSY_SID = "CA403abe7f0ff70ae7fef1ff3b7b1e7906"


def make_client(tmp_path: Path, **env: str) -> TestClient:
    """The app with the demo on (FRONTDESK_DEMO=1 unless ``env`` says otherwise): server_env
    is a plain ``run.py serve``'s, where the demo is off by default."""
    settings = Settings.from_env(server_env(tmp_path, 8080, **{"FRONTDESK_DEMO": "1", **env}))
    asyncio.run(_migrate(settings.database, settings.business_config))
    return TestClient(create_app(settings))


def serve_client(tmp_path: Path, **env: str) -> TestClient:
    """The app exactly as ``env`` (over server_env) configures it, the demo's default included."""
    settings = Settings.from_env(server_env(tmp_path, 8080, **env))
    asyncio.run(_migrate(settings.database))
    return TestClient(create_app(settings))


async def _migrate(url: str, seed: Path | None = None) -> None:
    db = Database(url)
    await db.migrate()
    if seed is not None:  # the busy apology dials the business's number
        await seed_business(db, seed)
    await db.close()


async def _take_lines(url: str, count: int, limit: int, pool: str = PHONE) -> None:
    """Another worker on the same database takes ``count`` of the ``limit`` slots of ``pool``."""
    db = Database(url)
    other = Instances(db, Instance("other-worker", "elsewhere", 1))
    for _ in range(count):
        assert await other.take_slot(limit, pool)
    await db.close()


async def _slots_taken(url: str, pool: str) -> int:
    db = Database(url)
    try:
        return await Instances(db, Instance("observer", "elsewhere", 2)).slots_taken(pool)
    finally:
        await db.close()


def phone_call_answered(client: TestClient, call_sid: str) -> bool:
    """Twilio's signed voice webhook for a new call: True when it is answered with a media
    stream, False when the caller hears the busy apology."""
    params = {"CallSid": call_sid, "From": "+14135550123", "To": "+14135550100"}
    url = "http://testserver/twilio/voice"
    signature = sign_twilio_request(AUTH_TOKEN, url, params)
    answer = client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200, answer.text
    assert ("<Stream" in answer.text) != ("<Dial" in answer.text), answer.text
    return "<Stream" in answer.text


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("frontdesk_refusals_total", {"reason": reason}) or 0.0


def wait_for(done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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


def assert_demo_off(client: TestClient) -> None:
    assert client.get("/").status_code == 404
    assert client.get("/demo/demo.js").status_code == 404
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/demo/ws", headers=ORIGIN):
            pass
    assert denied.value.status_code == 404
    assert "FRONTDESK_DEMO=1" in denied.value.text  # says how to turn it on
    assert client.get("/healthz").status_code == 200  # the rest of the app is there


def assert_demo_on(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        ws.send_text("hello")  # admitted: the refusal is about the protocol
        assert refusal(ws)[0]["code"] == "protocol"


def test_demo_off_removes_page_and_socket(tmp_path):
    assert_demo_off(make_client(tmp_path, FRONTDESK_DEMO="0"))


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),  # a plain `run.py serve`: off unless asked for
        ({"FRONTDESK_DEMO": "1"}, True),
        ({"FRONTDESK_DEV": "1"}, True),  # `python3 run.py` on loopback
        ({"FRONTDESK_DEV": "1", "FRONTDESK_DEMO": "0"}, False),  # 0 wins over dev mode
        ({"FRONTDESK_DEV": "0", "FRONTDESK_DEMO": "1"}, True),
    ],
)
def test_the_demo_is_off_unless_dev_mode_or_asked_for(tmp_path, env, on):
    settings = Settings.from_env(server_env(tmp_path, 8080, **env))
    assert settings.demo_enabled is on
    client = serve_client(tmp_path, **env)
    (assert_demo_on if on else assert_demo_off)(client)


def test_demo_settings_are_checked():
    defaults = Settings.from_env({})
    assert not defaults.demo_enabled
    assert (defaults.demo_max_calls, defaults.demo_max_call_secs) == (2, 300)
    with pytest.raises(SettingsError, match="FRONTDESK_DEMO must be a boolean"):
        Settings.from_env({"FRONTDESK_DEMO": "maybe"})
    with pytest.raises(SettingsError, match="FRONTDESK_DEMO_MAX_CALLS must be >= 1"):
        Settings.from_env({"FRONTDESK_DEMO_MAX_CALLS": "0"})
    with pytest.raises(SettingsError, match="FRONTDESK_DEMO_MAX_CALL_SECS must be an integer"):
        Settings.from_env({"FRONTDESK_DEMO_MAX_CALL_SECS": "5m"})


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


def test_the_third_demo_call_is_refused_while_phone_lines_are_free(tmp_path):
    client = make_client(tmp_path, FRONTDESK_DEMO_MAX_CALLS="2", FRONTDESK_LOCAL_MAX_CALLS="2")
    url = state(client).settings.database
    asyncio.run(_take_lines(url, 1, 2, DEMO))  # a demo call on another worker
    full_before = refusals("demo_full")
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as first:  # waits for its start
        wait_for(lambda: state(client).slots)  # admitted: it holds the second demo slot
        with client.websocket_connect("/demo/ws", headers=ORIGIN) as third:
            error, code = refusal(third)
        assert refusals("demo_full") == full_before + 1  # frontdesk_refusals_total
        assert error["code"] == "busy" and code == 1013
        assert error["message"] == (
            "The demo is full: it takes 2 calls at a time. Please try again in a minute."
        )
        assert len(state(client).slots) == 1  # the refused call took nothing
        assert asyncio.run(_slots_taken(url, DEMO)) == 2
        # The phone lines are all free: both phone calls are answered, taking no demo slot.
        assert phone_call_answered(client, FIRST_SID) and phone_call_answered(client, SECOND_SID)
        assert asyncio.run(_slots_taken(url, PHONE)) == 0  # (lines are taken at stream start)
        first.send_text("not a start")
        assert refusal(first)[0]["code"] == "protocol"
    # Given back. (Its database row goes in a task of its own, which the test client's
    # per-socket event loop may not live to run; a server's loop does.)
    wait_for(lambda: not state(client).slots)


def test_demo_calls_go_on_while_every_phone_line_is_taken(tmp_path):
    client = make_client(tmp_path, FRONTDESK_DEMO_MAX_CALLS="1", FRONTDESK_LOCAL_MAX_CALLS="2")
    url = state(client).settings.database
    asyncio.run(_take_lines(url, 2, 2, PHONE))  # both lines, on another worker
    assert not phone_call_answered(client, BUSY_SID)  # callers hear the busy apology
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        wait_for(lambda: state(client).slots)  # admitted
        assert asyncio.run(_slots_taken(url, DEMO)) == 1
        assert asyncio.run(_slots_taken(url, PHONE)) == 2
        ws.send_text("not a start")
        assert refusal(ws)[0]["code"] == "protocol"
    wait_for(lambda: not state(client).slots)


def test_a_draining_server_takes_no_demo_call(tmp_path):
    client = make_client(tmp_path)
    state(client).accepting = False  # shutting down
    with client.websocket_connect("/demo/ws", headers=ORIGIN) as ws:
        error, code = refusal(ws)
    assert error["code"] == "busy" and code == 1013
    assert error["message"] == "The server is restarting. Please try again in a minute."
    assert not state(client).slots


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
