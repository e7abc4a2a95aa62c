"""The real app on a real port: one whole real-time phone call (local STT/TTS, scripted LLM,
replayed caller), and the checks on its webhook, media socket and call records.

What else a call does is tested at frame level in tests/test_call_frames.py (barge-in, a
returning caller, pauses inside a phone number, audio in bursts) and
tests/test_admin_live_config.py (config changes and running calls); how fast the bot stops
on a barge-in is a figure of bench/bargein.py.
"""

import base64
import json
import os
import wave
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
import websockets

from telephony import codec
from telephony.replay import Report, converse
from telephony.signature import sign_twilio_request
from tests.caller_audio import RATE, turn
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, LiveServer
from tools.store import schema
from tools.store.db import Database


async def talk(server: LiveServer, *turns: Any, **kwargs: Any) -> tuple[Report, bytes]:
    """A caller who takes turns: each is spoken once the bot has answered the last one."""
    return await converse(
        list(turns), RATE, server.url, auth_token=AUTH_TOKEN, admin_token=ADMIN_TOKEN, **kwargs
    )


def turns(report: Report, role: str) -> list[dict[str, Any]]:
    assert report.call_record is not None, "the replay fetched no call record"
    return [t for t in report.call_record["turns"] if t["role"] == role]


async def test_a_call_books_an_appointment_and_answers_a_question(live_server: LiveServer) -> None:
    report, heard = await talk(
        live_server,
        turn("Hi, do you have anything for a haircut this Friday?", answer_parts=2),
        turn("Yes please, book it.", answer_parts=2),
        turn("Is there parking nearby?", answer_parts=2),
        turn("That's all, thank you. Bye."),
    )
    record = report.call_record
    assert record is not None and record["ended_at"]
    caller_text = " ".join(t["text"].lower() for t in turns(report, "caller"))
    assert "haircut" in caller_text and "friday" in caller_text and "park" in caller_text
    names = [c["name"] for c in record["tool_calls"]]
    assert names[:3] == ["check_availability", "book_appointment", "search_knowledge_base"]
    assert all(c["ok"] for c in record["tool_calls"][:3])
    assert "end_call" in names
    assert record["outcome"] == "completed"
    # The bot spoke: greeting plus an answer after every caller turn, in audible audio.
    level = np.abs(np.frombuffer(heard, dtype="<i2")).max()
    assert level > 3000
    # The caller heard answers (the replay measures voice-to-voice at the phone).
    assert len([t for t in report.caller_turns if t.voice_to_voice_ms is not None]) >= 3
    assert len(turns(report, "caller")) >= 4 and len(turns(report, "bot")) >= 4
    bot_text = " ".join(t["text"] for t in turns(report, "bot"))
    assert "booked" in bot_text and "parking" in bot_text.lower()
    # The booking is in the database, for the caller's number.
    db = Database(live_server.db_url)
    async with db.read() as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(
                        schema.appointments, schema.customers.c.phone, schema.customers.c.name
                    ).join(schema.customers)
                )
            )
            .mappings()
            .all()
        )
    await db.close()
    assert [(r["phone"], r["name"], r["status"]) for r in rows] == [
        ("+14135550123", "Anna Lee", "booked")
    ]
    # Per-turn latency is recorded.
    answered = [t for t in turns(report, "bot") if "voice_to_voice_ms" in t["timings"]]
    assert answered and all(t["timings"]["voice_to_voice_ms"] > 0 for t in answered)
    # The recording is stereo, caller left and bot right, as long as the call.
    assert record["recording_path"].endswith(".wav")
    with wave.open(record["recording_path"], "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert abs(len(frames) / 8000 - report.duration_ms / 1000) < 2.0
    caller, bot = np.abs(frames[:, 0]), np.abs(frames[:, 1])
    assert caller.max() > 2000 and bot.max() > 2000
    # The greeting (bot) comes before the caller speaks.
    assert np.argmax(bot > 2000) < np.argmax(caller > 2000)


async def test_webhook_signature_is_required(live_server: LiveServer) -> None:
    url = f"{live_server.url}/twilio/voice"
    params = {
        "CallSid": "CA666f7267656400000000000000000000",
        "From": "+14135550123",
        "To": "+14135550100",
    }
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, data=params)
        forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "bm9wZQ=="})
        wrong_key = sign_twilio_request("not-the-token", url, params)
        other = await client.post(url, data=params, headers={"X-Twilio-Signature": wrong_key})
        good = sign_twilio_request(AUTH_TOKEN, url, params)
        tampered = await client.post(
            url, data={**params, "From": "+19999999999"}, headers={"X-Twilio-Signature": good}
        )
        ok = await client.post(url, data=params, headers={"X-Twilio-Signature": good})
    assert [missing.status_code, forged.status_code, other.status_code, tampered.status_code] == [
        403
    ] * 4
    assert ok.status_code == 200 and "<Stream" in ok.text and 'name="token"' in ok.text


async def answer_call(server: LiveServer, call_sid: str) -> str:
    """Post a signed voice webhook as Twilio would; return the stream token from the TwiML."""
    url = f"{server.url}/twilio/voice"
    params = {"CallSid": call_sid, "From": "+14135550123", "To": "+14135550100"}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": sign_twilio_request(AUTH_TOKEN, url, params)},
        )
    assert answer.status_code == 200
    return answer.text.split('name="token" value="')[1].split('"')[0]


async def _open_stream(
    server: LiveServer, call_sid: str, token: str | None
) -> websockets.ClientConnection:
    ws = await websockets.connect(server.url.replace("http", "ws") + "/twilio/media")
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(
        json.dumps(
            {
                "event": "start",
                "streamSid": "MZtest",
                "start": {
                    "streamSid": "MZtest",
                    "callSid": call_sid,
                    "accountSid": "ACtest",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"token": token} if token is not None else {},
                },
            }
        )
    )
    return ws


async def _closed_with(ws: websockets.ClientConnection) -> int | None:
    try:
        await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None


async def test_media_socket_needs_a_valid_one_time_token(live_server: LiveServer) -> None:
    token = await answer_call(live_server, "CA746f6b656e7465737400000000000000")
    for call_sid, candidate in [
        ("CA746f6b656e7465737400000000000000", None),
        ("CA746f6b656e7465737400000000000000", "forged.1.x"),
        ("CA6f746865720000000000000000000000", token),
    ]:
        ws = await _open_stream(live_server, call_sid, candidate)
        assert await _closed_with(ws) == 1008
    # The right token works once ...
    ws = await _open_stream(live_server, "CA746f6b656e7465737400000000000000", token)
    first = json.loads(await ws.recv())  # the greeting starts streaming
    assert first["event"] in ("media", "mark")
    await ws.close()
    # ... and never again.
    replayed = await _open_stream(live_server, "CA746f6b656e7465737400000000000000", token)
    assert await _closed_with(replayed) == 1008


async def test_garbage_frames_do_not_break_a_call(live_server: LiveServer) -> None:
    token = await answer_call(live_server, "CA67617262616765000000000000000000")
    ws = await _open_stream(live_server, "CA67617262616765000000000000000000", token)
    junks: list[str | bytes] = [
        "{",
        "[]",
        '{"event": "media", "media": {"payload": "!!"}}',
        '{"event": "nope"}',
        b"\x00\xff",
    ]
    for junk in junks:
        await ws.send(junk)
    silence = base64.b64encode(codec.pcm16_to_ulaw(bytes(320))).decode()
    for _ in range(10):
        await ws.send(
            json.dumps({"event": "media", "streamSid": "MZtest", "media": {"payload": silence}})
        )
    first = json.loads(await ws.recv())
    assert first["event"] in ("media", "mark")  # still alive and greeting
    await ws.close()


async def test_call_records_need_the_admin_token(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        assert (await client.get("/api/calls")).status_code == 401
        bad = await client.get("/api/calls", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        good = await client.get("/api/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert good.status_code == 200 and isinstance(good.json()["calls"], list)
        assert (await client.get("/healthz")).json() == {"status": "ok", "pid": os.getpid()}
        assert (await client.get("/readyz")).status_code == 200
