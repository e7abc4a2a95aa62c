"""The call's voice activity detector, tuned for barge-in: the caller is heard starting to talk
within ~0.1 s of speech, without taking taps, dishes or office chatter for speech.

pipecat's analyzer needs ``start_secs`` of windows that are speech by Silero *and* loud enough;
its volume is loudness over the last 0.4 s, smoothed again per 32 ms window, so after silence
it takes ~5 windows (~160 ms) to rise past the floor: that, not Silero, held the start back.
:class:`FastStartVADAnalyzer` measures the volume of each window itself, rising at once and
falling with pipecat's smoothing, and asks a start window for a higher Silero confidence than a
window that keeps speech going (noise that Silero half-believes never starts a turn).
bench/noise.py measures both against the old settings (``python -m bench.noise``).

With that per-window volume, a window under the volume floor is not speech whatever Silero
says, so the model is not asked: on a call most windows are the caller listening, and scoring
them was the largest single share of a busy server's CPU. The model's recurrent state then
skips those windows (it is reset after ~2 s of them, as pipecat resets it in any quiet).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from agent.providers import LocalModels, SharedSileroVADAnalyzer
from agent.settings import Settings

SMOOTHING = 0.2  # pipecat's: how fast the volume falls after loud audio
LEAD_IN_WINDOWS = 2  # skipped quiet windows the model hears before a loud one
_STARTING = (VADState.QUIET, VADState.STARTING)


def window_volume(pcm: bytes) -> float:
    """The RMS level of 16-bit PCM on pipecat's volume scale: -110 dBFS is 0, -10 dBFS is 1."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    rms = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
    level = 20.0 * math.log10(rms) if rms > 0 else -120.0
    return min(1.0, max(0.0, (level + 110.0) / 100.0))


def vad_params(settings: Settings) -> VADParams:
    return VADParams(
        confidence=settings.vad_confidence,
        start_secs=settings.vad_start_secs,
        stop_secs=settings.vad_stop_secs,
        min_volume=settings.vad_min_volume,
    )


class FastStartVADAnalyzer(SharedSileroVADAnalyzer):
    """The shared-session Silero analyzer with a start confidence and, with ``fast_volume``,
    the per-window volume gate (and, with ``skip_quiet`` too, no model call for a window under
    the floor). With ``start_confidence`` equal to ``params.confidence`` and ``fast_volume``
    off it decides exactly as pipecat's analyzer."""

    def __init__(
        self,
        *,
        session: Any,
        sample_rate: int,
        params: VADParams,
        start_confidence: float,
        fast_volume: bool,
        skip_quiet: bool = True,
    ) -> None:
        super().__init__(session=session, sample_rate=sample_rate, params=params)
        self._start_confidence = start_confidence
        self._fast_volume = fast_volume
        self._skip_quiet = skip_quiet and fast_volume
        self.model_windows = 0  # windows the model scored
        self.skipped_windows = 0  # windows under the volume floor, not scored
        self._skipped: deque[bytes] = deque(maxlen=LEAD_IN_WINDOWS)

    def voice_confidence(self, buffer: bytes) -> float:
        if self._skip_quiet and self._get_smoothed_volume(buffer) < self._params.min_volume:
            self.skipped_windows += 1
            self._skipped.append(buffer)
            self._maybe_reset_model(0.0)  # counts toward the reset a quiet stretch earns
            return 0.0  # not speech at this volume, whatever the model would say
        while self._skipped:  # the model hears the lead-in it skipped, as context
            self.model_windows += 1
            lead_in = np.frombuffer(self._skipped.popleft(), np.int16).astype(np.float32)
            self._model(lead_in / 32768.0, self.sample_rate)
        self.model_windows += 1
        confidence = float(np.asarray(super().voice_confidence(buffer)).item())
        if self._vad_state in _STARTING and confidence < self._start_confidence:
            return 0.0  # not enough to start speech (enough to keep it going)
        return confidence

    def _get_smoothed_volume(self, audio: bytes) -> float:
        if not self._fast_volume:
            return float(super()._get_smoothed_volume(audio))
        volume = window_volume(audio)
        if volume >= self._prev_volume:
            return volume  # attack: at once
        return float(exp_smoothing(volume, self._prev_volume, SMOOTHING))


def build_call_vad(
    models: LocalModels, sample_rate: int, settings: Settings
) -> FastStartVADAnalyzer:
    """A call's VAD as ``settings`` say, on the process's shared Silero session."""
    session = models.vad_session or SileroVADAnalyzer(sample_rate=sample_rate)._model.session
    return FastStartVADAnalyzer(
        session=session,
        sample_rate=sample_rate,
        params=vad_params(settings),
        start_confidence=settings.vad_start_confidence,
        fast_volume=settings.vad_fast_volume,
    )
