"""The caller's voice as a second opinion on the end of a turn: pipecat's bundled smart-turn v3.2.

Owns :class:`TurnAudioModel` (one ONNX session per process, shared by every call like the Silero
VAD session) and :class:`CallerAudio` (one call's rolling buffer of what the caller said this
turn). smart-turn is trained on 16 kHz speech and misjudges 8 kHz phone audio fed to it as is
(pipecat issue 3844), so the audio is resampled to 16 kHz first. Measured on phone-band samples
it is a good veto and a poor judge alone (MODELS.md, update 2026-12): agent.turns uses it only
to wait longer, never to end a turn.
"""

from __future__ import annotations

from collections import deque
from importlib import resources
from typing import Any

import numpy as np
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

from telephony.audio import resample_pcm16

MODEL_RATE = 16000
WINDOW_SECS = 8  # the model looks at the last 8 s of the turn
_BUNDLED = ("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")


class TurnAudioModel:
    """smart-turn v3.2 on onnxruntime: how likely the caller's audio so far ends a turn.

    :meth:`completion` is blocking (~40 ms on one thread, ~140 ms on a busy machine): run it off
    the event loop. onnxruntime sessions may be run from several threads at once.
    """

    def __init__(self, session: Any) -> None:
        self._session = session

    @classmethod
    def load(cls, path: str = "", threads: int = 1) -> TurnAudioModel:
        """Load ``path`` (default: the model bundled with pipecat) into one ONNX session."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = path or str(resources.files(_BUNDLED[0]).joinpath(_BUNDLED[1]))
        return cls(ort.InferenceSession(model, sess_options=options))

    def completion(self, pcm: bytes, rate: int) -> float:
        """Probability in [0, 1] that 16-bit mono ``pcm`` at ``rate`` ends a finished turn.

        Resampled to 16 kHz; only the last 8 s count, shorter audio is padded with silence in
        front (as the model was trained)."""
        audio16k = resample_pcm16(pcm, rate, MODEL_RATE)
        samples = np.frombuffer(audio16k, dtype="<i2").astype(np.float32) / 32768.0
        window = MODEL_RATE * WINDOW_SECS
        samples = samples[-window:]
        if len(samples) < window:
            samples = np.pad(samples, (window - len(samples), 0))
        features = compute_whisper_log_mel_features(samples, do_normalize=True)
        outputs = self._session.run(None, {"input_features": features[np.newaxis, ...]})
        return float(np.asarray(outputs[0]).reshape(-1)[0])


class CallerAudio:
    """The caller's recent audio, at most the model's window: trimmed to a short lead-in when a
    turn starts (the VAD reports speech a little after it began), kept whole through the turn."""

    def __init__(self, keep_secs: float = WINDOW_SECS) -> None:
        self._keep_secs = keep_secs
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self.rate = 0

    def add(self, pcm: bytes, rate: int) -> None:
        """Append 16-bit mono ``pcm``; a change of rate starts over."""
        if rate != self.rate:
            self.clear()
            self.rate = rate
        self._chunks.append(pcm)
        self._bytes += len(pcm)
        self.trim(self._keep_secs)

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    def trim(self, secs: float) -> None:
        """Keep only about the last ``secs`` (whole chunks): the lead-in of a new turn."""
        limit = int(secs * self.rate) * 2
        while self._chunks and self._bytes - len(self._chunks[0]) >= limit:
            self._bytes -= len(self._chunks.popleft())

    @property
    def seconds(self) -> float:
        return self._bytes / 2 / self.rate if self.rate else 0.0

    def pcm(self) -> bytes:
        """Everything kept, oldest first."""
        return b"".join(self._chunks)
