"""What a configuration change sets off: the local LLM's cached prompt prefix re-evaluated in the
background, once no call of this worker is running. Nothing else is cached: calls and the
over-capacity answer read the business from the database, so every worker sees the change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from agent.brain.model import LocalBrain
from agent.prompts import build_system_prompt
from agent.settings import Secret, Settings
from tools.catalog import TOOL_NAMES, tool_registry
from tools.domain.business import Business
from tools.store.business import load_business
from tools.store.calls import CallStore
from tools.store.db import Database

WARM_DEBOUNCE_SECS = 1.0


class AdminHost(Protocol):
    """What the admin console needs of the application."""

    settings: Settings
    db: Database
    calls: CallStore
    admin_token: Secret
    brain: LocalBrain | None
    active_calls: int


def local_prefix(business: Business) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tools, messages) whose prompt is the same for every call of ``business``."""
    enabled = [n for n in TOOL_NAMES if n not in business.disabled_tools]
    static = build_system_prompt(business, None, True).split("This call:")[0]
    return tool_registry(enabled).openai_tools(), [{"role": "system", "content": static}]


def warm_local_brain(brain: LocalBrain, settings: Settings, business: Business) -> None:
    """Evaluate the fixed part of the local LLM's prompt for ``business`` (blocking).

    Everything before "This call:" is the same for every call; it is kept in the KV cache (and
    on disk, so restarts are quick). The brain matches the cache token by token, so a stale
    prefix is never wrong, only slower: this keeps it current.
    """
    tools, messages = local_prefix(business)
    brain.warm_up(tools, messages, Path(settings.data_dir) / "models" / "prompt-cache")


class ConfigApplier:
    """What happens after a config change: the local brain re-warmed (in this worker; the
    others' re-warm lazily: the brain's cache matches token by token, a stale prefix is only
    slower)."""

    def __init__(self, state: AdminHost) -> None:
        self.state = state
        self.warmed = 0  # re-warms completed (tests wait on it)
        self._task: asyncio.Task[None] | None = None
        self._again = False

    async def changed(self) -> None:
        if self.state.brain is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the running re-warm picks the newest config up afterwards
            return
        self._task = asyncio.create_task(self._warm(self.state.brain))

    async def _warm(self, brain: LocalBrain) -> None:
        while True:
            self._again = False
            await asyncio.sleep(WARM_DEBOUNCE_SECS)
            # A running call keeps the model's cache; active_calls is a plain counter.
            while self.state.active_calls > 0:  # noqa: ASYNC110
                await asyncio.sleep(1.0)
            try:
                business = await load_business(self.state.db)
                await asyncio.to_thread(warm_local_brain, brain, self.state.settings, business)
                self.warmed += 1
            except Exception as exc:  # an optimisation: the next call is correct regardless
                logger.warning(f"re-warming the local LLM after a config change failed: {exc}")
            if not self._again:
                return

    async def idle(self) -> None:
        """Wait for a pending re-warm to finish."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def apply(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The answer to a saved change; ``changes`` (when any) set off :meth:`changed`."""
        if changes:
            await self.changed()
        return {"saved": True, "changes": changes}
