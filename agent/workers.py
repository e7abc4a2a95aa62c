"""Several worker processes on one listening socket: ``run.py serve --workers N``.

The supervisor binds the socket once (:func:`bind`), then starts N workers, each a
``run.py serve --worker-fd FD`` process with its own app and DrainingServer accepting on that
socket (the kernel hands each connection to one of them). A worker that dies unexpectedly is
started again after a backoff (1 s, doubling up to 30 s; back to 1 s once a worker has lived a
minute); a slot failing :data:`MAX_QUICK_FAILURES` times in a row, each within a minute, stops
everything (a broken set-up should not spin). SIGTERM and SIGINT are forwarded to every worker,
so each drains its calls (a second signal, forwarded too, skips the wait); the supervisor exits
once all have, with 0 when they all exited 0.

Workers run in their own process group (Ctrl-C reaches them once, through the supervisor) and
get SIGTERM if the supervisor itself dies. Nothing here knows the app: the supervisor only
starts processes through the ``spawn`` function it is given.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from loguru import logger

#: Restart delays: the first, the cap, and how long a worker must live to reset them.
BACKOFF_FIRST_SECS = 1.0
BACKOFF_MAX_SECS = 30.0
HEALTHY_SECS = 60.0
MAX_QUICK_FAILURES = 5
POLL_SECS = 0.2

Spawn = Callable[[int], "subprocess.Popen[bytes]"]


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In a new worker (before exec): SIGTERM it when the supervisor dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere an orphaned worker keeps serving until stopped


def launcher(argv: Sequence[str], env: Mapping[str, str], fd: int) -> Spawn:
    """A ``spawn`` for :class:`Supervisor`: ``argv`` run with ``env``, inheriting socket
    ``fd``, in its own process group."""

    def spawn(slot: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            pass_fds=(fd,),
            process_group=0,
            preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
        )

    return spawn


@dataclass
class Slot:
    """One worker position: its current process and its restart bookkeeping."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Keeps ``count`` workers running until a signal, then waits for all of them to drain."""

    def __init__(
        self,
        count: int,
        spawn: Spawn,
        *,
        on_exit: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = [Slot(i) for i in range(count)]
        self._spawn = spawn
        self._on_exit = on_exit
        self._clock = clock
        self._stopping = False
        self._failed = False

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process is not None]

    def run(self) -> int:
        """Start the workers and supervise them; returns the process's exit code."""
        previous = {
            sig: signal.signal(sig, self._signalled) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                self._start(slot)
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self) -> int:
        clean = True
        while True:
            for slot in self._slots:
                clean = self._reap(slot) and clean
            if self._stopping and not self.pids:
                return 0 if clean and not self._failed else 1
            if not self._stopping:
                for slot in self._slots:
                    if slot.restart_at is not None and self._clock() >= slot.restart_at:
                        self._start(slot)
            time.sleep(POLL_SECS)

    def _start(self, slot: Slot) -> None:
        slot.restart_at = None
        slot.process = self._spawn(slot.index)
        slot.started_at = self._clock()
        logger.info(f"worker {slot.index} started (pid {slot.process.pid})")

    def _reap(self, slot: Slot) -> bool:
        """Collect a worker that has exited; schedule its restart unless stopping. False when
        it did not exit cleanly."""
        process = slot.process
        if process is None or (code := process.poll()) is None:
            return True
        slot.process = None
        if self._on_exit is not None:
            self._on_exit(process.pid)
        if self._stopping:
            level = "INFO" if code == 0 else "WARNING"
            logger.log(level, f"worker {slot.index} (pid {process.pid}) exited with {code}")
            return code == 0
        lived = self._clock() - slot.started_at
        slot.quick_failures = slot.quick_failures + 1 if lived < HEALTHY_SECS else 1
        if slot.quick_failures > MAX_QUICK_FAILURES:
            logger.error(
                f"worker {slot.index} failed {MAX_QUICK_FAILURES} times in a row within "
                f"{HEALTHY_SECS:g}s each; stopping (see its log above)"
            )
            self._failed = True
            self._signalled(signal.SIGTERM, None)
            return False
        delay = min(BACKOFF_FIRST_SECS * 2 ** (slot.quick_failures - 1), BACKOFF_MAX_SECS)
        logger.error(
            f"worker {slot.index} (pid {process.pid}) died unexpectedly (exit {code}) after "
            f"{lived:.0f}s; restarting in {delay:g}s"
        )
        slot.restart_at = self._clock() + delay
        return True

    def _signalled(self, sig: int, frame: FrameType | None) -> None:
        """Forward the signal to every worker (they drain); no restarts from now on."""
        if not self._stopping:
            logger.warning(
                f"{signal.Signals(sig).name} received: stopping {len(self.pids)} worker(s)"
            )
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(sig)


def supervise(
    count: int, sock: socket.socket, argv: Sequence[str], env: Mapping[str, str], metrics_dir: str
) -> int:
    """Run ``count`` workers (``argv`` + ``--worker-fd FD``) on ``sock``; returns the exit code.

    The workers share one PROMETHEUS_MULTIPROC_DIR, emptied first: ``metrics_dir`` when given
    (kept afterwards), else a new temporary one (removed afterwards). A worker's live gauges
    stop counting when it exits (agent.metrics.worker_exited)."""
    from agent import metrics  # prometheus-client; only the supervisor needs it here

    fd = sock.fileno()
    if metrics_dir:
        directory = metrics.prepare_multiprocess_dir(metrics_dir)
    else:
        directory = Path(tempfile.mkdtemp(prefix="frontdesk-metrics-"))
    worker_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    spawn = launcher([*argv, "--worker-fd", str(fd)], worker_env, fd)
    try:
        return Supervisor(
            count, spawn, on_exit=lambda pid: metrics.worker_exited(pid, directory)
        ).run()
    finally:
        sock.close()
        if not metrics_dir:
            shutil.rmtree(directory, ignore_errors=True)
        logger.info(f"supervisor {os.getpid()} done")
