"""The browser demo in real headless Chromium against the real app on a real port.

Chromium's fake microphone plays a caller recording made with the local TTS; the server runs
the same pipeline as a phone call (local Whisper and hibari, the session's load of them; a
scripted LLM stand-in: the real model's whole call is tests/test_local_call.py's, and the page
shows any provider's words, tools and audio the same way). One Chromium serves the module; each
test has its own context (profile, permissions) and writes its caller's recording to the file
the fake microphone plays.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import websockets
from playwright.async_api import expect
from websockets.typing import Origin

from agent.app import create_app
from agent.providers import LocalModels
from agent.settings import Settings
from telephony.audio import write_wav
from tests.browser import browser_page, chromium_browser, fake_microphone_device_args, screenshot
from tests.caller_audio import RATE, call_audio
from tests.conftest import ADMIN_TOKEN, SCRIPT_RULES, LiveServer, free_port, server_env
from tests.fakes.llm import ScriptedLLM, ServerThread, build_app

# The module's browser lives in the module's event loop, so its tests run there too.
pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT_MS = 90_000  # generous: a noisy 2-core CI machine transcribes and synthesizes slowly


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, local_models: LocalModels
) -> Iterator[LiveServer]:
    """The app with the demo on and one demo call at a time, so the busy path can be
    exercised for real."""
    script = ScriptedLLM(rules=list(SCRIPT_RULES))
    data_dir = tmp_path_factory.mktemp("frontdesk-demo")
    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(script), llm_port):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_DEMO="1",
            FRONTDESK_DEMO_MAX_CALLS="1",
        )
        app = create_app(Settings.from_env(env), models=local_models)
        with ServerThread(app, port) as server:
            yield LiveServer(server.url, script, data_dir, app)


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the module's fake microphone plays; each test writes its caller into it."""
    return tmp_path_factory.mktemp("microphone") / "caller.wav"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(microphone_wav: Path) -> AsyncIterator[Any]:
    async with chromium_browser(*fake_microphone_device_args(microphone_wav)) as chromium:
        yield chromium


def speak(wav: Path, *segments: float | str) -> None:
    """Make ``call_audio(*segments)`` what the fake microphone plays from the next call on."""
    wav.write_bytes(write_wav(call_audio(*segments), RATE))


def ask_about_a_haircut(wav: Path) -> None:
    """The caller waits for the greeting, asks one question, then stays quiet (Chromium plays
    the file once, then gives silence)."""
    speak(wav, 10.0, "Hi, do you have anything for a haircut this Friday?", 40.0)


def active_calls(server: LiveServer) -> int:
    app: Any = server.app
    return int(app.state.frontdesk.active_calls)


async def wait_until_free(server: LiveServer, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if not active_calls(server):
            return
        await asyncio.sleep(0.1)
    assert active_calls(server) == 0, "the server did not free the call"


async def call_record(server: LiveServer, call_sid: str, timeout: float = 30.0) -> dict[str, Any]:
    """The finished call record (written off the audio path, so poll for ended_at)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        while True:
            response = await client.get(f"{server.url}/api/calls/{call_sid}")
            if response.status_code == 200 and response.json().get("ended_at"):
                return dict(response.json())
            assert time.monotonic() < deadline, f"no finished record for {call_sid}"
            await asyncio.sleep(0.2)


async def demo_state(page: Any) -> dict[str, Any]:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.frontdeskDemo))")


async def test_a_conversation_in_chromium(
    demo_server: LiveServer, browser: Any, microphone_wav: Path
) -> None:
    await wait_until_free(demo_server)
    ask_about_a_haircut(microphone_wav)
    async with browser_page(browser) as page:
        await page.goto(demo_server.url + "/")
        await page.get_by_role("button", name="Start call").click()
        await page.wait_for_function(
            "() => window.frontdeskDemo.status === 'in-call'", timeout=WAIT_MS
        )
        assert await page.get_by_role("button", name="Hang up").is_visible()

        # The greeting is spoken and played, and its marks are echoed after playback.
        await page.wait_for_function(
            "() => window.frontdeskDemo.stats.marksAcked >= 1", timeout=WAIT_MS
        )
        greeting = page.locator(".turn.bot .segment.played").first
        assert (await greeting.inner_text()).strip()

        # The caller's words appear, the tool call with its arguments and result, the reply.
        caller = page.locator(".turn.caller:not(.pending)").first
        await caller.wait_for(timeout=WAIT_MS)
        said = (await caller.inner_text()).lower()
        # Whisper writes "haircut" or "hair cut" (the scripted LLM's rule takes both).
        assert re.search(r"hair ?cut", said) and "friday" in said
        tool = page.locator('.tool[data-tool="check_availability"]')
        await tool.wait_for(timeout=WAIT_MS)
        arguments = json.loads(await tool.locator("pre.arguments").inner_text())
        assert arguments == {"service": "haircut", "when": "Friday at 2pm"}
        result = json.loads(await tool.locator("pre.result").inner_text())
        assert result.get("say"), result
        # The answer (after the filler) is spoken, shown as played once its mark is echoed.
        opening = " ".join(result["say"].split()[:3])
        reply = page.locator(".tool ~ .turn.bot .segment.played", has_text=opening)
        await expect(reply.first).to_be_visible(timeout=WAIT_MS)
        # Per-turn latency is shown for the answer.
        await page.locator(".tool ~ .turn.bot .note.latency").first.wait_for(timeout=WAIT_MS)
        latency = float(
            await page.locator(".tool ~ .turn.bot").first.get_attribute("data-latency-ms") or 0
        )
        assert latency > 0

        state = await demo_state(page)
        stats = state["stats"]
        assert state["sampleRate"] == 16000 and state["callSid"].startswith("BR")
        assert stats["audioChunksPlayed"] > 50 and stats["samplesPlayed"] > 16000 * 2
        assert stats["outputPeak"] > 0.05, "bot audio never reached the audio output"
        assert stats["micFramesSent"] > 100
        assert stats["marksAcked"] >= 2
        # The caller's words were shown as they were recognised, then replaced by the final ones.
        assert stats["interims"] >= 1
        assert await page.locator(".turn.caller .interim").count() == 0
        await screenshot(page, "browser-demo-conversation.png")

        await page.get_by_role("button", name="Hang up").click()
        await page.wait_for_function("() => window.frontdeskDemo.status === 'ended'")
        assert not page.frontdesk_errors, page.frontdesk_errors

    await wait_until_free(demo_server)
    record = await call_record(demo_server, state["callSid"])
    assert record["source"] == "browser"
    assert record["outcome"] == "caller_hung_up"
    assert [c["name"] for c in record["tool_calls"]][:1] == ["check_availability"]
    callers = [t["text"].lower() for t in record["turns"] if t["role"] == "caller"]
    assert any("haircut" in text for text in callers)
    assert record["recording_path"].endswith(".wav")


async def test_barge_in_stops_playback_at_once_and_the_brain_hears_only_what_played(
    demo_server: LiveServer, browser: Any, microphone_wav: Path
) -> None:
    await wait_until_free(demo_server)
    speak(
        microphone_wav,
        10.0,
        "Can you tell me about your services?",
        7.0,  # the long answer is playing now
        "Sorry, actually, what are your opening hours?",
        40.0,
    )
    async with browser_page(browser) as page:
        await page.goto(demo_server.url + "/")
        await page.get_by_role("button", name="Start call").click()
        await page.locator('.tool[data-tool="get_business_info"]').wait_for(timeout=WAIT_MS)
        stats = (await demo_state(page))["stats"]
        assert stats["clears"] >= 1 and stats["chunksCancelled"] >= 1
        # What the caller never heard is struck through, and the turn is marked interrupted.
        assert await page.locator(".segment.unheard").count() >= 1
        await expect(page.locator(".note.interrupted").first).to_be_visible()
        await screenshot(page, "browser-demo-barge-in.png")
        call_sid = (await demo_state(page))["callSid"]
        await page.get_by_role("button", name="Hang up").click()
    await wait_until_free(demo_server)
    record = await call_record(demo_server, call_sid)
    interrupted = [t for t in record["turns"] if t["role"] == "bot" and t["interrupted"]]
    full = next(rule.reply for rule in demo_server.script.rules if rule.reply)
    assert any(t["text"].startswith("We offer") and len(t["text"]) < len(full) for t in interrupted)
    # The brain was told only what had played (the page echoed marks after playback).
    asked = [r["messages"] for r in demo_server.script.requests if "opening hours" in json.dumps(r)]
    said = [m.get("content") or "" for m in asked[0] if m["role"] == "assistant"]
    cut = [m for m in said if "cut off" in m]
    assert cut and cut[-1].startswith("We offer") and "Aveda" not in cut[-1]


async def test_busy_then_a_dropped_socket_frees_the_line(
    demo_server: LiveServer, browser: Any, microphone_wav: Path
) -> None:
    """The demo's only slot is taken by another browser call: the page says the demo is full
    and offers a retry.
    That call's socket then drops without a goodbye: the server frees the line and keeps the
    record."""
    await wait_until_free(demo_server)
    ws_url = demo_server.url.replace("http://", "ws://") + "/demo/ws"
    occupier = await websockets.connect(ws_url, origin=Origin(demo_server.url))
    await occupier.send(json.dumps({"type": "start", "sampleRate": 16000, "format": "pcm16"}))
    ready = json.loads(await asyncio.wait_for(occupier.recv(), 30))
    assert ready["type"] == "ready"
    greeting_audio = bytearray()
    while len(greeting_audio) < 16000:  # half a second of the greeting, at 16 kHz
        message = await asyncio.wait_for(occupier.recv(), 60)
        if isinstance(message, bytes):
            greeting_audio.extend(message)
    assert np.abs(np.frombuffer(bytes(greeting_audio), dtype="<i2")).max() > 1000

    ask_about_a_haircut(microphone_wav)
    async with browser_page(browser) as page:
        await page.goto(demo_server.url + "/")
        await page.get_by_role("button", name="Start call").click()
        problem = page.get_by_role("alert")
        await problem.wait_for(timeout=WAIT_MS)
        assert "The demo is full: it takes 1 call at a time." in (await problem.inner_text())
        assert await page.get_by_role("button", name="Try again").is_visible()
        assert (await demo_state(page))["errorCode"] == "busy"

        occupier.transport.abort()  # no close handshake at all
        await wait_until_free(demo_server)
        record = await call_record(demo_server, ready["callSid"])
        assert record["source"] == "browser" and record["outcome"] == "caller_hung_up"

        # The retry now gets through.
        await page.get_by_role("button", name="Try again").click()
        await page.wait_for_function(
            "() => window.frontdeskDemo.status === 'in-call'", timeout=WAIT_MS
        )
        assert await problem.is_hidden()
        await page.get_by_role("button", name="Hang up").click()
    await wait_until_free(demo_server)


async def test_microphone_denied_says_so_and_retry_works(
    demo_server: LiveServer, browser: Any, microphone_wav: Path
) -> None:
    await wait_until_free(demo_server)
    ask_about_a_haircut(microphone_wav)
    # Without a permission for the page, headless Chromium refuses the microphone.
    async with browser_page(browser, microphone=False) as page:
        await page.goto(demo_server.url + "/")
        await page.get_by_role("button", name="Start call").click()
        problem = page.get_by_role("alert")
        await problem.wait_for(timeout=WAIT_MS)
        assert "Microphone access was denied" in await problem.inner_text()
        assert (await demo_state(page))["errorCode"] == "denied"
        assert active_calls(demo_server) == 0  # no socket was opened

        await page.context.grant_permissions(["microphone"], origin=demo_server.url)
        await page.get_by_role("button", name="Try again").click()
        await page.wait_for_function(
            "() => window.frontdeskDemo.status === 'in-call'", timeout=WAIT_MS
        )
        await page.get_by_role("button", name="Hang up").click()
    await wait_until_free(demo_server)


async def test_a_dropped_connection_is_reported(
    demo_server: LiveServer, browser: Any, microphone_wav: Path
) -> None:
    await wait_until_free(demo_server)
    ask_about_a_haircut(microphone_wav)
    async with browser_page(browser) as page:
        routes: list[Any] = []

        async def relay(route: Any) -> None:
            # Forwards both ways until the test cuts both sides, as a failing network would.
            routes.extend([route, route.connect_to_server()])

        await page.route_web_socket("**/demo/ws", relay)
        await page.goto(demo_server.url + "/")
        await page.get_by_role("button", name="Start call").click()
        await page.wait_for_function(
            "() => window.frontdeskDemo.status === 'in-call'", timeout=WAIT_MS
        )
        assert active_calls(demo_server) == 1
        for side in routes:
            await side.close(code=1001, reason="network went away")
        problem = page.get_by_role("alert")
        await problem.wait_for(timeout=WAIT_MS)
        assert "connection to the server was lost" in await problem.inner_text()
        assert await page.get_by_role("button", name="Try again").is_visible()
        call_sid = (await demo_state(page))["callSid"]
    # (The server side of an abrupt drop is checked with a raw socket in the busy test above;
    # Playwright's relay only lets go of the server connection when the page goes.)
    await wait_until_free(demo_server)
    record = await call_record(demo_server, call_sid)
    assert record["outcome"] == "caller_hung_up" and record["source"] == "browser"


async def test_a_demo_call_ends_at_its_time_limit(
    browser: Any,
    microphone_wav: Path,
    local_models: LocalModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """FRONTDESK_DEMO_MAX_CALL_SECS (its shortest, 10 s) reached by the real transport: the
    receptionist says the demo's goodbye, the call ends with outcome max_duration and the page
    says why. The caller stays quiet (and is never asked whether they are still there)."""
    speak(microphone_wav, 40.0)
    script = ScriptedLLM(rules=list(SCRIPT_RULES))
    data_dir = tmp_path_factory.mktemp("frontdesk-demo-limit")
    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(script), llm_port):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_DEMO="1",
            FRONTDESK_DEMO_MAX_CALL_SECS="10",
            FRONTDESK_CALLER_IDLE_SECS="60",
        )
        app = create_app(Settings.from_env(env), models=local_models)
        with ServerThread(app, port) as running:
            server = LiveServer(running.url, script, data_dir, app)
            async with browser_page(browser) as page:
                await page.goto(server.url + "/")
                await page.get_by_role("button", name="Start call").click()
                await page.wait_for_function(
                    "() => window.frontdeskDemo.status === 'in-call'", timeout=WAIT_MS
                )
                started = time.monotonic()
                await page.wait_for_function(
                    "() => window.frontdeskDemo.status === 'ended'", timeout=WAIT_MS
                )
                elapsed = time.monotonic() - started
                state = await demo_state(page)
                assert state["outcome"] == "max_duration"
                status = await page.locator("#status").inner_text()
                assert "reached its time limit" in status
                goodbye = "This demo call has reached its ten-second limit."
                await expect(page.locator(".turn.bot", has_text=goodbye).first).to_be_visible()
                assert not page.frontdesk_errors, page.frontdesk_errors
                await screenshot(page, "browser-demo-time-limit.png")
            await wait_until_free(server)
            record = await call_record(server, state["callSid"])
    assert elapsed >= 9.0, f"ended after {elapsed:.1f} s, before its limit"
    assert record["outcome"] == "max_duration" and record["source"] == "browser"
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert said[-1] == goodbye + " Thanks for trying Frontdesk!"
    assert not [t for t in record["turns"] if t["role"] == "caller"]
