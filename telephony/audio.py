"""Audio helpers with no I/O: resampling, level checks, and the stereo call recording."""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt
import soxr


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole 16-bit mono PCM buffer in one shot (no streaming latency)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) - (len(pcm) % 2)], dtype="<i2")
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


def float_to_pcm16(samples: npt.NDArray[np.floating], gain: float = 1.0) -> bytes:
    """Convert float audio in [-1, 1] to 16-bit PCM, applying gain with hard clipping."""
    scaled: npt.NDArray[np.float32] = np.clip(samples.astype(np.float32) * gain, -1.0, 1.0)
    return (scaled * 32767.0).astype("<i2").tobytes()


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of 16-bit PCM in dBFS (-inf-safe: silence is -120)."""
    samples = np.frombuffer(pcm[: len(pcm) - (len(pcm) % 2)], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples**2))) / 32768.0
    return 20.0 * np.log10(rms) if rms > 1e-6 else -120.0


def read_wav_mono16(data: bytes) -> tuple[bytes, int]:
    """Read a PCM WAV (any rate, 8/16/32-bit, mono or stereo) as 16-bit mono: (pcm, rate)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.int32)
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.int64) >> 16
    else:
        raise ValueError(f"unsupported WAV sample width: {width * 8} bits")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.asarray(samples, dtype="<i2").tobytes(), rate


def write_wav(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


class CallRecording:
    """Stereo recording of a call as the caller heard it: caller left, bot right.

    The caller track advances with every inbound frame (the stream clock). Bot audio is placed at
    the later of "now" on that clock and the end of the bot audio already queued, as a phone plays
    it; ``clear`` drops queued bot audio that had not been played yet.

    Everything up to "now" is final (a clear only drops bot audio beyond it), so it can be taken
    as it comes (:meth:`take_ready`) and written out: only what is beyond "now" (bot audio queued
    ahead) and what was not taken yet stays in memory.
    """

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self._caller = bytearray()  # both tracks from the first sample not taken yet
        self._bot = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Audio held in memory, both tracks."""
        return len(self._caller) + len(self._bot)

    @property
    def ready_bytes(self) -> int:
        """Bytes of stereo audio :meth:`take_ready` would return now."""
        return len(self._caller) * 2

    def add_caller(self, pcm: bytes) -> None:
        self._caller.extend(pcm)

    def add_bot(self, pcm: bytes) -> None:
        now = len(self._caller)
        if len(self._bot) < now:
            self._bot.extend(bytes(now - len(self._bot)))
        self._bot.extend(pcm)

    def clear_bot(self) -> None:
        """The bot was interrupted: whatever was queued beyond now was never heard."""
        now = len(self._caller)
        if len(self._bot) > now:
            del self._bot[now:]

    def take_ready(self) -> bytes:
        """The final audio up to now, as interleaved stereo PCM, dropped from memory."""
        return self._take(len(self._caller))

    def take_rest(self) -> bytes:
        """Everything left (the call is over), as interleaved stereo PCM."""
        return self._take(max(len(self._caller), len(self._bot)))

    def _take(self, length: int) -> bytes:
        length -= length % 2
        left = np.zeros(length // 2, dtype="<i2")
        right = np.zeros(length // 2, dtype="<i2")
        caller, bot = bytes(self._caller[:length]), bytes(self._bot[:length])
        left[: len(caller) // 2] = np.frombuffer(caller, dtype="<i2")
        right[: len(bot) // 2] = np.frombuffer(bot, dtype="<i2")
        del self._caller[:length], self._bot[:length]
        return np.column_stack([left, right]).astype("<i2").tobytes()

    def to_wav(self) -> bytes:
        """What is still held, as a WAV (the whole call when nothing was taken)."""
        return write_wav(self.take_rest(), self.rate, channels=2)
