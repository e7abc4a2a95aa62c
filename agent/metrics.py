"""Prometheus metrics: facts the call path already knows, counted here and served at
``GET /metrics`` in the Prometheus text format.

One process: the values live in this module's registry. Several workers (``run.py serve
--workers N``): the supervisor calls :func:`prepare_multiprocess_dir` and starts each worker with
``PROMETHEUS_MULTIPROC_DIR`` naming it (prometheus_client reads it when first imported), every
worker writes its values to files there, and any worker's ``/metrics`` adds them all up; the
supervisor calls :func:`worker_exited` when a worker dies, so its live gauges (active calls)
stop counting. Counters and histograms of dead workers are kept (they still happened).

Access (:func:`build_metrics_router`): with ``FRONTDESK_METRICS_TOKEN`` set, a matching bearer
token is required; without it only a loopback client may read the metrics: the socket's peer,
or behind a trusted proxy (agent.forwarded) the client it reports, so a remote client reached
through a local proxy is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from agent.auth import bearer_token, token_matches
from agent.settings import Secret

REGISTRY = CollectorRegistry(auto_describe=True)

ACTIVE_CALLS = Gauge(
    "frontdesk_active_calls",
    "Calls in progress (summed over live workers).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CALLS = Counter(
    "frontdesk_calls",
    "Calls ended, by outcome (agent.session.Outcome).",
    ["outcome"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "frontdesk_refusals",
    "Requests and calls refused, by reason.",
    ["reason"],
    registry=REGISTRY,
)
#: Seconds from 50 ms to 10 s: a phone reply is good under 1 s and lost past a few.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_LATENCY = Histogram(
    "frontdesk_stage_latency_seconds",
    "Per-exchange latency by stage, as in the call record's turn timings: transcript (end of "
    "speech to final transcript), llm_first_token (end of turn to first token), "
    "tts_first_audio (first sentence to its audio), voice_to_voice (end of speech to the first "
    "bot audio sent).",
    ["stage"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
BARGE_INS = Counter("frontdesk_barge_ins", "Times a caller cut the bot off.", registry=REGISTRY)
PROVIDER_FAULTS = Counter(
    "frontdesk_provider_faults",
    "Provider faults (agent.faults) by stage (stt, llm, tts) and kind (error, timeout).",
    ["stage", "kind"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "frontdesk_tool_calls",
    "Tool calls by tool and result (ok, or the error code the model was given).",
    ["tool", "result"],
    registry=REGISTRY,
)
DB_RETRIES = Counter(
    "frontdesk_db_retries",
    "Database work retried, by operation (call_record: a call-record write that failed and is "
    "tried again; booking: a slot another transaction took first, looked up again).",
    ["operation"],
    registry=REGISTRY,
)
TEXTS = Counter(
    "frontdesk_texts",
    "SMS handed to Twilio, by result (sent, failed, timeout): verification codes and "
    "booking confirmations.",
    ["result"],
    registry=REGISTRY,
)

#: Turn-timing keys (agent.call_record.TurnTimings.bot_part) -> the stage label.
_STAGES = {
    "stt_ms": "transcript",
    "llm_first_token_ms": "llm_first_token",
    "tts_first_audio_ms": "tts_first_audio",
    "voice_to_voice_ms": "voice_to_voice",
}


# --- What the call path reports ------------------------------------------------------------


def call_started() -> None:
    ACTIVE_CALLS.inc()


def call_ended(outcome: str) -> None:
    """Pairs with :func:`call_started`; ``outcome`` is the call's Outcome value."""
    ACTIVE_CALLS.dec()
    CALLS.labels(outcome=outcome).inc()


def refused(reason: str) -> None:
    """A request or call turned away: over_capacity, shutting_down, bad_token, rate_limited,
    forged_signature, too_many_pending (media sockets waiting for their start), ... (a short
    fixed word, never anything the client sent)."""
    REFUSALS.labels(reason=reason).inc()


def turn_timed(timings: Mapping[str, object]) -> None:
    """A bot turn's timings (milliseconds, as recorded): each known stage is observed."""
    for key, stage in _STAGES.items():
        value = timings.get(key)
        if isinstance(value, (int, float)) and value >= 0:
            STAGE_LATENCY.labels(stage=stage).observe(value / 1000.0)


def barge_in() -> None:
    BARGE_INS.inc()


def provider_fault(stage: str, *, timeout: bool) -> None:
    PROVIDER_FAULTS.labels(stage=stage, kind="timeout" if timeout else "error").inc()


def tool_called(tool: str, result: str) -> None:
    """``tool``: a tool of the registry (or ``unknown``); ``result``: ``ok`` or an error code."""
    TOOL_CALLS.labels(tool=tool, result=result).inc()


def db_retried(operation: str) -> None:
    DB_RETRIES.labels(operation=operation).inc()


def texted(result: str) -> None:
    """An SMS handed to Twilio came to ``result``: sent, failed or timeout."""
    TEXTS.labels(result=result).inc()


# --- Exposition and the workers' directory ------------------------------------------------


def render(multiprocess_dir: str = "") -> bytes:
    """The metrics in the Prometheus text format: this process's, or with ``multiprocess_dir``
    every worker's that wrote there, added up."""
    if not multiprocess_dir:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    return generate_latest(registry)


def prepare_multiprocess_dir(path: str | Path) -> Path:
    """Make ``path`` an empty directory for the workers' metric files (an earlier run's are
    removed: their live gauges would count forever). Call before starting the workers."""
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def worker_exited(pid: int, path: str | Path) -> None:
    """Worker ``pid`` has exited: its live gauges (active calls) stop counting."""
    multiprocess.mark_process_dead(pid, str(path))


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_access(request: Request, token: Secret | None) -> None:
    """Raise 401/403 unless ``request`` may read the metrics (see the module's docstring)."""
    if token:
        given = bearer_token(request.headers.get("authorization", ""))
        if not given:
            raise HTTPException(401, "metrics token required (Authorization: Bearer …)")
        if not token_matches(given, token):
            raise HTTPException(401, "invalid metrics token")
        return
    peer = request.client.host if request.client else ""
    if not _loopback(peer):
        raise HTTPException(
            403,
            "metrics are served to loopback clients only; set FRONTDESK_METRICS_TOKEN to "
            "read them from elsewhere with a bearer token",
        )


def build_metrics_router(token: Secret | None, multiprocess_dir: str = "") -> APIRouter:
    """``GET /metrics``, guarded by :func:`check_access`."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        check_access(request, token)
        body = await asyncio.to_thread(render, multiprocess_dir)  # many files with workers
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
