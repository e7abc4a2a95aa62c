"""The real server process (`python run.py serve`): kill -9 mid-call, restart, SIGTERM drain,
websocket size limit, start-up refusals and what reaches the log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets

from agent.prompts import phrases
from telephony.replay import replay
from telephony.signature import sign_twilio_request
from tests.caller_audio import RATE, call_audio, silence
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, ROOT, free_port, server_env
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread, build_app
from tools.store import schema
from tools.store.db import Database

CALLER = "+14135550123"
REFUSED_SID = "CA" + "afe7e" * 6 + "00"  # the call the webhook turns away while draining
RULES = [Rule(r"hours|open", tool="get_business_info", arguments={"topic": "hours"})]
_VENDOR_PREFIXES = ("FRONTDESK_", "DEEPGRAM_", "OPENAI_", "ELEVENLABS_", "TWILIO_")


class ServerProcess:
    """`python run.py serve` in a subprocess, its stderr kept in a file."""

    def __init__(self, data_dir: Path, llm_url: str, **extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(_VENDOR_PREFIXES)}
        env.update(server_env(data_dir, self.port, OPENAI_BASE_URL=llm_url, **extra))
        env["PYTHONPATH"] = str(ROOT)
        self.env = env
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()


@pytest.fixture
def llm() -> Iterator[str]:
    script = ScriptedLLM(rules=list(RULES))
    port = free_port()
    with ServerThread(build_app(script), port):
        yield f"http://127.0.0.1:{port}/v1"


async def instance_rows(data_dir: Path) -> list[str]:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'frontdesk.db'}")
    try:
        async with db.read() as conn:
            rows = await conn.execute(sa.select(schema.instances.c.id))
            return [r.id for r in rows] + [
                f"slot {r.id}" for r in await conn.execute(sa.select(schema.call_slots.c.id))
            ]
    finally:
        await db.close()


async def call_rows(data_dir: Path) -> list[dict[str, Any]]:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'frontdesk.db'}")
    try:
        async with db.read() as conn:
            calls = (await conn.execute(sa.select(schema.calls))).mappings().all()
            out = []
            for call in calls:
                turns = (
                    await conn.execute(
                        sa.select(schema.turns.c.role, schema.turns.c.text)
                        .where(schema.turns.c.call_id == call["id"])
                        .order_by(schema.turns.c.idx)
                    )
                ).all()
                out.append({**dict(call), "turns": [(t.role, t.text) for t in turns]})
            return out
    finally:
        await db.close()


async def wait_for_turns(data_dir: Path, callers: int, bots: int, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = await call_rows(data_dir) if (data_dir / "frontdesk.db").exists() else []
        for row in rows:
            roles = [r for r, _ in row["turns"]]
            if roles.count("caller") >= callers and roles.count("bot") >= bots:
                return row
        await asyncio.sleep(0.3)
    seen = [row["turns"] for row in rows]
    raise AssertionError(f"the call never reached {callers} caller / {bots} bot turns: {seen}")


def assert_clean_log(text: str) -> None:
    for secret in (ADMIN_TOKEN, AUTH_TOKEN):
        assert secret not in text, "a secret reached the log"
    assert CALLER[2:] not in text, "a caller's number reached the log unmasked"
    assert "+1413***0123" in text, "calls are logged with the number masked"


async def start_call(url: str, audio: bytes) -> asyncio.Task[Any]:
    return asyncio.create_task(replay(audio, RATE, url, auth_token=AUTH_TOKEN, from_number=CALLER))


async def test_kill_9_keeps_completed_turns_and_restart_marks_the_call_interrupted(
    tmp_path: Path, llm: str
) -> None:
    first = ServerProcess(tmp_path, llm)
    try:
        await asyncio.to_thread(first.wait_ready)
        # One exchange is enough: the greeting, the question and its answer are complete turns
        # when the process dies in the silence after them.
        audio = call_audio(3.5, "What are your opening hours?", 240.0)
        caller = await start_call(first.url, audio)
        before = await wait_for_turns(tmp_path, callers=1, bots=2)
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait_exit(30) == -signal.SIGKILL
        report, _ = await asyncio.wait_for(caller, 60)
        assert report.closed_by_server
    finally:
        first.stop()
    assert_clean_log(first.log())
    [after] = await call_rows(tmp_path)
    assert after["ended_at"] is None and after["outcome"] == "in_progress"
    assert after["instance_id"].split("-")[-2] == str(first.proc.pid)  # stamped with its worker
    # Every turn that was complete at the kill is still there, in order.
    assert after["turns"][: len(before["turns"])] == before["turns"]
    assert [role for role, _ in before["turns"]] == ["bot", "caller", "bot"]
    # "hour" or "hours": Whisper may drop a plural on phone audio; the turn is what counts.
    assert "opening hour" in after["turns"][1][1].lower() and after["turns"][2][1]

    second = ServerProcess(tmp_path, llm)
    try:
        await asyncio.to_thread(second.wait_ready)
        async with httpx.AsyncClient(base_url=second.url) as client:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            answer = await client.get(f"/api/calls/{after['call_sid']}", headers=headers)
        record = answer.json()
        assert record["outcome"] == "interrupted" and record["ended_at"]
        assert [(t["role"], t["text"]) for t in record["turns"]] == after["turns"]
        # The websocket refuses an oversized message (uvicorn's limit, 1009).
        ws_url = second.url.replace("http", "ws", 1) + "/twilio/media"
        async with websockets.connect(ws_url, max_size=None) as ws:
            await ws.send("x" * (300 * 1024))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # SIGTERM with no calls: a quick, clean exit.
        second.proc.send_signal(signal.SIGTERM)
        assert second.wait_exit(60) == 0
    finally:
        second.stop()
    assert "interrupted" in second.log()
    # The killed worker was reaped at once (same host, its pid gone); the second left cleanly.
    assert await instance_rows(tmp_path) == []


async def test_sigterm_drains_calls_and_keeps_answering_webhooks(tmp_path: Path, llm: str) -> None:
    grace = 4.0  # long enough to see the call go on and a webhook answered meanwhile
    server = ServerProcess(tmp_path, llm, FRONTDESK_SHUTDOWN_GRACE_SECS=str(grace))
    try:
        await asyncio.to_thread(server.wait_ready)
        # A call is active once its greeting is in: the caller says nothing, only listens.
        caller = await start_call(server.url, silence(240.0))
        row = await wait_for_turns(tmp_path, callers=0, bots=1)
        signalled, signalled_at = time.monotonic(), time.time()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        url = f"{server.url}/twilio/voice"
        params = {
            "CallSid": REFUSED_SID,
            "From": CALLER,
            "To": "+14135550100",
        }
        signature = sign_twilio_request(AUTH_TOKEN, url, params)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            webhook = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        assert webhook.status_code == 200
        assert phrases()["over_capacity"] in webhook.text and "<Connect>" not in webhook.text
        assert "<Dial" in webhook.text  # the business's number is dialled
        assert ready.status_code == 503 and ready.json()["accepting"] is False
        assert alive.status_code == 200
        assert not caller.done(), "an active call goes on during the grace period"
        report, _ = await asyncio.wait_for(caller, grace + 60)
        ended = time.monotonic() - signalled
        assert report.closed_by_server and ended >= grace - 1
        # Nothing was said to the caller until the grace period was over: then the goodbye.
        # (The greeting's turn is stored once it has been spoken, so it is over by the signal.)
        since_signal = [
            report.started_at + at / 1000 - signalled_at for at in report.reply_starts_ms
        ]
        goodbye = min(t for t in since_signal if t > 0)
        assert goodbye >= grace - 1, f"the goodbye came {goodbye:.1f}s after SIGTERM"
        assert server.wait_exit(60) == 0
    finally:
        server.stop()
    rows = {r["call_sid"]: r for r in await call_rows(tmp_path)}
    record = rows[row["call_sid"]]
    assert record["outcome"] == "server_shutdown" and record["ended_at"]
    assert record["turns"][-1] == ("bot", phrases()["shutdown_goodbye"])
    assert REFUSED_SID not in rows  # the refused call never started a stream
    assert_clean_log(server.log())


def test_serve_refuses_to_start_without_an_admin_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_VENDOR_PREFIXES)}
    env.update(server_env(tmp_path, free_port()))
    env.pop("FRONTDESK_ADMIN_TOKEN")
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
    assert result.returncode != 0
    assert "FRONTDESK_ADMIN_TOKEN is not set" in result.stderr
    assert "FRONTDESK_DEV=1" in result.stderr
    assert not (tmp_path / "admin_token").exists()
