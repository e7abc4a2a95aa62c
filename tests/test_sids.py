"""A CallSid is checked against Twilio's format before it names a file or a record (issue 17):
every Twilio entry (the voice webhook, both transfer callbacks, the media stream's start)
refuses a malformed one, logged shortened; browser demo ids (BR...) pass on that path only.

The app runs in-process (starlette's TestClient) without its lifespan; its database is migrated
beforehand. Requests are signed, so what is refused is the sid, not the signature.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agent import metrics
from agent.app import create_app
from agent.session import CallInfo
from agent.settings import Settings
from telephony.sids import is_browser_call_sid, is_call_sid
from telephony.signature import sign_twilio_request
from tests.conftest import AUTH_TOKEN, server_env
from tools.store.db import Database

GOOD = "CA" + "0123456789abcdef" * 2
MALFORMED = [
    "",
    "CA../../x",
    "CA../../../etc/passwd" + "0" * 13,
    "CA" + "0" * 31,  # too short
    "CA" + "0" * 33,  # too long
    "CAfuzz",
    GOOD + "\n",  # a trailing newline ($ would let it through)
    "ca" + "0" * 32,
    "BR" + "0" * 32,  # a browser demo id, on a Twilio route
    "MZ" + "0" * 32,  # a stream sid is no call sid
    "CA" + "0" * 31 + "g",
]


def test_the_format() -> None:
    assert is_call_sid(GOOD) and is_call_sid("CA" + secrets.token_hex(16))
    assert is_call_sid("CA" + "0123456789ABCDEF" * 2)  # Twilio's documented pattern allows it
    assert not any(is_call_sid(bad) for bad in MALFORMED)
    assert is_browser_call_sid("BR" + secrets.token_hex(16))
    assert not is_browser_call_sid(GOOD) and not is_browser_call_sid("BR" + "0" * 31)


def test_a_call_never_gets_a_malformed_sid_for_its_record_or_recording() -> None:
    for bad in MALFORMED:
        with pytest.raises(ValueError, match="not a Twilio CallSid"):
            CallInfo(bad)
    assert CallInfo(GOOD).call_sid == GOOD
    browser = "BR" + secrets.token_hex(16)
    assert CallInfo(browser, source="browser").call_sid == browser
    with pytest.raises(ValueError, match="not a browser call id"):
        CallInfo(GOOD, source="browser")  # a Twilio sid is no browser id either


async def _migrate(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await db.close()


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings.from_env(server_env(tmp_path, 8080))
    asyncio.run(_migrate(settings.database))
    return TestClient(create_app(settings))


@pytest.fixture
def warnings() -> Any:
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


def signed_post(client: TestClient, path: str, form: dict[str, str]) -> Any:
    signature = sign_twilio_request(AUTH_TOKEN, f"http://testserver{path}", form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def refusals(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("frontdesk_refusals_total", {"reason": reason}) or 0


@pytest.mark.parametrize("bad", MALFORMED)
def test_every_webhook_refuses_a_malformed_call_sid(
    client: TestClient, warnings: list[str], bad: str
) -> None:
    caller = {"From": "+14135550123", "To": "+14135550100"}
    entries = [
        ("/twilio/voice", {"CallSid": bad, **caller}, "CallSid"),
        ("/twilio/whisper?handoff=1", {"CallSid": bad, "ParentCallSid": GOOD}, "CallSid"),
        ("/twilio/whisper?handoff=1", {"CallSid": GOOD, "ParentCallSid": bad}, "ParentCallSid"),
        ("/twilio/dial-action?handoff=1", {"CallSid": bad, "DialCallStatus": "busy"}, "CallSid"),
    ]
    for path, form, field in entries:
        refused = signed_post(client, path, form)
        assert refused.status_code == 400, (path, refused.text)
        assert refused.text.startswith(f"{field} ")
    assert len(warnings) == len(entries)
    if len(bad) > 8:  # logged shortened: never the whole of what the peer sent
        assert not any(bad in line for line in warnings), warnings
    # The same webhooks with a good sid get past the check (the handoff does not exist).
    assert signed_post(client, "/twilio/voice", {"CallSid": GOOD, **caller}).status_code == 200
    whisper = {"CallSid": GOOD, "ParentCallSid": "CA" + "1" * 32}
    assert signed_post(client, "/twilio/whisper?handoff=1", whisper).status_code == 404


def start_frame(call_sid: str, token: str = "t", stream_sid: str = "MZ" + "0" * 32) -> str:
    start = {
        "streamSid": stream_sid,
        "callSid": call_sid,
        "accountSid": "AC" + "0" * 32,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": token},
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start})


@pytest.mark.parametrize("bad", [b for b in MALFORMED if b])
def test_the_media_start_refuses_a_malformed_call_sid(
    client: TestClient, warnings: list[str], bad: str
) -> None:
    before = refusals("bad_call_sid")
    with client.websocket_connect("/twilio/media") as ws:
        ws.send_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send_text(start_frame(bad))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "invalid callSid")
    assert refusals("bad_call_sid") == before + 1
    assert not any(bad in line for line in warnings if len(bad) > 8), warnings
    # A well-formed sid gets as far as the token check, whatever its stream sid looks like
    # (a UUID, as in older Twilio traces: stream sids name nothing, so they are not checked).
    with client.websocket_connect("/twilio/media") as ws:
        ws.send_text(start_frame(GOOD, "not-a-token", "7c6b3f9e-2d4a-4f1b-9c8e-0a1b2c3d4e5f"))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "invalid token")
