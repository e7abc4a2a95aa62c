"""Graceful shutdown: on SIGTERM (or Ctrl-C) stop taking calls, let active ones finish, then exit.

uvicorn's own handler closes the listening socket at once, which would leave Twilio's webhooks
unanswered while calls drain. :class:`DrainingServer` instead keeps serving: new calls get the
over-capacity TwiML (apology, then the business's number), ``/readyz`` answers 503, active
calls go on for up to ``FRONTDESK_SHUTDOWN_GRACE_SECS``; calls still running then hear a
goodbye and end with outcome ``server_shutdown`` (their records finished), and only then does
uvicorn shut down. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import socket
import time
from types import FrameType
from typing import Protocol

import uvicorn
from loguru import logger

from agent.session import CallSession, Outcome
from agent.settings import Settings

#: After the grace period: how long the goodbyes may take before the pipelines are cancelled.
GOODBYE_SECS = 20.0


class CallDesk(Protocol):
    """What draining needs of the application: the call admission and the running calls."""

    settings: Settings
    accepting: bool
    active_calls: int
    sessions: dict[str, CallSession]


async def drain(state: CallDesk, grace_secs: float, poll_secs: float = 0.2) -> int:
    """Stop accepting calls and wait for the active ones; end those left after ``grace_secs``.

    Returns how many calls had to be ended.
    """
    state.accepting = False
    logger.warning(
        f"shutting down: no new calls; {state.active_calls} active call(s) get up to "
        f"{grace_secs:g}s to finish"
    )
    await _calls_done(state, grace_secs, poll_secs)
    sessions = list(state.sessions.values())
    if state.active_calls == 0:
        logger.info("shutting down: all calls finished")
        return 0
    logger.warning(f"shutting down: grace period over; ending {len(sessions)} call(s)")
    for session in sessions:
        await session.end_politely("shutdown_goodbye", Outcome.SERVER_SHUTDOWN)
    await _calls_done(state, GOODBYE_SECS, poll_secs)
    for session in list(state.sessions.values()):  # a goodbye that could not finish
        session.conclude(Outcome.SERVER_SHUTDOWN)
        await session.cancel()
    await _calls_done(state, 5.0, poll_secs)
    return len(sessions)


async def _calls_done(state: CallDesk, timeout: float, poll_secs: float) -> bool:
    """Wait up to ``timeout`` for the active-call count to reach zero."""
    deadline = time.monotonic() + timeout
    # The count is a plain integer the media route keeps; a 0.2 s poll costs nothing.
    while state.active_calls > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(poll_secs)
    return state.active_calls == 0


class DrainingServer(uvicorn.Server):
    """uvicorn that drains calls (see :func:`drain`) before shutting down on a signal."""

    def __init__(self, config: uvicorn.Config, state: CallDesk) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: concurrent.futures.Future[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or not self.started:
            if self._drain is not None:
                logger.warning(f"{signal.Signals(sig).name} again: stopping without waiting")
            super().handle_exit(sig, frame)
            return
        logger.warning(f"{signal.Signals(sig).name} received: draining calls")
        self._drain = asyncio.run_coroutine_threadsafe(self._drain_then_exit(), self._loop)

    async def _drain_then_exit(self) -> None:
        try:
            await drain(self._state, self._state.settings.shutdown_grace_secs)
        except Exception as exc:  # never keep a server alive because draining failed
            logger.exception(f"draining calls failed: {exc}")
        self.should_exit = True
