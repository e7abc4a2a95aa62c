"""A sampling profile of a running server process, for the benches: py-spy from outside.

:class:`Sampler` runs ``py-spy record --format raw`` on a pid (without pausing it) until
stopped; :func:`shares` reads the collapsed stacks it wrote into each function's and each
module's self share (samples where it was running) and total share (samples where it was on
the stack), as percentages of the samples where a thread of the process was busy (py-spy
leaves out idle threads). :func:`print_top` prints the top of both.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


@dataclass
class Profile:
    """Sample counts: per function and per module, as the running frame and anywhere up the
    stack (a function counted once per stack however deep its recursion)."""

    samples: int = 0
    function_self: Counter[str] = field(default_factory=Counter)
    function_total: Counter[str] = field(default_factory=Counter)
    module_self: Counter[str] = field(default_factory=Counter)
    module_total: Counter[str] = field(default_factory=Counter)


def module_of(path: str) -> str:
    """``pipecat/processors/frame_processor.py`` -> ``pipecat.processors.frame_processor``."""
    name = path.removesuffix(".py").replace("\\", "/").strip("/")
    if "site-packages/" in name:
        name = name.rsplit("site-packages/", 1)[1]
    return name.replace("/", ".").removesuffix(".__init__") or "?"


def _frame(text: str) -> tuple[str, str]:
    """One py-spy frame, ``func (file.py)`` -> (``module:func``, module)."""
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), "?"
    module = module_of(match["file"])
    return f"{module}:{match['func']}", module


def shares(raw: str) -> Profile:
    """Count py-spy's raw (collapsed) output: ``frame;frame;...;leaf COUNT`` per line."""
    profile = Profile()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        profile.samples += count
        leaf_function, leaf_module = frames[-1]
        profile.function_self[leaf_function] += count
        profile.module_self[leaf_module] += count
        for function in {f for f, _ in frames}:
            profile.function_total[function] += count
        for module in {m for _, m in frames}:
            profile.module_total[module] += count
    return profile


def print_top(profile: Profile, limit: int = 15) -> None:
    """The top ``limit`` functions and modules by self share, and functions by total share."""
    total = max(profile.samples, 1)

    def table(title: str, counts: Counter[str]) -> None:
        print(f"  {title}")
        for name, count in counts.most_common(limit):
            print(f"    {100.0 * count / total:5.1f}%  {name}")

    print(f"profile: {profile.samples} busy samples")
    table("functions by self share", profile.function_self)
    table("functions by total share (on the stack)", profile.function_total)
    table("modules by self share", profile.module_self)


class Sampler:
    """``py-spy record`` on ``pid`` from :meth:`start` to :meth:`stop`, raw output to ``out``."""

    def __init__(self, pid: int, out: Path, rate: int = 100, subprocesses: bool = False) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.subprocesses = subprocesses  # sample the worker processes of ``pid`` too
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        command = [exe, "record", "--pid", str(self.pid), "--format", "raw"]
        command += ["--output", str(self.out), "--rate", str(self.rate)]
        command += ["--nolineno", "--nonblocking"]
        if self.subprocesses:
            command.append("--subprocesses")
        self.out.unlink(missing_ok=True)
        with self.out.with_suffix(".log").open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> Profile:
        """Stop sampling (py-spy writes its file on SIGINT) and read the profile."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile; see {self.out.with_suffix('.log')}")
        return shares(self.out.read_text())
