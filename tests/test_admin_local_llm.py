"""After an admin change, the local LLM's cached prompt prefix is re-evaluated in the background
for the new config, so the next call starts on a warm cache (slow: the real model, loaded once
per session and shared with the other tests that need it).

The app runs in the test's own event loop (its lifespan entered directly, requests through
httpx's ASGI transport) with the session's model; the change goes through the admin API.
The model evaluates the prefix at start-up (nothing when the session's cache already holds it)
and once more for the change: whether the old prefix would need evaluating again is read off the
cache, not evaluated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from agent.admin import local_prefix
from agent.app import create_app
from agent.brain.model import LlamaModel, LocalBrain, reuse_from
from agent.brain.prompt import prefix, priming_prompt
from agent.providers import LocalModels
from agent.settings import Settings
from tests.conftest import ADMIN_TOKEN, free_port, server_env
from tools.store.business import load_business
from tools.store.db import Database


@pytest.mark.slow
async def test_a_config_change_rewarms_the_local_llm(
    tmp_path: Path, local_models: LocalModels, local_brain: LocalBrain
) -> None:
    settings = Settings.from_env(server_env(tmp_path, free_port()))
    app = create_app(settings, models=local_models, brain=local_brain)
    async with app.router.lifespan_context(app):
        state = app.state.frontdesk
        applier = app.state.admin
        assert state.brain is local_brain
        cache_dir = tmp_path / "models" / "prompt-cache"
        at_start = sorted(cache_dir.glob("prefix-*.npz"))
        assert len(at_start) == 1
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'frontdesk.db'}")
        try:
            old_tools, old_messages = local_prefix(await load_business(db))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://frontdesk.test",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=60,
            ) as api:
                changed = await api.put(
                    "/api/admin/tools", json={"enabled": {"take_message": False}}
                )
                assert changed.status_code == 200
            await applier.idle()  # the re-warm runs on this loop, in a worker thread
            assert applier.warmed == 1

            tools, messages = local_prefix(await load_business(db))
        finally:
            await db.close()
        assert "take_message" not in prefix(tools)
        # The cache holds exactly the new prefix: priming it evaluates nothing more ...
        assert await asyncio.to_thread(local_brain.prime, messages, tools) == 0
        # ... and only the new config's prefix is kept on disk.
        now = sorted(cache_dir.glob("prefix-*.npz"))
        assert len(now) == 1 and now != at_start
        # The old prefix is really different: priming it would evaluate tokens again.
        model = local_brain.model
        assert isinstance(model, LlamaModel)
        old = model.tokenize(priming_prompt(old_messages, old_tools))
        assert reuse_from(model.cached(), old, fresh_logits=False) < len(old)
