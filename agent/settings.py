"""One Settings object, read once from the environment in run.py and passed down.

Vendors' keys use their own standard names (DEEPGRAM_API_KEY, OPENAI_API_KEY, OPENAI_BASE_URL,
ELEVENLABS_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN); everything of ours is FRONTDESK_*.
Nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.forwarded import LOOPBACK, IPNetwork, parse_networks


class Secret:
    """A string that never shows itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _fraction(name: str, raw: str) -> float:
    value = _float(name, raw)
    if value > 1.0:
        raise SettingsError(f"{name} must be between 0 and 1, got {value}")
    return value


LOG_FORMATS = ("text", "json")


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _minutes_list(name: str, raw: str) -> tuple[float, ...]:
    """ "10,30,120" as minutes; at least one, each above zero."""
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(
            f"{name} must be minutes separated by commas (e.g. 10,30,120), got {raw!r}"
        ) from None
    if not values or min(values) <= 0:
        raise SettingsError(f"{name} needs at least one delay, each above 0, got {raw!r}")
    return values


def _outbound(env: Mapping[str, str]) -> dict[str, Any]:
    """The outbound scheduler's settings (FRONTDESK_OUTBOUND_*)."""
    get = env.get
    return {
        "outbound_poll_secs": _float(
            "FRONTDESK_OUTBOUND_POLL_SECS", get("FRONTDESK_OUTBOUND_POLL_SECS", "15"), 0.1
        ),
        "outbound_max_calls": _int(
            "FRONTDESK_OUTBOUND_MAX_CALLS", get("FRONTDESK_OUTBOUND_MAX_CALLS", "2")
        ),
        "outbound_reserve_lines": _int(
            "FRONTDESK_OUTBOUND_RESERVE_LINES", get("FRONTDESK_OUTBOUND_RESERVE_LINES", "1")
        ),
        "outbound_backoff_minutes": _minutes_list(
            "FRONTDESK_OUTBOUND_BACKOFF_MINUTES",
            get("FRONTDESK_OUTBOUND_BACKOFF_MINUTES", "10,30,120"),
        ),
    }


def _vad(env: Mapping[str, str]) -> dict[str, Any]:
    """The VAD's start settings (FRONTDESK_VAD_*; the stop time is read with the turn's)."""
    get = env.get
    return {
        "vad_start_secs": _float(
            "FRONTDESK_VAD_START_SECS", get("FRONTDESK_VAD_START_SECS", "0.1")
        ),
        "vad_confidence": _fraction(
            "FRONTDESK_VAD_CONFIDENCE", get("FRONTDESK_VAD_CONFIDENCE", "0.7")
        ),
        "vad_start_confidence": _fraction(
            "FRONTDESK_VAD_START_CONFIDENCE", get("FRONTDESK_VAD_START_CONFIDENCE", "0.8")
        ),
        "vad_min_volume": _fraction(
            "FRONTDESK_VAD_MIN_VOLUME", get("FRONTDESK_VAD_MIN_VOLUME", "0.5")
        ),
        "vad_fast_volume": _bool(
            "FRONTDESK_VAD_FAST_VOLUME", get("FRONTDESK_VAD_FAST_VOLUME", "1")
        ),
    }


def _workers(env: Mapping[str, str]) -> int:
    """FRONTDESK_WORKERS; above 1 only with a remote LLM, which the workers share."""
    count = _int("FRONTDESK_WORKERS", env.get("FRONTDESK_WORKERS", "1"), minimum=1)
    remote = env.get("OPENAI_API_KEY", "").strip() or env.get("OPENAI_BASE_URL", "").strip()
    if count > 1 and not remote:
        raise SettingsError(
            f"FRONTDESK_WORKERS={count} needs a remote LLM: each worker would load its own copy "
            "of the local model (1.1 GB, and the machine's cores serve about "
            "FRONTDESK_LOCAL_MAX_CALLS calls with one). Serve a model once (llama.cpp's "
            "llama-server, vLLM, Ollama) and set OPENAI_BASE_URL to it, or run one worker "
            "(see README, Running several workers)"
        )
    return count


def _demo(env: Mapping[str, str]) -> bool:
    """FRONTDESK_DEMO when set (0 turns the demo off even in dev mode); unset, the demo is on
    only in dev mode (FRONTDESK_DEV=1, which ``python3 run.py`` on loopback sets): a public
    server serves no unauthenticated page that spends its providers unless asked to."""
    raw = env.get("FRONTDESK_DEMO", "").strip()
    if raw:
        return _bool("FRONTDESK_DEMO", raw)
    return _bool("FRONTDESK_DEV", env.get("FRONTDESK_DEV", "0"))


def _e164(name: str, raw: str) -> str:
    value = "".join(raw.split())
    if value and not (value.startswith("+") and value[1:].isdigit() and 8 <= len(value) <= 16):
        raise SettingsError(
            f"{name} must be a phone number in E.164 form (+14135550100), got {raw!r}"
        )
    return value


def _trusted_proxies(raw: str) -> tuple[IPNetwork, ...]:
    """FRONTDESK_TRUSTED_PROXIES: addresses or CIDR networks, comma-separated; unset or empty
    means loopback, ``none`` trusts no proxy."""
    name = "FRONTDESK_TRUSTED_PROXIES"
    if raw.strip().lower() == "none":
        return ()
    try:
        networks = parse_networks(raw)
    except ValueError as exc:
        raise SettingsError(
            f"{name} must list IP addresses or networks, comma-separated "
            f"(127.0.0.1,::1,10.0.0.0/8), or be 'none': {exc}"
        ) from None
    return networks or LOOPBACK


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "").strip()
    return Secret(raw) if raw else None


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a Frontdesk process. Build with :meth:`from_env`.

    Several workers (processes, machines) behind one load balancer share one database and must
    share these settings. ``stream_token_key`` (FRONTDESK_STREAM_TOKEN_KEY) signs the media
    stream tokens, so any worker accepts a token another issued; unset, it is generated once
    into DATA_DIR in dev mode, and otherwise derived from the admin token (HMAC-SHA256 over a
    fixed label), so workers with the same admin token agree without another secret.
    ``heartbeat_secs``: how often a worker marks itself alive; one silent for three beats is
    dead, and another worker closes its calls (tools.store.instances).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # e.g. https://frontdesk.example.com; "" means derive from the request
    data_dir: Path = Path("data")
    database_url: str = ""  # sqlite:// or postgresql:// URL; "" means SQLite under data_dir
    admin_token: Secret | None = None
    dev_mode: bool = False
    business_config: Path = Path("business.yaml")
    demo_enabled: bool = False  # FRONTDESK_DEMO; unset: on in dev mode only (see _demo)
    demo_calls_per_minute: int = 10  # browser demo calls one client address may start a minute
    demo_max_calls: int = 2  # browser demo calls at once, all workers; never phone lines
    demo_max_call_secs: int = 300  # longest browser demo call (phone calls: max_call_secs)
    log_level: str = "INFO"
    recording: bool = True  # stereo WAV of each call under data_dir/recordings
    retention_days: int = 90  # transcripts and recordings older than this are deleted; 0: kept
    workers: int = 1  # processes serving the port (agent/workers.py); >1 needs a remote LLM
    log_format: str = "text"  # text | json (one object a line, with the call's sid)
    metrics_token: Secret | None = None  # GET /metrics: None means loopback peers only
    metrics_multiprocess_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR: workers' shared metrics
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (agent.forwarded).
    trusted_proxies: tuple[IPNetwork, ...] = LOOPBACK
    # Media sockets (phone and demo) of this process that may wait for their start at once.
    max_pending_streams: int = 32

    # Call behaviour.
    stream_token_ttl_secs: float = 30.0
    stream_token_key: Secret | None = None
    heartbeat_secs: float = 5.0
    max_concurrent_calls: int = 20
    local_max_calls: int = 2  # concurrent calls while the LLM is the local one (see call_limit)
    max_call_secs: int = 1800
    shutdown_grace_secs: float = 30.0  # on SIGTERM, how long active calls may go on
    provider_timeout_secs: float = 8.0  # a cloud STT/LLM/TTS silent this long has failed
    caller_idle_secs: float = 8.0
    caller_idle_prompts: int = 2
    vad_stop_secs: float = 0.2
    # Barge-in: speech this long (counted in 32 ms windows) starts the caller's turn...
    vad_start_secs: float = 0.1
    vad_confidence: float = 0.7  # ...a window is speech at this Silero confidence...
    vad_start_confidence: float = 0.8  # ...and counts toward a start only at this one...
    vad_min_volume: float = 0.5  # ...and this volume (0-1: -110 to -10 dBFS)...
    vad_fast_volume: bool = True  # ...measured per window, rising at once (else pipecat's 0.4 s)
    turn_pause_secs: float = 0.6  # extra wait after a complete-sounding sentence (bench.cutoff)
    turn_pause_incomplete_secs: float = 2.5  # wait when the words so far sound unfinished
    turn_audio_threshold: float = 0.7  # smart-turn score under which the voice vetoes; 0: off
    turn_pause_audio_secs: float = 1.5  # wait when the words may go on (a name, or the voice)
    turn_speculate: bool = True  # start the reply while the end-of-turn wait runs

    # Local models.
    whisper_model_dir: str = ""  # "" means the packaged tiny.en
    llm_threads: int = 2
    llm_context_tokens: int = 4096
    llm_model_path: str = ""  # "" means the assembled packaged Qwen2.5 GGUF

    # Vendors (standard env names).
    deepgram_api_key: Secret | None = None
    deepgram_base_url: str = ""
    openai_api_key: Secret | None = None
    openai_base_url: str = ""
    openai_model: str = "gpt-4o-mini"
    elevenlabs_api_key: Secret | None = None
    elevenlabs_base_url: str = ""
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    twilio_account_sid: str = ""
    twilio_auth_token: Secret | None = None
    twilio_api_base_url: str = ""  # "" means Twilio's own REST API
    # The Twilio number verification codes are texted from ("" means no texts are sent).
    sms_from: str = ""
    # Outbound calls (agent.outbound): the caller ID they are placed from ("" : no outbound
    # calls), how long they ring, and how long after Twilio reports a talked call completed its
    # conversation may still report a better outcome than "completed".
    outbound_from: str = ""
    outbound_ring_secs: int = 25
    outbound_settle_secs: float = 10.0
    #: How long an answered outbound call waits for Twilio's answering-machine verdict before
    #: treating the callee as a person.
    outbound_amd_wait_secs: float = 40.0

    # Outbound calls' scheduler (agent.outbound.scheduler).
    outbound_poll_secs: float = 15.0  # how often each worker looks for calls to create and place
    outbound_max_calls: int = 2  # outbound calls under way at once, all workers; 0: none placed
    outbound_reserve_lines: int = 1  # lines of FRONTDESK_MAX_CALLS outbound calls leave free
    outbound_backoff_minutes: tuple[float, ...] = (10.0, 30.0, 120.0)  # before each retry

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read settings from a mapping such as ``os.environ``; SettingsError on bad values."""
        get = env.get
        data_dir = Path(get("FRONTDESK_DATA_DIR", "data")).expanduser()
        return cls(
            host=get("FRONTDESK_HOST", "127.0.0.1"),
            port=_int("FRONTDESK_PORT", get("FRONTDESK_PORT", "8080"), minimum=0),
            public_url=get("FRONTDESK_PUBLIC_URL", "").rstrip("/"),
            data_dir=data_dir,
            database_url=get("FRONTDESK_DATABASE", ""),
            admin_token=_secret(env, "FRONTDESK_ADMIN_TOKEN"),
            dev_mode=_bool("FRONTDESK_DEV", get("FRONTDESK_DEV", "0")),
            business_config=Path(get("FRONTDESK_BUSINESS_CONFIG", "business.yaml")),
            demo_enabled=_demo(env),
            demo_calls_per_minute=_int(
                "FRONTDESK_DEMO_CALLS_PER_MINUTE", get("FRONTDESK_DEMO_CALLS_PER_MINUTE", "10"), 1
            ),
            demo_max_calls=_int(
                "FRONTDESK_DEMO_MAX_CALLS", get("FRONTDESK_DEMO_MAX_CALLS", "2"), minimum=1
            ),
            demo_max_call_secs=_int(
                "FRONTDESK_DEMO_MAX_CALL_SECS",
                get("FRONTDESK_DEMO_MAX_CALL_SECS", "300"),
                minimum=10,
            ),
            log_level=get("FRONTDESK_LOG_LEVEL", "INFO"),
            recording=_bool("FRONTDESK_RECORDING", get("FRONTDESK_RECORDING", "1")),
            retention_days=_int(
                "FRONTDESK_RETENTION_DAYS", get("FRONTDESK_RETENTION_DAYS", "90"), minimum=0
            ),
            workers=_workers(env),
            log_format=_choice(
                "FRONTDESK_LOG_FORMAT", get("FRONTDESK_LOG_FORMAT", "text"), LOG_FORMATS
            ),
            metrics_token=_secret(env, "FRONTDESK_METRICS_TOKEN"),
            metrics_multiprocess_dir=get("PROMETHEUS_MULTIPROC_DIR", ""),
            trusted_proxies=_trusted_proxies(get("FRONTDESK_TRUSTED_PROXIES", "")),
            max_pending_streams=_int(
                "FRONTDESK_MAX_PENDING_STREAMS", get("FRONTDESK_MAX_PENDING_STREAMS", "32"), 1
            ),
            stream_token_ttl_secs=_float(
                "FRONTDESK_STREAM_TOKEN_TTL", get("FRONTDESK_STREAM_TOKEN_TTL", "30"), 1
            ),
            stream_token_key=_secret(env, "FRONTDESK_STREAM_TOKEN_KEY"),
            heartbeat_secs=_float(
                "FRONTDESK_HEARTBEAT_SECS", get("FRONTDESK_HEARTBEAT_SECS", "5"), 0.1
            ),
            max_concurrent_calls=_int(
                "FRONTDESK_MAX_CALLS", get("FRONTDESK_MAX_CALLS", "20"), minimum=1
            ),
            local_max_calls=_int(
                "FRONTDESK_LOCAL_MAX_CALLS", get("FRONTDESK_LOCAL_MAX_CALLS", "2"), minimum=1
            ),
            max_call_secs=_int(
                "FRONTDESK_MAX_CALL_SECS", get("FRONTDESK_MAX_CALL_SECS", "1800"), minimum=10
            ),
            shutdown_grace_secs=_float(
                "FRONTDESK_SHUTDOWN_GRACE_SECS", get("FRONTDESK_SHUTDOWN_GRACE_SECS", "30")
            ),
            provider_timeout_secs=_float(
                "FRONTDESK_PROVIDER_TIMEOUT_SECS", get("FRONTDESK_PROVIDER_TIMEOUT_SECS", "8"), 1
            ),
            caller_idle_secs=_float(
                "FRONTDESK_CALLER_IDLE_SECS", get("FRONTDESK_CALLER_IDLE_SECS", "8"), 1
            ),
            vad_stop_secs=_float("FRONTDESK_VAD_STOP_SECS", get("FRONTDESK_VAD_STOP_SECS", "0.2")),
            **_vad(env),
            turn_pause_secs=_float(
                "FRONTDESK_TURN_PAUSE_SECS", get("FRONTDESK_TURN_PAUSE_SECS", "0.6")
            ),
            turn_pause_incomplete_secs=_float(
                "FRONTDESK_TURN_PAUSE_INCOMPLETE_SECS",
                get("FRONTDESK_TURN_PAUSE_INCOMPLETE_SECS", "2.5"),
            ),
            turn_audio_threshold=_float(
                "FRONTDESK_TURN_AUDIO_THRESHOLD", get("FRONTDESK_TURN_AUDIO_THRESHOLD", "0.7")
            ),
            turn_pause_audio_secs=_float(
                "FRONTDESK_TURN_PAUSE_AUDIO_SECS", get("FRONTDESK_TURN_PAUSE_AUDIO_SECS", "1.5")
            ),
            turn_speculate=_bool("FRONTDESK_TURN_SPECULATE", get("FRONTDESK_TURN_SPECULATE", "1")),
            whisper_model_dir=get("FRONTDESK_WHISPER_MODEL_DIR", ""),
            llm_threads=_int("FRONTDESK_LLM_THREADS", get("FRONTDESK_LLM_THREADS", "2"), 1),
            llm_context_tokens=_int(
                "FRONTDESK_LLM_CONTEXT", get("FRONTDESK_LLM_CONTEXT", "4096"), 512
            ),
            llm_model_path=get("FRONTDESK_LLM_MODEL_PATH", ""),
            deepgram_api_key=_secret(env, "DEEPGRAM_API_KEY"),
            deepgram_base_url=get("DEEPGRAM_BASE_URL", ""),
            openai_api_key=_secret(env, "OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL", "").rstrip("/"),
            openai_model=get("OPENAI_MODEL", "gpt-4o-mini"),
            elevenlabs_api_key=_secret(env, "ELEVENLABS_API_KEY"),
            elevenlabs_base_url=get("ELEVENLABS_BASE_URL", ""),
            elevenlabs_voice_id=get("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM"),
            twilio_account_sid=get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=_secret(env, "TWILIO_AUTH_TOKEN"),
            twilio_api_base_url=get("TWILIO_API_BASE_URL", "").rstrip("/"),
            sms_from=_e164("FRONTDESK_SMS_FROM", get("FRONTDESK_SMS_FROM", "")),
            outbound_from=_e164(
                "FRONTDESK_OUTBOUND_FROM",
                get("FRONTDESK_OUTBOUND_FROM", "") or get("FRONTDESK_SMS_FROM", ""),
            ),
            outbound_ring_secs=_int(
                "FRONTDESK_OUTBOUND_RING_SECS", get("FRONTDESK_OUTBOUND_RING_SECS", "25"), 5
            ),
            outbound_settle_secs=_float(
                "FRONTDESK_OUTBOUND_SETTLE_SECS", get("FRONTDESK_OUTBOUND_SETTLE_SECS", "10")
            ),
            outbound_amd_wait_secs=_float(
                "FRONTDESK_OUTBOUND_AMD_WAIT_SECS",
                get("FRONTDESK_OUTBOUND_AMD_WAIT_SECS", "40"),
                1,
            ),
            **_outbound(env),
        )

    @property
    def database(self) -> str:
        """The SQLAlchemy URL in use."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'frontdesk.db').resolve()}"

    @property
    def uses_remote_llm(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)

    @property
    def call_limit(self) -> int:
        """Calls taken at once: FRONTDESK_MAX_CALLS, and with the local LLM (one model on the
        machine's cores, shared by every call) at most FRONTDESK_LOCAL_MAX_CALLS."""
        if self.uses_remote_llm:
            return self.max_concurrent_calls
        return min(self.max_concurrent_calls, self.local_max_calls)

    @property
    def sends_texts(self) -> bool:
        """Verification codes can be texted: Twilio credentials and FRONTDESK_SMS_FROM are set."""
        return bool(self.sms_from and self.twilio_account_sid and self.twilio_auth_token)

    @property
    def outbound_unavailable(self) -> str:
        """Why outbound calls cannot be placed ("" : they can), as a sentence for the admin."""
        if not self.outbound_from:
            return (
                "outbound calls are off: set FRONTDESK_OUTBOUND_FROM (or FRONTDESK_SMS_FROM) to "
                "the Twilio number they are placed from"
            )
        if not (self.twilio_account_sid and self.twilio_auth_token):
            return "outbound calls are off: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        if not self.public_url:
            return (
                "outbound calls are off: set FRONTDESK_PUBLIC_URL to the https address Twilio "
                "reaches this server on (it fetches the answered call's stream from there)"
            )
        return ""

    def provider_names(self) -> dict[str, str]:
        """Which provider serves each stage, for logs and the admin view."""
        return {
            "stt": "deepgram" if self.deepgram_api_key else "whisper-local",
            "llm": "openai-compatible" if self.uses_remote_llm else "llama-local",
            "tts": "elevenlabs" if self.elevenlabs_api_key else "hibari-local",
        }
