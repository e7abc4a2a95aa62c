"""Refusals on a real server behind a (simulated) proxy, and its limits: signatures checked
against the public URL, expired/foreign/reused tokens, admin token, capacity, call length."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

from agent import metrics
from agent.pipeline import CallPipeline
from agent.prompts import phrases
from agent.providers import LocalModels
from agent.session import CallSession, Outcome
from agent.settings import Settings, SettingsError
from telephony.signature import sign_twilio_request
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, Clock, free_port, server_env
from tests.fakes.llm import ScriptedLLM, ServerThread, build_app
from tests.frames import ScriptedLLM as FrameLLM
from tests.frames import phone_call
from tools.store.db import Database

PUBLIC = "https://frontdesk.example.com"
DB_BACKENDS = ("sqlite",)  # the store is exercised on both in test_tools, test_admin_api
TOKEN_TTL = 2
PENDING = 3  # media sockets that may wait for their start at once


@dataclass
class LimitedServer:
    url: str
    app: Any


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, local_models: LocalModels
) -> Iterator[LimitedServer]:
    from agent.app import create_app

    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(ScriptedLLM(rules=[])), llm_port):
        env = server_env(
            tmp_path_factory.mktemp("limited"),
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_PUBLIC_URL=PUBLIC,
            FRONTDESK_MAX_CALLS="1",
            FRONTDESK_MAX_CALL_SECS="10",
            FRONTDESK_CALLER_IDLE_SECS="60",
            FRONTDESK_STREAM_TOKEN_TTL=str(TOKEN_TTL),
            FRONTDESK_MAX_PENDING_STREAMS=str(PENDING),
            FRONTDESK_DEMO="1",  # its socket shares the cap on sockets awaiting a start
        )
        app = create_app(Settings.from_env(env), models=local_models)
        with ServerThread(app, port) as server:
            yield LimitedServer(server.url, app)


def _params(call_sid: str) -> dict[str, str]:
    return {"CallSid": call_sid, "From": "+14135550123", "To": "+14135550100"}


async def _webhook(server: LimitedServer, call_sid: str, signed_url: str) -> httpx.Response:
    params = _params(call_sid)
    signature = sign_twilio_request(AUTH_TOKEN, signed_url, params)
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{server.url}/twilio/voice", data=params, headers={"X-Twilio-Signature": signature}
        )


def _token(answer: httpx.Response) -> str:
    return answer.text.split('name="token" value="')[1].split('"')[0]


async def _stream(server: LimitedServer, call_sid: str, token: str) -> Any:
    ws = await websockets.connect(server.url.replace("http", "ws", 1) + "/twilio/media")
    start = {
        "streamSid": "MZsec",
        "callSid": call_sid,
        "accountSid": "ACsec",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": token},
    }
    await ws.send(json.dumps({"event": "start", "streamSid": "MZsec", "start": start}))
    return ws


async def _close_code(ws: Any) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_signatures_are_checked_against_the_public_url(limited):
    # Twilio signs the public URL; the Host header (the proxy's upstream) must not matter.
    good = await _webhook(limited, "CA7075626c696300000000000000000000", f"{PUBLIC}/twilio/voice")
    assert good.status_code == 200
    assert 'url="wss://frontdesk.example.com/twilio/media"' in good.text
    local = await _webhook(
        limited, "CA6c6f63616c0000000000000000000000", f"{limited.url}/twilio/voice"
    )
    assert local.status_code == 403


async def test_every_twilio_route_refuses_unsigned_requests(limited):
    paths = limited.app.openapi()["paths"]
    routes = [p for p, ops in paths.items() if p.startswith("/twilio/") and "post" in ops]
    assert "/twilio/voice" in routes
    async with httpx.AsyncClient(base_url=limited.url) as client:
        for path in routes:
            unsigned = await client.post(path, data=_params("CA78000000000000000000000000000000"))
            forged = await client.post(
                path,
                data=_params("CA78000000000000000000000000000000"),
                headers={"X-Twilio-Signature": "Zm9yZ2Vk"},
            )
            assert (unsigned.status_code, forged.status_code) == (403, 403), path


async def test_expired_tokens_are_refused(
    limited: LimitedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's own tokens (with the configured TTL) on a clock the test moves.
    clock = Clock(time.time())
    monkeypatch.setattr(limited.app.state.frontdesk.tokens, "_clock", clock)
    token = _token(
        await _webhook(limited, "CA6c617465000000000000000000000000", f"{PUBLIC}/twilio/voice")
    )
    clock.now += TOKEN_TTL + 1.5
    assert (
        await _close_code(await _stream(limited, "CA6c617465000000000000000000000000", token))
        == 1008
    )


async def test_over_capacity_apologises_and_dials_a_person(limited):
    state = limited.app.state.frontdesk
    token = _token(
        await _webhook(limited, "CA66697273740000000000000000000000", f"{PUBLIC}/twilio/voice")
    )
    ws = await _stream(limited, "CA66697273740000000000000000000000", token)
    try:
        await asyncio.wait_for(ws.recv(), 60)  # the first call is up
        assert state.active_calls == 1
        busy = await _webhook(
            limited, "CA7365636f6e6400000000000000000000", f"{PUBLIC}/twilio/voice"
        )
        assert busy.status_code == 200
        assert phrases()["over_capacity"] in busy.text and "<Connect>" not in busy.text
        assert "<Number>+14135550199</Number>" in busy.text  # the seeded business's
        # A token issued before the line filled up (here or by another worker) still cannot
        # start a second stream.
        spare = state.tokens.issue("CA74686972640000000000000000000000", {"from": "+14135550123"})
        assert (
            await _close_code(await _stream(limited, "CA74686972640000000000000000000000", spare))
            == 1013
        )
    finally:
        await ws.close()
    for _ in range(100):
        if state.active_calls == 0:
            break
        await asyncio.sleep(0.2)
    assert state.active_calls == 0


def refusals(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("frontdesk_refusals_total", {"reason": reason}) or 0


async def test_sockets_waiting_for_their_start_are_capped(limited: LimitedServer) -> None:
    """Silent sockets fill the cap; the next is refused at once (HTTP 503, counted), and a
    real call starts as soon as one silent socket is gone; the others time out."""
    state = limited.app.state.frontdesk
    media_url = limited.url.replace("http", "ws", 1) + "/twilio/media"
    demo_url = limited.url.replace("http", "ws", 1) + "/demo/ws"
    before = refusals("too_many_pending")
    silent = [await websockets.connect(media_url) for _ in range(PENDING)]
    try:
        assert state.pending_starts.waiting == PENDING
        for url, origin in ((media_url, None), (demo_url, Origin(limited.url))):
            asked = time.monotonic()
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, origin=origin)
            assert refused.value.response.status_code == 503
            assert time.monotonic() - asked < 1.0  # refused at once, not after a wait
        assert refusals("too_many_pending") == before + 2
        await silent.pop().close()  # one silent caller goes away
        for _ in range(50):
            if state.pending_starts.waiting < PENDING:
                break
            await asyncio.sleep(0.05)
        sid = "CA" + "5" * 32
        token = _token(await _webhook(limited, sid, f"{PUBLIC}/twilio/voice"))
        call = await _stream(limited, sid, token)
        try:
            first = json.loads(await asyncio.wait_for(call.recv(), 60))
            assert first["event"] == "media"  # the call is up: the greeting is playing
        finally:
            await call.close()
        # The silent ones are closed by the server once their start is overdue.
        codes = await asyncio.gather(*(_close_code(ws) for ws in silent))
        assert codes == [1008] * (PENDING - 1)
        for _ in range(50):  # each gives its place back just after its close frame went out
            if state.pending_starts.waiting == 0:
                break
            await asyncio.sleep(0.05)
        assert state.pending_starts.waiting == 0
    finally:
        for ws in silent:
            await ws.close()
    for _ in range(100):
        if state.active_calls == 0:
            break
        await asyncio.sleep(0.2)


async def test_calls_end_at_the_maximum_duration(db: Database, tmp_path: Path) -> None:
    """At the longest allowed duration (the transport's session timeout, which calls
    ``CallPipeline.timed_out``) the caller hears why, and the agent hangs up."""

    async def time_is_up(session: CallSession, call: CallPipeline) -> None:
        await asyncio.sleep(1.0)  # the greeting has played; the caller is still on the line
        await call.timed_out()

    session, record, phone = await phone_call(
        db, tmp_path, FrameLLM({}), [], during=time_is_up, linger=10.0
    )
    assert not phone.hung_up, "the agent should hang up at the maximum duration"
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert phrases()["max_duration"] in said and said[-1].endswith(phrases()["max_duration"])
    assert phrases()["max_duration"] in session.ledger.heard_text()  # played: its mark came back
    assert record["outcome"] == "max_duration" and session.outcome is Outcome.MAX_DURATION


async def test_admin_api_refusals(limited):
    async with httpx.AsyncClient(base_url=limited.url) as client:
        for path in ("/api/calls", "/api/calls/CA66697273740000000000000000000000"):
            missing = await client.get(path)
            wrong = await client.get(path, headers={"Authorization": "Bearer wrong-token"})
            basic = await client.get(path, headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
            prefix = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"})
            good = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            codes = [r.status_code for r in (missing, wrong, basic, prefix)]
            assert codes == [401, 401, 401, 401], path
            assert good.status_code in (200, 404), path


def test_no_admin_token_outside_dev_mode_refuses_to_start(tmp_path):
    from agent.app import create_app

    env = server_env(tmp_path, free_port())
    env.pop("FRONTDESK_ADMIN_TOKEN")
    with pytest.raises(SystemExit, match="FRONTDESK_ADMIN_TOKEN is not set"):
        create_app(Settings.from_env(env))
    create_app(Settings.from_env({**env, "FRONTDESK_DEV": "1"}))  # explicit dev mode: generated
    assert len((tmp_path / "admin_token").read_text().strip()) >= 32


def test_shutdown_and_timeout_settings():
    settings = Settings.from_env(
        {"FRONTDESK_SHUTDOWN_GRACE_SECS": "12.5", "FRONTDESK_PROVIDER_TIMEOUT_SECS": "4"}
    )
    assert settings.shutdown_grace_secs == 12.5 and settings.provider_timeout_secs == 4
    assert Settings().shutdown_grace_secs == 30 and Settings().provider_timeout_secs == 8
    with pytest.raises(SettingsError, match="FRONTDESK_SHUTDOWN_GRACE_SECS"):
        Settings.from_env({"FRONTDESK_SHUTDOWN_GRACE_SECS": "soon"})
    assert "s3cret-value" not in repr(Settings.from_env({"FRONTDESK_ADMIN_TOKEN": "s3cret-value"}))


async def test_password_hashing_never_runs_on_the_event_loop(db: Database):
    """scrypt (the real one: ~100 ms a try) runs in its own thread: a burst of wrong sign-ins
    leaves the loop that carries the calls' audio free to tick every 20 ms."""
    import itertools
    import threading

    from tools.admin import auth as admin_auth

    guard = admin_auth.AdminAuth(db)
    await guard.set_password("tester", "correct horse battery staple")
    hashing_threads: set[int] = set()
    real_verify = admin_auth.verify_password

    def verify(password: str, stored: str) -> bool:
        hashing_threads.add(threading.get_ident())
        return real_verify(password, stored)

    ticks: list[float] = []

    async def frame_clock() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    clock = asyncio.create_task(frame_clock())
    try:
        admin_auth.verify_password = verify
        results = await asyncio.gather(*(guard.check_password(f"wrong {i}") for i in range(5)))
    finally:
        admin_auth.verify_password = real_verify
        clock.cancel()
    assert results == [False] * 5
    assert hashing_threads and threading.get_ident() not in hashing_threads
    # Five scrypt runs take several hundred ms; on the loop they would stop the clock for all
    # of it. Off the loop the clock keeps ticking through them (generous bound: CPU steal).
    assert len(ticks) >= 5
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.25
