"""Call recordings streamed to disk: the same stereo audio as when the whole call was kept in
memory (caller left, bot right, unplayed bot audio dropped on a barge-in), little of it in
memory at any time, a readable file after a crash, a resumed call appended to its file."""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from agent.recording import RecordingWriter
from agent.session import RECORDING_CHUNK_SECS, CallInfo, CallSession, Escalating
from agent.settings import Settings
from telephony.audio import CallRecording
from tools.store.calls import CallStore
from tools.store.db import Database

RATE = 8000
FRAME = 320  # 20 ms of 16-bit mono at 8 kHz


def tone(samples: int, value: int) -> bytes:
    return np.full(samples, value, dtype="<i2").tobytes()


def script(seconds: int) -> list[tuple[str, bytes]]:
    """A call's hooks in order: caller frames all along, a 3 s bot reply every 8 s, the caller
    barging in on every other one after a second."""
    steps: list[tuple[str, bytes]] = []
    for n in range(seconds * 50):
        steps.append(("caller", tone(FRAME // 2, 1000 + n % 7)))
        if n % 400 == 10:
            steps.append(("bot", tone(3 * RATE, 2000 + n)))
        if n % 800 == 60:
            steps.append(("clear", b""))
    return steps


def play(recording: CallRecording, steps: list[tuple[str, bytes]]) -> None:
    for kind, pcm in steps:
        if kind == "caller":
            recording.add_caller(pcm)
        elif kind == "bot":
            recording.add_bot(pcm)
        else:
            recording.clear_bot()


def frames(wav_path: Path | bytes) -> np.ndarray:
    source = str(wav_path) if isinstance(wav_path, Path) else io.BytesIO(wav_path)
    with wave.open(source, "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)


def test_taking_audio_as_it_comes_changes_nothing() -> None:
    steps = script(30)
    whole = CallRecording(RATE)
    play(whole, steps)
    expected = whole.take_rest()
    streamed, taken = CallRecording(RATE), bytearray()
    for index, step in enumerate(steps):
        play(streamed, [step])
        if index % 37 == 0:
            taken += streamed.take_ready()
    taken += streamed.take_rest()
    assert bytes(taken) == expected
    stereo = np.frombuffer(expected, dtype="<i2").reshape(-1, 2)
    assert (stereo[:, 0] > 0).all() and (stereo[:, 1] > 0).any()  # caller throughout, bot too


def no_escalation(_session: CallSession) -> Escalating:
    return cast(Escalating, None)  # the hooks driven here never reach it


def session(tmp_path: Path, resume: int = 0) -> CallSession:
    settings = Settings.from_env({"FRONTDESK_DATA_DIR": str(tmp_path)})
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    info = CallInfo(call_sid="CA72656300000000000000000000000000", resume_handoff=resume)
    call = CallSession(
        info, settings=settings, db=db, store=CallStore(db), escalation=no_escalation, rate=RATE
    )
    call.recorder = RecordingWriter(
        tmp_path / "recordings" / "CA72656300000000000000000000000000.wav",
        RATE,
        resume=bool(resume),
    )
    return call


async def test_a_call_streams_to_its_file_with_little_in_memory(tmp_path: Path) -> None:
    steps = script(120)
    call = session(tmp_path)
    most = 0
    for index, (kind, pcm) in enumerate(steps):
        if index % 50 == 0:
            await asyncio.sleep(0.002)  # the audio arrives over time (here 60 times as fast)
        if kind == "caller":
            call.on_caller_audio(pcm)
        elif kind == "bot":
            call.on_bot_audio(pcm)
        else:
            call.on_clear()
        most = max(most, call.recording.buffered_bytes)
    # Never more than a chunk of the caller plus the reply queued ahead: 4 s, not 120.
    assert most <= (RECORDING_CHUNK_SECS + 3) * RATE * 2 * 1.05
    path = await call._finish_recording()
    whole = CallRecording(RATE)
    play(whole, steps)
    assert np.array_equal(frames(Path(path)), frames(whole.to_wav()))
    assert call.recorder is not None and call.recorder.pending == 0
    assert call.recorder.gap_bytes == 0


async def test_a_crash_leaves_a_readable_file_and_a_resumed_call_appends(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "CA72656300000000000000000000000000.wav"
    writer = RecordingWriter(path, RATE)
    first = np.column_stack([np.full(RATE, 5), np.full(RATE, 6)]).astype("<i2").tobytes()
    writer.write(first)
    for _ in range(100):  # the writer thread catches up; the process then "dies"
        if writer.pending == 0:
            break
        await asyncio.sleep(0.02)
    assert len(frames(path)) == RATE  # readable as it is, header and all
    call = session(tmp_path, resume=1)  # back from a transfer: same call, same file
    for _ in range(25):
        call.on_caller_audio(tone(FRAME // 2, 7))
    assert await call._finish_recording() == str(path)
    audio = frames(path)
    assert len(audio) == RATE + 25 * FRAME // 2
    assert (audio[:RATE, 0] == 5).all() and (audio[RATE:, 0] == 7).all()
    await writer.close()


class StalledWriter(RecordingWriter):
    """A writer whose disk does not answer until ``unstall`` is set."""

    unstall = threading.Event()

    def _open(self) -> tuple[BinaryIO, int]:
        self.unstall.wait(10)
        return super()._open()


async def test_a_stalled_disk_holds_bounded_audio_and_keeps_alignment(tmp_path: Path) -> None:
    path = tmp_path / "stalled.wav"
    writer = StalledWriter(path, RATE, max_pending_secs=2)
    second = np.full((RATE, 2), 9, dtype="<i2").tobytes()
    for _ in range(5):
        writer.write(second)  # never blocks, however slow the disk
    assert writer.pending == 2 * RATE * 4 and writer.gap_bytes == 3 * RATE * 4
    StalledWriter.unstall.set()
    assert await writer.close() == str(path)
    audio = frames(path)
    assert len(audio) == 5 * RATE  # the gap is silence of the same length
    assert (audio[: 2 * RATE] == 9).all() and (audio[2 * RATE :] == 0).all()
