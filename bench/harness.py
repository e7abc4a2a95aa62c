"""What the latency benches share: the machine, the call scripts, a real server process, the
provider stand-ins process, turn-taking replays and the figures they print.

The server under test always runs as its own process (``run.py serve``), as in production, so
its CPU can be measured apart from the replay clients and the stand-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from agent import install
from telephony.replay import Report, Turn, converse

ROOT = Path(__file__).resolve().parent.parent
CALLS = ROOT / "bench" / "calls.yaml"
RESULTS = ROOT / "bench" / "results"
LOCAL_MODEL = install.model_path()
AUTH_TOKEN = "bench-twilio-auth-token"
ADMIN_TOKEN = "bench-admin-token-0123456789"
DUMMY_KEY = "bench-dummy-vendor-key"
STAGES = (
    "stt_done",
    "llm_request",  # the reply's request: before turn_end when it was started early
    "turn_end",
    "llm_start",
    "llm_first_token",
    "first_sentence",
    "tts_first_audio",
    "first_audio_sent",
)


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    steal = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        steal = f"{100.0 * values[7] / sum(values):.1f}% since boot"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpu_steal": steal,
        "python": platform.python_version(),
    }


def print_machine(info: dict[str, Any], label: str = "machine") -> None:
    load = " ".join(f"{v:.2f}" for v in info["load_average"])
    print(f"{label}: {info['cpu']}, {info['cores']} cores, load average {load}", end="")
    print(f", steal {info['cpu_steal']}" if info.get("cpu_steal") else "")


# --- figures -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.5), 1),
        "p90": round(percentile(values, 0.9), 1),
        "max": round(max(values), 1) if values else float("nan"),
    }


def fmt(stats: dict[str, float], unit: str = "ms") -> str:
    return (
        f"p50 {stats['p50']:7.0f} {unit}  p90 {stats['p90']:7.0f} {unit}  "
        f"max {stats['max']:7.0f} {unit}  (n={stats['n']})"
    )


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


# --- call scripts ------------------------------------------------------------------------------


@dataclass
class ScriptTurn:
    say: str
    reply: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    barge_in_after: float | None = None


@dataclass
class Call:
    name: str
    from_number: str
    turns: list[ScriptTurn]


def _call(data: dict[str, Any], name: str = "") -> Call:
    turns = [
        ScriptTurn(
            say=t["say"],
            reply=t.get("reply", ""),
            tool=t.get("tool", ""),
            arguments=dict(t.get("arguments") or {}),
            barge_in_after=t.get("barge_in_after"),
        )
        for t in data["turns"]
    ]
    return Call(name=data.get("name", name), from_number=data["from"], turns=turns)


def load_calls(path: Path = CALLS) -> tuple[list[Call], Call]:
    """The benches' calls and the barge-in call."""
    data = yaml.safe_load(path.read_text())
    return [_call(c) for c in data["calls"]], _call(data["barge_in"], "barge-in")


def llm_rules(calls: list[Call]) -> list[dict[str, Any]]:
    """Rules for the scripted LLM stand-in: each turn's exact words -> its reply or tool."""
    turns = {t.say: t for c in calls for t in c.turns}
    ordered = sorted(turns.values(), key=lambda t: -len(t.say))  # longest first: no prefix wins
    return [
        {
            "pattern": re.escape(t.say.rstrip(".?!")),
            "reply": t.reply,
            "tool": t.tool,
            "arguments": t.arguments,
        }
        for t in ordered
    ]


def caller_turns(call: Call) -> list[Turn]:
    """The call's turns as speech (local TTS, phone band), ready for :func:`converse`."""
    from tests.caller_audio import speech
    from tools.catalog import tool_registry

    specs = tool_registry().specs
    return [
        Turn(
            pcm=speech(t.say),
            barge_in_after=t.barge_in_after,
            # A tool with a filler answers in two parts: "One moment…", then the answer.
            answer_parts=2 if t.tool and specs[t.tool].filler else 1,
        )
        for t in call.turns
    ]


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class StandIns:
    """Ports of the provider stand-ins process (Deepgram, OpenAI-compatible, ElevenLabs)."""

    deepgram: int
    llm: int
    elevenlabs: int

    def env(self) -> dict[str, str]:
        return {
            "DEEPGRAM_API_KEY": DUMMY_KEY,
            "DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{self.deepgram}",
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.llm}/v1",
            "ELEVENLABS_API_KEY": DUMMY_KEY,
            "ELEVENLABS_BASE_URL": f"ws://127.0.0.1:{self.elevenlabs}",
        }


@contextlib.contextmanager
def standins(
    calls: list[Call],
    *,
    stt_latency: float,
    llm_latency: float,
    tts_latency: float,
    token_interval: float = 0.0,
    name: str = "bench",
) -> Iterator[StandIns]:
    """Start the three stand-ins in their own process. Deepgram connection *k* transcribes
    with call ``k % len(calls)``'s script, so run calls in that order."""
    ports = StandIns(free_port(), free_port(), free_port())
    config = {
        "ports": {"deepgram": ports.deepgram, "llm": ports.llm, "elevenlabs": ports.elevenlabs},
        "stt_latency": stt_latency,
        "llm_latency": llm_latency,
        "tts_latency": tts_latency,
        "token_interval": token_interval,
        "scripts": [[t.say for t in c.turns] for c in calls],
        "rules": llm_rules(calls),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    config_path = Path(tempfile.mkdtemp(prefix="frontdesk-standins-")) / "config.json"
    config_path.write_text(json.dumps(config))
    log = RESULTS / f"{name}-standins.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.standins", str(config_path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{ports.llm}/healthz", proc, 60, log)
        yield ports
    finally:
        _stop(proc)


@dataclass
class ServerProcess:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process and its live child processes (``serve
        --workers N``'s workers) have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in (self.pid, *_children(self.pid)):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / ticks


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def server(
    env: dict[str, str], *, name: str, ready_timeout: float = 900, args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """Run ``run.py serve [args]`` on a free port with a fresh data dir and ``env`` on top."""
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="frontdesk-bench-"))
    # A fresh database each run, but the local LLM's evaluated prompt is kept between runs
    # (the server keeps it under DATA_DIR/models/prompt-cache), as a deployment would.
    cache = RESULTS / "cache" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(cache, target_is_directory=True)
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "TWILIO_"))},
        "PYTHONPATH": str(ROOT),
        "FRONTDESK_DATA_DIR": str(data_dir),
        "FRONTDESK_PORT": str(port),
        "FRONTDESK_ADMIN_TOKEN": ADMIN_TOKEN,
        "FRONTDESK_BUSINESS_CONFIG": str(ROOT / "tools" / "business.yaml"),
        "FRONTDESK_LLM_MODEL_PATH": str(LOCAL_MODEL),
        "FRONTDESK_MAX_CALLS": "500",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        **env,
    }
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ELEVENLABS_API_KEY"):
        if key not in env:
            full.pop(key, None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"{name}-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", *args],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/readyz", proc, ready_timeout, log)
        yield ServerProcess(url, proc.pid)
    finally:
        _stop(proc)


# --- calls -------------------------------------------------------------------------------------


async def run_call(
    srv: ServerProcess, call: Call, turns: list[Turn], max_wait_secs: float = 30.0
) -> Report:
    report, _heard = await converse(
        turns,
        16000,
        srv.url,
        auth_token=AUTH_TOKEN,
        admin_token=ADMIN_TOKEN,
        from_number=call.from_number,
        max_wait_secs=max_wait_secs,
    )
    return report


def turn_rows(call: Call, report: Report) -> list[dict[str, Any]]:
    """One row per scripted caller turn: its voice-to-voice at the phone and whether it was
    meant as a tool turn (the last speech segment of the turn counts)."""
    last: dict[int, Any] = {}
    for turn in report.caller_turns:
        if turn.turn is not None:
            last[turn.turn] = turn
    rows = []
    for index, script in enumerate(call.turns):
        heard = last.get(index)
        rows.append(
            {
                "call": call.name,
                "turn": index,
                "say": script.say,
                "tool_turn": bool(script.tool),
                "voice_to_voice_ms": heard.voice_to_voice_ms if heard else None,
            }
        )
    return rows


def stage_rows(report: Report, call: Call) -> list[dict[str, Any]]:
    """Per answered caller turn, the call record's stage instants as ms after speech end.

    The k-th caller turn of the record is taken as the script's k-th turn (tool turn or not).
    """
    rows = []
    callers = 0
    for turn in (report.call_record or {}).get("turns", []):
        if turn["role"] == "caller":
            callers += 1
            continue
        timings = turn.get("timings") or {}
        if "turn_end" not in timings or "speech_end" not in timings or not callers:
            continue
        end = timings["speech_end"]
        row = {k: round((timings[k] - end) * 1000.0, 1) for k in STAGES if k in timings}
        if "filler" in timings:
            row["filler"] = round((timings["filler"] - end) * 1000.0, 1)
        index = callers - 1
        row["tool_turn"] = bool(call.turns[index].tool) if index < len(call.turns) else False
        rows.append(row)
    return rows


def print_stages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Print p50/p90 of each stage instant after the caller's speech end, for plain turns and
    for tool turns (as scripted; a tool turn's LLM first token is the text after the tool, its
    first sentence may be the filler).
    """
    out = {}
    for label, tool in (("plain turns", False), ("tool turns", True)):
        chosen = [r for r in rows if r["tool_turn"] == tool]
        if chosen:
            print(f"  {label}:")
            out[label] = _print_stages(chosen, "    ")
    return out


def _print_stages(rows: list[dict[str, Any]], indent: str) -> dict[str, Any]:
    labels = {
        "turn_end": "turn end (VAD stop + turn pause)",
        "llm_start": "LLM request starts",
        "stt_done": "STT final",
        "llm_request": "reply requested (early: < turn end)",
        "llm_first_token": "LLM first token",
        "first_sentence": "first sentence to TTS",
        "tts_first_audio": "TTS first audio",
        "first_audio_sent": "first audio sent",
        "filler": "filler (tool turns)",
    }
    out = {}
    for key in (*STAGES, "filler"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = summary(values)
            print(f"{indent}{labels[key]:34s} {fmt(out[key])}")
    return out


def run(coro: Any) -> Any:
    """asyncio.run, with SIGTERM cancelling the bench like Ctrl-C, so the server and stand-ins
    it started are stopped on the way out."""

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise SystemExit(143) from None


async def sequential_calls(
    srv: ServerProcess, calls: list[Call], *, verbose: bool = False, max_wait_secs: float = 30.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Report]]:
    """Run the calls one after another; returns (turn rows, stage rows, reports)."""
    turns_out: list[dict[str, Any]] = []
    stages_out: list[dict[str, Any]] = []
    reports = []
    for call in calls:
        report = await run_call(srv, call, caller_turns(call), max_wait_secs)
        reports.append(report)
        rows = turn_rows(call, report)
        turns_out.extend(rows)
        stages_out.extend(stage_rows(report, call))
        if verbose:
            v2v = ", ".join(
                f"{r['voice_to_voice_ms']:.0f}" if r["voice_to_voice_ms"] else "-" for r in rows
            )
            print(f"  {call.name:26s} voice-to-voice ms: {v2v}", flush=True)
    return turns_out, stages_out, reports


def voice_to_voice(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summaries of voice-to-voice for all, plain and tool turns; unanswered turns counted."""
    out: dict[str, Any] = {}
    for label, keep in (("all", None), ("no-tool", False), ("tool", True)):
        values = [
            r["voice_to_voice_ms"]
            for r in rows
            if r["voice_to_voice_ms"] is not None and (keep is None or r["tool_turn"] == keep)
        ]
        out[label] = summary(values)
    out["unanswered"] = sum(1 for r in rows if r["voice_to_voice_ms"] is None)
    return out
