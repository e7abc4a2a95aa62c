"""The application: settings in, a FastAPI app out. Models and the database live in the lifespan."""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger

from agent import metrics
from agent.admin import build_records_router, install_admin, warm_local_brain
from agent.auth import require_bearer
from agent.brain.http import build_brain_router
from agent.brain.model import LocalBrain
from agent.escalation import Escalation, HandoffDesk
from agent.forwarded import ForwardedHeaders
from agent.liveness import keep_alive, reap
from agent.logging import redact
from agent.outbound.calls import OutboundCalls
from agent.outbound.dialer import OutboundDisabledError, TwilioDialer
from agent.outbound.jobs import Dialer, OutboundLedger
from agent.outbound.scheduler import OutboundScheduler
from agent.pipeline import run_call
from agent.prompts import phrases
from agent.providers import LocalModels
from agent.retention import retention_loop
from agent.session import PIPELINE_RATE, CallInfo, CallSession
from agent.settings import Secret, Settings
from telephony import browser_codec, codec
from telephony.browser_routes import build_demo_router
from telephony.browser_serializer import BrowserMediaSerializer
from telephony.host import DemoRouteConfig, TwilioRouteConfig
from telephony.media_socket import PendingStarts
from telephony.privacy import mask_phone
from telephony.routes import build_router
from telephony.serializer import TwilioMediaSerializer
from telephony.tokens import StreamTokens, derive_key
from tools.store.business import load_business, seed_business
from tools.store.calls import CallStore
from tools.store.db import Database
from tools.store.instances import DEMO, PHONE, Instance, Instances
from tools.store.limits import RateEvents
from tools.store.nonces import StreamNonces
from tools.store.outbound import OutboundStore


@dataclass
class Frontdesk:
    """The application's shared parts, built once in :func:`create_app` and passed down.

    It satisfies telephony.host.TwilioHost (and so CallSlots: phone lines) for the Twilio
    routes; :class:`DemoLines` gives the browser demo its own slots. What
    several workers must agree on lives in the database (call slots, used stream tokens, rate
    limits, the business); what is kept here is this process's own: its running calls
    (``sessions``, ``active_calls``, ``slots``), whether it accepts calls, its models."""

    settings: Settings
    db: Database
    calls: CallStore
    tokens: StreamTokens
    admin_token: Secret
    handoff_desk: HandoffDesk
    instances: Instances  # this worker among the others (tools.store.instances)
    pending_starts: PendingStarts  # this process's media sockets waiting for their start
    outbound: OutboundLedger  # what became of the calls we placed (agent.outbound)
    outbound_desk: OutboundCalls  # their webhooks (telephony.host.OutboundDesk)
    models: LocalModels = field(default_factory=LocalModels)
    brain: LocalBrain | None = None  # the local LLM, when no remote one is configured
    accepting: bool = True
    ready: bool = False
    active_calls: int = 0  # this process's calls (all workers': instances.slots_taken())
    slots: set[str] = field(default_factory=set)  # this process's call slots
    unreleased: set[str] = field(default_factory=set)  # slots to give back (a failed release)
    releasing: set[asyncio.Future[None]] = field(default_factory=set)  # slots being given back
    phrases: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, CallSession] = field(default_factory=dict)
    #: Places outbound calls (Twilio); None: they are scheduled and listed, not placed.
    dialer: Dialer | None = None

    def new_session(self, info: CallInfo, rate: int = PIPELINE_RATE) -> CallSession:
        """A session for the call ``info``, kept in :attr:`sessions` by the caller."""
        return CallSession(
            info,
            settings=self.settings,
            db=self.db,
            store=self.calls,
            escalation=lambda session: Escalation(session, self.handoff_desk),
            rate=rate,
            outbound=self.outbound,
        )

    # --- telephony.host.TwilioHost --------------------------------------------------------

    async def has_room(self) -> bool:
        if not self.accepting:
            return False
        return await self.instances.slots_taken() < self.settings.call_limit

    async def take_slot(self, *, answered: bool = False) -> str:
        return await self.take_pool_slot(PHONE, self.settings.call_limit, answered=answered)

    async def take_pool_slot(self, pool: str, limit: int, *, answered: bool = False) -> str:
        """A slot of ``pool`` (one of ``limit`` across all workers), counted as this process's
        call; "" when refused (full, or a new call while draining)."""
        if not (answered or self.accepting):
            return ""
        slot = await self.instances.take_slot(limit, pool)
        if slot:
            self.slots.add(slot)
            self.active_calls += 1
        return slot

    async def release_slot(self, slot: str) -> None:
        if slot not in self.slots:
            return
        self.slots.discard(slot)
        self.active_calls -= 1
        # Its own task: a request cancelled meanwhile (a server stopping) still gives it back.
        task = asyncio.ensure_future(self._give_back(slot))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)
        await asyncio.shield(task)

    async def _give_back(self, slot: str) -> None:
        try:
            await self.instances.release_slot(slot)
        except Exception as exc:  # given back by the heartbeat (agent.liveness) instead
            logger.warning(f"giving back call slot failed ({type(exc).__name__}); retried soon")
            self.unreleased.add(slot)

    async def free_lines(self) -> int:
        """Lines free for a new call, all workers counted (agent.outbound.scheduler.Lines)."""
        if not self.accepting:
            return 0
        return self.settings.call_limit - await self.instances.slots_taken()

    def outbound_scheduler(self) -> OutboundScheduler:
        """This worker's outbound scheduler (run for the app's lifetime by the lifespan)."""
        backoff = tuple(timedelta(minutes=m) for m in self.settings.outbound_backoff_minutes)
        return OutboundScheduler(
            OutboundStore(self.db, backoff=backoff),
            self.dialer,
            self,
            owner=self.instances.me.id,
            max_calls=self.settings.outbound_max_calls,
            reserve_lines=self.settings.outbound_reserve_lines,
        )

    async def escalation_number(self) -> str:
        return (await load_business(self.db)).escalation_number

    def refused(self, reason: str) -> None:
        if reason == "over_capacity" and not self.accepting:
            reason = "shutting_down"
        metrics.refused(reason)


@dataclass(frozen=True)
class DemoLines:
    """The browser demo's call slots (telephony.host.DemoSlots): FRONTDESK_DEMO_MAX_CALLS
    across all workers, in their own pool (tools.store.instances), so a demo call never takes
    a phone line and phone calls never take the demo's room. A draining server takes no new
    demo call either. They are this process's calls all the same (``active_calls``, ``slots``),
    so a shutdown waits for them like for phone calls."""

    app: Frontdesk

    @property
    def accepting(self) -> bool:
        return self.app.accepting

    async def has_room(self) -> bool:
        if not self.app.accepting:
            return False
        return await self.app.instances.slots_taken(DEMO) < self.app.settings.demo_max_calls

    async def take_slot(self, *, answered: bool = False) -> str:
        limit = self.app.settings.demo_max_calls
        return await self.app.take_pool_slot(DEMO, limit, answered=answered)

    async def release_slot(self, slot: str) -> None:
        await self.app.release_slot(slot)

    def refused(self, reason: str) -> None:
        self.app.refused(reason)

    @property
    def pending_starts(self) -> PendingStarts:
        return self.app.pending_starts


def resolve_admin_token(settings: Settings) -> Secret:
    """The configured admin token, or in dev mode one generated once and kept in DATA_DIR."""
    if settings.admin_token:
        return settings.admin_token
    if not settings.dev_mode:
        raise SystemExit(
            "FRONTDESK_ADMIN_TOKEN is not set. Set it (a long random string) to protect the admin "
            "and call-record APIs, or set FRONTDESK_DEV=1 to run locally with a generated token."
        )
    path = Path(settings.data_dir) / "admin_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        os.chmod(path, 0o600)
    logger.warning(f"dev mode: admin token generated and stored in {path} (not logged)")
    return Secret(path.read_text().strip())


def resolve_stream_token_key(settings: Settings, admin_token: Secret) -> bytes:
    """The key signing media stream tokens, the same in every worker sharing the settings:
    FRONTDESK_STREAM_TOKEN_KEY; else in dev mode one generated once and kept in DATA_DIR; else
    derived from the admin token (see Settings)."""
    if settings.stream_token_key:
        return settings.stream_token_key.reveal().encode()
    if not settings.dev_mode:
        return derive_key(admin_token.reveal())
    path = Path(settings.data_dir) / "stream_token_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        os.chmod(path, 0o600)
    return path.read_text().strip().encode()


async def start_up(
    state: Frontdesk, models: LocalModels | None = None, brain: LocalBrain | None = None
) -> None:
    """Migrate, seed, load the models (unless given) and warm the local LLM's prompt; then
    ready."""
    settings, db = state.settings, state.db
    await db.migrate()
    await state.instances.register()
    await reap(state.instances, settings.heartbeat_secs)
    added = await seed_business(db, settings.business_config)
    if any(added.values()):
        logger.info(f"seeded business data from {settings.business_config}: {added}")
    business = await load_business(db)
    # Import the LLM client now, so no call pays for it (pipecat imports take seconds).
    await asyncio.to_thread(importlib.import_module, "pipecat.services.openai.llm")
    if models is None:
        models = await asyncio.to_thread(LocalModels.load, settings)
    state.models = models
    if not settings.uses_remote_llm:
        if brain is None:
            brain = await asyncio.to_thread(LocalBrain.load, settings)
        state.brain = brain
        # The fixed prompt prefix, evaluated once (the admin console re-warms it on changes).
        await asyncio.to_thread(warm_local_brain, brain, settings, business)
    state.ready = True
    providers = ", ".join(f"{k}={v}" for k, v in settings.provider_names().items())
    logger.info(f"Frontdesk ready on http://{settings.host}:{settings.port} ({providers})")
    if settings.demo_enabled:
        loopback = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        page = settings.public_url or f"http://{loopback}:{settings.port}"
        logger.info(
            f"browser demo: open {page}/ and press Start call ({settings.demo_max_calls} at "
            f"once, {settings.demo_max_call_secs} s each; FRONTDESK_DEMO=0: off)"
        )
    else:
        logger.info("browser demo: off (FRONTDESK_DEMO=1 serves it at /)")


async def shut_down(state: Frontdesk, *, owns_brain: bool = True) -> None:
    """Take no more calls, stop the local LLM's background work, close the database.

    A brain the app does not own (given to create_app) stays usable: it is only left idle."""
    state.accepting = False
    if state.brain is not None and owns_brain:
        # Stop background priming, so the process (or the next server in this
        # process) doesn't lose both cores to it.
        await asyncio.to_thread(state.brain.close)
    elif state.brain is not None:
        await asyncio.to_thread(state.brain.wait_primed)
    try:
        await state.instances.remove()  # its calls are over (drained), its slots given back
    except Exception as exc:  # the others' reaper removes it instead
        logger.warning(f"leaving the worker list failed: {type(exc).__name__}: {exc}")
    await state.outbound_desk.close()  # pending outcomes are recorded now
    await state.models.clients.aclose()  # this loop's provider HTTP client
    await state.db.close()


def build_health_router(state: Frontdesk) -> APIRouter:
    """/healthz (the process answers, and which: its pid, one per worker) and /readyz (models
    loaded, database up, accepting)."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str | int]:
        return {"status": "ok", "pid": os.getpid()}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        database = await state.db.ping()
        ok = state.ready and database and state.accepting
        body = {
            "ready": ok,
            "models_loaded": state.ready,
            "database": database,
            "accepting": state.accepting,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    return router


def create_app(
    settings: Settings, *, models: LocalModels | None = None, brain: LocalBrain | None = None
) -> FastAPI:
    """The app for ``settings``: the shared parts built now, the models loaded in its lifespan.

    ``models`` and ``brain``, when given, are already loaded (by the caller, who keeps them:
    several apps in one process, as in the tests, can then share one load) and must suit
    ``settings``. A given brain is warmed for this business like a loaded one, but never
    closed here: at shutdown only its background priming is waited for."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    db = Database(settings.database)
    admin_token = resolve_admin_token(settings)
    instances = Instances(db, Instance.here())
    nonces = StreamNonces(db)
    db.on_retry = metrics.db_retried
    ledger = OutboundStore(
        db, backoff=tuple(timedelta(minutes=m) for m in settings.outbound_backoff_minutes)
    )
    try:
        dialer: Dialer | None = TwilioDialer.from_settings(settings)
    except OutboundDisabledError as exc:
        logger.info(str(exc))
        dialer = None
    state = Frontdesk(
        settings=settings,
        db=db,
        calls=CallStore(db, instances.me.id),
        tokens=StreamTokens(
            settings.stream_token_ttl_secs,
            key=resolve_stream_token_key(settings, admin_token),
            nonces=nonces,
        ),
        admin_token=admin_token,
        handoff_desk=HandoffDesk(db, settings),
        instances=instances,
        pending_starts=PendingStarts(settings.max_pending_streams),
        outbound=ledger,
        outbound_desk=OutboundCalls(ledger, settings.outbound_settle_secs),
        dialer=dialer,
        phrases=phrases(),
    )
    redact(state.admin_token.reveal())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_up(state, models, brain)
        retention = asyncio.create_task(retention_loop(db, settings), name="retention")
        beating = asyncio.create_task(
            keep_alive(instances, nonces, settings.heartbeat_secs, state.unreleased)
        )
        outbound = asyncio.create_task(
            state.outbound_scheduler().run(settings.outbound_poll_secs), name="outbound"
        )
        try:
            yield
        finally:
            retention.cancel()
            beating.cancel()
            outbound.cancel()
            await asyncio.gather(beating, retention, outbound, return_exceptions=True)
            await shut_down(state, owns_brain=brain is None)

    app = FastAPI(title="Frontdesk", version="0.1.0", lifespan=lifespan)
    app.state.frontdesk = state
    # The client and scheme behind FRONTDESK_TRUSTED_PROXIES (run.py turns uvicorn's off).
    app.add_middleware(ForwardedHeaders, trusted=settings.trusted_proxies)

    async def run_phone_call(
        websocket: WebSocket,
        parser: codec.MediaStreamParser,
        start: codec.Start,
        details: dict[str, str],
    ) -> None:
        info = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            source=details.get("source", "twilio"),
            from_number=details.get("from", ""),
            to_number=details.get("to", ""),
            account_sid=start.account_sid,
            public_base=details.get("base", ""),
            resume_handoff=int(details.get("resume", "0") or 0),
            caller_verstat=details.get("verstat", ""),
            direction=details.get("direction", "inbound"),
            outbound_job=int(details.get("job", "0") or 0),
        )
        # Every line logged while the call runs carries its sid (the pipeline's tasks inherit it).
        with logger.contextualize(call_sid=info.call_sid):
            logger.info(
                f"{info.direction} call {info.call_sid} streaming "
                f"(with {mask_phone(info.customer_phone)})"
            )
            session = state.new_session(info)
            state.sessions[info.call_sid] = session
            try:
                serializer = TwilioMediaSerializer(parser, session)
                await run_call(state, session, websocket, serializer)
            finally:
                state.sessions.pop(info.call_sid, None)
                logger.info(f"call {info.call_sid} ended: {session.outcome}")

    twilio_config = TwilioRouteConfig(
        auth_token=settings.twilio_auth_token.reveal() if settings.twilio_auth_token else "",
        public_url=settings.public_url,
        busy_message=state.phrases["over_capacity"],
    )
    app.include_router(build_router(state, twilio_config, run_phone_call))

    async def run_browser_call(
        websocket: WebSocket, parser: browser_codec.BrowserStreamParser, call_sid: str
    ) -> None:
        info = CallInfo(call_sid=call_sid, stream_sid=call_sid, source="browser")
        session = state.new_session(info, rate=parser.sample_rate)
        state.sessions[call_sid] = session
        with logger.contextualize(call_sid=call_sid):
            try:
                await run_call(state, session, websocket, BrowserMediaSerializer(parser, session))
            finally:
                state.sessions.pop(call_sid, None)
                logger.info(f"browser call {call_sid} ended: {session.outcome}")

    demo_config = DemoRouteConfig(
        enabled=settings.demo_enabled,
        calls_per_minute=settings.demo_calls_per_minute,
        public_url=settings.public_url,
        max_calls=settings.demo_max_calls,
    )
    static_dir = Path(__file__).resolve().parent / "static"
    demo_limit = RateEvents(db, "demo_call", limit=settings.demo_calls_per_minute, window_secs=60.0)
    app.include_router(
        build_demo_router(DemoLines(state), demo_limit, demo_config, run_browser_call, static_dir)
    )

    app.include_router(build_health_router(state))
    app.include_router(
        metrics.build_metrics_router(settings.metrics_token, settings.metrics_multiprocess_dir)
    )
    app.include_router(build_records_router(state.calls, state.admin_token))  # /api/calls
    app.state.admin = install_admin(app, state)  # /admin and /api/admin/...

    if not settings.uses_remote_llm:
        admin_only = require_bearer(state.admin_token)
        app.include_router(build_brain_router(lambda: state.brain, admin_only))

    return app
