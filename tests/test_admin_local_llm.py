"""After an admin change, the local LLM's cached prompt prefix is re-evaluated in the background
for the new config, so the next call starts on a warm cache (slow: loads the real model)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from agent.admin import local_prefix
from agent.brain.prompt import prefix
from tests.conftest import ADMIN_TOKEN, free_port, server_env
from tests.fakes.llm import ServerThread
from tools.store.business import load_business
from tools.store.db import Database


class SlowStartServer(ServerThread):
    """The real model's start-up (prompt evaluation) can take minutes on a busy 2-core machine."""

    def __enter__(self) -> SlowStartServer:
        self.thread.start()
        for _ in range(12_000):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            time.sleep(0.1)
        raise RuntimeError("server did not start")


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_a_config_change_rewarms_the_local_llm(tmp_path):
    from agent.app import create_app
    from agent.settings import Settings

    port = free_port()
    app = create_app(Settings.from_env(server_env(tmp_path, port)))
    with SlowStartServer(app, port) as server:
        brain = app.state.frontdesk.brain
        applier = app.state.admin
        cache_dir = tmp_path / "models" / "prompt-cache"
        at_start = sorted(cache_dir.glob("prefix-*.npz"))
        assert len(at_start) == 1
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'frontdesk.db'}")
        old_tools, old_messages = local_prefix(await load_business(db))

        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
        ) as api:
            changed = await api.put("/api/admin/tools", json={"enabled": {"take_message": False}})
            assert changed.status_code == 200
        for _ in range(24_000):  # the re-warm runs on the server's loop, in a worker thread
            if applier.warmed >= 1:
                break
            await asyncio.sleep(0.1)
        assert applier.warmed >= 1, "no re-warm after the change"

        tools, messages = local_prefix(await load_business(db))
        assert "take_message" not in prefix(tools)
        # The cache holds exactly the new prefix: priming it evaluates nothing more ...
        assert await asyncio.to_thread(brain.prime, messages, tools) == 0
        # ... and only the new config's prefix is kept on disk.
        now = sorted(cache_dir.glob("prefix-*.npz"))
        assert len(now) == 1 and now != at_start
        # The old prefix is really different (it would have to be evaluated again).
        assert await asyncio.to_thread(brain.prime, old_messages, old_tools) > 0
        await db.close()
