"""Shared fixtures: a migrated, seeded temporary database, a fixed clock, the local models and
the real local LLM loaded once per session, and a real server on a real port.

Apps built in this process share one load of the local models (:func:`shared_models`) and of the
LLM (``local_brain``): ``create_app(settings, models=shared_models(settings), brain=...)``.
Servers run in subprocesses (tests/test_process.py) load their own."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from agent import install
from agent.brain.model import LocalBrain
from agent.settings import Settings
from tests.postgres import Cluster, start_cluster
from tools.catalog import tool_registry
from tools.registry import ToolContext
from tools.store.business import seed_business
from tools.store.db import Database

if TYPE_CHECKING:
    from agent.providers import LocalModels

ROOT = Path(__file__).resolve().parent.parent
BUSINESS_YAML = ROOT / "tools" / "business.yaml"
# Assembled by `python3 run.py setup` into the user cache (the README's test command runs it first).
LOCAL_MODEL = install.model_path()
TZ = ZoneInfo("America/New_York")
# Sunday 22 November 2026, 10:00 in the salon's time zone.
SUNDAY_MORNING = datetime(2026, 11, 22, 10, 0, tzinfo=TZ)


#: Per-test timeout for a test that may be the first to ask for a session-loaded model: the
#: load (and the LLM's first prompt) counts against the test that triggers it, and takes minutes
#: on a busy 2-core machine. Everything else keeps pyproject's 300 s.
MODEL_LOAD_TIMEOUT_SECS = 900
_SESSION_MODELS = {"local_brain", "local_models", "live_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & _SESSION_MODELS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(MODEL_LOAD_TIMEOUT_SECS))


_LOADED_MODELS: dict[tuple[bool, bool, str], LocalModels] = {}


def shared_models(settings: Settings) -> LocalModels:
    """The local models ``settings`` need (Silero, Whisper unless Deepgram is set, hibari unless
    ElevenLabs is, the fault clips), loaded once per test process and shared by every app built
    in it: nothing changes loaded models, calls only read them (under their own locks). A set
    loaded for other settings is reused when it holds everything these need."""
    from agent.providers import LocalModels

    whisper, hibari = not settings.deepgram_api_key, not settings.elevenlabs_api_key
    for (has_whisper, has_hibari, path), models in _LOADED_MODELS.items():
        if path == settings.whisper_model_dir and has_whisper >= whisper and has_hibari >= hibari:
            return models
    models = LocalModels.load(settings)
    _LOADED_MODELS[(whisper, hibari, settings.whisper_model_dir)] = models
    return models


@pytest.fixture(scope="session")
def local_models() -> LocalModels:
    """Whisper, hibari, Silero and the fault clips: what the embedded default serves calls with."""
    return shared_models(Settings.from_env({"FRONTDESK_LLM_MODEL_PATH": str(LOCAL_MODEL)}))


@pytest.fixture(scope="session")
def local_brain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrain]:
    """The real local model, loaded and warmed once per session; closed (its background priming
    stopped) at the end, so it never starves what runs after it."""
    brain = LocalBrain.load(Settings.from_env({"FRONTDESK_LLM_MODEL_PATH": str(LOCAL_MODEL)}))
    brain.warm_up(
        tool_registry().openai_tools(),
        [{"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."}],
        tmp_path_factory.mktemp("prompt-cache"),
    )
    yield brain
    brain.close()


class Clock:
    """A clock tests move by hand (``clock.now += 60``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the session (about a second to start); each test gets its own
    database in it (:func:`pg_database`)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


async def _admin_sql(cluster: Cluster, statement: str) -> None:
    conn = await asyncpg.connect(cluster.url("postgres").replace("+asyncpg", ""))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


_PG_DATABASES = itertools.count()
_PG_TEMPLATES: set[Path] = set()  # clusters whose template_frontdesk is ready


async def pg_database(cluster: Cluster, template: str = "template_frontdesk") -> str:
    """A new database in ``cluster`` copied from ``template``; returns its URL. The default
    template is migrated and seeded from tools/business.yaml once per cluster; ``template0``
    gives an empty database."""
    if template == "template_frontdesk" and cluster.root not in _PG_TEMPLATES:
        await _admin_sql(cluster, "CREATE DATABASE template_frontdesk")
        prepared = Database(cluster.url("template_frontdesk"))
        await prepared.migrate()
        await seed_business(prepared, BUSINESS_YAML)
        await prepared.close()
        _PG_TEMPLATES.add(cluster.root)
    name = f"test_{os.getpid()}_{next(_PG_DATABASES)}"
    await _admin_sql(cluster, f"CREATE DATABASE {name} TEMPLATE {template}")
    return cluster.url(name)


#: The store backends every test using ``db`` runs on. A module whose calls only pass through
#: the store (timing, faults) sets ``DB_BACKENDS = ("sqlite",)`` to keep the suite short.
BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", getattr(metafunc.module, "DB_BACKENDS", BACKENDS))
    if "live_backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "LIVE_BACKENDS", ("sqlite",))
        metafunc.parametrize("live_backend", backends, scope="module")


@pytest.fixture
async def db(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """A migrated database seeded from tools/business.yaml, on each backend in turn."""
    if backend == "postgresql":
        database = Database(await pg_database(request.getfixturevalue("pg_cluster")))
    else:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await database.migrate()
        await seed_business(database, BUSINESS_YAML)
    yield database
    await database.close()


def make_ctx(
    db: Database,
    now: datetime = SUNDAY_MORNING,
    phone: str = "+14135550123",
    *,
    verified: bool = True,
    call_sid: str = "CA74657374000000000000000000000000",
) -> ToolContext:
    """A tool context for a caller on ``phone``, by default one whose caller ID Twilio verified
    (tests/test_caller_identity.py covers the others)."""
    return ToolContext(
        db=db, caller_phone=phone, caller_id_verified=verified, call_sid=call_sid, now=lambda: now
    )


# --- A real server on a real port, with a scripted LLM stand-in ---------------------------------

import socket  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from tests.fakes.llm import Rule, ScriptedLLM, ServerThread, build_app  # noqa: E402

AUTH_TOKEN = "twilio-test-auth-token"
ADMIN_TOKEN = "admin-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    script: ScriptedLLM
    data_dir: Path
    app: object

    database: str = ""  # the FRONTDESK_DATABASE URL; "" for the SQLite file in data_dir

    @property
    def db_url(self) -> str:
        return self.database or f"sqlite+aiosqlite:///{self.data_dir / 'frontdesk.db'}"


def server_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "FRONTDESK_DATA_DIR": str(data_dir),
        "FRONTDESK_PORT": str(port),
        "FRONTDESK_ADMIN_TOKEN": ADMIN_TOKEN,
        "FRONTDESK_BUSINESS_CONFIG": str(BUSINESS_YAML),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "FRONTDESK_LLM_MODEL_PATH": str(LOCAL_MODEL),
        **extra,
    }


SCRIPT_RULES = [
    Rule(
        r"hair ?cut.*(friday|available|anything)|(friday|available).*hair ?cut",
        tool="check_availability",
        arguments={"service": "haircut", "when": "Friday at 2pm"},
    ),
    Rule(
        r"\bbook\b|yes,? please",
        tool="book_appointment",
        arguments={"service": "haircut", "when": "Friday at 2pm", "customer_name": "Anna Lee"},
    ),
    Rule(r"park", tool="search_knowledge_base", arguments={"query": "parking"}),
    Rule(r"details|on file|my account", tool="find_customer", arguments={}),
    Rule(r"cancel", tool="cancel_appointment", arguments={}),
    Rule(r"hours|open", tool="get_business_info", arguments={"topic": "hours"}),
    Rule(
        r"tell me (about|everything)|services",
        reply=(
            "We offer haircuts, beard trims, coloring, blow drys and kids haircuts. "
            "A haircut takes thirty minutes and costs forty dollars. "
            "Coloring takes an hour and a half and costs ninety five dollars. "
            "Our stylists Maria and James have many years of experience. "
            "We also sell Olaplex and Aveda products in the salon."
        ),
    ),
    Rule(r"bye|that's all|thank", tool="end_call", arguments={"reason": "caller said goodbye"}),
]


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, live_backend: str
) -> Iterator[LiveServer]:
    """The app on a real port, on the module's ``live_backend`` (``LIVE_BACKENDS``, default
    SQLite only): on PostgreSQL a fresh, empty database the app migrates and seeds itself."""
    from agent.app import create_app
    from agent.settings import Settings

    script = ScriptedLLM(rules=list(SCRIPT_RULES))
    data_dir = tmp_path_factory.mktemp("frontdesk")
    db_url = ""
    if live_backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        db_url = asyncio.run(pg_database(cluster, template="template0"))
    llm_port, port = free_port(), free_port()
    with ServerThread(build_app(script), llm_port):
        env = server_env(
            data_dir,
            port,
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            # The plain URL, as a user would write it; the store picks asyncpg itself.
            FRONTDESK_DATABASE=db_url.replace("+asyncpg", ""),
        )
        settings = Settings.from_env(env)
        app = create_app(settings, models=shared_models(settings))
        with ServerThread(app, port) as server:
            yield LiveServer(server.url, script, data_dir, app, db_url)
