"""GET /metrics: what a real call leaves in it, refusals, who may read it, and several worker
processes' values added up (multiprocess mode).

The app's metrics live in one registry per process, shared by every app the tests build in it:
the checks compare values before and after, never absolute counts (except in the separate
processes of the multiprocess test).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics
from agent.app import create_app
from agent.settings import Settings
from telephony.replay import converse
from tests.caller_audio import RATE, turn
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, ROOT, LiveServer, server_env


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in an exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def scrape(server: LiveServer) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_a_call_shows_in_the_metrics(live_server: LiveServer) -> None:
    before = await scrape(live_server)
    report, _ = await converse(
        [turn("What are your opening hours?", answer_parts=2), turn("That's all, thank you. Bye.")],
        RATE,
        live_server.url,
        auth_token=AUTH_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    assert report.call_record is not None and report.call_record["outcome"] == "completed"
    for _ in range(50):  # the call's end is counted just after its record is finished
        after = await scrape(live_server)
        if sample(after, "frontdesk_active_calls") == 0:
            break
        await asyncio.sleep(0.1)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert sample(after, "frontdesk_active_calls") == 0
    assert grew("frontdesk_calls_total", outcome="completed") == 1
    # Every tool call of the record is counted, by name and result.
    tools = report.call_record["tool_calls"]
    assert "get_business_info" in [c["name"] for c in tools]
    for name in {c["name"] for c in tools}:
        ok = sum(1 for c in tools if c["name"] == name and c["ok"])
        assert grew("frontdesk_tool_calls_total", tool=name, result="ok") == ok, name
    for stage in ("transcript", "llm_first_token", "tts_first_audio", "voice_to_voice"):
        count = grew("frontdesk_stage_latency_seconds_count", stage=stage)
        assert count >= 1, f"no {stage} latency observed"
        assert grew("frontdesk_stage_latency_seconds_sum", stage=stage) > 0
    # The call record holds the same voice-to-voice figures the histogram observed.
    recorded = [
        t["timings"]["voice_to_voice_ms"]
        for t in report.call_record["turns"]
        if "voice_to_voice_ms" in t["timings"]
    ]
    assert grew("frontdesk_stage_latency_seconds_count", stage="voice_to_voice") == len(recorded)


async def test_refusals_are_counted_by_reason(live_server: LiveServer) -> None:
    before = await scrape(live_server)
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            f"{live_server.url}/twilio/voice",
            data={"CallSid": "CA666f7267656400000000000000000000"},
            headers={"X-Twilio-Signature": "bm9wZQ=="},
        )
    assert forged.status_code == 403
    after = await scrape(live_server)
    reason = {"reason": "forged_signature"}
    grown = sample(after, "frontdesk_refusals_total", **reason)
    assert grown - sample(before, "frontdesk_refusals_total", **reason) == 1


def _app(tmp_path: Path, **env: str) -> httpx.ASGITransport:
    settings = Settings.from_env(server_env(tmp_path, 0, **env))
    return httpx.ASGITransport(app=create_app(settings))


async def _get(transport: httpx.ASGITransport, peer: str, token: str = "") -> httpx.Response:
    transport.client = (peer, 40000)  # the socket's peer, as uvicorn reports it
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk") as client:
        return await client.get("/metrics", headers=headers)


async def test_without_a_token_only_loopback_peers_may_read(tmp_path: Path) -> None:
    transport = _app(tmp_path)
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        response = await _get(transport, peer)
        assert response.status_code == 200, peer
        assert "frontdesk_active_calls" in response.text
    remote = await _get(transport, "203.0.113.9")
    assert remote.status_code == 403
    assert "FRONTDESK_METRICS_TOKEN" in remote.json()["detail"]
    # A proxy's forwarding header is not the peer.
    transport.client = ("203.0.113.9", 40000)
    async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk") as client:
        forwarded = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forwarded.status_code == 403


async def test_with_a_token_it_is_required_everywhere(tmp_path: Path) -> None:
    transport = _app(tmp_path, FRONTDESK_METRICS_TOKEN="metrics-token-0123456789")
    assert (await _get(transport, "127.0.0.1")).status_code == 401
    assert (await _get(transport, "203.0.113.9", "wrong-token")).status_code == 401
    ok = await _get(transport, "203.0.113.9", "metrics-token-0123456789")
    assert ok.status_code == 200 and "frontdesk_active_calls" in ok.text


WORKER = """
import os
from agent import metrics
metrics.call_started()
metrics.refused("rate_limited")
metrics.turn_timed({"voice_to_voice_ms": 800.0})
print(os.getpid())
"""


def test_workers_values_are_added_up(tmp_path: Path) -> None:
    directory = metrics.prepare_multiprocess_dir(tmp_path / "prom")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    pids = [
        int(
            subprocess.run(
                [sys.executable, "-c", WORKER],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(2)
    ]
    text = metrics.render(str(directory)).decode()
    assert sample(text, "frontdesk_refusals_total", reason="rate_limited") == 2
    assert sample(text, "frontdesk_active_calls") == 2
    voice = {"stage": "voice_to_voice"}
    assert sample(text, "frontdesk_stage_latency_seconds_count", **voice) == 2
    assert sample(text, "frontdesk_stage_latency_seconds_bucket", le="1.0", **voice) == 2
    assert sample(text, "frontdesk_stage_latency_seconds_bucket", le="0.75", **voice) == 0
    # A worker that died no longer counts its calls as active; what it counted stays.
    metrics.worker_exited(pids[0], directory)
    text = metrics.render(str(directory)).decode()
    assert sample(text, "frontdesk_active_calls") == 1
    assert sample(text, "frontdesk_refusals_total", reason="rate_limited") == 2
    # A new run starts from nothing.
    metrics.prepare_multiprocess_dir(directory)
    assert "rate_limited" not in metrics.render(str(directory)).decode()
