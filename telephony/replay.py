"""Replay a recorded caller into a Frontdesk server, behaving like Twilio.

    python -m telephony.replay CALLER.wav --server http://127.0.0.1:8080 \
        [--report report.json] [--bot-audio bot.wav]

It generates a CallSid, posts the voice webhook signed with TWILIO_AUTH_TOKEN, follows the TwiML
to the media websocket, sends ``connected``/``start`` and the WAV (any rate, mono or stereo) as
8 kHz mu-law in real time (20 ms frames), plays the bot's audio on a simulated phone (marks are
echoed once the audio before them has played, ``clear`` drops what was not played), keeps
sending silence until the bot has finished its last reply, then sends ``stop``.

The report gives, per caller turn, when the caller stopped speaking and when the first bot audio
after it arrived (voice-to-voice), the clear events, and with FRONTDESK_ADMIN_TOKEN set the
server's record of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Required, TypedDict, Unpack

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from telephony import codec
from telephony.audio import read_wav_mono16, resample_pcm16, write_wav
from telephony.signature import sign_twilio_request

FRAME_MS = 20
FRAME_SAMPLES = codec.TWILIO_SAMPLE_RATE * FRAME_MS // 1000
SILENCE_PCM = bytes(FRAME_SAMPLES * 2)
SILENCE_ULAW = codec.pcm16_to_ulaw(SILENCE_PCM)


class ReplayError(RuntimeError):
    """The server refused the call or broke the protocol; the message says how."""


@dataclass
class CallerTurn:
    speech_start_ms: float
    speech_end_ms: float
    first_bot_audio_ms: float | None = None
    voice_to_voice_ms: float | None = None
    turn: int | None = None  # which scripted turn (converse) this speech belongs to


@dataclass
class Report:
    call_sid: str
    stream_url: str = ""
    caller_turns: list[CallerTurn] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)  # ms since stream start
    marks_acked: int = 0
    bot_audio_ms: float = 0.0
    bot_frames: int = 0
    bot_speech_segments: list[tuple[float, float]] = field(default_factory=list)
    closed_by_server: bool = False
    close_code: int | None = None
    duration_ms: float = 0.0
    started_at: float = 0.0  # time.time() when the media stream started
    call_record: dict[str, Any] | None = None
    frame_arrivals_ms: list[float] = field(default_factory=list)
    mark_arrivals_ms: list[float] = field(default_factory=list)  # a mark ends each bot sentence
    reply_starts_ms: list[float] = field(default_factory=list)  # first loud frame of each reply

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("frame_arrivals_ms")
        data.pop("mark_arrivals_ms")
        return data


@dataclass
class Turn:
    """One caller turn for :func:`converse`: 16-bit PCM at the call's rate, and when to say it.

    By default the caller waits until the bot's answer to the previous turn (or the greeting)
    has finished and ``gap_secs`` of quiet followed. With ``barge_in_after`` set, the caller
    instead starts talking that many seconds after the bot's answer began, over it.

    ``answer_parts`` is how many stretches of bot speech answer *this* turn: 2 when a tool
    call's filler ("One moment…") comes before the answer. The caller waits for all of them,
    however long the bot takes, as a person on the phone would.
    """

    pcm: bytes
    barge_in_after: float | None = None
    gap_secs: float = 0.6
    answer_parts: int = 1


class _FixedCaller:
    """The caller's side of :func:`replay`: one recording played from the first frame."""

    def __init__(self, pcm8k: bytes, report: Report) -> None:
        self.pcm8k = pcm8k
        self.offset = 0
        report.caller_turns = [
            CallerTurn(a, b) for a, b in speech_segments(pcm8k, codec.TWILIO_SAMPLE_RATE)
        ]

    def frame(self, now_ms: float, phone: SimulatedPhone) -> bytes | None:
        if self.offset >= len(self.pcm8k):
            return None
        chunk = self.pcm8k[self.offset : self.offset + FRAME_SAMPLES * 2]
        self.offset += FRAME_SAMPLES * 2
        return chunk


class _TurnTakingCaller:
    """The caller's side of :func:`converse`: speaks each turn when the bot lets it (or not)."""

    def __init__(self, turns: list[Turn], report: Report, max_wait_secs: float) -> None:
        self.turns = turns
        self.report = report
        self.max_wait_ms = max_wait_secs * 1000.0
        self.index = -1  # the turn being spoken; -1 before the first
        self.offset = 0
        self.turn_ended_ms = 0.0  # when the previous turn's audio ended (0: the call start)
        self.last_bot_ms = 0.0

    def frame(self, now_ms: float, phone: SimulatedPhone) -> bytes | None:
        if 0 <= self.index < len(self.turns) and self.offset < len(self.turns[self.index].pcm):
            pcm = self.turns[self.index].pcm
            chunk = pcm[self.offset : self.offset + FRAME_SAMPLES * 2]
            self.offset += FRAME_SAMPLES * 2
            if self.offset >= len(pcm):
                self.turn_ended_ms = now_ms + FRAME_MS
            return chunk
        if self.index + 1 >= len(self.turns):
            # Hang up once the last turn has been answered (or the bot never answers).
            return None if self._bot_done(now_ms, phone, 0.6) else SILENCE_PCM
        if self._may_speak(now_ms, phone):
            self.index += 1
            self.offset = 0
            pcm = self.turns[self.index].pcm
            for start, end in speech_segments(pcm, codec.TWILIO_SAMPLE_RATE):
                self.report.caller_turns.append(
                    CallerTurn(now_ms + start, now_ms + end, turn=self.index)
                )
            return self.frame(now_ms, phone)
        return SILENCE_PCM

    def _may_speak(self, now_ms: float, phone: SimulatedPhone) -> bool:
        upcoming = self.turns[self.index + 1]
        if upcoming.barge_in_after is None:
            return self._bot_done(now_ms, phone, upcoming.gap_secs)
        if now_ms - self.turn_ended_ms > self.max_wait_ms:
            return True  # the bot never answered; carry on as a caller would
        replies = [t for t in self.report.reply_starts_ms if t > self.turn_ended_ms]
        return bool(replies) and now_ms >= replies[0] + upcoming.barge_in_after * 1000.0

    def _bot_done(self, now_ms: float, phone: SimulatedPhone, gap_secs: float) -> bool:
        """The bot answered the last turn and has been quiet for ``gap_secs`` (or never will)."""
        if now_ms - self.turn_ended_ms > self.max_wait_ms:
            return True
        parts = self.turns[self.index].answer_parts if self.index >= 0 else 1
        if sum(t > self.turn_ended_ms for t in self.report.reply_starts_ms) < parts:
            return False
        last_audio = self.report.frame_arrivals_ms[-1] if self.report.frame_arrivals_ms else 0
        return not phone.busy and now_ms - last_audio >= gap_secs * 1000.0


def speech_segments(
    pcm: bytes, rate: int, *, threshold_db: float = -35.0, hangover_ms: int = 600, min_ms: int = 200
) -> list[tuple[float, float]]:
    """(start_ms, end_ms) of speech in 16-bit PCM by frame energy relative to full scale."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    frame = rate * FRAME_MS // 1000
    count = len(samples) // frame
    if count == 0:
        return []
    frames = samples[: count * frame].reshape(count, frame)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = level > threshold_db
    segments: list[tuple[float, float]] = []
    start = None
    silent = 0
    for index, is_active in enumerate(active):
        if is_active:
            if start is None:
                start = index
            silent = 0
        elif start is not None:
            silent += 1
            if silent * FRAME_MS >= hangover_ms:
                end = index - silent + 1
                if (end - start) * FRAME_MS >= min_ms:
                    segments.append((start * FRAME_MS, end * FRAME_MS))
                start, silent = None, 0
    if start is not None:
        end = count - silent
        if (end - start) * FRAME_MS >= min_ms:
            segments.append((start * FRAME_MS, end * FRAME_MS))
    return [(float(a), float(b)) for a, b in segments]


class SimulatedPhone:
    """Plays bot audio in real time and acknowledges marks as a phone handset would."""

    def __init__(self) -> None:
        self.queue: list[bytearray | str] = []  # audio not played yet, and mark names
        self.played = bytearray()
        self.acked: list[str] = []

    def add_audio(self, pcm: bytes) -> None:
        self.queue.append(bytearray(pcm))

    def add_mark(self, name: str) -> None:
        self.queue.append(name)

    def clear(self) -> list[str]:
        """Drop unplayed audio; Twilio echoes the marks that were cleared."""
        cleared = [item for item in self.queue if isinstance(item, str)]
        self.queue.clear()
        return cleared

    def tick(self, samples: int) -> tuple[bytes, list[str]]:
        """Play ``samples`` of audio; returns (what played, marks reached)."""
        out = bytearray()
        marks: list[str] = []
        need = samples * 2
        while self.queue:
            item = self.queue[0]
            if isinstance(item, str):
                marks.append(item)
                self.queue.pop(0)
                continue
            if len(out) >= need:
                break
            take = item[: need - len(out)]
            out.extend(take)
            del item[: len(take)]
            if not item:
                self.queue.pop(0)
        out.extend(bytes(need - len(out)))
        self.played.extend(out)
        return bytes(out), marks

    @property
    def busy(self) -> bool:
        return any(not isinstance(item, str) for item in self.queue)


@dataclass
class CallOptions:
    """How the simulated Twilio side places the call (see :func:`replay`)."""

    auth_token: str  # the account's auth token: signs the voice webhook
    admin_token: str = ""  # when given, the call record is fetched into the report
    from_number: str = "+14135550123"
    to_number: str = "+14135550100"
    public_url: str = ""  # the URL Twilio signs, when the server sits behind a proxy
    tail_secs: float = 2.5  # after the caller's audio: hang up after this much bot quiet
    max_tail_secs: float = 40.0  # ... or after this long in any case
    extra_params: dict[str, str] | None = None  # more voice-webhook fields
    dtmf: list[tuple[float, str]] | None = None  # (at secs, digit) key presses
    call_sid: str = ""
    answer_twiml: str = ""
    network_holds: list[tuple[float, float]] | None = None


class CallFields(TypedDict, total=False):
    """:class:`CallOptions` as keyword arguments of :func:`replay` and :func:`converse` (mypy
    checks each key against the dataclass when they are unpacked into it)."""

    auth_token: Required[str]
    admin_token: str
    from_number: str
    to_number: str
    public_url: str
    tail_secs: float
    max_tail_secs: float
    extra_params: dict[str, str] | None
    dtmf: list[tuple[float, str]] | None
    call_sid: str
    answer_twiml: str
    network_holds: list[tuple[float, float]] | None


class Caller(Protocol):
    """The caller's side of a call: the next 20 ms of 8 kHz PCM, or None to hang up."""

    def frame(self, now_ms: float, phone: SimulatedPhone) -> bytes | None: ...


async def replay(
    caller_pcm: bytes, caller_rate: int, server: str, **options: Unpack[CallFields]
) -> tuple[Report, bytes]:
    """Run one call; returns the report and the bot audio as the caller heard it (8 kHz PCM).

    ``options`` are :class:`CallOptions` (``auth_token`` is required). ``call_sid`` +
    ``answer_twiml`` continue an existing call from TwiML the server already gave (e.g. a
    <Connect><Stream> after a transfer nobody answered) instead of posting the voice webhook.
    ``network_holds`` lists (at, secs) windows in which the caller's frames are held back and
    then sent at once, as Twilio delivers them after network jitter."""
    pcm8k = resample_pcm16(caller_pcm, caller_rate, codec.TWILIO_SAMPLE_RATE)
    pcm8k += bytes((-len(pcm8k)) % (FRAME_SAMPLES * 2))
    return await _run(lambda report: _FixedCaller(pcm8k, report), server, CallOptions(**options))


async def converse(
    turns: list[Turn],
    rate: int,
    server: str,
    *,
    max_wait_secs: float = 30.0,
    **options: Unpack[CallFields],
) -> tuple[Report, bytes]:
    """Like :func:`replay`, but the caller takes turns: each turn is spoken when the bot has
    finished answering the previous one (or, for a barge-in turn, while it is answering).
    ``max_wait_secs``: how long the caller waits for an answer before speaking anyway."""
    prepared = []
    for turn in turns:
        pcm = resample_pcm16(turn.pcm, rate, codec.TWILIO_SAMPLE_RATE)
        pcm += bytes((-len(pcm)) % (FRAME_SAMPLES * 2))
        prepared.append(replace(turn, pcm=pcm))
    return await _run(
        lambda report: _TurnTakingCaller(prepared, report, max_wait_secs),
        server,
        CallOptions(**options),
    )


# --- The simulated Twilio side ------------------------------------------------------------------


def _start_message(call: _CallIds, stream_params: dict[str, str]) -> str:
    start = {
        "accountSid": call.account_sid,
        "streamSid": call.stream_sid,
        "callSid": call.call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": stream_params,
    }
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": call.stream_sid, "start": start}
    )


def _media_message(stream_sid: str, sequence: int, tick: int, chunk: bytes) -> str:
    media = {
        "track": "inbound",
        "chunk": str(sequence - 1),
        "timestamp": str(int((tick - 1) * FRAME_MS)),
        "payload": base64.b64encode(chunk).decode(),
    }
    return json.dumps(
        {"event": "media", "sequenceNumber": str(sequence), "streamSid": stream_sid, "media": media}
    )


def _dtmf_message(stream_sid: str, sequence: int, digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def _stop_message(call: _CallIds, sequence: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": call.stream_sid,
            "stop": {"accountSid": call.account_sid, "callSid": call.call_sid},
        }
    )


@dataclass(frozen=True)
class _CallIds:
    call_sid: str
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    stream_sid: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))


async def _answer(
    client: httpx.AsyncClient, server: str, call: _CallIds, options: CallOptions
) -> str:
    """The TwiML answering the call: the given one, or the voice webhook's (signed as Twilio)."""
    if options.answer_twiml:
        return options.answer_twiml
    params = {
        "CallSid": call.call_sid,
        "AccountSid": call.account_sid,
        "From": options.from_number,
        "To": options.to_number,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **(options.extra_params or {}),
    }
    webhook = f"{server.rstrip('/')}/twilio/voice"
    signed_url = f"{options.public_url.rstrip('/')}/twilio/voice" if options.public_url else webhook
    signature = sign_twilio_request(options.auth_token, signed_url, params)
    response = await client.post(webhook, data=params, headers={"X-Twilio-Signature": signature})
    if response.status_code != 200:
        raise ReplayError(f"webhook answered {response.status_code}: {response.text[:200]}")
    return response.text


async def _fetch_record(
    client: httpx.AsyncClient, server: str, call_sid: str, admin_token: str
) -> dict[str, Any] | None:
    """The server's record of the call, once finished (it is, just after the socket closes)."""
    record: dict[str, Any] | None = None
    for _ in range(20):
        response = await client.get(
            f"{server.rstrip('/')}/api/calls/{call_sid}",
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        if response.status_code == 200:
            record = response.json()
            if record and record.get("ended_at"):
                break
        await asyncio.sleep(0.25)
    return record


class _Stream:
    """One media stream as Twilio runs it: the caller's frames out in real time, the bot's audio
    played on a :class:`SimulatedPhone`, marks echoed, ``clear`` honoured, then ``stop``."""

    def __init__(
        self,
        ws: ClientConnection,
        call: _CallIds,
        report: Report,
        caller: Caller,
        phone: SimulatedPhone,
        options: CallOptions,
        started: float,
    ) -> None:
        self.ws, self.call, self.report = ws, call, report
        self.caller, self.phone, self.options = caller, phone, options
        self.started = started  # time.monotonic() at the start of the call
        self.last_bot_audio = 0.0  # ms: the last loud bot frame
        self.done = asyncio.Event()  # the server closed the socket
        self.sending_done = False
        self.sequence = 2
        self.pending_dtmf = sorted(options.dtmf or [])
        self.held: list[str] = []

    def now_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    async def _ack(self, marks: list[str]) -> None:
        for name in marks:
            await self.ws.send(codec.encode_mark(self.call.stream_sid, name))
            self.report.marks_acked += 1

    # --- from the server -----------------------------------------------------------------------

    async def receive(self) -> None:
        try:
            async for message in self.ws:  # ends quietly on a normal close
                await self._on_message(json.loads(message))
            self.report.closed_by_server = not self.sending_done
            self.report.close_code = self.ws.close_code
        except websockets.ConnectionClosed as exc:
            self.report.closed_by_server = not self.sending_done
            self.report.close_code = exc.rcvd.code if exc.rcvd else None
        finally:
            self.done.set()

    async def _on_message(self, data: dict[str, Any]) -> None:
        event = data.get("event")
        if event == "media":
            self._on_media(codec.ulaw_to_pcm16(base64.b64decode(data["media"]["payload"])))
        elif event == "mark":
            self.report.mark_arrivals_ms.append(self.now_ms())
            self.phone.add_mark(data["mark"]["name"])
        elif event == "clear":
            self.report.clears.append(self.now_ms())
            await self._ack(self.phone.clear())

    def _on_media(self, pcm: bytes) -> None:
        report = self.report
        self.phone.add_audio(pcm)
        at = self.now_ms()
        report.bot_frames += 1
        report.frame_arrivals_ms.append(at)
        report.bot_audio_ms += len(pcm) / 2 / codec.TWILIO_SAMPLE_RATE * 1000
        if np.abs(np.frombuffer(pcm, dtype="<i2")).max(initial=0) <= 500:
            return
        # A reply starts with loud audio after a gap in the stream.
        new_reply = at - self.last_bot_audio > 300 or self.last_bot_audio == 0
        self.last_bot_audio = at
        if not new_reply:
            return
        report.reply_starts_ms.append(at)
        for turn in report.caller_turns:
            if turn.first_bot_audio_ms is None and at > turn.speech_end_ms:
                turn.first_bot_audio_ms = at
                turn.voice_to_voice_ms = round(at - turn.speech_end_ms, 1)

    # --- to the server -------------------------------------------------------------------------

    async def send(self) -> None:
        """The caller's frames every 20 ms until the caller hangs up (or the server does)."""
        tick = 0
        tail_started: float | None = None
        while not self.done.is_set():
            tick += 1
            target = self.started + tick * FRAME_MS / 1000.0
            pcm = self.caller.frame(self.now_ms(), self.phone)
            if pcm is None:
                if tail_started is None:
                    tail_started = time.monotonic()
                if self._hang_up(tail_started):
                    break
            chunk = SILENCE_ULAW if pcm is None or pcm is SILENCE_PCM else codec.pcm16_to_ulaw(pcm)
            _heard, marks = self.phone.tick(FRAME_SAMPLES)
            await self._ack(marks)
            await self._send_due_dtmf()
            self.held.append(_media_message(self.call.stream_sid, self.sequence, tick, chunk))
            self.sequence += 1
            await self._send_unless_held()
            await asyncio.sleep(max(0.0, target - time.monotonic()))
        if not self.done.is_set():
            for message in self.held:  # a hold that outlasted the caller's audio
                await self.ws.send(message)
            self.sending_done = True
            await self.ws.send(_stop_message(self.call, self.sequence))

    def _hang_up(self, tail_started: float) -> bool:
        """After the caller's audio: the bot has been quiet long enough, or it is time anyway."""
        now = time.monotonic()
        quiet = now - max(self.started + self.last_bot_audio / 1000, tail_started)
        return (quiet > self.options.tail_secs and not self.phone.busy) or (
            now - tail_started > self.options.max_tail_secs
        )

    async def _send_due_dtmf(self) -> None:
        while self.pending_dtmf and self.pending_dtmf[0][0] * 1000 <= self.now_ms():
            _, digit = self.pending_dtmf.pop(0)
            await self.ws.send(_dtmf_message(self.call.stream_sid, self.sequence, digit))
            self.sequence += 1

    async def _send_unless_held(self) -> None:
        at = self.now_ms() / 1000.0
        if any(start <= at < start + secs for start, secs in self.options.network_holds or []):
            return
        for message in self.held:  # a held-back burst goes out at once
            await self.ws.send(message)
        self.held.clear()


async def _run(
    make_caller: Callable[[Report], Caller], server: str, options: CallOptions
) -> tuple[Report, bytes]:
    call = _CallIds(call_sid=options.call_sid or "CA" + secrets.token_hex(16))
    report = Report(call_sid=call.call_sid)
    phone = SimulatedPhone()
    async with httpx.AsyncClient(timeout=15) as client:
        stream_url, stream_params = _parse_twiml(await _answer(client, server, call, options))
        report.stream_url = stream_url
        if options.public_url:  # the TwiML names the public host; dial the server we were given
            stream_url = server.replace("http", "ws", 1).rstrip("/") + "/twilio/media"
        started = time.monotonic()
        report.started_at = time.time()
        caller = make_caller(report)
        async with websockets.connect(stream_url, max_size=2**20, open_timeout=10) as ws:
            stream = _Stream(ws, call, report, caller, phone, options, started)
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            await ws.send(_start_message(call, stream_params))
            receiver = asyncio.create_task(stream.receive())
            try:
                await stream.send()
            except websockets.ConnectionClosed as exc:
                report.closed_by_server = True
                report.close_code = exc.rcvd.code if exc.rcvd else None
            finally:
                await ws.close()
                await receiver
        report.duration_ms = round((time.monotonic() - started) * 1000.0, 1)
        report.bot_speech_segments = speech_segments(bytes(phone.played), codec.TWILIO_SAMPLE_RATE)
        if options.admin_token:
            report.call_record = await _fetch_record(
                client, server, call.call_sid, options.admin_token
            )
    return report, bytes(phone.played)


def _parse_twiml(text: str) -> tuple[str, dict[str, str]]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ReplayError(f"webhook answer is not TwiML: {exc}") from None
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise ReplayError(f"TwiML has no <Connect><Stream>: {text[:200]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m telephony.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("wav", type=Path, help="caller audio (WAV, any rate)")
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--bot-audio", type=Path, help="write what the caller heard here (WAV)")
    parser.add_argument("--from", dest="from_number", default="+14135550123")
    parser.add_argument("--to", dest="to_number", default="+14135550100")
    parser.add_argument("--public-url", default="", help="the URL the server believes it has")
    parser.add_argument("--tail-secs", type=float, default=2.5)
    args = parser.parse_args(argv)
    auth_token = os.environ.get("TWILIO_AUTH_TOKEN", "")
    if not auth_token:
        print("TWILIO_AUTH_TOKEN must be set (the same value as the server's)", file=sys.stderr)
        return 2
    pcm, rate = read_wav_mono16(args.wav.read_bytes())
    try:
        report, heard = asyncio.run(
            replay(
                pcm,
                rate,
                args.server,
                auth_token=auth_token,
                admin_token=os.environ.get("FRONTDESK_ADMIN_TOKEN", ""),
                from_number=args.from_number,
                to_number=args.to_number,
                public_url=args.public_url,
                tail_secs=args.tail_secs,
            )
        )
    except (ReplayError, OSError, httpx.HTTPError, websockets.WebSocketException) as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 1
    summary = report.to_json()
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2))
    if args.bot_audio:
        args.bot_audio.write_bytes(write_wav(heard, codec.TWILIO_SAMPLE_RATE))
    for index, turn in enumerate(report.caller_turns, 1):
        v2v = (
            f"{turn.voice_to_voice_ms:.0f} ms" if turn.voice_to_voice_ms is not None else "no reply"
        )
        print(
            f"caller turn {index}: ended at {turn.speech_end_ms / 1000:.2f}s, voice-to-voice {v2v}"
        )
    print(
        f"clears: {len(report.clears)}, marks acked: {report.marks_acked}, "
        f"bot audio {report.bot_audio_ms / 1000:.1f}s"
    )
    if report.call_record:
        for turn in report.call_record.get("turns", []):
            print(f"  {turn['role']:>6}: {turn['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
